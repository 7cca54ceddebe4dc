//! The backend contract: what a backend (io_uring, mio, or the test `MockDriver`) owes the core.
//!
//! The core owns every connection's state: accumulators, send queues, waiters, timers. A backend
//! only moves bytes between sockets and the core. It accepts operations through [`Driver::submit`]
//! and reports their results, from [`Driver::park`] only, to a [`CompletionSink`].
//!
//! # Obligations of a backend
//!
//! 1. **One thread.** A driver is built on its worker thread, is `!Send`, and every method is called
//!    from that thread. Only its [`Unpark`] crosses threads.
//! 2. **Never block, never complete inline.** `submit` queues work and returns. `park` blocks at most
//!    until `timeout`, an unpark, or a completion, and retries `EINTR`/`EAGAIN`/`EBUSY` itself.
//! 3. **Nothing accepted is dropped.** `submit` may refuse only with [`SubmitError::Full`], handing
//!    the operation back; the core offers it again after the next `park`.
//! 4. **Keys.** A [`ConnKey`] is (slot index, generation). Every key the core opens with
//!    [`Op::Adopt`] or [`Op::Connect`] is later closed with exactly one [`Op::Close`], also after a
//!    failed connect, and the backend answers with exactly one [`Completion::Closed`] once every
//!    operation on the key reached its terminal completion and the fd is closed. Only then may the
//!    core reuse the slot. A kernel event for a key the backend no longer knows is never reported:
//!    the backend releases what it carries and counts it in `stale_completions`.
//! 5. **Receiving.** After [`Op::RecvStart`] the backend delivers [`Completion::Recv`] for every
//!    chunk of bytes, in order, until [`Op::RecvPause`], [`Op::Close`], or the end of the stream,
//!    which it reports once with [`Completion::RecvEnd`] (`Ok` for FIN, `Err` for a reset or other
//!    error). No `Recv` follows a `RecvEnd`. The core copies `data` before `complete` returns.
//!    `RecvStart` after a pause resumes; after `RecvEnd` it is ignored. A backend that runs out of
//!    receive buffers reports [`Completion::RecvStarved`] and resumes by itself when buffers return.
//!    **Lending.** Instead of a `Recv`, a backend may deliver a chunk in memory it gives away, with
//!    [`CompletionSink::recv_owned`]: the chunk is the whole `Vec` (its length), it takes the place
//!    of a `Recv` in the order above, and from the call on nothing else (the kernel included) may
//!    read or write that memory: a provided-buffer ring entry that named it points at other
//!    memory before the kernel can pick it again. The core either keeps the `Vec` (`None`) or
//!    copies the bytes before returning and hands the `Vec` back (`Some`), for the backend to
//!    reuse or free. Every other rule of `Recv` (keys, pause, end of stream) applies unchanged.
//! 6. **Sending.** The core keeps at most one [`Op::Send`] in flight per connection. The backend
//!    writes every byte of the [`SendBuf`] (continuing partial writes itself, in order) and then
//!    returns it once in [`Completion::Sent`] with `Ok(total_len)`, or with the error that stopped
//!    it; only after the terminal completion (a zero-copy notification included). Until then the
//!    memory named by the buffer must stay untouched (it does not move with the `SendBuf`).
//! 7. **Half-close and close.** [`Op::ShutdownWrite`] is submitted only with no send in flight; it
//!    sends FIN and completes silently. [`Op::Close`] cancels armed operations (their completions
//!    still arrive: an in-flight send comes back in `Sent`, with an error if it was cut short),
//!    shuts the socket down so the peer sees EOF, closes it (with `SO_LINGER {on, 0}` when `abort`),
//!    then reports `Closed`.
//! 8. **Unpark.** [`Unpark::unpark`] from any thread makes the current or next `park` return soon.
//! 9. **UDP.** Every [`UdpKey`] opened with [`Op::UdpAdopt`] is closed with exactly one
//!    [`Op::UdpClose`], answered by exactly one [`Completion::UdpClosed`] after every operation on
//!    the socket reached its terminal completion and the fd is closed; stale socket events are
//!    dropped and counted like stale connection events. After [`Op::UdpRecvStart`] the backend
//!    delivers each received datagram once, whole, in one [`Completion::Datagram`] (never several
//!    merged; zero-length ones too); a datagram larger than `udp_recv_buffers` size is reported
//!    with `truncated: true` (the core drops and counts it). Receive errors (an ICMP error on a
//!    connected socket) come as [`Completion::UdpError`] and receiving continues. Every
//!    [`Op::UdpSend`] is answered by one [`Completion::UdpSent`] returning its buffer, **in
//!    submission order per socket** (the core matches results to senders by order); the memory
//!    of the buffer and the destination address stay untouched until then. [`Op::UdpConnect`]
//!    sets the socket's default peer; later `UdpSend`s with `peer: None` go there.
//! 10. **Disk.** Every [`Op::File`] is answered by exactly one [`Completion::File`] and every
//!     [`Op::Nvme`] by exactly one [`Completion::Nvme`] with the same [`DiskKey`], returning the
//!     operation's buffer (and, for `FileOp::Open`, the new descriptor). Until then the buffer's
//!     memory and the descriptor stay untouched by anyone else: the backend holds the buffer (and
//!     an `Arc` of the descriptor) in its in-flight state. Disk completions are told apart from
//!     connection and UDP ones by their kind, never by the key's bits alone. A backend without
//!     NVMe passthrough reports `Capabilities::nvme == false`; the core then never submits
//!     `Op::Nvme` (it would be answered with an `Unsupported` error).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::buf::SendBuf;
use crate::config::Config;
pub use crate::disk::{AlignedBuf, DiskKey, FileBuf, FileOp, NvmeError, NvmeOp, OpenFlags};
use crate::error::Error;

