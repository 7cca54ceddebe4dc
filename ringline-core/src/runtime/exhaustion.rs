//! Rate-limited warnings for exhausted pools and queues: at most one per second per worker and
//! kind, so a flood of refusals is visible in the logs without a log line per refusal. Every
//! refusal is also counted in the worker's metrics (API R12).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// What ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exhaustion {
    /// `send_pool` slots, for a non-waiting send.
    SendPool,
    /// `send_queue_limit` on a connection.
    SendQueue,
    /// `timer_slots`.
    Timers,
    /// `max_connections`, for an inbound connection.
    Connections,
    /// The backend's receive buffers.
    RecvBuffers,
}

impl Exhaustion {
    const ALL: usize = 5;

    fn setting(self) -> &'static str {
        match self {
            Exhaustion::SendPool => "send_pool",
            Exhaustion::SendQueue => "send_queue_limit",
            Exhaustion::Timers => "timer_slots",
            Exhaustion::Connections => "max_connections",
            Exhaustion::RecvBuffers => "recv_buffers",
        }
    }
}

/// Minimum time between two warnings of one kind on one worker.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// The last warning time of each kind, for one worker.
#[derive(Default)]
pub(crate) struct ExhaustionWarnings {
    last: [Cell<Option<Instant>>; Exhaustion::ALL],
}

impl ExhaustionWarnings {
    /// Logs one `warn` for `kind` unless one was logged in the last second.
    pub(crate) fn note(&self, worker: usize, kind: Exhaustion) {
        let slot = &self.last[kind as usize];
        let now = Instant::now();
        if slot.get().is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            return;
        }
        slot.set(Some(now));
        tracing::warn!(
            worker,
            setting = kind.setting(),
            "{kind:?} exhausted (at most one warning per second)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_warning_within_a_second_is_suppressed() {
        let w = ExhaustionWarnings::default();
        w.note(0, Exhaustion::Timers);
        let first = w.last[Exhaustion::Timers as usize].get();
        w.note(0, Exhaustion::Timers);
        assert_eq!(w.last[Exhaustion::Timers as usize].get(), first, "suppressed within the second");
        assert!(w.last[Exhaustion::SendPool as usize].get().is_none(), "kinds are independent");
    }
}
