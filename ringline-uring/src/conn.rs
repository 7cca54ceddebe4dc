//! Per-connection backend state: descriptor, fixed slot, receive flags, the in-flight send with the
//! iovecs and `msghdr` the kernel reads, the connect address, closing state, and the number of
//! operations still owed a terminal completion.
//!
//! A `Conn` lives in a `Box` that the driver frees only once `inflight` is zero, so every pointer
//! handed to the kernel (iovecs, `msghdr`, sockaddr) stays valid until its completion.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};
use ringline_core::buf::SendBuf;
use ringline_core::driver::ConnKey;

use crate::user_data::{Kind, encode};

/// Most iovecs one `sendmsg` carries (`IOV_MAX` on Linux).
pub(crate) const IOV_MAX: usize = 1024;
/// Largest single `send` length; the rest goes in a follow-up submission.
const MAX_SEND: usize = 1 << 30;
/// Flags of every stream send.
const SEND_FLAGS: i32 = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;

/// Receive state of a connection.
#[derive(Debug, Default)]
pub(crate) struct RecvState {
    /// The core asked for data (`RecvStart` without a later `RecvPause`).
    pub(crate) wanted: bool,
    /// A multishot receive is submitted and has not produced its terminal completion.
    pub(crate) armed: bool,
    /// `RecvEnd` was reported; nothing more is delivered.
    pub(crate) ended: bool,
    /// Waiting on the starved list for buffers to come back.
    pub(crate) starved: bool,
}

/// A send in flight: the buffer and what the kernel reads to write it.
///
/// A zero-copy send (`zc`) keeps the buffer, and with it every guard, until the kernel has sent the
/// notification of each `SendMsgZc` it completed with `F_MORE`; only then is `Sent` reported.
pub(crate) struct InFlightSend {
    /// The core's buffer; returned in `Sent`.
    pub(crate) buf: SendBuf,
    /// Writes go out with `SendMsgZc` (the buffer holds a guard and the kernel supports it).
    pub(crate) zc: bool,
    /// Result completions flagged `F_MORE` minus notifications received: the notifications still
    /// owed. Negative while a notification arrived ahead of its result completion.
    pub(crate) notifs: i32,
    /// A write is submitted and its result completion has not arrived yet.
    pub(crate) op_pending: bool,
    /// The outcome of the write, once known; reported when no notification is owed any more.
    pub(crate) result: Option<io::Result<usize>>,
    iovecs: Vec<libc::iovec>,
    msg: libc::msghdr,
}

impl InFlightSend {
    pub(crate) fn new(buf: SendBuf, zc: bool) -> InFlightSend {
        // SAFETY:
        // - `msghdr` is a plain C struct for which all-zero bytes (null pointers, zero lengths) is
        //   a valid value.
        let msg = unsafe { mem::zeroed::<libc::msghdr>() };
        InFlightSend { buf, zc, notifs: 0, op_pending: false, result: None, iovecs: Vec::new(), msg }
    }

    /// True when the write has its outcome and the kernel uses none of the buffer's memory any
    /// more: `Sent` may be reported.
    pub(crate) fn finished(&self) -> bool {
        self.result.is_some() && !self.op_pending && self.notifs == 0
    }
}

/// A socket address in the C layout, kept where the kernel can read it (a connect's
/// destination until it completes, a UDP send's destination, a UDP `connect`'s peer).
pub(crate) struct RawAddr {
    /// The address, as `sockaddr_in` or `sockaddr_in6`.
    pub(crate) storage: libc::sockaddr_storage,
    /// Bytes of `storage` in use.
    pub(crate) len: libc::socklen_t,
}

impl RawAddr {
    pub(crate) fn new(addr: &SocketAddr) -> RawAddr {
        // SAFETY:
        // - `sockaddr_storage` is a plain C struct; all-zero bytes is a valid value.
        let mut storage = unsafe { mem::zeroed::<libc::sockaddr_storage>() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                    sin_zero: [0; 8],
                };
                // SAFETY:
                // - `sockaddr_storage` is larger than and aligned at least as `sockaddr_in`.
                unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
                mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY:
                // - `sockaddr_storage` is larger than and aligned at least as `sockaddr_in6`.
                unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
                mem::size_of::<libc::sockaddr_in6>()
            }
        };
        RawAddr { storage, len: len as libc::socklen_t }
    }
}

