//! Sending: gathered `sendmsg` with `MSG_NOSIGNAL` straight from the memory of a `SendBuf`,
//! continued across partial writes and writable edges until done or failed.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use ringline_core::buf::SendBuf;
use ringline_core::driver::{Completion, CompletionSink};

use crate::conn::Conn;

/// Most iovecs per `sendmsg` (Linux `IOV_MAX`).
pub(crate) const MAX_IOVECS: usize = 1024;

/// `Send`: takes `buf` as the connection's send in flight (the core keeps at most one).
pub(crate) fn start(conn: &mut Conn, buf: SendBuf) {
    debug_assert!(conn.send.is_none(), "two sends in flight on one connection");
    conn.send = Some(buf);
}

/// Writes the send in flight while writable; reports `Sent` once it is done or failed.
///
/// `iov` is reusable scratch; it is left empty so no pointer into the buffer outlives the call.
pub(crate) fn write_ready(conn: &mut Conn, iov: &mut Vec<libc::iovec>, sink: &mut dyn CompletionSink) {
    let fd = conn.stream.as_raw_fd();
    while conn.writable {
        let Some(buf) = conn.send.as_mut() else { return };
        if buf.is_done() {
            break;
        }
        iov.extend(
            buf.slices()
                .take(MAX_IOVECS)
                .map(|s| libc::iovec { iov_base: s.as_ptr().cast_mut().cast(), iov_len: s.len() }),
        );
        let res = sendmsg(fd, iov);
        iov.clear();
        match res {
            Ok(0) => return fail(conn, io::Error::from(io::ErrorKind::WriteZero), sink),
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return fail(conn, e, sink),
        }
    }
    if conn.send.as_ref().is_some_and(SendBuf::is_done) {
        let buf = conn.send.take().expect("checked above");
        let total = buf.total_len();
        sink.complete(Completion::Sent { conn: conn.key, buf, result: Ok(total) });
    }
}

/// Returns the send in flight (if any) with `error`.
pub(crate) fn fail(conn: &mut Conn, error: io::Error, sink: &mut dyn CompletionSink) {
    if let Some(buf) = conn.send.take() {
        sink.complete(Completion::Sent { conn: conn.key, buf, result: Err(error) });
    }
}

/// One non-blocking gathered write that never raises `SIGPIPE`.
fn sendmsg(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: `msghdr` is plain old data; all-zero is a valid value (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `fd` is an open socket owned by the caller's `Conn`; `msg` points at `iov`, whose
    // entries describe live, initialized bytes of the `SendBuf` borrowed for this call; the kernel
    // only reads them and keeps no reference after returning.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}
