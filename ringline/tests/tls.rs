//! TLS through the facade (feature `tls`): a ringline TLS server against blocking rustls clients,
//! a ringline TLS client against a blocking rustls server, rejected handshakes, the handshake
//! timeout, close_notify versus FIN, `TlsInfo`, and the client's configuration errors.
//! Certificates are generated at test time (rcgen); the crypto provider is rustls' `ring`.
//! Runs on whichever backend the build and `RINGLINE_BACKEND` select.
#![cfg(feature = "tls")]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Watchdog, backend_label, on_worker, pattern, settle, stop};
use ringline::{
    AsyncEventHandler, Config, ConfigBuilder, ConnCtx, Error, RinglineBuilder, ShutdownHandle, connect_tls,
    connect_tls_with_timeout,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

/// A self-signed certificate for `localhost` and its key.
struct Pki {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

fn pki() -> Pki {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    Pki { cert: ck.cert.der().clone(), key: ck.signing_key.serialize_der() }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(pki: &Pki, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone()));
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], key)
        .expect("server certificate");
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

fn client_config(pki: &Pki, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.cert.clone()).expect("root certificate");
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

fn config() -> ConfigBuilder {
    Config::builder().workers(2).max_connections(1024)
}

/// A ringline TLS server on 127.0.0.1:0 running handler `H`.
struct TlsServer {
    shutdown: ShutdownHandle,
    handles: Vec<std::thread::JoinHandle<Result<(), Error>>>,
    addr: SocketAddr,
}

impl TlsServer {
    fn start<H: AsyncEventHandler>(cfg: ConfigBuilder, tls: Arc<ServerConfig>) -> TlsServer {
        let (shutdown, handles) = RinglineBuilder::new(cfg.build().expect("valid config"))
            .bind_tls("127.0.0.1:0".parse().unwrap(), tls)
            .launch::<H>()
            .unwrap_or_else(|e| panic!("launch failed on {}: {e}", backend_label()));
        let addr = shutdown.local_addrs()[0];
        TlsServer { shutdown, handles, addr }
    }

    fn handshake_failures(&self) -> u64 {
        self.shutdown.metrics().workers.iter().map(|w| w.tls_handshake_failures).sum()
    }

    fn stop(self) {
        stop(self.shutdown, self.handles);
    }
}

/// A TCP connection with timeouts, so a broken server fails the test instead of hanging it.
fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect on {}: {e}", backend_label()));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A blocking rustls client connection to `addr` as `localhost`, handshake done.
fn tls_client(addr: SocketAddr, cfg: Arc<ClientConfig>) -> StreamOwned<ClientConnection, TcpStream> {
    let conn = ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut s = StreamOwned::new(conn, tcp(addr));
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap_or_else(|e| panic!("handshake on {}: {e}", backend_label()));
    }
    s
}

/// Reads until the server closes the connection; returns what it sent before (an alert, if any).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection on {}: {e}", backend_label()),
        }
    }
}