/// Builds an entry on either the fixed slot or the plain fd of a connection.
macro_rules! on_fd {
    ($conn:expr, |$f:ident| $build:expr) => {
        match $conn.fixed {
            Some(slot) => {
                let $f = types::Fixed(slot);
                $build
            }
            None => {
                let $f = types::Fd($conn.fd);
                $build
            }
        }
    };
}

/// Backend state of one connection.
pub(crate) struct Conn {
    /// The core's key (slot and generation).
    pub(crate) key: ConnKey,
    /// The plain descriptor; -1 when socket creation failed.
    pub(crate) fd: RawFd,
    /// The fixed-table slot used for submissions, if any.
    pub(crate) fixed: Option<u32>,
    /// Receive flags.
    pub(crate) recv: RecvState,
    /// The send in flight, if any.
    pub(crate) send: Option<InFlightSend>,
    /// The connect destination while a connect is in flight.
    pub(crate) connect: Option<RawAddr>,
    /// `Some(abort)` once `Close` was submitted.
    pub(crate) closing: Option<bool>,
    /// Operations submitted (or queued for submission) without their terminal completion yet.
    pub(crate) inflight: u32,
    /// Whether the peer is on this host, learned at the first zero-copy candidate send.
    local_peer: Option<bool>,
}

impl Conn {
    pub(crate) fn new(key: ConnKey, fd: RawFd, fixed: Option<u32>) -> Conn {
        Conn {
            key,
            fd,
            fixed,
            recv: RecvState::default(),
            send: None,
            connect: None,
            closing: None,
            inflight: 0,
            local_peer: None,
        }
    }

    /// True when the peer is on this host (a loopback address or one of the host's own, seen as
    /// peer address equal to the local one). Asked once per connection, then remembered; a socket
    /// whose addresses cannot be read counts as remote.
    pub(crate) fn peer_is_local(&mut self) -> bool {
        if let Some(local) = self.local_peer {
            return local;
        }
        let local = match (peer_addr(self.fd), local_addr(self.fd)) {
            (Ok(peer), Ok(me)) => ringline_core::driver::same_host(&peer, &me),
            _ => false,
        };
        self.local_peer = Some(local);
        local
    }

    /// The multishot receive entry into buffer group `bgid`.
    pub(crate) fn recv_entry(&self, bgid: u16) -> squeue::Entry {
        on_fd!(self, |f| opcode::RecvMulti::new(f, bgid).build()).user_data(encode(Kind::Recv, self.key))
    }

    /// An `AsyncCancel` of this connection's operation of `kind`.
    pub(crate) fn cancel_entry(&self, kind: Kind) -> squeue::Entry {
        opcode::AsyncCancel::new(encode(kind, self.key)).build().user_data(encode(Kind::Cancel, self.key))
    }

    /// The connect entry; `None` without a stored destination.
    pub(crate) fn connect_entry(&self) -> Option<squeue::Entry> {
        let a = self.connect.as_ref()?;
        let addr = (&raw const a.storage).cast::<libc::sockaddr>();
        Some(
            on_fd!(self, |f| opcode::Connect::new(f, addr, a.len).build())
                .user_data(encode(Kind::Connect, self.key)),
        )
    }

