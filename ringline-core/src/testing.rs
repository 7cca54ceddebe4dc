//! [`MockDriver`]: an in-memory backend proving the core runs with no OS backend (feature
//! `testing`).
//!
//! Every connection is a pair of in-memory pipes kept in a [`MockNet`], a `Send + Sync` handle
//! shared between the test thread and the worker's driver. A test scripts the far end of each
//! connection through a [`MockPeer`]: push bytes, send FIN, reset, stall the write side, and read
//! back exactly what the server wrote.
//!
//! * **Inbound connections.** [`Op::Adopt`] carries a real `TcpStream`, so
//!   [`MockNet::connect_inbound`] makes a loopback pair with `std::net`, registers a pipe under
//!   the accepted stream's peer address and hands the accepted stream to the worker with
//!   [`WorkerHandle::hand_off`]. The driver uses the stream only as an identity token (it keeps it
//!   and drops it on `Close`); every byte flows through the pipe.
//! * **Outbound connections.** [`Op::Connect`] to an address registered with [`MockNet::listen`]
//!   succeeds (with a fake local address) and queues a peer for [`MockNet::accept`]; any other
//!   address fails with `ConnectionRefused`.
//! * **Time.** The core reads `Instant::now()` itself, so the clock is real: `park` sleeps on a
//!   condition variable until its timeout, an unpark, or activity on the net.
//! * **Hooks.** [`MockNet::refuse_next_submits`], [`MockNet::inject`] (completions for any key,
//!   stale ones included), [`MockNet::reorder_completions`], [`MockNet::set_recv_chunk`],
//!   [`MockNet::set_write_chunk`], [`MockNet::lend_recv_from`] (chunks delivered in owned buffers
//!   through [`CompletionSink::recv_owned`], as the io_uring backend lends its ring buffers).
//! * **Contract checks.** Operations the contract forbids (a second `Send` in flight, a second
//!   `Close`, operations on unknown keys, a slot reused before its `Closed`) are recorded in
//!   [`MockNet::violations`], which tests should assert empty.
//!
//! The driver finds its net through [`MockNet::install`] (thread-local, call it on the worker
//! thread before `run_worker`) or [`MockNet::install_global`]; without either it makes a private
//! one.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::buf::SendBuf;
use crate::config::Config;
use crate::driver::{
    BackendStats, Capabilities, Completion, CompletionSink, ConnKey, Driver, Op, SubmitError, Unpark,
};
use crate::error::Error;
use crate::runtime::handle::WorkerHandle;

mod disk;
mod udp;
pub use udp::SentDatagram;

/// Default size of the `Recv` chunks a peer's bytes are delivered in.
pub const DEFAULT_RECV_CHUNK: usize = 4096;

/// Most `Recv` chunks delivered per connection per `park` (so `RecvPause` can take effect).
const MAX_RECV_CHUNKS_PER_PARK: usize = 64;

thread_local! {
    static INSTALLED: RefCell<Option<MockNet>> = const { RefCell::new(None) };
}

static GLOBAL: Mutex<Option<MockNet>> = Mutex::new(None);

