//! Test support (feature `testing`): fault injection and the io_uring probe. **Not for
//! production**: a runtime built with a [`FaultPlan`] misbehaves on purpose.
//!
//! `probe()` lets a test ask whether an io_uring feature exists before it relies on it, and skip
//! loudly (printing `SKIPPED: <test> needs <feature>`) instead of passing silently.

pub use ringline_core::event_log::Event;
pub use ringline_core::faults::FaultPlan;

/// What the running kernel's io_uring offers, as probed once per process; all `false` when io_uring
/// is unusable or the `uring` feature is not compiled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// io_uring can be used by ringline at all.
    pub io_uring: bool,
    /// Multishot receive.
    pub recv_multishot: bool,
    /// Provided-buffer rings.
    pub buf_ring: bool,
    /// `IORING_OP_SENDMSG_ZC` (zero-copy sends).
    pub send_zc: bool,
    /// `IORING_SETUP_SINGLE_ISSUER`.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN`.
    pub defer_taskrun: bool,
}

/// The io_uring probe (cached; the first call may take a few milliseconds).
pub fn probe() -> Features {
    #[cfg(feature = "uring")]
    if let Ok(f) = ringline_uring::probe() {
        return Features {
            io_uring: f.missing().is_none(),
            recv_multishot: f.recv_multishot,
            buf_ring: f.buf_ring,
            send_zc: f.send_zc,
            single_issuer: f.single_issuer,
            defer_taskrun: f.defer_taskrun,
        };
    }
    Features::default()
}
