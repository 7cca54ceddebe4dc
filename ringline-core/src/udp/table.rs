//! The per-worker UDP socket table and what backend completions do to it.
//!
//! Each socket keeps a bounded queue of received datagrams (drop-newest beyond `udp_recv_queue`,
//! counted in `udp_dropped`), a FIFO of waiting readers (the reader at position `p` may take a
//! datagram once `p < queue.len()`, so each datagram goes to exactly one waiter), a pending error
//! for connected sockets, and the sends in flight in submission order (the backend answers them in
//! that order, so results are matched by position).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::task::Waker;

use crate::buf::SendBuf;
use crate::conn::table::release_parts;
use crate::driver::UdpKey;
use crate::metrics::WorkerCounters;
use crate::runtime::core::Core;

/// Largest number of UDP socket slots per worker (keys pack the index in 24 bits).
const MAX_SLOTS: usize = 1 << 24;

/// One send handed to the backend, waiting for its `UdpSent`.
pub(crate) struct InFlight {
    pub(crate) seq: u64,
    /// The awaiting future's waker; `None` until it polls.
    pub(crate) waker: Option<Waker>,
    /// Nobody awaits the result (`try_send_to`, or the future was dropped): errors are only counted.
    pub(crate) abandoned: bool,
}

/// The core's state of one UDP socket.
pub(crate) struct UdpSock {
    pub(crate) local: SocketAddr,
    /// The connected peer, if any.
    pub(crate) peer: Option<SocketAddr>,
    /// Received datagrams not yet taken.
    pub(crate) queue: VecDeque<(Vec<u8>, SocketAddr)>,
    /// Waiting readers in arrival order: (ticket, waker).
    pub(crate) readers: VecDeque<(u64, Waker)>,
    pub(crate) next_reader: u64,
    /// An error for the next `recv`/`send` (ICMP on a connected socket).
    pub(crate) error: Option<io::Error>,
    /// Sends submitted and not yet answered, in submission order.
    pub(crate) sends: VecDeque<InFlight>,
    /// Results of answered sends whose futures have not polled yet.
    pub(crate) done: HashMap<u64, io::Result<usize>>,
    pub(crate) next_send: u64,
    /// Sends waiting for admission (`udp_sends_in_flight`), FIFO: (ticket, waker).
    pub(crate) admission: VecDeque<(u64, Waker)>,
    pub(crate) next_ticket: u64,
    /// `UdpClose` was submitted.
    pub(crate) closing: bool,
    /// Opened by `bind_udp` (owned by the runtime, closed at shutdown).
    pub(crate) runtime_owned: bool,
}

impl UdpSock {
    pub(crate) fn new(local: SocketAddr, runtime_owned: bool) -> UdpSock {
        UdpSock {
            local,
            peer: None,
            queue: VecDeque::new(),
            readers: VecDeque::new(),
            next_reader: 0,
            error: None,
            sends: VecDeque::new(),
            done: HashMap::new(),
            next_send: 0,
            admission: VecDeque::new(),
            next_ticket: 0,
            closing: false,
            runtime_owned,
        }
    }

    /// Wakes every reader entitled to a queued datagram (or to the pending error).
    pub(crate) fn wake_eligible(&self) {
        let n = self.queue.len().max(usize::from(self.error.is_some())).min(self.readers.len());
        for (_, w) in self.readers.iter().take(n) {
            w.wake_by_ref();
        }
    }

    /// Wakes every reader and every sender (close, shutdown).
    pub(crate) fn wake_all(&self) {
        for (_, w) in &self.readers {
            w.wake_by_ref();
        }
        for (_, w) in &self.admission {
            w.wake_by_ref();
        }
        for s in &self.sends {
            if let Some(w) = &s.waker {
                w.wake_by_ref();
            }
        }
    }

    /// Removes reader `ticket` (if queued) and wakes whoever became entitled.
    pub(crate) fn leave_readers(&mut self, ticket: u64) {
        self.readers.retain(|(t, _)| *t != ticket);
        self.wake_eligible();
    }

    /// Removes sender `ticket` from admission and wakes the next one if it was first.
    pub(crate) fn leave_admission(&mut self, ticket: u64) {
        let was_first = self.admission.front().map(|(t, _)| *t) == Some(ticket);
        self.admission.retain(|(t, _)| *t != ticket);
        if was_first && let Some((_, w)) = self.admission.front() {
            w.wake_by_ref();
        }
    }
}

struct Slot {
    generation: u32,
    sock: Option<UdpSock>,
}