/// The start of a real ClientHello, as the first bytes a rustls client writes.
fn client_hello(cfg: Arc<ClientConfig>) -> Vec<u8> {
    let mut conn = ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

/// Echoes plaintext until end of stream.
struct Echo;

impl AsyncEventHandler for Echo {
    fn create_for_worker(_worker: usize) -> Self {
        Echo
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        common::echo_loop(conn)
    }
}

#[test]
fn sixteen_mebibytes_echo_byte_exact_through_a_ringline_tls_server() {
    let _w = Watchdog::new("sixteen_mebibytes_echo_byte_exact_through_a_ringline_tls_server", 180);
    let pki = pki();
    let server = TlsServer::start::<Echo>(config(), server_config(&pki, &[]));
    let addr = server.addr;
    let cc = client_config(&pki, &[]);
    let client = std::thread::spawn(move || {
        let mut s = tls_client(addr, cc);
        const TOTAL: usize = 16 << 20;
        const CHUNK: usize = 128 << 10;
        let mut back = vec![0u8; CHUNK];
        for i in 0..TOTAL / CHUNK {
            let data = pattern(i as u64, CHUNK);
            s.write_all(&data).unwrap();
            s.flush().unwrap();
            s.read_exact(&mut back).unwrap_or_else(|e| panic!("chunk {i} on {}: {e}", backend_label()));
            assert!(back == data, "chunk {i} differs on {}", backend_label());
        }
        s.conn.send_close_notify();
        s.flush().unwrap();
        // The echo task returns at close_notify and closes with its own.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap_or_else(|e| panic!("clean end on {}: {e}", backend_label()));
        assert!(rest.is_empty(), "{} unexpected bytes after the echo", rest.len());
    });
    client.join().expect("client thread");
    assert_eq!(server.handshake_failures(), 0);
    server.stop();
}

/// How many connections reached `on_accept` / `on_close` in the rejection test.
static SEEN_ACCEPTS: AtomicUsize = AtomicUsize::new(0);
static SEEN_CLOSES: AtomicUsize = AtomicUsize::new(0);

/// Echo that counts what the handler sees.
struct CountingEcho;

impl AsyncEventHandler for CountingEcho {
    fn create_for_worker(_worker: usize) -> Self {
        CountingEcho
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        SEEN_ACCEPTS.fetch_add(1, Ordering::SeqCst);
        common::echo_loop(conn)
    }
    fn on_close(&mut self, _conn: ringline::ConnToken, _reason: ringline::CloseReason) {
        SEEN_CLOSES.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn garbage_and_a_truncated_client_hello_are_rejected_without_disturbing_another_connection() {
    let _w = Watchdog::new("garbage_and_a_truncated_client_hello_are_rejected", 60);
    let pki = pki();
    let server = TlsServer::start::<CountingEcho>(config(), server_config(&pki, &[]));
    let cc = client_config(&pki, &[]);
    let mut good = tls_client(server.addr, cc.clone());
    good.write_all(b"before").unwrap();
    let mut buf = [0u8; 6];
    good.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"before");

    // A plaintext peer: rustls rejects the first byte; the alert (if any) comes before the close.
    let mut garbage = tcp(server.addr);
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let answer = read_until_closed(&mut garbage);
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "no TLS alert before the close: {answer:?} on {}",
        backend_label()
    );

    // Half a ClientHello, then FIN.
    let hello = client_hello(cc.clone());
    let mut truncated = tcp(server.addr);
    truncated.write_all(&hello[..hello.len() / 2]).unwrap();
    truncated.shutdown(Shutdown::Write).unwrap();
    read_until_closed(&mut truncated);

    assert!(
        settle(10, || server.handshake_failures() == 2),
        "tls_handshake_failures = {} on {}",
        server.handshake_failures(),
        backend_label()
    );
    good.write_all(b"after").unwrap();
    let mut buf = [0u8; 5];
    good.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after", "the concurrent connection was disturbed on {}", backend_label());
    assert_eq!(SEEN_ACCEPTS.load(Ordering::SeqCst), 1, "the handler saw a failed handshake");
    assert_eq!(SEEN_CLOSES.load(Ordering::SeqCst), 0, "on_close ran for a failed handshake");
    drop(good);
    assert!(settle(10, || SEEN_CLOSES.load(Ordering::SeqCst) == 1), "on_close of the good connection");
    server.stop();
}

#[test]
fn a_silent_peer_is_closed_at_the_handshake_timeout() {
    let _w = Watchdog::new("a_silent_peer_is_closed_at_the_handshake_timeout", 60);
    let pki = pki();
    // Long enough for the complete handshake below on a loaded machine (debug build).
    let cfg = config().tls_handshake_timeout(Duration::from_secs(2));
    let server = TlsServer::start::<Echo>(cfg, server_config(&pki, &[]));
    let mut silent = tcp(server.addr);
    let answer = read_until_closed(&mut silent);
    assert!(answer.is_empty(), "a silent peer got {answer:?}");
    assert!(settle(10, || server.handshake_failures() == 1), "timeout not counted on {}", backend_label());
    // The listener still serves complete handshakes.
    let mut ok = tls_client(server.addr, client_config(&pki, &[]));
    ok.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    ok.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
    server.stop();
}

/// Reads to end of stream, then answers `T` or `F` for `eof_truncated()` and closes.
struct ReportEof;

impl AsyncEventHandler for ReportEof {
    fn create_for_worker(_worker: usize) -> Self {
        ReportEof
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let mut total = 0;
            loop {
                match conn.recv().await {
                    Ok(d) if d.is_empty() => break,
                    Ok(d) => total += d.len(),
                    Err(_) => return,
                }
            }
            let answer = format!("{}{total}", if conn.eof_truncated() { 'T' } else { 'F' });
            let _ = conn.send(answer.as_bytes()).await;
        }
    }
}

