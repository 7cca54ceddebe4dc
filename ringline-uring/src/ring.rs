//! The ring itself: setup with the best flags this kernel accepts, the one place SQEs are pushed,
//! submission, and submit-and-wait with a timeout.

use std::io;
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, squeue};
use ringline_core::config::Config;

use crate::probe::Features;

/// How the ring was set up (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SetupMode {
    /// `SINGLE_ISSUER | DEFER_TASKRUN`.
    DeferTaskrun,
    /// `COOP_TASKRUN`.
    CoopTaskrun,
    /// `SQPOLL` with the configured idle time.
    Sqpoll,
    /// No optional flags.
    Plain,
}

/// One io_uring instance, owned by one worker thread.
pub(crate) struct Ring {
    ring: IoUring,
    mode: SetupMode,
}

impl Ring {
    /// Builds the ring on the calling thread: `SINGLE_ISSUER | DEFER_TASKRUN` (not with SQPOLL),
    /// else `COOP_TASKRUN`, else no flags, moving on after each `EINVAL`.
    pub(crate) fn new(cfg: &Config, features: &Features) -> io::Result<Ring> {
        let mut modes = Vec::with_capacity(3);
        if cfg.sqpoll().is_some() {
            modes.push(SetupMode::Sqpoll);
        } else {
            if features.defer_taskrun {
                modes.push(SetupMode::DeferTaskrun);
            }
            if features.coop_taskrun {
                modes.push(SetupMode::CoopTaskrun);
            }
        }
        modes.push(SetupMode::Plain);
        let mut last = io::Error::from_raw_os_error(libc::EINVAL);
        for mode in modes {
            let mut b = IoUring::<squeue::Entry, cqueue::Entry>::builder();
            b.setup_cqsize(cfg.cq_entries());
            match mode {
                SetupMode::DeferTaskrun => {
                    b.setup_single_issuer().setup_defer_taskrun();
                }
                SetupMode::CoopTaskrun => {
                    b.setup_coop_taskrun();
                }
                SetupMode::Sqpoll => {
                    let idle = cfg.sqpoll().unwrap_or_default().as_millis().min(u128::from(u32::MAX));
                    b.setup_sqpoll(idle as u32);
                }
                SetupMode::Plain => {}
            }
            match b.build(cfg.sq_entries()) {
                Ok(ring) => return Ok(Ring { ring, mode }),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// A small ring without optional flags (used by the probe).
    pub(crate) fn plain(entries: u32) -> io::Result<Ring> {
        Ok(Ring { ring: IoUring::new(entries)?, mode: SetupMode::Plain })
    }

    /// The kernel's parameters of this ring.
    pub(crate) fn params(&self) -> &io_uring::Parameters {
        self.ring.params()
    }

    /// The flags the ring was set up with.
    pub(crate) fn mode(&self) -> SetupMode {
        self.mode
    }

    /// Whether the kernel keeps overflowing completions (`IORING_FEAT_NODROP`).
    pub(crate) fn nodrop(&self) -> bool {
        self.ring.params().is_feature_nodrop()
    }

    /// The submitter, for registrations.
    pub(crate) fn submitter(&self) -> io_uring::Submitter<'_> {
        self.ring.submitter()
    }

    /// Completion queue capacity.
    pub(crate) fn cq_capacity(&self) -> usize {
        self.ring.params().cq_entries() as usize
    }

    /// Pushes one entry; when the SQ is full it submits once and tries again. Returns `true` when
    /// the entry is queued, `false` when the SQ is still full (the entry was not taken). `*full` is
    /// set when the SQ was found full at least once.
    ///
    /// # Safety
    ///
    /// Every pointer in `entry` (buffers, iovecs, msghdr, sockaddr, the eventfd read target) must
    /// stay valid and unmoved, and the memory the kernel writes must not be read or written by
    /// anyone else, until the entry's terminal completion has been reaped. The entry's fd or fixed
    /// slot must stay open/registered until then too.
    pub(crate) unsafe fn push_entry(&mut self, entry: &squeue::Entry, full: &mut bool) -> bool {
        // SAFETY:
        // - the caller guarantees every resource named by `entry` outlives its completion.
        if unsafe { self.ring.submission().push(entry) }.is_ok() {
            return true;
        }
        *full = true;
        // Submit what is queued (never waits), then retry once.
        let _ = self.ring.submit();
        // SAFETY:
        // - as above: the caller's guarantee covers this second attempt with the same entry.
        unsafe { self.ring.submission().push(entry) }.is_ok()
    }

    /// True when at least one more entry fits, after submitting once if the SQ was full (then
    /// `*full` is set).
    pub(crate) fn ensure_room(&mut self, full: &mut bool) -> bool {
        if !self.ring.submission().is_full() {
            return true;
        }
        *full = true;
        let _ = self.ring.submit();
        !self.ring.submission().is_full()
    }

    /// Submits queued entries without waiting; also flushes overflowed completions when the
    /// kernel flagged a CQ overflow (the submitter enters with `GETEVENTS` then).
    pub(crate) fn submit(&mut self) -> io::Result<usize> {
        self.ring.submit()
    }

    /// Whether the kernel flagged a CQ overflow (completions parked in the kernel).
    pub(crate) fn cq_overflow(&mut self) -> bool {
        self.ring.submission().cq_overflow()
    }

    /// Submits queued entries and waits for at least one completion, or `timeout`
    /// (`None`: unbounded; zero: only reap). A timeout is `Ok`; errors are returned raw for the
    /// caller's retry policy.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let sub = self.ring.submitter();
        let r = match timeout {
            None => sub.submit_and_wait(1),
            Some(d) => {
                let ts = Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts);
                sub.submit_with_args(1, &args)
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves up to `max` available completions into `out`.
    pub(crate) fn reap(&mut self, out: &mut Vec<cqueue::Entry>, max: usize) {
        let mut cq = self.ring.completion();
        cq.sync();
        out.extend(cq.by_ref().take(max));
    }
}
