//! Combinators: [`select`], [`select3`], [`join`], [`join3`], [`join_all`]. Plain futures that work
//! on any executor; a losing ringline future is always safe to drop.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

/// The output of [`select`]: which future finished first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Either<L, R> {
    /// The first future won.
    Left(L),
    /// The second future won.
    Right(R),
}

impl<T> Either<T, T> {
    /// The value, whichever side it came from.
    pub fn into_inner(self) -> T {
        match self {
            Either::Left(v) | Either::Right(v) => v,
        }
    }
}

/// The output of [`select3`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Either3<A, B, C> {
    /// The first future won.
    First(A),
    /// The second future won.
    Second(B),
    /// The third future won.
    Third(C),
}

pin_project! {
    /// Future of [`select`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct Select<A, B> { #[pin] a: A, #[pin] b: B }
}

/// Polls `a` then `b` (biased); resolves with the first output and drops the other future.
pub fn select<A: Future, B: Future>(a: A, b: B) -> Select<A, B> {
    Select { a, b }
}

impl<A: Future, B: Future> Future for Select<A, B> {
    type Output = Either<A::Output, B::Output>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.a.poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        this.b.poll(cx).map(Either::Right)
    }
}

pin_project! {
    /// Future of [`select3`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct Select3<A, B, C> { #[pin] a: A, #[pin] b: B, #[pin] c: C }
}

/// Three-way [`select`], biased in argument order.
pub fn select3<A: Future, B: Future, C: Future>(a: A, b: B, c: C) -> Select3<A, B, C> {
    Select3 { a, b, c }
}

impl<A: Future, B: Future, C: Future> Future for Select3<A, B, C> {
    type Output = Either3<A::Output, B::Output, C::Output>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.a.poll(cx) {
            return Poll::Ready(Either3::First(v));
        }
        if let Poll::Ready(v) = this.b.poll(cx) {
            return Poll::Ready(Either3::Second(v));
        }
        this.c.poll(cx).map(Either3::Third)
    }
}

pin_project! {
    /// A future and, once it finished, its output.
    struct MaybeDone<F: Future> { #[pin] future: Option<F>, output: Option<F::Output> }
}

impl<F: Future> MaybeDone<F> {
    fn new(f: F) -> Self {
        MaybeDone { future: Some(f), output: None }
    }
    /// Polls if unfinished; true once the output is stored.
    fn poll_done(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        let mut this = self.project();
        if let Some(f) = this.future.as_mut().as_pin_mut() {
            match f.poll(cx) {
                Poll::Ready(v) => {
                    *this.output = Some(v);
                    this.future.set(None);
                }
                Poll::Pending => return false,
            }
        }
        true
    }
    fn take(self: Pin<&mut Self>) -> F::Output {
        self.project().output.take().expect("join output taken twice")
    }
}

pin_project! {
    /// Future of [`join`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct Join<A: Future, B: Future> { #[pin] a: MaybeDone<A>, #[pin] b: MaybeDone<B> }
}

/// Runs both futures to completion; polls every unfinished one on each wake-up.
pub fn join<A: Future, B: Future>(a: A, b: B) -> Join<A, B> {
    Join { a: MaybeDone::new(a), b: MaybeDone::new(b) }
}

impl<A: Future, B: Future> Future for Join<A, B> {
    type Output = (A::Output, B::Output);
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let a = this.a.as_mut().poll_done(cx);
        let b = this.b.as_mut().poll_done(cx);
        if a && b { Poll::Ready((this.a.take(), this.b.take())) } else { Poll::Pending }
    }
}

pin_project! {
    /// Future of [`join3`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct Join3<A: Future, B: Future, C: Future> {
        #[pin] a: MaybeDone<A>, #[pin] b: MaybeDone<B>, #[pin] c: MaybeDone<C>
    }
}

/// Three-way [`join`].
pub fn join3<A: Future, B: Future, C: Future>(a: A, b: B, c: C) -> Join3<A, B, C> {
    Join3 { a: MaybeDone::new(a), b: MaybeDone::new(b), c: MaybeDone::new(c) }
}

impl<A: Future, B: Future, C: Future> Future for Join3<A, B, C> {
    type Output = (A::Output, B::Output, C::Output);
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let a = this.a.as_mut().poll_done(cx);
        let b = this.b.as_mut().poll_done(cx);
        let c = this.c.as_mut().poll_done(cx);
        if a && b && c { Poll::Ready((this.a.take(), this.b.take(), this.c.take())) } else { Poll::Pending }
    }
}

/// Future of [`join_all`].
#[must_use = "futures do nothing unless awaited"]
pub struct JoinAll<F: Future> {
    futures: Vec<Option<Pin<Box<F>>>>,
    outputs: Vec<Option<F::Output>>,
}

/// Runs every future to completion; outputs in input order.
pub fn join_all<I: IntoIterator<Item: Future>>(i: I) -> JoinAll<I::Item> {
    let futures: Vec<_> = i.into_iter().map(|f| Some(Box::pin(f))).collect();
    let outputs = futures.iter().map(|_| None).collect();
    JoinAll { futures, outputs }
}

// The futures are boxed and the outputs are never pinned, so moving a `JoinAll` is fine.
impl<F: Future> Unpin for JoinAll<F> {}

impl<F: Future> Future for JoinAll<F> {
    type Output = Vec<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut done = true;
        for (slot, out) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => done = false,
                }
            }
        }
        if !done {
            return Poll::Pending;
        }
        Poll::Ready(this.outputs.iter_mut().map(|o| o.take().expect("output present")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{pending, ready};
    use std::task::Waker;

    fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
        let mut f = Box::pin(f);
        f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn select_is_biased_to_the_first_argument() {
        assert_eq!(poll_once(select(ready(1), ready(2))), Poll::Ready(Either::Left(1)));
        assert_eq!(poll_once(select(pending::<u8>(), ready(2))), Poll::Ready(Either::Right(2)));
        assert_eq!(
            poll_once(select3(pending::<u8>(), pending::<u8>(), ready(3))),
            Poll::Ready(Either3::Third(3))
        );
    }

    #[test]
    fn joins_wait_for_all_and_keep_order() {
        assert_eq!(poll_once(join(ready(1), ready("a"))), Poll::Ready((1, "a")));
        assert!(poll_once(join3(ready(1), pending::<u8>(), ready(3))).is_pending());
        assert_eq!(poll_once(join_all((0..4).map(ready))), Poll::Ready(vec![0, 1, 2, 3]));
    }
}
