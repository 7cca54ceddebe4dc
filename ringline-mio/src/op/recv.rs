//! Receiving: `RecvStart`/`RecvPause` and draining a readable socket into the read buffer.
//!
//! Every read goes into the driver's one [`ReadBuf`]. A read of at least [`LEND_MIN_BYTES`] is
//! handed to the core whole, with `CompletionSink::recv_owned` (no copy); the next read then uses
//! the buffer the core handed back, or a new one. Smaller reads are copied by the core as before.

use std::io;
use std::os::fd::AsRawFd;

use ringline_core::driver::{Completion, CompletionSink};

use crate::conn::Conn;

/// Most reads per connection per park before other connections get their turn.
pub(crate) const MAX_READS_PER_PARK: usize = 16;
/// Most bytes per connection per park before other connections get their turn.
pub(crate) const MAX_BYTES_PER_PARK: usize = 256 * 1024;
/// Reads of at least this many bytes are lent to the core (the io_uring backend's threshold).
pub(crate) const LEND_MIN_BYTES: usize = 8192;
/// A lent buffer holds at most this many times the bytes it carries.
const LEND_MAX_WASTE: usize = 4;

/// The worker's read buffer: `size` bytes of capacity, empty between reads.
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    size: usize,
    /// Reads handed to the core in their buffer so far (kept or handed back).
    lent: u64,
}

impl ReadBuf {
    /// A buffer for reads of up to `size` bytes (at least 1).
    pub(crate) fn new(size: usize) -> ReadBuf {
        let size = size.max(1);
        ReadBuf { buf: Vec::with_capacity(size), size, lent: 0 }
    }

    /// One `recv(2)` of up to `size` bytes into the buffer; `Ok(n)` leaves the bytes in it.
    fn read_from(&mut self, conn: &Conn) -> io::Result<usize> {
        self.buf.clear();
        if self.buf.capacity() < self.size {
            self.buf.reserve_exact(self.size);
        }
        let spare = self.buf.spare_capacity_mut();
        let len = spare.len().min(self.size);
        // SAFETY:
        // - `spare` is the vector's allocated, unused capacity: `len` writable bytes that nothing
        //   else references during the call;
        // - the descriptor is the connection's open socket (owned by `conn.stream`).
        let n = unsafe { libc::recv(conn.stream.as_raw_fd(), spare.as_mut_ptr().cast(), len, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(len);
        // SAFETY:
        // - `recv` initialized the first `n <= len <= capacity` bytes.
        unsafe { self.buf.set_len(n) };
        Ok(n)
    }

    /// Reads handed to the core in their buffer so far.
    pub(crate) fn lent(&self) -> u64 {
        self.lent
    }

    /// Hands the bytes read to the core: lent when large, else copied.
    fn deliver(&mut self, conn: &Conn, sink: &mut dyn CompletionSink) {
        let n = self.buf.len();
        if n >= LEND_MIN_BYTES && n >= self.size / LEND_MAX_WASTE {
            let buf = std::mem::take(&mut self.buf);
            self.lent += 1;
            if let Some(back) = sink.recv_owned(conn.key, buf) {
                self.buf = back;
            }
        } else {
            sink.complete(Completion::Recv { conn: conn.key, data: &self.buf });
        }
        self.buf.clear();
    }
}

/// `RecvStart`: resume delivering; ignored after `RecvEnd`.
pub(crate) fn start(conn: &mut Conn) {
    conn.receiving = true;
}

/// `RecvPause`: stop reading; the readable flag is kept for the next `RecvStart`.
pub(crate) fn pause(conn: &mut Conn) {
    conn.receiving = false;
}

/// What [`read_ready`] left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// Nothing more to read now (`WouldBlock`, paused, or the stream ended).
    Idle,
    /// The fair-share cap was hit with the socket still readable: service again next park.
    Capped,
}

/// Reads while receiving and readable, delivering each read (lent or as one `Recv`), until
/// `WouldBlock`, the end of the stream, an error, or the per-park cap.
///
/// A read that fills less than the read buffer found the socket's receive queue drained, so the
/// `read` that would only return `WouldBlock` is skipped: bytes arriving later raise a new edge.
/// Not once an edge reported the read side closed (or an error): the end of the stream raises no
/// further edge, so reading goes on until the read reports it.
pub(crate) fn read_ready(conn: &mut Conn, buf: &mut ReadBuf, sink: &mut dyn CompletionSink) -> ReadOutcome {
    let key = conn.key;
    let (mut reads, mut bytes) = (0usize, 0usize);
    while conn.receiving && !conn.recv_ended && conn.readable {
        if reads >= MAX_READS_PER_PARK || bytes >= MAX_BYTES_PER_PARK {
            return ReadOutcome::Capped;
        }
        match buf.read_from(conn) {
            Ok(0) => {
                conn.recv_ended = true;
                sink.complete(Completion::RecvEnd { conn: key, result: Ok(()) });
            }
            Ok(n) => {
                reads += 1;
                bytes += n;
                if n < buf.size && !conn.read_closed {
                    conn.readable = false;
                }
                buf.deliver(conn, sink);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                conn.recv_ended = true;
                sink.complete(Completion::RecvEnd { conn: key, result: Err(e) });
            }
        }
    }
    ReadOutcome::Idle
}
