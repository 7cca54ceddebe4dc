//! Outbound connections: [`connect`], [`ConnectFuture`] and [`OwnedConn`].
//!
//! The slot is taken at first poll from the table shared with inbound connections. A future
//! dropped before it resolves closes the connection, also when the kernel already connected
//! (no orphans). Connect timeouts are core deadlines; the backend is told to close.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::state::{CloseMode, ConnectResult, Phase};
use super::table::ConnDeadline;
use super::{CloseReason, ConnCtx};
use crate::driver::{ConnKey, Op, SocketOpts};
use crate::error::Error;
use crate::metrics::WorkerCounters;
use crate::runtime::context::with_core;
use crate::runtime::core::Core;

/// Connects to `addr` with the configured `connect_timeout`.
pub fn connect(addr: SocketAddr) -> ConnectFuture {
    ConnectFuture { addr, timeout: None, explicit: false, conn: None, layer: None }
}

/// Connects to `addr`, failing with `ConnectTimeout` after `t`.
pub fn connect_with_timeout(addr: SocketAddr, t: Duration) -> ConnectFuture {
    ConnectFuture { addr, timeout: Some(t), explicit: true, conn: None, layer: None }
}

/// Future of [`connect`]; resolves to `Result<OwnedConn, Error>`.
#[must_use = "futures do nothing unless awaited"]
pub struct ConnectFuture {
    addr: SocketAddr,
    timeout: Option<Duration>,
    explicit: bool,
    conn: Option<ConnCtx>,
    /// Builds the stream layer (TLS) at the first poll; `None` for plain TCP.
    layer: Option<super::layer::LayerMaker>,
}

impl ConnectFuture {
    /// A connect whose connection runs a stream layer and resolves after its handshake.
    pub(crate) fn layered(
        addr: SocketAddr,
        timeout: Option<Duration>,
        make: super::layer::LayerMaker,
    ) -> Self {
        ConnectFuture { addr, timeout, explicit: timeout.is_some(), conn: None, layer: Some(make) }
    }
}

fn start(core: &Core, addr: SocketAddr, timeout: Option<Duration>) -> Result<ConnCtx, Error> {
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(Error::InvalidInput("connect needs a specified address and a non-zero port"));
    }
    if core.shutting_down.get() {
        return Err(Error::ShuttingDown);
    }
    let mut conns = core.conns.borrow_mut();
    let key = conns.alloc(true).ok_or(Error::ConnectionLimitReached)?;
    let c = conns.get(key).expect("just allocated");
    c.phase = Phase::Connecting;
    c.peer = Some(addr);
    if let Some(t) = timeout {
        conns.add_deadline(key, Instant::now() + t, ConnDeadline::Connect);
    }
    super::arm_idle(core, &mut conns, key);
    drop(conns);
    WorkerCounters::set(&core.counters().connections_open, core.conns.borrow().open() as u64);
    let (send, recv) = core.cfg.socket_buffers();
    let opts = SocketOpts { nodelay: core.cfg.tcp_nodelay(), send_buffer: send, recv_buffer: recv };
    core.outbox.borrow_mut().push(Op::Connect { conn: key, addr, opts });
    Ok(ConnCtx::new(core, key))
}

impl Future for ConnectFuture {
    type Output = Result<OwnedConn, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let conn = match this.conn {
            Some(c) => c,
            None => {
                let timeout = if this.explicit { this.timeout } else { None };
                let layer = match this.layer.take().map(|make| make()).transpose() {
                    Ok(layer) => layer,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                let r = with_core(|core| {
                    let c = start(core, this.addr, timeout.or(core.cfg.connect_timeout()))?;
                    if let Some(layer) = layer {
                        super::layer::install_outbound(core, c.key, layer);
                    }
                    Ok(c)
                });
                match r {
                    None => return Poll::Ready(Err(Error::NotInRuntime)),
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    Some(Ok(c)) => {
                        this.conn = Some(c);
                        c
                    }
                }
            }
        };
        let r = conn.with(|core, c| match std::mem::replace(&mut c.connect, ConnectResult::Taken) {
            ConnectResult::Done(r) => {
                if r.is_ok() {
                    WorkerCounters::add(&core.counters().connections_connected, 1);
                }
                Some(r)
            }
            other => {
                c.connect = other;
                c.connect_waiter = Some(cx.waker().clone());
                None
            }
        });
        match r {
            Ok(None) => Poll::Pending,
            Ok(Some(Ok(()))) => {
                this.conn = None;
                Poll::Ready(Ok(OwnedConn { ctx: conn }))
            }
            Ok(Some(Err(e))) | Err(e) => {
                this.conn = None;
                release_holder(conn.key, true);
                Poll::Ready(Err(e))
            }
        }
    }
}

impl Drop for ConnectFuture {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            release_holder(conn.key, true);
        }
    }
}

/// Lets go of an outbound slot: close it (abort or graceful) and allow its release.
fn release_holder(key: ConnKey, abort: bool) {
    let _ = with_core(|core| {
        if abort {
            super::abort_key(core, key, CloseReason::Aborted);
        }
        let mut conns = core.conns.borrow_mut();
        if let Some(c) = conns.get(key) {
            c.held = false;
            c.close.get_or_insert(CloseMode::Graceful);
            c.read_end.get_or_insert(super::state::ReadEnd::Local);
            c.set_reason(CloseReason::Local);
            super::arm_linger(core, &mut conns, key, true);
            conns.mark_dirty(key);
        }
    });
}

/// Called by the worker when a connect deadline passes.
pub(crate) fn connect_deadline(core: &Core, key: ConnKey) {
    let mut conns = core.conns.borrow_mut();
    let Some(c) = conns.get(key) else { return };
    if c.phase == Phase::Open && super::layer::handshaking(c) {
        // The timeout covers the TLS handshake: a failed handshake, counted as one.
        drop(conns);
        super::layer::handshake_failed(core, key, Error::ConnectTimeout);
        return;
    }
    if c.phase != Phase::Connecting || !matches!(c.connect, ConnectResult::Pending) {
        return;
    }
    c.connect = ConnectResult::Done(Err(Error::ConnectTimeout));
    c.close = Some(CloseMode::Abort);
    if let Some(w) = c.connect_waiter.take() {
        w.wake();
    }
    conns.mark_dirty(key);
}

/// Owns one outbound connection; dropping it closes the connection gracefully.
///
/// Copies of its [`ConnCtx`] work while it lives.
pub struct OwnedConn {
    ctx: ConnCtx,
}

impl OwnedConn {
    /// A copy of the connection handle.
    pub fn ctx(&self) -> ConnCtx {
        self.ctx
    }
}

impl Deref for OwnedConn {
    type Target = ConnCtx;
    fn deref(&self) -> &ConnCtx {
        &self.ctx
    }
}

impl Drop for OwnedConn {
    fn drop(&mut self) {
        release_holder(self.ctx.key, false);
    }
}
