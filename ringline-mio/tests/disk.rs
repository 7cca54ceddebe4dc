//! Files on the mio driver: operations run off the worker thread (a plain thread here, the
//! blocking pool under a runtime) and their completion wakes `park` at once, never found by
//! its timeout; NVMe commands are answered `Unsupported` with their buffer.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Ev, Sink, driver, watchdog};
use ringline_core::driver::{AlignedBuf, DiskKey, Driver, FileBuf, FileOp, NvmeError, NvmeOp, Op, OpenFlags};

fn dkey(index: u32) -> DiskKey {
    DiskKey { index, generation: 1 }
}

#[test]
fn a_file_completion_wakes_park_before_its_timeout() {
    let _w = watchdog(30);
    let mut d = driver();
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mio-disk-{}", std::process::id()));
    std::fs::write(&path, b"0123456789").unwrap();
    let flags = OpenFlags { read: true, ..OpenFlags::default() };
    let mut sink = Sink::default();
    d.submit(Op::File { key: dkey(0), op: FileOp::Open { path: path.clone(), flags } }).unwrap();
    let start = Instant::now();
    while sink.evs.is_empty() {
        d.park(Some(Duration::from_secs(20)), &mut sink).unwrap();
        assert!(start.elapsed() < Duration::from_secs(10), "the wake came from the timeout");
    }
    let fd = match sink.evs.pop() {
        Some(Ev::File(k, Ok(0), None, Some(fd))) if k == dkey(0) => Arc::new(fd),
        other => panic!("{other:?}"),
    };
    let read = FileOp::Read { fd: fd.clone(), buf: FileBuf::Vec(vec![0; 4]), offset: 3 };
    d.submit(Op::File { key: dkey(1), op: read }).unwrap();
    while sink.evs.is_empty() {
        d.park(Some(Duration::from_secs(20)), &mut sink).unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(10), "the wake came from the timeout");
    match sink.evs.pop() {
        Some(Ev::File(_, Ok(4), Some(FileBuf::Vec(v)), None)) => assert_eq!(v, b"3456"),
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn nvme_is_unsupported_and_returns_the_buffer() {
    let mut d = driver();
    let fd: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let op = NvmeOp::Write { fd: Arc::new(fd), nsid: 1, lba: 0, blocks: 1, buf: AlignedBuf::zeroed(512) };
    d.submit(Op::Nvme { key: dkey(2), op }).unwrap();
    let mut sink = Sink::default();
    d.park(Some(Duration::ZERO), &mut sink).unwrap();
    match &sink.evs[..] {
        [Ev::Nvme(k, Err(NvmeError::Io(e)), Some(buf))] => {
            assert_eq!((*k, buf.len(), e.kind()), (dkey(2), 512, std::io::ErrorKind::Unsupported));
        }
        other => panic!("{other:?}"),
    }
}
