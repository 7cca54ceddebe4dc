//! Receiving and sending datagrams: [`RecvFrom`], [`WithDatagram`], [`SendTo`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::UdpCtx;
use super::table::{InFlight, UdpSock};
use crate::buf::{PartMemory, SendBuf, SendPart};
use crate::driver::Op;
use crate::error::Error;
use crate::metrics::WorkerCounters;
use crate::runtime::core::Core;

impl UdpCtx {
    /// Receives one datagram and its sender. Concurrent receivers are served FIFO, each datagram
    /// to exactly one of them.
    ///
    /// Resolves to `Err(Closed)` once the socket is closed, `Err(ShuttingDown)` during shutdown
    /// when nothing is queued, and `Err(Io(e))` once for an ICMP error on a connected socket.
    pub fn recv_from(&self) -> RecvFrom {
        RecvFrom { udp: *self, ticket: None }
    }

    /// [`UdpCtx::recv_from`] on a connected socket (the sender is the connected peer).
    pub fn recv(&self) -> RecvFrom {
        self.recv_from()
    }

    /// Receives one datagram and runs `f` on it and its sender; resolves to `f`'s result.
    /// Errors as [`UdpCtx::recv_from`].
    pub fn with_datagram<R, F: FnOnce(&[u8], SocketAddr) -> R>(&self, f: F) -> WithDatagram<F> {
        WithDatagram { inner: self.recv_from(), f: Some(f) }
    }

    /// Sends `data` as one datagram to `peer`; resolves with its length once the backend sent it,
    /// or with the kernel's error.
    ///
    /// The bytes are copied during this call while fewer than `udp_sends_in_flight` sends are
    /// outstanding on the socket; otherwise the future waits its turn (FIFO) holding `data`.
    pub fn send_to<'a>(&self, data: &'a [u8], peer: SocketAddr) -> SendTo<'a> {
        SendTo::start(*self, data, Some(peer))
    }

    /// Sends `data` to the connected peer (see [`UdpCtx::connect`]); as [`UdpCtx::send_to`].
    /// Fails with `Io(NotConnected)` on an unconnected socket.
    pub fn send<'a>(&self, data: &'a [u8]) -> SendTo<'a> {
        SendTo::start(*self, data, None)
    }

    /// Queues a copy of `data` for `peer` now, or fails without queuing anything. A later
    /// failure of the datagram is only counted (`udp_send_errors`).
    ///
    /// # Errors
    /// `SendQueueFull` when `udp_sends_in_flight` sends are outstanding (or others wait);
    /// `SendPoolExhausted` when a datagram that fits a pool slot finds none free; `Closed`;
    /// the pending ICMP error of a connected socket.
    pub fn try_send_to(&self, data: &[u8], peer: SocketAddr) -> Result<(), Error> {
        let key = self.key;
        self.with(|core, s| {
            refusal(s, Some(peer))?;
            if s.sends.len() >= core.cfg.udp_sends_in_flight() || !s.admission.is_empty() {
                WorkerCounters::add(&core.counters().send_queue_full, 1);
                return Err(Error::SendQueueFull);
            }
            let buf = copy(core, data, true)?;
            commit(core, s, key, Some(peer), buf, true);
            Ok(())
        })?
    }
}

/// Why a send cannot start now.
fn refusal(s: &mut UdpSock, peer: Option<SocketAddr>) -> Result<(), Error> {
    if s.closing {
        return Err(Error::Closed);
    }
    if s.peer.is_some()
        && let Some(e) = s.error.take()
    {
        return Err(Error::Io(e));
    }
    if peer.is_none() && s.peer.is_none() {
        return Err(Error::Io(std::io::Error::from(std::io::ErrorKind::NotConnected)));
    }
    Ok(())
}

