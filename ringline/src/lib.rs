//! ringline: a thread-per-core async I/O runtime for Linux, on io_uring with a mio fallback.
//!
//! Write one [`AsyncEventHandler`], start it with [`RinglineBuilder`], and every worker thread
//! runs its own backend instance, executor and handler. Connections never migrate between
//! workers; their handles ([`ConnCtx`]) are `!Send`.
//!
//! # Backends
//! The cargo feature `uring` (default) builds the io_uring backend, `mio` the mio backend
//! (epoll/kqueue). With both, the backend is chosen at launch: `Config::backend`, overridden by
//! `RINGLINE_BACKEND=auto|uring|mio`; `Auto` probes io_uring and falls back to mio with a
//! warning. [`COMPILED_BACKENDS`] lists what this build has; [`backend()`] says what runs.
//!
//! # TLS
//! The cargo feature `tls` adds rustls 0.23 (no crypto provider enabled: the configurations
//! carry one): `RinglineBuilder::bind_tls` and `tls_client`, `connect_tls` and
//! `connect_tls_with_timeout`, `ConnCtx::tls_info` and `Error::Tls` (guide section 7).
//!
//! # Files and disk I/O
//! [`fs::File`] (buffered, `Vec<u8>`), [`DirectIoFile`] (`O_DIRECT`, [`AlignedBuf`]) and
//! [`NvmeDevice`] (NVMe passthrough, io_uring with `Config::nvme(true)`) run on the worker:
//! native io_uring operations, or the blocking pool under mio. Buffers move into each operation
//! and come back with its result (guide section "Files and disk I/O").
//!
//! ```no_run
//! use ringline::{AlignedBuf, DirectIoFile, fs};
//!
//! async fn copy_first_block(from: &str, to: &str) -> Result<(), ringline::Error> {
//!     let src = DirectIoFile::open(from).await?;
//!     let (n, buf) = src.read_at(AlignedBuf::zeroed(src.alignment()), 0).await;
//!     let n = n?;
//!     let dst = fs::File::create(to).await?;
//!     let (written, _) = dst.write_at(buf[..n].to_vec(), 0).await;
//!     written?;
//!     dst.sync_all().await
//! }
//! ```
//!
//! # Example: a lossless echo server
//! ```no_run
//! use ringline::{AsyncEventHandler, Config, ConnCtx, RinglineBuilder};
//!
//! struct Echo;
//!
//! impl AsyncEventHandler for Echo {
//!     fn create_for_worker(_worker: usize) -> Self {
//!         Echo
//!     }
//!     fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
//!         async move {
//!             loop {
//!                 let data = match conn.recv().await {
//!                     Ok(d) if !d.is_empty() => d,
//!                     _ => break,
//!                 };
//!                 if conn.send_owned(data).await.is_err() {
//!                     break;
//!                 }
//!             } // returning closes after the queued bytes are written
//!         }
//!     }
//! }
//!
//! // Launch checks that workers × max_connections fits under the RLIMIT_NOFILE hard limit.
//! let config = Config::builder().max_connections(4096).build()?;
//! let (shutdown, workers) =
//!     RinglineBuilder::new(config).bind("127.0.0.1:7878".parse().unwrap()).launch::<Echo>()?;
//! println!("listening on {:?}", shutdown.local_addrs());
//! for w in workers {
//!     w.join().unwrap()?;
//! }
//! # Ok::<(), ringline::Error>(())
//! ```

//! # Thread affinity
//! Connection handles are `!Send`: they only work on their worker.
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<ringline::ConnCtx>();
//! ```
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<ringline::OwnedConn>();
//! ```
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<ringline::UdpCtx>();
//! ```
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<ringline::fs::File>();
//! ```
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<ringline::DirectIoFile>();
//! ```
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<ringline::NvmeDevice>();
//! ```

#[cfg(not(any(feature = "uring", feature = "mio")))]
compile_error!(
    "ringline needs a backend: enable the `uring` feature (Linux io_uring, the default) or `mio` (epoll/kqueue), e.g. `--features mio`"
);

