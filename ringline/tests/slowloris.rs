//! TESTPLAN 9, slowloris_idle_and_handshake: peers that trickle bytes without ever completing a
//! frame are closed by `idle_timeout`, and (feature `tls`) peers stalled in the middle of a
//! ClientHello are closed by `tls_handshake_timeout`, while a well-behaved canary is served
//! throughout and the server's pools and the process's fds return to their baseline.
//! Runs on whichever backend the build and `RINGLINE_BACKEND` select; one test per binary (it
//! compares process-wide fd counts).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::framed::scaled;
use common::{LineEcho, Watchdog, backend_label, client, fd_count, round_trip, settle};
use ringline::{Config, ConfigBuilder, RinglineBuilder, ShutdownHandle};

/// Plaintext peers that trickle one byte every [`TRICKLE`] and never send a newline.
const TRICKLERS: usize = 200;
/// TLS peers that send half a ClientHello and stall.
#[cfg(feature = "tls")]
const STALLED_TLS: usize = 50;
/// Gap between two bytes of one trickling peer.
const TRICKLE: Duration = Duration::from_millis(200);
/// The idle and handshake timeouts under test.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How long the peers may stay open before the test gives up (a watchdog, not a speed limit).
const BOUND: Duration = Duration::from_secs(30);

fn config() -> ConfigBuilder {
    Config::builder()
        .workers(2)
        .max_connections(1024)
        .idle_timeout(Some(TIMEOUT))
        .tls_handshake_timeout(TIMEOUT)
}

/// The server under test: a plaintext listener, and with feature `tls` a TLS one.
struct Slowloris {
    shutdown: ShutdownHandle,
    handles: Vec<std::thread::JoinHandle<Result<(), ringline::Error>>>,
    plain: SocketAddr,
    #[cfg(feature = "tls")]
    tls: SocketAddr,
}

impl Slowloris {
    fn start() -> Slowloris {
        let builder = RinglineBuilder::new(config().build().expect("valid config"))
            .bind("127.0.0.1:0".parse().unwrap());
        #[cfg(feature = "tls")]
        let builder = builder.bind_tls("127.0.0.1:0".parse().unwrap(), tls::server_config());
        let (shutdown, handles) = builder
            .launch::<LineEcho>()
            .unwrap_or_else(|e| panic!("launch failed on {}: {e}", backend_label()));
        let addrs = shutdown.local_addrs();
        Slowloris {
            plain: addrs[0],
            #[cfg(feature = "tls")]
            tls: addrs[1],
            shutdown,
            handles,
        }
    }

    /// The sum of one counter over the workers.
    fn sum(&self, f: impl Fn(&ringline::WorkerMetrics) -> u64) -> u64 {
        self.shutdown.metrics().workers.iter().map(f).sum()
    }

    fn stop(self) {
        common::stop(self.shutdown, self.handles);
    }
}

/// A misbehaving peer and whether it trickles bytes (plaintext) or only waits (stalled TLS).
struct Peer {
    stream: TcpStream,
    trickle: bool,
    closed: bool,
}

impl Peer {
    fn new(addr: SocketAddr, first: &[u8], trickle: bool) -> Peer {
        let mut stream = client(addr);
        stream.write_all(first).unwrap_or_else(|e| panic!("first bytes on {}: {e}", backend_label()));
        stream.set_nonblocking(true).unwrap();
        Peer { stream, trickle, closed: false }
    }

    /// One turn: trickle a byte if it trickles, then notice whether the server closed it.
    fn poll(&mut self) {
        if self.closed {
            return;
        }
        if self.trickle && self.stream.write(b"x").is_err() {
            self.closed = true;
            return;
        }
        let mut buf = [0u8; 512];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break self.closed = true,
                // A TLS alert before the close; plaintext peers never get an answer.
                Ok(_) => {
                    assert!(!self.trickle, "a peer without a newline got an answer on {}", backend_label())
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break self.closed = true,
            }
        }
    }
}

/// Turns every [`TRICKLE`] until every peer is closed; panics after [`BOUND`].
fn watch(mut peers: Vec<Peer>) {
    let end = Instant::now() + BOUND;
    while peers.iter().any(|p| !p.closed) {
        let open = peers.iter().filter(|p| !p.closed).count();
        assert!(Instant::now() < end, "{open} slow peers still open after {BOUND:?} on {}", backend_label());
        peers.iter_mut().for_each(Peer::poll);
        std::thread::sleep(TRICKLE);
    }
}

