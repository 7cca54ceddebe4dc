//! Core disk logic over `MockDriver`: file round trip through the disk table, FIFO admission
//! under `disk_ops_in_flight`, the 4096 fallback when the backend reports no direct I/O
//! alignment, alignment errors before submission, and NVMe refused where the backend has none.
#![cfg(feature = "testing")]

mod common;

use common::{Hooks, Log, WAIT, cfg, start, wait_for, watchdog};
use ringline_core::disk::{AlignedBuf, DirectIoFile, NvmeDevice, fs};
use ringline_core::{Error, join_all};

fn temp(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mock-disk-{}-{name}", std::process::id()))
}

/// Runs `body` as the worker's `on_start` and returns what it logged.
fn run_on_mock<F, Fut>(
    builder: ringline_core::ConfigBuilder,
    body: F,
) -> (Vec<String>, ringline_core::WorkerMetrics)
where
    F: FnOnce(Log<String>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let log: Log<String> = Log::default();
    let (l, done) = (log.clone(), log.clone());
    let rt = start(builder, move || Hooks {
        start: Some(Box::new(move || {
            Box::pin(async move {
                body(l.clone()).await;
                l.push("done".into());
            })
        })),
        ..Hooks::default()
    });
    assert!(wait_for(WAIT, || done.get().iter().any(|s| s == "done")), "task finished: {:?}", done.get());
    let m = rt.stop();
    (log.get(), m)
}

#[test]
fn many_operations_wait_fifo_and_all_complete() {
    let _w = watchdog("many_operations_wait_fifo_and_all_complete");
    let path = temp("fifo");
    let p = path.clone();
    let (log, m) = run_on_mock(cfg().disk_ops_in_flight(2), move |log| async move {
        let f = fs::File::create(&p).await.expect("create");
        let writes = (0..20u8).map(|i| f.write_at(vec![i; 10], u64::from(i) * 10));
        let results = join_all(writes).await;
        log.push(format!("writes ok: {}", results.iter().filter(|(r, _)| matches!(r, Ok(10))).count()));
        let (n, buf) = f.read_at(vec![0; 200], 0).await;
        let ok =
            n.ok() == Some(200) && buf.chunks(10).enumerate().all(|(i, c)| c.iter().all(|&b| b == i as u8));
        log.push(format!("read back: {ok}"));
        log.push(format!("len: {:?}", f.len().await.ok()));
        f.close().await.expect("close");
    });
    let _ = std::fs::remove_file(&path);
    assert!(log.contains(&"writes ok: 20".to_string()), "{log:?}");
    assert!(log.contains(&"read back: true".to_string()), "{log:?}");
    assert!(log.contains(&"len: Some(200)".to_string()), "{log:?}");
    assert_eq!(m.disk_ops_in_flight, 0);
    assert_eq!(m.disk_ops, 1 + 20 + 1 + 1 + 1, "create, 20 writes, read, len, close");
}

#[test]
fn direct_io_falls_back_to_4096_and_checks_alignment_before_submitting() {
    let _w = watchdog("direct_io_falls_back_to_4096_and_checks_alignment_before_submitting");
    let path = temp("direct");
    let p = path.clone();
    let (log, m) = run_on_mock(cfg(), move |log| async move {
        let f = DirectIoFile::create(&p).await.expect("create");
        log.push(format!("alignment {}", f.alignment()));
        let (r, buf) = f.write_at(AlignedBuf::zeroed(4096), 512).await;
        log.push(format!("offset: {}", matches!(r, Err(Error::InvalidInput(_)))));
        log.push(format!("buffer back: {}", buf.len()));
        let (r, _) = f.write_at(AlignedBuf::zeroed(4096), 0).await;
        log.push(format!("aligned write: {:?}", r.ok()));
    });
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        log[..4],
        ["alignment 4096", "offset: true", "buffer back: 4096", "aligned write: Some(4096)"]
    );
    assert_eq!(
        m.disk_ops, 3,
        "create, alignment query, one aligned write: the misaligned one never went out"
    );
}

#[test]
fn nvme_is_unsupported_without_backend_support() {
    let _w = watchdog("nvme_is_unsupported_without_backend_support");
    let (log, _) = run_on_mock(cfg().nvme(true), |log| async move {
        let r = NvmeDevice::open("/dev/ng0n1", 1).await;
        log.push(format!("{:?}", r.map(|d| d.lba_size())));
    });
    assert_eq!(log[0], "Err(Unsupported(\"NVMe passthrough needs the io_uring backend\"))");
}
