//! One-time, cached probe of what the running kernel's io_uring offers.
//!
//! The probe builds small rings and asks the kernel ([`io_uring::Probe`], setup flags, a trial
//! buffer-ring registration and a trial multishot receive on a socket pair); it never parses kernel
//! versions (PITFALLS P40). The result is computed once per process.

use std::io;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, types};

use crate::buf_ring::BufRing;
use crate::ring::Ring;

/// io_uring features the driver cares about, as found by [`probe`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `IORING_FEAT_EXT_ARG`: waits with a timeout argument.
    pub ext_arg: bool,
    /// `IORING_FEAT_NODROP`: overflowing completions are kept, not dropped.
    pub nodrop: bool,
    /// Multishot receive (`IORING_RECV_MULTISHOT`) works.
    pub recv_multishot: bool,
    /// Provided-buffer rings (`IORING_REGISTER_PBUF_RING`) can be registered.
    pub buf_ring: bool,
    /// `IORING_OP_ASYNC_CANCEL` is supported.
    pub async_cancel: bool,
    /// `IORING_OP_SENDMSG_ZC` is supported.
    pub send_zc: bool,
    /// `IORING_SETUP_SINGLE_ISSUER` is accepted.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (with `SINGLE_ISSUER`) is accepted.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` is accepted.
    pub coop_taskrun: bool,
}

impl Features {
    /// Why the driver cannot run with these features, or `None` when everything it needs is there.
    pub fn missing(&self) -> Option<String> {
        let required = [
            (self.nodrop, "IORING_FEAT_NODROP"),
            (self.ext_arg, "IORING_FEAT_EXT_ARG"),
            (self.buf_ring, "provided-buffer rings"),
            (self.recv_multishot, "multishot receive"),
            (self.async_cancel, "IORING_OP_ASYNC_CANCEL"),
        ];
        let absent: Vec<&str> = required.iter().filter(|(ok, _)| !ok).map(|(_, name)| *name).collect();
        if absent.is_empty() { None } else { Some(format!("io_uring lacks {}", absent.join(", "))) }
    }
}

static PROBE: OnceLock<Result<Features, String>> = OnceLock::new();

/// The features of this kernel's io_uring, probed once per process; `Err` says why io_uring cannot
/// be used at all (for example `io_uring_setup: EPERM (seccomp?)`).
pub fn probe() -> &'static Result<Features, String> {
    PROBE.get_or_init(probe_on_own_thread)
}

/// `Ok` when the driver can run here, else a human-readable reason.
pub fn available() -> Result<(), String> {
    match probe() {
        Ok(f) => f.missing().map_or(Ok(()), Err),
        Err(e) => Err(e.clone()),
    }
}

/// Names an errno with a hint for the usual causes of a failing `io_uring_setup`.
pub(crate) fn describe_setup_error(e: &io::Error) -> String {
    let detail = match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM (seccomp? io_uring disabled by sysctl or container)",
        Some(libc::ENOSYS) => "ENOSYS (kernel built without io_uring)",
        Some(libc::ENOMEM) => "ENOMEM (RLIMIT_MEMLOCK too low or out of memory)",
        Some(libc::EMFILE) => "EMFILE (out of file descriptors)",
        Some(libc::ENFILE) => "ENFILE (system out of file descriptors)",
        Some(libc::EINVAL) => "EINVAL (unsupported setup parameters)",
        _ => return format!("io_uring_setup: {e}"),
    };
    format!("io_uring_setup: {detail}")
}

/// Runs the probe on a short-lived thread of its own. Tearing down the trial rings can queue
/// io_uring task work on the thread that created them, which interrupts that thread's next
/// blocking syscall; a socket read with `SO_RCVTIMEO` then fails with `EINTR`. The caller's thread
/// (an application thread calling `launch`) must not see that.
fn probe_on_own_thread() -> Result<Features, String> {
    std::thread::Builder::new()
        .name("ringline-probe".into())
        .spawn(run_probe)
        .map_err(|e| format!("cannot start the probe thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the io_uring probe panicked".to_string()))
}

