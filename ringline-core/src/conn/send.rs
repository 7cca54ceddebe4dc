//! Sending: `send_nowait`, [`SendFuture`], [`SendBuilder`], [`Flush`].
//!
//! Each connection has one FIFO queue and at most one write in flight. Copied bytes are staged
//! in send-pool slots (small sends are appended to the last queued slot when it has room); what
//! does not fit goes into one runtime-owned heap buffer. A send is *admitted* while the queue is
//! below `send_queue_limit` and no earlier send waits for admission. Every awaited send resolves
//! once, after the acknowledged stream offset passed its last byte (API R4).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::ConnCtx;
use super::pool::SendPool;
use super::state::{Conn, WriteState};
use super::table::write_error;
use crate::buf::{GuardBox, PartMemory, SendGuard, SendPart};
use crate::error::Error;
use crate::metrics::WorkerCounters;
use crate::runtime::core::Core;

/// Most guard parts in one builder.
pub const MAX_GUARDS: usize = 16;

/// One piece of a logical send.
pub(super) enum Piece<'a> {
    Copy(&'a [u8]),
    Guard(GuardBox),
}

impl Piece<'_> {
    fn len(&self) -> usize {
        match self {
            Piece::Copy(d) => d.len(),
            Piece::Guard(g) => g.len(),
        }
    }

    /// The bytes of the piece.
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Piece::Copy(d) => d,
            Piece::Guard(g) => g.bytes(),
        }
    }
}

/// Why a send cannot be queued right now.
fn write_refusal(c: &Conn) -> Option<Error> {
    match &c.write {
        WriteState::Open if c.close.is_none() => None,
        WriteState::Failed(e) => Some(Error::Io(crate::error::duplicate_io(e))),
        _ => Some(Error::Closed),
    }
}

/// Copy room left in the last queued pool slot.
fn tail_room(c: &Conn) -> usize {
    match c.queue.back() {
        Some(SendPart { memory: PartMemory::Pool(slot), end, .. }) => slot.len() - end,
        _ => 0,
    }
}

/// Appends `data` to the queue: into the tail slot, then new pool slots, then (if allowed) one
/// heap buffer. Returns the bytes that went to the heap.
fn copy_in(c: &mut Conn, pool: &mut SendPool, data: &[u8], allow_heap: bool) -> usize {
    let data = fill_pool_slots(&mut c.queue, pool, data);
    if data.is_empty() {
        return 0;
    }
    assert!(allow_heap, "copy_in without heap after a room check");
    c.queue.push_back(SendPart { memory: PartMemory::Heap(data.to_vec()), start: 0, end: data.len() });
    data.len()
}

/// Copies `data` into the queue's tail pool slot, then into new pool slots while the pool has
/// them; returns what did not fit.
pub(super) fn fill_pool_slots<'d>(
    queue: &mut VecDeque<SendPart>,
    pool: &mut SendPool,
    mut data: &'d [u8],
) -> &'d [u8] {
    if let Some(SendPart { memory: PartMemory::Pool(slot), end, .. }) = queue.back_mut() {
        let n = data.len().min(slot.len() - *end);
        slot[*end..*end + n].copy_from_slice(&data[..n]);
        *end += n;
        data = &data[n..];
    }
    while !data.is_empty() {
        let Some(mut slot) = pool.alloc() else { break };
        let n = data.len().min(slot.len());
        slot[..n].copy_from_slice(&data[..n]);
        queue.push_back(SendPart { memory: PartMemory::Pool(slot), start: 0, end: n });
        data = &data[n..];
    }
    data
}