#[test]
fn close_notify_is_a_clean_end_and_a_bare_fin_is_truncation() {
    let _w = Watchdog::new("close_notify_is_a_clean_end_and_a_bare_fin_is_truncation", 60);
    let pki = pki();
    let server = TlsServer::start::<ReportEof>(config(), server_config(&pki, &[]));
    let cc = client_config(&pki, &[]);

    let mut clean = tls_client(server.addr, cc.clone());
    clean.write_all(b"hello").unwrap();
    clean.conn.send_close_notify();
    clean.flush().unwrap();
    let mut answer = String::new();
    clean.read_to_string(&mut answer).unwrap_or_else(|e| panic!("clean close on {}: {e}", backend_label()));
    assert_eq!(answer, "F5", "close_notify on {}", backend_label());

    let mut bare = tls_client(server.addr, cc);
    bare.write_all(b"hello!").unwrap();
    bare.flush().unwrap();
    bare.sock.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    bare.read_to_string(&mut answer).unwrap_or_else(|e| panic!("after FIN on {}: {e}", backend_label()));
    assert_eq!(answer, "T6", "FIN without close_notify on {}", backend_label());
    server.stop();
}

/// Sends back what `tls_info()` says, then closes.
struct ReportInfo;

impl AsyncEventHandler for ReportInfo {
    fn create_for_worker(_worker: usize) -> Self {
        ReportInfo
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let text = match conn.tls_info() {
                Some(info) => format!(
                    "{:?}|{}|{}|{:?}",
                    info.protocol_version(),
                    info.server_name().unwrap_or("-"),
                    String::from_utf8_lossy(info.alpn_protocol().unwrap_or(b"-")),
                    info.cipher_suite(),
                ),
                None => "none".to_string(),
            };
            let _ = conn.send(text.as_bytes()).await;
        }
    }
}

#[test]
fn tls_info_reports_version_sni_and_alpn_on_the_server() {
    let _w = Watchdog::new("tls_info_reports_version_sni_and_alpn_on_the_server", 60);
    let pki = pki();
    let server = TlsServer::start::<ReportInfo>(config(), server_config(&pki, &[b"h2", b"ringline/1"]));
    let mut s = tls_client(server.addr, client_config(&pki, &[b"ringline/1"]));
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap_or_else(|e| panic!("info on {}: {e}", backend_label()));
    let parts: Vec<&str> = answer.split('|').collect();
    assert_eq!(parts.len(), 4, "answer {answer:?}");
    assert_eq!(parts[0], "TLSv1_3", "protocol version");
    assert_eq!(parts[1], "localhost", "SNI");
    assert_eq!(parts[2], "ringline/1", "ALPN");
    assert!(parts[3].starts_with("TLS13_"), "cipher suite {}", parts[3]);
    server.stop();
}

/// A client-only runtime with one worker and, optionally, a TLS client configuration.
fn client_runtime(
    tls: Option<Arc<ClientConfig>>,
) -> (ShutdownHandle, Vec<std::thread::JoinHandle<Result<(), Error>>>) {
    let mut b = RinglineBuilder::new(config().workers(1).build().unwrap());
    if let Some(cfg) = tls {
        b = b.tls_client(cfg);
    }
    b.launch::<Echo>().unwrap_or_else(|e| panic!("launch failed on {}: {e}", backend_label()))
}

