//! The acceptor thread of one listener: blocking `accept`, hand-off round-robin to workers.
//!
//! Full hand-off queues are skipped; when every queue is full the connection is closed and
//! counted. Transient errors are retried at once, `EMFILE`/`ENFILE` after a back-off doubling
//! from 10 ms to 1 s, others after 100 ms. The thread exits only at shutdown: the shutdown hook
//! calls `shutdown(SHUT_RD)` on the listener, which wakes the blocked `accept`.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ringline_core::{RuntimeShared, WorkerHandle};

/// Settings the acceptor applies to accepted sockets.
pub(crate) struct AcceptOpts {
    pub(crate) nodelay: bool,
    /// The stream layer (TLS) connections of this listener run before `on_accept`.
    pub(crate) layer: Option<ringline_core::conn::LayerFactory>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Runs until shutdown.
pub(crate) fn run(
    listener: Arc<TcpListener>,
    workers: Vec<WorkerHandle>,
    runtime: Arc<RuntimeShared>,
    opts: AcceptOpts,
) {
    let span = tracing::info_span!("ringline.acceptor", addr = ?listener.local_addr().ok());
    let _enter = span.enter();
    let mut next = 0usize;
    let mut backoff = Duration::from_millis(10);
    while !runtime.is_shutting_down() {
        match listener.accept() {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(10);
                if runtime.is_shutting_down() {
                    break;
                }
                if stream.set_nonblocking(true).is_err()
                    || (opts.nodelay && stream.set_nodelay(true).is_err())
                {
                    bump(&runtime.acceptor.errors_transient);
                    continue;
                }
                hand_off(stream, &workers, &mut next, &runtime, opts.layer.as_ref());
            }
            Err(e) => {
                if runtime.is_shutting_down() {
                    break;
                }
                backoff = on_error(&e, backoff, &runtime);
            }
        }
    }
    tracing::debug!("acceptor stopped");
}

fn hand_off(
    mut stream: std::net::TcpStream,
    workers: &[WorkerHandle],
    next: &mut usize,
    runtime: &RuntimeShared,
    layer: Option<&ringline_core::conn::LayerFactory>,
) {
    for _ in 0..workers.len() {
        let w = &workers[*next % workers.len()];
        *next = next.wrapping_add(1);
        let handed = match layer {
            None => w.hand_off(stream),
            Some(f) => w.hand_off_layered(stream, f.clone()),
        };
        match handed {
            Ok(()) => {
                bump(&runtime.acceptor.accepted);
                return;
            }
            Err(s) => stream = s,
        }
    }
    bump(&runtime.acceptor.handoff_full_closed);
    tracing::warn!("every worker's accept queue is full; connection closed");
}

/// Counts an accept error and sleeps as its class requires; returns the next back-off.
fn on_error(e: &io::Error, backoff: Duration, runtime: &RuntimeShared) -> Duration {
    let a = &runtime.acceptor;
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => {
            bump(if e.raw_os_error() == Some(libc::EMFILE) { &a.errors_emfile } else { &a.errors_enfile });
            bump(&a.backoffs);
            tracing::warn!("accept: {e}; backing off {backoff:?}");
            std::thread::sleep(backoff);
            (backoff * 2).min(Duration::from_secs(1))
        }
        Some(
            libc::ECONNABORTED
            | libc::EPROTO
            | libc::EPERM
            | libc::ENOBUFS
            | libc::ENOMEM
            | libc::EINTR
            | libc::EAGAIN,
        ) => {
            bump(&a.errors_transient);
            backoff
        }
        _ => {
            bump(&a.errors_other);
            tracing::warn!("accept: {e}; retrying in 100 ms");
            std::thread::sleep(Duration::from_millis(100));
            backoff
        }
    }
}
