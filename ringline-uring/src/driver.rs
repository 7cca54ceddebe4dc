//! [`UringDriver`]: the io_uring implementation of [`Driver`].
//!
//! Submissions from the core become SQEs tagged with [`crate::user_data`]; completions are reaped
//! in [`Driver::park`] and turned into [`Completion`]s. Connection state lives in boxed
//! [`Conn`]s freed only after their last terminal completion. Entries the driver must submit on
//! its own (re-arms, resubmitted send remainders, cancels, the wake read) go to a retry queue when
//! the SQ is full and are pushed at the next `park`, never dropped.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types};
use ringline_core::backend::Backend;
use ringline_core::buf::SendBuf;
use ringline_core::config::Config;
use ringline_core::driver::{
    BackendStats, Capabilities, Completion, CompletionSink, ConnKey, Driver, Op, SocketOpts, SubmitError,
};
use ringline_core::error::Error;

use crate::buf_ring::BufRing;
use crate::conn::{Conn, InFlightSend, RawAddr, disconnect, local_addr, set_linger_zero, setsockopt_int};
use crate::fixed::FixedTable;
use crate::nvme::NvmeRing;
use crate::probe::{self, Features};
use crate::ring::Ring;
use crate::unpark::{EventFd, UringUnpark};
use crate::user_data::{Kind, decode, encode};

mod disk;
mod udp;

/// Buffer group id of the receive ring (one ring per worker, so one group).
const BGID: u16 = 0;
/// How long `shutdown` waits for terminal completions before leaking what they may still use.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
/// Consecutive `EAGAIN`/`EBUSY` answers after which `park` returns and lets the core loop.
const MAX_BUSY_RETRIES: u32 = 64;
/// Received chunks of at least this many bytes are lent to the core instead of copied (the
/// buffer is replaced in the ring by a new allocation, freed later by whoever holds the bytes).
/// Measured (docs/benchmarks.md, "receive buffers lent to the core"): below 8 KiB lending counts
/// more instructions than the copy it saves (callgrind: +22 % per 4 KiB echo, +9 % at 8 KiB)
/// for a time saving of about 0.1 µs; from 16 KiB on it removes most of the worker's
/// instructions.
const LEND_MIN_BYTES: usize = 8192;
/// A lent buffer holds at most this many times the bytes it carries (chunks smaller than
/// `size / LEND_MAX_WASTE` are copied), so large configured buffers do not multiply memory.
const LEND_MAX_WASTE: usize = 4;
/// Rounds of overflow flushing per `park`.
const MAX_OVERFLOW_ROUNDS: u32 = 16;

/// A completion produced without the kernel (a failed setup step, a close with nothing in flight),
/// delivered at the next `park` (never inline from `submit`).
enum Deferred {
    Sent { conn: ConnKey, buf: SendBuf, result: io::Result<usize> },
    Connected { conn: ConnKey, error: io::Error },
    RecvEnd { conn: ConnKey, error: io::Error },
    Closed { conn: ConnKey },
}

/// A sink that drops everything (used by `shutdown`).
struct NullSink;

