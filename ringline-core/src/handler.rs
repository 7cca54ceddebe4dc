//! The handler a user writes: [`AsyncEventHandler`], and the [`WorkerCtx`] its callbacks get.

use std::future::Future;
use std::time::Instant;

use crate::conn::{CloseReason, ConnCtx, ConnToken};
use crate::error::Error;
use crate::executor::TaskHandle;
use crate::metrics::WorkerMetrics;
use crate::runtime::core::Core;
use crate::udp::UdpCtx;

/// One handler value per worker, built on that worker's thread (it may hold `Rc`/`RefCell`).
///
/// `on_accept` returns the connection's task: when it returns, the connection closes after its
/// queued bytes are written. Callback panics are caught; the worker keeps serving.
pub trait AsyncEventHandler: Sized + 'static {
    /// Builds the handler of worker `worker`, on that worker's thread.
    fn create_for_worker(worker: usize) -> Self;

    /// The task of a new inbound connection.
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static;

    /// A task spawned once when the worker starts.
    fn on_start(&self) -> impl Future<Output = ()> + 'static {
        std::future::ready(())
    }

    /// A task spawned once per `bind_udp` socket of this worker, right after `on_start`; the
    /// socket is closed at shutdown.
    fn on_udp_bind(&self, udp: UdpCtx) -> impl Future<Output = ()> + 'static {
        let _ = udp;
        std::future::ready(())
    }

    /// Runs once per loop iteration after ready tasks were polled, and at least every
    /// `tick_interval`. Keep it short.
    fn on_tick(&mut self, ctx: &mut WorkerCtx<'_>) {
        let _ = ctx;
    }

    /// Runs after `WorkerHandle::notify()`; notifications coalesce.
    fn on_notify(&mut self, ctx: &mut WorkerCtx<'_>) {
        let _ = ctx;
    }

    /// Runs when a connection's slot is released.
    fn on_close(&mut self, conn: ConnToken, reason: CloseReason) {
        let _ = (conn, reason);
    }
}

/// What a parse closure did with the bytes it was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseResult {
    /// Drop this many bytes from the front and resolve with the count (0 means `NeedMore`).
    Consumed(usize),
    /// Call again when more bytes arrived.
    NeedMore,
    /// Do not call again before this many bytes are buffered.
    NeedAtLeast(usize),
}

/// The worker as seen from a synchronous callback; a borrow that cannot be stored.
pub struct WorkerCtx<'a> {
    pub(crate) core: &'a Core,
}

impl WorkerCtx<'_> {
    /// Index of this worker.
    pub fn worker_id(&self) -> usize {
        self.core.worker
    }

    /// Spawns a standalone task on this worker.
    ///
    /// # Errors
    /// `TaskSlotsExhausted` when `standalone_task_capacity` tasks are live.
    pub fn spawn<F: Future + 'static>(&mut self, f: F) -> Result<TaskHandle<F::Output>, Error> {
        self.core.spawn(f)
    }

    /// Begins a graceful shutdown of the whole runtime.
    pub fn request_shutdown(&mut self) {
        let deadline = Instant::now() + self.core.cfg.shutdown_timeout();
        self.core.runtime.begin_shutdown(deadline);
    }

    /// This worker's metrics.
    pub fn metrics(&self) -> WorkerMetrics {
        self.core.shared.metrics()
    }

    /// The loop's notion of now.
    pub fn now(&self) -> Instant {
        Instant::now()
    }
}
