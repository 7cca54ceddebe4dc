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

/// Random operation sequences against a model of the slots, the heap and the waiter FIFO.
#[cfg(test)]
mod proptests {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::Duration;

    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    /// A waker that counts its wakes.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// `try_arm` at `now + ms`.
        Arm(u64),
        /// `release` of any key handed out so far (live, fired or stale).
        Release(Index),
        /// Advance the clock by `ms`, then `fire_due(now)`.
        FireDue(u64),
        /// `poll_fired` of any key handed out so far, with the waker it was armed with.
        PollFired(Index),
        EnqueueWaiter,
        /// `cancel_waiter` of any ticket handed out so far.
        CancelWaiter(Index),
        /// `poll_waiter` of any ticket handed out so far, deadline `now + ms`.
        PollWaiter(Index, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..30u64).prop_map(Op::Arm),
            2 => any::<Index>().prop_map(Op::Release),
            2 => (0..20u64).prop_map(Op::FireDue),
            1 => any::<Index>().prop_map(Op::PollFired),
            1 => Just(Op::EnqueueWaiter),
            1 => any::<Index>().prop_map(Op::CancelWaiter),
            2 => (any::<Index>(), 0..30u64).prop_map(|(i, ms)| Op::PollWaiter(i, ms)),
        ]
    }

    /// A timer as the model sees it.
    struct Timer {
        key: TimerKey,
        deadline: Instant,
        live: bool,
        fired: bool,
        /// Index into `Model::counters`.
        counter: usize,
    }

    struct Model {
        capacity: usize,
        start: Instant,
        now: Instant,
        timers: Vec<Timer>,
        /// Tickets handed out, with their counter.
        tickets: Vec<(u64, usize)>,
        /// Tickets waiting, first in line first.
        waiters: VecDeque<u64>,
        counters: Vec<Arc<Counter>>,
        /// Wakes each counter must have seen.
        expected_wakes: Vec<usize>,
    }

    impl Model {
        fn live(&self) -> usize {
            self.timers.iter().filter(|t| t.live).count()
        }

        fn new_counter(&mut self) -> usize {
            self.counters.push(Arc::new(Counter(AtomicUsize::new(0))));
            self.expected_wakes.push(0);
            self.counters.len() - 1
        }

        fn waker(&self, counter: usize) -> Waker {
            Waker::from(self.counters[counter].clone())
        }

        fn counter_of(&self, ticket: u64) -> usize {
            self.tickets.iter().find(|(t, _)| *t == ticket).map(|(_, c)| *c).unwrap()
        }

        /// Expects a wake of the first waiter, if any.
        fn wake_first_waiter(&mut self) {
            if let Some(&first) = self.waiters.front() {
                let c = self.counter_of(first);
                self.expected_wakes[c] += 1;
            }
        }

        fn apply(&mut self, t: &mut TimerSlots, op: Op) -> Result<(), TestCaseError> {
            match op {
                Op::Arm(ms) => {
                    let counter = self.new_counter();
                    let deadline = self.now + Duration::from_millis(ms);
                    let got = t.try_arm(deadline, &self.waker(counter));
                    prop_assert_eq!(got.is_some(), self.live() < self.capacity, "arm fails only when full");
                    if let Some(key) = got {
                        prop_assert!(
                            !self.timers.iter().any(|old| old.key == key),
                            "a fresh key aliases an old one"
                        );
                        self.timers.push(Timer { key, deadline, live: true, fired: false, counter });
                    }
                }
                Op::Release(i) => {
                    if self.timers.is_empty() {
                        return Ok(());
                    }
                    let i = i.index(self.timers.len());
                    t.release(self.timers[i].key);
                    if self.timers[i].live {
                        self.timers[i].live = false;
                        self.wake_first_waiter();
                    }
                }
                Op::FireDue(ms) => {
                    self.now += Duration::from_millis(ms);
                    t.fire_due(self.now);
                    for timer in
                        self.timers.iter_mut().filter(|x| x.live && !x.fired && x.deadline <= self.now)
                    {
                        timer.fired = true;
                        self.expected_wakes[timer.counter] += 1;
                    }
                }
                Op::PollFired(i) => {
                    if self.timers.is_empty() {
                        return Ok(());
                    }
                    let timer = &self.timers[i.index(self.timers.len())];
                    let fired = t.poll_fired(timer.key, &self.waker(timer.counter));
                    // A released key reads as fired: its future is done and must not wait forever.
                    prop_assert_eq!(fired, !timer.live || timer.fired);
                }
                Op::EnqueueWaiter => {
                    let counter = self.new_counter();
                    let ticket = t.enqueue_waiter(&self.waker(counter));
                    prop_assert!(!self.tickets.iter().any(|(old, _)| *old == ticket), "tickets are unique");
                    self.tickets.push((ticket, counter));
                    self.waiters.push_back(ticket);
                }
                Op::CancelWaiter(i) => {
                    if self.tickets.is_empty() {
                        return Ok(());
                    }
                    let ticket = self.tickets[i.index(self.tickets.len())].0;
                    t.cancel_waiter(ticket);
                    if let Some(pos) = self.waiters.iter().position(|w| *w == ticket) {
                        self.waiters.remove(pos);
                        if pos == 0 && self.live() < self.capacity {
                            self.wake_first_waiter();
                        }
                    }
                }
                Op::PollWaiter(i, ms) => {
                    if self.tickets.is_empty() {
                        return Ok(());
                    }
                    let (ticket, counter) = self.tickets[i.index(self.tickets.len())];
                    let deadline = self.now + Duration::from_millis(ms);
                    let got = t.poll_waiter(ticket, deadline, &self.waker(counter));
                    let served = self.waiters.front() == Some(&ticket) && self.live() < self.capacity;
                    prop_assert_eq!(got.is_some(), served, "only the first waiter gets a free slot (FIFO)");
                    if let Some(key) = got {
                        self.waiters.pop_front();
                        self.timers.push(Timer { key, deadline, live: true, fired: false, counter });
                        if self.live() < self.capacity {
                            self.wake_first_waiter();
                        }
                    }
                }
            }
            Ok(())
        }

        fn check(&self, t: &mut TimerSlots) -> Result<(), TestCaseError> {
            prop_assert_eq!(t.in_use(), self.live());
            prop_assert!(t.in_use() <= t.capacity());
            let pending = self.timers.iter().filter(|x| x.live && !x.fired).map(|x| x.deadline).min();
            prop_assert_eq!(
                t.next_deadline().map(|d| d - self.start),
                pending.map(|d| d - self.start),
                "next_deadline is the earliest pending deadline"
            );
            for (c, counter) in self.counters.iter().enumerate() {
                prop_assert_eq!(
                    counter.0.load(Ordering::Relaxed),
                    self.expected_wakes[c],
                    "wakes of waker {}: only due, live timers fire and each fires once",
                    c
                );
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn timer_slots_match_model(capacity in 1..5usize, ops in prop::collection::vec(op(), 1..60)) {
            let start = Instant::now();
            let mut t = TimerSlots::new(capacity);
            let mut model = Model {
                capacity,
                start,
                now: start,
                timers: Vec::new(),
                tickets: Vec::new(),
                waiters: VecDeque::new(),
                counters: Vec::new(),
                expected_wakes: Vec::new(),
            };
            for op in ops {
                model.apply(&mut t, op)?;
                model.check(&mut t)?;
            }
        }
    }
}
