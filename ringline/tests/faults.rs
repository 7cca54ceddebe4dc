//! Faults (TESTPLAN 8, 11, 13, 14) on whichever backend the build and `RINGLINE_BACKEND` select.
//! Tests in this binary run one at a time: they compare process-wide fd counts with baselines.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::framed::{self, Rng};
use common::{
    Server, Watchdog, backend_label, client, client_runtime, config, fd_count, is_child, on_worker, pattern,
    round_trip, run_child, set_linger_zero, settle, stop,
};
use ringline::{
    AsyncEventHandler, CloseReason, ConnCtx, ConnToken, Error, ParseResult, WorkerCtx, connect, spawn,
};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- 8. peer_rst_mid_stream ------------------------------------------------------------------

static RST_EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn rst_event(e: String) {
    RST_EVENTS.lock().unwrap().push(e);
}

/// Reads a greeting: `canary` connections echo; any other connection keeps a read pending in a
/// second task while it sends 8 MiB with awaited sends, and reports how both ended.
struct RstVictim;

impl AsyncEventHandler for RstVictim {
    fn create_for_worker(_worker: usize) -> Self {
        RstVictim
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let hello = conn.recv().await.unwrap_or_default();
            if hello.starts_with(b"canary") {
                let _ = conn.send(&hello).await;
                return common::echo_loop(conn).await;
            }
            let reader = spawn(async move {
                match conn.recv().await {
                    Ok(d) => format!("read Ok({} bytes)", d.len()),
                    Err(e) => format!("read {}", describe(&e)),
                }
            })
            .expect("spawn the reader");
            let chunk = pattern(1, 64 * 1024);
            let mut sent = "send completed 8 MiB".to_string();
            for _ in 0..128 {
                if let Err(e) = conn.send(&chunk).await {
                    sent = format!("send {}", describe(&e));
                    break;
                }
            }
            rst_event(sent);
            rst_event(reader.await.unwrap_or_else(|e| format!("reader task {e}")));
        }
    }
    fn on_close(&mut self, _conn: ConnToken, reason: CloseReason) {
        rst_event(format!("on_close {reason:?}"));
    }
}

fn describe(e: &Error) -> String {
    match e {
        Error::Io(io) => format!("Io({:?})", io.kind()),
        other => format!("{other:?}"),
    }
}

#[test]
fn peer_rst_mid_stream() {
    let _serial = serial();
    if !is_child() {
        let status = run_child("peer_rst_mid_stream");
        assert!(
            status.success(),
            "the child with SIGPIPE at SIG_DFL failed ({status}) on {}",
            backend_label()
        );
        return;
    }
    // SAFETY: resetting a signal's disposition has no memory-safety preconditions; the child
    // wants the default (terminate) so that any write without MSG_NOSIGNAL would kill it.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let _w = Watchdog::new("peer_rst_mid_stream", 60);
    let fds = fd_count();
    let server = Server::start::<RstVictim>(config().workers(1));
    let mut canary = client(server.addr);
    round_trip(&mut canary, b"canary-1");

    let mut victim = client(server.addr);
    victim.write_all(b"victim").unwrap();
    let mut some = vec![0u8; 256 * 1024];
    victim.read_exact(&mut some).unwrap();
    set_linger_zero(&victim);
    drop(victim);

    let events = || RST_EVENTS.lock().unwrap().clone();
    assert!(
        settle(20, || events().iter().any(|e| e.starts_with("on_close"))),
        "the reset connection was never released: {:?}",
        events()
    );
    let ev = events();
    eprintln!("peer_rst_mid_stream on {}: {ev:?}", backend_label());
    let typed = |e: &String| e.contains("Io(ConnectionReset)") || e.contains("Io(BrokenPipe)");
    assert!(ev.iter().any(typed), "no typed reset/broken-pipe error reached the handler: {ev:?}");
    assert!(
        !ev.iter()
            .any(|e| (e.starts_with("send") || e.starts_with("read")) && e.contains("Io(") && !typed(e)),
        "an I/O error of another kind: {ev:?}"
    );
    assert!(ev.iter().any(|e| e == "on_close Reset"), "on_close did not report Reset: {ev:?}");

    round_trip(&mut canary, b"canary still served");
    drop(canary);
    assert!(settle(5, || server.shutdown.metrics().workers[0].connections_open == 0), "slots not released");
    server.stop();
    assert!(settle(5, || fd_count() <= fds), "fds {} > baseline {fds}", fd_count());
}