/// Copies `data` into a pool slot (when it fits one) or one heap buffer.
fn copy(core: &Core, data: &[u8], nowait: bool) -> Result<SendBuf, Error> {
    let mut buf = SendBuf::new();
    if data.is_empty() {
        return Ok(buf);
    }
    let mut pool = core.pool.borrow_mut();
    if data.len() <= pool.slot_size() {
        if let Some(mut slot) = pool.alloc() {
            slot[..data.len()].copy_from_slice(data);
            buf.push(SendPart { memory: PartMemory::Pool(slot), start: 0, end: data.len() });
            return Ok(buf);
        }
        if nowait {
            WorkerCounters::add(&core.counters().send_pool_exhausted, 1);
            core.exhausted(crate::runtime::exhaustion::Exhaustion::SendPool);
            return Err(Error::SendPoolExhausted);
        }
    }
    WorkerCounters::add(&core.counters().send_overflow_bytes, data.len() as u64);
    buf.push(SendPart { memory: PartMemory::Heap(data.to_vec()), start: 0, end: data.len() });
    Ok(buf)
}

/// Hands the datagram to the backend (through the outbox) and records it in flight.
fn commit(
    core: &Core,
    s: &mut UdpSock,
    sock: crate::driver::UdpKey,
    peer: Option<SocketAddr>,
    buf: SendBuf,
    abandoned: bool,
) -> u64 {
    let seq = s.next_send;
    s.next_send += 1;
    s.sends.push_back(InFlight { seq, waker: None, abandoned });
    core.outbox.borrow_mut().push(Op::UdpSend { sock, peer, buf });
    seq
}

/// Future of [`UdpCtx::recv_from`]: `Result<(Vec<u8>, SocketAddr), Error>`.
#[must_use = "futures do nothing unless awaited"]
pub struct RecvFrom {
    udp: UdpCtx,
    ticket: Option<u64>,
}

impl Future for RecvFrom {
    type Output = Result<(Vec<u8>, SocketAddr), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let ticket = &mut this.ticket;
        let r = this.udp.with(|core, s| {
            let t = match *ticket {
                Some(t) => t,
                None => {
                    let t = s.next_reader;
                    s.next_reader += 1;
                    *ticket = Some(t);
                    t
                }
            };
            let pos = match s.readers.iter().position(|(x, _)| *x == t) {
                Some(p) => p,
                None => {
                    s.readers.push_back((t, cx.waker().clone()));
                    s.readers.len() - 1
                }
            };
            let out = if let Some(e) = s.error.take() {
                Some(Err(Error::Io(e)))
            } else if pos < s.queue.len() {
                s.queue.pop_front().map(Ok)
            } else if s.closing {
                Some(Err(Error::Closed))
            } else if core.shutting_down.get() {
                Some(Err(Error::ShuttingDown))
            } else {
                None
            };
            match out {
                Some(r) => {
                    *ticket = None;
                    s.leave_readers(t);
                    Poll::Ready(r)
                }
                None => {
                    let w = &mut s.readers[pos].1;
                    if !w.will_wake(cx.waker()) {
                        *w = cx.waker().clone();
                    }
                    Poll::Pending
                }
            }
        });
        match r {
            Ok(p) => p,
            Err(e) => {
                this.ticket = None;
                Poll::Ready(Err(e))
            }
        }
    }
}

impl Drop for RecvFrom {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            let _ = self.udp.with(|_, s| s.leave_readers(t));
        }
    }
}

/// Future of [`UdpCtx::with_datagram`]: `Result<R, Error>`.
#[must_use = "futures do nothing unless awaited"]
pub struct WithDatagram<F> {
    inner: RecvFrom,
    f: Option<F>,
}

impl<F> Unpin for WithDatagram<F> {}

impl<R, F: FnOnce(&[u8], SocketAddr) -> R> Future for WithDatagram<F> {
    type Output = Result<R, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok((data, peer))) => match this.f.take() {
                // No borrow of the worker's state is held while `f` runs.
                Some(f) => Poll::Ready(Ok(f(&data, peer))),
                None => Poll::Ready(Err(Error::InvalidInput("WithDatagram polled after completion"))),
            },
        }
    }
}

enum SendState<'a> {
    /// Waiting for admission, holding the borrow.
    Waiting {
        data: &'a [u8],
        ticket: u64,
    },
    /// Handed to the backend as send `seq`.
    Committed {
        seq: u64,
        len: usize,
    },
    Done(Option<Result<usize, Error>>),
}

