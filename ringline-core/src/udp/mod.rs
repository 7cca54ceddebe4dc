//! UDP: [`UdpCtx`] (one worker-local socket), [`OwnedUdp`] and [`udp_bind`].
//!
//! Sockets come from `RinglineBuilder::bind_udp` (one `SO_REUSEPORT` socket per worker, handed to
//! `on_udp_bind`, closed at shutdown) or from [`udp_bind`] in a task (closed when the
//! [`OwnedUdp`] drops). One receive is one datagram; sends are copied at call time (into a
//! send-pool slot, or one heap buffer when larger) while fewer than `udp_sends_in_flight` are
//! outstanding on the socket, else they wait FIFO.

mod io;
pub(crate) mod table;

use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use io::{RecvFrom, SendTo, WithDatagram};

use crate::driver::{Op, UdpKey};
use crate::error::Error;
use crate::metrics::WorkerCounters;
use crate::runtime::context::with_core;
use crate::runtime::core::{Core, panic_message};
use table::{UdpSock, UdpTable};

/// One UDP socket, usable from any task of its worker. `Copy`; `!Send`.
///
/// Off its worker, or once the socket was closed and its slot released, methods return
/// `Error::NotInRuntime` / `Error::Closed`; none panics.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ringline_core::udp::UdpCtx>();
/// ```
#[derive(Clone, Copy, Debug)]
pub struct UdpCtx {
    pub(crate) uid: u64,
    pub(crate) worker: usize,
    pub(crate) key: UdpKey,
    _not_send: PhantomData<*const ()>,
}

impl UdpCtx {
    fn new(core: &Core, key: UdpKey) -> UdpCtx {
        UdpCtx { uid: core.uid, worker: core.worker, key, _not_send: PhantomData }
    }

    /// Runs `f` on this socket's state; `Closed` once its slot is gone.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Core, &mut UdpSock) -> R) -> Result<R, Error> {
        with_core(|core| {
            if core.uid != self.uid {
                return Err(Error::NotInRuntime);
            }
            let mut table = core.udp.borrow_mut();
            match table.get(self.key) {
                Some(s) => Ok(f(core, s)),
                None => Err(Error::Closed),
            }
        })
        .unwrap_or(Err(Error::NotInRuntime))
    }

    /// The worker this socket belongs to.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The slot index of this socket in its worker.
    pub fn index(&self) -> usize {
        self.key.index as usize
    }

    /// The bound local address (`0.0.0.0:0` for a closed socket or off its worker).
    pub fn local_addr(&self) -> SocketAddr {
        self.with(|_, s| s.local).unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// The connected peer, if [`UdpCtx::connect`] was called.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.with(|_, s| s.peer).ok().flatten()
    }

    /// Datagrams received and not yet taken.
    pub fn queued_datagrams(&self) -> usize {
        self.with(|_, s| s.queue.len()).unwrap_or(0)
    }

    /// Connects the socket to `peer`: later [`UdpCtx::send`]s go there, only its datagrams are
    /// received (queued ones from other senders are dropped), and ICMP errors come back as
    /// `Err(Io(..))` from the next `recv`/`send`. May be called again to change the peer.
    ///
    /// # Errors
    /// `Closed` for a closed socket; `NotInRuntime` off its worker.
    pub fn connect(&self, peer: SocketAddr) -> Result<(), Error> {
        let key = self.key;
        self.with(|core, s| {
            if s.closing {
                return Err(Error::Closed);
            }
            s.peer = Some(peer);
            s.error = None;
            s.queue.retain(|(_, from)| *from == peer);
            core.outbox.borrow_mut().push(Op::UdpConnect { sock: key, peer });
            Ok(())
        })?
    }

    /// Closes the socket: waiting receives and sends fail with `Closed`; sends already handed to
    /// the backend still go out. Idempotent. [`OwnedUdp`] calls it on drop.
    pub fn close(&self) {
        let _ = with_core(|core| {
            if core.uid == self.uid {
                close_key(core, self.key);
            }
        });
    }

    /// True until the socket was closed.
    pub fn is_open(&self) -> bool {
        self.with(|_, s| !s.closing).unwrap_or(false)
    }
}

/// Owns a socket made by [`udp_bind`]; dropping it closes the socket.
///
/// Copies of its [`UdpCtx`] work while it lives.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ringline_core::udp::OwnedUdp>();
/// ```
#[derive(Debug)]
pub struct OwnedUdp {
    ctx: UdpCtx,
}

