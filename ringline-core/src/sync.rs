//! The synchronization primitives of core's cross-thread paths: std's, or loom's under `cfg(all(test, loom))`.
//!
//! The worker inbox, the task wakers' `scheduled` flag, the acceptor hand-off's admission count
//! and the shutdown flag with its hooks are core's racing code. They take
//! their atomics and locks from here, so `cargo xtask loom` (`RUSTFLAGS="--cfg loom"`) can
//! model-check them against every interleaving loom explores, while every other build uses std's
//! types at no cost. loom's types are safe code, so `#![forbid(unsafe_code)]` holds in both.
//! Under loom these types only work inside `loom::model`, so that build runs the loom tests alone
//! (`-- loom`).
//!
//! `Arc` stays std's everywhere: `std::task::Wake` takes `std::sync::Arc<Self>`, and a reference
//! count is not logic of ours to check. Model tests share their state through `loom::sync::Arc`.

#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::Mutex;
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[cfg(all(test, loom))]
pub(crate) use loom::sync::Mutex;
#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