// ---- 11. connect_refused_loop ----------------------------------------------------------------

#[test]
fn connect_refused_loop() {
    let _serial = serial();
    let _w = Watchdog::new("connect_refused_loop", 120);
    let closed: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let live = Server::start::<common::Echo>(config().workers(1));
    let live_addr = live.addr;
    let (rt, handles) = client_runtime(config());
    let fds = fd_count();
    let wrong = on_worker(&rt, move || async move {
        let mut wrong = Vec::new();
        for _ in 0..1000 {
            match connect(closed).await {
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => wrong.push(format!("refused connect gave {e:?}")),
                Ok(_) => wrong.push("a closed port accepted".to_string()),
            }
        }
        let invalid: [SocketAddr; 2] = ["127.0.0.1:0".parse().unwrap(), "0.0.0.0:80".parse().unwrap()];
        for i in 0..1000 {
            match connect(invalid[i % 2]).await {
                Err(Error::InvalidInput(_)) => {}
                other => wrong.push(format!("invalid target gave {:?}", other.map(|_| ()))),
            }
        }
        Ok::<_, String>(wrong)
    })
    .unwrap_or_else(|e| panic!("on {}: {e}", backend_label()));
    assert!(
        wrong.is_empty(),
        "{} wrong results on {}, first: {:?}",
        wrong.len(),
        backend_label(),
        wrong.first()
    );
    assert!(settle(5, || fd_count() <= fds), "fds grew during refused connects: {} > {fds}", fd_count());
    let open = || rt.metrics().workers[0].connections_open;
    assert!(settle(5, || open() == 0), "connections_open {} after 2,000 failed connects", open());
    let echoed = on_worker(&rt, move || async move {
        let conn = connect(live_addr).await.map_err(|e| format!("live connect: {e}"));
        let echoed = match conn {
            Ok(c) => {
                c.send(b"after the storm").await.map_err(|e| e.to_string())?;
                let mut got = Vec::new();
                while got.len() < 15 {
                    let d = c.recv().await.map_err(|e| e.to_string())?;
                    if d.is_empty() {
                        break;
                    }
                    got.extend_from_slice(&d);
                }
                got
            }
            Err(e) => return Err(e),
        };
        Ok::<_, String>(echoed)
    })
    .unwrap_or_else(|e| panic!("on {}: {e}", backend_label()));
    assert_eq!(echoed, b"after the storm", "live connect after the failures");
    stop(rt, handles);
    live.stop();
}

// ---- 13. idle_worker_cross_thread_wake -------------------------------------------------------

static NOTIFIED: AtomicU64 = AtomicU64::new(0);

struct CountsNotifies;

