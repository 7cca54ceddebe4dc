//! Files and disk I/O through the facade (API section 15): a 64 MiB `DirectIoFile` round trip,
//! an `fs::File` round trip, typed alignment errors before any syscall, a dropped read that the
//! runtime keeps until its completion, more operations than `disk_ops_in_flight` (FIFO wait),
//! and the NVMe refusals (`Unsupported` on mio, `NotConfigured` without `nvme(true)`) plus a
//! hardware smoke test. Runs on whichever backend the build and `RINGLINE_BACKEND` select.

mod common;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Watchdog, backend_label, client_runtime, config, on_worker, record_skip, settle, stop};
use ringline::{AlignedBuf, Backend, DirectIoFile, Error, NvmeDevice, fs, join_all, select, sleep};

const MIB: usize = 1 << 20;

/// A fresh path under `dir` unique to this process and call.
fn temp_path(dir: &Path, name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("ringline-disk-{}-{n}-{name}", std::process::id()))
}

/// A directory whose filesystem accepts `O_DIRECT`: the target's tmp dir, then `/tmp`, `/var/tmp`.
fn direct_io_dir() -> Option<PathBuf> {
    let candidates = [PathBuf::from(env!("CARGO_TARGET_TMPDIR")), "/tmp".into(), "/var/tmp".into()];
    candidates.into_iter().find(|dir| {
        let probe = temp_path(dir, "probe");
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    })
}

fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 12)) as u8
}

fn disk_metrics(shutdown: &ringline::ShutdownHandle) -> (u64, u64) {
    let w = &shutdown.metrics().workers[0];
    (w.disk_ops, w.disk_ops_in_flight)
}

#[test]
fn direct_io_round_trip_of_64_mib() {
    let _w = Watchdog::new("direct_io_round_trip_of_64_mib", 120);
    let Some(dir) = direct_io_dir() else {
        record_skip("SKIPPED: direct_io_round_trip_of_64_mib needs a filesystem with O_DIRECT");
        return;
    };
    let path = temp_path(&dir, "direct");
    let (shutdown, handles) = client_runtime(config());
    let p = path.clone();
    let result = on_worker(&shutdown, move || async move {
        let f = DirectIoFile::create(&p).await?;
        let align = f.alignment();
        assert!(align.is_power_of_two() && align <= 4096, "alignment {align}");
        let chunk = 4 * MIB;
        for off in (0..64 * MIB).step_by(chunk) {
            let mut buf = AlignedBuf::zeroed(chunk);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = byte_at(off + i);
            }
            let (n, buf) = f.write_at(buf, off as u64).await;
            assert_eq!(n?, chunk);
            assert_eq!(buf.len(), chunk, "the buffer comes back whole");
        }
        f.sync_data().await?;
        assert_eq!(f.len().await?, 64 * MIB as u64);
        let mut buf = AlignedBuf::zeroed(chunk);
        for off in (0..64 * MIB).step_by(chunk) {
            let (n, back) = f.read_at(buf, off as u64).await;
            assert_eq!(n?, chunk);
            let bad = back.iter().enumerate().position(|(i, &b)| b != byte_at(off + i));
            assert_eq!(bad, None, "first wrong byte in the chunk at {off}");
            buf = back;
        }
        // Reading past the end is a short (zero) count, not an error.
        let (n, _) = f.read_at(buf, 64 * MIB as u64).await;
        assert_eq!(n?, 0);
        f.close().await?;
        Ok::<(), Error>(())
    });
    stop(shutdown, handles);
    let _ = std::fs::remove_file(&path);
    result.unwrap_or_else(|e| panic!("direct I/O on {}: {e}", backend_label()));
}

#[test]
fn fs_file_round_trip() {
    let _w = Watchdog::new("fs_file_round_trip", 60);
    let path = temp_path(Path::new(env!("CARGO_TARGET_TMPDIR")), "fs");
    let (shutdown, handles) = client_runtime(config());
    let p = path.clone();
    let result = on_worker(&shutdown, move || async move {
        let f = fs::File::create(&p).await?;
        let (n, buf) = f.write_at(b"hello, ".to_vec(), 0).await;
        assert_eq!((n?, buf.as_slice()), (7, &b"hello, "[..]));
        let (n, _) = f.write_at(b"disk".to_vec(), 7).await;
        assert_eq!(n?, 4);
        f.sync_all().await?;
        assert_eq!(f.len().await?, 11);
        f.close().await?;

        let f = fs::File::open(&p).await?;
        let (n, buf) = f.read_at(vec![0; 64], 0).await;
        assert_eq!(n?, 11, "short count at end of file");
        assert_eq!(&buf[..11], b"hello, disk");
        assert_eq!(buf.len(), 64, "the buffer keeps its length");
        let (n, buf) = f.read_at(vec![0; 4], 7).await;
        assert_eq!((n?, buf.as_slice()), (4, &b"disk"[..]));
        f.close().await?;

        let missing = fs::File::open(p.with_extension("missing")).await;
        assert!(
            matches!(&missing, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound),
            "{missing:?}"
        );
        Ok::<(), Error>(())
    });
    stop(shutdown, handles);
    let on_disk = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    result.unwrap_or_else(|e| panic!("fs::File on {}: {e}", backend_label()));
    assert_eq!(on_disk.unwrap(), b"hello, disk");
}

