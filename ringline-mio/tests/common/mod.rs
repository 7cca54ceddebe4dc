//! Shared helpers of the integration tests: a recording sink, a watchdog, socket pairs.
#![allow(dead_code)]

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringline_core::buf::{PartMemory, SendBuf, SendPart};
use ringline_core::config::Config;
use ringline_core::driver::{
    AlignedBuf, Completion, CompletionSink, ConnKey, DiskKey, Driver, FileBuf, NvmeError, UdpKey,
};
use ringline_mio::MioDriver;

/// An owned copy of one completion.
#[derive(Debug)]
pub(crate) enum Ev {
    Recv(ConnKey, Vec<u8>),
    RecvEnd(ConnKey, io::Result<()>),
    RecvStarved(ConnKey),
    Sent(ConnKey, SendBuf, io::Result<usize>),
    Connected(ConnKey, io::Result<SocketAddr>),
    Closed(ConnKey),
    Datagram(UdpKey, Vec<u8>, SocketAddr, bool),
    UdpError(UdpKey, io::Error),
    UdpSent(UdpKey, SendBuf, io::Result<usize>),
    UdpClosed(UdpKey),
    File(DiskKey, io::Result<usize>, Option<FileBuf>, Option<std::os::fd::OwnedFd>),
    Nvme(DiskKey, Result<(), NvmeError>, Option<AlignedBuf>),
}

/// Records every completion it is given.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub(crate) evs: Vec<Ev>,
}

impl CompletionSink for Sink {
    fn complete(&mut self, c: Completion<'_>) {
        self.evs.push(match c {
            Completion::Recv { conn, data } => Ev::Recv(conn, data.to_vec()),
            Completion::RecvEnd { conn, result } => Ev::RecvEnd(conn, result),
            Completion::RecvStarved { conn } => Ev::RecvStarved(conn),
            Completion::Sent { conn, buf, result } => Ev::Sent(conn, buf, result),
            Completion::Connected { conn, result } => Ev::Connected(conn, result),
            Completion::Closed { conn } => Ev::Closed(conn),
            Completion::Datagram { sock, data, peer, truncated } => {
                Ev::Datagram(sock, data.to_vec(), peer, truncated)
            }
            Completion::UdpError { sock, error } => Ev::UdpError(sock, error),
            Completion::UdpSent { sock, buf, result } => Ev::UdpSent(sock, buf, result),
            Completion::UdpClosed { sock } => Ev::UdpClosed(sock),
            Completion::File { key, result, buf, fd } => Ev::File(key, result, buf, fd),
            Completion::Nvme { key, result, buf } => Ev::Nvme(key, result, buf),
        });
    }
}

impl Sink {
    /// Concatenated received bytes of `k`.
    pub(crate) fn bytes(&self, k: ConnKey) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.evs {
            if let Ev::Recv(c, d) = e {
                if *c == k {
                    out.extend_from_slice(d);
                }
            }
        }
        out
    }
    /// Number of events of `k` matching `f`.
    pub(crate) fn count(&self, k: ConnKey, f: impl Fn(&Ev) -> bool) -> usize {
        self.evs.iter().filter(|e| key_of(e) == k && f(e)).count()
    }
    /// The `RecvEnd` results of `k`.
    pub(crate) fn recv_ends(&self, k: ConnKey) -> Vec<&io::Result<()>> {
        self.evs
            .iter()
            .filter_map(|e| match e {
                Ev::RecvEnd(c, r) if *c == k => Some(r),
                _ => None,
            })
            .collect()
    }
    /// The `Sent` results of `k`.
    pub(crate) fn sents(&self, k: ConnKey) -> Vec<&io::Result<usize>> {
        self.evs
            .iter()
            .filter_map(|e| match e {
                Ev::Sent(c, _, r) if *c == k => Some(r),
                _ => None,
            })
            .collect()
    }
    /// The `Connected` results of `k`.
    pub(crate) fn connecteds(&self, k: ConnKey) -> Vec<&io::Result<SocketAddr>> {
        self.evs
            .iter()
            .filter_map(|e| match e {
                Ev::Connected(c, r) if *c == k => Some(r),
                _ => None,
            })
            .collect()
    }
    /// Number of `Closed` for `k`.
    pub(crate) fn closed(&self, k: ConnKey) -> usize {
        self.count(k, |e| matches!(e, Ev::Closed(_)))
    }
}

/// The key an event is about.
pub(crate) fn key_of(e: &Ev) -> ConnKey {
    match e {
        Ev::Recv(k, _)
        | Ev::RecvEnd(k, _)
        | Ev::RecvStarved(k)
        | Ev::Sent(k, _, _)
        | Ev::Connected(k, _)
        | Ev::Closed(k) => *k,
        Ev::Datagram(k, ..) | Ev::UdpError(k, _) | Ev::UdpSent(k, ..) | Ev::UdpClosed(k) => {
            ConnKey { index: k.index, generation: k.generation }
        }
        Ev::File(k, ..) | Ev::Nvme(k, ..) => ConnKey { index: k.index, generation: k.generation },
    }
}

/// Kills the test process if it is still alive after `secs` (dropping the guard disarms it).
pub(crate) struct Watchdog(Option<mpsc::Sender<()>>);

pub(crate) fn watchdog(secs: u64) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
            eprintln!("watchdog: test still running after {secs} s, aborting");
            std::process::exit(101);
        }
    });
    Watchdog(Some(tx))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A driver with `chunk`-byte reads.
pub(crate) fn driver_with_chunk(chunk: usize) -> MioDriver {
    let cfg = Config::builder().recv_buffers(16, chunk).build().unwrap();
    MioDriver::new(&cfg, 0).unwrap()
}

/// A driver with the default configuration.
pub(crate) fn driver() -> MioDriver {
    MioDriver::new(&Config::default(), 0).unwrap()
}

/// A key for slot `index`, generation 1.
pub(crate) fn key(index: u32) -> ConnKey {
    ConnKey { index, generation: 1 }
}

/// A connected loopback pair: (our end, non-blocking; the peer's end, blocking).
pub(crate) fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    (ours, peer)
}

/// A heap part holding `v`.
pub(crate) fn heap(v: Vec<u8>) -> SendPart {
    let end = v.len();
    SendPart { memory: PartMemory::Heap(v), start: 0, end }
}

/// A `SendBuf` of heap parts.
pub(crate) fn send_buf(parts: Vec<Vec<u8>>) -> SendBuf {
    let mut b = SendBuf::new();
    for p in parts {
        b.push(heap(p));
    }
    b
}

/// Parks (at most 50 ms each time) until `done` holds; panics after `limit`.
pub(crate) fn park_until(
    d: &mut MioDriver,
    sink: &mut Sink,
    limit: Duration,
    mut done: impl FnMut(&Sink) -> bool,
) {
    let end = Instant::now() + limit;
    while !done(sink) {
        assert!(Instant::now() < end, "condition not reached in {limit:?}; events: {:?}", sink.evs);
        d.park(Some(Duration::from_millis(50)), sink).unwrap();
    }
}

/// Parks `n` times with a short timeout.
pub(crate) fn park_some(d: &mut MioDriver, sink: &mut Sink, n: usize) {
    for _ in 0..n {
        d.park(Some(Duration::from_millis(10)), sink).unwrap();
    }
}

/// `SO_LINGER {on, 0}` on a std stream, so dropping it sends RST.
pub(crate) fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: the fd is open for the borrow of `s`; `l` is a live `struct linger` of the given size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Byte `i` of the test pattern.
pub(crate) fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}
