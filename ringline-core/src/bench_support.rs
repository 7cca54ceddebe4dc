//! Thin public wrappers over crate-private structures, for the criterion benchmarks in
//! `ringline-core/benches/` only (feature `testing`, hidden from the docs).
//!
//! Not API: nothing here is covered by semver, and it may change with any commit. Each wrapper
//! calls the structure the worker uses (`SendPool`, `TimerSlots`, `ConnTable`); where a step is
//! done by a future in production (`with_data` and `recv` consuming the accumulator), the
//! wrapper repeats that future's steps on the same table and says so.

use std::task::Waker;
use std::time::Instant;

use bytes::{Buf, Bytes};

use crate::conn::pool::SendPool;
use crate::conn::state::Phase;
use crate::conn::table::ConnTable;
use crate::driver::ConnKey;
use crate::time::slots::{TimerKey, TimerSlots};

/// The worker's send pool.
pub struct SendPoolBench(SendPool);

impl SendPoolBench {
    /// A pool of `slots` slots of `slot_size` bytes (allocated lazily, as in the worker).
    pub fn new(slots: usize, slot_size: usize) -> SendPoolBench {
        SendPoolBench(SendPool::new(slots, slot_size))
    }

    /// Takes a slot, or `None` when all are in use.
    pub fn alloc(&mut self) -> Option<Box<[u8]>> {
        self.0.alloc()
    }

    /// Returns a slot.
    pub fn release(&mut self, slot: Box<[u8]>) {
        self.0.release(slot)
    }
}

/// The worker's timer slots.
pub struct TimerSlotsBench(TimerSlots);

/// A timer armed in a [`TimerSlotsBench`].
#[derive(Clone, Copy, Debug)]
pub struct TimerKeyBench(TimerKey);

impl TimerSlotsBench {
    /// `capacity` timer slots.
    pub fn new(capacity: usize) -> TimerSlotsBench {
        TimerSlotsBench(TimerSlots::new(capacity))
    }

    /// Arms a timer (what a `Sleep` does on its first poll); `None` when every slot is taken.
    pub fn arm(&mut self, deadline: Instant, waker: &Waker) -> Option<TimerKeyBench> {
        self.0.try_arm(deadline, waker).map(TimerKeyBench)
    }

    /// True once the timer fired (what a `Sleep` checks on later polls).
    pub fn poll_fired(&mut self, key: TimerKeyBench, waker: &Waker) -> bool {
        self.0.poll_fired(key.0, waker)
    }

    /// Frees the slot (a `Sleep` dropped, fired or not).
    pub fn release(&mut self, key: TimerKeyBench) {
        self.0.release(key.0)
    }

    /// Fires every timer due at `now` (the worker does this after each park).
    pub fn fire_due(&mut self, now: Instant) {
        self.0.fire_due(now)
    }

    /// The earliest armed deadline; drops cancelled entries on the way (the worker asks before
    /// each park).
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.0.next_deadline()
    }
}

/// One open connection's receive accumulator in a connection table.
pub struct AccumulatorBench {
    table: ConnTable,
    key: ConnKey,
}

impl Default for AccumulatorBench {
    fn default() -> Self {
        AccumulatorBench::new()
    }
}

impl AccumulatorBench {
    /// A table with one open connection.
    pub fn new() -> AccumulatorBench {
        let mut table = ConnTable::new(1);
        let key = table.alloc(false).expect("a table of one has a free slot");
        if let Some(c) = table.get(key) {
            c.phase = Phase::Open;
        }
        AccumulatorBench { table, key }
    }

    /// Received bytes, as the driver's `Recv` completion delivers them (`ConnTable::on_recv`).
    pub fn append(&mut self, data: &[u8]) -> usize {
        self.table.on_recv(self.key, data)
    }

    /// Bytes buffered.
    pub fn len(&mut self) -> usize {
        self.table.get(self.key).map_or(0, |c| c.acc.len())
    }

    /// True when nothing is buffered.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// The steps `with_data` takes when its closure consumes `n` of the buffered bytes: take the
    /// accumulator out, show it, advance, put it back, mark the connection dirty; then the
    /// flush's clearing of the dirty mark.
    pub fn consume(&mut self, n: usize, mut parse: impl FnMut(&[u8])) {
        let Some(c) = self.table.get(self.key) else { return };
        let mut acc = std::mem::take(&mut c.acc);
        parse(&acc[..]);
        acc.advance(n.min(acc.len()));
        if let Some(c) = self.table.get(self.key) {
            c.acc = acc;
            c.touch();
        }
        self.table.mark_dirty(self.key);
        self.clear_dirty();
    }

    /// The steps `recv` takes: detach every buffered byte as `Bytes`, keeping the allocation's
    /// spare room (up to 64 KiB) for the next receive; then the flush's clearing of the dirty mark.
    pub fn take_all(&mut self) -> Bytes {
        let Some(c) = self.table.get(self.key) else { return Bytes::new() };
        let mut acc = std::mem::take(&mut c.acc);
        let out = acc.split().freeze();
        if acc.capacity() <= 64 * 1024 {
            c.acc = acc;
        }
        c.touch();
        self.table.mark_dirty(self.key);
        self.clear_dirty();
        out
    }

    /// What the flush does to a dirty connection with nothing to submit.
    fn clear_dirty(&mut self) {
        for index in std::mem::take(&mut self.table.dirty) {
            self.table.slots[index as usize].dirty = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrappers_do_what_the_worker_does() {
        let mut pool = SendPoolBench::new(1, 64);
        let slot = pool.alloc().unwrap();
        assert!(pool.alloc().is_none());
        pool.release(slot);

        let mut timers = TimerSlotsBench::new(2);
        let now = Instant::now();
        let key = timers.arm(now, Waker::noop()).unwrap();
        assert!(!timers.poll_fired(key, Waker::noop()));
        timers.fire_due(now);
        assert!(timers.poll_fired(key, Waker::noop()));
        timers.release(key);
        assert_eq!(timers.next_deadline(), None);

        let mut acc = AccumulatorBench::new();
        assert_eq!(acc.append(b"hello world"), 11);
        let mut seen = 0;
        acc.consume(6, |d| seen = d.len());
        assert_eq!((seen, acc.len()), (11, 5));
        assert_eq!(&acc.take_all()[..], b"world");
        assert!(acc.is_empty());
    }
}