/// Commits every piece; returns the stream offset after its last byte.
fn commit<'p>(core: &Core, c: &mut Conn, pieces: impl IntoIterator<Item = Piece<'p>>) -> u64 {
    if c.layer.is_some() {
        return super::layer::commit(core, c, pieces);
    }
    let mut pool = core.pool.borrow_mut();
    let threshold = core.cfg.zero_copy_threshold();
    let mut heap = 0;
    for p in pieces {
        let len = p.len();
        match p {
            Piece::Copy(d) => heap += copy_in(c, &mut pool, d, true),
            Piece::Guard(g) if g.len() < threshold => heap += copy_in(c, &mut pool, g.bytes(), true),
            Piece::Guard(g) => {
                c.queue.push_back(SendPart { memory: PartMemory::Guard(g), start: 0, end: len })
            }
        }
        c.queued += len;
        c.committed += len as u64;
    }
    if heap > 0 {
        WorkerCounters::add(&core.counters().send_overflow_bytes, heap as u64);
    }
    c.committed
}

/// `Some(Ok)` once the acknowledged offset reached `end`, `Some(Err)` once those bytes can no
/// longer be written, else registers the waker and returns `None`.
fn poll_acked(c: &mut Conn, end: u64, cx: &Context<'_>) -> Option<Result<(), Error>> {
    if c.acked >= end {
        return Some(Ok(()));
    }
    if end > c.committed {
        return Some(Err(write_error(c)));
    }
    if !c.send_waiters.iter().any(|(e, w)| *e == end && w.will_wake(cx.waker())) {
        c.send_waiters.push((end, cx.waker().clone()));
    }
    None
}

/// Bytes of `pieces` that would be copied.
fn copy_len(core: &Core, pieces: &[Piece<'_>]) -> usize {
    let threshold = core.cfg.zero_copy_threshold();
    pieces
        .iter()
        .map(|p| match p {
            Piece::Copy(d) => d.len(),
            Piece::Guard(g) if g.len() < threshold => g.len(),
            Piece::Guard(_) => 0,
        })
        .sum()
}

/// All-or-nothing, non-waiting send of `pieces`.
fn send_now<'p, P>(conn: &ConnCtx, pieces: P) -> Result<(), Error>
where
    P: AsRef<[Piece<'p>]> + IntoIterator<Item = Piece<'p>>,
{
    let key = conn.key;
    conn.with_table(|core, conns| {
        let c = conns.get(key).ok_or(Error::InvalidConnection)?;
        if let Some(e) = write_refusal(c) {
            return Err(e);
        }
        if c.queued >= core.cfg.send_queue_limit() || !c.admission.is_empty() {
            WorkerCounters::add(&core.counters().send_queue_full, 1);
            core.exhausted(crate::runtime::exhaustion::Exhaustion::SendQueue);
            return Err(Error::SendQueueFull);
        }
        let need = copy_len(core, pieces.as_ref());
        let pool = core.pool.borrow();
        let room = tail_room(c) + pool.available() * pool.slot_size();
        drop(pool);
        if need > room {
            WorkerCounters::add(&core.counters().send_pool_exhausted, 1);
            core.exhausted(crate::runtime::exhaustion::Exhaustion::SendPool);
            return Err(Error::SendPoolExhausted);
        }
        commit(core, c, pieces);
        conns.mark_dirty(key);
        Ok(())
    })?
}

impl ConnCtx {
    /// Queues a copy of `data` now, or fails without queuing anything.
    ///
    /// # Errors
    /// `Closed` after `close`/`shutdown_write`; the connection's earlier write error;
    /// `InvalidConnection`; `SendQueueFull`; `SendPoolExhausted` (use `send` for large data).
    pub fn send_nowait(&self, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return self.with(|_, c| write_refusal(c).map_or(Ok(()), Err))?;
        }
        send_now(self, [Piece::Copy(data)])
    }

    /// Sends `data`; resolves with its length once every byte was acknowledged.
    pub fn send<'a>(&self, data: &'a [u8]) -> SendFuture<'a> {
        SendFuture::start(*self, [Piece::Copy(data)])
    }

    /// Sends memory the runtime may keep; large guards are written without a copy.
    pub fn send_owned<G: SendGuard>(&self, data: G) -> SendFuture<'static> {
        let len = data.bytes().len();
        let key = self.key;
        // Small guards admitted right now are copied during this call: no box, no waiting.
        let fast = self.with_table(|core, conns| {
            let c = conns.get(key)?;
            if let Some(e) = write_refusal(c) {
                return Some(SendState::Done(Some(Err(e))));
            }
            let admissible = c.queued < core.cfg.send_queue_limit() && c.admission.is_empty();
            if len >= core.cfg.zero_copy_threshold() || !admissible {
                return None;
            }
            let end = commit(core, c, [Piece::Copy(data.bytes())]);
            conns.mark_dirty(key);
            Some(SendState::Committed { end, len })
        });
        let state = match fast {
            Ok(Some(state)) => state,
            Ok(None) => return SendFuture::start(*self, [Piece::Guard(GuardBox::new(data))]),
            Err(e) => SendState::Done(Some(Err(e))),
        };
        SendFuture { conn: *self, state }
    }

    /// A builder for one logical send made of copied and guarded parts.
    pub fn send_parts<'a>(&self) -> SendBuilder<'a> {
        SendBuilder { conn: *self, pieces: Vec::new(), guards: 0 }
    }

    /// Resolves once every send queued before this call was acknowledged.
    pub fn flush(&self) -> Flush {
        let end = self.with(|_, c| c.committed);
        Flush { conn: *self, end }
    }
}