impl AsyncEventHandler for CountsNotifies {
    fn create_for_worker(_worker: usize) -> Self {
        CountsNotifies
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        common::echo_loop(conn)
    }
    fn on_notify(&mut self, _ctx: &mut WorkerCtx<'_>) {
        NOTIFIED.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn idle_worker_cross_thread_wake() {
    let _serial = serial();
    let _w = Watchdog::new("idle_worker_cross_thread_wake", 120);
    let seed = framed::seed("idle_worker_cross_thread_wake");
    let server = Server::start::<CountsNotifies>(config().workers(1).tick_interval(None));
    let handle = server.shutdown.worker(0).expect("worker 0");
    let n = framed::scaled(500);
    let notifier = std::thread::spawn(move || {
        let mut rng = Rng::new(seed ^ 1);
        for i in 0..n {
            std::thread::sleep(Duration::from_millis(rng.range(0, 20) as u64));
            let before = NOTIFIED.load(Ordering::SeqCst);
            handle.notify().expect("notify");
            assert!(
                settle(20, || NOTIFIED.load(Ordering::SeqCst) > before),
                "notify {i} was never followed by on_notify on {}",
                backend_label()
            );
        }
    });
    let mut rng = Rng::new(seed);
    for i in 0..n as u64 {
        std::thread::sleep(Duration::from_millis(rng.range(0, 20) as u64));
        let mut c = client(server.addr);
        round_trip(&mut c, &pattern(i, 32));
    }
    notifier.join().expect("notifier");
    server.stop();
}

// ---- 14. task_panic_isolation ----------------------------------------------------------------

static PANIC_IN_ACCEPT: AtomicBool = AtomicBool::new(false);
static PANIC_IN_TICK: AtomicBool = AtomicBool::new(false);
const MAGIC: u8 = 0xFF;

/// Echoes with `with_data`; panics on the magic byte, in `on_tick` and in the synchronous part
/// of `on_accept` when asked to.
struct Panicky;

impl AsyncEventHandler for Panicky {
    fn create_for_worker(_worker: usize) -> Self {
        Panicky
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        if PANIC_IN_ACCEPT.swap(false, Ordering::SeqCst) {
            panic!("injected panic in the synchronous part of on_accept");
        }
        async move {
            let mut buf = Vec::new();
            loop {
                let r = conn
                    .with_data(|d| {
                        assert!(!d.contains(&MAGIC), "injected panic: magic byte");
                        buf.clear();
                        buf.extend_from_slice(d);
                        ParseResult::Consumed(d.len())
                    })
                    .await;
                if !matches!(r, Ok(n) if n > 0) || conn.send(&buf).await.is_err() {
                    break;
                }
            }
        }
    }
    fn on_tick(&mut self, _ctx: &mut WorkerCtx<'_>) {
        if PANIC_IN_TICK.swap(false, Ordering::SeqCst) {
            panic!("injected panic in on_tick");
        }
    }
}

/// Reads until EOF or a reset; true if the server ended the connection.
fn ended_by_server(c: &mut std::net::TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match c.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn task_panic_isolation() {
    let _serial = serial();
    let _w = Watchdog::new("task_panic_isolation", 60);
    let fds = fd_count();
    let server = Server::start::<Panicky>(config().workers(1));
    let addr = server.addr;

    // Every client is accepted before the on_accept panic is armed, so only its own connection
    // can take it.
    let normal: Vec<_> = (0..50u64)
        .map(|i| {
            let mut c = client(addr);
            round_trip(&mut c, &[b'a' + (i % 26) as u8]);
            std::thread::spawn(move || {
                for k in 0..20 {
                    let msg: Vec<u8> = pattern(i * 100 + k, 200).into_iter().map(|b| b & 0x7F).collect();
                    round_trip(&mut c, &msg);
                }
            })
        })
        .collect();
    let bad: Vec<_> = (0..10)
        .map(|_| {
            let mut c = client(addr);
            round_trip(&mut c, b"ok");
            std::thread::spawn(move || {
                c.write_all(&[1, 2, MAGIC, 3]).unwrap();
                assert!(
                    ended_by_server(&mut c),
                    "a panicking connection was not ended on {}",
                    backend_label()
                );
            })
        })
        .collect();

    PANIC_IN_ACCEPT.store(true, Ordering::SeqCst);
    let mut c = client(addr);
    let _ = c.write_all(b"hello");
    assert!(ended_by_server(&mut c), "a connection whose on_accept panicked was not ended");
    assert!(!PANIC_IN_ACCEPT.load(Ordering::SeqCst), "on_accept never saw the flag");

    PANIC_IN_TICK.store(true, Ordering::SeqCst);
    assert!(settle(10, || !PANIC_IN_TICK.load(Ordering::SeqCst)), "on_tick never ran");

    let (tx, rx) = mpsc::channel();
    server
        .shutdown
        .worker(0)
        .unwrap()
        .spawn(move || async move {
            let h = spawn(async { panic!("injected panic in a spawned task") }).expect("spawn");
            let _ = tx.send(format!("{:?}", h.await.map(|()| "ok")));
        })
        .unwrap();
    let joined = rx.recv_timeout(Duration::from_secs(20)).expect("spawned task result");
    assert_eq!(joined, "Err(TaskPanicked)", "the panicked task's handle on {}", backend_label());

    for t in normal.into_iter().chain(bad) {
        t.join().expect("client thread");
    }
    drop(c);
    let m = || server.shutdown.metrics().workers[0].clone();
    assert!(
        settle(5, || m().task_panics == 13),
        "task_panics {} != 13 on {}",
        m().task_panics,
        backend_label()
    );
    assert!(m().alive, "the worker died");
    let mut after = client(addr);
    round_trip(&mut after, b"still serving");
    drop(after);
    assert!(settle(5, || m().connections_open == 0), "slots not released: {}", m().connections_open);
    server.stop();
    assert!(settle(5, || fd_count() <= fds), "fds {} > baseline {fds}", fd_count());
}