/// A completion a test asks the driver to deliver as-is at its next `park` (see
/// [`MockNet::inject`]); usually with a stale key, to check that the core drops it.
#[derive(Debug)]
pub enum Injected {
    /// `Completion::Recv`.
    Recv {
        /// The key to report.
        conn: ConnKey,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `CompletionSink::recv_owned`: the bytes in a buffer handed to the core.
    RecvOwned {
        /// The key to report.
        conn: ConnKey,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `Completion::RecvEnd`: `None` for FIN, else an error of this kind.
    RecvEnd {
        /// The key to report.
        conn: ConnKey,
        /// `None` = FIN.
        error: Option<io::ErrorKind>,
    },
    /// `Completion::Sent` with an empty buffer and `Ok(0)`.
    Sent {
        /// The key to report.
        conn: ConnKey,
    },
    /// `Completion::Connected` with a fake local address.
    Connected {
        /// The key to report.
        conn: ConnKey,
    },
    /// `Completion::Closed`.
    Closed {
        /// The key to report.
        conn: ConnKey,
    },
}

/// The far end of one mock connection, as the net sees it.
#[derive(Default)]
struct Pipe {
    /// The key the driver bound this pipe to (once adopted or connected).
    key: Option<ConnKey>,
    /// The worker whose driver owns the key.
    worker: Option<usize>,
    /// Bytes the peer sent, not yet delivered to the server.
    to_server: VecDeque<u8>,
    /// The peer sent FIN (delivered after `to_server` drained).
    fin: bool,
    /// The peer reset the connection.
    reset: bool,
    /// The peer accepts no written bytes.
    stalled: bool,
    /// Every byte the server wrote, in order.
    from_server: Vec<u8>,
    /// How far the peer has read `from_server`.
    read_pos: usize,
    /// The server sent FIN (`ShutdownWrite` or `Close`).
    server_fin: bool,
    /// The server closed the connection.
    closed: bool,
    /// The server closed with `abort`.
    aborted: bool,
    /// The client half of the loopback pair of an inbound connection, kept open.
    client: Option<TcpStream>,
}

#[derive(Default)]
struct NetState {
    /// Bumped on every event a parked driver must notice (unpark, peer activity, hooks).
    seq: u64,
    pipes: Vec<Pipe>,
    /// Accepted streams' peer addresses awaiting `Adopt`, to their pipes.
    inbound: HashMap<SocketAddr, usize>,
    /// Listening addresses, to pipes of outbound connections not yet accepted by the test.
    listeners: HashMap<SocketAddr, VecDeque<usize>>,
    /// Addresses whose connects never complete (until the core closes the key).
    blackholes: std::collections::HashSet<SocketAddr>,
    refuse: usize,
    refused: u64,
    injected: VecDeque<Injected>,
    recv_chunk: usize,
    /// Chunks of at least this many bytes go through `recv_owned`.
    lend_from: Option<usize>,
    /// Owned chunks the core kept / handed back.
    lent_kept: u64,
    lent_returned: u64,
    write_chunk: Option<usize>,
    reorder: bool,
    next_port: u16,
    violations: Vec<String>,
    closed_count: u64,
    udp: udp::UdpNet,
}

struct Inner {
    state: Mutex<NetState>,
    /// Wakes parked drivers.
    driver_cv: Condvar,
    /// Wakes test threads waiting on peers.
    peer_cv: Condvar,
    /// Serialises loopback connect + accept, so each accept returns its own connect.
    loopback: Mutex<Option<TcpListener>>,
}

/// The in-memory network of one or more [`MockDriver`]s. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct MockNet {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MockNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("MockNet").field("pipes", &st.pipes.len()).field("seq", &st.seq).finish()
    }
}

impl Default for MockNet {
    fn default() -> Self {
        MockNet::new()
    }
}

impl MockNet {
    /// An empty network.
    pub fn new() -> MockNet {
        let state = NetState { recv_chunk: DEFAULT_RECV_CHUNK, next_port: 40_000, ..NetState::default() };
        MockNet {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                driver_cv: Condvar::new(),
                peer_cv: Condvar::new(),
                loopback: Mutex::new(None),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state, then wakes parked drivers.
    fn poke<R>(&self, f: impl FnOnce(&mut NetState) -> R) -> R {
        let r = {
            let mut st = self.lock();
            let r = f(&mut st);
            st.seq += 1;
            r
        };
        self.inner.driver_cv.notify_all();
        self.inner.peer_cv.notify_all();
        r
    }

    /// Makes the next [`MockDriver`] built on this thread use this net.
    pub fn install(&self) {
        INSTALLED.with(|c| *c.borrow_mut() = Some(self.clone()));
    }

    /// Makes every [`MockDriver`] built on a thread without [`MockNet::install`] use this net
    /// (for runtimes that start their worker threads themselves). Process-wide: tests that use
    /// it must not run in parallel with each other.
    pub fn install_global(&self) {
        *GLOBAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.clone());
    }

    /// Removes the net set by [`MockNet::install_global`].
    pub fn uninstall_global() {
        *GLOBAL.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Opens an inbound connection to `worker`: a loopback pair is made, the accepted stream is
    /// handed to the worker as the connection's identity, and the returned peer scripts the far
    /// end.
    ///
    /// # Errors
    /// Loopback socket errors; `WouldBlock` when the worker's accept queue is full or the worker
    /// is gone.
    pub fn connect_inbound(&self, worker: &WorkerHandle) -> io::Result<MockPeer> {
        self.connect_inbound_with(worker, false)
    }

    /// Like [`MockNet::connect_inbound`], with the peer stalled from the start (see
    /// [`MockPeer::stall`]), so not even the server's first bytes are accepted.
    ///
    /// # Errors
    /// As [`MockNet::connect_inbound`].
    pub fn connect_inbound_stalled(&self, worker: &WorkerHandle) -> io::Result<MockPeer> {
        self.connect_inbound_with(worker, true)
    }

    fn connect_inbound_with(&self, worker: &WorkerHandle, stalled: bool) -> io::Result<MockPeer> {
        let (client, server) = {
            let mut lb = self.inner.loopback.lock().unwrap_or_else(|e| e.into_inner());
            if lb.is_none() {
                *lb = Some(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?);
            }
            let listener = lb.as_ref().expect("just bound");
            let client = TcpStream::connect(listener.local_addr()?)?;
            let (server, _) = listener.accept()?;
            (client, server)
        };
        let peer_addr = server.peer_addr()?;
        let id = self.poke(|st| {
            st.pipes.push(Pipe { client: Some(client), stalled, ..Pipe::default() });
            let id = st.pipes.len() - 1;
            st.inbound.insert(peer_addr, id);
            id
        });
        if worker.hand_off(server).is_err() {
            self.poke(|st| {
                st.inbound.remove(&peer_addr);
                st.pipes[id].closed = true;
                st.pipes[id].client = None;
            });
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "worker refused the connection"));
        }
        Ok(MockPeer { net: self.clone(), id })
    }