#[test]
fn misaligned_direct_io_is_a_typed_error_before_any_syscall() {
    let _w = Watchdog::new("misaligned_direct_io_is_a_typed_error_before_any_syscall", 60);
    let Some(dir) = direct_io_dir() else {
        record_skip("SKIPPED: misaligned_direct_io_is_a_typed_error_before_any_syscall needs O_DIRECT");
        return;
    };
    let path = temp_path(&dir, "misaligned");
    let (shutdown, handles) = client_runtime(config());
    let p = path.clone();
    let result = on_worker(&shutdown, move || async move {
        let f = DirectIoFile::create(&p).await?;
        let align = f.alignment();
        // Let the worker publish its counters (it does so before parking).
        sleep(Duration::from_millis(20)).await;
        let before = ringline::metrics().expect("on a worker").disk_ops;
        let expect_invalid = |r: Result<usize, Error>, what: &str| match r {
            Err(Error::InvalidInput(msg)) => assert!(msg.contains("alignment"), "{what}: {msg}"),
            other => panic!("{what}: expected InvalidInput, got {other:?}"),
        };
        let (r, buf) = f.write_at(AlignedBuf::zeroed(align), 1).await;
        expect_invalid(r, "offset");
        assert_eq!(buf.len(), align, "the buffer comes back");
        let (r, _) = f.read_at(AlignedBuf::zeroed(align + 1), 0).await;
        expect_invalid(r, "length");
        let (r, _) = f.read_at(AlignedBuf::zeroed(100), align as u64).await;
        expect_invalid(r, "length");
        // Give the metrics a park to publish in, then check nothing reached the backend.
        sleep(Duration::from_millis(20)).await;
        let after = ringline::metrics().expect("on a worker").disk_ops;
        assert_eq!(after, before, "misaligned requests were not submitted");
        f.close().await?;
        Ok::<(), Error>(())
    });
    stop(shutdown, handles);
    let _ = std::fs::remove_file(&path);
    result.unwrap_or_else(|e| panic!("on {}: {e}", backend_label()));
}

