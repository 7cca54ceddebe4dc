//! A client-only runtime that connects to the echo server and checks a few round trips.
//!
//! Start `echo_server` first, then: `cargo run -p ringline --example connect_echo -- 127.0.0.1:7878`

use std::net::SocketAddr;
use std::time::Duration;

use ringline::{AsyncEventHandler, Config, ConnCtx, RinglineBuilder, connect_with_timeout, request_shutdown};

struct Client;

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
                Ok(n) => println!("connect_echo: {n} round trips to {addr} echoed byte-exactly"),
                Err(e) => eprintln!("connect_echo: {e}"),
            }
            let _ = request_shutdown();
        }
    }
}

async fn run(addr: SocketAddr) -> Result<usize, ringline::Error> {
    let conn = connect_with_timeout(addr, Duration::from_secs(5)).await?;
    for i in 0..100usize {
        let msg = format!("message {i}\n");
        conn.send(msg.as_bytes()).await?;
        let mut got = Vec::new();
        while got.len() < msg.len() {
            let chunk = conn.recv().await?;
            if chunk.is_empty() {
                return Err(ringline::Error::Closed);
            }
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, msg.as_bytes(), "echo mismatch");
    }
    Ok(100)
}

fn main() -> Result<(), ringline::Error> {
    let (_shutdown, workers) =
        RinglineBuilder::new(Config::builder().workers(1).build()?).launch::<Client>()?;
    for w in workers {
        w.join().expect("worker panicked")?;
    }
    Ok(())
}
