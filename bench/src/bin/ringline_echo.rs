//! Echo server on ringline with exactly one worker, the handler of `examples/echo_server.rs`
//! (`recv`, then `send_owned`).
//!
//! Built by default with both backends (the `bench` crate's `both-backends` feature), where
//! `RINGLINE_BACKEND=uring|mio` picks one at launch; `cargo xtask bench` also builds this same
//! file with `--no-default-features` (io_uring only) to measure what the second backend costs.
//! `ringline_echo --addr 127.0.0.1:0` prints
//! `ringline_echo listening on ADDR (Uring backend; built with Uring+Mio)`; exits on
//! SIGINT/SIGTERM. With `--stats-file PATH` the main thread keeps `open=N` (connections the
//! workers hold, from their metrics) in that file.

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
    let args = bench::parse_server_args("ringline_echo");
    // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let config = Config::builder().workers(1).max_connections(MAX_CONNECTIONS).backlog(4096).build()?;
    let (shutdown, handles) = RinglineBuilder::new(config).bind(args.addr.parse()?).launch::<Echo>()?;
    let backend = shutdown.backend().map_or_else(|| "unknown".to_string(), |b| format!("{b:?}"));
    let built: Vec<String> = ringline::COMPILED_BACKENDS.iter().map(|b| format!("{b:?}")).collect();
    println!(
        "ringline_echo listening on {} ({backend} backend; built with {})",
        shutdown.local_addrs()[0],
        built.join("+")
    );
    let mut stats = args.stats_file.map(bench::StatsFile::new);
    while !STOP.load(Ordering::SeqCst) && !shutdown.is_shutting_down() {
        if let Some(stats) = &mut stats {
            let open = shutdown.metrics().workers.iter().map(|w| w.connections_open).sum();
            stats.update(open)?;
        }
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