#[test]
fn slowloris_idle_and_handshake() {
    let _w = Watchdog::new("slowloris_idle_and_handshake", 90);
    // Warm-up: the first launch of the process creates lazily built state (probe, pools).
    Slowloris::start().stop();
    let server = Slowloris::start();
    let baseline = fd_count();
    let mut canary = client(server.plain);
    round_trip(&mut canary, b"hello\n");

    let tricklers = scaled(TRICKLERS);
    let peers: Vec<Peer> = (0..tricklers).map(|_| Peer::new(server.plain, b"x", true)).collect();
    #[cfg(feature = "tls")]
    let (peers, stalled_tls) = {
        let (mut peers, hello, n) = (peers, tls::client_hello(), scaled(STALLED_TLS));
        peers.extend((0..n).map(|_| Peer::new(server.tls, &hello[..hello.len() / 2], false)));
        (peers, n)
    };
    let watcher = std::thread::spawn(move || watch(peers));
    // The canary makes progress every 100 ms, ten times inside the idle timeout, until every slow
    // peer is gone.
    let mut rounds = 0u32;
    while !watcher.is_finished() {
        round_trip(&mut canary, format!("canary {rounds}\n").as_bytes());
        rounds += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    watcher.join().expect("every slow peer was closed");
    round_trip(&mut canary, b"after\n");
    eprintln!("slowloris on {}: canary made {rounds} round trips meanwhile", backend_label());

    let idle = server.sum(|w| w.idle_timeouts);
    assert!(idle >= tricklers as u64, "idle_timeouts {idle} < {tricklers} on {}", backend_label());
    #[cfg(feature = "tls")]
    {
        let failures = server.sum(|w| w.tls_handshake_failures);
        assert!(
            failures >= stalled_tls as u64,
            "tls_handshake_failures {failures}, idle_timeouts {idle} on {}",
            backend_label()
        );
        // The TLS listener still completes a real handshake.
        tls::round_trip(server.tls);
    }
    drop(canary);
    let settled = settle(5, || {
        server.sum(|w| w.connections_open) == 0
            && server.sum(|w| w.send_pool_in_use) == 0
            && server.sum(|w| w.recv_buffers_free) == server.sum(|w| w.recv_buffers_total)
            && fd_count() <= baseline
    });
    assert!(
        settled,
        "not back to baseline on {}: fds {} vs {baseline}; {:?}",
        backend_label(),
        fd_count(),
        server.shutdown.metrics().workers
    );
    server.stop();
}

/// The TLS half: a certificate generated at run time, a real ClientHello, a canary handshake.
#[cfg(feature = "tls")]
mod tls {
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::sync::{Arc, OnceLock};

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};

    use super::common::{backend_label, client};

    fn pki() -> &'static (CertificateDer<'static>, Vec<u8>) {
        static PKI: OnceLock<(CertificateDer<'static>, Vec<u8>)> = OnceLock::new();
        PKI.get_or_init(|| {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
            (ck.cert.der().clone(), ck.signing_key.serialize_der())
        })
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    pub(super) fn server_config() -> Arc<ServerConfig> {
        let (cert, key) = pki();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone()));
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server certificate");
        Arc::new(cfg)
    }

    fn client_config() -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(pki().0.clone()).expect("root certificate");
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(cfg)
    }

    fn connection() -> ClientConnection {
        ClientConnection::new(client_config(), ServerName::try_from("localhost").unwrap()).unwrap()
    }

    /// The first flight a rustls client writes: a whole ClientHello record.
    pub(super) fn client_hello() -> Vec<u8> {
        let mut conn = connection();
        let mut hello = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut hello).unwrap();
        }
        hello
    }

    /// A complete handshake and one line echoed through the TLS listener.
    pub(super) fn round_trip(addr: SocketAddr) {
        let mut s = StreamOwned::new(connection(), client(addr));
        s.write_all(b"tls canary\n").unwrap_or_else(|e| panic!("TLS canary on {}: {e}", backend_label()));
        let mut back = [0u8; 11];
        s.read_exact(&mut back).unwrap_or_else(|e| panic!("TLS canary on {}: {e}", backend_label()));
        assert_eq!(&back, b"tls canary\n", "TLS canary on {}", backend_label());
    }
}
