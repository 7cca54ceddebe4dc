//! Timer slots: `timer_slots` entries keyed by (index, generation), a deadline heap with lazy
//! deletion, and a FIFO of futures waiting for a free slot.
//!
//! Timers are not kernel objects: the worker passes the earliest deadline to `Driver::park` as
//! its timeout and fires what is due after each park, so no stale kernel timer can exist.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::task::Waker;
use std::time::Instant;

/// A timer slot: index plus generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    index: u32,
    generation: u32,
}

struct Slot {
    generation: u32,
    in_use: bool,
    fired: bool,
    deadline: Instant,
    waker: Option<Waker>,
}

/// All timer slots of one worker.
pub(crate) struct TimerSlots {
    slots: Vec<Slot>,
    free: Vec<u32>,
    capacity: usize,
    in_use: usize,
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    waiters: VecDeque<(u64, Waker)>,
    next_ticket: u64,
}

impl TimerSlots {
    pub(crate) fn new(capacity: usize) -> Self {
        TimerSlots {
            slots: Vec::new(),
            free: Vec::new(),
            capacity,
            in_use: 0,
            heap: BinaryHeap::new(),
            waiters: VecDeque::new(),
            next_ticket: 0,
        }
    }

    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes a slot for `deadline`, or `None` when all are in use.
    pub(crate) fn try_arm(&mut self, deadline: Instant, waker: &Waker) -> Option<TimerKey> {
        if self.in_use >= self.capacity {
            return None;
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { generation: 0, in_use: false, fired: false, deadline, waker: None });
                (self.slots.len() - 1) as u32
            }
        };
        self.in_use += 1;
        let slot = &mut self.slots[index as usize];
        slot.in_use = true;
        slot.fired = false;
        slot.deadline = deadline;
        slot.waker = Some(waker.clone());
        self.heap.push(Reverse((deadline, index, slot.generation)));
        Some(TimerKey { index, generation: slot.generation })
    }

    fn slot(&mut self, key: TimerKey) -> Option<&mut Slot> {
        self.slots.get_mut(key.index as usize).filter(|s| s.in_use && s.generation == key.generation)
    }

    /// True once the timer fired; otherwise records the waker.
    pub(crate) fn poll_fired(&mut self, key: TimerKey, waker: &Waker) -> bool {
        match self.slot(key) {
            Some(s) if s.fired => true,
            Some(s) => {
                if !s.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    s.waker = Some(waker.clone());
                }
                false
            }
            None => true,
        }
    }

    /// Frees the slot and lets the first waiting future take it.
    pub(crate) fn release(&mut self, key: TimerKey) {
        let Some(slot) = self.slot(key) else { return };
        slot.in_use = false;
        slot.waker = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.index);
        self.in_use -= 1;
        if let Some((_, w)) = self.waiters.front() {
            w.wake_by_ref();
        }
    }

    /// Joins the FIFO of futures waiting for a slot; returns the ticket.
    pub(crate) fn enqueue_waiter(&mut self, waker: &Waker) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiters.push_back((ticket, waker.clone()));
        ticket
    }

    /// For a waiting future: arms a slot if it is first in line and a slot is free.
    pub(crate) fn poll_waiter(&mut self, ticket: u64, deadline: Instant, waker: &Waker) -> Option<TimerKey> {
        let first = self.waiters.front().map(|(t, _)| *t) == Some(ticket);
        if first && self.in_use < self.capacity {
            self.waiters.pop_front();
            let key = self.try_arm(deadline, waker);
            if self.in_use < self.capacity
                && let Some((_, w)) = self.waiters.front()
            {
                w.wake_by_ref();
            }
            return key;
        }
        if let Some(entry) = self.waiters.iter_mut().find(|(t, _)| *t == ticket) {
            entry.1 = waker.clone();
        }
        None
    }

    /// Leaves the FIFO (a waiting future was dropped); wakes the next one if it was first.
    pub(crate) fn cancel_waiter(&mut self, ticket: u64) {
        let Some(pos) = self.waiters.iter().position(|(t, _)| *t == ticket) else { return };
        self.waiters.remove(pos);
        if pos == 0
            && self.in_use < self.capacity
            && let Some((_, w)) = self.waiters.front()
        {
            w.wake_by_ref();
        }
    }

    /// Fires every timer due at `now`.
    pub(crate) fn fire_due(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, index, generation))) = self.heap.peek() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if let Some(s) = self.slot(TimerKey { index, generation }) {
                s.fired = true;
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// The earliest deadline of an armed timer.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, index, generation))) = self.heap.peek() {
            if self.slot(TimerKey { index, generation }).is_some_and(|s| !s.fired) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exhaustion_then_release_serves_waiters_in_order() {
        let w = Waker::noop();
        let mut t = TimerSlots::new(1);
        let now = Instant::now();
        let a = t.try_arm(now + Duration::from_secs(1), w).unwrap();
        assert!(t.try_arm(now, w).is_none());
        let first = t.enqueue_waiter(w);
        let second = t.enqueue_waiter(w);
        assert!(t.poll_waiter(second, now, w).is_none());
        assert!(t.poll_waiter(first, now, w).is_none());
        t.release(a);
        assert!(t.poll_waiter(second, now, w).is_none(), "second in line must wait");
        assert!(t.poll_waiter(first, now, w).is_some());
    }

    #[test]
    fn stale_key_after_release_is_inert() {
        let w = Waker::noop();
        let mut t = TimerSlots::new(2);
        let now = Instant::now();
        let a = t.try_arm(now, w).unwrap();
        t.release(a);
        let b = t.try_arm(now + Duration::from_secs(5), w).unwrap();
        t.release(a);
        assert_eq!(t.in_use(), 1);
        t.fire_due(now);
        assert!(!t.poll_fired(b, w), "the new timer must not fire with the old deadline");
        assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(5)));
    }
}
