//! UDP on io_uring: sockets with a multishot `RecvMsg` into their own provided-buffer ring
//! (`udp_recv_buffers`, buffer group 1), and `SendMsg` with the destination address for sends.
//!
//! Each receive buffer holds the kernel's `io_uring_recvmsg_out` header, the sender's address
//! (room for a `sockaddr_in6`) and up to `udp_recv_buffers` size bytes of payload; a larger
//! datagram completes with `MSG_TRUNC` and is reported `truncated`. Every buffer id goes back to
//! the ring in the same dispatch, whatever the completion (data, error, stale key, closing).
//!
//! Memory the kernel reads stays put until its terminal completion: the receive `msghdr` lives in
//! the boxed [`UdpSock`], freed only at `inflight == 0`; each send's iovecs, `msghdr`, address and
//! buffer live in a boxed [`UdpSendOp`] in a generation-checked slab, freed only after its
//! completion. Results are reported per socket in submission order (contract item 9): a send that
//! completes early waits in the socket's FIFO for those ahead of it.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{IntoRawFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types};
use ringline_core::buf::SendBuf;
use ringline_core::driver::{Completion, CompletionSink, ConnKey, Op, SubmitError, UdpKey};

use super::UringDriver;
use crate::buf_ring::BufRing;
use crate::conn::{IOV_MAX, RawAddr};
use crate::user_data::{Kind, encode};

/// Buffer group of the UDP receive ring.
pub(super) const UDP_BGID: u16 = 1;
/// Room reserved for the sender's address in each receive buffer.
const NAME_LEN: usize = mem::size_of::<libc::sockaddr_in6>();
/// Size of the kernel's `io_uring_recvmsg_out` header.
const HEADER_LEN: usize = 16;
/// Sends in flight per worker: their slab index must fit the 24 index bits of `user_data`.
const MAX_SENDS: usize = 1 << 24;
/// Receive errors in a row after which the receive is not re-armed any more.
const MAX_ERRORS_IN_ROW: u32 = 64;

/// A completion produced without the kernel, delivered at the next `park`.
pub(super) enum UdpDeferred {
    Sent { sock: UdpKey, buf: SendBuf, result: io::Result<usize> },
    Error { sock: UdpKey, error: io::Error },
    Closed { sock: UdpKey },
}

/// Parses the sender address the kernel wrote into a receive buffer.
fn parse_name(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_ne_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope)))
        }
        _ => None,
    }
}

/// Backend state of one UDP socket; boxed, freed only when nothing is in flight.
pub(super) struct UdpSock {
    key: UdpKey,
    fd: RawFd,
    recv_wanted: bool,
    recv_armed: bool,
    starved: bool,
    closing: bool,
    errors_in_row: u32,
    /// Operations submitted without their terminal completion (the receive and each send).
    inflight: u32,
    /// The receive `msghdr`: only `msg_namelen` is set; read by the kernel for the multishot.
    msg: libc::msghdr,
    /// Send slab indices in submission order.
    sends: VecDeque<u32>,
}

/// One send in flight.
struct UdpSendOp {
    sock: UdpKey,
    buf: SendBuf,
    iovecs: Vec<libc::iovec>,
    addr: Option<RawAddr>,
    msg: libc::msghdr,
    result: Option<io::Result<usize>>,
}

struct SendSlot {
    generation: u32,
    op: Option<Box<UdpSendOp>>,
}

/// The UDP half of the driver.
pub(super) struct Udp {
    socks: Vec<Option<Box<UdpSock>>>,
    slots: Vec<SendSlot>,
    free: Vec<u32>,
    pub(super) bufs: BufRing,
    pub(super) starved: VecDeque<(UdpKey, u64)>,
    pub(super) deferred: VecDeque<UdpDeferred>,
}

impl Udp {
    /// The UDP state with a receive ring of `count` buffers for datagrams of up to `size` bytes
    /// (registered by the caller).
    pub(super) fn new(count: usize, size: usize) -> io::Result<Udp> {
        Ok(Udp {
            socks: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            bufs: BufRing::new(count, HEADER_LEN + NAME_LEN + size, UDP_BGID)?,
            starved: VecDeque::new(),
            deferred: VecDeque::new(),
        })
    }