/// Builds one logical send from copied parts and guards.
pub struct SendBuilder<'a> {
    conn: ConnCtx,
    pieces: Vec<Piece<'a>>,
    guards: usize,
}

impl<'a> SendBuilder<'a> {
    /// Appends bytes to copy.
    pub fn copy(mut self, data: &'a [u8]) -> Self {
        self.pieces.push(Piece::Copy(data));
        self
    }
    /// Appends a guard (sent zero-copy at or above `zero_copy_threshold`).
    pub fn guard(mut self, g: GuardBox) -> Self {
        self.guards += 1;
        self.pieces.push(Piece::Guard(g));
        self
    }
    /// Sends the parts as one ordered send (like `send`).
    pub fn submit(self) -> SendFuture<'a> {
        if self.guards > MAX_GUARDS {
            return SendFuture {
                conn: self.conn,
                state: SendState::Done(Some(Err(Error::InvalidInput("more than MAX_GUARDS guards")))),
            };
        }
        SendFuture::start(self.conn, self.pieces)
    }
    /// Queues the parts now or fails without queuing anything (like `send_nowait`).
    ///
    /// # Errors
    /// As `send_nowait`, plus `InvalidInput` for more than [`MAX_GUARDS`] guards.
    pub fn submit_nowait(self) -> Result<(), Error> {
        if self.guards > MAX_GUARDS {
            return Err(Error::InvalidInput("more than MAX_GUARDS guards"));
        }
        if self.pieces.iter().all(|p| p.len() == 0) {
            return Ok(());
        }
        send_now(&self.conn, self.pieces)
    }
}

enum SendState<'a> {
    /// Waiting for admission, holding the data.
    Waiting {
        pieces: Vec<Piece<'a>>,
        ticket: u64,
        len: usize,
    },
    /// Committed: resolves when the acknowledged offset reaches `end`.
    Committed {
        end: u64,
        len: usize,
    },
    Done(Option<Result<usize, Error>>),
}

/// Future of an awaited send; resolves to `Result<usize, Error>` (the send's own length).
///
/// Dropped before admission it sends nothing; after admission the bytes are still sent.
#[must_use = "a send not admitted at call time must be awaited"]
pub struct SendFuture<'a> {
    conn: ConnCtx,
    state: SendState<'a>,
}

