//! [`Conn`]: what the backend keeps per open connection.

use mio::net::TcpStream;
use ringline_core::buf::SendBuf;
use ringline_core::driver::ConnKey;

/// One registered TCP connection and its readiness and operation state.
pub(crate) struct Conn {
    /// The key the core opened this connection with (the generation is checked on every lookup).
    pub(crate) key: ConnKey,
    /// The non-blocking socket.
    pub(crate) stream: TcpStream,
    /// Registered with the poll instance (false only after a failed registration).
    pub(crate) registered: bool,
    /// An outbound connect has not reported `Connected` yet.
    pub(crate) connecting: bool,
    /// `RecvStart` is in effect (cleared by `RecvPause`).
    pub(crate) receiving: bool,
    /// `RecvEnd` was reported; nothing more is read.
    pub(crate) recv_ended: bool,
    /// The last edge said readable and no read returned `WouldBlock` since.
    pub(crate) readable: bool,
    /// The last edge said writable and no write returned `WouldBlock` since.
    pub(crate) writable: bool,
    /// An edge reported the read side closed or an error: reads go on until they say so, never
    /// stopping early at a short read.
    pub(crate) read_closed: bool,
    /// The send in flight (at most one), with its progress.
    pub(crate) send: Option<SendBuf>,
    /// Already on the driver's list of connections to service this park.
    pub(crate) queued: bool,
}

impl Conn {
    /// A connection for `stream`, not yet receiving and with no readiness seen.
    pub(crate) fn new(key: ConnKey, stream: TcpStream, connecting: bool) -> Self {
        Conn {
            key,
            stream,
            registered: false,
            connecting,
            receiving: false,
            recv_ended: false,
            readable: false,
            writable: false,
            read_closed: false,
            send: None,
            queued: false,
        }
    }

    /// Records a readiness event.
    pub(crate) fn on_event(&mut self, event: &mio::event::Event) {
        // Errors and hang-ups are surfaced by the next read or write, so they count as readiness.
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.readable = true;
        }
        if event.is_read_closed() || event.is_error() {
            self.read_closed = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            self.writable = true;
        }
    }

    /// True when servicing the connection now could make progress.
    pub(crate) fn has_work(&self) -> bool {
        if self.connecting {
            return self.writable;
        }
        (self.send.is_some() && self.writable) || (self.receiving && !self.recv_ended && self.readable)
    }
}
