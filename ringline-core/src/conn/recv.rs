//! Receiving: [`WithData`], [`WithBytes`] and [`Recv`] over the connection's accumulator.
//!
//! The accumulator is taken out of the slot while a parse closure runs, so the closure may use
//! any handle (send, close, other connections) without aliasing. Dropping an unresolved read
//! loses nothing: the bytes stay buffered.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};

use super::state::{Conn, ReadEnd};
use super::{CloseReason, ConnCtx, abort_key};
use crate::error::Error;
use crate::handler::ParseResult;
use crate::runtime::context::with_core;
use crate::runtime::core::Core;

/// Spare accumulator room kept after `recv` detached the buffered bytes.
const KEEP_SPARE_BYTES: usize = 64 * 1024;

/// What a read should do now, decided under the table borrow.
enum Step {
    Call(BytesMut),
    Ready(Result<usize, Error>),
    Wait,
}

/// State shared by the parse-closure futures.
struct ReadCursor {
    seen: usize,
    need: usize,
}

impl ConnCtx {
    /// Calls `f` with every buffered byte until it consumes some; resolves with the count, or
    /// `Ok(0)` at end of stream.
    ///
    /// # Errors
    /// `InvalidConnection` for a stale handle; the read side's error (e.g. a reset) after the
    /// buffered bytes; `MessageTooLarge` when the closure cannot progress under the limit;
    /// `ShuttingDown` when the runtime stops while nothing is buffered.
    pub fn with_data<F: FnMut(&[u8]) -> ParseResult>(&self, f: F) -> WithData<F> {
        WithData { conn: *self, f, cursor: ReadCursor { seen: 0, need: 0 } }
    }

    /// Like [`ConnCtx::with_data`], with the buffered bytes as `Bytes` (no copy of the remainder).
    pub fn with_bytes<F: FnMut(Bytes) -> ParseResult>(&self, f: F) -> WithBytes<F> {
        WithBytes { conn: *self, f, cursor: ReadCursor { seen: 0, need: 0 } }
    }

    /// Takes everything buffered (waiting for at least one byte); empty means end of stream.
    pub fn recv(&self) -> Recv {
        Recv { conn: *self }
    }
}

/// Decides the next step of a parse-closure read.
fn step(core: &Core, c: &mut Conn, cursor: &ReadCursor, cx: &Context<'_>) -> Step {
    let len = c.acc.len();
    if len > cursor.seen && len >= cursor.need {
        return Step::Call(std::mem::take(&mut c.acc));
    }
    match &c.read_end {
        Some(ReadEnd::Eof | ReadEnd::Local) => return Step::Ready(Ok(0)),
        Some(ReadEnd::Failed(e)) => return Step::Ready(Err(e.duplicate())),
        None => {}
    }
    let limit = core.cfg.recv_accumulator_limit();
    if len >= limit {
        return Step::Ready(Err(Error::MessageTooLarge { limit }));
    }
    if len == 0 && core.shutting_down.get() {
        return Step::Ready(Err(Error::ShuttingDown));
    }
    c.add_reader(cx.waker());
    Step::Wait
}

