//! Files and NVMe commands on the io_uring driver itself: native open/write/read/statx/close
//! keyed by `DiskKey`, a stale `Kind::File` completion never reported, and an NVMe passthrough
//! command on the `SQE128` ring that wakes the main ring through its poll (a regular file
//! refuses `URING_CMD`, so the command fails with an errno, never `Ok`).

mod common;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use common::{Event, TestSink, driver, park_until, watchdog};
use ringline_core::config::Config;
use ringline_core::driver::{AlignedBuf, DiskKey, Driver, FileBuf, FileOp, NvmeError, NvmeOp, Op, OpenFlags};

fn dkey(index: u32) -> DiskKey {
    DiskKey { index, generation: 3 }
}

/// Submits `op` under `key` and parks until its completion; returns it.
fn run(d: &mut ringline_uring::UringDriver, key: DiskKey, op: FileOp) -> Event {
    let mut sink = TestSink::default();
    d.submit(Op::File { key, op }).expect("submit");
    park_until(d, &mut sink, Duration::from_secs(5), |s| !s.events.is_empty());
    assert_eq!(sink.events.len(), 1, "{:?}", sink.events);
    sink.events.pop().unwrap()
}

fn temp_file(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("uring-disk-{}-{name}", std::process::id()))
}

#[test]
fn open_write_read_statx_close_round_trip() {
    let _w = watchdog("open_write_read_statx_close_round_trip", 30);
    let mut d = driver(&Config::default());
    let path = temp_file("rt");
    let flags = OpenFlags { read: true, write: true, create: true, truncate: true, direct: false };
    let fd = match run(&mut d, dkey(0), FileOp::Open { path: path.clone(), flags }) {
        Event::File(k, Ok(0), None, Some(fd)) if k == dkey(0) => Arc::new(fd),
        other => panic!("open: {other:?}"),
    };
    let data = b"io_uring file".to_vec();
    let write = FileOp::Write { fd: fd.clone(), buf: FileBuf::Vec(data.clone()), offset: 5 };
    assert!(
        matches!(run(&mut d, dkey(1), write), Event::File(k, Ok(13), Some(FileBuf::Vec(_)), None) if k == dkey(1))
    );
    let size = run(&mut d, dkey(2), FileOp::Size { fd: fd.clone() });
    assert!(matches!(size, Event::File(_, Ok(18), None, None)), "{size:?}");
    let read = FileOp::Read { fd: fd.clone(), buf: FileBuf::Vec(vec![0; 32]), offset: 5 };
    match run(&mut d, dkey(3), read) {
        Event::File(_, Ok(13), Some(FileBuf::Vec(v)), None) => assert_eq!(&v[..13], &data[..]),
        other => panic!("read: {other:?}"),
    }
    let sync = run(&mut d, dkey(4), FileOp::Sync { fd: fd.clone(), data_only: true });
    assert!(matches!(sync, Event::File(_, Ok(0), None, None)), "{sync:?}");
    let fd = Arc::try_unwrap(fd).expect("every operation returned its reference");
    let close = run(&mut d, dkey(5), FileOp::Close { fd });
    assert!(matches!(close, Event::File(_, Ok(0), None, None)), "{close:?}");
    let missing_flags = OpenFlags { read: true, ..OpenFlags::default() };
    let missing = FileOp::Open { path: path.with_extension("missing"), flags: missing_flags };
    let missing = run(&mut d, dkey(6), missing);
    assert!(matches!(missing, Event::File(_, Err(std::io::ErrorKind::NotFound), None, None)), "{missing:?}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn nvme_command_on_a_file_fails_with_an_errno_and_returns_its_buffer() {
    let _w = watchdog("nvme_command_on_a_file_fails_with_an_errno_and_returns_its_buffer", 30);
    let cfg = Config::builder().nvme(true).build().unwrap();
    let mut d = driver(&cfg);
    assert!(d.capabilities().nvme);
    let path = temp_file("nvme");
    std::fs::write(&path, [0u8; 4096]).unwrap();
    let fd: OwnedFd = std::fs::File::open(&path).unwrap().into();
    let op = NvmeOp::Read { fd: Arc::new(fd), nsid: 1, lba: 0, blocks: 1, buf: AlignedBuf::zeroed(4096) };
    let mut sink = TestSink::default();
    d.submit(Op::Nvme { key: dkey(9), op }).expect("submit");
    park_until(&mut d, &mut sink, Duration::from_secs(5), |s| !s.events.is_empty());
    match &sink.events[..] {
        [Event::Nvme(k, Err(NvmeError::Io(e)), Some(buf))] => {
            assert_eq!(*k, dkey(9));
            assert_eq!(buf.len(), 4096);
            assert!(e.raw_os_error().is_some(), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn nvme_without_the_config_is_answered_not_dropped() {
    let mut d = driver(&Config::default());
    let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let mut sink = TestSink::default();
    d.submit(Op::Nvme { key: dkey(1), op: NvmeOp::Flush { fd: Arc::new(fd), nsid: 1 } }).unwrap();
    park_until(&mut d, &mut sink, Duration::from_secs(5), |s| !s.events.is_empty());
    assert!(matches!(&sink.events[..], [Event::Nvme(_, Err(NvmeError::Io(_)), None)]), "{:?}", sink.events);
}

#[test]
fn a_second_operation_on_a_busy_disk_slot_is_answered_without_touching_the_first() {
    let _w = watchdog("a_second_operation_on_a_busy_disk_slot_is_answered_without_touching_the_first", 30);
    let mut d = driver(&Config::default());
    // A FIFO read stays in flight until someone writes.
    let fifo = temp_file("busy-fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY:
    // - `c` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let rw = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let fd = Arc::new(OwnedFd::from(rw.try_clone().unwrap()));
    let read = |fd: &Arc<OwnedFd>| FileOp::Read { fd: fd.clone(), buf: FileBuf::Vec(vec![0; 8]), offset: 0 };
    let mut sink = TestSink::default();
    d.submit(Op::File { key: dkey(4), op: read(&fd) }).unwrap();
    d.submit(Op::File { key: dkey(4), op: read(&fd) }).unwrap();
    park_until(&mut d, &mut sink, Duration::from_secs(5), |s| !s.events.is_empty());
    assert!(
        matches!(&sink.events[..], [Event::File(_, Err(std::io::ErrorKind::AlreadyExists), Some(_), None)]),
        "{:?}",
        sink.events
    );
    use std::io::Write;
    (&rw).write_all(b"12345678").unwrap();
    park_until(&mut d, &mut sink, Duration::from_secs(5), |s| s.events.len() == 2);
    match &sink.events[1] {
        Event::File(k, Ok(8), Some(FileBuf::Vec(v)), None) => {
            assert_eq!((*k, &v[..]), (dkey(4), &b"12345678"[..]))
        }
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_file(&fifo);
}
