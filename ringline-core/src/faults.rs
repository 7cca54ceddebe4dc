//! Fault injection for tests (feature `testing`, never for production): [`FaultPlan`].
//!
//! A plan is handed to the runtime with `ConfigBuilder::faults` and stays live: clones share
//! their state, so a test may keep one and arm more faults while the runtime serves. Faults are
//! injected where the core meets the backend, so the core's own recovery paths run exactly as
//! they would after a real refusal:
//! - `fail_submits(worker, n)`: the next `n` submissions on `worker` are treated as the backend
//!   answering `Full` (the operation is kept and offered again after the next park);
//! - `fail_worker_setup(worker)`: that worker's setup fails before its backend is built, every
//!   time, so launch rolls back;
//! - `fixed_file_limit(n)`: caps the io_uring fixed-file table at `n` slots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Faults to inject into a runtime under test; see the module docs.
#[derive(Clone, Default)]
pub struct FaultPlan {
    state: Arc<FaultState>,
}

#[derive(Default)]
struct FaultState {
    /// Cheap check for the hot path: any submit failures armed at all.
    submits_armed: AtomicBool,
    /// Remaining injected submit failures, by worker index.
    submits: Mutex<Vec<u64>>,
    /// Workers whose setup must fail.
    setup: Mutex<Vec<usize>>,
    fixed_file_limit: Mutex<Option<usize>>,
}

impl std::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultPlan")
            .field("submits", &*lock(&self.state.submits))
            .field("setup", &*lock(&self.state.setup))
            .field("fixed_file_limit", &*lock(&self.state.fixed_file_limit))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultPlan {
    /// A plan with no faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `n` submissions of `worker` report "full", so the core retries them.
    pub fn fail_submits(&self, worker: usize, n: u64) -> &Self {
        let mut submits = lock(&self.state.submits);
        if submits.len() <= worker {
            submits.resize(worker + 1, 0);
        }
        submits[worker] += n;
        self.state.submits_armed.store(true, Ordering::Release);
        self
    }

    /// Makes every setup of `worker` under this plan fail, as a backend that cannot start would
    /// (also the retry an `Auto` launch makes on mio).
    pub fn fail_worker_setup(&self, worker: usize) -> &Self {
        lock(&self.state.setup).push(worker);
        self
    }

    /// Caps the usable io_uring fixed-file table at `n` slots.
    pub fn fixed_file_limit(&self, n: usize) -> &Self {
        *lock(&self.state.fixed_file_limit) = Some(n);
        self
    }

    /// Injected submit failures not yet consumed on `worker`.
    pub fn pending_submit_failures(&self, worker: usize) -> u64 {
        lock(&self.state.submits).get(worker).copied().unwrap_or(0)
    }

    /// Consumes one injected submit failure of `worker`, if any is armed.
    pub(crate) fn take_submit_failure(&self, worker: usize) -> bool {
        if !self.state.submits_armed.load(Ordering::Acquire) {
            return false;
        }
        let mut submits = lock(&self.state.submits);
        let Some(left) = submits.get_mut(worker).filter(|n| **n > 0) else { return false };
        *left -= 1;
        if submits.iter().all(|n| *n == 0) {
            self.state.submits_armed.store(false, Ordering::Release);
        }
        true
    }

    /// True when the setup of `worker` must fail.
    pub(crate) fn take_setup_failure(&self, worker: usize) -> bool {
        lock(&self.state.setup).contains(&worker)
    }

    /// The fixed-file cap, if set.
    pub(crate) fn fixed_file_cap(&self) -> Option<usize> {
        *lock(&self.state.fixed_file_limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_failures_are_counted_per_worker_and_shared_by_clones() {
        let plan = FaultPlan::new();
        let clone = plan.clone();
        assert!(!plan.take_submit_failure(0));
        clone.fail_submits(1, 2);
        assert!(!plan.take_submit_failure(0));
        assert!(plan.take_submit_failure(1));
        assert!(plan.take_submit_failure(1));
        assert!(!plan.take_submit_failure(1));
        assert_eq!(clone.pending_submit_failures(1), 0);
    }

    #[test]
    fn a_setup_failure_names_its_worker_and_persists() {
        let plan = FaultPlan::new();
        plan.fail_worker_setup(1);
        assert!(!plan.take_setup_failure(0));
        assert!(plan.take_setup_failure(1));
        assert!(plan.take_setup_failure(1), "a retried launch must fail again");
    }
}