/// A blocking rustls server for one connection: reads `len` bytes, echoes them, sends
/// close_notify, and reports the ALPN it negotiated.
fn blocking_server(pki: &Pki, len: usize) -> (SocketAddr, std::thread::JoinHandle<Option<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = server_config(pki, &[b"ringline/1"]);
    let t = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut s = StreamOwned::new(ServerConnection::new(cfg).unwrap(), sock);
        let mut data = vec![0u8; len];
        s.read_exact(&mut data).unwrap();
        s.write_all(&data).unwrap();
        s.conn.send_close_notify();
        s.flush().unwrap();
        s.conn.alpn_protocol().map(<[u8]>::to_vec)
    });
    (addr, t)
}

#[test]
fn a_ringline_tls_client_talks_to_a_blocking_rustls_server() {
    let _w = Watchdog::new("a_ringline_tls_client_talks_to_a_blocking_rustls_server", 90);
    let pki = pki();
    const LEN: usize = 4 << 20;
    let (addr, server) = blocking_server(&pki, LEN);
    let (shutdown, handles) = client_runtime(Some(client_config(&pki, &[b"ringline/1"])));
    let result = on_worker(&shutdown, move || async move {
        let conn = connect_tls(addr, "localhost").await.map_err(|e| format!("connect_tls: {e}"))?;
        let info = conn.tls_info().ok_or("no tls_info on the client")?;
        let described = (info.server_name().map(str::to_owned), info.alpn_protocol().map(<[u8]>::to_vec));
        let data = pattern(42, LEN);
        conn.send(&data).await.map_err(|e| format!("send: {e}"))?;
        let mut back = Vec::with_capacity(LEN);
        loop {
            let chunk = conn.recv().await.map_err(|e| format!("recv: {e}"))?;
            if chunk.is_empty() {
                break;
            }
            back.extend_from_slice(&chunk);
        }
        if back != data {
            return Err(format!("echo differs: {} of {LEN} bytes", back.len()));
        }
        Ok::<_, String>((described, conn.eof_truncated()))
    });
    let ((name, alpn), truncated) = result.unwrap_or_else(|e| panic!("{e} on {}", backend_label()));
    assert_eq!(name.as_deref(), Some("localhost"));
    assert_eq!(alpn.as_deref(), Some(&b"ringline/1"[..]));
    assert!(!truncated, "close_notify arrived, yet eof_truncated() on {}", backend_label());
    assert_eq!(server.join().expect("server thread").as_deref(), Some(&b"ringline/1"[..]));
    stop(shutdown, handles);
}

#[test]
fn connect_tls_reports_configuration_and_handshake_errors() {
    let _w = Watchdog::new("connect_tls_reports_configuration_and_handshake_errors", 60);
    let pki = pki();
    // A plaintext server that answers with garbage, and one that never answers.
    let garbage = TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    let g = std::thread::spawn(move || {
        let (mut s, _) = garbage.accept().unwrap();
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        std::thread::sleep(Duration::from_millis(500));
    });
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();

    let (shutdown, handles) = client_runtime(None);
    let unconfigured =
        on_worker(&shutdown, move || async move { connect_tls(silent_addr, "localhost").await.err() });
    assert!(
        matches!(unconfigured, Some(Error::NotConfigured("tls_client"))),
        "without tls_client: {unconfigured:?}"
    );
    stop(shutdown, handles);

    let (shutdown, handles) = client_runtime(Some(client_config(&pki, &[])));
    let (bad_name, plaintext, timeout) = on_worker(&shutdown, move || async move {
        let bad_name = connect_tls(silent_addr, "not a host name").await.err();
        let plaintext = connect_tls(garbage_addr, "localhost").await.err();
        let timeout =
            connect_tls_with_timeout(silent_addr, "localhost", Duration::from_millis(300)).await.err();
        (bad_name, plaintext, timeout)
    });
    assert!(matches!(bad_name, Some(Error::InvalidInput(_))), "bad server name: {bad_name:?}");
    assert!(
        matches!(plaintext, Some(Error::Tls(_))),
        "plaintext server: {plaintext:?} on {}",
        backend_label()
    );
    assert!(
        matches!(timeout, Some(Error::ConnectTimeout)),
        "silent server: {timeout:?} on {}",
        backend_label()
    );
    let failures: u64 = shutdown.metrics().workers.iter().map(|w| w.tls_handshake_failures).sum();
    assert_eq!(failures, 2, "client handshake failures counted");
    let open = || shutdown.metrics().workers.iter().map(|w| w.connections_open).sum::<u64>();
    assert!(settle(10, || open() == 0), "failed connects released their slots on {}", backend_label());
    stop(shutdown, handles);
    g.join().unwrap();
    drop(silent);
}