/// A connection slot: index plus generation. Stale keys never reach a newer occupant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Slot index in the worker's connection table (< 2^24).
    pub index: u32,
    /// Generation of the slot; bumped on every release.
    pub generation: u32,
}

impl ConnKey {
    /// Packs the key into 56 bits: generation in the high 32 bits of the low 56, index below.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 24) | u64::from(self.index & 0x00FF_FFFF)
    }
    /// The inverse of [`ConnKey::to_u64`] (ignores bits above 56).
    pub fn from_u64(v: u64) -> ConnKey {
        ConnKey { index: (v & 0x00FF_FFFF) as u32, generation: ((v >> 24) & 0xFFFF_FFFF) as u32 }
    }
}

/// A UDP socket slot: index plus generation, like [`ConnKey`] but in its own table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpKey {
    /// Slot index in the worker's UDP socket table (< 2^24).
    pub index: u32,
    /// Generation of the slot; bumped on every release.
    pub generation: u32,
}

impl UdpKey {
    /// Packs the key into 56 bits, as [`ConnKey::to_u64`] does.
    pub fn to_u64(self) -> u64 {
        ConnKey { index: self.index, generation: self.generation }.to_u64()
    }
    /// The inverse of [`UdpKey::to_u64`] (ignores bits above 56).
    pub fn from_u64(v: u64) -> UdpKey {
        let k = ConnKey::from_u64(v);
        UdpKey { index: k.index, generation: k.generation }
    }
}

/// True when `peer` is on this host: a loopback address, or the socket's own local address
/// (traffic to one of the host's own addresses is looped back too). IPv4-mapped IPv6 addresses
/// count as their IPv4 form.
pub fn same_host(peer: &SocketAddr, local: &SocketAddr) -> bool {
    let peer_ip = peer.ip().to_canonical();
    peer_ip.is_loopback() || peer_ip == local.ip().to_canonical()
}

/// Socket options applied to outbound sockets (inbound ones arrive configured).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketOpts {
    /// `TCP_NODELAY`.
    pub nodelay: bool,
    /// `SO_SNDBUF`.
    pub send_buffer: Option<usize>,
    /// `SO_RCVBUF`.
    pub recv_buffer: Option<usize>,
}

