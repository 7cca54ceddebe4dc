//! UDP on mio: readiness-driven `recv_from` into one worker-wide scratch buffer (with one extra
//! byte to detect datagrams larger than `udp_recv_buffers` size, reported `truncated`), at most
//! [`MAX_DATAGRAMS_PER_PARK`] per socket per park (a capped socket is serviced again next park,
//! without blocking), and `send_to`/`send` on writable, in submission order.
//!
//! Tokens are `UDP_TOKEN_BIT | UdpKey::to_u64()`: above every connection token (56 bits) and
//! below the waker's `usize::MAX`, which is checked first.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use ringline_core::buf::SendBuf;
use ringline_core::driver::{Completion, CompletionSink, Op, UdpKey};

/// Marks a token as a UDP socket's.
const UDP_TOKEN_BIT: usize = 1 << 62;
/// Fair share: datagrams read per socket per park.
const MAX_DATAGRAMS_PER_PARK: usize = 64;

/// True for the token of a UDP socket (the caller checked the waker token first).
pub(crate) fn is_udp_token(token: Token) -> bool {
    token.0 & UDP_TOKEN_BIT != 0
}

fn token_of(key: UdpKey) -> Token {
    Token(UDP_TOKEN_BIT | key.to_u64() as usize)
}

struct Sock {
    key: UdpKey,
    socket: UdpSocket,
    registered: bool,
    readable: bool,
    writable: bool,
    receiving: bool,
    /// On the ready list.
    queued: bool,
    sends: VecDeque<(Option<SocketAddr>, SendBuf)>,
}

impl Sock {
    fn has_work(&self) -> bool {
        (self.receiving && self.readable) || (self.writable && !self.sends.is_empty())
    }
}

/// The UDP sockets of one mio driver.
pub(crate) struct MioUdp {
    socks: Vec<Option<Sock>>,
    ready: Vec<UdpKey>,
    /// Receive buffer: `udp_recv_buffers().1 + 1` bytes.
    scratch: Box<[u8]>,
    /// Gathers a multi-part datagram into one slice.
    gather: Vec<u8>,
    /// Events for sockets no longer known.
    pub(crate) stale: u64,
}

impl MioUdp {
    /// Sockets receiving datagrams of up to `size` bytes.
    pub(crate) fn new(size: usize) -> MioUdp {
        MioUdp {
            socks: Vec::new(),
            ready: Vec::new(),
            scratch: vec![0u8; size + 1].into_boxed_slice(),
            gather: Vec::new(),
            stale: 0,
        }
    }

    fn get_mut(&mut self, key: UdpKey) -> Option<&mut Sock> {
        match self.socks.get_mut(key.index as usize) {
            Some(Some(s)) if s.key == key => Some(s),
            _ => None,
        }
    }

    fn mark_ready(&mut self, key: UdpKey) {
        if let Some(s) = self.get_mut(key)
            && !s.queued
            && s.has_work()
        {
            s.queued = true;
            self.ready.push(key);
        }
    }

    /// True when a socket should be serviced without waiting for readiness.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Records the readiness of a UDP event.
    pub(crate) fn on_event(&mut self, event: &mio::event::Event) {
        let key = UdpKey::from_u64((event.token().0 & !UDP_TOKEN_BIT) as u64);
        let Some(s) = self.get_mut(key) else {
            self.stale += 1;
            return;
        };
        if event.is_readable() || event.is_error() || event.is_read_closed() {
            s.readable = true;
        }
        if event.is_writable() || event.is_error() || event.is_write_closed() {
            s.writable = true;
        }
        self.mark_ready(key);
    }

