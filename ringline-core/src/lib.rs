//! Portable machinery of the ringline runtime.
//!
//! This crate holds everything that needs no operating-system backend: the executor, the
//! connection table, send queues, receive accumulators, timers, the handler traits, and the
//! backend contract ([`driver`]). It has no io-uring, mio or libc in its dependency tree
//! (`cargo xtask check-core` enforces it), so other runtimes can reuse it.
#![forbid(unsafe_code)]

pub mod backend;
pub mod buf;
pub mod config;
pub mod driver;
pub mod error;

pub use backend::{Backend, BackendChoice};
pub use buf::{GuardBox, SendBuf, SendGuard};
pub use config::{Config, ConfigBuilder};
pub use driver::{Completion, ConnKey, Driver, Op, Unpark};
pub use error::Error;