/// One request from the core to the backend.
#[derive(Debug)]
pub enum Op {
    /// Take over an accepted stream (already non-blocking, options applied). No completion; a
    /// registration failure is reported as `RecvEnd { result: Err(..) }`.
    Adopt {
        /// The slot the core assigned.
        conn: ConnKey,
        /// The accepted stream.
        stream: TcpStream,
    },
    /// Open a socket, apply `opts`, and connect it to `addr`; completes with `Connected`.
    Connect {
        /// The slot the core assigned.
        conn: ConnKey,
        /// Destination.
        addr: SocketAddr,
        /// Options for the new socket.
        opts: SocketOpts,
    },
    /// Start (or resume) delivering received bytes.
    RecvStart {
        /// The connection.
        conn: ConnKey,
    },
    /// Stop delivering received bytes until the next `RecvStart` (TCP backpressure).
    RecvPause {
        /// The connection.
        conn: ConnKey,
    },
    /// Write all of `buf`; completes with `Sent`.
    Send {
        /// The connection.
        conn: ConnKey,
        /// What to write, in order.
        buf: SendBuf,
    },
    /// Send FIN; the read side stays open. No completion.
    ShutdownWrite {
        /// The connection.
        conn: ConnKey,
    },
    /// Cancel everything on the key, close the socket, then report `Closed`.
    Close {
        /// The connection.
        conn: ConnKey,
        /// Reset the connection (`SO_LINGER {on, 0}`) instead of a graceful close.
        abort: bool,
    },
    /// Take over a bound UDP socket (any blocking mode; the backend sets the one it needs). No
    /// completion; a registration failure is reported as `UdpError`.
    UdpAdopt {
        /// The slot the core assigned.
        sock: UdpKey,
        /// The bound socket.
        socket: std::net::UdpSocket,
    },
    /// Start delivering datagrams (`Datagram`); there is no pause for UDP.
    UdpRecvStart {
        /// The socket.
        sock: UdpKey,
    },
    /// `connect(2)` the socket to `peer` (default destination and receive filter). No completion;
    /// a failure is reported as `UdpError`.
    UdpConnect {
        /// The socket.
        sock: UdpKey,
        /// The peer.
        peer: SocketAddr,
    },
    /// Send all of `buf` as one datagram to `peer` (`None`: the connected peer); completes with
    /// `UdpSent`, in submission order per socket.
    UdpSend {
        /// The socket.
        sock: UdpKey,
        /// Destination, or `None` for the connected peer.
        peer: Option<SocketAddr>,
        /// The datagram, possibly in several parts (sent gathered).
        buf: SendBuf,
    },
    /// Cancel the socket's receive, let in-flight sends finish (or cancel them), close the fd,
    /// then report `UdpClosed`.
    UdpClose {
        /// The socket.
        sock: UdpKey,
    },
    /// A file operation; completes with one `Completion::File` for `key`.
    File {
        /// The disk slot the core assigned.
        key: DiskKey,
        /// What to do, with its owned buffer and descriptor.
        op: FileOp,
    },
    /// An NVMe passthrough command; completes with one `Completion::Nvme` for `key`.
    Nvme {
        /// The disk slot the core assigned.
        key: DiskKey,
        /// The command, with its owned buffer and descriptor.
        op: NvmeOp,
    },
}

impl Op {
    /// The connection this operation is about; for UDP operations, the socket's key in
    /// `ConnKey` form (see [`Op::udp_sock`]).
    pub fn conn(&self) -> ConnKey {
        match self {
            Op::Adopt { conn, .. }
            | Op::Connect { conn, .. }
            | Op::RecvStart { conn }
            | Op::RecvPause { conn }
            | Op::Send { conn, .. }
            | Op::ShutdownWrite { conn }
            | Op::Close { conn, .. } => *conn,
            Op::UdpAdopt { sock, .. }
            | Op::UdpRecvStart { sock }
            | Op::UdpConnect { sock, .. }
            | Op::UdpSend { sock, .. }
            | Op::UdpClose { sock } => ConnKey { index: sock.index, generation: sock.generation },
            Op::File { key, .. } | Op::Nvme { key, .. } => {
                ConnKey { index: key.index, generation: key.generation }
            }
        }
    }

    /// The disk slot this operation is about, for file and NVMe operations.
    pub fn disk_key(&self) -> Option<DiskKey> {
        match self {
            Op::File { key, .. } | Op::Nvme { key, .. } => Some(*key),
            _ => None,
        }
    }

    /// The UDP socket this operation is about, for UDP operations.
    pub fn udp_sock(&self) -> Option<UdpKey> {
        match self {
            Op::UdpAdopt { sock, .. }
            | Op::UdpRecvStart { sock }
            | Op::UdpConnect { sock, .. }
            | Op::UdpSend { sock, .. }
            | Op::UdpClose { sock } => Some(*sock),
            _ => None,
        }
    }
}

