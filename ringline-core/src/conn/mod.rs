//! Connections: [`ConnCtx`] (one TCP connection, worker-local) and its identity types.

pub(crate) mod connect;
pub(crate) mod flush;
pub mod layer;
pub(crate) mod pool;
pub(crate) mod recv;
pub(crate) mod send;
pub(crate) mod state;
#[cfg(feature = "futures-io")]
mod stream;
pub(crate) mod table;

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Instant;

pub use connect::{ConnectFuture, OwnedConn, connect, connect_with_timeout};
#[cfg(feature = "tls")]
pub use layer::TlsInfo;
pub use layer::{LayerFactory, LayerMaker, StreamLayer, connect_layered};
pub use recv::{Recv, WithBytes, WithData};
pub use send::{Flush, MAX_GUARDS, SendBuilder, SendFuture};
#[cfg(feature = "futures-io")]
pub use stream::ConnStream;

use crate::driver::ConnKey;
use crate::error::Error;
use crate::runtime::context::with_core;
use crate::runtime::core::Core;
use state::{CloseMode, Conn, ReadEnd, WriteState};
use table::discard_queue;

/// Why a connection's slot was released (passed to `on_close`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Closed by this side (`close()`, the task returned, `OwnedConn` dropped).
    Local,
    /// The peer closed (FIN) before the local close.
    PeerClosed,
    /// The peer reset the connection.
    Reset,
    /// An I/O error of this kind.
    Error(std::io::ErrorKind),
    /// `idle_timeout` expired.
    IdleTimeout,
    /// A message exceeded `recv_accumulator_limit`.
    TooLarge,
    /// Aborted locally (`abort()`, linger expired).
    Aborted,
    /// Closed by shutdown.
    Shutdown,
    /// The connection's task panicked.
    Panicked,
}

/// Identifies a connection from any thread: worker, slot index, generation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConnToken {
    /// Worker index.
    pub worker: usize,
    /// Slot index in that worker.
    pub index: u32,
    /// Slot generation.
    pub generation: u32,
}

/// One TCP connection, usable from any task of its worker. `Copy`; `!Send`.
///
/// Off its worker (or after its slot was released) every method returns
/// `Error::NotInRuntime`/`Error::InvalidConnection`, `None` or `false`; none panics.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ringline_core::conn::ConnCtx>();
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ConnCtx {
    pub(crate) uid: u64,
    pub(crate) worker: usize,
    pub(crate) key: ConnKey,
    _not_send: PhantomData<*const ()>,
}

impl ConnCtx {
    pub(crate) fn new(core: &Core, key: ConnKey) -> ConnCtx {
        ConnCtx { uid: core.uid, worker: core.worker, key, _not_send: PhantomData }
    }

    /// Runs `f` on this connection's slot; errors when off the worker or stale.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Core, &mut Conn) -> R) -> Result<R, Error> {
        with_core(|core| {
            if core.uid != self.uid {
                return Err(Error::NotInRuntime);
            }
            let mut conns = core.conns.borrow_mut();
            match conns.get(self.key) {
                Some(c) => Ok(f(core, c)),
                None => Err(Error::InvalidConnection),
            }
        })
        .unwrap_or_else(|| Err(Error::NotInRuntime))
    }

    /// Runs `f` with the whole table after checking that this handle is current.
    pub(crate) fn with_table<R>(
        &self,
        f: impl FnOnce(&Core, &mut table::ConnTable) -> R,
    ) -> Result<R, Error> {
        with_core(|core| {
            if core.uid != self.uid {
                return Err(Error::NotInRuntime);
            }
            let mut conns = core.conns.borrow_mut();
            if conns.get(self.key).is_none() {
                return Err(Error::InvalidConnection);
            }
            Ok(f(core, &mut conns))
        })
        .unwrap_or_else(|| Err(Error::NotInRuntime))
    }

    /// A `Send` identity for this connection.
    pub fn token(&self) -> ConnToken {
        ConnToken { worker: self.worker, index: self.key.index, generation: self.key.generation }
    }

    /// The slot index in its worker.
    pub fn index(&self) -> usize {
        self.key.index as usize
    }

    /// Bytes received and not yet consumed.
    pub fn buffered_len(&self) -> usize {
        self.with(|_, c| c.acc.len()).unwrap_or(0)
    }

    /// Bytes queued and not yet acknowledged (wire bytes, records included, on a TLS connection).
    pub fn queued_len(&self) -> usize {
        self.with(|_, c| c.queued).unwrap_or(0)
    }

    /// True until `close`/`abort` was called or the slot was released.
    pub fn is_open(&self) -> bool {
        self.with(|_, c| c.close.is_none()).unwrap_or(false)
    }

    /// True for connections made with `connect`.
    pub fn is_outbound(&self) -> bool {
        self.with(|_, c| c.outbound).unwrap_or(false)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.with(|_, c| c.peer).ok().flatten()
    }

    /// The local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.with(|_, c| c.local).ok().flatten()
    }

    /// True when a TLS peer closed without close_notify; always false for plain TCP.
    pub fn eof_truncated(&self) -> bool {
        self.with(|_, c| layer::truncated(c)).unwrap_or(false)
    }

    /// Closes gracefully after every queued byte was written (bounded by `close_linger`).
    /// Later sends fail with `Closed`; reads return `Ok(0)`. Idempotent.
    pub fn close(&self) {
        let key = self.key;
        let _ = self.with_table(|core, conns| {
            let Some(c) = conns.get(key) else { return };
            if c.close.is_some() {
                return;
            }
            c.close = Some(CloseMode::Graceful);
            c.set_reason(CloseReason::Local);
            c.read_end.get_or_insert(ReadEnd::Local);
            if matches!(c.write, WriteState::Open | WriteState::ShutdownPending) {
                c.write = WriteState::Closed;
            }
            fail_unadmitted(c);
            c.wake_readers();
            arm_linger(core, conns, key, true);
            conns.mark_dirty(key);
        });
    }

    /// Discards queued bytes and resets the connection now. Idempotent.
    pub fn abort(&self) {
        let _ = with_core(|core| abort_key(core, self.key, CloseReason::Aborted));
    }

    /// Sends FIN after every queued byte; reading continues. Later sends fail with `Closed`.
    pub fn shutdown_write(&self) {
        let key = self.key;
        let _ = self.with_table(|core, conns| {
            let Some(c) = conns.get(key) else { return };
            if matches!(c.write, WriteState::Open) {
                c.write = WriteState::ShutdownPending;
                fail_unadmitted(c);
                arm_linger(core, conns, key, false);
            }
            conns.mark_dirty(key);
        });
    }

    /// Sets `TCP_NODELAY`.
    ///
    /// # Errors
    /// `InvalidConnection` for a stale handle; `Unsupported` on a backend without it.
    pub fn set_nodelay(&self, on: bool) -> Result<(), Error> {
        self.with(|_, _| ())?;
        with_core(|core| core.set_nodelay(self.key, on)).unwrap_or(Err(Error::NotInRuntime))
    }
}

