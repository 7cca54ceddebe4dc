//! Free functions usable from any task or callback of a worker.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use super::context::with_core;
use super::handle::WorkerHandle;
use crate::backend::Backend;
use crate::error::Error;
use crate::executor::{TaskHandle, TaskId};
use crate::metrics::WorkerMetrics;

/// Spawns a standalone task on the current worker.
///
/// # Errors
/// `TaskSlotsExhausted` when `standalone_task_capacity` tasks are live; `NotInRuntime` off a
/// worker.
pub fn spawn<F: Future + 'static>(f: F) -> Result<TaskHandle<F::Output>, Error> {
    with_core(|core| core.spawn(f)).unwrap_or_else(|| Err(Error::NotInRuntime))
}

/// The task being polled, if any.
pub fn current_task() -> Option<TaskId> {
    with_core(|core| core.current_task.get()).flatten()
}

/// The current worker's index.
pub fn worker_id() -> Option<usize> {
    with_core(|core| core.worker)
}

/// The current worker's metrics.
pub fn metrics() -> Option<WorkerMetrics> {
    with_core(|core| core.shared.metrics())
}

/// The backend the current worker runs; `None` off a worker.
pub fn backend() -> Option<Backend> {
    with_core(|core| core.shared.backend)
}

/// A handle to the current worker.
pub fn current_worker() -> Option<WorkerHandle> {
    with_core(|core| WorkerHandle { shared: core.shared.clone() })
}

/// Begins a graceful shutdown of the whole runtime (deadline: `shutdown_timeout`).
///
/// # Errors
/// `NotInRuntime` off a worker.
pub fn request_shutdown() -> Result<(), Error> {
    with_core(|core| core.runtime.begin_shutdown(Instant::now() + core.cfg.shutdown_timeout()))
        .ok_or(Error::NotInRuntime)
}

/// True once shutdown began (false off a worker).
pub fn shutdown_requested() -> bool {
    with_core(|core| core.shutting_down.get() || core.runtime.is_shutting_down()).unwrap_or(false)
}

/// Resolves when shutdown begins.
pub fn shutdown_signal() -> ShutdownSignal {
    ShutdownSignal(())
}

/// Future of [`shutdown_signal`].
#[must_use = "futures do nothing unless awaited"]
pub struct ShutdownSignal(());

impl Future for ShutdownSignal {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let done = with_core(|core| {
            if core.shutting_down.get() {
                return true;
            }
            core.shutdown_waiters.borrow_mut().push(cx.waker().clone());
            false
        });
        match done {
            Some(true) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }
}

/// Yields once to the other ready tasks.
pub fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// Future of [`yield_now`].
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