/// One result from the backend to the core, delivered during [`Driver::park`].
#[derive(Debug)]
pub enum Completion<'a> {
    /// Bytes received, in stream order. The core copies them before returning (see
    /// [`CompletionSink::recv_owned`] for bytes in a buffer the backend gives away).
    Recv {
        /// The connection.
        conn: ConnKey,
        /// The bytes; valid only during the call.
        data: &'a [u8],
    },
    /// The read side ended: `Ok` for FIN, `Err` for a reset or other error. Sent once.
    RecvEnd {
        /// The connection.
        conn: ConnKey,
        /// How it ended.
        result: io::Result<()>,
    },
    /// The backend has no receive buffers; it resumes receiving by itself when they return.
    RecvStarved {
        /// The connection.
        conn: ConnKey,
    },
    /// A `Send` finished: all of `buf` was acknowledged, or an error ended it.
    Sent {
        /// The connection.
        conn: ConnKey,
        /// The buffer handed to `submit`, returned for release.
        buf: SendBuf,
        /// `Ok(total_len)` or the error.
        result: io::Result<usize>,
    },
    /// A `Connect` finished; `Ok` carries the local address.
    Connected {
        /// The connection.
        conn: ConnKey,
        /// Local address, or the connect error.
        result: io::Result<SocketAddr>,
    },
    /// The key's fd is closed and nothing is in flight: the slot may be reused.
    Closed {
        /// The connection.
        conn: ConnKey,
    },
    /// One received datagram. The core copies it before returning.
    Datagram {
        /// The socket.
        sock: UdpKey,
        /// The payload (partial when `truncated`); valid only during the call.
        data: &'a [u8],
        /// The sender.
        peer: SocketAddr,
        /// The datagram was larger than the receive buffer: it is dropped and counted.
        truncated: bool,
    },
    /// A receive error on the socket (an ICMP error on a connected socket); receiving goes on.
    UdpError {
        /// The socket.
        sock: UdpKey,
        /// The error.
        error: io::Error,
    },
    /// The socket's fd is closed and nothing is in flight: the slot may be reused.
    UdpClosed {
        /// The socket.
        sock: UdpKey,
    },
    /// A `UdpSend` finished (in submission order per socket).
    UdpSent {
        /// The socket.
        sock: UdpKey,
        /// The buffer handed to `submit`, returned for release.
        buf: SendBuf,
        /// `Ok(bytes sent)` or the error.
        result: io::Result<usize>,
    },
    /// A file operation finished (its terminal completion).
    File {
        /// The operation's slot.
        key: DiskKey,
        /// `Ok(bytes)` for reads and writes, `Ok(size)` / `Ok(alignment)` for the `statx` ones,
        /// `Ok(0)` otherwise; or the OS error.
        result: io::Result<usize>,
        /// The operation's buffer, returned.
        buf: Option<FileBuf>,
        /// The descriptor a `FileOp::Open` produced (or a `Close`'s, if it was never closed).
        fd: Option<std::os::fd::OwnedFd>,
    },
    /// An NVMe command finished (its terminal completion).
    Nvme {
        /// The command's slot.
        key: DiskKey,
        /// `Ok` for status 0; else the status word or the submission error.
        result: Result<(), NvmeError>,
        /// The command's buffer, returned.
        buf: Option<AlignedBuf>,
    },
}

/// Receives completions during [`Driver::park`]; implemented by the core.
pub trait CompletionSink {
    /// Handles one completion.
    fn complete(&mut self, c: Completion<'_>);

    /// Bytes received into memory the backend gives away: a [`Completion::Recv`] of `data`
    /// whose buffer the core may keep instead of copying it (obligation 5, lending).
    ///
    /// Returns `None` when the core kept `data`, or `Some(data)` once the bytes were copied (or
    /// dropped, for a stale key or a closed read side), handing the buffer back to the backend.
    /// The default copies through [`CompletionSink::complete`] and hands the buffer back.
    fn recv_owned(&mut self, conn: ConnKey, data: Vec<u8>) -> Option<Vec<u8>> {
        self.complete(Completion::Recv { conn, data: &data });
        Some(data)
    }
}

/// Why [`Driver::submit`] refused an operation.
#[derive(Debug)]
pub enum SubmitError {
    /// No room right now; the operation is handed back and offered again after the next `park`.
    Full(Op),
}

/// What a backend can do beyond the contract; only switches code paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Zero-copy sends with a kernel notification.
    pub zero_copy: bool,
    /// A registered-file table is in use.
    pub fixed_files: bool,
    /// NVMe passthrough (`Op::Nvme`) is implemented (it still needs `Config::nvme(true)`).
    pub nvme: bool,
}

