//! The per-worker disk-operation table: (slot, generation) keys, FIFO admission under
//! `disk_ops_in_flight`, and what `Completion::File` / `Completion::Nvme` do to it.
//!
//! A slot lives from admission until its result is taken by the future, or, when the future was
//! dropped (`abandoned`), until its terminal completion arrives: the buffer and descriptor that
//! come back with it are dropped only then (API R7). `in_flight` counts admitted operations
//! without their completion; it bounds admission and keeps the worker from exiting early.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::task::Waker;

use super::aligned::AlignedBuf;
use super::contract::{DiskKey, FileBuf, NvmeError};

/// Largest number of slots (keys pack the index in 24 bits).
const MAX_SLOTS: usize = 1 << 24;

/// Which kind of operation a slot holds; a completion of the other kind is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    File,
    Nvme,
}

/// A finished operation's result and what came back with it.
#[derive(Debug)]
pub(crate) enum Done {
    File { result: io::Result<usize>, buf: Option<FileBuf>, fd: Option<OwnedFd> },
    Nvme { result: Result<(), NvmeError>, buf: Option<AlignedBuf> },
}

impl Done {
    fn class(&self) -> Class {
        match self {
            Done::File { .. } => Class::File,
            Done::Nvme { .. } => Class::Nvme,
        }
    }
}

struct Entry {
    class: Class,
    waker: Option<Waker>,
    done: Option<Done>,
    abandoned: bool,
}

struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// The disk operations of one worker.
pub(crate) struct DiskTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    limit: usize,
    in_flight: usize,
    /// Futures waiting for admission, FIFO: (ticket, waker).
    waiting: VecDeque<(u64, Waker)>,
    next_ticket: u64,
    /// Completions for keys no longer known.
    pub(crate) stale: u64,
    /// Completions delivered (the `disk_ops` counter).
    pub(crate) completed: u64,
}

impl DiskTable {
    pub(crate) fn new(limit: usize) -> DiskTable {
        DiskTable {
            slots: Vec::new(),
            free: Vec::new(),
            limit: limit.max(1),
            in_flight: 0,
            waiting: VecDeque::new(),
            next_ticket: 0,
            stale: 0,
            completed: 0,
        }
    }

    /// Operations handed to the backend without their completion yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Futures waiting for admission.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Admits the caller holding `ticket` (`None`: not queued yet) if there is room and nobody
    /// is ahead; otherwise queues it (or refreshes its waker) and returns `Err(ticket)`.
    pub(crate) fn admit(&mut self, ticket: Option<u64>, class: Class, waker: &Waker) -> Result<DiskKey, u64> {
        let first = match (ticket, self.waiting.front()) {
            (_, None) => true,
            (Some(t), Some((front, _))) => t == *front,
            (None, Some(_)) => false,
        };
        if first && self.in_flight < self.limit {
            if let Some(key) = self.alloc(class, waker.clone()) {
                if ticket.is_some() {
                    self.waiting.pop_front();
                }
                self.in_flight += 1;
                self.wake_first_if_room();
                return Ok(key);
            }
        }
        Err(self.enqueue(ticket, waker))
    }

    fn enqueue(&mut self, ticket: Option<u64>, waker: &Waker) -> u64 {
        if let Some(t) = ticket
            && let Some(entry) = self.waiting.iter_mut().find(|(x, _)| *x == t)
        {
            if !entry.1.will_wake(waker) {
                entry.1 = waker.clone();
            }
            return t;
        }
        let t = self.next_ticket;
        self.next_ticket += 1;
        self.waiting.push_back((t, waker.clone()));
        t
    }

    /// A waiting future went away: forget its ticket, let the next one try.
    pub(crate) fn leave(&mut self, ticket: u64) {
        let was_first = self.waiting.front().is_some_and(|(t, _)| *t == ticket);
        self.waiting.retain(|(t, _)| *t != ticket);
        if was_first {
            self.wake_first_if_room();
        }
    }

    fn wake_first_if_room(&self) {
        if self.in_flight < self.limit
            && let Some((_, w)) = self.waiting.front()
        {
            w.wake_by_ref();
        }
    }

    fn alloc(&mut self, class: Class, waker: Waker) -> Option<DiskKey> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < MAX_SLOTS => {
                self.slots.push(Slot { generation: 0, entry: None });
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        let slot = &mut self.slots[index as usize];
        slot.entry = Some(Entry { class, waker: Some(waker), done: None, abandoned: false });
        Some(DiskKey { index, generation: slot.generation })
    }

