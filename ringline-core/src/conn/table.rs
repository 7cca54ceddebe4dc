//! The connection table: slots with generations, and how backend completions change them.
//!
//! A completion whose key has a stale generation is counted and dropped (after its memory was
//! released), so it can never reach a newer occupant of the slot (API R6).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::buf::{PartMemory, SendBuf, SendPart};
use crate::conn::CloseReason;
use crate::conn::pool::SendPool;
use crate::conn::state::{CloseMode, Conn, ConnectResult, Phase, ReadEnd, WriteState};
use crate::driver::ConnKey;
use crate::error::{Error, duplicate_io};

/// An internal deadline attached to a connection (not a user timer slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ConnDeadline {
    Connect,
    Linger,
    Idle,
    /// `tls_handshake_timeout` of a layered connection.
    Handshake,
}

/// All connection slots of one worker.
pub(crate) struct ConnTable {
    pub(crate) slots: Vec<Conn>,
    free: Vec<u32>,
    max: usize,
    open: usize,
    pub(crate) dirty: Vec<u32>,
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32, ConnDeadline)>>,
    pub(crate) stale: u64,
    /// Emptied part lists of finished writes, reused for the next ones.
    pub(crate) spare_parts: Vec<Vec<SendPart>>,
    /// Handshake results and errors of layered connections, for the worker to act on.
    pub(crate) layer_events: Vec<(ConnKey, crate::conn::layer::LayerEvent)>,
}

impl ConnTable {
    pub(crate) fn new(max: usize) -> Self {
        ConnTable {
            slots: Vec::new(),
            free: Vec::new(),
            max,
            open: 0,
            dirty: Vec::new(),
            deadlines: BinaryHeap::new(),
            stale: 0,
            spare_parts: Vec::new(),
            layer_events: Vec::new(),
        }
    }

    /// Slots in use.
    pub(crate) fn open(&self) -> usize {
        self.open
    }