/// Counters and gauges only a backend can produce; read by the core once per loop iteration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Times the receive-buffer ring ran dry (`ENOBUFS`).
    pub recv_buffer_exhausted: u64,
    /// Starved receives re-armed after buffers returned.
    pub recv_rearms_after_refill: u64,
    /// One-shot receives into runtime memory while starved.
    pub recv_fallbacks: u64,
    /// Multishot receives re-armed after they ended (no `F_MORE`).
    pub recv_rearms: u64,
    /// Free receive buffers (gauge).
    pub recv_buffers_free: u64,
    /// Receive buffers in the ring (gauge).
    pub recv_buffers_total: u64,
    /// Received chunks whose buffer was given to the core instead of copied (see
    /// [`CompletionSink::recv_owned`]).
    pub recv_buffers_lent: u64,
    /// Waits or submits retried after `EINTR`/`EAGAIN`/`EBUSY`.
    pub submit_retries: u64,
    /// Submission-queue-full events answered by submit-and-retry.
    pub sq_full_retries: u64,
    /// Completion-queue overflows seen.
    pub cq_overflows: u64,
    /// Kernel events for keys no longer known, released and dropped.
    pub stale_completions: u64,
    /// Fixed-file table entries in use (gauge).
    pub fixed_files_in_use: u64,
    /// Sockets that used their plain fd because the fixed table was full.
    pub fixed_file_fallbacks: u64,
    /// Sends that went out zero-copy.
    pub zero_copy_sends: u64,
}

/// Wakes a parked driver from any thread.
pub trait Unpark: Send + Sync + Clone + 'static {
    /// Makes the current or next `park` return soon. Never blocks; idempotent; safe to call after
    /// the driver is gone (it then does nothing).
    fn unpark(&self);
}

/// A backend: one per worker, built and used on that worker's thread.
pub trait Driver: Sized + 'static {
    /// Short lowercase name: `uring`, `mio`, `mock`, ...
    const NAME: &'static str;
    /// The cross-thread waker of this driver.
    type Unpark: Unpark;

    /// Builds the backend for worker `worker` on the calling thread.
    fn new(cfg: &Config, worker: usize) -> Result<Self, Error>;
    /// A handle that wakes this driver's `park` from any thread.
    fn unparker(&self) -> Self::Unpark;
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;
    /// Queues one operation. Never blocks and never completes it inline.
    fn submit(&mut self, op: Op) -> Result<(), SubmitError>;
    /// Submits what is queued, waits for a completion, an unpark or `timeout` (`None` = no bound,
    /// `ZERO` = do not block), delivers every available completion to `sink`, and returns. Retries
    /// interrupted waits itself; `Err` only for fatal errors.
    fn park(&mut self, timeout: Option<Duration>, sink: &mut dyn CompletionSink) -> Result<(), Error>;
    /// Counters and gauges of the backend.
    fn stats(&self) -> BackendStats;
    /// Sets `TCP_NODELAY` on an open connection.
    fn set_nodelay(&mut self, conn: ConnKey, on: bool) -> io::Result<()>;
    /// Releases everything still open; called once after the last `Closed` was reported, or at a
    /// deadline. Must wait (bounded) for terminal completions before freeing memory the kernel may
    /// still use, and leak rather than free if they never come.
    fn shutdown(&mut self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_knows_loopback_and_own_addresses() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(same_host(&a("127.0.0.1:1"), &a("127.0.0.1:2")));
        assert!(same_host(&a("127.3.4.5:1"), &a("10.0.0.1:2")));
        assert!(same_host(&a("[::1]:1"), &a("[::1]:2")));
        assert!(same_host(&a("[::ffff:127.0.0.1]:1"), &a("[::ffff:10.0.0.1]:2")));
        assert!(same_host(&a("10.0.0.1:1"), &a("10.0.0.1:2")));
        assert!(same_host(&a("[::ffff:10.0.0.1]:1"), &a("10.0.0.1:2")));
        assert!(!same_host(&a("10.0.0.2:1"), &a("10.0.0.1:2")));
        assert!(!same_host(&a("[2001:db8::2]:1"), &a("[2001:db8::1]:2")));
    }

    #[test]
    fn conn_key_round_trips_through_u64() {
        for (index, generation) in [(0, 0), (1, 1), (0xFF_FFFF, u32::MAX), (12345, 678)] {
            let k = ConnKey { index, generation };
            assert_eq!(ConnKey::from_u64(k.to_u64()), k);
            assert!(k.to_u64() < 1 << 56);
        }
    }
}
