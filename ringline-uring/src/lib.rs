//! The io_uring backend of the ringline runtime.
//!
//! [`UringDriver`] implements [`ringline_core::driver::Driver`] on Linux io_uring: one ring per
//! worker thread, multishot receives into a provided-buffer ring, gathering sends that finish their
//! own short writes (zero-copy `SendMsgZc` for guarded buffers, held until the kernel's
//! notification), optional registered (fixed) files, and an eventfd-based [`UringUnpark`].
//! [`probe()`] and [`available()`] tell whether the running kernel supports it.
//!
//! On other operating systems the crate is empty.

#[cfg(target_os = "linux")]
mod buf_ring;
#[cfg(target_os = "linux")]
mod conn;
#[cfg(target_os = "linux")]
mod driver;
#[cfg(target_os = "linux")]
mod fixed;
#[cfg(target_os = "linux")]
mod nvme;
#[cfg(target_os = "linux")]
pub mod probe;
#[cfg(target_os = "linux")]
mod ring;
#[cfg(target_os = "linux")]
mod unpark;
#[cfg(target_os = "linux")]
mod user_data;

#[cfg(target_os = "linux")]
pub use driver::UringDriver;
#[cfg(target_os = "linux")]
pub use probe::{Features, available, probe};
#[cfg(target_os = "linux")]
pub use unpark::UringUnpark;