/// Runs one step of a read with the closure `call`, which parses and trims the accumulator.
fn poll_read(
    conn: &ConnCtx,
    cursor: &mut ReadCursor,
    cx: &Context<'_>,
    mut call: impl FnMut(&mut BytesMut) -> ParseResult,
) -> Poll<Result<usize, Error>> {
    loop {
        let step = conn.with(|core, c| step(core, c, cursor, cx));
        let mut acc = match step {
            Err(e) | Ok(Step::Ready(Err(e))) => {
                if matches!(e, Error::MessageTooLarge { .. }) {
                    with_core(|core| abort_key(core, conn.key, CloseReason::TooLarge));
                }
                return Poll::Ready(Err(e));
            }
            Ok(Step::Ready(Ok(n))) => return Poll::Ready(Ok(n)),
            Ok(Step::Wait) => return Poll::Pending,
            Ok(Step::Call(acc)) => acc,
        };
        let len = acc.len();
        let result = call(&mut acc);
        let limit = with_core(|core| core.cfg.recv_accumulator_limit()).unwrap_or(usize::MAX);
        let outcome = match result {
            ParseResult::Consumed(n) if n > 0 => {
                assert!(n <= len, "ParseResult::Consumed({n}) exceeds the {len} bytes shown (handler bug)");
                acc.advance(n);
                Some(Ok(n))
            }
            ParseResult::NeedAtLeast(k) if k > limit => Some(Err(Error::MessageTooLarge { limit })),
            ParseResult::NeedAtLeast(k) => {
                cursor.need = k;
                acc.reserve(k.saturating_sub(len));
                None
            }
            _ => None,
        };
        cursor.seen = len;
        let consumed = matches!(outcome, Some(Ok(_)));
        let _ = conn.with_table(|_, conns| {
            if let Some(c) = conns.get(conn.key) {
                c.acc = acc;
                if consumed {
                    c.touch();
                }
            }
            conns.mark_dirty(conn.key);
        });
        match outcome {
            Some(Err(e)) => {
                with_core(|core| abort_key(core, conn.key, CloseReason::TooLarge));
                return Poll::Ready(Err(e));
            }
            Some(Ok(n)) => {
                cursor.seen = 0;
                cursor.need = 0;
                return Poll::Ready(Ok(n));
            }
            None => {}
        }
    }
}

/// Future of [`ConnCtx::with_data`]; resolves to `Result<usize, Error>`.
#[must_use = "futures do nothing unless awaited"]
pub struct WithData<F> {
    conn: ConnCtx,
    f: F,
    cursor: ReadCursor,
}

impl<F: FnMut(&[u8]) -> ParseResult + Unpin> Future for WithData<F> {
    type Output = Result<usize, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let f = &mut this.f;
        poll_read(&this.conn, &mut this.cursor, cx, |acc| f(&acc[..]))
    }
}

/// Future of [`ConnCtx::with_bytes`]; resolves to `Result<usize, Error>`.
#[must_use = "futures do nothing unless awaited"]
pub struct WithBytes<F> {
    conn: ConnCtx,
    f: F,
    cursor: ReadCursor,
}

impl<F: FnMut(Bytes) -> ParseResult + Unpin> Future for WithBytes<F> {
    type Output = Result<usize, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let f = &mut this.f;
        poll_read(&this.conn, &mut this.cursor, cx, |acc| {
            let frozen = std::mem::take(acc).freeze();
            let r = f(frozen.clone());
            *acc = frozen.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..]));
            r
        })
    }
}

/// Future of [`ConnCtx::recv`]; resolves to `Result<Bytes, Error>`.
#[must_use = "futures do nothing unless awaited"]
pub struct Recv {
    conn: ConnCtx,
}

impl Future for Recv {
    type Output = Result<Bytes, Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let key = self.conn.key;
        let r = self.conn.with_table(|core, conns| {
            let c = conns.get(key)?;
            let cursor = ReadCursor { seen: 0, need: 1 };
            match step(core, c, &cursor, cx) {
                Step::Call(mut acc) => {
                    // Detach the bytes but keep the allocation's spare room in the slot: once the
                    // caller drops the `Bytes`, the next receive reuses the same buffer.
                    // Large spare room is released, so an idle connection stays small.
                    let out = acc.split().freeze();
                    if acc.capacity() <= KEEP_SPARE_BYTES {
                        c.acc = acc;
                    }
                    c.touch();
                    conns.mark_dirty(key);
                    Some(Ok(out))
                }
                Step::Ready(Ok(_)) => Some(Ok(Bytes::new())),
                Step::Ready(Err(e)) => Some(Err(e)),
                Step::Wait => None,
            }
        });
        match r {
            Err(e) => Poll::Ready(Err(e)),
            Ok(Some(Err(e))) => {
                if matches!(e, Error::MessageTooLarge { .. }) {
                    let _ = with_core(|core| abort_key(core, key, CloseReason::TooLarge));
                }
                Poll::Ready(Err(e))
            }
            Ok(Some(Ok(b))) => Poll::Ready(Ok(b)),
            Ok(None) => Poll::Pending,
        }
    }
}
