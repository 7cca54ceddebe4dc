//! [`MioDriver`]: the [`Driver`] implementation — the event loop, op dispatch and the service pass.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::mem;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Waker};
use ringline_core::config::Config;
use ringline_core::driver::{
    BackendStats, Capabilities, Completion, CompletionSink, ConnKey, Driver, Op, SubmitError,
};
use ringline_core::error::Error;

use crate::conn::Conn;
use crate::op::{close, connect, recv, send};
use crate::registry::{ConnTable, WAKER_TOKEN, key_of, token_of};
use crate::unpark::MioUnpark;

/// Readiness events fetched per `epoll_wait`.
const EVENTS_PER_POLL: usize = 1024;

/// The mio (epoll) backend: one per worker, built and used on that worker's thread.
///
/// All socket work happens in [`Driver::park`]: it polls (with a zero timeout when operations are
/// queued or a connection still has capped readable data), records readiness, runs the queued
/// operations in order, then services every connection that can make progress.
pub struct MioDriver {
    poll: Poll,
    events: Events,
    waker: Arc<Waker>,
    conns: ConnTable,
    /// Operations accepted by `submit`, run at the next park.
    ops: VecDeque<Op>,
    /// Connections to service in the coming pass (deduplicated by `Conn::queued`).
    ready: Vec<ConnKey>,
    /// The spare list swapped with `ready` each pass, to keep its allocation.
    spare: Vec<ConnKey>,
    /// Read buffer shared by every connection: `recv_buffers().1` bytes (lent when large).
    scratch: recv::ReadBuf,
    /// Reusable iovec array for gathered writes; always empty between calls.
    iov: Vec<libc::iovec>,
    stats: BackendStats,
    /// UDP sockets (`udp.rs`).
    udp: crate::udp::MioUdp,
    /// File operations on the blocking pool (`disk.rs`).
    disk: crate::disk::MioDisk,
    /// The last park ran its queued operations without polling for readiness first.
    skipped_poll: bool,
    /// The driver is bound to its worker thread.
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for MioDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MioDriver")
            .field("conns", &self.conns.len())
            .field("queued_ops", &self.ops.len())
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl MioDriver {
    /// True when the next park must not block: queued operations or capped readable connections.
    fn has_pending_work(&self) -> bool {
        !self.ops.is_empty() || !self.ready.is_empty() || self.udp.has_ready() || self.disk.has_done()
    }

    /// Waits for readiness. An `EINTR` returns as if the wait timed out: the worker loop
    /// recomputes its timeout from its deadlines, so no clock is read here.
    fn poll_events(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                self.stats.submit_retries += 1;
                self.events.clear();
                Ok(())
            }
            Err(e) => Err(Error::Io(e)),
        }
    }

    /// Records the readiness of every event; events for unknown generations are counted and dropped.
    fn take_events(&mut self) {
        for event in self.events.iter() {
            let token = event.token();
            if token == WAKER_TOKEN {
                continue;
            }
            if crate::udp::is_udp_token(token) {
                self.udp.on_event(event);
                continue;
            }
            let Some(conn) = self.conns.get_mut(key_of(token)) else {
                self.stats.stale_completions += 1;
                continue;
            };
            conn.on_event(event);
            if !conn.queued && conn.has_work() {
                conn.queued = true;
                self.ready.push(conn.key);
            }
        }
    }

    /// Puts `key` on the service list if it has work and is not there yet.
    fn mark_ready(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.queued && conn.has_work() {
                conn.queued = true;
                self.ready.push(key);
            }
        }
    }

    /// Registers `stream` under `key` and stores it; registration failure is returned.
    fn install(&mut self, key: ConnKey, stream: TcpStream, connecting: bool) -> io::Result<()> {
        let mut conn = Conn::new(key, stream, connecting);
        let res = self.poll.registry().register(
            &mut conn.stream,
            token_of(key),
            Interest::READABLE | Interest::WRITABLE,
        );
        conn.registered = res.is_ok();
        if let Some(old) = self.conns.insert(conn) {
            // The core reuses a slot only after `Closed`; reaching here is a core bug. Release the
            // old socket rather than leak it.
            tracing::error!(old = ?old.key, new = ?key, "slot reused while still open");
            let _ = self.poll.registry().deregister(&mut { old }.stream);
        }
        res
    }

    /// Runs one queued operation.
    fn run_op(&mut self, op: Op, sink: &mut dyn CompletionSink) {
        match op {
            Op::Adopt { conn: key, stream } => {
                if let Err(e) = self.install(key, TcpStream::from_std(stream), false) {
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.recv_ended = true;
                    }
                    sink.complete(Completion::RecvEnd { conn: key, result: Err(e) });
                }
            }
            Op::Connect { conn: key, addr, opts } => {
                let res = connect::open(addr, opts).and_then(|s| self.install(key, s, true));
                if let Err(e) = res {
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.connecting = false;
                        conn.recv_ended = true;
                    }
                    sink.complete(Completion::Connected { conn: key, result: Err(e) });
                }
            }
            Op::RecvStart { conn: key } => {
                if let Some(conn) = self.conns.get_mut(key) {
                    recv::start(conn);
                }
                self.mark_ready(key);
            }
            Op::RecvPause { conn: key } => {
                if let Some(conn) = self.conns.get_mut(key) {
                    recv::pause(conn);
                }
            }
            Op::Send { conn: key, buf } => match self.conns.get_mut(key) {
                Some(conn) if conn.registered => {
                    send::start(conn, buf);
                    self.mark_ready(key);
                }
                Some(conn) => {
                    conn.send = Some(buf);
                    send::fail(conn, io::Error::from(io::ErrorKind::NotConnected), sink);
                }
                None => sink.complete(Completion::Sent {
                    conn: key,
                    buf,
                    result: Err(io::Error::from(io::ErrorKind::NotConnected)),
                }),
            },
            Op::ShutdownWrite { conn: key } => {
                if let Some(conn) = self.conns.get_mut(key) {
                    close::shutdown_write(conn);
                }
            }
            Op::Close { conn: key, abort } => match self.conns.remove(key) {
                Some(conn) => close::close(conn, abort, self.poll.registry(), sink),
                None => close::close_unknown(key, sink),
            },
            op @ (Op::UdpAdopt { .. }
            | Op::UdpRecvStart { .. }
            | Op::UdpConnect { .. }
            | Op::UdpSend { .. }
            | Op::UdpClose { .. }) => self.udp.run_op(op, self.poll.registry(), sink),
            op @ (Op::File { .. } | Op::Nvme { .. }) => self.disk.submit(op),
        }
    }

    /// Services every connection on the ready list; capped readers go on the list for next park.
    fn service_ready(&mut self, sink: &mut dyn CompletionSink) {
        let mut list = mem::replace(&mut self.ready, mem::take(&mut self.spare));
        for key in list.drain(..) {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            conn.queued = false;
            let still_connecting = conn.connecting
                && (!conn.writable || connect::check(conn, sink) == connect::ConnectState::Pending);
            if still_connecting {
                continue;
            }
            send::write_ready(conn, &mut self.iov, sink);
            if recv::read_ready(conn, &mut self.scratch, sink) == recv::ReadOutcome::Capped {
                conn.queued = true;
                self.ready.push(key);
            }
        }
        self.spare = list;
    }
}

