//! Stream layers (API 20.4): a per-connection, worker-local transformation between the wire and
//! the connection's plaintext, used by the facade's TLS.
//!
//! A connection either has no layer (plain TCP: every hot path only tests an `Option`) or one
//! [`StreamLayer`]. With a layer:
//!
//! - received wire bytes go through [`StreamLayer::read_wire`] into the plaintext accumulator;
//!   what the layer must answer (handshake messages, alerts) is appended to the send queue;
//! - committed sends go through [`StreamLayer::write_plain`], and the wire bytes are appended to
//!   the **same ordered send queue**, so records never interleave (R2). The queue's offsets
//!   (`committed`, `acked`, `queued`) then count wire bytes: a send resolves once the wire bytes
//!   that carry its last plaintext byte were written;
//! - the layer's output never fails for lack of pool slots: sends fill pool slots first, then heap
//!   memory; handshake and alert output always goes to heap memory;
//! - an inbound connection runs its handshake before the handler's `on_accept`, bounded by
//!   `tls_handshake_timeout`; a failed handshake is counted in `tls_handshake_failures`, logged at
//!   `debug` and closed (after the layer's alert) without the handler ever seeing it;
//! - an outbound connection resolves its connect future after the handshake;
//! - a graceful close (or `shutdown_write`) first queues the layer's close alert (close_notify);
//! - end of stream: the layer's close alert gives `Ok(0)`; a FIN without it gives `Ok(0)` too and
//!   sets [`ConnCtx::eof_truncated`]; a layer error after the handshake is reported to readers,
//!   then the connection closes.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::connect::ConnectFuture;
use super::pool::SendPool;
use super::send::Piece;
use super::state::{CloseMode, Conn, ConnectResult, Phase, ReadEnd, WriteState};
use super::table::{ConnDeadline, ConnTable};
use super::{CloseReason, ConnCtx};
use crate::buf::{PartMemory, SendPart};
use crate::driver::ConnKey;
use crate::error::Error;
use crate::metrics::WorkerCounters;
use crate::runtime::core::Core;

/// A per-connection transformation between wire bytes and plaintext (TLS in the facade).
///
/// Built and used on one worker thread. Every method appends what must go on the wire to `out`,
/// which never fails; the core puts those bytes into the connection's ordered send queue.
pub trait StreamLayer: 'static {
    /// Writes what must be sent before anything is received (a client's hello) to `out`.
    ///
    /// # Errors
    /// A layer error; the connection is then closed.
    fn start(&mut self, out: &mut dyn io::Write) -> Result<(), Error>;

    /// Feeds received wire bytes: appends the plaintext they carry to `plain` and the answers
    /// they call for (handshake messages, alerts) to `out`.
    ///
    /// # Errors
    /// A protocol error. The layer writes its alert, if any, to `out` before returning it.
    fn read_wire(&mut self, wire: &[u8], plain: &mut BytesMut, out: &mut dyn io::Write) -> Result<(), Error>;

    /// Turns plaintext into wire bytes appended to `out`.
    ///
    /// # Errors
    /// The layer cannot send any more (for example after its close alert).
    fn write_plain(&mut self, plain: &[u8], out: &mut dyn io::Write) -> Result<(), Error>;

    /// Writes the close alert (TLS close_notify) to `out`; called at most once, after the handshake.
    fn close(&mut self, out: &mut dyn io::Write);

    /// True until the handshake completed.
    fn is_handshaking(&self) -> bool;

    /// True once the peer's close alert was received.
    fn peer_closed(&self) -> bool;

    /// What the handshake negotiated; `None` while handshaking or for a layer that is not TLS.
    #[cfg(feature = "tls")]
    fn tls_info(&self) -> Option<TlsInfo> {
        None
    }
}

/// Builds a fresh [`StreamLayer`] for each connection accepted on a listener.
///
/// Shared by the acceptor thread and the workers; the layer itself is built on the worker.
#[derive(Clone)]
pub struct LayerFactory {
    make: Arc<dyn Fn() -> Result<Box<dyn StreamLayer>, Error> + Send + Sync>,
}

impl LayerFactory {
    /// Wraps `make`, called once per accepted connection on its worker.
    pub fn new(make: impl Fn() -> Result<Box<dyn StreamLayer>, Error> + Send + Sync + 'static) -> Self {
        LayerFactory { make: Arc::new(make) }
    }

