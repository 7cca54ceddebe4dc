//! A UDP echo server: every worker gets its own `SO_REUSEPORT` socket on the address
//! (`bind_udp`) and echoes each datagram back to its sender.
//!
//! `cargo run --release --example udp_echo -- --addr 127.0.0.1:7879 --workers 2`
//! Prints the address it listens on; exits cleanly on SIGINT/SIGTERM. Try it with
//! `nc -u 127.0.0.1 7879`.

mod support;

use ringline::{AsyncEventHandler, ConnCtx, UdpCtx};

struct UdpEcho;

impl AsyncEventHandler for UdpEcho {
    fn create_for_worker(_worker: usize) -> Self {
        UdpEcho
    }

    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        // No TCP listener is bound; a connection can only come from `connect`, which this
        // example never calls. Returning closes it.
        let _ = conn;
        std::future::ready(())
    }

    fn on_udp_bind(&self, udp: UdpCtx) -> impl Future<Output = ()> + 'static {
        async move {
            // Ends with `Err(ShuttingDown)` or `Err(Closed)` at shutdown.
            while let Ok((data, peer)) = udp.recv_from().await {
                if let Err(e) = udp.send_to(&data, peer).await {
                    tracing::debug!("echo to {peer} failed: {e}");
                }
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::serve_udp::<UdpEcho>("udp_echo", "127.0.0.1:7879")
}
