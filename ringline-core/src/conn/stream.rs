//! The `futures-io` adapter: [`ConnStream`], an `AsyncRead` + `AsyncBufRead` + `AsyncWrite` view
//! of a connection (feature `futures-io`).
//!
//! A stream has no buffers or queues of its own: it reads from the connection's accumulator and
//! writes into the connection's send queue, through the same admission rule as `send`. Native
//! calls and any number of streams on one connection therefore interleave in call order (API R2).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_io::{AsyncBufRead, AsyncRead, AsyncWrite};

use super::ConnCtx;
use super::send::{poll_admit_copy, release_ticket};
use super::state::{Conn, ReadEnd};
use crate::error::Error;

/// Spare accumulator room kept once the buffered bytes were taken out (as `recv` does).
const KEEP_SPARE_BYTES: usize = 64 * 1024;

impl ConnCtx {
    /// A `futures-io` view of this connection: [`AsyncRead`], [`AsyncBufRead`] and
    /// [`AsyncWrite`] over the same receive buffer and send queue as the native calls.
    ///
    /// Creating a stream is free and changes nothing; several streams (e.g. one to read, one to
    /// write) and native calls may be used on one connection at once.
    pub fn stream(&self) -> ConnStream {
        ConnStream { conn: *self, held: Bytes::new(), ticket: None }
    }
}

/// A connection as a `futures-io` byte stream (feature `futures-io`); made by [`ConnCtx::stream`].
///
/// - **Reading** ([`AsyncRead::poll_read`]) copies buffered bytes out, waiting for at least one;
///   `Ok(0)` at end of stream (peer FIN, or after a local `close`). Errors follow the rules of
///   [`ConnCtx::recv`]: they come after the buffered bytes, and during shutdown a read that would
///   wait on an empty buffer fails with `ShuttingDown` (kind `ConnectionAborted`).
/// - **Buffered reading** ([`AsyncBufRead::poll_fill_buf`]) detaches everything buffered into the
///   stream (O(1), no copy) and hands it out until [`AsyncBufRead::consume`]d. Bytes held by a
///   stream are invisible to native readers (and other streams) of the connection until consumed;
///   reads of this stream serve them first. Dropping the stream puts unconsumed ones back in front
///   of the connection's buffer, so nothing is lost or reordered.
/// - **Writing** ([`AsyncWrite::poll_write`]) waits for admission like [`ConnCtx::send`] (queue
///   below `send_queue_limit`, no earlier send waiting), then copies the whole buffer into the
///   send queue and returns `Ok(buf.len())`; the bytes are *committed*, not yet written.
///   `poll_write_vectored` commits all slices as one contiguous send. A write that returned
///   `Pending` keeps the stream's place in the admission queue for the next write of the stream
///   (any buffer); `poll_flush`, `poll_close` and dropping the stream give an unused place up.
///   Until then, later native sends on the connection wait behind it, as they wait behind an
///   unadmitted `send` future that was neither awaited nor dropped.
/// - **Flushing** ([`AsyncWrite::poll_flush`]) is [`ConnCtx::flush`]: ready once every byte
///   committed so far (by any caller) was acknowledged by the kernel, or with the write error.
/// - **Closing** ([`AsyncWrite::poll_close`]) is [`ConnCtx::shutdown_write`] (FIN after the
///   queued bytes; reading continues), then flush. It does not close the connection.
/// - Errors are [`Error`]s converted by `From<Error> for io::Error`, kind preserved
///   (`Closed`/`InvalidConnection` are `NotConnected`; a reset is `ConnectionReset`).
/// - Dropping the stream does nothing to the connection: no close, no flush, no FIN.
///
/// Like [`ConnCtx`], a stream is `!Send` and works only on its worker; once the connection's slot
/// was released it reports `InvalidConnection` and never touches a newer occupant.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ringline_core::conn::ConnStream>();
/// ```
#[derive(Debug)]
pub struct ConnStream {
    conn: ConnCtx,
    /// Bytes detached by `poll_fill_buf`, not consumed yet.
    held: Bytes,
    /// This stream's place in the admission queue while a write waits.
    ticket: Option<u64>,
}

impl ConnStream {
    /// The connection this stream reads and writes.
    pub fn ctx(&self) -> ConnCtx {
        self.conn
    }