impl OwnedUdp {
    /// A copy of the socket handle.
    pub fn ctx(&self) -> UdpCtx {
        self.ctx
    }
}

impl Deref for OwnedUdp {
    type Target = UdpCtx;
    fn deref(&self) -> &UdpCtx {
        &self.ctx
    }
}

impl Drop for OwnedUdp {
    fn drop(&mut self) {
        self.ctx.close();
    }
}

/// Binds a UDP socket on the current worker (no `SO_REUSEPORT`; port 0 picks a free port).
///
/// # Errors
/// `NotInRuntime` off a worker; `ShuttingDown`; `Bind` when the address cannot be bound;
/// `ConnectionLimitReached` when the worker's UDP table is full.
pub fn udp_bind(addr: SocketAddr) -> Result<OwnedUdp, Error> {
    with_core(|core| {
        if core.shutting_down.get() {
            return Err(Error::ShuttingDown);
        }
        let socket = std::net::UdpSocket::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        let ctx = adopt(core, socket, false)?;
        Ok(OwnedUdp { ctx })
    })
    .unwrap_or(Err(Error::NotInRuntime))
}

/// Gives `socket` a slot and tells the backend to take it over and start receiving.
fn adopt(core: &Core, socket: std::net::UdpSocket, runtime_owned: bool) -> Result<UdpCtx, Error> {
    let local = socket.local_addr()?;
    let key = core
        .udp
        .borrow_mut()
        .alloc(UdpSock::new(local, runtime_owned))
        .ok_or(Error::ConnectionLimitReached)?;
    let mut outbox = core.outbox.borrow_mut();
    outbox.push(Op::UdpAdopt { sock: key, socket });
    outbox.push(Op::UdpRecvStart { sock: key });
    Ok(UdpCtx::new(core, key))
}

/// Adopts the sockets the facade opened for `bind_udp` and spawns `on_bind(ctx)` for each (the
/// handler's `on_udp_bind`), containing panics.
pub(crate) fn bind_initial<F: Future<Output = ()> + 'static>(
    core: &Core,
    mut on_bind: impl FnMut(UdpCtx) -> F,
) {
    let sockets = std::mem::take(&mut core.udp.borrow_mut().initial);
    for socket in sockets {
        let ctx = match adopt(core, socket, true) {
            Ok(ctx) => ctx,
            Err(e) => {
                tracing::error!(worker = core.worker, "bind_udp socket not adopted: {e}");
                continue;
            }
        };
        match catch_unwind(AssertUnwindSafe(|| on_bind(ctx))) {
            // An entry task: it does not count against `standalone_task_capacity` (API 5).
            Ok(fut) => {
                core.spawn_entry(fut);
            }
            Err(payload) => {
                WorkerCounters::add(&core.counters().task_panics, 1);
                tracing::error!(worker = core.worker, "on_udp_bind panicked: {}", panic_message(&payload));
            }
        }
    }
}

/// Closes one socket (idempotent): waiters are woken to see `Closed`, the backend gets `UdpClose`.
pub(crate) fn close_key(core: &Core, key: UdpKey) {
    let mut table = core.udp.borrow_mut();
    let Some(s) = table.get(key) else { return };
    if s.closing {
        return;
    }
    s.closing = true;
    s.queue.clear();
    s.wake_all();
    core.outbox.borrow_mut().push(Op::UdpClose { sock: key });
}

/// Shutdown began: readers are woken (an empty queue now gives `ShuttingDown`) and the
/// runtime's own (`bind_udp`) sockets are closed.
pub(crate) fn on_shutdown(core: &Core) {
    let keys = core.udp.borrow().live_keys();
    for key in keys {
        let owned = core.udp.borrow_mut().get(key).map(|s| {
            s.wake_all();
            s.runtime_owned
        });
        if owned == Some(true) {
            close_key(core, key);
        }
    }
}

/// The shutdown deadline passed: close every socket.
pub(crate) fn close_all(core: &Core) {
    let keys = core.udp.borrow().live_keys();
    for key in keys {
        close_key(core, key);
    }
}

/// Sockets of this worker not yet released.
pub(crate) fn open(core: &Core) -> usize {
    core.udp.borrow().open()
}

/// Stale UDP completions counted by the core.
pub(crate) fn stale(core: &Core) -> u64 {
    core.udp.borrow().stale
}

/// A new, empty table holding the `bind_udp` sockets to adopt.
pub(crate) fn table_with(initial: Vec<std::net::UdpSocket>) -> UdpTable {
    let mut t = UdpTable::default();
    t.initial = initial;
    t
}
