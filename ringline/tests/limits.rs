//! Exhausted resources give typed errors and recover (TESTPLAN 21, 23, 29), on whichever backend
//! the build and `RINGLINE_BACKEND` select.

mod common;

use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use common::{Echo, Server, Watchdog, backend_label, client, config, pattern, round_trip, settle};
use ringline::{AsyncEventHandler, ConnCtx, Error, sleep, spawn};

#[test]
fn a_full_connection_table_refuses_the_surplus_and_recovers() {
    let _w = Watchdog::new("a_full_connection_table_refuses_the_surplus_and_recovers", 30);
    let server = Server::start::<Echo>(config().workers(1).max_connections(4));
    let mut served: Vec<_> = (0..4)
        .map(|i| {
            let mut c = client(server.addr);
            round_trip(&mut c, &pattern(i, 100));
            c
        })
        .collect();
    for _ in 0..6 {
        let mut c = client(server.addr);
        let _ = c.write_all(b"hello?");
        let mut b = [0u8; 8];
        let n = c.read(&mut b).unwrap_or(0);
        assert_eq!(n, 0, "a surplus connection must see EOF or a reset on {}", backend_label());
    }
    let refused = || server.shutdown.metrics().workers[0].connections_refused;
    assert!(settle(5, || refused() == 6), "connections_refused {} on {}", refused(), backend_label());
    served.truncate(2);
    let open = || server.shutdown.metrics().workers[0].connections_open;
    assert!(settle(5, || open() == 2), "slots not freed: {}", open());
    for i in 0..2 {
        let mut c = client(server.addr);
        round_trip(&mut c, &pattern(100 + i, 1000));
        served.push(c);
    }
    for (i, c) in served.iter_mut().enumerate() {
        round_trip(c, &pattern(200 + i as u64, 1000));
    }
    drop(served);
    server.stop();
}

static OUTCOMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Sends 64 KiB twice to a slow reader: once with `send_nowait`, once awaited.
struct PoolHungry;

impl AsyncEventHandler for PoolHungry {
    fn create_for_worker(_worker: usize) -> Self {
        PoolHungry
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let msg = pattern(conn.index() as u64, 64 * 1024);
            let nowait = match conn.send_nowait(&msg) {
                Ok(()) => "queued".to_string(),
                Err(e @ (Error::SendPoolExhausted | Error::SendQueueFull)) => format!("refused: {e}"),
                Err(e) => format!("unexpected: {e:?}"),
            };
            let awaited = conn.send(&msg).await;
            OUTCOMES.lock().unwrap().push(format!("{nowait}; awaited={awaited:?}"));
            let _ = conn.recv().await;
        }
    }
}

#[test]
fn send_pool_exhaustion_is_typed_all_or_nothing_and_awaited_sends_complete() {
    let _w = Watchdog::new("send_pool_exhaustion_is_typed", 60);
    let server = Server::start::<PoolHungry>(config().workers(1).send_pool(4, 16 * 1024));
    let addr = server.addr;
    let readers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = client(addr);
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while got.len() < 128 * 1024 {
                    std::thread::sleep(Duration::from_millis(2));
                    let n = match c.read(&mut buf) {
                        Ok(n) => n,
                        // After a whole 64 KiB message the short timeout ends the wait.
                        Err(e) if got.len() == 64 * 1024 && e.kind() == std::io::ErrorKind::WouldBlock => {
                            break;
                        }
                        Err(e) => panic!("read: {e}"),
                    };
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if got.len() == 64 * 1024 {
                        // Whole messages only: 64 KiB may be all that was sent.
                        c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                    }
                }
                got
            })
        })
        .collect();
    let received: Vec<Vec<u8>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let outcomes = OUTCOMES.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 8, "every handler finished its sends: {outcomes:?}");
    assert!(outcomes.iter().all(|o| o.ends_with("awaited=Ok(65536)")), "awaited sends: {outcomes:?}");
    assert!(
        outcomes.iter().any(|o| o.starts_with("refused")),
        "4 slots cannot hold 8 × 64 KiB: {outcomes:?}"
    );
    assert!(outcomes.iter().all(|o| !o.contains("unexpected")), "{outcomes:?}");
    for got in &received {
        assert!(got.len() % (64 * 1024) == 0, "a partial message reached the wire: {} bytes", got.len());
    }
    let m = &server.shutdown.metrics().workers[0];
    assert!(m.send_pool_exhausted > 0, "send_pool_exhausted must count the refusals");
    assert!(settle(5, || server.shutdown.metrics().workers[0].send_pool_in_use == 0), "slots must return");
    server.stop();
}

static OLD_HANDLE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The first connection leaves a task behind that keeps its `ConnCtx` and uses it after the
/// slot was reused; every connection echoes.
struct LeavesAHandleBehind;

impl AsyncEventHandler for LeavesAHandleBehind {
    fn create_for_worker(_worker: usize) -> Self {
        LeavesAHandleBehind
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            if conn.token().generation == 0 {
                let old = conn;
                let _ = spawn(async move {
                    sleep(Duration::from_millis(300)).await;
                    let send = old.send_nowait(b"ghost");
                    let read = old.recv().await.map(|b| b.len());
                    OLD_HANDLE.lock().unwrap().push(format!("send={send:?} read={read:?}"));
                });
            }
            common::echo_loop(conn).await;
        }
    }
}