impl Driver for MioDriver {
    const NAME: &'static str = "mio";
    type Unpark = MioUnpark;

    fn new(cfg: &Config, worker: usize) -> Result<Self, Error> {
        let setup = |e: io::Error| Error::WorkerSetup { worker, reason: format!("mio: {e}") };
        let poll = Poll::new().map_err(setup)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN).map_err(setup)?);
        let disk_waker = Arc::clone(&waker);
        Ok(MioDriver {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            waker,
            conns: ConnTable::new(),
            ops: VecDeque::new(),
            ready: Vec::new(),
            spare: Vec::new(),
            scratch: recv::ReadBuf::new(cfg.recv_buffers().1),
            iov: Vec::with_capacity(send::MAX_IOVECS),
            stats: BackendStats::default(),
            udp: crate::udp::MioUdp::new(cfg.udp_recv_buffers().1),
            disk: crate::disk::MioDisk::new(MioUnpark::new(disk_waker)),
            skipped_poll: false,
            _not_send: PhantomData,
        })
    }

    fn unparker(&self) -> MioUnpark {
        MioUnpark::new(Arc::clone(&self.waker))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn submit(&mut self, op: Op) -> Result<(), SubmitError> {
        self.ops.push_back(op);
        Ok(())
    }

    fn park(&mut self, timeout: Option<Duration>, sink: &mut dyn CompletionSink) -> Result<(), Error> {
        // Operations queued since the last park (typically the sends the tasks just produced)
        // would make this poll non-blocking anyway: run them without the `epoll_wait(0)` round
        // trip, but never twice in a row, so readiness is still collected on a busy loop.
        if !self.ops.is_empty() && !self.skipped_poll {
            self.skipped_poll = true;
        } else {
            self.skipped_poll = false;
            let timeout = if self.has_pending_work() { Some(Duration::ZERO) } else { timeout };
            self.poll_events(timeout)?;
            self.take_events();
        }
        while let Some(op) = self.ops.pop_front() {
            self.run_op(op, sink);
        }
        self.service_ready(sink);
        self.udp.service(sink);
        self.disk.deliver(sink);
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        BackendStats {
            stale_completions: self.stats.stale_completions + self.udp.stale,
            recv_buffers_lent: self.scratch.lent(),
            ..self.stats
        }
    }

    fn set_nodelay(&mut self, conn: ConnKey, on: bool) -> io::Result<()> {
        match self.conns.get_mut(conn) {
            Some(c) => c.stream.set_nodelay(on),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    fn shutdown(&mut self) {
        // Nothing here is in the kernel's hands once the fds are closed: sends are synchronous
        // copies, so every buffer may be freed right away.
        self.ops.clear();
        self.ready.clear();
        let registry = self.poll.registry();
        self.udp.shutdown(registry);
        for mut conn in self.conns.drain() {
            if conn.registered {
                let _ = registry.deregister(&mut conn.stream);
            }
        }
    }
}