    /// Builds one layer.
    ///
    /// # Errors
    /// Whatever the factory reports.
    pub fn make(&self) -> Result<Box<dyn StreamLayer>, Error> {
        (self.make)()
    }
}

impl std::fmt::Debug for LayerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerFactory")
    }
}

/// Builds the layer of one outbound connection; called at the connect future's first poll.
pub type LayerMaker = Box<dyn FnOnce() -> Result<Box<dyn StreamLayer>, Error>>;

/// What the handshake of a TLS connection negotiated (feature `tls`).
#[cfg(feature = "tls")]
#[derive(Clone, Debug)]
pub struct TlsInfo {
    protocol_version: rustls::ProtocolVersion,
    cipher_suite: rustls::CipherSuite,
    server_name: Option<String>,
    alpn_protocol: Option<Vec<u8>>,
}

#[cfg(feature = "tls")]
impl TlsInfo {
    /// Describes a completed handshake (built by the layer).
    pub fn new(
        protocol_version: rustls::ProtocolVersion,
        cipher_suite: rustls::CipherSuite,
        server_name: Option<String>,
        alpn_protocol: Option<Vec<u8>>,
    ) -> Self {
        TlsInfo { protocol_version, cipher_suite, server_name, alpn_protocol }
    }
    /// The negotiated protocol version (`TLSv1_3`, `TLSv1_2`).
    pub fn protocol_version(&self) -> rustls::ProtocolVersion {
        self.protocol_version
    }
    /// The negotiated cipher suite.
    pub fn cipher_suite(&self) -> rustls::CipherSuite {
        self.cipher_suite
    }
    /// The server name: the SNI the client sent (server side), or the name connected to (client).
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }
    /// The ALPN protocol both sides agreed on, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn_protocol.as_deref()
    }
}

/// The layer of one connection and where its handshake and close stand.
pub(crate) struct LayerState {
    layer: Box<dyn StreamLayer>,
    /// The handshake has neither completed nor failed.
    handshaking: bool,
    /// Inbound and `on_accept` not yet called: the handler must never hear of this connection.
    hidden: bool,
    /// The handshake failed: later wire bytes are dropped.
    failed: bool,
    /// The close alert was queued, or must not be (after a failure).
    alert_done: bool,
    /// FIN arrived without the peer's close alert.
    truncated: bool,
}

/// What the worker must do for a layered connection after a completion was applied.
#[derive(Debug)]
pub(crate) enum LayerEvent {
    /// The handshake completed.
    Ready,
    /// The handshake failed (error, FIN or timeout).
    Failed(Error),
    /// A layer error after the handshake: readers saw it; close the connection.
    Fatal,
}

/// Appends wire bytes to a connection's send queue; never fails.
///
/// With a pool, bytes fill the last queued pool slot, then free pool slots, then heap memory;
/// without one, they go to heap memory (extending a queued heap part when it is last).
pub(crate) struct WireOut<'a> {
    queue: &'a mut VecDeque<SendPart>,
    pool: Option<&'a mut SendPool>,
    written: usize,
    heap: usize,
}

impl<'a> WireOut<'a> {
    fn new(queue: &'a mut VecDeque<SendPart>, pool: Option<&'a mut SendPool>) -> Self {
        WireOut { queue, pool, written: 0, heap: 0 }
    }

    fn append(&mut self, mut data: &[u8]) {
        self.written += data.len();
        if let Some(pool) = self.pool.as_deref_mut() {
            data = super::send::fill_pool_slots(self.queue, pool, data);
        }
        if data.is_empty() {
            return;
        }
        self.heap += data.len();
        if let Some(SendPart { memory: PartMemory::Heap(v), end, .. }) = self.queue.back_mut()
            && *end == v.len()
        {
            v.extend_from_slice(data);
            *end = v.len();
            return;
        }
        self.queue.push_back(SendPart { memory: PartMemory::Heap(data.to_vec()), start: 0, end: data.len() });
    }
}