    /// Takes a free slot, or `None` when the table is full.
    pub(crate) fn alloc(&mut self, outbound: bool) -> Option<ConnKey> {
        if self.open >= self.max {
            return None;
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Conn::new());
                (self.slots.len() - 1) as u32
            }
        };
        self.open += 1;
        let c = &mut self.slots[index as usize];
        c.reset();
        c.outbound = outbound;
        c.held = true;
        c.phase = Phase::Reserved;
        Some(ConnKey { index, generation: c.generation })
    }

    /// The slot for `key`, if its generation matches and it is in use.
    pub(crate) fn get(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|c| c.generation == key.generation && c.phase != Phase::Free)
    }

    /// Queues the slot for the next flush.
    pub(crate) fn mark_dirty(&mut self, key: ConnKey) {
        if let Some(c) = self.get(key)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(key.index);
        }
    }

    /// Every key in use (for shutdown).
    pub(crate) fn live_keys(&self) -> Vec<ConnKey> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, c)| c.phase != Phase::Free)
            .map(|(i, c)| ConnKey { index: i as u32, generation: c.generation })
            .collect()
    }

    /// Frees a slot whose close finished and whose holder let go; bumps the generation.
    pub(crate) fn release(&mut self, index: u32) {
        let c = &mut self.slots[index as usize];
        c.generation = c.generation.wrapping_add(1);
        c.reset();
        self.free.push(index);
        self.open -= 1;
    }

    pub(crate) fn add_deadline(&mut self, key: ConnKey, at: Instant, kind: ConnDeadline) {
        self.deadlines.push(Reverse((at, key.index, key.generation, kind)));
    }

    /// The earliest internal deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, ..))| *at)
    }

    /// Pops every deadline due at `now`.
    pub(crate) fn due_deadlines(&mut self, now: Instant) -> Vec<(ConnKey, ConnDeadline)> {
        let mut due = Vec::new();
        while let Some(&Reverse((at, index, generation, kind))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            due.push((ConnKey { index, generation }, kind));
        }
        due
    }

    /// Received bytes: append to the accumulator and wake readers.
    pub(crate) fn on_recv(&mut self, key: ConnKey, data: &[u8]) -> usize {
        let Some(c) = self.get(key) else {
            self.stale += 1;
            return 0;
        };
        if c.read_end.is_some() {
            return 0;
        }
        if c.layer.is_some() {
            return self.on_recv_layered(key, data);
        }
        c.acc.extend_from_slice(data);
        c.wake_readers();
        self.mark_dirty(key);
        data.len()
    }

    /// Received bytes in a buffer the backend gave away: adopted as the accumulator when that is
    /// empty (no copy), else appended like [`ConnTable::on_recv`] and handed back. Returns the
    /// bytes accepted and the buffer to hand back, if any.
    pub(crate) fn on_recv_owned(&mut self, key: ConnKey, data: Vec<u8>) -> (usize, Option<Vec<u8>>) {
        let Some(c) = self.get(key) else {
            self.stale += 1;
            return (0, Some(data));
        };
        if c.read_end.is_some() || c.layer.is_some() || !c.acc.is_empty() {
            let n = self.on_recv(key, &data);
            return (n, Some(data));
        }
        let n = data.len();
        // Zero-copy: the `Vec` becomes the `Bytes`' (then the accumulator's) buffer as it is.
        c.acc = BytesMut::from(Bytes::from(data));
        c.wake_readers();
        self.mark_dirty(key);
        (n, None)
    }

    /// The read side ended.
    pub(crate) fn on_recv_end(&mut self, key: ConnKey, result: io::Result<()>) {
        let Some(c) = self.get(key) else {
            self.stale += 1;
            return;
        };
        c.recv_active = false;
        let event = if c.layer.is_some() { crate::conn::layer::on_recv_end(c, &result) } else { None };
        if c.read_end.is_none() {
            c.read_end = Some(match result {
                Ok(()) => ReadEnd::Eof,
                Err(e) => {
                    let reason = if e.kind() == io::ErrorKind::ConnectionReset {
                        CloseReason::Reset
                    } else {
                        CloseReason::Error(e.kind())
                    };
                    c.set_reason(reason);
                    ReadEnd::Failed(Error::Io(e))
                }
            });
            c.set_reason(CloseReason::PeerClosed);
        }
        c.wake_readers();
        self.mark_dirty(key);
        if let Some(ev) = event {
            self.layer_events.push((key, ev));
        }
    }

    /// A send finished: advance the acknowledged offset or fail the write side.
    pub(crate) fn on_sent(
        &mut self,
        key: ConnKey,
        buf: SendBuf,
        result: io::Result<usize>,
        pool: &mut SendPool,
    ) -> usize {
        let written = buf.total_len() - buf.remaining();
        let mut parts = buf.into_parts();
        release_parts(parts.drain(..), pool);
        if self.spare_parts.len() < 64 {
            self.spare_parts.push(parts);
        }
        let Some(c) = self.get(key) else {
            self.stale += 1;
            return 0;
        };
        c.in_flight = false;
        match result {
            Ok(n) => {
                c.acked += n as u64;
                c.queued -= n;
                c.touch();
            }
            Err(e) => {
                c.acked += written as u64;
                c.queued -= written.min(c.queued);
                if !matches!(c.write, WriteState::Failed(_)) {
                    let reason = match e.kind() {
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => CloseReason::Reset,
                        k => CloseReason::Error(k),
                    };
                    c.set_reason(reason);
                    c.write = WriteState::Failed(e);
                }
                discard_queue(c, pool);
                c.committed = c.acked;
                c.queued = 0;
            }
        }
        c.wake_senders();
        self.mark_dirty(key);
        written
    }

    /// A connect finished.
    pub(crate) fn on_connected(&mut self, key: ConnKey, result: io::Result<SocketAddr>) -> bool {
        let Some(c) = self.get(key) else {
            self.stale += 1;
            return false;
        };
        let ok = result.is_ok();
        match result {
            Ok(local) if c.phase == Phase::Connecting => {
                c.phase = Phase::Open;
                c.local = Some(local);
                // A layered connection resolves after its handshake (`layer::on_event`).
                if matches!(c.connect, ConnectResult::Pending) && c.layer.is_none() {
                    c.connect = ConnectResult::Done(Ok(()));
                }
            }
            Ok(_) => {}
            Err(e) => {
                if c.phase == Phase::Connecting {
                    c.phase = Phase::Open;
                }
                if matches!(c.connect, ConnectResult::Pending) {
                    c.connect = ConnectResult::Done(Err(Error::Io(e)));
                }
                c.close.get_or_insert(CloseMode::Abort);
                c.read_end.get_or_insert(ReadEnd::Local);
                c.write = WriteState::Closed;
            }
        }
        if let Some(w) = c.connect_waiter.take() {
            w.wake();
        }
        self.mark_dirty(key);
        ok
    }

    /// The backend closed the fd and nothing is in flight.
    pub(crate) fn on_closed(&mut self, key: ConnKey, pool: &mut SendPool) {
        let Some(c) = self.get(key) else {
            self.stale += 1;
            return;
        };
        c.phase = Phase::Closed;
        c.in_flight = false;
        discard_queue(c, pool);
        c.committed = c.acked;
        c.queued = 0;
        if matches!(c.write, WriteState::Open | WriteState::ShutdownPending) {
            c.write = WriteState::Closed;
        }
        c.read_end.get_or_insert(ReadEnd::Local);
        if matches!(c.connect, ConnectResult::Pending) {
            c.connect = ConnectResult::Done(Err(Error::Closed));
        }
        if let Some(w) = c.connect_waiter.take() {
            w.wake();
        }
        c.wake_readers();
        c.wake_senders();
        self.mark_dirty(key);
    }
}