    /// Registers `addr` as listening: outbound connects to it succeed.
    pub fn listen(&self, addr: SocketAddr) {
        self.poke(|st| {
            st.listeners.entry(addr).or_default();
        });
    }

    /// Stops listening on `addr`; later connects to it are refused.
    pub fn unlisten(&self, addr: SocketAddr) {
        self.poke(|st| {
            st.listeners.remove(&addr);
        });
    }

    /// Makes connects to `addr` hang until the core gives up (e.g. at its connect timeout) and
    /// closes the key.
    pub fn blackhole(&self, addr: SocketAddr) {
        self.poke(|st| {
            st.blackholes.insert(addr);
        });
    }

    /// Waits up to `timeout` for an outbound connection to `addr` and returns its far end.
    pub fn accept(&self, addr: SocketAddr, timeout: Duration) -> Option<MockPeer> {
        let id = self.wait_map(timeout, |st| st.listeners.get_mut(&addr).and_then(VecDeque::pop_front))?;
        Some(MockPeer { net: self.clone(), id })
    }

    /// Makes the next `n` calls of `submit` (on any driver of this net) return
    /// `SubmitError::Full`.
    pub fn refuse_next_submits(&self, n: usize) {
        self.poke(|st| st.refuse += n);
    }

    /// Submissions refused so far by [`MockNet::refuse_next_submits`].
    pub fn refused_submits(&self) -> u64 {
        self.lock().refused
    }

    /// Delivers `c` at the next `park` of a driver of this net, before anything else.
    pub fn inject(&self, c: Injected) {
        self.poke(|st| st.injected.push_back(c));
    }

    /// True once every injected completion was delivered.
    pub fn injected_delivered(&self) -> bool {
        self.lock().injected.is_empty()
    }

    /// Delivers the completions of different connections in reverse key order (the order per
    /// connection is kept).
    pub fn reorder_completions(&self, on: bool) {
        self.poke(|st| st.reorder = on);
    }

    /// Size of the `Recv` chunks peers' bytes are delivered in (at least 1).
    pub fn set_recv_chunk(&self, n: usize) {
        self.poke(|st| st.recv_chunk = n.max(1));
    }

    /// Delivers received chunks of at least `min` bytes (`None`: none) in owned buffers through
    /// [`CompletionSink::recv_owned`] instead of `Completion::Recv`, like a backend lending its
    /// receive buffers. Each buffer has room for a whole chunk of [`MockNet::set_recv_chunk`].
    pub fn lend_recv_from(&self, min: Option<usize>) {
        self.poke(|st| st.lend_from = min);
    }

    /// Owned receive buffers (see [`MockNet::lend_recv_from`]) the core kept, and handed back.
    pub fn lent_buffers(&self) -> (u64, u64) {
        let st = self.lock();
        (st.lent_kept, st.lent_returned)
    }

    /// Bytes written per step of a send (`None`: all at once); smaller values exercise the
    /// backend's own continuation of partial writes.
    pub fn set_write_chunk(&self, n: Option<usize>) {
        self.poke(|st| st.write_chunk = n.map(|n| n.max(1)));
    }

    /// Contract violations the drivers saw, in order.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Number of `Closed` completions reported so far.
    pub fn closed_count(&self) -> u64 {
        self.lock().closed_count
    }

    /// The far end of the connection with `key`, if the net has seen it.
    pub fn peer_for(&self, key: ConnKey) -> Option<MockPeer> {
        let st = self.lock();
        st.pipes.iter().rposition(|p| p.key == Some(key)).map(|id| MockPeer { net: self.clone(), id })
    }

