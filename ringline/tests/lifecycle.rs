//! Descriptor and thread accounting: connect/close churn and shutdown with open connections
//! return the process to its baseline. One test at a time (they count process-wide fds).

mod common;

use std::io::{Read, Write};
use std::sync::Mutex;

use common::{Echo, Server, Watchdog, backend_label, client, config, fd_count, settle, thread_count};

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn ten_thousand_connect_close_cycles_leak_no_fd() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("ten_thousand_connect_close_cycles_leak_no_fd", 120);
    let server = Server::start::<Echo>(config());
    let mut warm = client(server.addr);
    warm.write_all(b"warm").unwrap();
    let mut b = [0u8; 4];
    warm.read_exact(&mut b).unwrap();
    drop(warm);
    let open = |s: &Server| s.shutdown.metrics().workers.iter().map(|w| w.connections_open).sum::<u64>();
    assert!(settle(5, || open(&server) == 0), "warm-up connection not released on {}", backend_label());
    let baseline = fd_count();
    for i in 0..10_000u32 {
        let mut c = client(server.addr);
        if i % 10 == 0 {
            c.write_all(b"ping").unwrap();
            c.read_exact(&mut b).unwrap();
        }
    }
    // Every connection is accounted for: served and released, or closed by the acceptor because
    // every hand-off queue was full, or aborted by the peer before `accept` returned it. The last
    // ones may still sit in the listen backlog when the client loop ends, so wait for all of them.
    let accounted = |s: &Server| {
        let m = s.shutdown.metrics();
        let closed: u64 = m.workers.iter().map(|w| w.connections_closed + w.connections_refused).sum();
        (closed, m.acceptor.handoff_full_closed + m.acceptor.errors_transient)
    };
    let settled = settle(10, || {
        let (closed, by_acceptor) = accounted(&server);
        closed + by_acceptor >= 10_001 && open(&server) == 0 && fd_count() <= baseline
    });
    let (closed, by_acceptor) = accounted(&server);
    assert!(
        settled,
        "fds {} vs baseline {baseline}, connections_open {}, closed+refused {closed}, closed by the acceptor \
         {by_acceptor} on {}",
        fd_count(),
        open(&server),
        backend_label()
    );
    server.stop();
}

#[test]
fn shutdown_with_open_connections_joins_and_restores_baseline() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("shutdown_with_open_connections_joins_and_restores_baseline", 60);
    let fds = fd_count();
    let threads = thread_count();
    let server = Server::start::<Echo>(config());
    let addr = server.addr;
    let mut conns: Vec<_> = (0..50).map(|_| client(addr)).collect();
    for c in conns.iter_mut() {
        c.write_all(b"hi").unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
    }
    server.stop();
    for c in conns.iter_mut() {
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).unwrap_or(0), 0, "connection must see EOF after shutdown");
    }
    drop(conns);
    assert!(settle(5, || fd_count() <= fds), "fds {} vs {fds} on {}", fd_count(), backend_label());
    assert!(settle(5, || thread_count() <= threads), "threads {} vs {threads}", thread_count());
    std::net::TcpListener::bind(addr).expect("the port is free again after shutdown");
}

/// `create_for_worker` panics on worker 1.
struct FailsOnWorkerOne;

impl ringline::AsyncEventHandler for FailsOnWorkerOne {
    fn create_for_worker(worker: usize) -> Self {
        assert_ne!(worker, 1, "test-induced setup failure");
        FailsOnWorkerOne
    }
    fn on_accept(&self, conn: ringline::ConnCtx) -> impl Future<Output = ()> + 'static {
        common::echo_loop(conn)
    }
}

#[test]
fn a_failed_worker_setup_rolls_the_launch_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("a_failed_worker_setup_rolls_the_launch_back", 30);
    let fds = fd_count();
    let threads = thread_count();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let r = ringline::RinglineBuilder::new(config().build().unwrap()).bind(port).launch::<FailsOnWorkerOne>();
    match r {
        Err(ringline::Error::WorkerSetup { worker: 1, reason }) => {
            assert!(reason.contains("panicked"), "{reason}")
        }
        Err(e) => panic!("expected WorkerSetup for worker 1, got {e:?} on {}", backend_label()),
        Ok(_) => panic!("launch must fail when a worker's setup panics"),
    }
    assert!(
        settle(5, || thread_count() <= threads),
        "threads {} vs {threads}: {:?}",
        thread_count(),
        common::thread_names()
    );
    assert!(settle(5, || fd_count() <= fds), "fds {} vs {fds} on {}", fd_count(), backend_label());
    std::net::TcpListener::bind(port).expect("the port is free after a failed launch");
}

/// TESTPLAN 32: 50 launch and shutdown cycles on one port taken once from port 0, alternating an
/// explicit `shutdown()` with dropping the last handle; every third cycle carries no traffic.
#[test]
fn relaunch_same_port() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("relaunch_same_port", 120);
    let first = Server::start::<Echo>(config());
    let addr = first.addr;
    first.stop();
    let fds = fd_count();
    let threads = thread_count();
    for cycle in 0..50 {
        let cfg = config().build().unwrap();
        let (shutdown, handles) = ringline::RinglineBuilder::new(cfg)
            .bind(addr)
            .launch::<Echo>()
            .unwrap_or_else(|e| panic!("cycle {cycle}: launch failed on {}: {e}", backend_label()));
        if cycle % 3 != 0 {
            let mut c = client(addr);
            c.write_all(b"hi").unwrap();
            let mut b = [0u8; 2];
            c.read_exact(&mut b).unwrap();
        }
        if cycle % 2 == 0 {
            shutdown.shutdown();
        } else {
            drop(shutdown); // dropping the last handle starts the shutdown too
        }
        for h in handles {
            h.join().unwrap().unwrap();
        }
    }
    assert!(settle(5, || fd_count() <= fds), "fds grew: {} vs {fds}", fd_count());
    assert!(settle(5, || thread_count() <= threads), "threads grew: {} vs {threads}", thread_count());
}

