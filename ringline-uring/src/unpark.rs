//! [`UringUnpark`]: wakes a parked [`crate::UringDriver`] from any thread through an eventfd.
//!
//! The driver keeps a read of the eventfd armed in its ring at all times (re-armed after every
//! completion, retried through the driver's retry queue when the SQ is full), so a write from any
//! thread produces a completion and ends the current or next `park`. The eventfd is shared through
//! an `Arc` and closed only when the driver and the last clone are gone, so a late `unpark` never
//! writes to a reused descriptor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use ringline_core::driver::Unpark;

/// A non-blocking, close-on-exec eventfd.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates the eventfd.
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY:
        // - eventfd(2) takes no pointers; the flags are valid constants.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY:
        // - `fd` was just returned by eventfd(2) and is owned by nobody else.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// The raw descriptor (for the ring's read).
    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Adds one to the counter; never blocks (a saturated counter already means "wake").
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY:
        // - the fd is open for as long as `self` lives; `one` is a live 8-byte buffer, as an
        //   eventfd write requires.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8);
        }
    }
}

/// Wakes a parked [`crate::UringDriver`]; cheap to clone, usable from any thread, and harmless
/// after the driver is gone.
#[derive(Clone, Debug)]
pub struct UringUnpark {
    efd: Arc<EventFd>,
}

impl UringUnpark {
    pub(crate) fn new(efd: Arc<EventFd>) -> UringUnpark {
        UringUnpark { efd }
    }
}

impl Unpark for UringUnpark {
    fn unpark(&self) {
        self.efd.notify();
    }
}