    /// Waits up to `timeout` until `f` returns `Some`, re-checking after every change.
    fn wait_map<R>(&self, timeout: Duration, mut f: impl FnMut(&mut NetState) -> Option<R>) -> Option<R> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(r) = f(&mut st) {
                return Some(r);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self.inner.peer_cv.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// The scripted far end of one mock connection. `Send + Sync + Clone`.
#[derive(Clone)]
pub struct MockPeer {
    net: MockNet,
    id: usize,
}

impl std::fmt::Debug for MockPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockPeer").field("id", &self.id).field("key", &self.key()).finish()
    }
}

impl MockPeer {
    fn with<R>(&self, f: impl FnOnce(&mut Pipe) -> R) -> R {
        self.net.poke(|st| f(&mut st.pipes[self.id]))
    }

    /// Sends bytes to the server (delivered as `Recv` chunks of the net's chunk size).
    ///
    /// # Errors
    /// `BrokenPipe` after this peer sent FIN or reset, or once the server closed.
    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        self.with(|p| {
            if p.fin || p.reset || p.closed {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            p.to_server.extend(data);
            Ok(())
        })
    }

    /// Sends FIN: the server sees end of stream after the bytes sent before.
    pub fn fin(&self) {
        self.with(|p| p.fin = true);
    }

    /// Resets the connection: the server's read side fails with `ConnectionReset` (undelivered
    /// bytes are lost), and its writes fail.
    pub fn reset(&self) {
        self.with(|p| {
            p.reset = true;
            p.to_server.clear();
        });
    }

    /// Stops accepting written bytes: the server's send stays in flight.
    pub fn stall(&self) {
        self.with(|p| p.stalled = true);
    }

    /// Accepts written bytes again.
    pub fn unstall(&self) {
        self.with(|p| p.stalled = false);
    }

    /// The key the server's driver bound this connection to, once it did.
    pub fn key(&self) -> Option<ConnKey> {
        self.net.lock().pipes[self.id].key
    }

    /// Waits up to `timeout` for [`MockPeer::key`].
    pub fn wait_key(&self, timeout: Duration) -> Option<ConnKey> {
        self.net.wait_map(timeout, |st| st.pipes[self.id].key)
    }

    /// Every byte the server wrote so far (read or not).
    pub fn written(&self) -> Vec<u8> {
        self.net.lock().pipes[self.id].from_server.clone()
    }

    /// Takes the bytes written and not yet read.
    pub fn read_available(&self) -> Vec<u8> {
        let mut st = self.net.lock();
        let p = &mut st.pipes[self.id];
        let out = p.from_server[p.read_pos..].to_vec();
        p.read_pos = p.from_server.len();
        out
    }

    /// Waits up to `timeout` for `n` unread bytes and takes them.
    ///
    /// # Errors
    /// `UnexpectedEof` if the server sent FIN first; `TimedOut`.
    pub fn read_exact(&self, n: usize, timeout: Duration) -> io::Result<Vec<u8>> {
        self.net
            .wait_map(timeout, |st| {
                let p = &mut st.pipes[self.id];
                if p.from_server.len() - p.read_pos >= n {
                    let out = p.from_server[p.read_pos..p.read_pos + n].to_vec();
                    p.read_pos += n;
                    Some(Ok(out))
                } else if p.server_fin {
                    Some(Err(io::Error::from(io::ErrorKind::UnexpectedEof)))
                } else {
                    None
                }
            })
            .unwrap_or_else(|| Err(io::Error::from(io::ErrorKind::TimedOut)))
    }

    /// Waits up to `timeout` for the server's FIN and takes every unread byte.
    ///
    /// # Errors
    /// `TimedOut`.
    pub fn read_to_eof(&self, timeout: Duration) -> io::Result<Vec<u8>> {
        self.net
            .wait_map(timeout, |st| {
                let p = &mut st.pipes[self.id];
                p.server_fin.then(|| {
                    let out = p.from_server[p.read_pos..].to_vec();
                    p.read_pos = p.from_server.len();
                    out
                })
            })
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    }

    /// True once the server sent FIN (shutdown or close).
    pub fn eof(&self) -> bool {
        self.net.lock().pipes[self.id].server_fin
    }

    /// True once the server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.net.lock().pipes[self.id].closed
    }

    /// True when the server closed with `abort` (a reset).
    pub fn was_aborted(&self) -> bool {
        self.net.lock().pipes[self.id].aborted
    }

    /// Waits up to `timeout` for the server to close; true if it did.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        self.net.wait_map(timeout, |st| st.pipes[self.id].closed.then_some(())).is_some()
    }
}

