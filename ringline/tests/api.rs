//! Outbound connections, timers, tasks, callbacks and graceful shutdown through the facade,
//! on whichever backend the build and `RINGLINE_BACKEND` select.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Watchdog, backend_label, client_runtime, config, on_worker, pattern, stop};
use ringline::{
    AsyncEventHandler, ConnCtx, Either, Error, connect, connect_with_timeout, select, sleep, spawn, timeout,
    try_sleep,
};

fn std_echo_listener() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let mut s = s.unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn connect_to_a_listening_port_exchanges_bytes() {
    let _w = Watchdog::new("connect_to_a_listening_port_exchanges_bytes", 30);
    let addr = std_echo_listener();
    let (shutdown, handles) = client_runtime(config());
    let got = on_worker(&shutdown, move || async move {
        let conn = connect(addr).await.expect("connect");
        assert!(conn.is_outbound());
        let msg = pattern(5, 100_000);
        conn.send(&msg).await.expect("send");
        let mut back = Vec::new();
        while back.len() < msg.len() {
            let d = conn.recv().await.expect("recv");
            assert!(!d.is_empty(), "early EOF");
            back.extend_from_slice(&d);
        }
        back == msg
    });
    assert!(got, "outbound echo mismatch on {}", backend_label());
    stop(shutdown, handles);
}

#[test]
fn connect_to_a_closed_port_is_refused_and_bad_targets_are_invalid_input() {
    let _w = Watchdog::new("connect_to_a_closed_port_is_refused", 30);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (shutdown, handles) = client_runtime(config());
    let (refused, port0, unspecified) = on_worker(&shutdown, move || async move {
        let mut kinds = Vec::new();
        for _ in 0..50 {
            kinds.push(match connect(closed).await {
                Err(Error::Io(e)) => Some(e.kind()),
                _ => None,
            });
        }
        let port0 = matches!(connect("127.0.0.1:0".parse().unwrap()).await, Err(Error::InvalidInput(_)));
        let unspec = matches!(connect("0.0.0.0:80".parse().unwrap()).await, Err(Error::InvalidInput(_)));
        (kinds, port0, unspec)
    });
    assert!(
        refused.iter().all(|k| *k == Some(ErrorKind::ConnectionRefused)),
        "{refused:?} on {}",
        backend_label()
    );
    assert!(port0 && unspecified, "invalid targets must be InvalidInput");
    let open: u64 = shutdown.metrics().workers.iter().map(|w| w.connections_open).sum();
    assert!(
        common::settle(5, || shutdown.metrics().workers[0].connections_open == 0),
        "slots leaked: {open}"
    );
    stop(shutdown, handles);
}

/// A listener with backlog 0 that never accepts, its queue filled so new SYNs are dropped.
fn full_backlog_listener() -> (std::net::TcpListener, SocketAddr, Vec<std::net::TcpStream>) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a fresh socket owned by nobody else.
    let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in of the size passed; `fd` is open.
    let r = unsafe { libc::bind(fd, (&raw const sin).cast(), size_of::<libc::sockaddr_in>() as u32) };
    assert_eq!(r, 0);
    // SAFETY: `fd` is a bound stream socket.
    assert_eq!(unsafe { libc::listen(fd, 0) }, 0);
    let addr = l.local_addr().unwrap();
    let fillers = (0..4)
        .filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    (l, addr, fillers)
}

#[test]
fn connect_with_timeout_to_a_full_backlog_times_out() {
    let _w = Watchdog::new("connect_with_timeout_to_a_full_backlog_times_out", 30);
    let (_listener, addr, _fillers) = full_backlog_listener();
    let (shutdown, handles) = client_runtime(config());
    let (result, waited) = on_worker(&shutdown, move || async move {
        let start = Instant::now();
        let r = connect_with_timeout(addr, Duration::from_millis(300)).await;
        (r.map(|_| ()).map_err(|e| format!("{e:?}")), start.elapsed())
    });
    assert_eq!(result, Err("ConnectTimeout".to_string()), "on {}", backend_label());
    assert!(waited >= Duration::from_millis(300), "timed out early: {waited:?}");
    assert!(common::settle(5, || shutdown.metrics().workers[0].connections_open == 0), "slot not released");
    stop(shutdown, handles);
}

