//! A TLS echo server: `echo_server` behind `bind_tls`, with a self-signed certificate for
//! `localhost` generated at start (rcgen) and rustls' `ring` provider.
//!
//! `cargo run -p ringline --features tls --example echo_tls_server -- [--addr 127.0.0.1:7879] [--workers N] [--cert PATH]`
//! writes the certificate (DER) to `--cert` (default: `ringline-echo-tls-cert.der` in the temp
//! directory) so `tls_client` can trust it, prints the address, and serves until killed.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ringline::{AsyncEventHandler, Config, ConnCtx, RinglineBuilder};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

struct Echo;

impl AsyncEventHandler for Echo {
    fn create_for_worker(_worker: usize) -> Self {
        Echo
    }

    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            // The handshake is done: `tls_info` says what it negotiated.
            if let Some(info) = conn.tls_info() {
                tracing::debug!(version = ?info.protocol_version(), suite = ?info.cipher_suite(), "TLS connection");
            }
            loop {
                let data = match conn.recv().await {
                    Ok(d) if !d.is_empty() => d,
                    _ => break, // close_notify, FIN or error
                };
                if conn.send_owned(data).await.is_err() {
                    break;
                }
            } // returning sends close_notify, then closes
        }
    }
}

/// The default certificate path shared with the `tls_client` example.
fn default_cert_path() -> PathBuf {
    std::env::temp_dir().join("ringline-echo-tls-cert.der")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut addr: SocketAddr = "127.0.0.1:7879".parse()?;
    let mut workers = 0;
    let mut cert_path = default_cert_path();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs HOST:PORT")?.parse()?,
            "--workers" => workers = args.next().ok_or("--workers needs a number")?.parse()?,
            "--cert" => cert_path = args.next().ok_or("--cert needs a path")?.into(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }

    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    std::fs::write(&cert_path, generated.cert.der())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    // ringline enables no crypto provider: the configuration carries one.
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)?;

    let config = Config::builder().workers(workers).max_connections(4096).build()?;
    let (shutdown, handles) = RinglineBuilder::new(config).bind_tls(addr, Arc::new(tls)).launch::<Echo>()?;
    println!(
        "echo_tls_server listening on {} (certificate for localhost in {})",
        shutdown.local_addrs()[0],
        cert_path.display()
    );
    for h in handles {
        h.join().map_err(|_| "worker panicked")??;
    }
    Ok(())
}