/// Future of [`UdpCtx::send_to`] and [`UdpCtx::send`]: `Result<usize, Error>`.
///
/// Dropped before admission it sends nothing; after admission the datagram still goes out.
#[must_use = "a send not admitted at call time must be awaited"]
pub struct SendTo<'a> {
    udp: UdpCtx,
    peer: Option<SocketAddr>,
    state: SendState<'a>,
}

impl<'a> SendTo<'a> {
    fn start(udp: UdpCtx, data: &'a [u8], peer: Option<SocketAddr>) -> SendTo<'a> {
        let key = udp.key;
        let r = udp.with(|core, s| {
            refusal(s, peer)?;
            if s.sends.len() < core.cfg.udp_sends_in_flight() && s.admission.is_empty() {
                let buf = copy(core, data, false)?;
                let seq = commit(core, s, key, peer, buf, false);
                return Ok(SendState::Committed { seq, len: data.len() });
            }
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.admission.push_back((ticket, std::task::Waker::noop().clone()));
            Ok(SendState::Waiting { data, ticket })
        });
        let state = match r {
            Ok(Ok(st)) => st,
            Ok(Err(e)) | Err(e) => SendState::Done(Some(Err(e))),
        };
        SendTo { udp, peer, state }
    }
}

impl Future for SendTo<'_> {
    type Output = Result<usize, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let key = this.udp.key;
        let peer = this.peer;
        loop {
            match this.state {
                SendState::Done(ref mut r) => return Poll::Ready(r.take().unwrap_or(Err(Error::Closed))),
                SendState::Committed { seq, len } => {
                    let r = this.udp.with(|_, s| {
                        if let Some(r) = s.done.remove(&seq) {
                            return Some(r.map(|_| len).map_err(Error::Io));
                        }
                        match s.sends.iter_mut().find(|f| f.seq == seq) {
                            Some(f) => {
                                if !f.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                                    f.waker = Some(cx.waker().clone());
                                }
                                None
                            }
                            None => Some(Err(Error::Closed)),
                        }
                    });
                    let r = match r {
                        Ok(None) => return Poll::Pending,
                        Ok(Some(r)) => r,
                        Err(e) => Err(e),
                    };
                    this.state = SendState::Done(None);
                    return Poll::Ready(r);
                }
                SendState::Waiting { data, ticket } => {
                    let r = this.udp.with(|core, s| {
                        if let Err(e) = refusal(s, peer) {
                            s.leave_admission(ticket);
                            return Err(e);
                        }
                        let first = s.admission.front().map(|(t, _)| *t) == Some(ticket);
                        if first && s.sends.len() < core.cfg.udp_sends_in_flight() {
                            s.admission.pop_front();
                            let buf = copy(core, data, false)?;
                            let seq = commit(core, s, key, peer, buf, false);
                            if let Some((_, w)) = s.admission.front() {
                                w.wake_by_ref();
                            }
                            return Ok(Some(SendState::Committed { seq, len: data.len() }));
                        }
                        if let Some(e) = s.admission.iter_mut().find(|(t, _)| *t == ticket) {
                            e.1 = cx.waker().clone();
                        }
                        Ok(None)
                    });
                    match r {
                        Ok(Ok(Some(st))) => this.state = st,
                        Ok(Ok(None)) => return Poll::Pending,
                        Ok(Err(e)) | Err(e) => {
                            this.state = SendState::Done(None);
                            return Poll::Ready(Err(e));
                        }
                    }
                }
            }
        }
    }
}

impl Drop for SendTo<'_> {
    fn drop(&mut self) {
        match self.state {
            SendState::Waiting { ticket, .. } => {
                let _ = self.udp.with(|_, s| s.leave_admission(ticket));
            }
            SendState::Committed { seq, .. } => {
                let _ = self.udp.with(|_, s| {
                    if s.done.remove(&seq).is_none()
                        && let Some(f) = s.sends.iter_mut().find(|f| f.seq == seq)
                    {
                        f.abandoned = true;
                        f.waker = None;
                    }
                });
            }
            SendState::Done(_) => {}
        }
    }
}