/// Sends two 150 KiB messages concurrently from two tasks sharing the `ConnCtx`, then reads to
/// end of stream and answers `T`/`F` for `eof_truncated()`.
struct TwoSenders;

const MESSAGE: usize = 150 << 10;

impl AsyncEventHandler for TwoSenders {
    fn create_for_worker(_worker: usize) -> Self {
        TwoSenders
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let (a, b) = (pattern(1, MESSAGE), pattern(2, MESSAGE));
            let Ok(other) = ringline::spawn(async move { conn.send(&b).await.is_ok() }) else { return };
            let ra = conn.send(&a).await;
            if ra.is_err() || !matches!(other.await, Ok(true)) {
                return;
            }
            loop {
                match conn.recv().await {
                    Ok(d) if d.is_empty() => break,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            let _ = conn.send(if conn.eof_truncated() { b"T" } else { b"F" }).await;
        }
    }
}

fn open_connections(server: &TlsServer) -> u64 {
    server.shutdown.metrics().workers.iter().map(|w| w.connections_open).sum()
}

/// TESTPLAN 6, tls_echo_integrity: 16 connections, two tasks each sending 150 KiB at once over
/// small socket buffers; close_notify on half of them, a bare FIN on the others.
#[test]
fn concurrent_sends_on_sixteen_connections_never_interleave_records() {
    let _w = Watchdog::new("concurrent_sends_on_sixteen_connections_never_interleave_records", 120);
    let pki = pki();
    let cfg = config().socket_buffers(Some(4096), None);
    let server = TlsServer::start::<TwoSenders>(cfg, server_config(&pki, &[]));
    let fds = common::fds_on_port(server.addr.port());
    assert!(fds >= 1, "the listener's own fd is on its port");
    let (addr, cc) = (server.addr, client_config(&pki, &[]));
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let cc = cc.clone();
            std::thread::spawn(move || {
                let mut s = tls_client(addr, cc);
                let mut got = vec![0u8; 2 * MESSAGE];
                // A record mixed with other bytes would fail here with bad_record_mac.
                s.read_exact(&mut got).unwrap_or_else(|e| panic!("conn {i} on {}: {e}", backend_label()));
                let (a, b) = (pattern(1, MESSAGE), pattern(2, MESSAGE));
                let intact = (got[..MESSAGE] == a[..] && got[MESSAGE..] == b[..])
                    || (got[..MESSAGE] == b[..] && got[MESSAGE..] == a[..]);
                assert!(intact, "conn {i}: the two messages are not intact on {}", backend_label());
                if i % 2 == 0 {
                    s.conn.send_close_notify();
                    s.flush().unwrap();
                } else {
                    s.sock.shutdown(Shutdown::Write).unwrap();
                }
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap_or_else(|e| panic!("conn {i} end: {e}"));
                let expected = if i % 2 == 0 { "F" } else { "T" };
                assert_eq!(answer, expected, "conn {i}: eof_truncated on {}", backend_label());
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    assert!(settle(10, || open_connections(&server) == 0), "slots not released on {}", backend_label());
    let pool: u64 = server.shutdown.metrics().workers.iter().map(|w| w.send_pool_in_use).sum();
    assert_eq!(pool, 0, "send slots not released on {}", backend_label());
    let port = server.addr.port();
    assert!(settle(5, || common::fds_on_port(port) <= fds), "fds on the port: {}", common::fds_on_port(port));
    server.stop();
}

/// A canary TLS connection that must keep echoing.
fn canary_round_trip(s: &mut StreamOwned<ClientConnection, TcpStream>, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap_or_else(|e| panic!("canary on {}: {e}", backend_label()));
    assert_eq!(back, msg, "canary on {}", backend_label());
}

#[test]
fn stalled_half_hellos_are_closed_at_the_handshake_deadline() {
    let _w = Watchdog::new("stalled_half_hellos_are_closed_at_the_handshake_deadline", 60);
    let pki = pki();
    let cfg = config().tls_handshake_timeout(Duration::from_secs(2));
    let server = TlsServer::start::<Echo>(cfg, server_config(&pki, &[]));
    let cc = client_config(&pki, &[]);
    let mut canary = tls_client(server.addr, cc.clone());
    let hello = client_hello(cc);
    let mut stalled: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = tcp(server.addr);
            s.write_all(&hello[..hello.len() / 2]).unwrap();
            s
        })
        .collect();
    canary_round_trip(&mut canary, b"during");
    for s in &mut stalled {
        read_until_closed(s);
    }
    assert!(settle(10, || server.handshake_failures() == 50), "failures {}", server.handshake_failures());
    canary_round_trip(&mut canary, b"after");
    drop(canary);
    assert!(settle(10, || open_connections(&server) == 0), "slots not released on {}", backend_label());
    server.stop();
}

/// Mutations of a valid ClientHello from a small deterministic generator.
fn mutate(hello: &[u8], seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = hello.to_vec();
    for _ in 0..1 + next() % 4 {
        let i = (next() % out.len() as u64) as usize;
        match next() % 3 {
            0 => out[i] = next() as u8,
            1 => out[i] ^= 1 << (next() % 8),
            _ => out.truncate(i.max(1)),
        }
    }
    out
}

#[test]
fn malformed_client_hellos_are_closed_and_counted() {
    let _w = Watchdog::new("malformed_client_hellos_are_closed_and_counted", 120);
    let pki = pki();
    let server = TlsServer::start::<Echo>(config(), server_config(&pki, &[]));
    let cc = client_config(&pki, &[]);
    let mut canary = tls_client(server.addr, cc.clone());
    let hello = client_hello(cc);
    let mut bad_extensions = hello.clone();
    // Record header (5) + handshake header (4) + version (2) + random (32), then the session id,
    // cipher suites and compression methods: the extensions' length follows; inflate it.
    let mut at = 5 + 4 + 2 + 32;
    at += 1 + bad_extensions[at] as usize;
    at += 2 + u16::from_be_bytes([bad_extensions[at], bad_extensions[at + 1]]) as usize;
    at += 1 + bad_extensions[at] as usize;
    bad_extensions[at] = bad_extensions[at].wrapping_add(1);
    let mut cases: Vec<Vec<u8>> = vec![
        vec![0x16, 0x03],                                           // truncated record header
        [&[0x16, 0x03, 0x01, 0xFF, 0xFF][..], &[0u8; 10]].concat(), // length 0xFFFF, 10 bytes
        [&[0x42, 0x03, 0x01, 0x00, 0x05][..], &[1u8; 5]].concat(),  // wrong content type
        vec![0x80, 0x2E, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10], // SSLv2-style hello
        bad_extensions,
    ];
    cases.extend((0..1000).map(|seed| mutate(&hello, seed)));
    let total = cases.len();
    let addr = server.addr;
    let cases = Arc::new(cases);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let cases = cases.clone();
            std::thread::spawn(move || {
                for case in cases.iter().skip(t).step_by(8) {
                    let mut s = tcp(addr);
                    // The server may close before taking every byte; that is a rejection too.
                    let _ = s.write_all(case);
                    let _ = s.shutdown(Shutdown::Write);
                    read_until_closed(&mut s);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    canary_round_trip(&mut canary, b"still here");
    assert!(
        settle(20, || server.handshake_failures() == total as u64),
        "tls_handshake_failures {} of {total} on {}",
        server.handshake_failures(),
        backend_label()
    );
    let panics: u64 = server.shutdown.metrics().workers.iter().map(|w| w.task_panics).sum();
    assert_eq!(panics, 0);
    drop(canary);
    assert!(settle(10, || open_connections(&server) == 0), "slots not released on {}", backend_label());
    server.stop();
}

/// Reads that ended in `Err(Tls(_))` in the garbage-after-handshake test.
static TLS_READ_ERRORS: AtomicUsize = AtomicUsize::new(0);

/// Echoes until an error; counts TLS errors.
struct EchoCountingTlsErrors;

impl AsyncEventHandler for EchoCountingTlsErrors {
    fn create_for_worker(_worker: usize) -> Self {
        EchoCountingTlsErrors
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            loop {
                match conn.recv().await {
                    Ok(d) if d.is_empty() => return,
                    Ok(d) => {
                        if conn.send_owned(d).await.is_err() {
                            return;
                        }
                    }
                    Err(Error::Tls(_)) => {
                        TLS_READ_ERRORS.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

#[test]
fn garbage_records_after_the_handshake_fail_the_read_with_a_tls_error() {
    let _w = Watchdog::new("garbage_records_after_the_handshake_fail_the_read_with_a_tls_error", 60);
    let pki = pki();
    let server = TlsServer::start::<EchoCountingTlsErrors>(config(), server_config(&pki, &[]));
    let cc = client_config(&pki, &[]);
    let mut canary = tls_client(server.addr, cc.clone());
    let mut victim = tls_client(server.addr, cc);
    canary_round_trip(&mut victim, b"fine so far");
    // An application-data record whose body is not valid ciphertext.
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    record.extend(pattern(9, 0x40));
    victim.sock.write_all(&record).unwrap();
    let answer = read_until_closed(&mut victim.sock);
    assert_eq!(answer.first(), Some(&0x17), "expected an encrypted alert before the close: {answer:?}");
    assert!(settle(10, || TLS_READ_ERRORS.load(Ordering::SeqCst) == 1), "the read did not fail with Tls");
    canary_round_trip(&mut canary, b"unaffected");
    server.stop();
}

/// Sends 1 MiB, then waits for input (shutdown ends the wait).
struct MebibyteThenWait;

impl AsyncEventHandler for MebibyteThenWait {
    fn create_for_worker(_worker: usize) -> Self {
        MebibyteThenWait
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            if conn.send(&pattern(5, 1 << 20)).await.is_err() {
                return;
            }
            let _ = conn.recv().await;
        }
    }
}

#[test]
fn graceful_shutdown_flushes_queued_bytes_then_close_notify() {
    let _w = Watchdog::new("graceful_shutdown_flushes_queued_bytes_then_close_notify", 90);
    let pki = pki();
    let server = TlsServer::start::<MebibyteThenWait>(config(), server_config(&pki, &[]));
    let (addr, cc) = (server.addr, client_config(&pki, &[]));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (cc, started) = (cc.clone(), started_tx.clone());
            std::thread::spawn(move || {
                let mut s = tls_client(addr, cc);
                let mut got = vec![0u8; 64 << 10];
                s.read_exact(&mut got).unwrap();
                started.send(()).unwrap();
                // Read the rest slowly, while the runtime shuts down.
                let mut rest = Vec::new();
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    std::thread::sleep(Duration::from_millis(2));
                    // rustls reports a missing close_notify as an `UnexpectedEof` error.
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => rest.extend_from_slice(&buf[..n]),
                        Err(e) => panic!("conn {i}: {e} on {}", backend_label()),
                    }
                }
                got.extend_from_slice(&rest);
                assert!(got == pattern(5, 1 << 20), "conn {i}: {} bytes, not the 1 MiB sent", got.len());
            })
        })
        .collect();
    for _ in 0..8 {
        started_rx.recv_timeout(Duration::from_secs(30)).expect("every client started");
    }
    server.stop();
    for c in clients {
        c.join().expect("client thread");
    }
}

#[test]
fn bytes_arriving_with_the_clients_finished_wait_for_on_accept() {
    let _w = Watchdog::new("bytes_arriving_with_the_clients_finished_wait_for_on_accept", 60);
    let pki = pki();
    let server = TlsServer::start::<Echo>(config(), server_config(&pki, &[]));
    let (addr, cc) = (server.addr, client_config(&pki, &[]));
    let clients: Vec<_> = (0..8u64)
        .map(|i| {
            let cc = cc.clone();
            std::thread::spawn(move || {
                // Queue the data before the handshake runs, so it follows the client's Finished
                // at once, in the same or the next receive completions.
                let conn = ClientConnection::new(cc, ServerName::try_from("localhost").unwrap()).unwrap();
                let mut s = StreamOwned::new(conn, tcp(addr));
                let data = pattern(100 + i, 256 << 10);
                s.conn.set_buffer_limit(None);
                s.conn.writer().write_all(&data).unwrap();
                let mut back = vec![0u8; data.len()];
                s.read_exact(&mut back).unwrap_or_else(|e| panic!("conn {i} on {}: {e}", backend_label()));
                assert!(back == data, "conn {i}: echo differs on {}", backend_label());
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    server.stop();
}

#[test]
fn idle_timeout_during_the_handshake_releases_the_slot() {
    let _w = Watchdog::new("idle_timeout_during_the_handshake_releases_the_slot", 60);
    let pki = pki();
    let cfg = config().idle_timeout(Some(Duration::from_millis(200)));
    let server = TlsServer::start::<Echo>(cfg, server_config(&pki, &[]));
    let mut silent = tcp(server.addr);
    read_until_closed(&mut silent);
    assert!(
        settle(10, || open_connections(&server) == 0),
        "slot kept after an idle handshake on {}",
        backend_label()
    );
    // The handler never saw it: a handshake failure like any other (API 14).
    assert!(settle(5, || server.handshake_failures() == 1), "idle handshake not counted as a failure");
    server.stop();
}

/// Through `ConnStream`: reads one line, writes it back upper-cased, then `close()`s the stream
/// (half-close: close_notify, then FIN) and keeps reading until the peer ends.
#[cfg(feature = "futures-io")]
struct StreamLine;

#[cfg(feature = "futures-io")]
impl AsyncEventHandler for StreamLine {
    fn create_for_worker(_worker: usize) -> Self {
        StreamLine
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        use futures_util::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        async move {
            let mut reader = futures_util::io::BufReader::new(conn.stream());
            let mut line = String::new();
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let mut writer = conn.stream();
            if writer.write_all(line.to_uppercase().as_bytes()).await.is_err()
                || writer.close().await.is_err()
            {
                return;
            }
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest).await;
        }
    }
}

#[cfg(feature = "futures-io")]
#[test]
fn conn_stream_over_tls_half_closes_with_close_notify() {
    let _w = Watchdog::new("conn_stream_over_tls_half_closes_with_close_notify", 60);
    let pki = pki();
    let server = TlsServer::start::<StreamLine>(config(), server_config(&pki, &[]));
    let mut s = tls_client(server.addr, client_config(&pki, &[]));
    s.write_all(b"hello stream\n").unwrap();
    s.flush().unwrap();
    let mut answer = String::new();
    // rustls fails this read with `UnexpectedEof` unless close_notify came before the FIN.
    s.read_to_string(&mut answer).unwrap_or_else(|e| panic!("half-close on {}: {e}", backend_label()));
    assert_eq!(answer, "HELLO STREAM\n");
    // The server still reads after its half-close.
    s.write_all(b"bye").unwrap();
    s.conn.send_close_notify();
    s.flush().unwrap();
    drop(s);
    assert!(settle(10, || open_connections(&server) == 0), "slot not released on {}", backend_label());
    server.stop();
}
