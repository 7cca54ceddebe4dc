//! State shared across threads: one [`WorkerShared`] per worker and one [`RuntimeShared`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::backend::Backend;
use crate::executor::inbox::{Inbox, InboxMsg};
use crate::metrics::{AcceptorCounters, WorkerCounters, WorkerMetrics};
use crate::sync::{AtomicBool, AtomicUsize, Mutex, Ordering};

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
    /// A live worker's shared part, with an empty accept queue of `accept_capacity` streams.
    pub(crate) fn new(worker: usize, backend: Backend, inbox: Arc<Inbox>, accept_capacity: usize) -> Self {
        WorkerShared {
            worker,
            backend,
            inbox,
            counters: WorkerCounters::default(),
            alive: AtomicBool::new(true),
            notify_pending: AtomicBool::new(false),
            pending_accepts: AtomicUsize::new(0),
            accept_capacity,
        }
    }

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
        if !self.reserve_accept() {
            return Err(stream);
        }
        self.inbox.push(match layer {
            None => InboxMsg::Accept(stream),
            Some(f) => InboxMsg::AcceptLayered(stream, f),
        });
        Ok(())
    }
}

impl WorkerShared {
    /// Takes one place in the accept queue; false when `accept_capacity` streams are already
    /// handed over and not yet taken. A losing racer may briefly count itself before backing out,
    /// so a concurrent reservation can be refused spuriously, never admitted beyond capacity.
    pub(crate) fn reserve_accept(&self) -> bool {
        let before = self.pending_accepts.fetch_add(1, Ordering::AcqRel);
        if before >= self.accept_capacity {
            self.pending_accepts.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// The worker took one handed-over stream out of its inbox.
    pub(crate) fn accept_taken(&self) {
        self.pending_accepts.fetch_sub(1, Ordering::AcqRel);
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
    ///
    /// The flag is set while the hook list is locked, and [`RuntimeShared::on_shutdown`] reads
    /// it under the same lock, so a hook registered concurrently either lands in the list taken
    /// here or sees the flag and runs itself: it never falls between the two (the loom model
    /// `loom_hook_registered_during_shutdown_runs_exactly_once` checks this).
    pub fn begin_shutdown(&self, deadline: Instant) {
        {
            let mut d = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
            *d = Some(d.map_or(deadline, |old| old.min(deadline)));
        }
        let (first, hooks) = {
            let mut hooks = self.on_shutdown.lock().unwrap_or_else(|e| e.into_inner());
            let first = !self.shutdown.swap(true, Ordering::AcqRel);
            (first, if first { std::mem::take(&mut *hooks) } else { Vec::new() })
        };
        if first {
            tracing::info!("ringline shutdown requested");
        }
        for hook in hooks {
            hook();
        }
        for w in self.workers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            w.inbox.unpark();
        }
    }

    /// Registers something to run once when shutdown begins (e.g. waking acceptors); runs it at
    /// once (on this thread) if shutdown already began.
    pub fn on_shutdown(&self, hook: Box<dyn FnOnce() + Send>) {
        let mut hooks = self.on_shutdown.lock().unwrap_or_else(|e| e.into_inner());
        if self.shutdown.load(Ordering::Acquire) {
            drop(hooks);
            hook();
            return;
        }
        hooks.push(hook);
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

/// loom models (`cargo xtask loom`) of the shutdown flag with its hooks and of the acceptor
/// hand-off's admission count.
#[cfg(all(test, loom))]
mod loom_models {
    use loom::sync::Arc as LoomArc;
    use loom::thread;

    use super::*;
    use crate::driver::Unpark;

    /// An unparker that does nothing: these models check counts and hooks, not parking.
    #[derive(Clone)]
    struct NoUnpark;

    impl Unpark for NoUnpark {
        fn unpark(&self) {}
    }

    fn counting_hook(count: &LoomArc<AtomicUsize>) -> Box<dyn FnOnce() + Send> {
        let count = count.clone();
        Box::new(move || {
            count.fetch_add(1, Ordering::AcqRel);
        })
    }

    /// A hook registered while another thread begins shutdown runs exactly once: either
    /// `begin_shutdown` takes it from the list, or `on_shutdown` sees the flag and runs it.
    /// Before the flag moved under the hook lock, the registration could check the flag, lose
    /// the race, and push into a list nobody would take again: the acceptor's wake-up hook was
    /// lost and its thread stayed blocked in `accept`.
    #[test]
    fn loom_hook_registered_during_shutdown_runs_exactly_once() {
        loom::model(|| {
            let runtime = RuntimeShared::new();
            let ran = LoomArc::new(AtomicUsize::new(0));
            let registrar = {
                let (runtime, ran) = (runtime.clone(), ran.clone());
                thread::spawn(move || runtime.on_shutdown(counting_hook(&ran)))
            };
            runtime.begin_shutdown(Instant::now());
            registrar.join().unwrap();
            assert_eq!(ran.load(Ordering::Acquire), 1);
            assert!(runtime.is_shutting_down());
        });
    }

    /// Two threads requesting shutdown at once run each registered hook once, not twice.
    #[test]
    fn loom_concurrent_shutdown_requests_run_hooks_once() {
        loom::model(|| {
            let runtime = RuntimeShared::new();
            let ran = LoomArc::new(AtomicUsize::new(0));
            runtime.on_shutdown(counting_hook(&ran));
            let other = {
                let runtime = runtime.clone();
                thread::spawn(move || runtime.begin_shutdown(Instant::now()))
            };
            runtime.begin_shutdown(Instant::now());
            other.join().unwrap();
            assert_eq!(ran.load(Ordering::Acquire), 1);
        });
    }

    /// Two acceptor threads hand streams to a worker whose queue holds one while the worker
    /// takes them: never more than one handed-over stream is outstanding, and every stream is
    /// either taken by the worker or given back to its acceptor (none is stranded).
    #[test]
    fn loom_accept_hand_off_never_exceeds_capacity_or_strands_a_stream() {
        loom::model(|| {
            let inbox = std::sync::Arc::new(Inbox::new(Box::new(NoUnpark)));
            let worker = std::sync::Arc::new(WorkerShared::new(0, Backend::Mio, inbox, 1));
            let outstanding = LoomArc::new(AtomicUsize::new(0));
            let refused = LoomArc::new(AtomicUsize::new(0));
            let acceptors: Vec<_> = (0..2u32)
                .map(|index| {
                    let (worker, outstanding, refused) =
                        (worker.clone(), outstanding.clone(), refused.clone());
                    thread::spawn(move || {
                        if worker.reserve_accept() {
                            let held = outstanding.fetch_add(1, Ordering::AcqRel) + 1;
                            assert!(held <= 1, "{held} streams admitted to a queue of one");
                            // Stands in for InboxMsg::Accept(stream).
                            worker
                                .inbox
                                .push(InboxMsg::Wake(crate::executor::task::TaskId { index, generation: 0 }));
                        } else {
                            refused.fetch_add(1, Ordering::AcqRel);
                        }
                    })
                })
                .collect();
            let mut taken = 0;
            let mut take = |batch: &mut Vec<InboxMsg>| {
                worker.inbox.drain(batch);
                for _ in batch.drain(..) {
                    outstanding.fetch_sub(1, Ordering::AcqRel);
                    worker.accept_taken();
                    taken += 1;
                }
            };
            let mut batch = Vec::new();
            take(&mut batch);
            for a in acceptors {
                a.join().unwrap();
            }
            take(&mut batch);
            assert_eq!(
                taken + refused.load(Ordering::Acquire),
                2,
                "a stream was neither taken nor given back"
            );
            assert!(taken >= 1, "an empty queue refused the first stream");
            assert_eq!(worker.pending_accepts.load(Ordering::Acquire), 0);
        });
    }
}
