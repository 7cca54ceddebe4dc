//! The README's main job: a lossless TCP echo server.
//!
//! `cargo run --release --example echo_server -- --addr 127.0.0.1:7878 --workers 2`
//! Prints the address it listens on; exits cleanly on SIGINT/SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringline::{AsyncEventHandler, Config, ConnCtx, RinglineBuilder};

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

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn parse_args() -> (String, usize) {
    let mut addr = "127.0.0.1:7878".to_string();
    let mut workers = 0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().expect("--addr needs HOST:PORT"),
            "--workers" => {
                workers = args.next().and_then(|n| n.parse().ok()).expect("--workers needs a number")
            }
            other => {
                eprintln!("unknown argument {other}; usage: echo_server [--addr HOST:PORT] [--workers N]");
                std::process::exit(2);
            }
        }
    }
    (addr, workers)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let (addr, workers) = parse_args();
    // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let config = Config::builder().workers(workers).max_connections(8192).build()?;
    let (shutdown, handles) = RinglineBuilder::new(config).bind(addr.parse()?).launch::<Echo>()?;
    println!(
        "echo_server listening on {} ({:?} backend)",
        shutdown.local_addrs()[0],
        shutdown.backend().unwrap()
    );
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
