//! The thread-local worker context that public handles reach the worker's state through.
//!
//! It is installed by an RAII guard for the whole life of the worker loop and removed when the
//! guard drops, during unwinding too, so no handle can reach a worker that is gone.

use std::cell::RefCell;
use std::rc::Rc;

use super::core::Core;
use crate::executor::waker::set_current_worker;

thread_local! {
    static CORE: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
}

/// Runs `f` with the current worker's state; `None` off a worker.
pub(crate) fn with_core<R>(f: impl FnOnce(&Core) -> R) -> Option<R> {
    CORE.with(|c| c.borrow().as_ref().map(|core| f(core)))
}

/// Installs a worker's state on this thread until dropped.
pub(crate) struct ContextGuard(());

impl ContextGuard {
    pub(crate) fn enter(core: Rc<Core>) -> ContextGuard {
        set_current_worker(core.uid);
        CORE.with(|c| *c.borrow_mut() = Some(core));
        ContextGuard(())
    }
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        set_current_worker(0);
        let old = CORE.with(|c| c.borrow_mut().take());
        drop(old);
    }
}