/// Releases pool slots and drops guards of finished or discarded parts.
pub(crate) fn release_parts(parts: impl IntoIterator<Item = SendPart>, pool: &mut SendPool) {
    for p in parts {
        if let PartMemory::Pool(slot) = p.memory {
            pool.release(slot);
        }
    }
}

/// Drops every queued, unsent part (abort or write failure).
pub(crate) fn discard_queue(c: &mut Conn, pool: &mut SendPool) {
    let dropped: usize = c.queue.iter().map(SendPart::len).sum();
    release_parts(c.queue.drain(..), pool);
    c.queued -= dropped.min(c.queued);
    c.committed -= dropped as u64;
}

/// The error a send waiter gets once its bytes can no longer be written.
pub(crate) fn write_error(c: &Conn) -> Error {
    match &c.write {
        WriteState::Failed(e) => Error::Io(duplicate_io(e)),
        _ => Error::Closed,
    }
}

/// Random alloc / recv / close / release sequences against a model of the slots: a key of an
/// older generation never reaches the slot's new occupant (API R6).
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(bool),
        /// `on_recv` for any key handed out so far (live or stale).
        Recv(Index, Vec<u8>),
        /// `on_recv_end(Ok)` (FIN) for any key handed out so far.
        RecvEnd(Index),
        /// `on_closed` for any key handed out so far.
        Closed(Index),
        /// `release` of a slot in use.
        Release(Index),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<bool>().prop_map(Op::Alloc),
            4 => (any::<Index>(), prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(i, d)| Op::Recv(i, d)),
            1 => any::<Index>().prop_map(Op::RecvEnd),
            1 => any::<Index>().prop_map(Op::Closed),
            2 => any::<Index>().prop_map(Op::Release),
        ]
    }

    /// One key as the model sees it.
    struct Occupant {
        key: ConnKey,
        live: bool,
        /// The read side ended (FIN or close): later bytes are dropped.
        read_ended: bool,
        /// Every byte the slot accepted for this occupant.
        received: Vec<u8>,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn stale_keys_never_reach_a_new_occupant(max in 1..5usize, ops in prop::collection::vec(op(), 1..60)) {
            let mut table = ConnTable::new(max);
            let mut pool = SendPool::new(0, 0);
            let mut keys: Vec<Occupant> = Vec::new();
            let mut stale = 0u64;
            for op in ops {
                let live = keys.iter().filter(|o| o.live).count();
                match op {
                    Op::Alloc(outbound) => {
                        let got = table.alloc(outbound);
                        prop_assert_eq!(got.is_some(), live < max, "alloc fails only when full");
                        if let Some(key) = got {
                            prop_assert!(keys.iter().all(|o| o.key != key), "a new key aliases an old one: {:?}", key);
                            keys.push(Occupant { key, live: true, read_ended: false, received: Vec::new() });
                        }
                    }
                    Op::Recv(i, data) if !keys.is_empty() => {
                        let n = i.index(keys.len());
                        let o = &mut keys[n];
                        let accepted = table.on_recv(o.key, &data);
                        if !o.live {
                            stale += 1;
                            prop_assert_eq!(accepted, 0);
                        } else if o.read_ended {
                            prop_assert_eq!(accepted, 0, "no bytes after the read side ended");
                        } else {
                            prop_assert_eq!(accepted, data.len());
                            o.received.extend_from_slice(&data);
                        }
                    }
                    Op::RecvEnd(i) if !keys.is_empty() => {
                        let n = i.index(keys.len());
                        let o = &mut keys[n];
                        table.on_recv_end(o.key, Ok(()));
                        if o.live { o.read_ended = true } else { stale += 1 }
                    }
                    Op::Closed(i) if !keys.is_empty() => {
                        let n = i.index(keys.len());
                        let o = &mut keys[n];
                        table.on_closed(o.key, &mut pool);
                        if o.live { o.read_ended = true } else { stale += 1 }
                    }
                    Op::Release(i) if live > 0 => {
                        let o = keys.iter_mut().filter(|o| o.live).nth(i.index(live)).unwrap();
                        table.release(o.key.index);
                        o.live = false;
                    }
                    _ => {}
                }

                let live = keys.iter().filter(|o| o.live).count();
                prop_assert_eq!(table.open(), live);
                prop_assert!(table.open() <= max);
                prop_assert_eq!(table.stale, stale, "every completion for an old generation is counted");
                for o in &keys {
                    match table.get(o.key) {
                        Some(c) => {
                            prop_assert!(o.live, "stale key {:?} still reaches its slot", o.key);
                            prop_assert_eq!(&c.acc[..], &o.received[..], "accumulator of {:?}", o.key);
                        }
                        None => prop_assert!(!o.live, "live key {:?} lost its slot", o.key),
                    }
                }
            }
        }
    }
}
