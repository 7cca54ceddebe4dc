//! A client-only runtime that connects to `echo_tls_server` with `connect_tls` and checks that
//! what it sends comes back byte-exactly.
//!
//! Start `echo_tls_server` first, then:
//! `cargo run -p ringline --features tls --example tls_client -- [--addr 127.0.0.1:7879] [--ca PATH]`
//! (`--ca` defaults to the certificate file `echo_tls_server` writes). Exits non-zero on failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringline::{
    AsyncEventHandler, Config, ConnCtx, RinglineBuilder, connect_tls_with_timeout, request_shutdown,
};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

static ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
static PASSED: AtomicBool = AtomicBool::new(false);

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
            let addr = *ADDR.get().expect("address set in main");
            match run(addr).await {
                Ok(summary) => {
                    println!("tls_client: {summary}");
                    PASSED.store(true, Ordering::SeqCst);
                }
                Err(e) => eprintln!("tls_client: {e}"),
            }
            let _ = request_shutdown();
        }
    }
}

/// Deterministic bytes for message `i`.
fn payload(i: usize) -> Vec<u8> {
    (0..1000 + i * 997).map(|j| (i * 31 + j * 7) as u8).collect()
}

async fn run(addr: SocketAddr) -> Result<String, String> {
    let conn = connect_tls_with_timeout(addr, "localhost", Duration::from_secs(5))
        .await
        .map_err(|e| format!("connect_tls to {addr}: {e}"))?;
    let info = conn.tls_info().ok_or("no TLS information after the handshake")?;
    let mut total = 0;
    for i in 0..64 {
        let msg = payload(i);
        conn.send(&msg).await.map_err(|e| format!("send: {e}"))?;
        let mut got = Vec::with_capacity(msg.len());
        while got.len() < msg.len() {
            let chunk = conn.recv().await.map_err(|e| format!("recv: {e}"))?;
            if chunk.is_empty() {
                return Err("the server closed early".into());
            }
            got.extend_from_slice(&chunk);
        }
        if got != msg {
            return Err(format!("echo of message {i} differs"));
        }
        total += msg.len();
    }
    // Dropping the connection sends close_notify.
    Ok(format!(
        "64 messages ({total} bytes) echoed byte-exactly over {:?} with {:?}",
        info.protocol_version(),
        info.cipher_suite()
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr: SocketAddr = "127.0.0.1:7879".parse()?;
    let mut ca = std::env::temp_dir().join("ringline-echo-tls-cert.der");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs HOST:PORT")?.parse()?,
            "--ca" => ca = args.next().ok_or("--ca needs a path")?.into(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let _ = ADDR.set(addr);
    let der = std::fs::read(&ca)
        .map_err(|e| format!("reading {}: {e} (start echo_tls_server first)", ca.display()))?;
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(der))?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let config = Config::builder().workers(1).build()?;
    let (_shutdown, workers) = RinglineBuilder::new(config).tls_client(Arc::new(tls)).launch::<Client>()?;
    for w in workers {
        w.join().map_err(|_| "worker panicked")??;
    }
    if PASSED.load(Ordering::SeqCst) { Ok(()) } else { Err("the echo check failed".into()) }
}