    fn get(&self, key: UdpKey) -> Option<&UdpSock> {
        match self.socks.get(key.index as usize) {
            Some(Some(s)) if s.key == key => Some(s),
            _ => None,
        }
    }

    fn take(&mut self, key: UdpKey) -> Option<Box<UdpSock>> {
        let slot = self.socks.get_mut(key.index as usize)?;
        match slot {
            Some(s) if s.key == key => slot.take(),
            _ => None,
        }
    }

    fn put(&mut self, s: Box<UdpSock>) {
        let i = s.key.index as usize;
        if i >= self.socks.len() {
            self.socks.resize_with(i + 1, || None);
        }
        self.socks[i] = Some(s);
    }

    /// True when no UDP operation is owed a completion.
    pub(super) fn settled(&self) -> bool {
        self.socks.iter().flatten().all(|s| s.inflight == 0)
    }
}

fn send_user_data(index: u32, generation: u32) -> u64 {
    encode(Kind::UdpSend, ConnKey { index, generation })
}

fn recv_user_data(key: UdpKey) -> u64 {
    encode(Kind::UdpRecv, ConnKey { index: key.index, generation: key.generation })
}

fn cancel_entry(target: u64, key: UdpKey) -> squeue::Entry {
    opcode::AsyncCancel::new(target)
        .build()
        .user_data(encode(Kind::Cancel, ConnKey { index: key.index, generation: key.generation }))
}

/// Errors after which the socket cannot receive any more (anything else, such as an ICMP error,
/// is reported and the receive re-armed).
fn fatal_recv_error(errno: i32) -> bool {
    matches!(errno, libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT)
}

impl UringDriver {
    /// Handles one UDP operation.
    pub(super) fn udp_submit(&mut self, op: Op) -> Result<(), SubmitError> {
        match op {
            Op::UdpAdopt { sock, socket } => {
                if self.udp.get(sock).is_some() {
                    tracing::error!(?sock, "UdpAdopt for an open socket; dropping it");
                    self.udp.deferred.push_back(UdpDeferred::Error {
                        sock,
                        error: io::Error::new(io::ErrorKind::AlreadyExists, "UDP slot in use"),
                    });
                    return Ok(());
                }
                // io_uring honours O_NONBLOCK (a send would complete with EAGAIN instead of
                // waiting in the kernel); the ring does the waiting, no thread blocks on the fd.
                if let Err(e) = socket.set_nonblocking(false) {
                    tracing::debug!(?sock, "clearing O_NONBLOCK failed: {e}");
                }
                // SAFETY:
                // - `msghdr` is a plain C struct; all-zero bytes (null pointers, zero lengths) is
                //   a valid value.
                let mut msg = unsafe { mem::zeroed::<libc::msghdr>() };
                msg.msg_namelen = NAME_LEN as libc::socklen_t;
                let s = UdpSock {
                    key: sock,
                    fd: socket.into_raw_fd(),
                    recv_wanted: false,
                    recv_armed: false,
                    starved: false,
                    closing: false,
                    errors_in_row: 0,
                    inflight: 0,
                    msg,
                    sends: VecDeque::new(),
                };
                self.udp.put(Box::new(s));
            }
            Op::UdpRecvStart { sock } => {
                if let Some(mut s) = self.udp.take(sock) {
                    s.recv_wanted = true;
                    if !s.recv_armed && !s.starved && !s.closing {
                        self.udp_arm_recv(&mut s);
                    }
                    self.udp.put(s);
                }
            }
            Op::UdpConnect { sock, peer } => {
                let Some(s) = self.udp.get(sock) else { return Ok(()) };
                let a = RawAddr::new(&peer);
                // SAFETY:
                // - `a.storage` is a live sockaddr of `a.len` bytes; connect(2) on a UDP socket
                //   only sets its default peer and does not block.
                let rc = unsafe { libc::connect(s.fd, (&raw const a.storage).cast(), a.len) };
                if rc != 0 {
                    let error = io::Error::last_os_error();
                    self.udp.deferred.push_back(UdpDeferred::Error { sock, error });
                }
            }
            Op::UdpSend { sock, peer, buf } => return self.udp_send(sock, peer, buf),
            Op::UdpClose { sock } => self.udp_close(sock),
            other => {
                tracing::error!(?other, "not a UDP operation");
            }
        }
        Ok(())
    }

