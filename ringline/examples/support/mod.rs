//! The shared `main` of the example servers: flags, logging, signals, launch, and a graceful
//! drain on SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringline::{AsyncEventHandler, Config, RinglineBuilder};

mod args;

use args::parse_args;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Runs handler `H` until SIGINT or SIGTERM, then drains for up to 5 s. Logs go to stderr
/// (`RUST_LOG`, default `info`); stdout carries `NAME listening on ADDR (BACKEND backend)` and `bye`.
#[allow(dead_code, reason = "the UDP example uses `serve_udp` instead")]
pub(crate) fn serve<H: AsyncEventHandler>(
    name: &str,
    default_addr: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    serve_with::<H>(name, default_addr, RinglineBuilder::bind)
}

/// As [`serve`], with a `bind_udp` socket per worker on the address instead of a TCP listener.
#[allow(dead_code, reason = "only the UDP example uses it")]
pub(crate) fn serve_udp<H: AsyncEventHandler>(
    name: &str,
    default_addr: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    serve_with::<H>(name, default_addr, RinglineBuilder::bind_udp)
}

/// [`serve`] with the way the address is bound.
fn serve_with<H: AsyncEventHandler>(
    name: &str,
    default_addr: &str,
    bind: fn(RinglineBuilder, std::net::SocketAddr) -> RinglineBuilder,
) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let (addr, workers) = parse_args(name, default_addr, 0);
    // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    // 8,192 per worker keeps the fd budget under common RLIMIT_NOFILE hard limits.
    let config = Config::builder().workers(workers).max_connections(8192).build()?;
    let (shutdown, handles) = bind(RinglineBuilder::new(config), addr.parse()?).launch::<H>()?;
    let backend = shutdown.backend().map_or_else(|| "unknown".to_string(), |b| format!("{b:?}"));
    println!("{name} listening on {} ({backend} backend)", shutdown.local_addrs()[0]);
    while !STOP.load(Ordering::SeqCst) && !shutdown.is_shutting_down() {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("shutting down");
    shutdown.shutdown_with_deadline(Duration::from_secs(5));
    for h in handles {
        h.join().map_err(|_| "worker panicked")??;
    }
    println!("bye");
    Ok(())
}