/// The UDP sockets of one worker.
#[derive(Default)]
pub(crate) struct UdpTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    open: usize,
    /// Sockets opened by the facade for `bind_udp`, adopted when the loop starts.
    pub(crate) initial: Vec<std::net::UdpSocket>,
    /// Completions for keys no longer known.
    pub(crate) stale: u64,
}

impl UdpTable {
    /// Stores `sock` in a free slot; `None` when every index is taken.
    pub(crate) fn alloc(&mut self, sock: UdpSock) -> Option<UdpKey> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < MAX_SLOTS => {
                self.slots.push(Slot { generation: 0, sock: None });
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        let slot = &mut self.slots[index as usize];
        slot.sock = Some(sock);
        self.open += 1;
        Some(UdpKey { index, generation: slot.generation })
    }

    /// The socket of `key`, if that generation is live.
    pub(crate) fn get(&mut self, key: UdpKey) -> Option<&mut UdpSock> {
        match self.slots.get_mut(key.index as usize) {
            Some(Slot { generation, sock: Some(s) }) if *generation == key.generation => Some(s),
            _ => None,
        }
    }

    /// Frees the slot of `key` (after `UdpClosed`); the generation moves on.
    fn release(&mut self, key: UdpKey) -> Option<UdpSock> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation || slot.sock.is_none() {
            return None;
        }
        let sock = slot.sock.take();
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.index);
        self.open -= 1;
        sock
    }

    /// Sockets holding a slot (not yet `UdpClosed`).
    pub(crate) fn open(&self) -> usize {
        self.open
    }

    /// Keys of every live socket.
    pub(crate) fn live_keys(&self) -> Vec<UdpKey> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.sock.is_some())
            .map(|(i, s)| UdpKey { index: i as u32, generation: s.generation })
            .collect()
    }
}

/// `Completion::Datagram`.
pub(crate) fn on_datagram(core: &Core, key: UdpKey, data: &[u8], peer: SocketAddr, truncated: bool) {
    let counters = core.counters();
    let mut table = core.udp.borrow_mut();
    let limit = core.cfg.udp_recv_queue();
    let Some(s) = table.get(key) else {
        table.stale += 1;
        return;
    };
    if truncated {
        WorkerCounters::add(&counters.udp_truncated, 1);
        return;
    }
    if s.closing || s.peer.is_some_and(|p| p != peer) {
        return;
    }
    if s.queue.len() >= limit {
        WorkerCounters::add(&counters.udp_dropped, 1);
        return;
    }
    s.queue.push_back((data.to_vec(), peer));
    WorkerCounters::add(&counters.udp_datagrams_received, 1);
    if let Some((_, w)) = s.readers.get(s.queue.len() - 1) {
        w.wake_by_ref();
    }
}

/// `Completion::UdpError`: kept for the next `recv`/`send` of a connected socket, else counted.
pub(crate) fn on_error(core: &Core, key: UdpKey, error: io::Error) {
    let mut table = core.udp.borrow_mut();
    let Some(s) = table.get(key) else {
        table.stale += 1;
        return;
    };
    if s.peer.is_some() && !s.closing {
        s.error = Some(error);
        s.wake_eligible();
    } else {
        WorkerCounters::add(&core.counters().udp_send_errors, 1);
        tracing::debug!(
            worker = core.worker,
            index = key.index,
            "UDP error on an unconnected socket: {error}"
        );
    }
}

/// `Completion::UdpSent`: answers the oldest send in flight.
pub(crate) fn on_sent(core: &Core, key: UdpKey, buf: SendBuf, result: io::Result<usize>) {
    release_parts(buf.into_parts(), &mut core.pool.borrow_mut());
    let counters = core.counters();
    match &result {
        Ok(_) => WorkerCounters::add(&counters.udp_datagrams_sent, 1),
        Err(_) => WorkerCounters::add(&counters.udp_send_errors, 1),
    }
    let mut table = core.udp.borrow_mut();
    let Some(s) = table.get(key) else {
        table.stale += 1;
        return;
    };
    let Some(slot) = s.sends.pop_front() else {
        tracing::error!(worker = core.worker, index = key.index, "UdpSent without a send in flight");
        return;
    };
    if !slot.abandoned {
        s.done.insert(slot.seq, result);
        if let Some(w) = slot.waker {
            w.wake();
        }
    }
    if let Some((_, w)) = s.admission.front() {
        w.wake_by_ref();
    }
}

/// `Completion::UdpClosed`: the slot is released.
pub(crate) fn on_closed(core: &Core, key: UdpKey) {
    let mut table = core.udp.borrow_mut();
    match table.release(key) {
        Some(s) => s.wake_all(),
        None => table.stale += 1,
    }
}
