//! The harness shared by the benchmarks: one `MockDriver` worker on its own thread that runs
//! timed jobs for criterion's `iter_custom`.
#![allow(dead_code)] // each benchmark file uses part of it

use std::future::Future;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringline_core::testing::MockDriver;
use ringline_core::{
    AsyncEventHandler, Config, ConnCtx, Error, RuntimeShared, ShutdownHandle, WorkerHandle, WorkerParams,
    run_worker,
};

/// The longest a timed job may take.
const JOB_LIMIT: Duration = Duration::from_secs(120);

/// A handler with no connections: the worker only runs the jobs it is sent.
struct Idle;

impl AsyncEventHandler for Idle {
    fn create_for_worker(_worker: usize) -> Self {
        Idle
    }

    fn on_accept(&self, _conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async {}
    }
}

/// One worker, `run_worker::<MockDriver, _>`, with no tick, on a thread of its own.
pub(crate) struct BenchWorker {
    shutdown: ShutdownHandle,
    worker: WorkerHandle,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl BenchWorker {
    /// Starts the worker and waits until it runs.
    pub(crate) fn start() -> BenchWorker {
        let cfg = Config::builder().workers(1).tick_interval(None).build().expect("valid config");
        let runtime = RuntimeShared::new();
        let (ready, reported) = mpsc::channel();
        let params = WorkerParams {
            cfg: cfg.clone(),
            worker: 0,
            runtime: runtime.clone(),
            ready,
            udp_sockets: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("bench-w0".into())
            .spawn(move || run_worker::<MockDriver, Idle>(params))
            .expect("spawn the worker thread");
        let (_, handle) = reported.recv_timeout(JOB_LIMIT).expect("the worker reported");
        let worker = handle.expect("the worker started");
        runtime.register_workers(std::slice::from_ref(&worker));
        let shutdown = ShutdownHandle::new(runtime, Duration::from_secs(1));
        BenchWorker { shutdown, worker, thread: Some(thread) }
    }

    /// Runs `job` as a task on the worker and returns the duration it measured.
    pub(crate) fn time<F, Fut>(&self, job: F) -> Duration
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Duration> + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.worker
            .spawn(move || async move {
                let _ = tx.send(job().await);
            })
            .expect("the worker takes the job");
        rx.recv_timeout(JOB_LIMIT).expect("the job finished in time")
    }
}

impl Drop for BenchWorker {
    fn drop(&mut self) {
        self.shutdown.shutdown_with_deadline(Duration::ZERO);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
