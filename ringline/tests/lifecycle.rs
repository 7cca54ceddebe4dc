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

#[test]
fn relaunching_on_the_same_port_works_every_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("relaunching_on_the_same_port_works_every_time", 90);
    let first = Server::start::<Echo>(config());
    let addr = first.addr;
    first.stop();
    let fds = fd_count();
    let threads = thread_count();
    for cycle in 0..20 {
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
