//! Suite integrity (TESTPLAN 34, 35), the test-binary half; `cargo xtask test` does the rest
//! (`xtask/src/parity.rs`: per-backend counts, expected skips, test-name parity).
//!
//! - `parity_suite_both_backends` reports the backend a default launch really used
//!   (`backend: uring|mio` in `<target>/ringline-runs.txt`), so `cargo xtask test` fails when the
//!   uring build silently ran on mio, and checks it against `RINGLINE_BACKEND` in this process.
//! - `kernel_feature_probe_honesty` (feature `testing`) cross-checks `ringline::testing::probe()`
//!   against raw `io_uring_setup`/`io_uring_register` calls made here, and against what real
//!   operations on a forced io_uring launch do; it reports the verdict (`probe: io_uring=yes|no`).

mod common;

use common::{Echo, Server, Watchdog, backend_label, client, config, pattern, record_run, round_trip};
use ringline::Backend;

/// The lower-case name `cargo xtask test` expects in its reports.
fn name(b: Backend) -> &'static str {
    match b {
        Backend::Uring => "uring",
        Backend::Mio => "mio",
        Backend::Custom(name) => name,
        _ => "other",
    }
}

#[test]
fn parity_suite_both_backends() {
    let _w = Watchdog::new("parity_suite_both_backends", 30);
    let server = Server::start::<Echo>(config());
    let running = server.shutdown.backend().expect("backend known after launch");
    let mut c = client(server.addr);
    round_trip(&mut c, &pattern(34, 100_000));
    drop(c);
    record_run(&format!("backend: {}", name(running)));
    match std::env::var("RINGLINE_BACKEND").ok().as_deref() {
        Some("mio") => assert_eq!(running, Backend::Mio, "forced mio"),
        Some("uring") => assert_eq!(running, Backend::Uring, "forced uring"),
        _ => assert!(ringline::COMPILED_BACKENDS.contains(&running)),
    }
    let workers = server.shutdown.metrics().workers;
    assert!(workers.iter().all(|w| w.backend == Some(running)), "{workers:?} on {}", backend_label());
    server.stop();
}

#[cfg(not(feature = "testing"))]
#[test]
fn kernel_feature_probe_honesty() {
    common::record_skip("SKIPPED: kernel_feature_probe_honesty needs feature testing");
}

