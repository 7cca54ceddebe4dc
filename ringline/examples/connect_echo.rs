//! A client-only runtime that connects to the echo server and checks a few round trips.
//!
//! Start `echo_server` first, then: `cargo run -p ringline --example connect_echo -- 127.0.0.1:7878`
//! On success prints `connect_echo: 100 round trips to ADDR echoed byte-exactly (BACKEND backend)`;
//! on a failure prints the reason to stderr and exits with status 1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringline::{AsyncEventHandler, Config, ConnCtx, RinglineBuilder, connect_with_timeout, request_shutdown};

struct Client;

/// Set when the round trips failed; `main` then exits with an error.
static FAILED: AtomicBool = AtomicBool::new(false);

impl AsyncEventHandler for Client {
    fn create_for_worker(_worker: usize) -> Self {
        Client
    }

    fn on_accept(&self, _conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async {}
    }

    fn on_start(&self) -> impl Future<Output = ()> + 'static {
        async {
            let addr: SocketAddr = std::env::args()
                .nth(1)
                .unwrap_or_else(|| "127.0.0.1:7878".into())
                .parse()
                .expect("HOST:PORT");
            match run(addr).await {
                Ok(n) => {
                    let backend =
                        ringline::backend().map_or_else(|| "unknown".to_string(), |b| format!("{b:?}"));
                    println!(
                        "connect_echo: {n} round trips to {addr} echoed byte-exactly ({backend} backend)"
                    );
                }
                Err(e) => {
                    eprintln!("connect_echo: {e}");
                    FAILED.store(true, Ordering::SeqCst);
                }
            }
            let _ = request_shutdown();
        }
    }
}

async fn run(addr: SocketAddr) -> Result<usize, String> {
    let conn =
        connect_with_timeout(addr, Duration::from_secs(5)).await.map_err(|e| format!("connect: {e}"))?;
    for i in 0..100usize {
        let msg = format!("message {i}\n");
        conn.send(msg.as_bytes()).await.map_err(|e| format!("send {i}: {e}"))?;
        let mut got = Vec::new();
        while got.len() < msg.len() {
            let chunk = conn.recv().await.map_err(|e| format!("recv {i}: {e}"))?;
            if chunk.is_empty() {
                return Err(format!("the server closed the connection before echo {i}"));
            }
            got.extend_from_slice(&chunk);
        }
        if got != msg.as_bytes() {
            return Err(format!("echo mismatch: sent {msg:?}, got {:?}", String::from_utf8_lossy(&got)));
        }
    }
    Ok(100)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_shutdown, workers) =
        RinglineBuilder::new(Config::builder().workers(1).build()?).launch::<Client>()?;
    for w in workers {
        w.join().expect("worker panicked")?;
    }
    if FAILED.load(Ordering::SeqCst) {
        return Err("the round trips failed".into());
    }
    Ok(())
}
