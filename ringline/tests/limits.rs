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