#[test]
fn sleep_never_fires_early_and_try_sleep_reports_exhaustion() {
    let _w = Watchdog::new("sleep_never_fires_early_and_try_sleep_reports_exhaustion", 30);
    let (shutdown, handles) = client_runtime(config().timer_slots(4));
    let (elapsed, fifth_failed, after_drop_ok, waited_ok) = on_worker(&shutdown, || async {
        let start = Instant::now();
        sleep(Duration::from_millis(30)).await;
        let elapsed = start.elapsed();
        let held: Vec<_> = (0..4).map(|_| try_sleep(Duration::from_secs(60)).expect("slot")).collect();
        let fifth_failed = try_sleep(Duration::from_millis(1)).is_err();
        let mut held = held;
        held.pop();
        let after_drop_ok = try_sleep(Duration::from_millis(1)).is_ok();
        // A plain sleep waits for a slot instead of failing; free one from another task.
        let waiter = spawn(async { sleep(Duration::from_millis(5)).await });
        let t = Instant::now();
        let freer = spawn(async move {
            sleep(Duration::from_millis(1)).await;
            drop(held);
        });
        let waited_ok = waiter.unwrap().await.is_ok()
            && freer.unwrap().await.is_ok()
            && t.elapsed() >= Duration::from_millis(5);
        (elapsed, fifth_failed, after_drop_ok, waited_ok)
    });
    assert!(elapsed >= Duration::from_millis(30), "sleep fired early: {elapsed:?}");
    assert!(fifth_failed, "the fifth try_sleep must fail with 4 slots");
    assert!(after_drop_ok, "a dropped sleep must free its slot");
    assert!(waited_ok, "a plain sleep must wait for a slot, then complete");
    let exhausted: u64 = shutdown.metrics().workers.iter().map(|w| w.timer_exhausted).sum();
    assert!(exhausted > 0);
    stop(shutdown, handles);
}

#[test]
fn spawned_tasks_return_values_report_panics_and_respect_capacity() {
    let _w = Watchdog::new("spawned_tasks_return_values_report_panics_and_respect_capacity", 30);
    let (shutdown, handles) = client_runtime(config().standalone_task_capacity(3));
    let (value, panicked, exhausted, stale_abort) = on_worker(&shutdown, || async {
        // The on_worker task itself holds one of the 3 slots.
        let value = spawn(async { 41 + 1 }).unwrap().await.unwrap();
        let panicked = matches!(
            spawn(async { panic!("test-induced task panic") }).unwrap().await,
            Err(Error::TaskPanicked)
        );
        let a = spawn(sleep(Duration::from_millis(50))).unwrap();
        let b = spawn(sleep(Duration::from_millis(50))).unwrap();
        let exhausted = matches!(spawn(async {}), Err(Error::TaskSlotsExhausted));
        let old = a.id();
        a.await.unwrap();
        let c = spawn(sleep(Duration::from_millis(20))).unwrap();
        let stale_abort = !old.abort() && c.await.is_ok();
        b.await.unwrap();
        (value, panicked, exhausted, stale_abort)
    });
    assert_eq!(value, 42);
    assert!(panicked, "a panicking task resolves Err(TaskPanicked)");
    assert!(exhausted, "spawn beyond capacity is TaskSlotsExhausted");
    assert!(stale_abort, "aborting a finished task's id is false and leaves the new task alone");
    let panics: u64 = shutdown.metrics().workers.iter().map(|w| w.task_panics).sum();
    assert_eq!(panics, 1);
    stop(shutdown, handles);
}

/// Echo server whose reads time out; it answers "timeout" and keeps serving.
struct TimeoutEcho;

impl AsyncEventHandler for TimeoutEcho {
    fn create_for_worker(_worker: usize) -> Self {
        TimeoutEcho
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            loop {
                match select(
                    sleep(Duration::from_millis(20)),
                    timeout(Duration::from_millis(40), conn.recv()),
                )
                .await
                {
                    Either::Left(()) => {}
                    Either::Right(Err(_elapsed)) => {
                        unreachable!("the 20 ms sleep always wins over a 40 ms timeout")
                    }
                    Either::Right(Ok(Ok(d))) if !d.is_empty() => {
                        if conn.send(&d).await.is_err() {
                            break;
                        }
                    }
                    Either::Right(Ok(_)) => break,
                }
            }
        }
    }
}

#[test]
fn a_read_that_loses_a_select_keeps_its_bytes_and_the_connection_works() {
    let _w = Watchdog::new("a_read_that_loses_a_select_keeps_its_bytes", 30);
    let server = common::Server::start::<TimeoutEcho>(config());
    let mut c = common::client(server.addr);
    for i in 0..10u64 {
        std::thread::sleep(Duration::from_millis(25));
        common::round_trip(&mut c, &pattern(i, 10_000));
    }
    drop(c);
    server.stop();
}