impl CompletionSink for NullSink {
    fn complete(&mut self, _c: Completion<'_>) {}
}

/// The io_uring backend: one per worker, built and used on that worker's thread.
///
/// See the crate documentation and `ringline_core::driver` for the contract it implements.
pub struct UringDriver {
    ring: Ring,
    features: Features,
    bufs: BufRing,
    fixed: Option<FixedTable>,
    conns: Vec<Option<Box<Conn>>>,
    max_conns: usize,
    /// `Config::zero_copy_local`: zero-copy also to peers on this host.
    zero_copy_local: bool,
    /// Starved receives in FIFO order, with the batch number in which they starved.
    starved: VecDeque<(ConnKey, u64)>,
    /// Internal entries waiting for SQ room, in order.
    retry: VecDeque<squeue::Entry>,
    deferred: VecDeque<Deferred>,
    wake: Arc<EventFd>,
    /// Target of the eventfd read; boxed so it never moves while the read is in flight.
    wake_buf: Box<u64>,
    wake_armed: bool,
    stats: BackendStats,
    cqes: Vec<cqueue::Entry>,
    /// Number of the completion batch being processed.
    epoch: u64,
    owner: ThreadId,
    shut: bool,
    worker: usize,
    /// UDP sockets, their sends and their receive-buffer ring (`udp.rs`).
    udp: udp::Udp,
    /// File operations and the NVMe ring (`disk.rs`).
    disk: disk::Disk,
    /// The driver stays on its thread.
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for UringDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDriver")
            .field("worker", &self.worker)
            .field("mode", &self.ring.mode())
            .field("features", &self.features)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl UringDriver {
    fn setup_error(worker: usize, what: &str, e: &io::Error) -> Error {
        Error::WorkerSetup { worker, reason: format!("io_uring {what}: {e}") }
    }

    /// The features probed for this process.
    pub fn features(&self) -> Features {
        self.features
    }

    fn conn(&self, key: ConnKey) -> Option<&Conn> {
        match self.conns.get(key.index as usize) {
            Some(Some(c)) if c.key.generation == key.generation => Some(c),
            _ => None,
        }
    }

    /// Takes the connection out of its slot (the `Box` keeps it in place); put it back with
    /// [`UringDriver::put`].
    fn take(&mut self, key: ConnKey) -> Option<Box<Conn>> {
        let slot = self.conns.get_mut(key.index as usize)?;
        match slot {
            Some(c) if c.key.generation == key.generation => slot.take(),
            _ => None,
        }
    }

    fn put(&mut self, c: Box<Conn>) {
        let i = c.key.index as usize;
        self.conns[i] = Some(c);
    }

    /// Stores a new connection; `false` if its slot is still occupied.
    fn insert(&mut self, c: Conn) -> bool {
        let i = c.key.index as usize;
        if i >= self.conns.len() {
            self.conns.resize_with(i + 1, || None);
        }
        if self.conns[i].is_some() {
            return false;
        }
        self.conns[i] = Some(Box::new(c));
        true
    }

    /// Pushes an entry the driver owes on its own; queued for the next `park` if the SQ is full.
    fn push_internal(&mut self, entry: squeue::Entry) {
        if !self.retry.is_empty() {
            self.retry.push_back(entry);
            return;
        }
        let mut full = false;
        // SAFETY:
        // - internal entries name only memory that lives until their completion: recv entries use
        //   the registered buffer ring (unregistered only after every terminal completion); send
        //   entries point into the boxed `Conn`'s `InFlightSend`, freed only at `inflight == 0`;
        //   the wake read targets `wake_buf`, leaked if its completion never comes; cancels name
        //   no memory; UDP receives name the `msghdr` in the boxed `UdpSock` (freed at
        //   `inflight == 0`) and the UDP buffer ring (same rule as above); UDP sends name the
        //   iovecs, `msghdr`, address and buffer of a boxed `UdpSendOp`, freed after its completion.
        // - the descriptors stay open: a `Conn`'s fd and fixed slot are closed only once its
        //   `inflight` count (which includes this entry) reaches zero; the eventfd is kept by the
        //   `Arc` the driver holds.
        let pushed = unsafe { self.ring.push_entry(&entry, &mut full) };
        if full {
            self.stats.sq_full_retries += 1;
        }
        if !pushed {
            self.retry.push_back(entry);
        }
    }

    /// Pushes queued internal entries, submitting whenever the SQ fills.
    fn drain_retry(&mut self) {
        while let Some(entry) = self.retry.front() {
            let mut full = false;
            // SAFETY:
            // - entries in the retry queue were built under the same guarantees as in
            //   `push_internal` and their memory and descriptors are still held (their
            //   connections count them in `inflight`).
            let pushed = unsafe { self.ring.push_entry(entry, &mut full) };
            if full {
                self.stats.sq_full_retries += 1;
            }
            if !pushed {
                break;
            }
            self.retry.pop_front();
        }
    }

    /// True when one more entry fits in the SQ (after a submit if it was full, counted).
    fn room(&mut self) -> bool {
        let mut full = false;
        let ok = self.ring.ensure_room(&mut full);
        if full {
            self.stats.sq_full_retries += 1;
        }
        ok
    }

    /// Keeps the eventfd read armed.
    fn arm_wake(&mut self) {
        if self.wake_armed || self.shut {
            return;
        }
        let buf: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(types::Fd(self.wake.raw()), buf.cast(), 8)
            .build()
            .user_data(encode(Kind::Wake, ConnKey { index: 0, generation: 0 }));
        self.wake_armed = true;
        self.push_internal(entry);
    }

    /// Arms the multishot receive of `c` (the caller checked it is not armed).
    fn arm_recv(&mut self, c: &mut Conn) {
        debug_assert!(!c.recv.armed);
        let entry = c.recv_entry(self.bufs.bgid());
        c.recv.armed = true;
        c.inflight += 1;
        self.push_internal(entry);
    }

    /// True when `c` should have a receive armed but has none (and is not waiting for buffers).
    fn wants_rearm(c: &Conn) -> bool {
        c.closing.is_none() && c.recv.wanted && !c.recv.ended && !c.recv.armed && !c.recv.starved && c.fd >= 0
    }

    /// Re-arms starved receives FIFO that starved before batch `before`, while buffers are free.
    fn rearm_starved(&mut self, before: u64) {
        let mut budget = self.bufs.free();
        while budget > 0 {
            match self.starved.front() {
                Some(&(_, epoch)) if epoch < before => {}
                _ => break,
            }
            let Some((key, _)) = self.starved.pop_front() else { break };
            let Some(mut c) = self.take(key) else { continue };
            if c.recv.starved {
                c.recv.starved = false;
                if Self::wants_rearm(&c) {
                    self.arm_recv(&mut c);
                    self.stats.recv_rearms_after_refill += 1;
                    budget -= 1;
                }
            }
            self.put(c);
        }
    }

    fn adopt(&mut self, key: ConnKey, stream: TcpStream) {
        if self.conn(key).is_some() || (key.index as usize) >= self.max_conns {
            tracing::error!(?key, "Adopt for an occupied or out-of-range slot; dropping the stream");
            drop(stream);
            self.deferred.push_back(Deferred::RecvEnd {
                conn: key,
                error: io::Error::new(io::ErrorKind::AlreadyExists, "connection slot in use"),
            });
            return;
        }
        // io_uring honours O_NONBLOCK: on a non-blocking socket a send that finds the socket
        // buffer full completes with -EAGAIN instead of waiting inside the kernel. The acceptor
        // hands streams over non-blocking (the mio backend needs that), so clear the flag here;
        // no thread ever blocks on this fd, the ring does the waiting.
        if let Err(e) = stream.set_nonblocking(false) {
            tracing::debug!(?key, "clearing O_NONBLOCK failed: {e}");
        }
        let fd = stream.into_raw_fd();
        let fixed = self.register_fixed(fd);
        let inserted = self.insert(Conn::new(key, fd, fixed));
        debug_assert!(inserted);
    }

    fn register_fixed(&mut self, fd: i32) -> Option<u32> {
        let table = self.fixed.as_mut()?;
        let slot = table.insert(&self.ring.submitter(), fd);
        if slot.is_none() {
            self.stats.fixed_file_fallbacks += 1;
        }
        slot
    }

    fn connect(&mut self, key: ConnKey, addr: SocketAddr, opts: SocketOpts) -> Result<(), SubmitError> {
        if self.conn(key).is_some() || (key.index as usize) >= self.max_conns {
            tracing::error!(?key, "Connect for an occupied or out-of-range slot");
            self.deferred.push_back(Deferred::Connected {
                conn: key,
                error: io::Error::new(io::ErrorKind::AlreadyExists, "connection slot in use"),
            });
            return Ok(());
        }
        if !self.room() {
            return Err(SubmitError::Full(Op::Connect { conn: key, addr, opts }));
        }
        let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY:
        // - socket(2) takes no pointers; the arguments are valid constants.
        let fd =
            unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
        if fd < 0 {
            let error = io::Error::last_os_error();
            self.insert(Conn::new(key, -1, None));
            self.deferred.push_back(Deferred::Connected { conn: key, error });
            return Ok(());
        }
        let mut opt_result = Ok(());
        if opts.nodelay {
            opt_result = opt_result.and(setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1));
        }
        if let Some(n) = opts.send_buffer {
            let n = n.min(i32::MAX as usize) as i32;
            opt_result = opt_result.and(setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, n));
        }
        if let Some(n) = opts.recv_buffer {
            let n = n.min(i32::MAX as usize) as i32;
            opt_result = opt_result.and(setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, n));
        }
        let fixed = self.register_fixed(fd);
        let mut c = Conn::new(key, fd, fixed);
        if let Err(error) = opt_result {
            self.insert(c);
            self.deferred.push_back(Deferred::Connected { conn: key, error });
            return Ok(());
        }
        c.connect = Some(RawAddr::new(&addr));
        self.insert(c);
        let Some(mut c) = self.take(key) else { return Ok(()) };
        if let Some(entry) = c.connect_entry() {
            c.inflight += 1;
            // Room was ensured above, so this lands in the SQ (or, at worst, the retry queue).
            self.push_internal(entry);
        }
        self.put(c);
        Ok(())
    }

    fn recv_start(&mut self, key: ConnKey) {
        let Some(mut c) = self.take(key) else { return };
        if !c.recv.ended && c.closing.is_none() {
            c.recv.wanted = true;
            if Self::wants_rearm(&c) {
                self.arm_recv(&mut c);
            }
        }
        self.put(c);
    }

    fn recv_pause(&mut self, key: ConnKey) {
        let Some(mut c) = self.take(key) else { return };
        c.recv.wanted = false;
        c.recv.starved = false;
        if c.recv.armed {
            let entry = c.cancel_entry(Kind::Recv);
            self.push_internal(entry);
        }
        self.put(c);
    }

    fn send(&mut self, key: ConnKey, buf: SendBuf) -> Result<(), SubmitError> {
        let Some(mut c) = self.take(key) else {
            self.deferred.push_back(Deferred::Sent {
                conn: key,
                buf,
                result: Err(io::Error::new(io::ErrorKind::NotConnected, "unknown connection")),
            });
            return Ok(());
        };
        let refuse = if c.send.is_some() {
            tracing::error!(?key, "a second Send while one is in flight (contract violation)");
            Some(io::Error::other("a send is already in flight"))
        } else if c.closing.is_some() || c.fd < 0 {
            Some(io::Error::new(io::ErrorKind::NotConnected, "connection closed"))
        } else {
            None
        };
        if let Some(error) = refuse {
            self.put(c);
            self.deferred.push_back(Deferred::Sent { conn: key, buf, result: Err(error) });
            return Ok(());
        }
        if buf.is_done() {
            let total = buf.total_len();
            self.put(c);
            // Nothing to write: report success at the next park, never inline.
            self.deferred.push_back(Deferred::Sent { conn: key, buf, result: Ok(total) });
            return Ok(());
        }
        if !self.room() {
            self.put(c);
            return Err(SubmitError::Full(Op::Send { conn: key, buf }));
        }
        // Guards reach the backend only at or above the zero-copy threshold (the core copies
        // smaller ones), so any guard makes the write a zero-copy candidate, unless the peer is on
        // this host: Linux copies looped-back zero-copy data anyway, so the notification would be
        // pure cost (decisions.md, "Zero-copy over loopback").
        let zc = self.features.send_zc && buf.has_guard() && (self.zero_copy_local || !c.peer_is_local());
        c.send = Some(InFlightSend::new(buf, zc));
        self.push_send(&mut c);
        self.put(c);
        Ok(())
    }

    /// Submits the write of the unsent bytes of `c`'s in-flight send, counted in `inflight`.
    fn push_send(&mut self, c: &mut Conn) {
        let Some(entry) = c.send_entry() else { return };
        if let Some(s) = c.send.as_mut() {
            s.op_pending = true;
            if s.zc {
                self.stats.zero_copy_sends += 1;
            }
        }
        c.inflight += 1;
        self.push_internal(entry);
    }

    fn shutdown_write(&mut self, key: ConnKey) {
        if let Some(c) = self.conn(key) {
            if c.fd >= 0 {
                // SAFETY:
                // - shutdown(2) takes no pointers; `fd` is the connection's open descriptor.
                unsafe { libc::shutdown(c.fd, libc::SHUT_WR) };
            }
        }
    }

    fn close(&mut self, key: ConnKey, abort: bool) {
        let Some(mut c) = self.take(key) else {
            self.deferred.push_back(Deferred::Closed { conn: key });
            return;
        };
        if c.closing.is_some() {
            tracing::warn!(?key, "Close submitted twice");
            self.put(c);
            return;
        }
        c.closing = Some(abort);
        c.recv.wanted = false;
        if c.recv.armed {
            let e = c.cancel_entry(Kind::Recv);
            self.push_internal(e);
        }
        if c.send.is_some() {
            let e = c.cancel_entry(Kind::Send);
            self.push_internal(e);
        }
        if c.connect.is_some() {
            let e = c.cancel_entry(Kind::Connect);
            self.push_internal(e);
        }
        if c.fd >= 0 {
            if abort {
                if let Err(e) = set_linger_zero(c.fd) {
                    tracing::trace!(?key, "SO_LINGER before abort failed: {e}");
                }
                // SAFETY:
                // - shutdown(2) takes no pointers; `fd` is the connection's open descriptor.
                // SHUT_RD ends pending receives without sending FIN, so the close resets.
                unsafe { libc::shutdown(c.fd, libc::SHUT_RD) };
                if c.send.as_ref().is_some_and(|s| s.zc) {
                    // The fd stays open until the last zero-copy notification, which a stalled
                    // peer would hold back forever: reset now, so the kernel drops the queued
                    // bytes and notifies.
                    if let Err(e) = disconnect(c.fd) {
                        tracing::trace!(?key, "disconnect before abort failed: {e}");
                    }
                }
            } else {
                // SAFETY:
                // - shutdown(2) takes no pointers; `fd` is the connection's open descriptor.
                unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
            }
        }
        if c.inflight == 0 {
            self.release(c);
            self.deferred.push_back(Deferred::Closed { conn: key });
        } else {
            self.put(c);
        }
    }

    /// Clears the fixed slot and closes the descriptor of a connection with nothing in flight.
    fn release(&mut self, c: Box<Conn>) {
        debug_assert_eq!(c.inflight, 0);
        if let (Some(slot), Some(table)) = (c.fixed, self.fixed.as_mut()) {
            table.remove(&self.ring.submitter(), slot);
        }
        if c.fd >= 0 {
            // SAFETY:
            // - the connection owns `fd` (from `into_raw_fd` or `socket`) and closes it once, here;
            //   nothing is in flight on it any more.
            unsafe { libc::close(c.fd) };
        }
    }

    /// Puts `c` back, or finishes its close and reports `Closed` when it was the last operation.
    fn settle(&mut self, c: Box<Conn>, sink: &mut dyn CompletionSink) {
        if c.closing.is_some() && c.inflight == 0 {
            let key = c.key;
            self.release(c);
            sink.complete(Completion::Closed { conn: key });
        } else {
            self.put(c);
        }
    }

    fn dispatch(&mut self, cqe: &cqueue::Entry, sink: &mut dyn CompletionSink) {
        let (kind, key) = decode(cqe.user_data());
        let (res, flags) = (cqe.result(), cqe.flags());
        match kind {
            Some(Kind::Recv) => self.on_recv(key, res, flags, sink),
            Some(Kind::Send) => self.on_send(key, res, flags, sink),
            Some(Kind::Connect) => self.on_connect(key, res, sink),
            Some(Kind::Wake) => {
                self.wake_armed = false;
                self.arm_wake();
            }
            Some(Kind::Cancel) => {}
            Some(Kind::UdpRecv) => self.udp_on_recv(key, res, flags, sink),
            Some(Kind::UdpSend) => self.udp_on_send(key, res, sink),
            Some(Kind::File) => self.file_on_cqe(key, res, sink),
            Some(Kind::NvmeRing) => {
                if let Some(ring) = self.disk.nvme.as_mut() {
                    ring.poll_armed = false;
                }
                self.nvme_reap(sink);
                self.arm_nvme_poll();
            }
            None => {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    if self.bufs.taken(bid) {
                        self.bufs.release(bid);
                    }
                }
                self.stats.stale_completions += 1;
            }
        }
    }

    fn on_recv(&mut self, key: ConnKey, res: i32, flags: u32, sink: &mut dyn CompletionSink) {
        let bid = cqueue::buffer_select(flags).filter(|&b| self.bufs.taken(b));
        let more = cqueue::more(flags);
        let Some(mut c) = self.take(key) else {
            if let Some(b) = bid {
                self.bufs.release(b);
            }
            self.stats.stale_completions += 1;
            return;
        };
        if !more {
            c.recv.armed = false;
            c.inflight = c.inflight.saturating_sub(1);
        }
        let live = c.closing.is_none() && !c.recv.ended;
        let mut starved_now = false;
        if res > 0 {
            if let (true, Some(b)) = (live, bid) {
                self.deliver_recv(key, b, res as usize, sink);
            }
        } else if res == 0 {
            if live {
                c.recv.ended = true;
                sink.complete(Completion::RecvEnd { conn: key, result: Ok(()) });
            }
        } else {
            match -res {
                libc::ENOBUFS => {
                    self.stats.recv_buffer_exhausted += 1;
                    if live && !more && c.recv.wanted && !c.recv.starved {
                        c.recv.starved = true;
                        starved_now = true;
                        self.starved.push_back((key, self.epoch));
                        sink.complete(Completion::RecvStarved { conn: key });
                    }
                }
                libc::ECANCELED => {}
                errno => {
                    if live {
                        c.recv.ended = true;
                        sink.complete(Completion::RecvEnd {
                            conn: key,
                            result: Err(io::Error::from_raw_os_error(errno)),
                        });
                    }
                }
            }
        }
        // The bytes were copied by the sink, or the buffer was lent and replaced: the id goes
        // back before the next wait.
        if let Some(b) = bid {
            self.bufs.release(b);
        }
        if !more && !starved_now && Self::wants_rearm(&c) {
            self.arm_recv(&mut c);
            self.stats.recv_rearms += 1;
        }
        self.settle(c, sink);
    }

    /// Hands the `len` bytes of buffer `bid` to the core: lent (replaced in the ring, no copy) from
    /// [`LEND_MIN_BYTES`] on, copied below that. A lent buffer the core did not keep comes back as
    /// the next replacement.
    fn deliver_recv(&mut self, key: ConnKey, bid: u16, len: usize, sink: &mut dyn CompletionSink) {
        if len >= LEND_MIN_BYTES && len >= self.bufs.buf_size() / LEND_MAX_WASTE {
            if let Some(buf) = self.bufs.lend(bid, len) {
                if let Some(back) = sink.recv_owned(key, buf) {
                    self.bufs.give_back(back);
                }
                return;
            }
        }
        sink.complete(Completion::Recv { conn: key, data: self.bufs.data(bid, len) });
    }

    /// Handles a send's result completion or, for a zero-copy send, its notification (same
    /// `user_data`, flagged `F_NOTIF`). `Sent` goes out once the write has its outcome and every
    /// notification owed (one per result completion flagged `F_MORE`) has arrived.
    fn on_send(&mut self, key: ConnKey, res: i32, flags: u32, sink: &mut dyn CompletionSink) {
        let Some(mut c) = self.take(key) else {
            self.stats.stale_completions += 1;
            return;
        };
        let Some(mut s) = c.send.take() else {
            tracing::warn!(?key, "send completion without a send in flight");
            self.stats.stale_completions += 1;
            self.put(c);
            return;
        };
        if cqueue::notif(flags) {
            // The kernel is done with the memory of one zero-copy write. Whichever of a write's
            // result and notification comes second ends its `inflight` count.
            if s.notifs > 0 {
                c.inflight = c.inflight.saturating_sub(1);
            }
            s.notifs -= 1;
        } else {
            s.op_pending = false;
            if cqueue::more(flags) {
                // A notification follows (decided by F_MORE, never by `res`).
                if s.notifs < 0 {
                    c.inflight = c.inflight.saturating_sub(1);
                }
                s.notifs += 1;
            } else {
                c.inflight = c.inflight.saturating_sub(1);
            }
            let result = if res >= 0 {
                let n = (res as usize).min(s.buf.remaining());
                s.buf.advance(n);
                if s.buf.is_done() {
                    Some(Ok(s.buf.total_len()))
                } else if c.closing.is_some() {
                    Some(Err(io::Error::from_raw_os_error(libc::ECANCELED)))
                } else if n == 0 {
                    Some(Err(io::Error::from(io::ErrorKind::WriteZero)))
                } else {
                    None
                }
            } else if s.zc && c.closing.is_none() && (res == -libc::EAGAIN || res == -libc::ENOBUFS) {
                // The kernel could not take more zero-copy data right now (for example its
                // notification or option-memory limits): write the rest with plain `sendmsg`.
                s.zc = false;
                None
            } else {
                Some(Err(io::Error::from_raw_os_error(-res)))
            };
            match result {
                Some(result) => s.result = Some(result),
                None => {
                    // Short write: send the remainder before reporting anything. The memory of
                    // earlier zero-copy writes stays with `s` until their notifications.
                    c.send = Some(s);
                    self.push_send(&mut c);
                    self.settle(c, sink);
                    return;
                }
            }
        }
        if s.finished() {
            let result = s.result.take().unwrap_or(Ok(0));
            sink.complete(Completion::Sent { conn: key, buf: s.buf, result });
        } else {
            c.send = Some(s);
        }
        self.settle(c, sink);
    }

    fn on_connect(&mut self, key: ConnKey, res: i32, sink: &mut dyn CompletionSink) {
        let Some(mut c) = self.take(key) else {
            self.stats.stale_completions += 1;
            return;
        };
        c.connect = None;
        c.inflight = c.inflight.saturating_sub(1);
        if c.closing.is_none() {
            let result = if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { local_addr(c.fd) };
            sink.complete(Completion::Connected { conn: key, result });
        }
        self.settle(c, sink);
    }

    fn deliver_deferred(&mut self, sink: &mut dyn CompletionSink) {
        while let Some(d) = self.deferred.pop_front() {
            match d {
                Deferred::Sent { conn, buf, result } => sink.complete(Completion::Sent { conn, buf, result }),
                Deferred::Connected { conn, error } => {
                    sink.complete(Completion::Connected { conn, result: Err(error) })
                }
                Deferred::RecvEnd { conn, error } => {
                    sink.complete(Completion::RecvEnd { conn, result: Err(error) })
                }
                Deferred::Closed { conn } => sink.complete(Completion::Closed { conn }),
            }
        }
    }

    /// Reaps and dispatches every available completion, batch by batch; returns how many.
    fn reap_and_dispatch(&mut self, sink: &mut dyn CompletionSink) -> usize {
        let mut total = 0;
        let max = self.ring.cq_capacity();
        loop {
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.clear();
            self.ring.reap(&mut cqes, max);
            if cqes.is_empty() {
                self.cqes = cqes;
                return total;
            }
            total += cqes.len();
            for cqe in &cqes {
                self.dispatch(cqe, sink);
            }
            self.cqes = cqes;
            // Buffers of this batch are back: re-arm what starved in earlier batches (checked
            // here so the common case, nothing starved, costs no calls per batch).
            if !self.starved.is_empty() {
                self.rearm_starved(self.epoch);
            }
            if !self.udp.starved.is_empty() {
                self.udp_rearm_starved(self.epoch);
            }
            self.epoch += 1;
        }
    }

    /// Submits and waits, retrying `EINTR`, `EAGAIN` and `EBUSY`.
    ///
    /// An `EINTR` returns to the worker loop, which recomputes the timeout from its deadlines;
    /// so no clock is read here (two `Instant::now` calls per park before).
    fn enter(&mut self, timeout: Option<Duration>, sink: &mut dyn CompletionSink) -> Result<(), Error> {
        let mut busy = 0;
        loop {
            if self.ring.cq_overflow() {
                // The submitter enters with GETEVENTS when the flag is set, which flushes them.
                self.stats.cq_overflows += 1;
            }
            match self.ring.submit_and_wait(timeout) {
                Ok(()) => return Ok(()),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {
                        // Submitted entries stay queued and go in with the next park.
                        self.stats.submit_retries += 1;
                        return Ok(());
                    }
                    Some(libc::EAGAIN | libc::EBUSY) => {
                        self.stats.submit_retries += 1;
                        busy += 1;
                        if self.reap_and_dispatch(sink) > 0 || busy >= MAX_BUSY_RETRIES {
                            // Progress was made (or the kernel keeps refusing): only submit now.
                            let _ = self.ring.submit();
                            return Ok(());
                        }
                    }
                    _ => return Err(Error::Io(e)),
                },
            }
        }
    }

    fn flush_overflow(&mut self, sink: &mut dyn CompletionSink) {
        for _ in 0..MAX_OVERFLOW_ROUNDS {
            if !self.ring.cq_overflow() {
                return;
            }
            self.stats.cq_overflows += 1;
            let _ = self.ring.submit();
            self.reap_and_dispatch(sink);
        }
    }

    fn all_settled(&self) -> bool {
        !self.wake_armed
            && self.conns.iter().flatten().all(|c| c.inflight == 0)
            && self.udp.settled()
            && self.disk.settled()
            && !self.disk.nvme.as_ref().is_some_and(|n| n.poll_armed)
    }
}