#[cfg(feature = "testing")]
#[test]
fn kernel_feature_probe_honesty() {
    let _w = Watchdog::new("kernel_feature_probe_honesty", 60);
    let f = ringline::testing::probe();
    if !cfg!(feature = "uring") {
        assert_eq!(f, ringline::testing::Features::default(), "no uring feature: the probe reports nothing");
        common::record_skip("SKIPPED: kernel_feature_probe_honesty needs feature uring (probe is empty)");
        return;
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    // Only builds with the probe report a verdict: an empty probe is no news about the kernel.
    record_run(&format!(
        "probe: io_uring={} recv_multishot={} buf_ring={} send_zc={} single_issuer={} defer_taskrun={}",
        yes(f.io_uring),
        yes(f.recv_multishot),
        yes(f.buf_ring),
        yes(f.send_zc),
        yes(f.single_issuer),
        yes(f.defer_taskrun)
    ));
    raw::cross_check(&f);
    if std::env::var("RINGLINE_BACKEND").ok().as_deref() == Some("mio") {
        // The environment overrides the config: no io_uring launch in this run.
        eprintln!("kernel_feature_probe_honesty: RINGLINE_BACKEND=mio, real-op checks run in the other runs");
        return;
    }
    real_ops::cross_check(&f);
}

/// The probe against io_uring syscalls made directly, with no code shared with the backend.
#[cfg(feature = "testing")]
mod raw {
    use std::os::fd::{FromRawFd, OwnedFd};

    use ringline::testing::Features;

    const SETUP_SINGLE_ISSUER: u32 = 1 << 12;
    const SETUP_DEFER_TASKRUN: u32 = 1 << 13;
    const FEAT_NODROP: u32 = 1 << 1;
    const FEAT_EXT_ARG: u32 = 1 << 8;
    const REGISTER_PROBE: libc::c_uint = 8;
    const REGISTER_PBUF_RING: libc::c_uint = 22;
    const OP_ASYNC_CANCEL: usize = 14;
    const OP_SENDMSG_ZC: usize = 48;

    /// `io_uring_setup(4, flags)`: the ring's fd and the kernel's feature bits.
    fn setup(flags: u32) -> std::io::Result<(OwnedFd, u32)> {
        // `struct io_uring_params` is 120 bytes: 10 u32 fields, then two 40-byte offset blocks.
        let mut params = [0u32; 30];
        params[2] = flags;
        // SAFETY: `params` is a live, writable buffer of the 120 bytes the kernel reads and writes.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok((unsafe { OwnedFd::from_raw_fd(fd as i32) }, params[5]))
    }

    /// Opcodes the kernel reports as supported (`IORING_REGISTER_PROBE`).
    fn supported_ops(ring: &OwnedFd) -> Option<Vec<bool>> {
        use std::os::fd::AsRawFd;
        // 16-byte header, then 256 entries of 8 bytes; u64s keep it aligned.
        let mut buf = vec![0u64; (16 + 256 * 8) / 8];
        // SAFETY: `buf` holds the header and the 256 entries announced, and outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                ring.as_raw_fd(),
                REGISTER_PROBE,
                buf.as_mut_ptr(),
                256u32,
            )
        };
        if r < 0 {
            return None;
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let len = bytes[1] as usize;
        let op = |i: usize| &bytes[16 + 8 * i..16 + 8 * i + 8];
        let mut ops = vec![false; 256];
        for i in 0..len.min(256) {
            let flags = u16::from_ne_bytes([op(i)[2], op(i)[3]]);
            ops[op(i)[0] as usize] = flags & 1 != 0; // IO_URING_OP_SUPPORTED
        }
        Some(ops)
    }

    /// Registers a one-page provided-buffer ring (`IORING_REGISTER_PBUF_RING`).
    fn pbuf_ring(ring: &OwnedFd) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh anonymous private mapping; checked for failure below.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED, "mmap");
        // struct io_uring_buf_reg: ring_addr u64, ring_entries u32, bgid u16, flags u16, resv[3] u64.
        let mut reg = [0u64; 5];
        reg[0] = page as u64;
        reg[1] = 8; // 8 entries, buffer group 0, no flags
        // SAFETY: `reg` is the 40-byte struct the kernel reads; the page stays mapped until the ring
        // is closed below (the registration ends with the ring).
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                ring.as_raw_fd(),
                REGISTER_PBUF_RING,
                reg.as_ptr(),
                1u32,
            )
        };
        r == 0
    }

    /// Asserts that every probe field this file can check directly agrees with the kernel.
    pub(super) fn cross_check(f: &Features) {
        let (ring, feats) = match setup(0) {
            Ok(r) => r,
            Err(e) => {
                assert!(!f.io_uring, "probe claims io_uring but io_uring_setup fails here: {e}");
                eprintln!("kernel_feature_probe_honesty: io_uring_setup fails ({e}); probe agrees");
                return;
            }
        };
        let ops = supported_ops(&ring);
        let op = |i: usize| ops.as_ref().is_some_and(|o| o[i]);
        let pbuf = pbuf_ring(&ring);
        drop(ring);
        let si = setup(SETUP_SINGLE_ISSUER).is_ok();
        let dt = setup(SETUP_SINGLE_ISSUER | SETUP_DEFER_TASKRUN).is_ok();
        let raw = format!(
            "raw: nodrop={} ext_arg={} async_cancel={} sendmsg_zc={} pbuf_ring={pbuf} single_issuer={si} \
             defer_taskrun={dt}",
            feats & FEAT_NODROP != 0,
            feats & FEAT_EXT_ARG != 0,
            op(OP_ASYNC_CANCEL),
            op(OP_SENDMSG_ZC)
        );
        eprintln!("kernel_feature_probe_honesty: {f:?}; {raw}");
        assert_eq!(f.send_zc, op(OP_SENDMSG_ZC), "send_zc vs IORING_REGISTER_PROBE; {raw}");
        assert_eq!(f.buf_ring, pbuf, "buf_ring vs IORING_REGISTER_PBUF_RING; {raw}");
        assert_eq!(f.single_issuer, si, "single_issuer vs io_uring_setup; {raw}");
        assert_eq!(f.defer_taskrun, dt, "defer_taskrun vs io_uring_setup; {raw}");
        let basics = feats & FEAT_NODROP != 0 && feats & FEAT_EXT_ARG != 0 && op(OP_ASYNC_CANCEL) && pbuf;
        if f.io_uring {
            assert!(basics, "probe claims a usable io_uring the kernel does not offer; {raw}");
        } else if basics && f.recv_multishot {
            panic!("probe says io_uring is unusable although every feature it needs is there: {f:?}; {raw}");
        }
    }
}

/// The probe against what real operations do on a launch forced onto io_uring.
#[cfg(feature = "testing")]
mod real_ops {
    use ringline::testing::Features;
    use ringline::{Backend, BackendChoice, Error, RinglineBuilder};

    use super::common::{Echo, backend_label, client, config, pattern, round_trip, stop};

    pub(super) fn cross_check(f: &Features) {
        let cfg =
            config().workers(1).backend(BackendChoice::Uring).zero_copy_threshold(4096).zero_copy_local(true);
        let launched =
            RinglineBuilder::new(cfg.build().unwrap()).bind("127.0.0.1:0".parse().unwrap()).launch::<Echo>();
        let (shutdown, handles) = match launched {
            Err(Error::BackendUnavailable { backend: Backend::Uring, reason }) => {
                assert!(!f.io_uring, "probe claims io_uring but a forced launch says: {reason}");
                return;
            }
            Err(e) => panic!("forced io_uring launch on {}: {e}", backend_label()),
            Ok(l) => l,
        };
        assert!(f.io_uring, "a forced io_uring launch worked although the probe said no");
        assert_eq!(shutdown.backend(), Some(Backend::Uring));
        // Multishot receives into the buffer ring and sends (zero-copy above 4 KiB when offered).
        let mut c = client(shutdown.local_addrs()[0]);
        round_trip(&mut c, &pattern(35, 1 << 20));
        drop(c);
        let w = shutdown.metrics().workers[0].clone();
        assert!(w.bytes_received >= 1 << 20 && w.recv_buffers_total > 0, "{w:?}");
        assert_eq!(
            w.zero_copy_sends > 0,
            f.send_zc,
            "zero-copy sends {} vs probe send_zc={}",
            w.zero_copy_sends,
            f.send_zc
        );
        stop(shutdown, handles);
    }
}