/// Wakes a parked [`MockDriver`]; safe from any thread and after the driver is gone.
#[derive(Clone)]
pub struct MockUnpark {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MockUnpark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockUnpark")
    }
}

impl Unpark for MockUnpark {
    fn unpark(&self) {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner()).seq += 1;
        self.inner.driver_cv.notify_all();
    }
}

/// What the driver knows about one key.
struct DConn {
    /// The pipe; `None` after a refused connect.
    pipe: Option<usize>,
    recv_active: bool,
    recv_ended: bool,
    send: Option<SendBuf>,
    write_shut: bool,
    /// A connect to a black hole: no `Connected` until `Close`.
    connecting: bool,
    /// The adopted stream, kept as the connection's identity until `Close`.
    _stream: Option<TcpStream>,
}

/// A completion owned by the driver until delivery.
enum Done {
    Recv(ConnKey, Vec<u8>),
    RecvOwned(ConnKey, Vec<u8>),
    RecvEnd(ConnKey, io::Result<()>),
    Sent(ConnKey, SendBuf, io::Result<usize>),
    Connected(ConnKey, io::Result<SocketAddr>),
    Closed(ConnKey),
    Datagram(crate::driver::UdpKey, Vec<u8>, SocketAddr, bool),
    UdpError(crate::driver::UdpKey, io::Error),
    UdpSent(crate::driver::UdpKey, SendBuf, io::Result<usize>),
    UdpClosed(crate::driver::UdpKey),
    File(crate::driver::DiskKey, disk::FileDone),
    Nvme(crate::driver::DiskKey, Option<crate::disk::AlignedBuf>),
}

impl Done {
    fn key(&self) -> ConnKey {
        match self {
            Done::Recv(k, _)
            | Done::RecvOwned(k, _)
            | Done::RecvEnd(k, _)
            | Done::Sent(k, ..)
            | Done::Connected(k, _)
            | Done::Closed(k) => *k,
            Done::Datagram(k, ..) | Done::UdpError(k, _) | Done::UdpSent(k, ..) | Done::UdpClosed(k) => {
                ConnKey { index: k.index, generation: k.generation }
            }
            Done::File(k, _) | Done::Nvme(k, _) => ConnKey { index: k.index, generation: k.generation },
        }
    }

    /// Delivers the completion; for an owned chunk, whether the core kept its buffer.
    fn deliver(self, sink: &mut dyn CompletionSink) -> Option<bool> {
        match self {
            Done::Recv(conn, data) => sink.complete(Completion::Recv { conn, data: &data }),
            Done::RecvOwned(conn, data) => return Some(sink.recv_owned(conn, data).is_none()),
            Done::RecvEnd(conn, result) => sink.complete(Completion::RecvEnd { conn, result }),
            Done::Sent(conn, buf, result) => sink.complete(Completion::Sent { conn, buf, result }),
            Done::Connected(conn, result) => sink.complete(Completion::Connected { conn, result }),
            Done::Closed(conn) => sink.complete(Completion::Closed { conn }),
            Done::Datagram(sock, data, peer, truncated) => {
                sink.complete(Completion::Datagram { sock, data: &data, peer, truncated })
            }
            Done::UdpError(sock, error) => sink.complete(Completion::UdpError { sock, error }),
            Done::UdpSent(sock, buf, result) => sink.complete(Completion::UdpSent { sock, buf, result }),
            Done::UdpClosed(sock) => sink.complete(Completion::UdpClosed { sock }),
            Done::File(key, (result, buf, fd)) => sink.complete(Completion::File { key, result, buf, fd }),
            Done::Nvme(key, buf) => sink.complete(Completion::Nvme {
                key,
                result: Err(crate::disk::NvmeError::Io(io::Error::from(io::ErrorKind::Unsupported))),
                buf,
            }),
        }
        None
    }
}

fn injected(c: Injected) -> Done {
    match c {
        Injected::Recv { conn, data } => Done::Recv(conn, data),
        Injected::RecvOwned { conn, data } => Done::RecvOwned(conn, data),
        Injected::RecvEnd { conn, error } => {
            Done::RecvEnd(conn, error.map_or(Ok(()), |k| Err(io::Error::from(k))))
        }
        Injected::Sent { conn } => Done::Sent(conn, SendBuf::new(), Ok(0)),
        Injected::Connected { conn } => {
            Done::Connected(conn, Ok(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1))))
        }
        Injected::Closed { conn } => Done::Closed(conn),
    }
}