    fn entry(&mut self, key: DiskKey) -> Option<&mut Entry> {
        match self.slots.get_mut(key.index as usize) {
            Some(Slot { generation, entry: Some(e) }) if *generation == key.generation => Some(e),
            _ => None,
        }
    }

    fn release(&mut self, key: DiskKey) {
        if let Some(slot) = self.slots.get_mut(key.index as usize)
            && slot.generation == key.generation
            && slot.entry.take().is_some()
        {
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(key.index);
        }
    }

    /// The result of `key` if it came, releasing the slot; else records `waker`.
    pub(crate) fn take(&mut self, key: DiskKey, waker: &Waker) -> Option<Done> {
        let e = self.entry(key)?;
        if let Some(done) = e.done.take() {
            self.release(key);
            return Some(done);
        }
        if !e.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            e.waker = Some(waker.clone());
        }
        None
    }

    /// The future of `key` was dropped: a finished result is dropped now, else when it comes.
    pub(crate) fn abandon(&mut self, key: DiskKey) -> Option<Done> {
        let e = self.entry(key)?;
        if e.done.is_some() {
            let done = e.done.take();
            self.release(key);
            return done;
        }
        e.abandoned = true;
        e.waker = None;
        None
    }

    /// A completion for `key`. Returns what the caller must drop outside the table borrow (an
    /// abandoned operation's buffer and descriptor, or a stale completion's).
    pub(crate) fn complete(&mut self, key: DiskKey, done: Done) -> Option<Done> {
        let class = done.class();
        let Some(e) = self.entry(key).filter(|e| e.class == class && e.done.is_none()) else {
            self.stale += 1;
            return Some(done);
        };
        let leftover = if e.abandoned {
            self.release(key);
            Some(done)
        } else {
            e.done = Some(done);
            if let Some(w) = e.waker.take() {
                w.wake();
            }
            None
        };
        self.completed += 1;
        self.in_flight -= 1;
        self.wake_first_if_room();
        leftover
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn ok(n: usize) -> Done {
        Done::File { result: Ok(n), buf: None, fd: None }
    }

    #[test]
    fn admission_is_fifo_under_the_limit() {
        let mut t = DiskTable::new(1);
        let (_, w) = waker();
        let k1 = t.admit(None, Class::File, &w).unwrap();
        let (c2, w2) = waker();
        let t2 = t.admit(None, Class::File, &w2).unwrap_err();
        let (_, w3) = waker();
        let t3 = t.admit(None, Class::File, &w3).unwrap_err();
        // The third cannot jump the queue even when room appears.
        assert!(t.complete(k1, ok(1)).is_none());
        assert_eq!(c2.0.load(Ordering::SeqCst), 1, "the first waiter is woken");
        assert!(t.admit(Some(t3), Class::File, &w3).is_err());
        let k2 = t.admit(Some(t2), Class::File, &w2).unwrap();
        assert_ne!(k1, k2);
        assert_eq!((t.in_flight(), t.waiting()), (1, 1));
    }

    #[test]
    fn keys_are_generation_checked_and_classes_do_not_mix() {
        let mut t = DiskTable::new(4);
        let (_, w) = waker();
        let k = t.admit(None, Class::Nvme, &w).unwrap();
        assert!(t.complete(k, ok(0)).is_some(), "a file completion for an NVMe slot is stale");
        assert_eq!(t.stale, 1);
        let done = Done::Nvme { result: Ok(()), buf: None };
        assert!(t.complete(k, done).is_none());
        assert!(matches!(t.take(k, &w), Some(Done::Nvme { .. })));
        let k2 = t.admit(None, Class::File, &w).unwrap();
        assert_eq!(k2.index, k.index);
        assert_ne!(k2.generation, k.generation);
        assert!(t.complete(k, ok(0)).is_some(), "the old generation is stale");
        assert_eq!(t.stale, 2);
    }

    #[test]
    fn an_abandoned_operation_keeps_its_slot_until_its_completion() {
        let mut t = DiskTable::new(1);
        let (_, w) = waker();
        let k = t.admit(None, Class::File, &w).unwrap();
        assert!(t.abandon(k).is_none());
        assert_eq!(t.in_flight(), 1, "still counted until the completion");
        let buf = Some(FileBuf::Vec(vec![1, 2, 3]));
        let back = t.complete(k, Done::File { result: Ok(3), buf, fd: None });
        assert!(matches!(back, Some(Done::File { buf: Some(_), .. })), "the buffer is handed back to drop");
        assert_eq!((t.in_flight(), t.stale), (0, 0));
    }
}
