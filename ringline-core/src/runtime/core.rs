//! `Core`: the non-generic state of one worker, reached by public handles through the context.
//!
//! Every field is behind its own `RefCell`, and no borrow is held while user code runs (task
//! polls, parse closures, handler callbacks), so handles may be used re-entrantly.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::shared::{RuntimeShared, WorkerShared};
use crate::config::Config;
use crate::conn::pool::SendPool;
use crate::conn::table::ConnTable;
use crate::driver::{ConnKey, Op};
use crate::error::Error;
use crate::executor::task::{BoxFuture, TaskKind, TaskSlab};
use crate::executor::waker::{TaskWaker, push_local_ready, take_local_ready};
use crate::executor::{TaskHandle, TaskId, join_handle};
use crate::metrics::WorkerCounters;

/// The state of one worker.
pub(crate) struct Core {
    pub(crate) uid: u64,
    pub(crate) worker: usize,
    pub(crate) cfg: Config,
    pub(crate) shared: Arc<WorkerShared>,
    pub(crate) runtime: Arc<RuntimeShared>,
    pub(crate) tasks: RefCell<TaskSlab>,
    pub(crate) conns: RefCell<ConnTable>,
    pub(crate) timers: RefCell<crate::time::slots::TimerSlots>,
    pub(crate) pool: RefCell<SendPool>,
    /// Operations decided outside the flush (adopt, connect), submitted by the loop.
    pub(crate) outbox: RefCell<Vec<Op>>,
    pub(crate) shutting_down: Cell<bool>,
    pub(crate) shutdown_waiters: RefCell<Vec<Waker>>,
    pub(crate) current_task: Cell<Option<TaskId>>,
    /// When each kind of exhaustion was last logged.
    pub(crate) warnings: super::exhaustion::ExhaustionWarnings,
    /// `set_nodelay` requests, applied by the loop (it owns the driver).
    pub(crate) nodelay: RefCell<Vec<(ConnKey, bool)>>,
    /// UDP sockets.
    pub(crate) udp: RefCell<crate::udp::table::UdpTable>,
    /// File and disk operations.
    pub(crate) disk: RefCell<crate::disk::table::DiskTable>,
    /// What the backend can do (read by `NvmeDevice::open`).
    pub(crate) caps: Cell<crate::driver::Capabilities>,
}

impl Core {
    pub(crate) fn counters(&self) -> &WorkerCounters {
        &self.shared.counters
    }

    pub(crate) fn count_timer_exhausted(&self) {
        WorkerCounters::add(&self.counters().timer_exhausted, 1);
        self.exhausted(super::exhaustion::Exhaustion::Timers);
    }

    /// Logs (rate-limited) that a pool or queue ran out.
    pub(crate) fn exhausted(&self, kind: super::exhaustion::Exhaustion) {
        self.warnings.note(self.worker, kind);
    }

    /// Queues a `TCP_NODELAY` change for the loop to apply.
    pub(crate) fn set_nodelay(&self, key: ConnKey, on: bool) -> Result<(), Error> {
        self.nodelay.borrow_mut().push((key, on));
        Ok(())
    }