/// The in-memory backend (`NAME = "mock"`). Built on its worker thread; `!Send`.
pub struct MockDriver {
    net: MockNet,
    worker: usize,
    submitted: VecDeque<Op>,
    conns: BTreeMap<(u32, u32), DConn>,
    udp: BTreeMap<(u32, u32), udp::DUdp>,
    last_seq: u64,
    stats: BackendStats,
}

impl std::fmt::Debug for MockDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockDriver").field("worker", &self.worker).field("conns", &self.conns.len()).finish()
    }
}

fn k(key: ConnKey) -> (u32, u32) {
    (key.index, key.generation)
}

impl MockDriver {
    /// The net this driver runs on.
    pub fn net(&self) -> &MockNet {
        &self.net
    }

    fn violation(&self, st: &mut NetState, what: String) {
        tracing::error!(worker = self.worker, "mock driver: contract violation: {what}");
        st.violations.push(format!("worker {}: {what}", self.worker));
    }

    /// Applies one submitted operation.
    fn apply(&mut self, st: &mut NetState, op: Op, out: &mut Vec<Done>) {
        if op.udp_sock().is_some() {
            let worker = self.worker;
            let mut violation = |st: &mut NetState, what: String| {
                tracing::error!(worker, "mock driver: contract violation: {what}");
                st.violations.push(format!("worker {worker}: {what}"));
            };
            udp::apply(&mut self.udp, st, op, out, &mut violation);
            return;
        }
        let key = op.conn();
        match op {
            Op::Adopt { conn, stream } => {
                if !self.check_new_key(st, conn, "Adopt") {
                    return;
                }
                let id = match stream.peer_addr().ok().and_then(|a| st.inbound.remove(&a)) {
                    Some(id) => id,
                    None => {
                        st.pipes.push(Pipe::default());
                        st.pipes.len() - 1
                    }
                };
                st.pipes[id].key = Some(conn);
                st.pipes[id].worker = Some(self.worker);
                self.conns.insert(
                    k(conn),
                    DConn {
                        pipe: Some(id),
                        recv_active: false,
                        recv_ended: false,
                        send: None,
                        write_shut: false,
                        connecting: false,
                        _stream: Some(stream),
                    },
                );
            }
            Op::Connect { conn, addr, .. } => {
                if !self.check_new_key(st, conn, "Connect") {
                    return;
                }
                let blackhole = st.blackholes.contains(&addr);
                let pipe = match st.listeners.get(&addr) {
                    _ if blackhole => None,
                    Some(_) => {
                        st.pipes.push(Pipe { key: Some(conn), worker: Some(self.worker), ..Pipe::default() });
                        let id = st.pipes.len() - 1;
                        st.listeners.get_mut(&addr).expect("checked").push_back(id);
                        st.next_port = st.next_port.wrapping_add(1).max(1024);
                        let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, st.next_port));
                        out.push(Done::Connected(conn, Ok(local)));
                        Some(id)
                    }
                    None => {
                        out.push(Done::Connected(
                            conn,
                            Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
                        ));
                        None
                    }
                };
                self.conns.insert(
                    k(conn),
                    DConn {
                        pipe,
                        recv_active: false,
                        recv_ended: pipe.is_none(),
                        send: None,
                        write_shut: false,
                        connecting: blackhole,
                        _stream: None,
                    },
                );
            }
            Op::RecvStart { .. } => match self.conns.get_mut(&k(key)) {
                Some(c) => {
                    if !c.recv_ended {
                        c.recv_active = true;
                    }
                }
                None => self.violation(st, format!("RecvStart for unknown key {key:?}")),
            },
            Op::RecvPause { .. } => match self.conns.get_mut(&k(key)) {
                Some(c) => c.recv_active = false,
                None => self.violation(st, format!("RecvPause for unknown key {key:?}")),
            },
            Op::Send { conn, buf } => {
                let problem = match self.conns.get(&k(conn)) {
                    None => Some(format!("Send for unknown key {conn:?}")),
                    Some(c) if c.send.is_some() => Some(format!("second Send in flight on {conn:?}")),
                    Some(c) if c.write_shut => Some(format!("Send after ShutdownWrite on {conn:?}")),
                    Some(_) => None,
                };
                if let Some(p) = problem {
                    self.violation(st, p);
                    out.push(Done::Sent(conn, buf, Err(io::Error::from(io::ErrorKind::NotConnected))));
                    return;
                }
                let c = self.conns.get_mut(&k(conn)).expect("checked");
                if c.pipe.is_none() {
                    out.push(Done::Sent(conn, buf, Err(io::Error::from(io::ErrorKind::NotConnected))));
                } else {
                    c.send = Some(buf);
                }
            }
            Op::ShutdownWrite { conn } => {
                let Some(c) = self.conns.get_mut(&k(conn)) else {
                    self.violation(st, format!("ShutdownWrite for unknown key {conn:?}"));
                    return;
                };
                let in_flight = c.send.is_some();
                c.write_shut = true;
                if let Some(id) = c.pipe {
                    st.pipes[id].server_fin = true;
                }
                if in_flight {
                    self.violation(st, format!("ShutdownWrite with a send in flight on {conn:?}"));
                }
            }
            Op::UdpAdopt { .. }
            | Op::UdpRecvStart { .. }
            | Op::UdpConnect { .. }
            | Op::UdpSend { .. }
            | Op::UdpClose { .. } => {}
            Op::File { key, op } => out.push(Done::File(key, disk::run(op))),
            Op::Nvme { key, op } => out.push(Done::Nvme(key, op.into_buf())),
            Op::Close { conn, abort } => {
                if !self.conns.contains_key(&k(conn)) {
                    self.violation(st, format!("Close for unknown key {conn:?} (second Close?)"));
                    return;
                }
                if !abort {
                    while self.conns.get(&k(conn)).is_some_and(|c| c.send.is_some())
                        && self.write_step(st, conn, out)
                    {}
                }
                let c = self.conns.remove(&k(conn)).expect("checked");
                if c.connecting {
                    out.push(Done::Connected(conn, Err(io::Error::from(io::ErrorKind::ConnectionAborted))));
                }
                if let Some(buf) = c.send {
                    let r = if buf.is_done() {
                        Ok(buf.total_len())
                    } else {
                        Err(io::Error::from(io::ErrorKind::ConnectionAborted))
                    };
                    out.push(Done::Sent(conn, buf, r));
                }
                if let Some(id) = c.pipe {
                    let p = &mut st.pipes[id];
                    p.server_fin = true;
                    p.closed = true;
                    p.aborted = abort;
                }
                st.closed_count += 1;
                out.push(Done::Closed(conn));
            }
        }
    }

    /// Checks that `conn` is new and its slot has no live earlier generation.
    fn check_new_key(&self, st: &mut NetState, conn: ConnKey, what: &str) -> bool {
        if self.conns.contains_key(&k(conn)) {
            self.violation(st, format!("{what} for key {conn:?} already open"));
            return false;
        }
        if let Some((&(_, g), _)) = self.conns.range((conn.index, 0)..=(conn.index, u32::MAX)).next() {
            self.violation(st, format!("{what} reuses slot {} before Closed of generation {g}", conn.index));
        }
        true
    }

    /// Writes what the peer accepts of `conn`'s in-flight send; reports it when finished or
    /// failed. Returns true when bytes moved or a completion was produced.
    fn write_step(&mut self, st: &mut NetState, conn: ConnKey, out: &mut Vec<Done>) -> bool {
        let Some(c) = self.conns.get_mut(&k(conn)) else { return false };
        let (Some(id), Some(buf)) = (c.pipe, c.send.as_mut()) else { return false };
        let p = &mut st.pipes[id];
        if p.reset {
            let buf = c.send.take().expect("checked");
            out.push(Done::Sent(conn, buf, Err(io::Error::from(io::ErrorKind::ConnectionReset))));
            return true;
        }
        let mut moved = false;
        if !p.stalled {
            let mut budget = st.write_chunk.unwrap_or(usize::MAX);
            while budget > 0 && !buf.is_done() {
                let n = {
                    let Some(s) = buf.slices().next() else { break };
                    let n = s.len().min(budget);
                    p.from_server.extend_from_slice(&s[..n]);
                    n
                };
                buf.advance(n);
                budget -= n;
                moved = true;
            }
        }
        if buf.is_done() {
            let buf = c.send.take().expect("checked");
            let total = buf.total_len();
            out.push(Done::Sent(conn, buf, Ok(total)));
            return true;
        }
        moved
    }

    /// Moves bytes both ways on every connection; true when anything happened.
    fn progress(&mut self, st: &mut NetState, out: &mut Vec<Done>) -> bool {
        let mut any = udp::progress(&mut self.udp, st, out);
        let keys: Vec<ConnKey> =
            self.conns.keys().map(|&(index, generation)| ConnKey { index, generation }).collect();
        for key in keys {
            any |= self.write_step(st, key, out);
            let c = self.conns.get_mut(&k(key)).expect("listed");
            let Some(id) = c.pipe else { continue };
            if !c.recv_active || c.recv_ended {
                continue;
            }
            let p = &mut st.pipes[id];
            if p.reset {
                c.recv_ended = true;
                c.recv_active = false;
                out.push(Done::RecvEnd(key, Err(io::Error::from(io::ErrorKind::ConnectionReset))));
                any = true;
                continue;
            }
            for _ in 0..MAX_RECV_CHUNKS_PER_PARK {
                if p.to_server.is_empty() {
                    break;
                }
                let n = p.to_server.len().min(st.recv_chunk);
                if st.lend_from.is_some_and(|min| n >= min) {
                    let mut buf = Vec::with_capacity(st.recv_chunk);
                    buf.extend(p.to_server.drain(..n));
                    out.push(Done::RecvOwned(key, buf));
                } else {
                    out.push(Done::Recv(key, p.to_server.drain(..n).collect()));
                }
                any = true;
            }
            if p.to_server.is_empty() && p.fin {
                c.recv_ended = true;
                c.recv_active = false;
                out.push(Done::RecvEnd(key, Ok(())));
                any = true;
            }
        }
        any
    }
}

