//! State shared across threads: one [`WorkerShared`] per worker and one [`RuntimeShared`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::backend::Backend;
use crate::executor::inbox::{Inbox, InboxMsg};
use crate::metrics::{AcceptorCounters, WorkerCounters, WorkerMetrics};

/// The part of a worker other threads may touch.
pub(crate) struct WorkerShared {
    pub(crate) worker: usize,
    pub(crate) backend: Backend,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) counters: WorkerCounters,
    pub(crate) alive: AtomicBool,
    pub(crate) notify_pending: AtomicBool,
    pub(crate) pending_accepts: AtomicUsize,
    pub(crate) accept_capacity: usize,
}

impl WorkerShared {
    pub(crate) fn metrics(&self) -> WorkerMetrics {
        self.counters.snapshot(self.worker, Some(self.backend), self.alive.load(Ordering::Acquire))
    }

    /// Hands an accepted stream to this worker; gives it back when the queue is full or the
    /// worker is gone.
    pub(crate) fn try_hand_off(&self, stream: std::net::TcpStream) -> Result<(), std::net::TcpStream> {
        self.try_hand_off_with(stream, None)
    }

    /// [`WorkerShared::try_hand_off`], with the stream layer the connection runs first, if any.
    pub(crate) fn try_hand_off_with(
        &self,
        stream: std::net::TcpStream,
        layer: Option<crate::conn::LayerFactory>,
    ) -> Result<(), std::net::TcpStream> {
        if !self.alive.load(Ordering::Acquire) {
            return Err(stream);
        }
        let before = self.pending_accepts.fetch_add(1, Ordering::AcqRel);
        if before >= self.accept_capacity {
            self.pending_accepts.fetch_sub(1, Ordering::AcqRel);
            return Err(stream);
        }
        self.inbox.push(match layer {
            None => InboxMsg::Accept(stream),
            Some(f) => InboxMsg::AcceptLayered(stream, f),
        });
        Ok(())
    }
}

/// Runtime-wide state: the shutdown request and what every thread needs to find the others.
pub struct RuntimeShared {
    shutdown: AtomicBool,
    deadline: Mutex<Option<Instant>>,
    pub(crate) workers: Mutex<Vec<Arc<WorkerShared>>>,
    on_shutdown: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    local_addrs: Mutex<Vec<SocketAddr>>,
    /// Counters of the acceptor threads.
    pub acceptor: AcceptorCounters,
    backend: Mutex<Option<Backend>>,
    blocking: std::sync::OnceLock<Arc<crate::blocking::BlockingPool>>,
    live_workers: AtomicUsize,
    /// The per-connection event log of tests (feature `testing`).
    #[cfg(feature = "testing")]
    pub(crate) events: crate::event_log::EventLog,
}

impl std::fmt::Debug for RuntimeShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeShared").field("shutdown", &self.is_shutting_down()).finish_non_exhaustive()
    }
}

impl RuntimeShared {
    /// A runtime with no workers yet.
    pub fn new() -> Arc<RuntimeShared> {
        Arc::new(RuntimeShared {
            shutdown: AtomicBool::new(false),
            deadline: Mutex::new(None),
            workers: Mutex::new(Vec::new()),
            on_shutdown: Mutex::new(Vec::new()),
            local_addrs: Mutex::new(Vec::new()),
            acceptor: AcceptorCounters::default(),
            backend: Mutex::new(None),
            blocking: std::sync::OnceLock::new(),
            live_workers: AtomicUsize::new(0),
            #[cfg(feature = "testing")]
            events: Default::default(),
        })
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// The shutdown deadline, once shutdown began.
    pub fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Begins (or tightens) shutdown: an earlier deadline wins. Idempotent, never blocks.
    pub fn begin_shutdown(&self, deadline: Instant) {
        {
            let mut d = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
            *d = Some(d.map_or(deadline, |old| old.min(deadline)));
        }
        let first = !self.shutdown.swap(true, Ordering::AcqRel);
        if first {
            tracing::info!("ringline shutdown requested");
            let hooks = std::mem::take(&mut *self.on_shutdown.lock().unwrap_or_else(|e| e.into_inner()));
            for hook in hooks {
                hook();
            }
        }
        for w in self.workers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            w.inbox.unpark();
        }
    }

    /// Registers something to run once when shutdown begins (e.g. waking acceptors); runs it at
    /// once if shutdown already began.
    pub fn on_shutdown(&self, hook: Box<dyn FnOnce() + Send>) {
        if self.is_shutting_down() {
            hook();
            return;
        }
        self.on_shutdown.lock().unwrap_or_else(|e| e.into_inner()).push(hook);
    }

    /// Records the bound addresses (for `local_addrs()`).
    pub fn set_local_addrs(&self, addrs: Vec<SocketAddr>) {
        *self.local_addrs.lock().unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records which backend the workers run.
    pub fn set_backend(&self, b: Backend) {
        *self.backend.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
    }

    /// The backend the workers run.
    pub fn backend(&self) -> Option<Backend> {
        *self.backend.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared blocking pool, created on first use with `threads` threads at most.
    pub(crate) fn blocking_pool(&self, threads: usize) -> &Arc<crate::blocking::BlockingPool> {
        self.blocking.get_or_init(|| crate::blocking::BlockingPool::new(threads))
    }

    /// A worker starts.
    pub(crate) fn worker_started(&self) {
        self.live_workers.fetch_add(1, Ordering::AcqRel);
    }

    /// A worker exits; the last one stops the blocking pool (dropping queued jobs, waiting for
    /// running ones) so no thread outlives the workers.
    pub(crate) fn worker_exited(&self) {
        if self.live_workers.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(pool) = self.blocking.get()
        {
            pool.shutdown();
        }
    }

    pub(crate) fn worker(&self, i: usize) -> Option<Arc<WorkerShared>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).get(i).cloned()
    }

    pub(crate) fn worker_list(&self) -> Vec<Arc<WorkerShared>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl RuntimeShared {
    /// Records the workers (in index order) once they are ready, and wakes them if shutdown
    /// already began.
    pub fn register_workers(&self, workers: &[super::handle::WorkerHandle]) {
        *self.workers.lock().unwrap_or_else(|e| e.into_inner()) =
            workers.iter().map(|w| w.shared.clone()).collect();
        if self.is_shutting_down() {
            for w in workers {
                w.shared.inbox.unpark();
            }
        }
    }
}
