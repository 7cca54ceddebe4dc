//! Time: [`sleep`], [`timeout`], [`interval`] and their `try_*` forms, on the worker's timer slots.
//!
//! A timer never fires early (monotonic clock). When every slot is taken, `sleep`, `timeout` and
//! `Interval::tick` wait in FIFO order for one, then arm with their original deadline; `try_*`
//! forms return [`TimerExhausted`] at once instead.

mod deadline;
pub(crate) mod slots;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use deadline::{Deadline, Elapsed, TimerExhausted};
use slots::TimerKey;

use crate::runtime::context::with_core;

enum SleepState {
    Unarmed,
    Waiting(u64),
    Armed(TimerKey),
    Done,
}

/// Resolves at its deadline; created by [`sleep`] and [`sleep_until`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    state: SleepState,
}

/// Waits until `d` has elapsed.
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(Deadline::after(d))
}

/// Waits until `deadline`.
pub fn sleep_until(deadline: Deadline) -> Sleep {
    Sleep { deadline: deadline.instant(), state: SleepState::Unarmed }
}

/// Like [`sleep`], but takes a timer slot now and fails when none is free.
///
/// # Errors
/// [`TimerExhausted`] when every timer slot is in use, or off a worker.
pub fn try_sleep(d: Duration) -> Result<Sleep, TimerExhausted> {
    try_sleep_until(Deadline::after(d))
}

/// Like [`sleep_until`], but takes a timer slot now and fails when none is free.
///
/// # Errors
/// [`TimerExhausted`] when every timer slot is in use, or off a worker.
pub fn try_sleep_until(deadline: Deadline) -> Result<Sleep, TimerExhausted> {
    let at = deadline.instant();
    let key = with_core(|c| c.timers.borrow_mut().try_arm(at, std::task::Waker::noop())).flatten();
    match key {
        Some(k) => Ok(Sleep { deadline: at, state: SleepState::Armed(k) }),
        None => {
            with_core(|c| c.count_timer_exhausted());
            Err(TimerExhausted)
        }
    }
}

impl Sleep {
    /// The instant this sleep resolves at.
    pub fn deadline(&self) -> Deadline {
        Deadline::from_instant(self.deadline)
    }

    fn release(&mut self) {
        match std::mem::replace(&mut self.state, SleepState::Done) {
            SleepState::Armed(k) => {
                with_core(|c| c.timers.borrow_mut().release(k));
            }
            SleepState::Waiting(t) => {
                with_core(|c| c.timers.borrow_mut().cancel_waiter(t));
            }
            _ => {}
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if matches!(self.state, SleepState::Done) {
            return Poll::Ready(());
        }
        if Instant::now() >= self.deadline {
            self.release();
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let next = with_core(|c| {
            let mut timers = c.timers.borrow_mut();
            match self.state {
                SleepState::Unarmed => match timers.try_arm(deadline, cx.waker()) {
                    Some(k) => SleepState::Armed(k),
                    None => {
                        drop(timers);
                        c.count_timer_exhausted();
                        SleepState::Waiting(c.timers.borrow_mut().enqueue_waiter(cx.waker()))
                    }
                },
                SleepState::Waiting(t) => match timers.poll_waiter(t, deadline, cx.waker()) {
                    Some(k) => SleepState::Armed(k),
                    None => SleepState::Waiting(t),
                },
                SleepState::Armed(k) => {
                    timers.poll_fired(k, cx.waker());
                    SleepState::Armed(k)
                }
                SleepState::Done => SleepState::Done,
            }
        });
        match next {
            Some(s) => self.state = s,
            None => panic!("ringline::sleep polled outside a ringline worker"),
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.release();
    }
}

/// Runs a future with a deadline; created by [`timeout`] and [`timeout_at`].
#[must_use = "futures do nothing unless awaited"]
pub struct Timeout<F> {
    future: Pin<Box<F>>,
    sleep: Sleep,
}

/// Runs `f`, giving up with [`Elapsed`] after `d`. `f` is polled first, so it wins a tie.
pub fn timeout<F: Future>(d: Duration, f: F) -> Timeout<F> {
    timeout_at(Deadline::after(d), f)
}

/// Runs `f`, giving up with [`Elapsed`] at `deadline`.
pub fn timeout_at<F: Future>(deadline: Deadline, f: F) -> Timeout<F> {
    Timeout { future: Box::pin(f), sleep: sleep_until(deadline) }
}

/// Like [`timeout`], but takes a timer slot now.
///
/// # Errors
/// [`TimerExhausted`] when every timer slot is in use.
pub fn try_timeout<F: Future>(d: Duration, f: F) -> Result<Timeout<F>, TimerExhausted> {
    try_timeout_at(Deadline::after(d), f)
}

/// Like [`timeout_at`], but takes a timer slot now.
///
/// # Errors
/// [`TimerExhausted`] when every timer slot is in use.
pub fn try_timeout_at<F: Future>(deadline: Deadline, f: F) -> Result<Timeout<F>, TimerExhausted> {
    Ok(Timeout { future: Box::pin(f), sleep: try_sleep_until(deadline)? })
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.future.as_mut().poll(cx) {
            self.sleep.release();
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut self.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Ticks at `start + k·period`, skipping missed ticks after a stall; made by [`interval`].
pub struct Interval {
    next: Instant,
    period: Duration,
}

/// A ticker whose first tick is one `period` from now.
///
/// # Panics
/// If `period` is zero.
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "interval period must be non-zero");
    Interval { next: Instant::now() + period, period }
}

impl Interval {
    /// Waits for the next tick and returns its scheduled time.
    pub async fn tick(&mut self) -> Deadline {
        let at = self.next;
        sleep_until(Deadline::from_instant(at)).await;
        let now = Instant::now();
        self.next = at + self.period;
        if self.next <= now {
            // Skip every missed tick: the next one is the first `at + k·period` after now.
            let missed = (now - at).as_nanos() / self.period.as_nanos() + 1;
            let skip = self.period.as_nanos().saturating_mul(missed);
            self.next = at + Duration::from_nanos(u64::try_from(skip).unwrap_or(u64::MAX));
        }
        Deadline::from_instant(at)
    }
}
