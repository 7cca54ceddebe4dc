//! Echo server on ringline with exactly one worker, the handler of `examples/echo_server.rs`
//! (`recv`, then `send_owned`).
//!
//! Built with both backends; `RINGLINE_BACKEND=uring|mio` picks one at launch.
//! `ringline_echo --addr 127.0.0.1:0` prints `ringline_echo listening on ADDR (... backend)`;
//! exits on SIGINT/SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringline::{AsyncEventHandler, Config, ConnCtx, RinglineBuilder};

/// Connections the single worker accepts; the 2000-connection profiles need at least that.
const MAX_CONNECTIONS: usize = 4096;

/// The echo handler: every received chunk is sent back as it came.
struct Echo;

impl AsyncEventHandler for Echo {
    fn create_for_worker(_worker: usize) -> Self {
        Echo
    }

    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            loop {
                let data = match conn.recv().await {
                    Ok(d) if !d.is_empty() => d,
                    _ => break,
                };
                if conn.send_owned(data).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Set by the signal handler; the main thread polls it.
static STOP: AtomicBool = AtomicBool::new(false);

/// SIGINT/SIGTERM handler: only stores to an atomic.
extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let addr = bench::parse_server_args("ringline_echo");
    // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let config = Config::builder().workers(1).max_connections(MAX_CONNECTIONS).backlog(4096).build()?;
    let (shutdown, handles) = RinglineBuilder::new(config).bind(addr.parse()?).launch::<Echo>()?;
    let backend = shutdown.backend().map_or_else(|| "unknown".to_string(), |b| format!("{b:?}"));
    println!("ringline_echo listening on {} ({backend} backend)", shutdown.local_addrs()[0]);
    while !STOP.load(Ordering::SeqCst) && !shutdown.is_shutting_down() {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("shutting down");
    shutdown.shutdown_with_deadline(Duration::from_secs(5));
    for h in handles {
        h.join().map_err(|_| "worker panicked")??;
    }
    println!("bye");
    Ok(())
}
