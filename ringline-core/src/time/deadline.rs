//! `Deadline` and the two small error types of the time API.

use std::time::{Duration, Instant};

/// A point on the monotonic clock.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    /// Now.
    pub fn now() -> Deadline {
        Deadline(Instant::now())
    }
    /// `d` from now.
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }
    /// From an `Instant`.
    pub fn from_instant(i: Instant) -> Deadline {
        Deadline(i)
    }
    /// The `Instant`.
    pub fn instant(self) -> Instant {
        self.0
    }
    /// Time left (zero once passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
    /// True once passed.
    pub fn is_elapsed(self) -> bool {
        Instant::now() >= self.0
    }
}

/// A `timeout` expired before its future finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}
impl std::error::Error for Elapsed {}

/// Every timer slot (`timer_slots`) is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerExhausted;

impl std::fmt::Display for TimerExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timer slots exhausted (raise `timer_slots`)")
    }
}
impl std::error::Error for TimerExhausted {}

impl From<TimerExhausted> for crate::error::Error {
    fn from(_: TimerExhausted) -> Self {
        crate::error::Error::TimerExhausted
    }
}