#[test]
fn a_stale_handle_never_touches_the_slots_next_occupant() {
    let _w = Watchdog::new("a_stale_handle_never_touches_the_slots_next_occupant", 30);
    let server = Server::start::<LeavesAHandleBehind>(config().workers(1).max_connections(1));
    let mut first = client(server.addr);
    round_trip(&mut first, b"first");
    drop(first);
    let open = || server.shutdown.metrics().workers[0].connections_open;
    assert!(settle(5, || open() == 0), "first connection not released");
    let mut second = client(server.addr);
    for i in 0..10 {
        round_trip(&mut second, &pattern(i, 5000));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(settle(5, || !OLD_HANDLE.lock().unwrap().is_empty()), "the stale task never ran");
    let seen = OLD_HANDLE.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["send=Err(InvalidConnection) read=Err(InvalidConnection)"],
        "stale handle outcome on {}",
        backend_label()
    );
    second.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut b = [0u8; 16];
    assert!(second.read(&mut b).is_err(), "no ghost bytes may reach the new occupant");
    drop(second);
    server.stop();
}

// ---- 29. handle_outlives_connection ----------------------------------------------------------

/// What the stale handles of the first connection got, one line per call.
static STALE: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Set by `on_accept` of the slot's second occupant; the stale task waits for it.
static SECOND_OCCUPANT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Set once the stale task made every call.
static STALE_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Classifies one stale call: `ok` when it is one of the outcomes TESTPLAN 29 allows.
fn stale(call: &str, allowed: bool, what: String) {
    let verdict = if allowed { "ok" } else { "WRONG" };
    STALE.lock().unwrap().push(format!("{verdict} {call}: {what}"));
}

/// Every call through the old `ConnCtx` (and `ConnStream`) once the slot has a new occupant.
async fn use_stale_handles(old: ConnCtx, #[cfg(feature = "futures-io")] old_stream: ringline::ConnStream) {
    use ringline::timeout;
    let bound = Duration::from_secs(5);
    let mut waited = 0;
    while !SECOND_OCCUPANT.load(std::sync::atomic::Ordering::SeqCst) && waited < 1_000 {
        sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let r = old.send_nowait(b"ghost");
    stale("send_nowait", matches!(r, Err(Error::InvalidConnection | Error::Closed)), format!("{r:?}"));
    let r = timeout(bound, old.send(b"ghost")).await;
    stale("send", matches!(r, Ok(Err(Error::InvalidConnection | Error::Closed))), format!("{r:?}"));
    let r = timeout(bound, old.recv()).await.map(|r| r.map(|b| b.len()));
    stale("recv", matches!(r, Ok(Ok(0) | Err(Error::InvalidConnection))), format!("{r:?}"));
    let r = timeout(bound, old.with_data(|d| ringline::ParseResult::Consumed(d.len()))).await;
    stale("with_data", matches!(r, Ok(Ok(0) | Err(Error::InvalidConnection))), format!("{r:?}"));
    #[cfg(feature = "futures-io")]
    {
        use futures_util::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = old_stream;
        let mut b = [0u8; 16];
        let r = timeout(bound, s.read(&mut b)).await.map(|r| r.map_err(|e| e.kind()));
        let ok = matches!(r, Ok(Ok(0) | Err(std::io::ErrorKind::NotConnected)));
        stale("ConnStream::read", ok, format!("{r:?}"));
        let r = timeout(bound, s.write_all(b"ghost")).await.map(|r| r.map_err(|e| e.kind()));
        stale(
            "ConnStream::write_all",
            matches!(r, Ok(Err(std::io::ErrorKind::NotConnected))),
            format!("{r:?}"),
        );
    }
    STALE_DONE.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The slot's first occupant leaves a task holding its handles; every occupant echoes.
struct Outliver;

impl AsyncEventHandler for Outliver {
    fn create_for_worker(_worker: usize) -> Self {
        Outliver
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            if conn.token().generation == 0 {
                #[cfg(feature = "futures-io")]
                let _ = spawn(use_stale_handles(conn, conn.stream()));
                #[cfg(not(feature = "futures-io"))]
                let _ = spawn(use_stale_handles(conn));
            } else {
                SECOND_OCCUPANT.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            common::echo_loop(conn).await;
        }
    }
}

#[test]
fn handle_outlives_connection() {
    use common::framed::{self, Rng};
    use std::sync::atomic::Ordering::SeqCst;
    let _w = Watchdog::new("handle_outlives_connection", 60);
    let seed = framed::seed("handle_outlives_connection");
    let server = Server::start::<Outliver>(config().workers(1).max_connections(1));
    let mut first = client(server.addr);
    round_trip(&mut first, b"first");
    drop(first);
    let open = || server.shutdown.metrics().workers[0].connections_open;
    assert!(settle(5, || open() == 0), "first connection not released on {}", backend_label());
    // The new occupant's framed stream, message by message, while the stale task runs and after.
    let mut second = client(server.addr);
    let mut rng = Rng::new(seed);
    let mut after_done = 0;
    for seq in 0..2_000u32 {
        let msg = framed::frame(2, seq, rng.range(0, 20_000));
        round_trip(&mut second, &msg);
        if STALE_DONE.load(SeqCst) {
            after_done += 1;
            if after_done == 20 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(STALE_DONE.load(SeqCst), "the stale task never finished on {}", backend_label());
    let seen = STALE.lock().unwrap().clone();
    eprintln!("handle_outlives_connection on {}: {seen:?}", backend_label());
    assert!(
        seen.iter().all(|l| l.starts_with("ok ")),
        "stale handle outcomes on {}: {seen:#?}",
        backend_label()
    );
    assert_eq!(seen.len(), if cfg!(feature = "futures-io") { 6 } else { 4 }, "{seen:?}");
    second.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut b = [0u8; 16];
    assert!(second.read(&mut b).is_err(), "ghost bytes reached the new occupant on {}", backend_label());
    round_trip(&mut second, b"still open");
    let m = &server.shutdown.metrics().workers[0];
    assert_eq!((m.connections_open, m.connections_closed), (1, 1), "the old handle closed the new occupant?");
    drop(second);
    server.stop();
}