    /// Runs one UDP operation.
    pub(crate) fn run_op(&mut self, op: Op, registry: &Registry, sink: &mut dyn CompletionSink) {
        match op {
            Op::UdpAdopt { sock, socket } => {
                if let Err(error) = socket.set_nonblocking(true) {
                    sink.complete(Completion::UdpError { sock, error });
                }
                let mut socket = UdpSocket::from_std(socket);
                let res =
                    registry.register(&mut socket, token_of(sock), Interest::READABLE | Interest::WRITABLE);
                let i = sock.index as usize;
                if self.socks.len() <= i {
                    self.socks.resize_with(i + 1, || None);
                }
                let s = Sock {
                    key: sock,
                    socket,
                    registered: res.is_ok(),
                    readable: false,
                    writable: false,
                    receiving: false,
                    queued: false,
                    sends: VecDeque::new(),
                };
                if let Some(mut old) = self.socks[i].replace(s) {
                    tracing::error!(old = ?old.key, new = ?sock, "UDP slot reused while still open");
                    let _ = registry.deregister(&mut old.socket);
                }
                if let Err(error) = res {
                    sink.complete(Completion::UdpError { sock, error });
                }
            }
            Op::UdpRecvStart { sock } => {
                if let Some(s) = self.get_mut(sock) {
                    s.receiving = true;
                    // Datagrams may have arrived before the registration's first edge.
                    s.readable = true;
                }
                self.mark_ready(sock);
            }
            Op::UdpConnect { sock, peer } => {
                if let Some(s) = self.get_mut(sock)
                    && let Err(error) = s.socket.connect(peer)
                {
                    sink.complete(Completion::UdpError { sock, error });
                }
            }
            Op::UdpSend { sock, peer, buf } => match self.get_mut(sock) {
                Some(s) => {
                    s.sends.push_back((peer, buf));
                    s.writable = true;
                    self.mark_ready(sock);
                }
                None => sink.complete(Completion::UdpSent {
                    sock,
                    buf,
                    result: Err(io::Error::new(io::ErrorKind::NotConnected, "unknown UDP socket")),
                }),
            },
            Op::UdpClose { sock } => {
                let taken = match self.socks.get_mut(sock.index as usize) {
                    Some(slot) if slot.as_ref().is_some_and(|s| s.key == sock) => slot.take(),
                    _ => None,
                };
                if let Some(mut s) = taken {
                    // Sends already accepted go out if the socket takes them now; never blocks.
                    s.writable = true;
                    write_ready(&mut s, &mut self.gather, sink);
                    for (_, buf) in s.sends.drain(..) {
                        let error = io::Error::new(io::ErrorKind::ConnectionAborted, "UDP socket closed");
                        sink.complete(Completion::UdpSent { sock, buf, result: Err(error) });
                    }
                    if s.registered {
                        let _ = registry.deregister(&mut s.socket);
                    }
                }
                sink.complete(Completion::UdpClosed { sock });
            }
            other => tracing::error!(?other, "not a UDP operation"),
        }
    }

    /// Services the sockets on the ready list; capped readers stay on it for the next park.
    pub(crate) fn service(&mut self, sink: &mut dyn CompletionSink) {
        if self.ready.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.ready);
        for key in list {
            let Some(Some(s)) = self.socks.get_mut(key.index as usize) else { continue };
            if s.key != key {
                continue;
            }
            s.queued = false;
            write_ready(s, &mut self.gather, sink);
            let capped = read_ready(s, &mut self.scratch, sink);
            if capped || s.has_work() {
                s.queued = true;
                self.ready.push(key);
            }
        }
    }

    /// Deregisters and drops every socket (shutdown).
    pub(crate) fn shutdown(&mut self, registry: &Registry) {
        self.ready.clear();
        for mut s in self.socks.drain(..).flatten() {
            if s.registered {
                let _ = registry.deregister(&mut s.socket);
            }
        }
    }
}

/// Sends queued datagrams while the socket takes them.
fn write_ready(s: &mut Sock, gather: &mut Vec<u8>, sink: &mut dyn CompletionSink) {
    while s.writable {
        let Some((peer, buf)) = s.sends.front() else { return };
        let data: &[u8] = if buf.slices().count() <= 1 {
            buf.slices().next().unwrap_or(&[])
        } else {
            gather.clear();
            for part in buf.slices() {
                gather.extend_from_slice(part);
            }
            gather
        };
        let r = match peer {
            Some(p) => s.socket.send_to(data, *p),
            None => s.socket.send(data),
        };
        let result = match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.writable = false;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other,
        };
        if let Some((_, buf)) = s.sends.pop_front() {
            sink.complete(Completion::UdpSent { sock: s.key, buf, result });
        }
    }
}

/// Reads datagrams until `WouldBlock` or the fair share; true when capped with more to read.
fn read_ready(s: &mut Sock, scratch: &mut [u8], sink: &mut dyn CompletionSink) -> bool {
    if !s.receiving {
        return false;
    }
    let size = scratch.len() - 1;
    for _ in 0..MAX_DATAGRAMS_PER_PARK {
        if !s.readable {
            return false;
        }
        match s.socket.recv_from(scratch) {
            Ok((n, peer)) => sink.complete(Completion::Datagram {
                sock: s.key,
                data: &scratch[..n.min(size)],
                peer,
                truncated: n > size,
            }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // An ICMP error reported on this socket; receiving goes on.
            Err(error) => sink.complete(Completion::UdpError { sock: s.key, error }),
        }
    }
    s.readable
}