#[cfg(all(feature = "uring", not(feature = "mio"), not(target_os = "linux")))]
compile_error!("the `uring` backend needs Linux; enable the `mio` feature on this platform");

#[doc = include_str!("../../docs/guide.md")]
pub mod guide {}

mod acceptor;
mod launch;
pub mod select;
mod sys;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tls")]
mod tls;
mod udp;

pub use launch::{Launched, RinglineBuilder};
pub use ringline_core::blocking::{BlockingHandle, spawn_blocking};
pub use ringline_core::buf::{GuardBox, SendGuard};
#[cfg(feature = "futures-io")]
pub use ringline_core::conn::ConnStream;
#[cfg(feature = "tls")]
pub use ringline_core::conn::TlsInfo;
pub use ringline_core::conn::{
    CloseReason, ConnCtx, ConnToken, ConnectFuture, Flush, MAX_GUARDS, OwnedConn, Recv, SendBuilder,
    SendFuture, WithBytes, WithData, connect, connect_with_timeout,
};
/// An owned, 4096-aligned heap buffer for [`DirectIoFile`] and [`NvmeDevice`] transfers.
pub use ringline_core::disk::AlignedBuf;
/// A file opened with `O_DIRECT`: aligned positional reads and writes.
pub use ringline_core::disk::DirectIoFile;
/// An NVMe namespace driven by passthrough commands (io_uring, `Config::nvme(true)`).
pub use ringline_core::disk::NvmeDevice;
/// Regular files: `fs::File` with `open`, `create`, `read_at`, `write_at`, `sync_all`, `len`, `close`.
pub use ringline_core::disk::fs;
pub use ringline_core::executor::{TaskHandle, TaskId};
pub use ringline_core::handler::{AsyncEventHandler, ParseResult, WorkerCtx};
pub use ringline_core::join::{
    Either, Either3, Join, Join3, JoinAll, Select, Select3, join, join_all, join3, select, select3,
};
pub use ringline_core::metrics::{AcceptorMetrics, RuntimeMetrics, WorkerMetrics};
pub use ringline_core::time::{
    Deadline, Elapsed, Interval, Sleep, Timeout, TimerExhausted, interval, sleep, sleep_until, timeout,
    timeout_at, try_sleep, try_sleep_until, try_timeout, try_timeout_at,
};
pub use ringline_core::udp::{OwnedUdp, RecvFrom, SendTo, UdpCtx, WithDatagram, udp_bind};
pub use ringline_core::{
    Backend, BackendChoice, Config, ConfigBuilder, Error, ShutdownHandle, ShutdownSignal, WorkerHandle,
    YieldNow, current_task, current_worker, request_shutdown, shutdown_requested, shutdown_signal, spawn,
    worker_id, yield_now,
};
pub use ringline_core::{Driver, driver};
#[cfg(feature = "tls")]
pub use tls::{connect_tls, connect_tls_with_timeout};

/// `Bytes`, as returned by `ConnCtx::recv` and `with_bytes`.
pub use bytes::Bytes;

/// The backend this build prefers: io_uring when the `uring` feature is on, else mio.
/// With both features the one actually running is chosen at launch; see [`backend()`].
#[cfg(feature = "uring")]
pub const BACKEND: Backend = Backend::Uring;
/// The backend this build prefers: io_uring when the `uring` feature is on, else mio.
#[cfg(not(feature = "uring"))]
pub const BACKEND: Backend = Backend::Mio;

/// The backends compiled into this build.
pub const COMPILED_BACKENDS: &[Backend] = &[
    #[cfg(feature = "uring")]
    Backend::Uring,
    #[cfg(feature = "mio")]
    Backend::Mio,
];

/// The backend the current worker runs; `None` off a worker.
pub fn backend() -> Option<Backend> {
    ringline_core::current_backend()
}

/// The current worker's metrics; `None` off a worker.
pub fn metrics() -> Option<WorkerMetrics> {
    ringline_core::worker_metrics()
}
