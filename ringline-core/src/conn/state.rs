//! The state of one connection slot: receive side, send queue, close progress, waiters.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::task::Waker;
use std::time::Instant;

use bytes::BytesMut;

use crate::buf::SendPart;
use crate::conn::CloseReason;
use crate::error::Error;
use crate::executor::TaskId;

/// Where a slot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not in use.
    Free,
    /// Slot taken by a connect future that has not submitted yet.
    Reserved,
    /// `Connect` submitted, no result yet.
    Connecting,
    /// Adopted or connected.
    Open,
    /// `Close` submitted, waiting for `Closed`.
    Closing,
    /// The backend reported `Closed`; waiting for the holder to let go.
    Closed,
}

/// How the read side ended.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// The peer sent FIN.
    Eof,
    /// Closed locally: reads return `Ok(0)`.
    Local,
    /// An error (reset, ...): reported after the buffered bytes.
    Failed(Error),
}

/// State of the write side.
#[derive(Debug)]
pub(crate) enum WriteState {
    Open,
    /// `shutdown_write()` called: FIN after the queue drains.
    ShutdownPending,
    /// FIN sent (or closing): later sends fail with `Closed`.
    Closed,
    /// A write failed: every queued and later send fails with this error.
    Failed(io::Error),
}

/// How a close was requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseMode {
    Graceful,
    Abort,
}

/// Progress of an outbound connect.
#[derive(Debug)]
pub(crate) enum ConnectResult {
    Pending,
    Done(Result<(), Error>),
    Taken,
}

/// One connection slot.
pub(crate) struct Conn {
    pub(crate) generation: u32,
    pub(crate) phase: Phase,
    pub(crate) outbound: bool,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) acc: BytesMut,
    pub(crate) read_end: Option<ReadEnd>,
    pub(crate) recv_active: bool,
    pub(crate) recv_paused: bool,
    pub(crate) recv_waiters: Vec<Waker>,
    pub(crate) queue: VecDeque<SendPart>,
    /// Bytes committed and not yet acknowledged (in flight included).
    pub(crate) queued: usize,
    pub(crate) in_flight: bool,
    /// Stream offset after the last committed byte.
    pub(crate) committed: u64,
    /// Stream offset after the last acknowledged byte.
    pub(crate) acked: u64,
    pub(crate) send_waiters: Vec<(u64, Waker)>,
    pub(crate) admission: VecDeque<(u64, Waker)>,
    pub(crate) next_ticket: u64,
    pub(crate) write: WriteState,
    pub(crate) close: Option<CloseMode>,
    pub(crate) close_submitted: bool,
    pub(crate) linger_deadline: Option<Instant>,
    /// A graceful close armed `linger_deadline`.
    pub(crate) close_linger_armed: bool,
    /// The task (inbound) or `OwnedConn`/connect future (outbound) still holds the slot.
    pub(crate) held: bool,
    pub(crate) task: Option<TaskId>,
    pub(crate) reason: Option<CloseReason>,
    pub(crate) connect: ConnectResult,
    pub(crate) connect_waiter: Option<Waker>,
    pub(crate) dirty: bool,
    /// Last time the handler consumed input or a send made progress; `Some` only with
    /// `idle_timeout` configured.
    pub(crate) last_progress: Option<std::time::Instant>,
    /// The stream layer (TLS) of this connection; `None` for plain TCP.
    pub(crate) layer: Option<Box<super::layer::LayerState>>,
}

impl Conn {
    pub(crate) fn new() -> Self {
        Conn {
            generation: 0,
            phase: Phase::Free,
            outbound: false,
            peer: None,
            local: None,
            acc: BytesMut::new(),
            read_end: None,
            recv_active: false,
            recv_paused: false,
            recv_waiters: Vec::new(),
            queue: VecDeque::new(),
            queued: 0,
            in_flight: false,
            committed: 0,
            acked: 0,
            send_waiters: Vec::new(),
            admission: VecDeque::new(),
            next_ticket: 0,
            write: WriteState::Open,
            close: None,
            close_submitted: false,
            linger_deadline: None,
            close_linger_armed: false,
            held: false,
            task: None,
            reason: None,
            connect: ConnectResult::Pending,
            connect_waiter: None,
            dirty: false,
            last_progress: None,
            layer: None,
        }
    }

    /// Resets everything but the generation for a new occupant.
    pub(crate) fn reset(&mut self) {
        let generation = self.generation;
        *self = Conn::new();
        self.generation = generation;
    }

    pub(crate) fn wake_readers(&mut self) {
        for w in self.recv_waiters.drain(..) {
            w.wake();
        }
    }

    pub(crate) fn wake_senders(&mut self) {
        for (_, w) in self.send_waiters.drain(..) {
            w.wake();
        }
        if let Some((_, w)) = self.admission.front() {
            w.wake_by_ref();
        }
    }

    pub(crate) fn add_reader(&mut self, w: &Waker) {
        if !self.recv_waiters.iter().any(|x| x.will_wake(w)) {
            self.recv_waiters.push(w.clone());
        }
    }

    /// Notes progress for `idle_timeout` (input consumed or bytes acknowledged).
    pub(crate) fn touch(&mut self) {
        if self.last_progress.is_some() {
            self.last_progress = Some(std::time::Instant::now());
        }
    }

    /// Records the first close reason only.
    pub(crate) fn set_reason(&mut self, r: CloseReason) {
        self.reason.get_or_insert(r);
    }
}