/// Bounds a graceful close (`for_close`) or a half-close by `close_linger` (R5): the worker aborts
/// the connection if it is still waiting for queued bytes then. A close is armed once; it replaces
/// the deadline of an earlier half-close (only the current `linger_deadline` counts when one fires).
pub(crate) fn arm_linger(core: &Core, conns: &mut table::ConnTable, key: ConnKey, for_close: bool) {
    let Some(c) = conns.get(key) else { return };
    if c.close_submitted || (for_close && c.close_linger_armed) {
        return;
    }
    c.close_linger_armed |= for_close;
    let at = Instant::now() + core.cfg.close_linger();
    c.linger_deadline = Some(at);
    conns.add_deadline(key, at, table::ConnDeadline::Linger);
}

/// Wakes sends still waiting for admission: they will see the closed write side.
fn fail_unadmitted(c: &mut Conn) {
    for (_, w) in c.admission.iter() {
        w.wake_by_ref();
    }
}

/// Aborts a connection: queued bytes are discarded, waiters see `Closed`, the socket is reset.
pub(crate) fn abort_key(core: &Core, key: ConnKey, reason: CloseReason) {
    let mut conns = core.conns.borrow_mut();
    let Some(c) = conns.get(key) else { return };
    if c.close == Some(CloseMode::Abort) {
        return;
    }
    c.close = Some(CloseMode::Abort);
    c.set_reason(reason);
    c.read_end.get_or_insert(ReadEnd::Local);
    if !matches!(c.write, WriteState::Failed(_)) {
        c.write = WriteState::Closed;
    }
    let mut pool = core.pool.borrow_mut();
    discard_queue(c, &mut pool);
    let in_flight_end = c.committed;
    c.committed = if c.in_flight { in_flight_end } else { c.acked };
    c.wake_readers();
    c.wake_senders();
    conns.mark_dirty(key);
}

/// Starts `idle_timeout` accounting for a new connection (no-op without the setting).
pub(crate) fn arm_idle(core: &Core, conns: &mut table::ConnTable, key: ConnKey) {
    let Some(d) = core.cfg.idle_timeout() else { return };
    let Some(c) = conns.get(key) else { return };
    let now = Instant::now();
    c.last_progress = Some(now);
    conns.add_deadline(key, now + d, table::ConnDeadline::Idle);
}

/// An idle deadline passed: close the connection if it made no progress since, else re-arm.
pub(crate) fn idle_deadline(core: &Core, key: ConnKey, now: Instant) {
    let Some(d) = core.cfg.idle_timeout() else { return };
    let mut conns = core.conns.borrow_mut();
    let Some(c) = conns.get(key) else { return };
    let Some(last) = c.last_progress else { return };
    if c.close.is_some() {
        return;
    }
    if c.phase != state::Phase::Open || now.saturating_duration_since(last) < d {
        let next = if c.phase == state::Phase::Open { last + d } else { now + d };
        conns.add_deadline(key, next, table::ConnDeadline::Idle);
        return;
    }
    if layer::handshaking(c) {
        // Found by TESTPLAN 9 (slowloris_idle_and_handshake): a peer idling in its TLS handshake
        // was aborted here and never counted in `tls_handshake_failures`, although API 14 counts
        // every failed handshake there. Close it the way a handshake timeout does (the handler
        // never saw it); it still counts as an idle timeout too.
        drop(conns);
        crate::metrics::WorkerCounters::add(&core.counters().idle_timeouts, 1);
        layer::handshake_failed(core, key, Error::IdleTimeout);
        return;
    }
    c.read_end.get_or_insert(ReadEnd::Failed(Error::IdleTimeout));
    c.set_reason(CloseReason::IdleTimeout);
    c.wake_readers();
    drop(conns);
    crate::metrics::WorkerCounters::add(&core.counters().idle_timeouts, 1);
    tracing::debug!(worker = core.worker, index = key.index, "idle timeout");
    abort_key(core, key, CloseReason::IdleTimeout);
}
