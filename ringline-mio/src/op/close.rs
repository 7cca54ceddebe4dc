//! `ShutdownWrite` and `Close`: half-close, cancellation of what is in flight, and the final close.

use std::io;
use std::mem::size_of;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};

use mio::Registry;
use ringline_core::driver::{Completion, CompletionSink, ConnKey};

use crate::conn::Conn;
use crate::op::{canceled, send};

/// `ShutdownWrite`: sends FIN; the read side stays open. Errors (e.g. already reset) are ignored:
/// the operation has no completion and the reset surfaces on the next read.
pub(crate) fn shutdown_write(conn: &mut Conn) {
    if let Err(e) = conn.stream.shutdown(Shutdown::Write) {
        tracing::trace!(conn = ?conn.key, error = %e, "shutdown(Write) failed");
    }
}

/// `Close`: reports what was in flight as cancelled, deregisters, shuts down (or resets, when
/// `abort`), closes the fd, then reports `Closed`.
pub(crate) fn close(mut conn: Conn, abort: bool, registry: &Registry, sink: &mut dyn CompletionSink) {
    let key = conn.key;
    send::fail(&mut conn, canceled(), sink);
    if conn.connecting {
        conn.connecting = false;
        sink.complete(Completion::Connected { conn: key, result: Err(canceled()) });
    }
    if conn.registered {
        if let Err(e) = registry.deregister(&mut conn.stream) {
            tracing::trace!(conn = ?key, error = %e, "deregister failed");
        }
    }
    if abort {
        if let Err(e) = set_linger_zero(conn.stream.as_raw_fd()) {
            tracing::trace!(conn = ?key, error = %e, "SO_LINGER failed");
        }
    } else if let Err(e) = conn.stream.shutdown(Shutdown::Both) {
        tracing::trace!(conn = ?key, error = %e, "shutdown(Both) failed");
    }
    drop(conn);
    sink.complete(Completion::Closed { conn: key });
}

/// `Close` for a key the backend does not hold (a connect that failed before it had a socket):
/// nothing to release, so only `Closed` is reported.
pub(crate) fn close_unknown(key: ConnKey, sink: &mut dyn CompletionSink) {
    sink.complete(Completion::Closed { conn: key });
}

/// `SO_LINGER {on, 0}`: the following close sends RST instead of FIN.
fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `fd` is an open socket owned by the caller; `linger` is a live, initialized
    // `struct linger` and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
