//! The cross-thread inbox of a worker: wakes, accepted connections, remote spawns, notifies.
//!
//! Producers push under a short mutex and unpark the worker only when the inbox goes from empty
//! to non-empty (an atomic flag), so a burst of wakes costs one unpark. The worker clears the flag
//! before taking the messages, so a message pushed after the take always unparks again.

use std::future::Future;
use std::net::TcpStream;
use std::pin::Pin;

use super::task::TaskId;
use crate::driver::Unpark;
use crate::sync::{AtomicBool, Mutex, Ordering};

/// A closure run on the worker that returns the future to spawn there.
pub type RemoteSpawn = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A message for a worker from another thread.
pub(crate) enum InboxMsg {
    /// A task was woken from another thread.
    Wake(TaskId),
    /// The acceptor hands over a connection.
    Accept(TcpStream),
    /// The acceptor hands over a connection that runs a stream layer (TLS) first.
    AcceptLayered(TcpStream, crate::conn::LayerFactory),
    /// Spawn a task built by the closure.
    Spawn(RemoteSpawn),
}

/// Object-safe form of [`Unpark`].
pub(crate) trait DynUnpark: Send + Sync {
    fn unpark_dyn(&self);
}

impl<U: Unpark> DynUnpark for U {
    fn unpark_dyn(&self) {
        self.unpark();
    }
}

/// One worker's inbox.
pub(crate) struct Inbox {
    messages: Mutex<Vec<InboxMsg>>,
    has_messages: AtomicBool,
    unparker: Box<dyn DynUnpark>,
}

impl Inbox {
    pub(crate) fn new(unparker: Box<dyn DynUnpark>) -> Self {
        Inbox { messages: Mutex::new(Vec::new()), has_messages: AtomicBool::new(false), unparker }
    }

    /// Posts a message and unparks the worker if the inbox was empty.
    pub(crate) fn push(&self, msg: InboxMsg) {
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
        if !self.has_messages.swap(true, Ordering::AcqRel) {
            self.unparker.unpark_dyn();
        }
    }

    /// Wakes the worker without a message (notify, shutdown).
    pub(crate) fn unpark(&self) {
        self.unparker.unpark_dyn();
    }

