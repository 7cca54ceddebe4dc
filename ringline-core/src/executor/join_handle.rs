//! `TaskHandle`: awaiting a spawned task's output, with panics and aborts reported as errors.

use std::cell::RefCell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::task::TaskId;
use crate::error::Error;

struct JoinState<T> {
    result: Option<Result<T, Error>>,
    waker: Option<Waker>,
    taken: bool,
}

impl<T> JoinState<T> {
    fn finish(&mut self, r: Result<T, Error>) {
        if self.result.is_none() && !self.taken {
            self.result = Some(r);
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }
}

/// A handle to a spawned task; awaiting it yields the task's output.
///
/// Resolves `Err(TaskPanicked)` if the task panicked and `Err(TaskAborted)` if it was aborted.
/// Dropping the handle detaches the task.
pub struct TaskHandle<T> {
    id: TaskId,
    state: Rc<RefCell<JoinState<T>>>,
}

impl<T> TaskHandle<T> {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }
    /// Aborts the task (see [`TaskId::abort`]).
    pub fn abort(&self) {
        self.id.abort();
    }
    /// True once the task ended (returned, panicked or was aborted).
    pub fn is_finished(&self) -> bool {
        let s = self.state.borrow();
        s.result.is_some() || s.taken
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.state.borrow_mut();
        if let Some(r) = s.result.take() {
            s.taken = true;
            return Poll::Ready(r);
        }
        if s.taken {
            return Poll::Ready(Err(Error::TaskAborted));
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The future stored in the slab for a spawned task: runs `F`, records its outcome.
pub(crate) struct Joined<F: Future> {
    future: Pin<Box<F>>,
    state: Rc<RefCell<JoinState<F::Output>>>,
}

/// Wraps `future` so its output reaches a [`TaskHandle`].
pub(crate) fn joined<F: Future + 'static>(future: F, id: TaskId) -> (Joined<F>, TaskHandle<F::Output>) {
    let state = Rc::new(RefCell::new(JoinState { result: None, waker: None, taken: false }));
    (Joined { future: Box::pin(future), state: state.clone() }, TaskHandle { id, state })
}

impl<F: Future> Future for Joined<F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match catch_unwind(AssertUnwindSafe(|| this.future.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => {
                this.state.borrow_mut().finish(Ok(v));
                Poll::Ready(())
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                this.state.borrow_mut().finish(Err(Error::TaskPanicked));
                resume_unwind(payload)
            }
        }
    }
}

impl<F: Future> Drop for Joined<F> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.try_borrow_mut() {
            s.finish(Err(Error::TaskAborted));
        }
    }
}