impl Driver for UringDriver {
    const NAME: &'static str = "uring";
    type Unpark = UringUnpark;

    fn new(cfg: &Config, worker: usize) -> Result<Self, Error> {
        let features = match probe::probe() {
            Ok(f) => *f,
            Err(reason) => {
                return Err(Error::BackendUnavailable { backend: Backend::Uring, reason: reason.clone() });
            }
        };
        if let Some(reason) = features.missing() {
            return Err(Error::BackendUnavailable { backend: Backend::Uring, reason });
        }
        let ring = Ring::new(cfg, &features)
            .map_err(|e| Error::WorkerSetup { worker, reason: probe::describe_setup_error(&e) })?;
        if !ring.nodrop() {
            return Err(Error::BackendUnavailable {
                backend: Backend::Uring,
                reason: "io_uring lacks IORING_FEAT_NODROP".to_string(),
            });
        }
        let (count, size) = cfg.recv_buffers();
        let mut bufs =
            BufRing::new(count, size, BGID).map_err(|e| Self::setup_error(worker, "buffer ring", &e))?;
        bufs.register(&ring.submitter()).map_err(|e| Self::setup_error(worker, "register_buf_ring", &e))?;

        let fixed = if cfg.direct_descriptors() && cfg.fixed_files() > 0 {
            // A sparse table may not exceed RLIMIT_NOFILE; clamp rather than fail.
            let limit = nofile_limit().unwrap_or(u64::from(u32::MAX));
            let want = (cfg.fixed_files() as u64).min(limit).min(1 << 20) as u32;
            match FixedTable::register(&ring.submitter(), want) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(worker, "fixed-file table unavailable ({e}); using plain fds");
                    None
                }
            }
        } else {
            None
        };
        let (udp_count, udp_size) = cfg.udp_recv_buffers();
        let mut udp = udp::Udp::new(udp_count, udp_size)
            .map_err(|e| Self::setup_error(worker, "UDP buffer ring", &e))?;
        udp.bufs
            .register(&ring.submitter())
            .map_err(|e| Self::setup_error(worker, "register UDP buffer ring", &e))?;
        let nvme = if cfg.nvme() {
            let entries = (cfg.disk_ops_in_flight().clamp(1, 4096) as u32).next_power_of_two();
            let ring = NvmeRing::new(entries)
                .map_err(|e| Self::setup_error(worker, "NVMe ring (SQE128/CQE32)", &e))?;
            Some(ring)
        } else {
            None
        };
        let wake = Arc::new(EventFd::new().map_err(|e| Self::setup_error(worker, "eventfd", &e))?);
        let stats = BackendStats { recv_buffers_total: count as u64, ..BackendStats::default() };
        let mut d = UringDriver {
            ring,
            features,
            bufs,
            fixed,
            conns: Vec::new(),
            max_conns: cfg.max_connections(),
            zero_copy_local: cfg.zero_copy_local(),
            starved: VecDeque::new(),
            retry: VecDeque::new(),
            deferred: VecDeque::new(),
            wake,
            wake_buf: Box::new(0),
            wake_armed: false,
            stats,
            cqes: Vec::new(),
            epoch: 0,
            owner: thread::current().id(),
            shut: false,
            worker,
            udp,
            disk: disk::Disk::new(nvme),
            _not_send: PhantomData,
        };
        d.arm_wake();
        tracing::debug!(worker, mode = ?d.ring.mode(), "io_uring driver ready");
        Ok(d)
    }

    fn unparker(&self) -> UringUnpark {
        UringUnpark::new(Arc::clone(&self.wake))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { zero_copy: self.features.send_zc, fixed_files: self.fixed.is_some(), nvme: true }
    }

    fn submit(&mut self, op: Op) -> Result<(), SubmitError> {
        debug_assert_eq!(thread::current().id(), self.owner, "driver used off its thread");
        match op {
            Op::Adopt { conn, stream } => self.adopt(conn, stream),
            Op::Connect { conn, addr, opts } => return self.connect(conn, addr, opts),
            Op::RecvStart { conn } => self.recv_start(conn),
            Op::RecvPause { conn } => self.recv_pause(conn),
            Op::Send { conn, buf } => return self.send(conn, buf),
            Op::ShutdownWrite { conn } => self.shutdown_write(conn),
            Op::Close { conn, abort } => self.close(conn, abort),
            op @ (Op::UdpAdopt { .. }
            | Op::UdpRecvStart { .. }
            | Op::UdpConnect { .. }
            | Op::UdpSend { .. }
            | Op::UdpClose { .. }) => return self.udp_submit(op),
            op @ (Op::File { .. } | Op::Nvme { .. }) => return self.disk_submit(op),
        }
        Ok(())
    }

    fn park(&mut self, timeout: Option<Duration>, sink: &mut dyn CompletionSink) -> Result<(), Error> {
        debug_assert_eq!(thread::current().id(), self.owner, "driver used off its thread");
        if self.shut {
            return Ok(());
        }
        // Buffers came back since the last pass: starved receives may go again (the common
        // case, nothing starved, is an inline check).
        if !self.starved.is_empty() {
            self.rearm_starved(u64::MAX);
        }
        if !self.udp.starved.is_empty() {
            self.udp_rearm_starved(u64::MAX);
        }
        self.arm_wake();
        self.drain_retry();
        // Never sleep with completions to hand out or entries not yet in the SQ.
        let idle = self.deferred.is_empty()
            && self.retry.is_empty()
            && self.udp.deferred.is_empty()
            && self.disk.deferred.is_empty();
        let timeout = if idle { timeout } else { Some(Duration::ZERO) };
        let entered = self.enter(timeout, sink);
        self.deliver_deferred(sink);
        self.udp_deliver_deferred(sink);
        self.disk_deliver_deferred(sink);
        self.reap_and_dispatch(sink);
        self.nvme_reap(sink);
        self.arm_nvme_poll();
        self.flush_overflow(sink);
        entered
    }

    fn stats(&self) -> BackendStats {
        BackendStats {
            recv_buffers_free: self.bufs.free() as u64,
            recv_buffers_total: self.bufs.count() as u64,
            recv_buffers_lent: self.bufs.lent(),
            fixed_files_in_use: self.fixed.as_ref().map_or(0, FixedTable::in_use),
            ..self.stats
        }
    }

    fn set_nodelay(&mut self, conn: ConnKey, on: bool) -> io::Result<()> {
        let c = self.conn(conn).ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        c.setsockopt(libc::IPPROTO_TCP, libc::TCP_NODELAY, i32::from(on))
    }

    fn shutdown(&mut self) {
        if self.shut {
            return;
        }
        // Close everything still open; their completions are dropped.
        let mut sink = NullSink;
        // Connections with a zero-copy send in flight are reset, so a stalled peer cannot hold
        // back their notifications past the deadline.
        let keys: Vec<(ConnKey, bool)> = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.closing.is_none())
            .map(|c| (c.key, c.send.as_ref().is_some_and(|s| s.zc)))
            .collect();
        for (key, abort) in keys {
            self.close(key, abort);
        }
        self.udp_close_all();
        self.shut = true;
        self.drain_retry();
        // Cancel every request in the ring, the wake read included.
        let cancel_all = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(encode(Kind::Cancel, ConnKey { index: 0, generation: 0 }));
        self.push_internal(cancel_all);
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        loop {
            self.drain_retry();
            self.deliver_deferred(&mut sink);
            self.udp_deliver_deferred(&mut sink);
            self.disk_deliver_deferred(&mut sink);
            self.reap_and_dispatch(&mut sink);
            self.nvme_reap(&mut sink);
            if self.all_settled() && self.retry.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Err(e) = self.enter(Some(left.min(Duration::from_millis(50))), &mut sink) {
                tracing::error!(worker = self.worker, "io_uring wait failed during shutdown: {e}");
                break;
            }
        }
        self.deliver_deferred(&mut sink);
        self.udp_deliver_deferred(&mut sink);
        self.disk_deliver_deferred(&mut sink);
        let settled = self.all_settled() && self.retry.is_empty();
        self.udp_abandon();
        if !self.disk.settled() {
            tracing::error!(worker = self.worker, "disk operations did not finish; leaking their buffers");
            self.disk.abandon();
        }
        // Connections whose operations never finished: close their fds, leak their memory.
        for slot in &mut self.conns {
            if let Some(c) = slot.take() {
                if c.inflight == 0 {
                    continue;
                }
                if c.fd >= 0 {
                    // SAFETY:
                    // - the connection owns `fd` and closes it once, here; the kernel holds its own
                    //   reference for the requests still in flight.
                    unsafe { libc::close(c.fd) };
                }
                Box::leak(c);
            }
        }
        if settled {
            if let Err(e) = self.udp.bufs.unregister(&self.ring.submitter()) {
                tracing::error!(
                    worker = self.worker,
                    "unregistering the UDP buffer ring failed, leaking it: {e}"
                );
            }
            if let Err(e) = self.bufs.unregister(&self.ring.submitter()) {
                tracing::error!(
                    worker = self.worker,
                    "unregistering the buffer ring failed, leaking it: {e}"
                );
            }
        } else {
            tracing::error!(
                worker = self.worker,
                "io_uring operations did not finish within {SHUTDOWN_WAIT:?}; leaking their memory"
            );
            // Keep the wake target alive: the kernel may still write it.
            let buf = std::mem::replace(&mut self.wake_buf, Box::new(0));
            Box::leak(buf);
            // `bufs` stays registered, so its `Drop` leaks the memory.
        }
    }
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The soft `RLIMIT_NOFILE`.
fn nofile_limit() -> Option<u64> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY:
    // - `rl` is a live, writable `rlimit`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    (rc == 0).then_some(rl.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::SetupMode;

    #[derive(Default)]
    struct CountSink(usize);

    impl CompletionSink for CountSink {
        fn complete(&mut self, _c: Completion<'_>) {
            self.0 += 1;
        }
    }

    #[test]
    fn ring_uses_defer_taskrun_when_probed() {
        let cfg = Config::builder().build().unwrap();
        let d = UringDriver::new(&cfg, 0).unwrap();
        if d.features().defer_taskrun {
            assert_eq!(d.ring.mode(), SetupMode::DeferTaskrun);
        }
        assert!(d.features().missing().is_none());
    }

    #[test]
    fn sqpoll_ring_can_be_built() {
        let cfg = Config::builder().sqpoll(Some(Duration::from_millis(10))).build().unwrap();
        match UringDriver::new(&cfg, 0) {
            Ok(mut d) => {
                assert_eq!(d.ring.mode(), SetupMode::Sqpoll);
                d.park(Some(Duration::ZERO), &mut CountSink::default()).unwrap();
            }
            // SQPOLL may need privileges on some systems; the error must be typed, not a panic.
            Err(e) => eprintln!("sqpoll unavailable: {e}"),
        }
    }

    #[test]
    fn completions_for_unknown_keys_are_counted_not_reported() {
        let cfg = Config::builder().build().unwrap();
        let mut d = UringDriver::new(&cfg, 0).unwrap();
        let ghost = ConnKey { index: 42, generation: 9 };
        for kind in [Kind::Recv, Kind::Send, Kind::Connect] {
            d.push_internal(opcode::Nop::new().build().user_data(encode(kind, ghost)));
        }
        d.push_internal(opcode::Nop::new().build().user_data(0xEE << 56));
        let mut sink = CountSink::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while d.stats().stale_completions < 4 && Instant::now() < deadline {
            d.park(Some(Duration::from_millis(10)), &mut sink).unwrap();
        }
        assert_eq!(d.stats().stale_completions, 4);
        assert_eq!(sink.0, 0);
    }
}
