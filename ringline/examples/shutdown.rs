//! Graceful drain on Ctrl-C: stop accepting, let connections finish, flush queued bytes.
//!
//! `cargo run -p ringline --example shutdown` then connect with `nc 127.0.0.1 7879`, type a
//! line, and press Ctrl-C in the server's terminal: the client receives the goodbye line, then EOF.
//! Flags: `--addr HOST:PORT` (default `127.0.0.1:7879`) and `--workers N` (default 1). Prints
//! `shutdown listening on ADDR (BACKEND backend)`; SIGTERM drains like Ctrl-C.

#[path = "support/args.rs"]
mod args;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringline::{AsyncEventHandler, Config, ConnCtx, Either, RinglineBuilder, select, shutdown_signal};

struct Greeter;

impl AsyncEventHandler for Greeter {
    fn create_for_worker(_worker: usize) -> Self {
        Greeter
    }

    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            loop {
                // Biased: the shutdown signal is polled first, so it wins over a read that would
                // end with `ShuttingDown` in the same pass.
                match select(shutdown_signal(), conn.recv()).await {
                    Either::Right(Ok(d)) if !d.is_empty() => {
                        if conn.send(&d).await.is_err() {
                            return;
                        }
                    }
                    Either::Right(_) => return,
                    Either::Left(()) => {
                        // Queued before returning: written before the FIN (close waits for data).
                        let _ = conn.send_nowait(b"server shutting down, goodbye\n");
                        return;
                    }
                }
            }
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let (addr, workers) = args::parse_args("shutdown", "127.0.0.1:7879", 1);
    // A demo needs few connections; 1,024 per worker keeps the fd budget small.
    let config = Config::builder()
        .workers(workers)
        .max_connections(1024)
        .shutdown_timeout(Duration::from_secs(5))
        .build()?;
    let (shutdown, workers) = RinglineBuilder::new(config).bind(addr.parse()?).launch::<Greeter>()?;
    let backend = shutdown.backend().map_or_else(|| "unknown".to_string(), |b| format!("{b:?}"));
    println!(
        "shutdown listening on {} ({backend} backend); Ctrl-C drains and exits",
        shutdown.local_addrs()[0]
    );
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("draining (deadline 5 s)");
    shutdown.shutdown();
    for w in workers {
        w.join().map_err(|_| "worker panicked")??;
    }
    println!("all workers joined");
    Ok(())
}
