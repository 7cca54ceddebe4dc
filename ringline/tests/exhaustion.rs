//! Resource exhaustion (TESTPLAN 20, 22, 24, 25): each pool gives a typed error, nothing crashes,
//! and service recovers once the resource is freed. Tests in this binary run one at a time.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{
    Echo, Server, Watchdog, backend_label, client, client_runtime, config, fd_count, is_child, on_worker,
    pattern, record_skip, round_trip, run_child, settle, stop,
};
use ringline::{
    AsyncEventHandler, Backend, Config, ConnCtx, Error, RinglineBuilder, TimerExhausted, sleep, spawn,
    try_sleep, try_timeout,
};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- 20. nofile_exhaustion -------------------------------------------------------------------

fn set_nofile(soft: u64, hard: u64) {
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(r, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// Runs in a child whose fd table is small: the test's own client sockets exhaust it while the
/// acceptor is accepting.
#[test]
fn nofile_exhaustion() {
    let _serial = serial();
    if !is_child() {
        let status = run_child("nofile_exhaustion");
        assert!(
            status.success(),
            "the child with a small RLIMIT_NOFILE failed ({status}) on {}",
            backend_label()
        );
        return;
    }
    let _w = Watchdog::new("nofile_exhaustion", 90);
    let base = fd_count() as u64;
    // Launch reserves open + workers × (max_connections + 16) + 64 descriptors and raises the
    // soft limit to that, so the hard limit leaves it room; the clients then fill the table.
    set_nofile(base + 40, base + 120);
    let server = Server::start::<Echo>(config().workers(1).max_connections(8));
    let acceptor = || server.shutdown.metrics().acceptor;

    let mut first = client(server.addr);
    round_trip(&mut first, b"served before exhaustion");
    let mut clients = Vec::new();
    let fill_deadline = Instant::now() + Duration::from_secs(10);
    let mut refused_locally = 0;
    // Open clients until the process is out of descriptors, and keep trying for a moment so a
    // connection completed by the kernel waits in the backlog for an fd the acceptor cannot get.
    while Instant::now() < fill_deadline && refused_locally < 50 && clients.len() < 500 {
        match TcpStream::connect(server.addr) {
            Ok(c) => clients.push(c),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                refused_locally += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("unexpected connect error {e}"),
        }
    }
    assert!(refused_locally > 0, "the test never ran out of descriptors ({} clients)", clients.len());
    // The acceptor sees EMFILE only if a connection waits in the backlog while the table is full,
    // and a client refused at `socket()` never reaches the backlog. So top the table up with
    // placeholder descriptors, free exactly one, and let one more client take it: its connection
    // completes in the kernel and waits for an fd the acceptor cannot get. Repeated, because the
    // worker closing surplus connections can free descriptors in between.
    let mut fillers: Vec<std::fs::File> = Vec::new();
    for _ in 0..50 {
        if acceptor().errors_emfile > 0 {
            break;
        }
        while let Ok(f) = std::fs::File::open("/dev/null") {
            fillers.push(f);
        }
        fillers.pop();
        if let Ok(c) = TcpStream::connect(server.addr) {
            clients.push(c);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        settle(10, || acceptor().errors_emfile > 0),
        "the acceptor never saw EMFILE: {:?} on {}",
        acceptor(),
        backend_label()
    );
    // No spin: accept attempts stay bounded while the table is full (back-off 10 ms → 1 s).
    let attempts = || {
        let a = acceptor();
        a.accepted + a.errors_emfile + a.errors_enfile + a.errors_transient + a.errors_other
    };
    let before = attempts();
    std::thread::sleep(Duration::from_secs(1));
    let during = attempts() - before;
    assert!(during <= 30, "{during} accept attempts in 1 s with the fd table full: the acceptor spins");
    // A connection opened before the exhaustion keeps working.
    round_trip(&mut first, b"still served while exhausted");

    let held = clients.len();
    clients.clear();
    fillers.clear();
    let mut later = None;
    assert!(
        settle(20, || {
            let Ok(mut c) = TcpStream::connect(server.addr) else { return false };
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let ok = c.write_all(b"after").is_ok() && {
                let mut b = [0u8; 5];
                c.read_exact(&mut b).is_ok() && &b == b"after"
            };
            if ok {
                later = Some(c);
            }
            ok
        }),
        "service did not resume after {held} clients left; acceptor {:?}",
        acceptor()
    );
    eprintln!("nofile_exhaustion on {}: {held} clients held, acceptor {:?}", backend_label(), acceptor());
    drop((first, later));
    server.stop();

    let oversized = Config::builder().workers(2).max_connections(1 << 20).build().unwrap();
    match RinglineBuilder::new(oversized).bind("127.0.0.1:0".parse().unwrap()).launch::<Echo>() {
        Err(Error::ResourceLimit { resource: "RLIMIT_NOFILE", needed, available }) => {
            assert!(needed > available, "ResourceLimit with needed {needed} <= available {available}")
        }
        Err(e) => panic!("an oversized launch gave {e:?} instead of ResourceLimit"),
        Ok(_) => panic!("an oversized launch succeeded under a {} fd hard limit", base + 120),
    }
}

// ---- 22. fixed_file_table_full ---------------------------------------------------------------

#[test]
fn fixed_file_table_full() {
    let _serial = serial();
    let _w = Watchdog::new("fixed_file_table_full", 60);
    let fds = fd_count();
    let server = Server::start::<Echo>(config().workers(1).fixed_files(4));
    if server.shutdown.backend() != Some(Backend::Uring) {
        server.stop();
        record_skip(
            "SKIPPED: fixed_file_table_full needs the io_uring backend (mio has no fixed-file table)",
        );
        return;
    }
    let m = || server.shutdown.metrics().workers[0].clone();
    let mut conns: Vec<_> = (0..16)
        .map(|i| {
            let mut c = client(server.addr);
            round_trip(&mut c, &pattern(i, 500));
            c
        })
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        round_trip(c, &pattern(100 + i as u64, 70_000));
    }
    assert!(
        m().fixed_file_fallbacks >= 12,
        "fixed_file_fallbacks {} < 12 with 16 connections",
        m().fixed_file_fallbacks
    );
    assert!(m().fixed_files_in_use <= 4, "fixed_files_in_use {} over the table size", m().fixed_files_in_use);
    conns.clear();
    assert!(
        settle(5, || m().connections_open == 0 && m().fixed_files_in_use == 0),
        "table not released: {:?}",
        m()
    );
    let again: Vec<_> = (0..2)
        .map(|i| {
            let mut c = client(server.addr);
            round_trip(&mut c, &pattern(200 + i, 100));
            c
        })
        .collect();
    assert!(m().fixed_files_in_use > 0, "new connections did not use the freed fixed slots");
    drop(again);
    assert!(settle(5, || m().connections_open == 0), "connections left open");
    server.stop();
    assert!(settle(5, || fd_count() <= fds), "fds {} > baseline {fds}", fd_count());
}

// ---- 24. timer_slots_exhaustion --------------------------------------------------------------

static LOOP_PROGRESS: AtomicU32 = AtomicU32::new(0);

#[test]
fn timer_slots_exhaustion() {
    let _serial = serial();
    let _w = Watchdog::new("timer_slots_exhaustion", 60);
    let (rt, handles) = client_runtime(config().timer_slots(2).tick_interval(None));
    let (early_tx, early_rx) = mpsc::channel::<String>();
    let (holders, tries) = on_worker(&rt, move || async move {
        let long = || spawn(sleep(Duration::from_secs(3600))).expect("spawn a long sleeper");
        let holders = (long(), long());
        // Let both sleepers take their slots.
        ringline::yield_now().await;
        ringline::yield_now().await;
        let tries = (
            matches!(try_sleep(Duration::from_millis(1)), Err(TimerExhausted)),
            matches!(try_timeout(Duration::from_millis(1), async {}), Err(TimerExhausted)),
        );
        spawn(async move {
            for i in 0..100 {
                let start = Instant::now();
                sleep(Duration::from_millis(1)).await;
                if start.elapsed() < Duration::from_millis(1) {
                    let _ = early_tx.send(format!("sleep {i} resolved after {:?}", start.elapsed()));
                }
                LOOP_PROGRESS.fetch_add(1, Ordering::SeqCst);
            }
        })
        .expect("spawn the sleeping loop");
        (holders.0.id(), tries)
    });
    assert_eq!(tries, (true, true), "try_sleep / try_timeout with every slot held on {}", backend_label());
    let m = || rt.metrics().workers[0].clone();
    std::thread::sleep(Duration::from_millis(50));
    let before = m().loop_iterations;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(LOOP_PROGRESS.load(Ordering::SeqCst), 0, "a sleep ran without a timer slot");
    assert!(m().loop_iterations - before <= 8, "the loop spun while waiting for a timer slot");
    assert!(m().timer_exhausted > 0, "timer_exhausted not counted");

    let aborted = on_worker(&rt, move || async move { holders.abort() });
    assert!(aborted, "aborting the long sleeper failed");
    assert!(
        settle(20, || LOOP_PROGRESS.load(Ordering::SeqCst) == 100),
        "the loop did not finish after a slot freed"
    );
    let later = on_worker(&rt, || async { try_sleep(Duration::from_millis(1)).is_ok() });
    assert!(later, "try_sleep still exhausted after the loop finished");
    assert!(early_rx.try_recv().is_err(), "a sleep resolved before its deadline");
    stop(rt, handles);
}

// ---- 25. task_slab_exhaustion ----------------------------------------------------------------

static SLAB_REPORT: Mutex<Option<mpsc::Sender<String>>> = Mutex::new(None);

/// Runs the scenario from `on_start`, which does not count against the capacity.
struct SlabUser;

impl AsyncEventHandler for SlabUser {
    fn create_for_worker(_worker: usize) -> Self {
        SlabUser
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        common::echo_loop(conn)
    }
    fn on_start(&self) -> impl Future<Output = ()> + 'static {
        async move {
            let report = |s: String| {
                if let Some(tx) = SLAB_REPORT.lock().unwrap().as_ref() {
                    let _ = tx.send(s);
                }
            };
            let long: Vec<_> =
                (0..4).map(|_| spawn(sleep(Duration::from_millis(200))).expect("four slots")).collect();
            report(format!("fifth: {:?}", spawn(async {}).map(|_| ())));
            // One of the four slots is the one `fresh` reuses below.
            let stale: Vec<_> = long.iter().map(|h| h.id()).collect();
            for h in long {
                let _ = h.await;
            }
            let fresh = spawn(async {
                sleep(Duration::from_millis(100)).await;
                "fresh finished"
            })
            .expect("slots free again");
            report(format!("stale abort: {}", stale.into_iter().any(|id| id.abort())));
            report(fresh.await.unwrap_or("fresh aborted").to_string());
        }
    }
}

#[test]
fn task_slab_exhaustion() {
    let _serial = serial();
    let _w = Watchdog::new("task_slab_exhaustion", 30);
    let (tx, rx) = mpsc::channel();
    *SLAB_REPORT.lock().unwrap() = Some(tx);
    let (rt, handles) =
        RinglineBuilder::new(config().workers(1).standalone_task_capacity(4).build().unwrap())
            .launch::<SlabUser>()
            .unwrap_or_else(|e| panic!("launch on {}: {e}", backend_label()));
    let next = || rx.recv_timeout(Duration::from_secs(10)).expect("scenario step");
    assert_eq!(next(), "fifth: Err(TaskSlotsExhausted)", "on {}", backend_label());
    assert_eq!(next(), "stale abort: false", "an abort through a stale id hit the slot's new task");
    assert_eq!(next(), "fresh finished", "the slot's new task did not run to the end");
    *SLAB_REPORT.lock().unwrap() = None;
    stop(rt, handles);
}