/// Asks for shutdown from `on_start`, racing the launch's listener and acceptor setup.
struct StopsAtStart;

impl ringline::AsyncEventHandler for StopsAtStart {
    fn create_for_worker(_worker: usize) -> Self {
        StopsAtStart
    }
    fn on_start(&self) -> impl Future<Output = ()> + 'static {
        async {
            ringline::request_shutdown().expect("on_start runs on a worker");
        }
    }
    fn on_accept(&self, conn: ringline::ConnCtx) -> impl Future<Output = ()> + 'static {
        common::echo_loop(conn)
    }
}

/// A shutdown that begins while launch still binds listeners and starts acceptors: every
/// acceptor is woken and joined (a lost wake-up hook left one blocked in `accept` forever), and
/// threads and descriptors return to the baseline.
#[test]
fn shutdown_requested_during_launch_ends_every_thread() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("shutdown_requested_during_launch_ends_every_thread", 120);
    let fds = fd_count();
    let threads = thread_count();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    for round in 0..20 {
        let (shutdown, handles) = ringline::RinglineBuilder::new(config().build().unwrap())
            .bind(any)
            .bind(any)
            .launch::<StopsAtStart>()
            .expect("launch");
        for h in handles {
            h.join().expect("worker thread").expect("worker result");
        }
        assert!(shutdown.is_shutting_down(), "round {round}: on_start's request did not register");
        assert!(
            settle(10, || thread_count() <= threads),
            "round {round}: threads {:?} vs baseline {threads} on {}",
            common::thread_names(),
            backend_label()
        );
    }
    assert!(settle(5, || fd_count() <= fds), "fds {} vs {fds} on {}", fd_count(), backend_label());
}

/// A std listener on its own thread that records every accepted connection and closes each one
/// once it reaches EOF or a reset. It stops by itself when `stop` is set and every accepted
/// connection has ended (or after a bound).
struct EofWatcher {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ended: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl EofWatcher {
    fn start() -> EofWatcher {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, ended) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, ended, stop) = (accepted.clone(), ended.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut open: Vec<std::net::TcpStream> = Vec::new();
                let bound = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while !(stop.load(SeqCst) && open.is_empty()) && std::time::Instant::now() < bound {
                    while let Ok((s, _)) = listener.accept() {
                        s.set_nonblocking(true).unwrap();
                        accepted.fetch_add(1, SeqCst);
                        open.push(s);
                    }
                    let mut b = [0u8; 16];
                    // Every accepted connection must reach EOF (or a reset): no orphan stays open.
                    open.retain_mut(|s| match s.read(&mut b) {
                        Ok(0) => false,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                        Ok(_) => true,
                        Err(_) => false,
                    } || {
                        ended.fetch_add(1, SeqCst);
                        false
                    });
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        };
        EofWatcher { addr, accepted, ended, stop, thread }
    }

    fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.accepted.load(SeqCst), self.ended.load(SeqCst))
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("listener thread");
    }
}

#[test]
fn cancelled_connect_success_not_leaked() {
    use common::framed::{Rng, scaled, seed};
    use ringline::{connect, connect_with_timeout, timeout};
    use std::time::Duration;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("cancelled_connect_success_not_leaked", 120);
    let seed = seed("cancelled_connect_success_not_leaked");
    let server = EofWatcher::start();
    let (shutdown, handles) = common::client_runtime(config());
    let baseline = fd_count();
    let (addr, attempts) = (server.addr, scaled(1_000));
    let outcomes = common::on_worker(&shutdown, move || async move {
        let mut rng = Rng::new(seed);
        // (connected, timed out) for `timeout(d, connect)`, then for `connect_with_timeout`.
        let mut counts = [0u32; 4];
        for _ in 0..attempts {
            // Around a loopback connect's own duration (a few µs on io_uring, more on mio), so the
            // timer and the completion often land in the same turn of the loop.
            let mut draw = || {
                let hi = [20, 300][rng.range(0, 1)];
                Duration::from_micros(rng.range(0, hi) as u64)
            };
            let d = draw();
            match timeout(d, connect(addr)).await {
                Ok(Ok(conn)) => {
                    counts[0] += 1;
                    drop(conn);
                }
                Ok(Err(e)) => return Err(format!("connect failed: {e}")),
                Err(_) => counts[1] += 1,
            }
            let d = draw();
            match connect_with_timeout(addr, d).await {
                Ok(conn) => {
                    counts[2] += 1;
                    drop(conn);
                }
                Err(ringline::Error::ConnectTimeout) => counts[3] += 1,
                Err(e) => return Err(format!("connect_with_timeout failed: {e}")),
            }
        }
        Ok(counts)
    });
    let counts = outcomes.unwrap_or_else(|e| panic!("{e} on {}", backend_label()));
    let settled = settle(20, || {
        let (accepted, ended) = server.counts();
        accepted == ended && fd_count() <= baseline && shutdown.metrics().workers[0].connections_open == 0
    });
    let (accepted, ended) = server.counts();
    eprintln!(
        "cancelled connects on {}: [ok, timed out, ok, timed out] = {counts:?}; accepted {accepted}",
        backend_label()
    );
    assert!(
        settled,
        "{} of {accepted} accepted connections never saw EOF; fds {} vs {baseline}; connections_open {} on {}",
        accepted - ended,
        fd_count(),
        shutdown.metrics().workers[0].connections_open,
        backend_label()
    );
    common::stop(shutdown, handles);
    server.stop();
}
