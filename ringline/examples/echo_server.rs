//! The README's main job: a lossless TCP echo server.
//!
//! `cargo run --release --example echo_server -- --addr 127.0.0.1:7878 --workers 2`
//! Prints the address it listens on; exits cleanly on SIGINT/SIGTERM.

mod support;

use ringline::{AsyncEventHandler, ConnCtx};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::serve::<Echo>("echo_server", "127.0.0.1:7878")
}