    /// Takes every queued message, in order.
    pub(crate) fn drain(&self, into: &mut Vec<InboxMsg>) {
        // A plain load first: the common empty case costs no locked instruction.
        if !self.has_messages.load(Ordering::Acquire) || !self.has_messages.swap(false, Ordering::AcqRel) {
            return;
        }
        into.append(&mut self.messages.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[derive(Clone)]
    struct CountingUnpark(Arc<AtomicUsize>);

    impl Unpark for CountingUnpark {
        fn unpark(&self) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    #[test]
    fn burst_of_pushes_unparks_once_per_empty_to_non_empty_transition() {
        let unparks = Arc::new(AtomicUsize::new(0));
        let inbox = Inbox::new(Box::new(CountingUnpark(unparks.clone())));
        for index in 0..3 {
            inbox.push(InboxMsg::Wake(TaskId { index, generation: 0 }));
        }
        assert_eq!(unparks.load(Ordering::Acquire), 1);
        let mut batch = Vec::new();
        inbox.drain(&mut batch);
        let order: Vec<u32> = batch
            .iter()
            .map(|m| match m {
                InboxMsg::Wake(id) => id.index,
                _ => unreachable!("only wakes were pushed"),
            })
            .collect();
        assert_eq!(order, [0, 1, 2], "drain keeps push order");
        inbox.push(InboxMsg::Wake(TaskId { index: 9, generation: 0 }));
        assert_eq!(unparks.load(Ordering::Acquire), 2, "the first push after a drain unparks again");
    }
}

/// loom models of the cross-thread paths (`cargo xtask loom`): the inbox's unpark protocol and the
/// task wakers' `scheduled` flag. Models post `InboxMsg::Wake` only, and the unparker is a counter
/// standing in for the backend's eventfd, pipe or mio waker.
#[cfg(all(test, loom))]
mod loom_models {
    use std::task::Waker;

    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;
    use loom::thread;

    use super::*;
    use crate::executor::waker::TaskWaker;
    use crate::sync::{AtomicBool, Mutex};

    /// Counts unparks. A park returns once the count exceeds what earlier parks returned for,
    /// the way an eventfd read returns once a write landed after the previous read.
    #[derive(Clone)]
    struct CountingUnpark(Arc<AtomicUsize>);

    impl Unpark for CountingUnpark {
        fn unpark(&self) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn wake(index: u32) -> InboxMsg {
        InboxMsg::Wake(TaskId { index, generation: 0 })
    }

    /// Moves the task indices of drained messages into `seen`.
    fn take_ids(batch: &mut Vec<InboxMsg>, seen: &mut Vec<u32>) {
        for msg in batch.drain(..) {
            match msg {
                InboxMsg::Wake(id) => seen.push(id.index),
                _ => unreachable!("the models post wakes only"),
            }
        }
    }

    /// 1. Two producers each push one wake, then count themselves done.
    /// 2. The worker loops: drain; stop once both were seen; else park until an unpark arrives
    ///    that no earlier park returned for.
    /// 3. A park that finds both producers done and no such unpark would sleep forever with a
    ///    message stranded in the inbox: the lost wake-up the empty→non-empty protocol must rule out.
    #[test]
    fn loom_inbox_push_racing_drain_never_strands_a_message() {
        loom::model(|| {
            let unparks = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(AtomicUsize::new(0));
            let inbox = Arc::new(Inbox::new(Box::new(CountingUnpark(unparks.clone()))));
            let producers: Vec<_> = (1..=2)
                .map(|index| {
                    let (inbox, done) = (inbox.clone(), done.clone());
                    thread::spawn(move || {
                        inbox.push(wake(index));
                        done.fetch_add(1, Ordering::Release);
                    })
                })
                .collect();

            let mut seen = Vec::new();
            let mut batch = Vec::new();
            let mut consumed = 0;
            loop {
                inbox.drain(&mut batch);
                take_ids(&mut batch, &mut seen);
                if seen.len() == 2 {
                    break;
                }
                loop {
                    // `done` first: once it reads 2, every push and its unpark happened before.
                    let finished = done.load(Ordering::Acquire) == 2;
                    let now = unparks.load(Ordering::Acquire);
                    if now > consumed {
                        consumed = now;
                        break;
                    }
                    assert!(!finished, "lost wake-up: pushes done, worker parks having seen {seen:?}");
                    thread::yield_now();
                }
            }
            for producer in producers {
                producer.join().unwrap();
            }
            seen.sort_unstable();
            assert_eq!(seen, [1, 2], "each message is delivered exactly once");
        });
    }

    /// The worker uid of the models' task. No model thread is marked as a worker, so every wake
    /// is cross-thread and goes through the inbox.
    const WORKER_UID: u64 = 7;

    /// A task that is queued (scheduled) is taken by the executor, which clears the flag and polls.
    /// Meanwhile another thread makes it ready and wakes it. The outcome must be: the poll saw the
    /// readiness, or the wake queued the task (once) after the clear. Returns nothing; asserts.
    fn wake_racing_poll(make_ready: impl Fn() + Send + 'static, is_ready: impl Fn() -> bool) {
        let unparks = Arc::new(AtomicUsize::new(0));
        let inbox = std::sync::Arc::new(Inbox::new(Box::new(CountingUnpark(unparks))));
        let task = TaskId { index: 3, generation: 0 };
        let waker = TaskWaker::new(task, WORKER_UID, inbox.clone());
        assert!(waker.mark_scheduled(), "the spawned task is queued once");

        // The future registered this waker with its event source on an earlier poll.
        let registered = Waker::from(waker.clone());
        let producer = thread::spawn(move || {
            make_ready();
            registered.wake();
        });

        // Executor: the task leaves the ready queue, then `poll_task` clears and polls.
        waker.clear_scheduled();
        let saw_ready = is_ready();

        producer.join().unwrap();
        let mut batch = Vec::new();
        inbox.drain(&mut batch);
        let mut queued = Vec::new();
        take_ids(&mut batch, &mut queued);
        assert!(queued.len() <= 1, "a task is queued at most once per poll: {queued:?}");
        assert!(
            saw_ready || queued == [task.index],
            "lost wake-up: poll saw no readiness and the wake queued nothing"
        );
    }

    /// Readiness behind a lock, as a channel or a `Mutex<Option<Waker>>` registration keeps it.
    #[test]
    fn loom_wake_racing_clear_scheduled_with_locked_readiness_requeues_task() {
        loom::model(|| {
            let ready = Arc::new(Mutex::new(false));
            let writer = ready.clone();
            wake_racing_poll(move || *writer.lock().unwrap() = true, move || *ready.lock().unwrap());
        });
    }

    /// Readiness in a bare atomic flag (release store, acquire load), the waker kept from an
    /// earlier poll: the poll does no read-modify-write that could order it after the wake, so
    /// only the `scheduled` flag itself can.
    #[test]
    fn loom_wake_racing_clear_scheduled_with_atomic_readiness_requeues_task() {
        loom::model(|| {
            let ready = Arc::new(AtomicBool::new(false));
            let writer = ready.clone();
            wake_racing_poll(
                move || writer.store(true, Ordering::Release),
                move || ready.load(Ordering::Acquire),
            );
        });
    }
}
