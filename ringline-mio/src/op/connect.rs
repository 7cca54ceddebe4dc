//! Outbound connects: a non-blocking socket with options applied before `connect(2)`, and the
//! completion check on the first writable edge (`SO_ERROR`, then the peer address).

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use mio::net::TcpStream;
use ringline_core::driver::{Completion, CompletionSink, SocketOpts};

use crate::conn::Conn;

/// Creates a non-blocking socket for `addr`, applies `opts`, and starts connecting.
///
/// Buffer sizes are set before `connect(2)` so they shape the window scale of the handshake.
pub(crate) fn open(addr: SocketAddr, opts: SocketOpts) -> io::Result<TcpStream> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscall with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by `socket(2)` and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    if let Some(n) = opts.send_buffer {
        set_int_opt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, clamp(n))?;
    }
    if let Some(n) = opts.recv_buffer {
        set_int_opt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, clamp(n))?;
    }
    if opts.nodelay {
        set_int_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    }
    start_connect(raw, addr)?;
    Ok(TcpStream::from(fd))
}

/// Outcome of [`check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectState {
    /// Still in progress; wait for the next writable edge.
    Pending,
    /// `Connected` was reported (success or failure).
    Done,
}

/// Called on a writable edge of a connecting socket: reports `Connected` once it finished.
///
/// Readable state from the same event batch is left untouched, so data and a hang-up that arrived
/// with the connect are read after the first `RecvStart`.
pub(crate) fn check(conn: &mut Conn, sink: &mut dyn CompletionSink) -> ConnectState {
    let result = match conn.stream.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => match conn.stream.peer_addr() {
            Ok(_) => conn.stream.local_addr(),
            Err(e) if in_progress(&e) => {
                // A writable edge before the handshake finished: wait for the next one.
                conn.writable = false;
                return ConnectState::Pending;
            }
            Err(e) => Err(e),
        },
    };
    conn.connecting = false;
    sink.complete(Completion::Connected { conn: conn.key, result });
    ConnectState::Done
}

fn in_progress(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotConnected || e.raw_os_error() == Some(libc::EINPROGRESS)
}

fn clamp(n: usize) -> libc::c_int {
    libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX)
}

/// `setsockopt` with an `int` value.
pub(crate) fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open socket owned by the caller; the option value is a live `c_int` and
    // the length passed matches its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Issues a non-blocking `connect(2)`; `EINPROGRESS` (and `EINTR`, after which the kernel keeps
/// connecting in the background) count as started.
fn start_connect(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: `fd` is an open socket; `sa` is a fully initialized `sockaddr_in` living for
            // the call, and the length passed is its size.
            unsafe {
                libc::connect(fd, (&raw const sa).cast(), size_of::<libc::sockaddr_in>() as libc::socklen_t)
            }
        }
        SocketAddr::V6(a) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `fd` is an open socket; `sa` is a fully initialized `sockaddr_in6` living
            // for the call, and the length passed is its size.
            unsafe {
                libc::connect(fd, (&raw const sa).cast(), size_of::<libc::sockaddr_in6>() as libc::socklen_t)
            }
        }
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINPROGRESS) | Some(libc::EINTR) => Ok(()),
        _ => Err(e),
    }
}