impl<'a> SendFuture<'a> {
    fn start<P>(conn: ConnCtx, pieces: P) -> SendFuture<'a>
    where
        P: AsRef<[Piece<'a>]> + IntoIterator<Item = Piece<'a>>,
    {
        let len: usize = pieces.as_ref().iter().map(Piece::len).sum();
        let key = conn.key;
        let r = conn.with_table(|core, conns| {
            let c = conns.get(key).ok_or(Error::InvalidConnection)?;
            if let Some(e) = write_refusal(c) {
                return Err(e);
            }
            if len == 0 {
                return Ok(SendState::Done(Some(Ok(0))));
            }
            if c.queued < core.cfg.send_queue_limit() && c.admission.is_empty() {
                let end = commit(core, c, pieces);
                conns.mark_dirty(key);
                return Ok(SendState::Committed { end, len });
            }
            WorkerCounters::add(&core.counters().send_queue_full, 1);
            core.exhausted(crate::runtime::exhaustion::Exhaustion::SendQueue);
            let ticket = c.next_ticket;
            c.next_ticket += 1;
            c.admission.push_back((ticket, std::task::Waker::noop().clone()));
            Ok(SendState::Waiting { pieces: pieces.into_iter().collect(), ticket, len })
        });
        let state = match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) | Err(e) => SendState::Done(Some(Err(e))),
        };
        SendFuture { conn, state }
    }
}

impl Future for SendFuture<'_> {
    type Output = Result<usize, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let key = this.conn.key;
        loop {
            match &mut this.state {
                SendState::Done(r) => return Poll::Ready(r.take().unwrap_or(Err(Error::Closed))),
                SendState::Committed { end, len } => {
                    let (end, len) = (*end, *len);
                    let r = this.conn.with(|_, c| poll_acked(c, end, cx).map(|r| r.map(|()| len)));
                    return match r {
                        Ok(Some(r)) => {
                            this.state = SendState::Done(None);
                            Poll::Ready(r)
                        }
                        Ok(None) => Poll::Pending,
                        Err(e) => Poll::Ready(Err(e)),
                    };
                }
                SendState::Waiting { ticket, len, .. } => {
                    let (ticket, len) = (*ticket, *len);
                    let SendState::Waiting { pieces, .. } =
                        std::mem::replace(&mut this.state, SendState::Done(None))
                    else {
                        unreachable!()
                    };
                    let r = this.conn.with_table(|core, conns| {
                        let c = conns.get(key).ok_or(Error::InvalidConnection)?;
                        if let Some(e) = write_refusal(c) {
                            c.admission.retain(|(t, _)| *t != ticket);
                            c.wake_senders();
                            return Err(e);
                        }
                        let first = c.admission.front().map(|(t, _)| *t) == Some(ticket);
                        if first && c.queued < core.cfg.send_queue_limit() {
                            c.admission.pop_front();
                            let end = commit(core, c, pieces);
                            if let Some((_, w)) = c.admission.front() {
                                w.wake_by_ref();
                            }
                            conns.mark_dirty(key);
                            return Ok(SendState::Committed { end, len });
                        }
                        if let Some(e) = c.admission.iter_mut().find(|(t, _)| *t == ticket) {
                            e.1 = cx.waker().clone();
                        }
                        Ok(SendState::Waiting { pieces, ticket, len })
                    });
                    match r {
                        Ok(Ok(s @ SendState::Waiting { .. })) => {
                            this.state = s;
                            return Poll::Pending;
                        }
                        Ok(Ok(s)) => this.state = s,
                        Ok(Err(e)) | Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
        }
    }
}

impl Drop for SendFuture<'_> {
    fn drop(&mut self) {
        if let SendState::Waiting { ticket, .. } = self.state {
            let key = self.conn.key;
            let _ = self.conn.with(|_, c| {
                let was_first = c.admission.front().map(|(t, _)| *t) == Some(ticket);
                c.admission.retain(|(t, _)| *t != ticket);
                if was_first && let Some((_, w)) = c.admission.front() {
                    w.wake_by_ref();
                }
                let _ = key;
            });
        }
    }
}

/// Future of [`ConnCtx::flush`]; resolves to `Result<(), Error>`.
#[must_use = "futures do nothing unless awaited"]
pub struct Flush {
    conn: ConnCtx,
    end: Result<u64, Error>,
}