static TICKS: AtomicUsize = AtomicUsize::new(0);
static NOTIFIES: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl AsyncEventHandler for Counting {
    fn create_for_worker(_worker: usize) -> Self {
        Counting
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        common::echo_loop(conn)
    }
    fn on_tick(&mut self, _ctx: &mut ringline::WorkerCtx<'_>) {
        TICKS.fetch_add(1, Ordering::Relaxed);
    }
    fn on_notify(&mut self, _ctx: &mut ringline::WorkerCtx<'_>) {
        NOTIFIES.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn on_notify_follows_a_notify_from_another_thread_and_on_tick_runs() {
    let _w = Watchdog::new("on_notify_follows_a_notify", 30);
    let (shutdown, handles) =
        ringline::RinglineBuilder::new(config().workers(1).tick_interval(None).build().unwrap())
            .launch::<Counting>()
            .unwrap();
    let worker = shutdown.worker(0).unwrap();
    for i in 1..=20 {
        let before = NOTIFIES.load(Ordering::Relaxed);
        std::thread::spawn({
            let w = worker.clone();
            move || w.notify().unwrap()
        })
        .join()
        .unwrap();
        assert!(
            common::settle(5, || NOTIFIES.load(Ordering::Relaxed) > before),
            "notify {i} lost on {}",
            backend_label()
        );
    }
    assert!(TICKS.load(Ordering::Relaxed) > 0, "on_tick never ran");
    stop(shutdown, handles);
    assert!(matches!(worker.notify(), Err(Error::ShuttingDown)), "notify after exit is ShuttingDown");
}

/// Sends 1000 numbered messages (some larger than a pool slot) and returns at once.
struct Pipelined;

fn message(i: u32) -> Vec<u8> {
    let len = if i % 100 == 7 { 10_000 } else { 16 + (i as usize % 200) };
    let mut m = i.to_be_bytes().to_vec();
    m.extend((0..len).map(|j| (i as usize + j) as u8));
    m
}

impl AsyncEventHandler for Pipelined {
    fn create_for_worker(_worker: usize) -> Self {
        Pipelined
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            for i in 0..1000u32 {
                let m = message(i);
                // Every third message is awaited; the others try `send_nowait` first and fall
                // back to an awaited send when the pool or queue is full.
                let queued_now = i % 3 != 0 && conn.send_nowait(&m).is_ok();
                if !queued_now {
                    conn.send(&m).await.expect("send");
                }
            }
        }
    }
}

#[test]
fn a_thousand_pipelined_sends_arrive_in_order_and_close_loses_nothing() {
    let _w = Watchdog::new("a_thousand_pipelined_sends_arrive_in_order", 30);
    let server = common::Server::start::<Pipelined>(config().send_pool(16, 4096).send_queue_limit(64 * 1024));
    let mut c = common::client(server.addr);
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let expected: Vec<u8> = (0..1000).flat_map(message).collect();
    assert_eq!(all.len(), expected.len(), "byte count on {}", backend_label());
    assert!(all == expected, "order or content differs on {}", backend_label());
    server.stop();
}

/// Queues 1 MiB, then waits to read until shutdown.
struct QueueThenWait;

impl AsyncEventHandler for QueueThenWait {
    fn create_for_worker(_worker: usize) -> Self {
        QueueThenWait
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let data = pattern(77, 1 << 20);
            let send = conn.send(&data);
            drop(send); // admitted at call time: the bytes are still sent
            let _ = conn.recv().await; // returns Err(ShuttingDown) once shutdown begins
        }
    }
}

#[test]
fn graceful_shutdown_flushes_queued_sends_before_fin() {
    let _w = Watchdog::new("graceful_shutdown_flushes_queued_sends_before_fin", 30);
    let server = common::Server::start::<QueueThenWait>(config().socket_buffers(None, None));
    let mut conns: Vec<_> = (0..10).map(|_| common::client(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(50));
    server.shutdown.shutdown_with_deadline(Duration::from_secs(10));
    let expected = pattern(77, 1 << 20);
    for c in conns.iter_mut() {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read error {e} on {}", backend_label()),
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(
            all == expected,
            "client got {} of {} bytes on {}",
            all.len(),
            expected.len(),
            backend_label()
        );
    }
    for h in server.handles {
        h.join().unwrap().unwrap();
    }
}

#[test]
fn cross_thread_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ringline::ShutdownHandle>();
    send_sync::<ringline::WorkerHandle>();
    send_sync::<ringline::ConnToken>();
    send_sync::<ringline::TaskId>();
    send_sync::<ringline::Error>();
}

#[test]
fn spawn_blocking_runs_on_the_pool_reports_panics_and_its_threads_end_with_the_runtime() {
    let _w = Watchdog::new("spawn_blocking_runs_on_the_pool", 30);
    let (shutdown, handles) = client_runtime(config().blocking_threads(2));
    let (sum, panicked, names) = on_worker(&shutdown, || async {
        let jobs: Vec<_> = (0..8u64)
            .map(|i| {
                ringline::spawn_blocking(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    (i, std::thread::current().name().unwrap_or("").to_string())
                })
            })
            .collect();
        let results = ringline::join_all(jobs).await;
        let sum: u64 = results.iter().map(|r| r.as_ref().unwrap().0).sum();
        let names: Vec<String> = results.into_iter().map(|r| r.unwrap().1).collect();
        let panicked = matches!(
            ringline::spawn_blocking(|| panic!("test-induced blocking panic")).await,
            Err::<(), _>(Error::TaskPanicked)
        );
        (sum, panicked, names)
    });
    assert_eq!(sum, 28, "every job ran once");
    assert!(panicked, "a panicking job resolves Err(TaskPanicked)");
    assert!(names.iter().all(|n| n.starts_with("ringline-blocking-")), "{names:?}");
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() <= 2, "blocking_threads(2) caps the pool: {distinct:?}");
    stop(shutdown, handles);
    let left = common::thread_names().into_iter().filter(|n| n.starts_with("ringline-blocking")).count();
    assert_eq!(left, 0, "pool threads must be joined when the workers end");
}
