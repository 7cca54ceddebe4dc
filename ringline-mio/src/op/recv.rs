//! Receiving: `RecvStart`/`RecvPause` and draining a readable socket into the scratch buffer.

use std::io::{self, Read};

use ringline_core::driver::{Completion, CompletionSink};

use crate::conn::Conn;

/// Most reads per connection per park before other connections get their turn.
pub(crate) const MAX_READS_PER_PARK: usize = 16;
/// Most bytes per connection per park before other connections get their turn.
pub(crate) const MAX_BYTES_PER_PARK: usize = 256 * 1024;

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

/// Reads while receiving and readable, delivering one `Recv` per read, until `WouldBlock`, the end
/// of the stream, an error, or the per-park cap.
///
/// A read that fills less than `scratch` found the socket's receive queue drained, so the
/// `read` that would only return `WouldBlock` is skipped: bytes arriving later raise a new edge.
/// Not once an edge reported the read side closed (or an error): the end of the stream raises no
/// further edge, so reading goes on until the read reports it.
pub(crate) fn read_ready(conn: &mut Conn, scratch: &mut [u8], sink: &mut dyn CompletionSink) -> ReadOutcome {
    let key = conn.key;
    let (mut reads, mut bytes) = (0usize, 0usize);
    while conn.receiving && !conn.recv_ended && conn.readable {
        if reads >= MAX_READS_PER_PARK || bytes >= MAX_BYTES_PER_PARK {
            return ReadOutcome::Capped;
        }
        match (&conn.stream).read(scratch) {
            Ok(0) => {
                conn.recv_ended = true;
                sink.complete(Completion::RecvEnd { conn: key, result: Ok(()) });
            }
            Ok(n) => {
                reads += 1;
                bytes += n;
                if n < scratch.len() && !conn.read_closed {
                    conn.readable = false;
                }
                sink.complete(Completion::Recv { conn: key, data: &scratch[..n] });
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
