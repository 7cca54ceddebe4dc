//! Task wakers: real `std::task::Waker`s that work from any thread.
//!
//! A waker woken on its own worker pushes the task id onto the thread-local ready queue; from any
//! other thread it posts the id to the worker's [`Inbox`](super::inbox::Inbox) and unparks the
//! worker. A `scheduled` flag makes a task queued at most once until it is polled again; the
//! executor clears it just before polling, so a wake during the task's own poll queues it for the
//! next pass (no lost wake-ups).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Wake;

use super::inbox::{Inbox, InboxMsg};
use super::task::TaskId;
use crate::sync::{AtomicBool, Ordering};

thread_local! {
    /// Identity of the worker running on this thread (0 = none).
    static CURRENT_WORKER_UID: Cell<u64> = const { Cell::new(0) };
    /// Tasks woken on this thread, polled by the next executor pass.
    static LOCAL_READY: RefCell<VecDeque<TaskId>> = const { RefCell::new(VecDeque::new()) };
}

/// Marks this thread as running the worker `uid` (0 clears it).
pub(crate) fn set_current_worker(uid: u64) {
    CURRENT_WORKER_UID.with(|c| c.set(uid));
}

/// Takes every task woken on this thread since the last call.
pub(crate) fn take_local_ready(into: &mut VecDeque<TaskId>) {
    LOCAL_READY.with(|q| into.append(&mut q.borrow_mut()));
}

/// Queues `id` on this thread's ready queue.
pub(crate) fn push_local_ready(id: TaskId) {
    LOCAL_READY.with(|q| q.borrow_mut().push_back(id));
}

/// True when some task was woken on this thread and awaits its poll.
pub(crate) fn local_ready_pending() -> bool {
    LOCAL_READY.with(|q| !q.borrow().is_empty())
}

/// Wake state of one task; one allocation per spawned task.
pub(crate) struct TaskWaker {
    id: TaskId,
    worker_uid: u64,
    scheduled: AtomicBool,
    inbox: Arc<Inbox>,
}

impl TaskWaker {
    pub(crate) fn new(id: TaskId, worker_uid: u64, inbox: Arc<Inbox>) -> Arc<Self> {
        Arc::new(TaskWaker { id, worker_uid, scheduled: AtomicBool::new(false), inbox })
    }

    /// Called by the executor right before polling the task.
    ///
    /// A read-modify-write, not a store: the poll's reads of readiness must not move before the
    /// clear (a store may wait in the store buffer while they run), or a wake racing the poll can
    /// see the flag still set, queue nothing, and be lost. Checked by the loom model
    /// `loom_wake_racing_clear_scheduled_with_atomic_readiness_requeues_task` in `inbox.rs`.
    pub(crate) fn clear_scheduled(&self) {
        self.scheduled.swap(false, Ordering::AcqRel);
    }

    /// Marks the task scheduled; true when it was not already.
    pub(crate) fn mark_scheduled(&self) -> bool {
        !self.scheduled.swap(true, Ordering::AcqRel)
    }
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.mark_scheduled() {
            return;
        }
        if CURRENT_WORKER_UID.with(Cell::get) == self.worker_uid {
            push_local_ready(self.id);
        } else {
            self.inbox.push(InboxMsg::Wake(self.id));
        }
    }
}