impl Future for Flush {
    type Output = Result<(), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let end = match &self.end {
            Ok(e) => *e,
            Err(e) => return Poll::Ready(Err(e.duplicate())),
        };
        let r = self.conn.with(|_, c| poll_acked(c, end, cx));
        match r {
            Ok(Some(r)) => Poll::Ready(r),
            Ok(None) => Poll::Pending,
            Err(e) => {
                self.end = Err(e.duplicate());
                Poll::Ready(Err(e))
            }
        }
    }
}

/// Admission for the `futures-io` adapter (`conn/stream.rs`): commits a copy of `bufs` (one
/// logical send) when admissible, else takes (or keeps) a FIFO place in `ticket` and registers the
/// waker there. `ticket` is `None` again once the bytes were committed or an error was returned.
/// The caller passes the buffer anew on every poll, so a retry with another buffer is fine: the
/// place belongs to the stream, not to one buffer.
#[cfg(feature = "futures-io")]
pub(super) fn poll_admit_copy(
    conn: &ConnCtx,
    ticket: &mut Option<u64>,
    cx: &Context<'_>,
    bufs: &[std::io::IoSlice<'_>],
) -> Poll<Result<usize, Error>> {
    let key = conn.key;
    let len: usize = bufs.iter().map(|b| b.len()).sum();
    let r = conn.with_table(|core, conns| {
        let c = conns.get(key).ok_or(Error::InvalidConnection)?;
        if let Some(e) = write_refusal(c) {
            if let Some(t) = ticket.take() {
                leave_admission(c, t);
            }
            return Err(e);
        }
        if len == 0 {
            return Ok(Some(0));
        }
        let limit = core.cfg.send_queue_limit();
        let admitted = c.queued < limit
            && match *ticket {
                None => c.admission.is_empty(),
                Some(t) => c.admission.front().map(|(f, _)| *f) == Some(t),
            };
        if admitted {
            if ticket.take().is_some() {
                c.admission.pop_front();
            }
            commit(core, c, bufs.iter().map(|b| Piece::Copy(&b[..])));
            if let Some((_, w)) = c.admission.front() {
                w.wake_by_ref();
            }
            conns.mark_dirty(key);
            return Ok(Some(len));
        }
        match *ticket {
            Some(t) => match c.admission.iter_mut().find(|(x, _)| *x == t) {
                Some(e) => {
                    if !e.1.will_wake(cx.waker()) {
                        e.1 = cx.waker().clone();
                    }
                }
                None => c.admission.push_back((t, cx.waker().clone())),
            },
            None => {
                WorkerCounters::add(&core.counters().send_queue_full, 1);
                core.exhausted(crate::runtime::exhaustion::Exhaustion::SendQueue);
                let t = c.next_ticket;
                c.next_ticket += 1;
                c.admission.push_back((t, cx.waker().clone()));
                *ticket = Some(t);
            }
        }
        Ok(None)
    });
    match r {
        Ok(Ok(Some(n))) => Poll::Ready(Ok(n)),
        Ok(Ok(None)) => Poll::Pending,
        Ok(Err(e)) | Err(e) => {
            *ticket = None;
            Poll::Ready(Err(e))
        }
    }
}

/// Gives up the admission place `ticket` of the `futures-io` adapter (no-op for a stale handle).
#[cfg(feature = "futures-io")]
pub(super) fn release_ticket(conn: &ConnCtx, ticket: u64) {
    let _ = conn.with(|_, c| leave_admission(c, ticket));
}

/// Removes `ticket` from the admission queue, waking the next waiter if it was first.
#[cfg(feature = "futures-io")]
fn leave_admission(c: &mut Conn, ticket: u64) {
    let was_first = c.admission.front().map(|(t, _)| *t) == Some(ticket);
    c.admission.retain(|(t, _)| *t != ticket);
    if was_first && let Some((_, w)) = c.admission.front() {
        w.wake_by_ref();
    }
}
