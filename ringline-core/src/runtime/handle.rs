//! Cross-thread handles: [`WorkerHandle`] (notify, remote spawn) and [`ShutdownHandle`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::shared::{RuntimeShared, WorkerShared};
use crate::backend::Backend;
use crate::error::Error;
use crate::executor::inbox::InboxMsg;
use crate::metrics::RuntimeMetrics;

/// Reaches one worker from any thread. `Send + Sync + Clone`.
#[derive(Clone)]
pub struct WorkerHandle {
    pub(crate) shared: Arc<WorkerShared>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle").field("worker", &self.shared.worker).finish()
    }
}

impl WorkerHandle {
    /// Index of the worker.
    pub fn worker_id(&self) -> usize {
        self.shared.worker
    }

    /// Makes the worker call `on_notify` soon; notifications coalesce. Never blocks.
    ///
    /// # Errors
    /// `ShuttingDown` once the worker exited.
    pub fn notify(&self) -> Result<(), Error> {
        if !self.shared.alive.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        if !self.shared.notify_pending.swap(true, Ordering::AcqRel) {
            self.shared.inbox.unpark();
        }
        Ok(())
    }

    /// Runs `f` on the worker and spawns the future it returns there.
    ///
    /// # Errors
    /// `ShuttingDown` once the worker exited. If the task slab is full when the closure arrives,
    /// it is dropped and counted in `remote_spawn_dropped`.
    pub fn spawn<F, Fut>(&self, f: F) -> Result<(), Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        if !self.shared.alive.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        self.shared.inbox.push(InboxMsg::Spawn(Box::new(move || Box::pin(f()))));
        Ok(())
    }

    /// Hands an accepted stream to the worker (used by acceptors). Gives the stream back when
    /// the worker's `accept_queue` is full or the worker is gone.
    ///
    /// # Errors
    /// The stream, unchanged.
    pub fn hand_off(&self, stream: std::net::TcpStream) -> Result<(), std::net::TcpStream> {
        self.shared.try_hand_off(stream)
    }

    /// Like [`WorkerHandle::hand_off`], for a connection that runs a stream layer (TLS) first:
    /// the worker builds the layer with `layer` and calls `on_accept` after its handshake.
    ///
    /// # Errors
    /// The stream, unchanged.
    pub fn hand_off_layered(
        &self,
        stream: std::net::TcpStream,
        layer: crate::conn::LayerFactory,
    ) -> Result<(), std::net::TcpStream> {
        self.shared.try_hand_off_with(stream, Some(layer))
    }

    /// True while the worker's loop runs.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }
}

struct ShutdownInner {
    runtime: Arc<RuntimeShared>,
    timeout: Duration,
}

impl Drop for ShutdownInner {
    fn drop(&mut self) {
        self.runtime.begin_shutdown(Instant::now() + self.timeout);
    }
}

/// Stops the runtime from any thread. Dropping the last clone starts a graceful shutdown.
#[derive(Clone)]
pub struct ShutdownHandle {
    inner: Arc<ShutdownInner>,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle").field("shutting_down", &self.is_shutting_down()).finish()
    }
}

impl ShutdownHandle {
    /// A handle for `runtime`; `timeout` is the deadline `shutdown()` uses.
    pub fn new(runtime: Arc<RuntimeShared>, timeout: Duration) -> Self {
        ShutdownHandle { inner: Arc::new(ShutdownInner { runtime, timeout }) }
    }

    /// Graceful shutdown with the configured `shutdown_timeout`. Non-blocking, idempotent.
    pub fn shutdown(&self) {
        self.shutdown_with_deadline(self.inner.timeout);
    }

    /// Graceful shutdown that aborts what remains after `d` (`ZERO` aborts everything now).
    pub fn shutdown_with_deadline(&self, d: Duration) {
        self.inner.runtime.begin_shutdown(Instant::now() + d);
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.runtime.is_shutting_down()
    }

    /// The bound TCP (then UDP) addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.runtime.local_addrs()
    }

    /// A handle to worker `i`.
    pub fn worker(&self, i: usize) -> Option<WorkerHandle> {
        self.inner.runtime.worker(i).map(|shared| WorkerHandle { shared })
    }

    /// Number of workers.
    pub fn worker_count(&self) -> usize {
        self.inner.runtime.worker_list().len()
    }

    /// The backend the workers run.
    pub fn backend(&self) -> Option<Backend> {
        self.inner.runtime.backend()
    }

    /// Metrics of every worker and the acceptors.
    pub fn metrics(&self) -> RuntimeMetrics {
        let workers = self.inner.runtime.worker_list().iter().map(|w| w.metrics()).collect();
        RuntimeMetrics { workers, acceptor: self.inner.runtime.acceptor.snapshot() }
    }

    /// Starts recording the per-connection event log (feature `testing`, tests only).
    #[cfg(feature = "testing")]
    pub fn enable_event_log(&self) {
        self.inner.runtime.events.enable();
    }

    /// The events recorded for `conn` so far, in order (feature `testing`, tests only).
    #[cfg(feature = "testing")]
    pub fn event_log(&self, conn: crate::conn::ConnToken) -> Vec<crate::event_log::Event> {
        self.inner.runtime.events.get(conn)
    }
}
