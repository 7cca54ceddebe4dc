//! [`MioUnpark`]: the cross-thread waker of a [`MioDriver`](crate::MioDriver).

use std::sync::Arc;

use mio::Waker;
use ringline_core::driver::Unpark;

/// Wakes a parked [`MioDriver`](crate::MioDriver) from any thread.
///
/// It holds a shared [`mio::Waker`] (an eventfd registered with the driver's poll instance).
/// Waking after the driver is gone is harmless: the eventfd stays open while any handle lives and
/// nobody waits on it any more.
#[derive(Clone, Debug)]
pub struct MioUnpark {
    waker: Arc<Waker>,
}

impl MioUnpark {
    /// Wraps the driver's waker.
    pub(crate) fn new(waker: Arc<Waker>) -> Self {
        MioUnpark { waker }
    }
}

impl Unpark for MioUnpark {
    fn unpark(&self) {
        // A failed wake (practically impossible: mio resets a saturated eventfd itself) cannot be
        // reported to anyone; the driver's next bounded park still makes progress.
        if let Err(e) = self.waker.wake() {
            tracing::debug!(error = %e, "mio waker failed");
        }
    }
}