impl Driver for MockDriver {
    const NAME: &'static str = "mock";
    type Unpark = MockUnpark;

    fn new(_cfg: &Config, worker: usize) -> Result<Self, Error> {
        let net = INSTALLED
            .with(|c| c.borrow().clone())
            .or_else(|| GLOBAL.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default();
        Ok(MockDriver {
            net,
            worker,
            submitted: VecDeque::new(),
            conns: BTreeMap::new(),
            udp: BTreeMap::new(),
            last_seq: 0,
            stats: BackendStats::default(),
        })
    }

    fn unparker(&self) -> MockUnpark {
        MockUnpark { inner: self.net.inner.clone() }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn submit(&mut self, op: Op) -> Result<(), SubmitError> {
        {
            let mut st = self.net.lock();
            if st.refuse > 0 {
                st.refuse -= 1;
                st.refused += 1;
                self.stats.sq_full_retries += 1;
                return Err(SubmitError::Full(op));
            }
        }
        self.submitted.push_back(op);
        Ok(())
    }

    fn park(&mut self, timeout: Option<Duration>, sink: &mut dyn CompletionSink) -> Result<(), Error> {
        let deadline = timeout.map(|t| Instant::now().checked_add(t).unwrap_or_else(far_future));
        let net = self.net.clone();
        let mut st = net.lock();
        loop {
            let mut out = Vec::new();
            out.extend(st.injected.drain(..).map(injected));
            let mut moved = false;
            while let Some(op) = self.submitted.pop_front() {
                self.apply(&mut st, op, &mut out);
                moved = true;
            }
            // One write step and up to MAX_RECV_CHUNKS_PER_PARK chunks per connection; a park that
            // moved anything returns, so the next one continues (partial writes included).
            moved |= self.progress(&mut st, &mut out);
            let activity = st.seq != self.last_seq;
            self.last_seq = st.seq;
            if moved || activity || !out.is_empty() {
                if st.reorder {
                    out.sort_by_key(|d| std::cmp::Reverse(k(d.key())));
                }
                drop(st);
                net.inner.peer_cv.notify_all();
                let (mut kept, mut returned) = (0, 0);
                for d in out {
                    match d.deliver(sink) {
                        Some(true) => kept += 1,
                        Some(false) => returned += 1,
                        None => {}
                    }
                }
                if kept + returned > 0 {
                    self.stats.recv_buffers_lent += kept + returned;
                    let mut st = net.lock();
                    st.lent_kept += kept;
                    st.lent_returned += returned;
                }
                return Ok(());
            }
            let wait = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(());
                    }
                    Some(d - now)
                }
            };
            st = match wait {
                None => net.inner.driver_cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(w) => net.inner.driver_cv.wait_timeout(st, w).unwrap_or_else(|e| e.into_inner()).0,
            };
        }
    }

    fn stats(&self) -> BackendStats {
        self.stats
    }

    fn set_nodelay(&mut self, conn: ConnKey, _on: bool) -> io::Result<()> {
        if self.conns.contains_key(&k(conn)) {
            Ok(())
        } else {
            Err(io::Error::from(io::ErrorKind::NotConnected))
        }
    }

    fn shutdown(&mut self) {
        let mut st = self.net.lock();
        for (_, c) in std::mem::take(&mut self.conns) {
            if let Some(id) = c.pipe {
                let p = &mut st.pipes[id];
                p.server_fin = true;
                p.closed = true;
                p.aborted = true;
            }
        }
        self.submitted.clear();
        self.udp.clear();
        drop(st);
        self.net.inner.peer_cv.notify_all();
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