    /// Spawns a standalone task.
    pub(crate) fn spawn<F: Future + 'static>(&self, f: F) -> Result<TaskHandle<F::Output>, Error> {
        let id = {
            let mut tasks = self.tasks.borrow_mut();
            if tasks.standalone_full() {
                return Err(Error::TaskSlotsExhausted);
            }
            tasks.insert(TaskKind::Standalone)
        };
        let (fut, handle) = join_handle::joined(f, id);
        self.install(id, Box::pin(fut));
        Ok(handle)
    }

    /// Spawns a handler entry-point task (`on_start`, `on_udp_bind`), which does not count
    /// against `standalone_task_capacity`.
    pub(crate) fn spawn_entry<F: Future<Output = ()> + 'static>(&self, f: F) -> TaskId {
        let id = self.tasks.borrow_mut().insert(TaskKind::Entry);
        self.install(id, Box::pin(f));
        id
    }

    /// Spawns the task of connection `conn`.
    pub(crate) fn spawn_conn_task(&self, conn: ConnKey, fut: BoxFuture) -> TaskId {
        let id = self.tasks.borrow_mut().insert(TaskKind::Conn(conn));
        self.install(id, fut);
        id
    }

    fn install(&self, id: TaskId, fut: BoxFuture) {
        let waker = TaskWaker::new(id, self.uid, self.shared_inbox());
        waker.mark_scheduled();
        self.tasks.borrow_mut().fill(id, fut, waker);
        push_local_ready(id);
    }

    fn shared_inbox(&self) -> Arc<crate::executor::inbox::Inbox> {
        self.shared.inbox.clone()
    }

    /// Aborts a task: drops its future now, or after its current poll.
    pub(crate) fn abort_task(&self, id: TaskId) -> bool {
        let removed = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(id) else { return false };
            if slot.polling {
                slot.abort_requested = true;
                return true;
            }
            tasks.remove(id)
        };
        if let Some((kind, fut)) = removed {
            drop_guarded(fut);
            self.task_ended(kind);
        }
        true
    }

    /// A task ended (returned, panicked or aborted): let its connection go.
    fn task_ended(&self, kind: TaskKind) {
        if let TaskKind::Conn(key) = kind {
            let mut conns = self.conns.borrow_mut();
            if let Some(c) = conns.get(key) {
                c.held = false;
                c.close.get_or_insert(crate::conn::state::CloseMode::Graceful);
                c.read_end.get_or_insert(crate::conn::state::ReadEnd::Local);
                crate::conn::arm_linger(self, &mut conns, key, true);
                conns.mark_dirty(key);
            }
        }
    }

    /// Polls every task that was ready when the pass began, each once.
    pub(crate) fn run_ready(&self, queue: &mut VecDeque<TaskId>) -> usize {
        take_local_ready(queue);
        let n = queue.len();
        for _ in 0..n {
            let Some(id) = queue.pop_front() else { break };
            self.poll_task(id);
        }
        n
    }

    fn poll_task(&self, id: TaskId) {
        let (mut fut, waker) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(id) else { return };
            let Some(fut) = slot.future.take() else { return };
            let Some(w) = slot.waker.clone() else { return };
            slot.polling = true;
            (fut, w)
        };
        waker.clear_scheduled();
        let std_waker = Waker::from(waker);
        let mut cx = Context::from_waker(&std_waker);
        self.current_task.set(Some(id));
        let outcome = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
        self.current_task.set(None);
        let finished = match outcome {
            Ok(Poll::Pending) => false,
            Ok(Poll::Ready(())) => true,
            Err(payload) => {
                self.on_task_panic(id, &payload);
                true
            }
        };
        let mut tasks = self.tasks.borrow_mut();
        let Some(slot) = tasks.get_mut(id) else { return };
        slot.polling = false;
        if finished || slot.abort_requested {
            let kind = tasks.remove(id).map(|(k, _)| k);
            drop(tasks);
            drop_guarded(Some(fut));
            if let Some(kind) = kind {
                self.task_ended(kind);
            }
        } else {
            slot.future = Some(fut);
        }
    }

    fn on_task_panic(&self, id: TaskId, payload: &Box<dyn std::any::Any + Send>) {
        WorkerCounters::add(&self.counters().task_panics, 1);
        let msg = panic_message(payload);
        tracing::error!(worker = self.worker, task = ?id, "task panicked: {msg}");
        let kind = self.tasks.borrow_mut().get_mut(id).map(|s| s.kind);
        if let Some(TaskKind::Conn(key)) = kind {
            crate::conn::abort_key(self, key, crate::conn::CloseReason::Panicked);
        }
    }
}

/// Drops a task future, containing a panic from its destructor.
pub(crate) fn drop_guarded(fut: Option<BoxFuture>) {
    if let Some(f) = fut
        && catch_unwind(AssertUnwindSafe(move || drop(f))).is_err()
    {
        tracing::error!("a task future panicked while being dropped");
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