/// 1. A read on an empty FIFO is started, then dropped when a timer wins the `select`.
/// 2. The runtime keeps the operation (and its buffer) outstanding: `disk_ops_in_flight == 1`.
/// 3. Bytes written into the FIFO complete the read; the runtime frees the buffer and the gauge
///    returns to 0; later operations work.
#[test]
fn a_dropped_read_keeps_its_buffer_until_the_completion() {
    let _w = Watchdog::new("a_dropped_read_keeps_its_buffer_until_the_completion", 60);
    let fifo = temp_path(Path::new(env!("CARGO_TARGET_TMPDIR")), "fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY:
    // - `c` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let (shutdown, handles) = client_runtime(config());
    let p = fifo.clone();
    let dropped = on_worker(&shutdown, move || async move {
        // O_RDWR: the open does not wait for a writer.
        let f = fs::File::open(&p).await?;
        let read = f.read_at(vec![0; 4096], 0);
        let timer = sleep(Duration::from_millis(50));
        let timer_won = matches!(select(Box::pin(read), timer).await, ringline::Either::Right(()));
        // The in-flight read holds its own reference to the descriptor: dropping the file
        // now must not close the fd under it.
        drop(f);
        Ok::<bool, Error>(timer_won)
    })
    .unwrap_or_else(|e| panic!("on {}: {e}", backend_label()));
    assert!(dropped, "the read must still be pending when the timer fires");
    let ops_before = disk_metrics(&shutdown).0;
    assert!(
        settle(5, || disk_metrics(&shutdown).1 == 1),
        "the dropped read stays in flight on {}",
        backend_label()
    );
    std::fs::OpenOptions::new().write(true).open(&fifo).unwrap().write_all(b"late data").unwrap();
    assert!(
        settle(5, || disk_metrics(&shutdown).1 == 0 && disk_metrics(&shutdown).0 > ops_before),
        "the read completed and was released on {}: {:?}",
        backend_label(),
        disk_metrics(&shutdown)
    );
    let p = fifo.clone();
    let again = on_worker(&shutdown, move || async move {
        let f = fs::File::open(&p).await?;
        f.close().await
    });
    stop(shutdown, handles);
    let _ = std::fs::remove_file(&fifo);
    again.unwrap_or_else(|e| panic!("runtime still works on {}: {e}", backend_label()));
}

#[test]
fn more_operations_than_disk_ops_in_flight_all_complete() {
    let _w = Watchdog::new("more_operations_than_disk_ops_in_flight_all_complete", 60);
    let path = temp_path(Path::new(env!("CARGO_TARGET_TMPDIR")), "many");
    let (shutdown, handles) = client_runtime(config().disk_ops_in_flight(4));
    let p = path.clone();
    const OPS: usize = 64;
    let result = on_worker(&shutdown, move || async move {
        let f = fs::File::create(&p).await?;
        let writes = (0..OPS).map(|i| f.write_at(vec![i as u8; 1000], (i * 1000) as u64));
        for (i, (r, _)) in join_all(writes).await.into_iter().enumerate() {
            assert_eq!(r?, 1000, "write {i}");
        }
        let reads = (0..OPS).map(|i| f.read_at(vec![0xFF; 1000], (i * 1000) as u64));
        for (i, (r, buf)) in join_all(reads).await.into_iter().enumerate() {
            assert_eq!(r?, 1000, "read {i}");
            assert!(buf.iter().all(|&b| b == i as u8), "read {i} got another write's bytes");
        }
        f.close().await?;
        Ok::<(), Error>(())
    });
    let handle = shutdown.clone();
    stop(shutdown, handles);
    // The worker publishes its counters once more when it stops.
    let (ops, in_flight) = disk_metrics(&handle);
    let _ = std::fs::remove_file(&path);
    result.unwrap_or_else(|e| panic!("on {}: {e}", backend_label()));
    assert!(ops >= 2 * OPS as u64 + 2, "disk_ops counted every operation: {ops}");
    assert_eq!(in_flight, 0);
}

#[test]
fn nvme_open_is_refused_with_a_typed_error_where_it_cannot_run() {
    let _w = Watchdog::new("nvme_open_is_refused_with_a_typed_error_where_it_cannot_run", 60);
    let (shutdown, handles) = client_runtime(config());
    let (backend, result) = on_worker(&shutdown, || async {
        (ringline::backend(), NvmeDevice::open("/dev/ng0n1", 1).await.map(|d| d.lba_size()))
    });
    stop(shutdown, handles);
    match backend {
        Some(Backend::Mio) => assert!(
            matches!(result, Err(Error::Unsupported(m)) if m == "NVMe passthrough needs the io_uring backend"),
            "{result:?}"
        ),
        Some(Backend::Uring) => {
            assert!(matches!(result, Err(Error::NotConfigured("nvme"))), "{result:?}")
        }
        other => panic!("unexpected backend {other:?}"),
    }
}

#[test]
fn nvme_smoke_read_where_a_device_exists() {
    let _w = Watchdog::new("nvme_smoke_read_where_a_device_exists", 60);
    let device = std::fs::read_dir("/dev").ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ng")))
    });
    let (shutdown, handles) = client_runtime(config().nvme(true));
    let (backend, result) = on_worker(&shutdown, move || async move {
        let backend = ringline::backend();
        let Some(dev) = device else { return (backend, None) };
        let r = async {
            let d = NvmeDevice::open(&dev, 1).await?;
            let (r, buf) = d.read(0, AlignedBuf::zeroed(d.lba_size())).await;
            r?;
            assert_eq!(buf.len(), d.lba_size());
            let (r, _) = d.read(0, AlignedBuf::zeroed(d.lba_size() + 1)).await;
            assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
            Ok::<(), Error>(())
        };
        (backend, Some(r.await))
    });
    stop(shutdown, handles);
    match (backend, result) {
        (Some(Backend::Uring), None) => record_skip(
            "SKIPPED: nvme_smoke_read_where_a_device_exists needs an NVMe generic char device /dev/ngXnY",
        ),
        (Some(Backend::Mio), _) => {
            record_skip("SKIPPED: nvme_smoke_read_where_a_device_exists needs the io_uring backend")
        }
        (_, Some(Err(Error::Io(e)))) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            record_skip("SKIPPED: nvme_smoke_read_where_a_device_exists needs permission to open /dev/ngXnY")
        }
        (_, Some(r)) => r.unwrap_or_else(|e| panic!("NVMe smoke read: {e}")),
        (b, None) => panic!("unexpected backend {b:?}"),
    }
}
