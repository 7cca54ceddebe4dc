//! The one error type of the async API, and how it maps onto `io::ErrorKind`.

use std::io;
use std::net::SocketAddr;

use crate::backend::Backend;

/// Every failure ringline reports, from launch to a single send.
///
/// Capacity variants (`SendPoolExhausted`, `TimerExhausted`, ...) are recoverable: the resource
/// frees as work completes. [`Error::kind`] maps each variant onto an [`io::ErrorKind`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; `field` names the setter.
    #[error("invalid configuration `{field}`: {reason}")]
    Config {
        /// The setter (or environment variable) whose value was rejected.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The requested backend is not compiled in or cannot run here.
    #[error("backend {backend:?} unavailable: {reason}")]
    BackendUnavailable {
        /// The backend that was asked for.
        backend: Backend,
        /// Why it cannot run.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address given to the builder.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A worker failed while building its backend or handler.
    #[error("worker {worker} setup failed: {reason}")]
    WorkerSetup {
        /// Index of the worker.
        worker: usize,
        /// What failed.
        reason: String,
    },
    /// A process resource limit is too low for the configuration.
    #[error(
        "{resource} too low: need {needed}, have {available}; lower max_connections or raise `ulimit -n`"
    )]
    ResourceLimit {
        /// The limit, e.g. `RLIMIT_NOFILE`.
        resource: &'static str,
        /// What the configuration needs.
        needed: u64,
        /// What the process may use.
        available: u64,
    },
    /// Called outside a ringline worker thread.
    #[error("not called from a ringline worker")]
    NotInRuntime,
    /// The runtime is shutting down.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// The connection table of this worker is full.
    #[error("connection table full (max_connections)")]
    ConnectionLimitReached,
    /// Not enough free send-pool slots for a non-waiting send.
    #[error("send pool exhausted (send_pool)")]
    SendPoolExhausted,
    /// The connection's send queue is over `send_queue_limit`.
    #[error("send queue full (send_queue_limit)")]
    SendQueueFull,
    /// Every timer slot is in use.
    #[error("timer slots exhausted (timer_slots)")]
    TimerExhausted,
    /// Every standalone task slot is in use.
    #[error("task slots exhausted (standalone_task_capacity)")]
    TaskSlotsExhausted,
    /// The handle refers to a connection slot that was released.
    #[error("stale connection handle")]
    InvalidConnection,
    /// The connection (or its write side) was closed locally.
    #[error("connection closed")]
    Closed,
    /// An outbound connect did not finish in time.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The connection made no progress for `idle_timeout`.
    #[error("connection idle timeout")]
    IdleTimeout,
    /// A message cannot fit under `recv_accumulator_limit`.
    #[error("message larger than the accumulator limit of {limit} bytes")]
    MessageTooLarge {
        /// The configured `recv_accumulator_limit`.
        limit: usize,
    },
    /// A TLS error (feature `tls`): a failed handshake of `connect_tls`, or a protocol error
    /// after the handshake.
    #[cfg(feature = "tls")]
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// A spawned task panicked.
    #[error("task panicked")]
    TaskPanicked,
    /// A spawned task was aborted.
    #[error("task aborted")]
    TaskAborted,
    /// An NVMe command completed with a non-zero status.
    #[error("NVMe status {status:#x}")]
    Nvme {
        /// The status word.
        status: u16,
    },
    /// An argument is invalid.
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// The operation is not supported by the running backend or platform.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A builder setting needed by this call was not given.
    #[error("not configured: {0}")]
    NotConfigured(&'static str),
    /// An OS error, kind preserved.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// The `io::ErrorKind` this error corresponds to.
    pub fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            Error::ConnectionLimitReached
            | Error::SendPoolExhausted
            | Error::SendQueueFull
            | Error::TimerExhausted
            | Error::TaskSlotsExhausted => K::WouldBlock,
            Error::InvalidConnection | Error::Closed => K::NotConnected,
            Error::ConnectTimeout | Error::IdleTimeout => K::TimedOut,
            Error::MessageTooLarge { .. } => K::InvalidData,
            #[cfg(feature = "tls")]
            Error::Tls(_) => K::InvalidData,
            Error::ShuttingDown => K::ConnectionAborted,
            Error::InvalidInput(_) => K::InvalidInput,
            Error::Unsupported(_) => K::Unsupported,
            Error::Io(e) => e.kind(),
            _ => K::Other,
        }
    }

    /// A copy of this error for reporting the same failure to several waiters.
    ///
    /// `io::Error` is not `Clone`; the copy keeps its kind and raw OS code.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Io(e) => Error::Io(duplicate_io(e)),
            Error::MessageTooLarge { limit } => Error::MessageTooLarge { limit: *limit },
            Error::InvalidConnection => Error::InvalidConnection,
            Error::Closed => Error::Closed,
            Error::ConnectTimeout => Error::ConnectTimeout,
            Error::IdleTimeout => Error::IdleTimeout,
            Error::ShuttingDown => Error::ShuttingDown,
            #[cfg(feature = "tls")]
            Error::Tls(e) => Error::Tls(e.clone()),
            Error::WorkerSetup { worker, reason } => {
                Error::WorkerSetup { worker: *worker, reason: reason.clone() }
            }
            Error::Config { field, reason } => Error::Config { field, reason: reason.clone() },
            Error::Bind { addr, source } => Error::Bind { addr: *addr, source: duplicate_io(source) },
            Error::BackendUnavailable { backend, reason } => {
                Error::BackendUnavailable { backend: *backend, reason: reason.clone() }
            }
            other => Error::Io(io::Error::new(other.kind(), other.to_string())),
        }
    }
}

/// Copies an `io::Error`, keeping its raw OS code when it has one.
pub fn duplicate_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            other => io::Error::new(other.kind(), other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_errors_are_would_block() {
        for e in [Error::SendPoolExhausted, Error::SendQueueFull, Error::TimerExhausted] {
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        }
    }

    #[test]
    fn io_errors_keep_their_kind_through_conversion() {
        let e = Error::Io(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let back: io::Error = e.into();
        assert_eq!(back.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn duplicate_keeps_os_code() {
        let e = Error::Io(io::Error::from_raw_os_error(104));
        match e.duplicate() {
            Error::Io(d) => assert_eq!(d.raw_os_error(), Some(104)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
