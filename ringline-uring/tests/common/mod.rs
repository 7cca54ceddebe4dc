//! Shared helpers of the integration tests: an owning completion sink, a watchdog, and loops that
//! park the driver until a condition holds.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringline_core::buf::{PartMemory, SendBuf, SendPart};
use ringline_core::config::Config;
use ringline_core::driver::{
    AlignedBuf, Completion, CompletionSink, ConnKey, DiskKey, Driver, FileBuf, NvmeError, UdpKey,
};
use ringline_uring::UringDriver;

/// An owned copy of one completion.
#[derive(Debug)]
pub enum Event {
    Recv(ConnKey, Vec<u8>),
    RecvEnd(ConnKey, Result<(), io::ErrorKind>),
    RecvStarved(ConnKey),
    Sent(ConnKey, usize, Result<usize, io::ErrorKind>),
    Connected(ConnKey, Result<SocketAddr, io::ErrorKind>),
    Closed(ConnKey),
    Datagram(UdpKey, Vec<u8>, SocketAddr, bool),
    UdpError(UdpKey, io::ErrorKind),
    UdpSent(UdpKey, usize, Result<usize, io::ErrorKind>),
    UdpClosed(UdpKey),
    File(DiskKey, Result<usize, io::ErrorKind>, Option<FileBuf>, Option<std::os::fd::OwnedFd>),
    Nvme(DiskKey, Result<(), NvmeError>, Option<AlignedBuf>),
}

/// Collects owned copies of every completion.
#[derive(Default)]
pub struct TestSink {
    pub events: Vec<Event>,
    /// Keep the buffers of `recv_owned` (as the core does with an empty accumulator) instead of
    /// copying and handing them back.
    pub keep_owned: bool,
    /// Buffers kept by `recv_owned`.
    pub owned_kept: usize,
}

impl CompletionSink for TestSink {
    fn complete(&mut self, c: Completion<'_>) {
        let e = match c {
            Completion::Recv { conn, data } => Event::Recv(conn, data.to_vec()),
            Completion::RecvEnd { conn, result } => Event::RecvEnd(conn, result.map_err(|e| e.kind())),
            Completion::RecvStarved { conn } => Event::RecvStarved(conn),
            Completion::Sent { conn, buf, result } => {
                Event::Sent(conn, buf.total_len(), result.map_err(|e| e.kind()))
            }
            Completion::Connected { conn, result } => Event::Connected(conn, result.map_err(|e| e.kind())),
            Completion::Closed { conn } => Event::Closed(conn),
            Completion::Datagram { sock, data, peer, truncated } => {
                Event::Datagram(sock, data.to_vec(), peer, truncated)
            }
            Completion::UdpError { sock, error } => Event::UdpError(sock, error.kind()),
            Completion::UdpSent { sock, buf, result } => {
                Event::UdpSent(sock, buf.total_len(), result.map_err(|e| e.kind()))
            }
            Completion::UdpClosed { sock } => Event::UdpClosed(sock),
            Completion::File { key, result, buf, fd } => {
                Event::File(key, result.map_err(|e| e.kind()), buf, fd)
            }
            Completion::Nvme { key, result, buf } => Event::Nvme(key, result, buf),
        };
        self.events.push(e);
    }

    fn recv_owned(&mut self, conn: ConnKey, data: Vec<u8>) -> Option<Vec<u8>> {
        if !self.keep_owned {
            self.complete(Completion::Recv { conn, data: &data });
            return Some(data);
        }
        self.owned_kept += 1;
        self.events.push(Event::Recv(conn, data));
        None
    }
}

impl TestSink {
    /// All bytes received on `key`, in order.
    pub fn received(&self, key: ConnKey) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.events {
            if let Event::Recv(k, d) = e {
                if *k == key {
                    out.extend_from_slice(d);
                }
            }
        }
        out
    }

    pub fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

/// Aborts the whole test process if the guard is not dropped within `secs`.
pub struct Watchdog(Arc<AtomicBool>);

pub fn watchdog(name: &'static str, secs: u64) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if d.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("watchdog: test `{name}` exceeded {secs}s; aborting");
        std::process::abort();
    });
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Parks (10 ms at a time) until `pred` holds; panics after `limit`. Returns the number of parks.
pub fn park_until(
    d: &mut UringDriver,
    sink: &mut TestSink,
    limit: Duration,
    mut pred: impl FnMut(&TestSink) -> bool,
) -> usize {
    let deadline = Instant::now() + limit;
    let mut parks = 0;
    while !pred(sink) {
        assert!(Instant::now() < deadline, "condition not reached in {limit:?}; events: {:?}", summary(sink));
        d.park(Some(Duration::from_millis(10)), sink).expect("park");
        parks += 1;
    }
    parks
}

fn summary(sink: &TestSink) -> Vec<String> {
    sink.events
        .iter()
        .rev()
        .take(20)
        .map(|e| match e {
            Event::Recv(k, d) => format!("Recv({k:?}, {} bytes)", d.len()),
            other => format!("{other:?}"),
        })
        .collect()
}

/// A driver with `cfg`.
pub fn driver(cfg: &Config) -> UringDriver {
    UringDriver::new(cfg, 0).expect("io_uring driver")
}

/// A connected pair: (accepted server side, non-blocking; client side, blocking).
pub fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (server, client)
}

pub fn key(index: u32) -> ConnKey {
    ConnKey { index, generation: 1 }
}

/// Deterministic test bytes.
pub fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i + seed) % 251) as u8).collect()
}

/// A `SendBuf` of `data` cut into parts of `part` bytes.
pub fn send_buf(data: &[u8], part: usize) -> SendBuf {
    let mut b = SendBuf::new();
    for chunk in data.chunks(part) {
        b.push(SendPart { memory: PartMemory::Heap(chunk.to_vec()), start: 0, end: chunk.len() });
    }
    b
}

/// Number of open descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Makes `s` reset the connection when dropped.
pub fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `l` is a live linger struct of the size passed; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}