    /// Builds the entry writing the unsent bytes of the in-flight send: for a zero-copy send a
    /// `sendmsg_zc` over at most [`IOV_MAX`] iovecs; otherwise a plain `send` for one slice, a
    /// `sendmsg` over at most [`IOV_MAX`] iovecs for more. `None` without a send.
    ///
    /// The iovecs and `msghdr` live in `self.send`, which stays put (inside the boxed `Conn`) until
    /// the completion.
    pub(crate) fn send_entry(&mut self) -> Option<squeue::Entry> {
        let fd = self.fd;
        let fixed = self.fixed;
        let key = self.key;
        let s = self.send.as_mut()?;
        let target = TargetFd { fd, fixed };
        let mut slices = s.buf.slices();
        let single = match (slices.next(), slices.next()) {
            (Some(only), None) if !s.zc => Some(only),
            _ => None,
        };
        let entry = if let Some(only) = single {
            // The common case (one pool slot or one owned buffer): a plain `send`, with no iovec
            // array to fill.
            let len = only.len().min(MAX_SEND) as u32;
            on_fd!(target, |f| opcode::Send::new(f, only.as_ptr(), len).flags(SEND_FLAGS).build())
        } else {
            s.iovecs.clear();
            for slice in s.buf.slices().take(IOV_MAX) {
                s.iovecs
                    .push(libc::iovec { iov_base: slice.as_ptr().cast_mut().cast(), iov_len: slice.len() });
            }
            s.msg.msg_name = std::ptr::null_mut();
            s.msg.msg_namelen = 0;
            s.msg.msg_iov = s.iovecs.as_mut_ptr();
            s.msg.msg_iovlen = s.iovecs.len() as _;
            s.msg.msg_control = std::ptr::null_mut();
            s.msg.msg_controllen = 0;
            s.msg.msg_flags = 0;
            let msg = &raw const s.msg;
            if s.zc {
                on_fd!(target, |f| opcode::SendMsgZc::new(f, msg).flags(SEND_FLAGS as u32).build())
            } else {
                on_fd!(target, |f| opcode::SendMsg::new(f, msg).flags(SEND_FLAGS as u32).build())
            }
        };
        Some(entry.user_data(encode(Kind::Send, key)))
    }

    /// Sets an integer socket option on the plain descriptor.
    pub(crate) fn setsockopt(&self, level: i32, name: i32, value: i32) -> io::Result<()> {
        setsockopt_int(self.fd, level, name, value)
    }
}

/// fd and fixed slot, for building entries while the send state is borrowed.
struct TargetFd {
    fd: RawFd,
    fixed: Option<u32>,
}

/// Sets an integer socket option.
pub(crate) fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY:
    // - `value` is a live c_int and the length passed matches it; an invalid fd only yields EBADF.
    let rc = unsafe {
        libc::setsockopt(fd, level, name, (&raw const value).cast(), mem::size_of::<i32>() as libc::socklen_t)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Sets `SO_LINGER {on, 0}` so the close resets the connection.
pub(crate) fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY:
    // - `l` is a live `linger` struct and the length passed matches it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Dissolves a TCP connection without closing the descriptor: `connect(AF_UNSPEC)` runs the
/// protocol's disconnect, which resets the connection (`RST`) and purges the send queue. The
/// kernel then frees the buffers of zero-copy sends still queued, so their notifications arrive
/// even when the peer stopped reading.
pub(crate) fn disconnect(fd: RawFd) -> io::Result<()> {
    // SAFETY:
    // - `sockaddr` is a plain C struct; all-zero bytes is a valid value.
    let mut addr = unsafe { mem::zeroed::<libc::sockaddr>() };
    addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY:
    // - `addr` is a live `sockaddr` and the length passed matches it; an invalid fd only yields
    //   an error.
    let rc =
        unsafe { libc::connect(fd, &raw const addr, mem::size_of::<libc::sockaddr>() as libc::socklen_t) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The local address of a socket (`getsockname`).
pub(crate) fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    socket_addr(fd, libc::getsockname)
}

/// The peer address of a connected socket (`getpeername`).
fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    socket_addr(fd, libc::getpeername)
}

/// Reads one of a socket's addresses with `getsockname` or `getpeername`.
fn socket_addr(
    fd: RawFd,
    get: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> io::Result<SocketAddr> {
    // SAFETY:
    // - `sockaddr_storage` is a plain C struct; all-zero bytes is a valid value.
    let mut storage = unsafe { mem::zeroed::<libc::sockaddr_storage>() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY:
    // - `get` is getsockname or getpeername; `storage` is writable for `len` bytes and `len` is a
    //   live socklen_t, which is all either call writes.
    let rc = unsafe { get(fd, (&raw mut storage).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY:
            // - the kernel filled an AF_INET address, so the storage holds a `sockaddr_in`.
            let sin = unsafe { &*(&raw const storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY:
            // - the kernel filled an AF_INET6 address, so the storage holds a `sockaddr_in6`.
            let sin6 = unsafe { &*(&raw const storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected address family")),
    }
}