    /// Gives up a waiting write's admission place, if any.
    fn release_ticket(&mut self) {
        if let Some(t) = self.ticket.take() {
            release_ticket(&self.conn, t);
        }
    }

    /// Polls a flush of everything committed so far.
    fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut flush = self.conn.flush();
        std::future::Future::poll(Pin::new(&mut flush), cx).map_err(io::Error::from)
    }
}

/// Runs `take` on the buffered bytes if there are any (`Some`), else reports the end of the read
/// side (`None`) or its error, or registers the waker: the rules of `recv`.
fn poll_buffered<T>(
    conn: &ConnCtx,
    cx: &Context<'_>,
    take: impl FnOnce(&mut Conn) -> T,
) -> Poll<Result<Option<T>, Error>> {
    let key = conn.key;
    let r = conn.with_table(|core, conns| {
        let c = conns.get(key).ok_or(Error::InvalidConnection)?;
        if !c.acc.is_empty() {
            let out = take(c);
            c.touch();
            conns.mark_dirty(key);
            return Ok(Some(Some(out)));
        }
        match &c.read_end {
            Some(ReadEnd::Eof | ReadEnd::Local) => return Ok(Some(None)),
            Some(ReadEnd::Failed(e)) => return Err(e.duplicate()),
            None => {}
        }
        if core.shutting_down.get() {
            return Err(Error::ShuttingDown);
        }
        c.add_reader(cx.waker());
        Ok(None)
    });
    match r {
        Ok(Ok(Some(found))) => Poll::Ready(Ok(found)),
        Ok(Ok(None)) => Poll::Pending,
        Ok(Err(e)) | Err(e) => Poll::Ready(Err(e)),
    }
}

impl AsyncRead for ConnStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !this.held.is_empty() {
            let n = buf.len().min(this.held.len());
            buf[..n].copy_from_slice(&this.held[..n]);
            this.held.advance(n);
            return Poll::Ready(Ok(n));
        }
        let r = poll_buffered(&this.conn, cx, |c| {
            let n = buf.len().min(c.acc.len());
            buf[..n].copy_from_slice(&c.acc[..n]);
            c.acc.advance(n);
            if c.acc.is_empty() && c.acc.capacity() > KEEP_SPARE_BYTES {
                // Release a large drained buffer, as `recv` does, so an idle connection stays small.
                c.acc = BytesMut::new();
            }
            n
        });
        r.map(|r| r.map(|n| n.unwrap_or(0)).map_err(io::Error::from))
    }
}

impl AsyncBufRead for ConnStream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.held.is_empty() {
            let r = poll_buffered(&this.conn, cx, |c| {
                // Detach the bytes but keep modest spare room in the slot for the next receive.
                let mut acc = std::mem::take(&mut c.acc);
                let out = acc.split().freeze();
                if acc.capacity() <= KEEP_SPARE_BYTES {
                    c.acc = acc;
                }
                out
            });
            match r {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Ready(Ok(Some(bytes))) => this.held = bytes,
                Poll::Ready(Ok(None)) => {}
            }
        }
        Poll::Ready(Ok(&this.held[..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        let n = amt.min(this.held.len());
        this.held.advance(n);
    }
}

impl AsyncWrite for ConnStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_admit_copy(&this.conn, &mut this.ticket, cx, &[IoSlice::new(buf)]).map_err(io::Error::from)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_admit_copy(&this.conn, &mut this.ticket, cx, bufs).map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.release_ticket();
        this.poll_flushed(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.release_ticket();
        this.conn.shutdown_write();
        this.poll_flushed(cx)
    }
}

impl Drop for ConnStream {
    fn drop(&mut self) {
        self.release_ticket();
        if self.held.is_empty() {
            return;
        }
        // Unconsumed bytes go back in front of whatever arrived since, for native readers.
        let held = std::mem::take(&mut self.held);
        let key = self.conn.key;
        let _ = self.conn.with_table(|_, conns| {
            let Some(c) = conns.get(key) else { return };
            let mut acc = BytesMut::with_capacity(held.len() + c.acc.len());
            acc.extend_from_slice(&held);
            acc.extend_from_slice(&c.acc);
            c.acc = acc;
            c.wake_readers();
            conns.mark_dirty(key);
        });
    }
}