impl io::Write for WireOut<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.append(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts `written` wire bytes as committed to the queue.
fn account(c: &mut Conn, written: usize) {
    c.queued += written;
    c.committed += written as u64;
}

/// Builds and installs the layer of an inbound connection just adopted: its handshake starts,
/// bounded by `tls_handshake_timeout`, and `on_accept` waits for it. A factory error fails the
/// handshake at once.
pub(crate) fn adopt_layered(core: &Core, key: ConnKey, factory: &LayerFactory) {
    match factory.make() {
        Ok(layer) => install(core, key, layer, true),
        Err(e) => {
            install(core, key, Box::new(Inert), true);
            core.conns.borrow_mut().layer_events.push((key, LayerEvent::Failed(e)));
        }
    }
}

/// Stands in for a layer that could not be built, so the connection stays hidden from the
/// handler until it is closed.
struct Inert;

impl StreamLayer for Inert {
    fn start(&mut self, _out: &mut dyn io::Write) -> Result<(), Error> {
        Ok(())
    }
    fn read_wire(
        &mut self,
        _wire: &[u8],
        _plain: &mut BytesMut,
        _out: &mut dyn io::Write,
    ) -> Result<(), Error> {
        Ok(())
    }
    fn write_plain(&mut self, _plain: &[u8], _out: &mut dyn io::Write) -> Result<(), Error> {
        Err(Error::Closed)
    }
    fn close(&mut self, _out: &mut dyn io::Write) {}
    fn is_handshaking(&self) -> bool {
        true
    }
    fn peer_closed(&self) -> bool {
        false
    }
}

fn install(core: &Core, key: ConnKey, mut layer: Box<dyn StreamLayer>, inbound: bool) {
    let mut conns = core.conns.borrow_mut();
    let Some(c) = conns.get(key) else { return };
    let mut out = WireOut::new(&mut c.queue, None);
    let started = layer.start(&mut out);
    let written = out.written;
    account(c, written);
    let failed = started.is_err();
    c.layer = Some(Box::new(LayerState {
        layer,
        handshaking: !failed,
        hidden: inbound,
        failed,
        alert_done: failed,
        truncated: false,
    }));
    conns.add_deadline(key, Instant::now() + core.cfg.tls_handshake_timeout(), ConnDeadline::Handshake);
    conns.mark_dirty(key);
    if let Err(e) = started {
        conns.layer_events.push((key, LayerEvent::Failed(e)));
    }
}

/// Connects to `addr` with a stream layer made by `make` at the first poll; the future resolves
/// after the layer's handshake. `timeout` (else `connect_timeout`) covers the handshake too; the
/// handshake is also bounded by `tls_handshake_timeout`. The facade's `connect_tls` uses it.
pub fn connect_layered(
    addr: std::net::SocketAddr,
    timeout: Option<Duration>,
    make: LayerMaker,
) -> ConnectFuture {
    ConnectFuture::layered(addr, timeout, make)
}

/// Called by the connect future right after it took its slot.
pub(crate) fn install_outbound(core: &Core, key: ConnKey, layer: Box<dyn StreamLayer>) {
    install(core, key, layer, false);
}

/// True while a layered connection's handshake runs (the connect deadline still applies).
pub(crate) fn handshaking(c: &Conn) -> bool {
    c.layer.as_ref().is_some_and(|s| s.handshaking)
}

/// False for a connection the handler never saw (its handshake failed): no `on_close`.
pub(crate) fn handler_knows(c: &Conn) -> bool {
    c.layer.as_ref().is_none_or(|s| !s.hidden)
}

/// FIN arrived without the peer's close alert (TLS: truncation).
pub(crate) fn truncated(c: &Conn) -> bool {
    c.layer.as_ref().is_some_and(|s| s.truncated)
}

impl ConnTable {
    /// Received wire bytes on a layered connection: plaintext to the accumulator, answers to
    /// the queue, handshake progress and errors to `layer_events`.
    pub(crate) fn on_recv_layered(&mut self, key: ConnKey, data: &[u8]) -> usize {
        let Some(c) = self.get(key) else {
            self.stale += 1;
            return 0;
        };
        let Some(st) = c.layer.as_deref_mut() else { return 0 };
        // A completed handshake whose `on_accept` is still pending keeps receiving: the bytes
        // wait in the accumulator for the task.
        if c.read_end.is_some() || st.failed {
            return 0;
        }
        let before = c.acc.len();
        let mut out = WireOut::new(&mut c.queue, None);
        let result = st.layer.read_wire(data, &mut c.acc, &mut out);
        let written = out.written;
        let mut event = None;
        match result {
            Err(e) => {
                st.alert_done = true;
                if st.handshaking {
                    st.handshaking = false;
                    st.failed = true;
                    event = Some(LayerEvent::Failed(e));
                } else {
                    c.set_reason(CloseReason::Error(io::ErrorKind::InvalidData));
                    c.read_end = Some(ReadEnd::Failed(e));
                    event = Some(LayerEvent::Fatal);
                }
            }
            Ok(()) => {
                if st.handshaking && !st.layer.is_handshaking() {
                    st.handshaking = false;
                    event = Some(LayerEvent::Ready);
                }
                if st.layer.peer_closed() && c.read_end.is_none() {
                    c.read_end = Some(ReadEnd::Eof);
                    c.set_reason(CloseReason::PeerClosed);
                }
            }
        }
        account(c, written);
        if c.acc.len() > before || c.read_end.is_some() {
            c.wake_readers();
        }
        self.mark_dirty(key);
        if let Some(ev) = event {
            self.layer_events.push((key, ev));
        }
        data.len()
    }
}

/// The read side of a layered connection ended: a FIN during the handshake fails it; a FIN
/// after it without the peer's close alert marks the stream truncated.
pub(crate) fn on_recv_end(c: &mut Conn, result: &io::Result<()>) -> Option<LayerEvent> {
    let st = c.layer.as_deref_mut()?;
    if st.handshaking {
        st.handshaking = false;
        st.failed = true;
        st.alert_done = true;
        let e = match result {
            Ok(()) => io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed during the TLS handshake"),
            Err(e) => crate::error::duplicate_io(e),
        };
        return Some(LayerEvent::Failed(Error::Io(e)));
    }
    if result.is_ok() && c.read_end.is_none() && !st.layer.peer_closed() {
        st.truncated = true;
    }
    None
}

/// Commits plaintext pieces of a layered connection: each is turned into wire bytes appended to
/// the ordered queue. Returns the wire offset after the last byte (`u64::MAX` after a failure,
/// which the send future reports as the write side's error).
pub(super) fn commit<'p>(core: &Core, c: &mut Conn, pieces: impl IntoIterator<Item = Piece<'p>>) -> u64 {
    let Some(st) = c.layer.as_deref_mut() else { return c.committed };
    let mut pool = core.pool.borrow_mut();
    let mut out = WireOut::new(&mut c.queue, Some(&mut pool));
    let mut failed = None;
    for p in pieces {
        if let Err(e) = st.layer.write_plain(p.bytes(), &mut out) {
            failed = Some(e);
            break;
        }
    }
    let (written, heap) = (out.written, out.heap);
    drop(pool);
    account(c, written);
    if heap > 0 {
        WorkerCounters::add(&core.counters().send_overflow_bytes, heap as u64);
    }
    match failed {
        None => c.committed,
        Some(e) => {
            tracing::debug!(worker = core.worker, "stream layer refused a send: {e}");
            if !matches!(c.write, WriteState::Failed(_)) {
                c.write = WriteState::Failed(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
            u64::MAX
        }
    }
}

/// Before a flush of a layered connection: a graceful close or a half-close first queues the
/// layer's close alert (once, after the handshake, unless a write failed).
pub(crate) fn before_flush(c: &mut Conn) {
    let Some(st) = c.layer.as_deref_mut() else { return };
    let closing = c.close == Some(CloseMode::Graceful) || matches!(c.write, WriteState::ShutdownPending);
    if !closing || st.alert_done || st.handshaking || c.close_submitted {
        return;
    }
    st.alert_done = true;
    if matches!(c.write, WriteState::Failed(_)) {
        return;
    }
    let mut out = WireOut::new(&mut c.queue, None);
    st.layer.close(&mut out);
    let written = out.written;
    account(c, written);
}

/// Applies one event; returns true when the worker must now call `on_accept` for `key`.
pub(crate) fn on_event(core: &Core, key: ConnKey, event: LayerEvent) -> bool {
    match event {
        LayerEvent::Ready => {
            let mut conns = core.conns.borrow_mut();
            let Some(c) = conns.get(key) else { return false };
            if c.close.is_some() {
                return false;
            }
            if c.outbound {
                if matches!(c.connect, ConnectResult::Pending) {
                    c.connect = ConnectResult::Done(Ok(()));
                }
                if let Some(w) = c.connect_waiter.take() {
                    w.wake();
                }
                return false;
            }
            if let Some(st) = c.layer.as_deref_mut() {
                st.hidden = false;
            }
            true
        }
        LayerEvent::Failed(e) => {
            handshake_failed(core, key, e);
            false
        }
        LayerEvent::Fatal => {
            ConnCtx::new(core, key).close();
            false
        }
    }
}

/// Counts, logs and closes a connection whose handshake failed. Inbound: closed gracefully so
/// the layer's alert goes out first (bounded by `close_linger`); the handler never hears of it.
/// Outbound: the connect future resolves with the error.
pub(crate) fn handshake_failed(core: &Core, key: ConnKey, e: Error) {
    let mut conns = core.conns.borrow_mut();
    let Some(c) = conns.get(key) else { return };
    if c.close.is_some() && !c.outbound {
        return;
    }
    if let Some(st) = c.layer.as_deref_mut() {
        st.handshaking = false;
        st.failed = true;
        st.alert_done = true;
    }
    WorkerCounters::add(&core.counters().tls_handshake_failures, 1);
    tracing::debug!(
        worker = core.worker,
        index = key.index,
        outbound = c.outbound,
        "TLS handshake failed: {e}"
    );
    if c.outbound {
        if matches!(c.connect, ConnectResult::Pending) {
            c.connect = ConnectResult::Done(Err(e));
        }
        c.close.get_or_insert(CloseMode::Abort);
        c.read_end.get_or_insert(ReadEnd::Local);
        c.write = WriteState::Closed;
        if let Some(w) = c.connect_waiter.take() {
            w.wake();
        }
        conns.mark_dirty(key);
        return;
    }
    c.held = false;
    c.set_reason(CloseReason::Error(io::ErrorKind::InvalidData));
    drop(conns);
    ConnCtx::new(core, key).close();
}

/// `tls_handshake_timeout` passed for `key`: a handshake still running fails.
pub(crate) fn handshake_deadline(core: &Core, key: ConnKey) {
    let outbound = {
        let mut conns = core.conns.borrow_mut();
        let Some(c) = conns.get(key) else { return };
        if !handshaking(c) || c.close_submitted {
            return;
        }
        c.outbound
    };
    let e = if outbound { Error::ConnectTimeout } else { Error::Io(io::ErrorKind::TimedOut.into()) };
    handshake_failed(core, key, e);
}

/// Shutdown began: inbound connections still in their handshake are aborted (no task holds them).
pub(crate) fn on_shutdown(core: &Core) {
    let keys: Vec<ConnKey> = {
        let mut conns = core.conns.borrow_mut();
        let live = conns.live_keys();
        live.into_iter()
            .filter(|&k| {
                conns.get(k).is_some_and(|c| {
                    !c.outbound && c.phase == Phase::Open && c.layer.as_ref().is_some_and(|s| s.hidden)
                })
            })
            .collect()
    };
    for key in keys {
        super::abort_key(core, key, CloseReason::Shutdown);
        if let Some(c) = core.conns.borrow_mut().get(key) {
            c.held = false;
        }
    }
}

#[cfg(feature = "tls")]
impl ConnCtx {
    /// What the TLS handshake negotiated; `None` for plain TCP, a stale handle, or off the worker.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        self.with(|_, c| c.layer.as_ref().filter(|s| !s.handshaking).and_then(|s| s.layer.tls_info()))
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn wire_out_fills_pool_slots_then_heap() {
        let mut pool = SendPool::new(2, 4);
        let mut queue = VecDeque::new();
        let mut out = WireOut::new(&mut queue, Some(&mut pool));
        out.write_all(b"abcdefghijk").unwrap();
        assert_eq!((out.written, out.heap), (11, 3));
        let bytes: Vec<u8> = queue.iter().flat_map(|p| p.bytes().to_vec()).collect();
        assert_eq!(bytes, b"abcdefghijk");
        assert_eq!(queue.len(), 3);
    }

    #[test]
    fn wire_out_without_pool_extends_the_last_heap_part() {
        let mut queue = VecDeque::new();
        let mut out = WireOut::new(&mut queue, None);
        out.write_all(b"hello ").unwrap();
        out.write_all(b"world").unwrap();
        assert_eq!(queue.len(), 1);
        assert_eq!(queue[0].bytes(), b"hello world");
    }
}
