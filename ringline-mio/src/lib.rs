//! The mio (epoll) backend of the ringline runtime.
//!
//! [`MioDriver`] implements the backend contract of [`ringline_core::driver`] on top of
//! edge-triggered readiness from [`mio`]. It is the fallback for kernels or environments without
//! io_uring; the core above it is identical on both backends.
//!
//! # How it works
//!
//! - [`Driver::submit`](ringline_core::driver::Driver::submit) only queues an operation; all work
//!   happens in [`Driver::park`](ringline_core::driver::Driver::park), which then polls with a zero
//!   timeout so queued work is never delayed by a sleep.
//! - Every connection is registered for `READABLE | WRITABLE` with the token
//!   `ConnKey::to_u64()`, so an event for a previous occupant of a slot is recognised by its
//!   generation and dropped (counted in `stale_completions`).
//! - Readiness is edge-triggered: per-connection `readable`/`writable` flags are set by events and
//!   cleared only when a call returns `WouldBlock`. Reads go through one worker-owned read buffer
//!   of `Config::recv_buffers().1` bytes (a read of 8 KiB or more is handed to the core in that
//!   buffer, with no copy, and a new one takes its place) and are capped per connection and per
//!   park so one
//!   firehosing peer cannot starve the others; a capped connection keeps the next park from
//!   blocking.
//! - Sends are gathered `sendmsg` calls with `MSG_NOSIGNAL` straight from the memory of the
//!   [`SendBuf`](ringline_core::buf::SendBuf), so a reset peer never raises `SIGPIPE`.
//! - No socket is ever switched to blocking mode.
//!
//! The backend targets Linux (it relies on `MSG_NOSIGNAL`, `SOCK_NONBLOCK` and 64-bit tokens).

#[cfg(not(target_pointer_width = "64"))]
compile_error!("ringline-mio needs 64-bit pointers: tokens carry a 56-bit connection key");

mod conn;
mod disk;
mod driver;
mod op;
mod registry;
mod udp;
mod unpark;

pub use driver::MioDriver;
pub use unpark::MioUnpark;