fn run_probe() -> Result<Features, String> {
    let mut ring = Ring::plain(8).map_err(|e| describe_setup_error(&e))?;
    let params = ring.params();
    let mut f = Features {
        ext_arg: params.is_feature_ext_arg(),
        nodrop: params.is_feature_nodrop(),
        ..Features::default()
    };

    let mut p = io_uring::Probe::new();
    if ring.submitter().register_probe(&mut p).is_ok() {
        f.async_cancel = p.is_supported(opcode::AsyncCancel::CODE);
        f.send_zc = p.is_supported(opcode::SendMsgZc::CODE);
    }

    f.single_issuer = IoUring::<io_uring::squeue::Entry>::builder().setup_single_issuer().build(2).is_ok();
    f.defer_taskrun = f.single_issuer
        && IoUring::<io_uring::squeue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(2)
            .is_ok();
    f.coop_taskrun = IoUring::<io_uring::squeue::Entry>::builder().setup_coop_taskrun().build(2).is_ok();

    let trial = BufRing::new(2, 64, 0).ok().and_then(|mut b| b.register(&ring.submitter()).ok().map(|()| b));
    if let Some(mut bufs) = trial {
        f.buf_ring = true;
        if f.ext_arg {
            match try_multishot(&mut ring, &mut bufs) {
                Some(ok) => {
                    f.recv_multishot = ok;
                    if let Err(e) = bufs.unregister(&ring.submitter()) {
                        tracing::warn!("probe: unregistering the trial buffer ring failed: {e}");
                    }
                }
                // The trial receive never finished: keep the ring registered, so dropping it
                // leaks the memory instead of freeing what the kernel may still write.
                None => tracing::warn!("probe: trial multishot receive did not finish"),
            }
        } else if let Err(e) = bufs.unregister(&ring.submitter()) {
            tracing::warn!("probe: unregistering the trial buffer ring failed: {e}");
        }
    }
    Ok(f)
}

/// Arms a multishot receive on a socket pair holding one byte and a FIN and waits (at most one
/// second) for its terminal completion. `Some(true)`: multishot works; `Some(false)`: the kernel
/// rejected it; `None`: it did not finish in time.
fn try_multishot(ring: &mut Ring, bufs: &mut BufRing) -> Option<bool> {
    let mut sv = [-1; 2];
    // SAFETY:
    // - `sv` is a writable array of two c_ints, as socketpair(2) requires.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            sv.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Some(false);
    }
    let byte = [1u8];
    // SAFETY:
    // - `sv[1]` is the socket just created; `byte` is a live one-byte buffer.
    unsafe {
        libc::write(sv[1], byte.as_ptr().cast(), 1);
        libc::shutdown(sv[1], libc::SHUT_WR);
    }
    let entry = opcode::RecvMulti::new(types::Fd(sv[0]), bufs.bgid()).build().user_data(1);
    let mut full = false;
    // SAFETY:
    // - the multishot receive names no memory of ours besides the registered buffer ring, which
    //   outlives it (the caller leaks the ring if no terminal completion arrives);
    // - `sv[0]` is closed only after the terminal completion, or after the ring gave up on it.
    let pushed = unsafe { ring.push_entry(&entry, &mut full) };
    let mut result = if pushed { None } else { Some(false) };
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut saw_data = false;
    while result.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match ring.submit_and_wait(Some(left)) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {}
            Err(_) => break,
        }
        let mut cqes = Vec::new();
        ring.reap(&mut cqes, 64);
        for cqe in cqes {
            if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                if bufs.taken(bid) {
                    bufs.release(bid);
                }
            }
            if cqe.result() > 0 {
                saw_data = true;
            }
            if !cqueue::more(cqe.flags()) {
                result = Some(saw_data || cqe.result() == 0);
                if cqe.result() == -libc::EINVAL {
                    result = Some(false);
                }
            }
        }
    }
    // SAFETY:
    // - both descriptors were created above and are closed once, here.
    unsafe {
        libc::close(sv[0]);
        libc::close(sv[1]);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_is_cached_and_reports_this_kernel() {
        let a = probe() as *const _;
        let b = probe() as *const _;
        assert_eq!(a, b);
        if let Ok(f) = probe() {
            assert!(f.nodrop, "every io_uring kernel this driver supports has NODROP");
        }
    }
}