    fn udp_arm_recv(&mut self, s: &mut UdpSock) {
        let msg = &raw const s.msg;
        let entry = opcode::RecvMsgMulti::new(types::Fd(s.fd), msg, UDP_BGID)
            .build()
            .user_data(recv_user_data(s.key));
        s.recv_armed = true;
        s.inflight += 1;
        self.push_internal(entry);
    }

    fn udp_send(&mut self, sock: UdpKey, peer: Option<SocketAddr>, buf: SendBuf) -> Result<(), SubmitError> {
        let Some(mut s) = self.udp.take(sock) else {
            self.udp.deferred.push_back(UdpDeferred::Sent {
                sock,
                buf,
                result: Err(io::Error::new(io::ErrorKind::NotConnected, "unknown UDP socket")),
            });
            return Ok(());
        };
        if s.closing {
            tracing::error!(?sock, "UdpSend after UdpClose (contract violation)");
            self.udp.put(s);
            self.udp.deferred.push_back(UdpDeferred::Sent {
                sock,
                buf,
                result: Err(io::Error::new(io::ErrorKind::NotConnected, "UDP socket closing")),
            });
            return Ok(());
        }
        if self.udp.free.is_empty() && self.udp.slots.len() >= MAX_SENDS {
            tracing::error!(?sock, "more than {MAX_SENDS} UDP sends in flight; refusing this one");
            self.udp.put(s);
            self.udp.deferred.push_back(UdpDeferred::Sent {
                sock,
                buf,
                result: Err(io::Error::new(io::ErrorKind::OutOfMemory, "too many UDP sends in flight")),
            });
            return Ok(());
        }
        if !self.room() {
            self.udp.put(s);
            return Err(SubmitError::Full(Op::UdpSend { sock, peer, buf }));
        }
        // SAFETY:
        // - `msghdr` is a plain C struct; all-zero bytes (null pointers, zero lengths) is valid.
        let msg = unsafe { mem::zeroed::<libc::msghdr>() };
        let mut op = Box::new(UdpSendOp {
            sock,
            buf,
            iovecs: Vec::new(),
            addr: peer.as_ref().map(RawAddr::new),
            msg,
            result: None,
        });
        let o = &mut *op;
        for slice in o.buf.slices().take(IOV_MAX) {
            o.iovecs.push(libc::iovec { iov_base: slice.as_ptr().cast_mut().cast(), iov_len: slice.len() });
        }
        if let Some(a) = o.addr.as_mut() {
            o.msg.msg_name = (&raw mut a.storage).cast();
            o.msg.msg_namelen = a.len;
        }
        o.msg.msg_iov = o.iovecs.as_mut_ptr();
        o.msg.msg_iovlen = o.iovecs.len() as _;
        let msg = &raw const o.msg;
        let index = match self.udp.free.pop() {
            Some(i) => i,
            None => {
                self.udp.slots.push(SendSlot { generation: 0, op: None });
                (self.udp.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.udp.slots[index as usize];
        let entry = opcode::SendMsg::new(types::Fd(s.fd), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(send_user_data(index, slot.generation));
        slot.op = Some(op);
        s.sends.push_back(index);
        s.inflight += 1;
        self.udp.put(s);
        self.push_internal(entry);
        Ok(())
    }

    fn udp_close(&mut self, sock: UdpKey) {
        let Some(mut s) = self.udp.take(sock) else {
            self.udp.deferred.push_back(UdpDeferred::Closed { sock });
            return;
        };
        if s.closing {
            tracing::warn!(?sock, "UdpClose submitted twice");
            self.udp.put(s);
            return;
        }
        s.closing = true;
        s.recv_wanted = false;
        if s.recv_armed {
            self.push_internal(cancel_entry(recv_user_data(sock), sock));
        }
        let sends: Vec<u64> = s
            .sends
            .iter()
            .filter_map(|&i| {
                let slot = &self.udp.slots[i as usize];
                slot.op.as_ref().filter(|o| o.result.is_none()).map(|_| send_user_data(i, slot.generation))
            })
            .collect();
        for target in sends {
            self.push_internal(cancel_entry(target, sock));
        }
        if s.inflight == 0 {
            Self::udp_release(&s);
            self.udp.deferred.push_back(UdpDeferred::Closed { sock });
        } else {
            self.udp.put(s);
        }
    }

    /// Closes the fd of a socket with nothing in flight.
    fn udp_release(s: &UdpSock) {
        debug_assert_eq!(s.inflight, 0);
        if s.fd >= 0 {
            // SAFETY:
            // - the socket owns `fd` (from `into_raw_fd`) and closes it once, here; nothing is in
            //   flight on it any more.
            unsafe { libc::close(s.fd) };
        }
    }

    /// Puts `s` back, or closes it and reports `UdpClosed` after its last completion.
    fn udp_settle(&mut self, s: Box<UdpSock>, sink: &mut dyn CompletionSink) {
        if s.closing && s.inflight == 0 {
            let sock = s.key;
            Self::udp_release(&s);
            sink.complete(Completion::UdpClosed { sock });
        } else {
            self.udp.put(s);
        }
    }

    /// A completion of a multishot `RecvMsg`.
    pub(super) fn udp_on_recv(&mut self, key: ConnKey, res: i32, flags: u32, sink: &mut dyn CompletionSink) {
        let sock = UdpKey { index: key.index, generation: key.generation };
        let bid = cqueue::buffer_select(flags).filter(|&b| self.udp.bufs.taken(b));
        let more = cqueue::more(flags);
        let Some(mut s) = self.udp.take(sock) else {
            if let Some(b) = bid {
                self.udp.bufs.release(b);
            }
            self.stats.stale_completions += 1;
            return;
        };
        if !more {
            s.recv_armed = false;
            s.inflight = s.inflight.saturating_sub(1);
        }
        let live = !s.closing;
        let mut starved_now = false;
        let mut stop = false;
        if res >= 0 {
            if let (true, Some(b)) = (live, bid) {
                let data = self.udp.bufs.data(b, res as usize);
                match types::RecvMsgOut::parse(data, &s.msg) {
                    Ok(out) => match parse_name(out.name_data()) {
                        Some(peer) => {
                            s.errors_in_row = 0;
                            sink.complete(Completion::Datagram {
                                sock,
                                data: out.payload_data(),
                                peer,
                                truncated: out.is_payload_truncated(),
                            });
                        }
                        None => tracing::debug!(?sock, "datagram with an unknown address family dropped"),
                    },
                    Err(()) => tracing::debug!(?sock, res, "unparsable recvmsg buffer dropped"),
                }
            }
        } else {
            match -res {
                libc::ENOBUFS => {
                    self.stats.recv_buffer_exhausted += 1;
                    if live && !more && !s.starved {
                        s.starved = true;
                        starved_now = true;
                        self.udp.starved.push_back((sock, self.epoch));
                    }
                }
                libc::ECANCELED => {}
                errno => {
                    s.errors_in_row += 1;
                    if fatal_recv_error(errno) || s.errors_in_row > MAX_ERRORS_IN_ROW {
                        stop = true;
                        tracing::debug!(?sock, errno, "UDP receive stopped after an error");
                    }
                    if live {
                        sink.complete(Completion::UdpError {
                            sock,
                            error: io::Error::from_raw_os_error(errno),
                        });
                    }
                }
            }
        }
        // The payload was copied by the sink: the buffer goes back before the next wait.
        if let Some(b) = bid {
            self.udp.bufs.release(b);
        }
        if stop {
            s.recv_wanted = false;
        }
        if !more && !starved_now && live && s.recv_wanted && !s.recv_armed && !s.starved {
            self.udp_arm_recv(&mut s);
            self.stats.recv_rearms += 1;
        }
        self.udp_settle(s, sink);
    }

    /// A completion of a `SendMsg`: recorded, then every finished send at the head of its
    /// socket's FIFO is reported.
    pub(super) fn udp_on_send(&mut self, key: ConnKey, res: i32, sink: &mut dyn CompletionSink) {
        let sock = match self.udp.slots.get_mut(key.index as usize) {
            Some(SendSlot { generation, op: Some(op) }) if *generation == key.generation => {
                op.result =
                    Some(if res >= 0 { Ok(res as usize) } else { Err(io::Error::from_raw_os_error(-res)) });
                op.sock
            }
            _ => {
                self.stats.stale_completions += 1;
                return;
            }
        };
        let Some(mut s) = self.udp.take(sock) else {
            // The socket is gone (a core bug): free the send, its completion was the last use.
            let slot = &mut self.udp.slots[key.index as usize];
            slot.op = None;
            slot.generation = slot.generation.wrapping_add(1);
            self.udp.free.push(key.index);
            self.stats.stale_completions += 1;
            return;
        };
        while let Some(&front) = s.sends.front() {
            let slot = &mut self.udp.slots[front as usize];
            if slot.op.as_ref().is_none_or(|o| o.result.is_none()) {
                break;
            }
            s.sends.pop_front();
            let Some(op) = slot.op.take() else { break };
            slot.generation = slot.generation.wrapping_add(1);
            self.udp.free.push(front);
            s.inflight = s.inflight.saturating_sub(1);
            let op = *op;
            let result = op.result.unwrap_or(Ok(0));
            sink.complete(Completion::UdpSent { sock, buf: op.buf, result });
        }
        self.udp_settle(s, sink);
    }

    /// Re-arms starved UDP receives FIFO that starved before batch `before`, while buffers are free.
    pub(super) fn udp_rearm_starved(&mut self, before: u64) {
        let mut budget = self.udp.bufs.free();
        while budget > 0 {
            match self.udp.starved.front() {
                Some(&(_, epoch)) if epoch < before => {}
                _ => break,
            }
            let Some((key, _)) = self.udp.starved.pop_front() else { break };
            let Some(mut s) = self.udp.take(key) else { continue };
            if s.starved {
                s.starved = false;
                if s.recv_wanted && !s.recv_armed && !s.closing {
                    self.udp_arm_recv(&mut s);
                    self.stats.recv_rearms_after_refill += 1;
                    budget -= 1;
                }
            }
            self.udp.put(s);
        }
    }

    /// Delivers UDP completions produced without the kernel.
    pub(super) fn udp_deliver_deferred(&mut self, sink: &mut dyn CompletionSink) {
        while let Some(d) = self.udp.deferred.pop_front() {
            match d {
                UdpDeferred::Sent { sock, buf, result } => {
                    sink.complete(Completion::UdpSent { sock, buf, result })
                }
                UdpDeferred::Error { sock, error } => sink.complete(Completion::UdpError { sock, error }),
                UdpDeferred::Closed { sock } => sink.complete(Completion::UdpClosed { sock }),
            }
        }
    }

    /// Shutdown: closes every UDP socket not closed yet.
    pub(super) fn udp_close_all(&mut self) {
        let keys: Vec<UdpKey> =
            self.udp.socks.iter().flatten().filter(|s| !s.closing).map(|s| s.key).collect();
        for key in keys {
            self.udp_close(key);
        }
    }

    /// Shutdown, after the wait: sockets whose operations never finished get their fd closed and
    /// their memory (and that of their sends) leaked, since the kernel may still use it.
    pub(super) fn udp_abandon(&mut self) {
        for slot in &mut self.udp.socks {
            if let Some(s) = slot.take() {
                if s.inflight == 0 {
                    continue;
                }
                if s.fd >= 0 {
                    // SAFETY:
                    // - the socket owns `fd` and closes it once, here; the kernel keeps its own
                    //   reference for the requests still in flight.
                    unsafe { libc::close(s.fd) };
                }
                Box::leak(s);
            }
        }
        for slot in &mut self.udp.slots {
            if let Some(op) = slot.op.take() {
                Box::leak(op);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_addresses_parse_from_kernel_layout() {
        for addr in ["127.0.0.1:5353", "[::1]:9000", "[fe80::1%3]:1"] {
            let a: SocketAddr = addr.parse().unwrap();
            let raw = RawAddr::new(&a);
            let bytes: Vec<u8> = {
                // SAFETY:
                // - `raw.storage` is a live, initialised struct of at least `raw.len` bytes.
                let p = unsafe {
                    std::slice::from_raw_parts((&raw const raw.storage).cast::<u8>(), raw.len as usize)
                };
                p.to_vec()
            };
            assert_eq!(parse_name(&bytes), Some(a));
        }
        assert_eq!(parse_name(&[0u8; 4]), None);
    }
}
