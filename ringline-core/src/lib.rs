//! Portable machinery of the ringline runtime.
//!
//! This crate holds everything that needs no operating-system backend: the executor, the
//! connection table, send queues, receive accumulators, timers, the handler trait, and the
//! backend contract ([`driver`]). It has no io-uring, mio or libc in its dependency tree
//! (`cargo xtask check-core` enforces it), so other runtimes can reuse it.
//!
//! A backend implements [`driver::Driver`]; the facade crate `ringline` starts worker threads
//! running [`run_worker`] with the chosen driver.
#![forbid(unsafe_code)]

pub mod backend;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod bench_support;
pub mod blocking;
pub mod buf;
pub mod config;
pub mod conn;
pub mod disk;
pub mod driver;
pub mod error;
#[cfg(feature = "testing")]
pub mod event_log;
pub mod executor;
#[cfg(feature = "testing")]
pub mod faults;
pub mod handler;
pub mod join;
pub mod metrics;
mod runtime;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod udp;

pub use backend::{Backend, BackendChoice};
pub use blocking::{BlockingHandle, spawn_blocking};
pub use buf::{GuardBox, SendBuf, SendGuard};
pub use config::{Config, ConfigBuilder};
pub use conn::{CloseReason, ConnCtx, ConnToken, OwnedConn, connect, connect_with_timeout};
pub use disk::{AlignedBuf, DirectIoFile, NvmeDevice};
pub use driver::{Completion, ConnKey, DiskKey, Driver, Op, UdpKey, Unpark};
pub use error::Error;
pub use executor::{RemoteSpawn, TaskHandle, TaskId};
pub use handler::{AsyncEventHandler, ParseResult, WorkerCtx};
pub use join::{Either, Either3, join, join_all, join3, select, select3};
pub use metrics::{AcceptorMetrics, RuntimeMetrics, WorkerMetrics};
pub use runtime::api::{
    ShutdownSignal, YieldNow, backend as current_backend, current_task, current_worker,
    metrics as worker_metrics, request_shutdown, shutdown_requested, shutdown_signal, spawn, worker_id,
    yield_now,
};
pub use runtime::handle::{ShutdownHandle, WorkerHandle};
pub use runtime::shared::RuntimeShared;
pub use runtime::worker::{WorkerParams, run_worker};
pub use time::{
    Deadline, Elapsed, Interval, Sleep, Timeout, TimerExhausted, interval, sleep, sleep_until, timeout,
    timeout_at, try_sleep, try_sleep_until, try_timeout, try_timeout_at,
};
pub use udp::{OwnedUdp, UdpCtx, udp_bind};
