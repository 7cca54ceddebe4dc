//! Per-connection event log for tests (feature `testing`, never for production).
//!
//! After `ShutdownHandle::enable_event_log()`, each worker records, per connection and in order,
//! every operation it submits to the backend, every completion the backend delivers, the release
//! of each finished send buffer (its guards are dropped at that moment) and the release of the
//! slot. Tests read it with `ShutdownHandle::event_log(token)` to check orderings such as "a
//! guard is dropped only after its send's terminal completion" or "the slot is released last".

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::conn::ConnToken;
use crate::driver::{Completion, ConnKey, Op};

/// One recorded event of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An operation was handed to the backend (`"Send"`, `"Close"`, …).
    Submitted(&'static str),
    /// The backend delivered a completion (`"Sent"`, `"Recv"`, `"Closed"`, …) with its result.
    Completed {
        /// The completion's kind.
        kind: &'static str,
        /// `Ok(n)` (bytes, where the completion carries a count) or the error's kind.
        result: Result<usize, std::io::ErrorKind>,
    },
    /// A finished send buffer was released: its pool slots freed and `guards` guards dropped.
    BufferReleased {
        /// Bytes the buffer held.
        bytes: usize,
        /// Zero-copy guards dropped with it.
        guards: usize,
    },
    /// The connection's slot was released (after the backend's `Closed`).
    SlotReleased,
}

/// The log shared by a runtime's workers.
#[derive(Default)]
pub(crate) struct EventLog {
    enabled: AtomicBool,
    entries: Mutex<HashMap<ConnToken, Vec<Event>>>,
}

impl EventLog {
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Appends `event` to the log of `conn` on `worker`, when logging is on.
    pub(crate) fn record(&self, worker: usize, conn: ConnKey, event: impl FnOnce() -> Event) {
        if !self.is_enabled() {
            return;
        }
        let token = ConnToken { worker, index: conn.index, generation: conn.generation };
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).entry(token).or_default().push(event());
    }

    pub(crate) fn get(&self, token: ConnToken) -> Vec<Event> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(&token).cloned().unwrap_or_default()
    }
}

/// The connection an operation targets and the operation's name, for connection operations.
pub(crate) fn op_event(op: &Op) -> Option<(ConnKey, &'static str)> {
    #[allow(unreachable_patterns)] // other kinds of operation (UDP, disk) are not per connection
    Some(match op {
        Op::Adopt { conn, .. } => (*conn, "Adopt"),
        Op::Connect { conn, .. } => (*conn, "Connect"),
        Op::RecvStart { conn } => (*conn, "RecvStart"),
        Op::RecvPause { conn } => (*conn, "RecvPause"),
        Op::Send { conn, .. } => (*conn, "Send"),
        Op::ShutdownWrite { conn } => (*conn, "ShutdownWrite"),
        Op::Close { conn, .. } => (*conn, "Close"),
        _ => return None,
    })
}

/// The connection a completion belongs to and the event recording it.
pub(crate) fn completion_event(c: &Completion<'_>) -> Option<(ConnKey, Event)> {
    let err = |e: &std::io::Error| e.kind();
    #[allow(unreachable_patterns)] // other kinds of completion (UDP, disk) are not per connection
    let (conn, kind, result) = match c {
        Completion::Recv { conn, data } => (*conn, "Recv", Ok(data.len())),
        Completion::RecvEnd { conn, result } => (*conn, "RecvEnd", result.as_ref().map(|()| 0).map_err(err)),
        Completion::RecvStarved { conn } => (*conn, "RecvStarved", Ok(0)),
        Completion::Sent { conn, result, .. } => (*conn, "Sent", result.as_ref().copied().map_err(err)),
        Completion::Connected { conn, result } => {
            (*conn, "Connected", result.as_ref().map(|_| 0).map_err(err))
        }
        Completion::Closed { conn } => (*conn, "Closed", Ok(0)),
        _ => return None,
    };
    Some((conn, Event::Completed { kind, result }))
}
