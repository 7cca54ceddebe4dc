//! The blocking pool behind [`spawn_blocking`]: `blocking_threads` threads shared by every worker
//! of a runtime, started on demand, named `ringline-blocking-{n}`.
//!
//! A finished job stores its result and wakes the awaiting task through its ordinary `Waker`,
//! which reaches the worker through its inbox and unparker (never found by a poll timeout). At
//! shutdown, queued jobs are dropped unstarted (their handles resolve `Err(ShuttingDown)`) and
//! running jobs are waited for before the last worker exits.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use crate::error::Error;
use crate::runtime::context::with_core;

type Job = Box<dyn FnOnce() + Send>;

struct PoolState {
    jobs: VecDeque<Job>,
    threads: Vec<JoinHandle<()>>,
    idle: usize,
    shutdown: bool,
}

/// A pool of threads for blocking work.
pub(crate) struct BlockingPool {
    state: Mutex<PoolState>,
    work: Condvar,
    max_threads: usize,
}

impl BlockingPool {
    pub(crate) fn new(max_threads: usize) -> Arc<BlockingPool> {
        Arc::new(BlockingPool {
            state: Mutex::new(PoolState {
                jobs: VecDeque::new(),
                threads: Vec::new(),
                idle: 0,
                shutdown: false,
            }),
            work: Condvar::new(),
            max_threads: max_threads.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job, starting a thread when none is idle and the limit allows; gives the job
    /// back once the pool shut down.
    fn submit(self: &Arc<Self>, job: Job) -> Result<(), Job> {
        let mut st = self.lock();
        if st.shutdown {
            return Err(job);
        }
        st.jobs.push_back(job);
        if st.idle == 0 && st.threads.len() < self.max_threads {
            let pool = self.clone();
            let name = format!("ringline-blocking-{}", st.threads.len());
            match std::thread::Builder::new().name(name).spawn(move || pool.run()) {
                Ok(t) => st.threads.push(t),
                Err(e) => tracing::warn!("blocking pool: cannot start a thread ({e}); queued jobs wait"),
            }
        }
        drop(st);
        self.work.notify_one();
        Ok(())
    }

    fn run(&self) {
        loop {
            let job = {
                let mut st = self.lock();
                loop {
                    if st.shutdown {
                        return;
                    }
                    if let Some(job) = st.jobs.pop_front() {
                        break job;
                    }
                    st.idle += 1;
                    st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
                    st.idle -= 1;
                }
            };
            job();
        }
    }

    /// Drops queued jobs unstarted, waits for running ones, joins every thread. Idempotent.
    pub(crate) fn shutdown(&self) {
        let (queued, threads) = {
            let mut st = self.lock();
            st.shutdown = true;
            (std::mem::take(&mut st.jobs), std::mem::take(&mut st.threads))
        };
        self.work.notify_all();
        drop(queued);
        for t in threads {
            let _ = t.join();
        }
    }
}

struct Slot<T> {
    result: Option<Result<T, Error>>,
    waker: Option<Waker>,
}

/// Resolves the handle with `ShuttingDown` if the job is dropped without running.
struct Completion<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Completion<T> {
    fn finish(&self, r: Result<T, Error>) {
        let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if s.result.is_none() {
            s.result = Some(r);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        self.finish(Err(Error::ShuttingDown));
    }
}

/// Runs `f` on the runtime's blocking pool; the handle resolves with its result.
///
/// Dropping the handle does not stop `f`. The handle resolves `Err(TaskPanicked)` if `f`
/// panicked, `Err(ShuttingDown)` if the runtime shut down before `f` started, and
/// `Err(NotInRuntime)` off a worker.
pub fn spawn_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> BlockingHandle<T> {
    let slot = Arc::new(Mutex::new(Slot { result: None, waker: None }));
    let done = Completion { slot: slot.clone() };
    let job: Job = Box::new(move || {
        let r = catch_unwind(AssertUnwindSafe(f)).map_err(|_| Error::TaskPanicked);
        done.finish(r);
    });
    match with_core(|core| core.runtime.blocking_pool(core.cfg.blocking_threads()).submit(job)) {
        None => slot.lock().unwrap_or_else(|e| e.into_inner()).result = Some(Err(Error::NotInRuntime)),
        Some(Err(job)) => drop(job), // the Completion inside resolves ShuttingDown
        Some(Ok(())) => {}
    }
    BlockingHandle { slot }
}

/// Runs `job` on the runtime's blocking pool with no handle: for backends (the mio backend's
/// file I/O), which report the result themselves and wake their worker through its unparker.
///
/// # Errors
/// The job back, unstarted, when called off a worker thread or after the pool shut down.
pub fn execute(job: Box<dyn FnOnce() + Send>) -> Result<(), Box<dyn FnOnce() + Send>> {
    match with_core(|core| core.runtime.blocking_pool(core.cfg.blocking_threads()).clone()) {
        Some(pool) => pool.submit(job),
        None => Err(job),
    }
}

/// Handle of a [`spawn_blocking`] job; a future of `Result<T, Error>`.
pub struct BlockingHandle<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Future for BlockingHandle<T> {
    type Output = Result<T, Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = s.result.take() {
            return Poll::Ready(r);
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}
