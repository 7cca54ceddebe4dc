//! Wake-ups and shutdown (TESTPLAN 30, 31, 33) on whichever backend the build and
//! `RINGLINE_BACKEND` select. Tests in this binary run one at a time (fd and thread baselines).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::task::{Context, Poll};
use std::time::Duration;

use common::{
    Server, Watchdog, backend_label, client, client_runtime, config, fd_count, on_worker, pattern, settle,
    stop, thread_count,
};
use ringline::{AsyncEventHandler, ConnCtx, ParseResult, WorkerCtx, join, select, spawn};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- 30. lost_wake_regressions ---------------------------------------------------------------

/// Pending until a std thread, holding a clone of the waker, sets the flag and wakes it.
struct WokenFromThread {
    done: Arc<AtomicBool>,
    started: bool,
}

impl Future for WokenFromThread {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if !self.started {
            self.started = true;
            let (done, waker) = (self.done.clone(), cx.waker().clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                done.store(true, Ordering::SeqCst);
                waker.wake();
            });
        }
        Poll::Pending
    }
}

static NOTIFIES: AtomicU64 = AtomicU64::new(0);

/// Hands its connection to a second task that waits for data and answers.
struct HandsOver;

impl AsyncEventHandler for HandsOver {
    fn create_for_worker(_worker: usize) -> Self {
        HandsOver
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let reader = spawn(async move {
                let mut got = Vec::new();
                let _ = conn
                    .with_data(|d| {
                        got.extend_from_slice(d);
                        ParseResult::Consumed(d.len())
                    })
                    .await;
                let _ = conn.send(&got).await;
            })
            .expect("spawn the reader");
            let _ = reader.await;
        }
    }
    fn on_notify(&mut self, _ctx: &mut WorkerCtx<'_>) {
        NOTIFIES.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn lost_wake_regressions() {
    let _serial = serial();
    let _w = Watchdog::new("lost_wake_regressions", 30);
    let server = Server::start::<HandsOver>(config().workers(1).tick_interval(None));

    let joined = on_worker(&server.shutdown, || async {
        let (tx, rx) = async_channel::bounded::<u32>(1);
        let (got, sent) = join(rx.recv(), tx.send(7)).await;
        (got.ok(), sent.is_ok())
    });
    assert_eq!(joined, (Some(7), true), "join(recv, send) over a bounded channel on {}", backend_label());

    on_worker(&server.shutdown, || async {
        WokenFromThread { done: Arc::new(AtomicBool::new(false)), started: false }.await
    });

    let drained = on_worker(&server.shutdown, || async {
        let (tx, rx) = async_channel::bounded::<u32>(1);
        tx.send(0).await.unwrap();
        let senders: Vec<_> = (1..=2)
            .map(|v| {
                let tx = tx.clone();
                spawn(async move { tx.send(v).await.is_ok() }).expect("spawn a sender")
            })
            .collect();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(rx.recv().await.unwrap());
        }
        for s in senders {
            assert!(s.await.unwrap(), "a blocked sender failed");
        }
        got.sort_unstable();
        got
    });
    assert_eq!(drained, [0, 1, 2], "two senders blocked on a full channel");

    let mut c = client(server.addr);
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(b"late data").unwrap();
    let mut back = [0u8; 9];
    c.read_exact(&mut back).expect("the second task woke for the data");
    assert_eq!(&back, b"late data");

    let worker = server.shutdown.worker(0).unwrap();
    let before = NOTIFIES.load(Ordering::SeqCst);
    std::thread::spawn(move || worker.notify().unwrap()).join().unwrap();
    assert!(settle(10, || NOTIFIES.load(Ordering::SeqCst) > before), "a notify from another thread was lost");
    let (tx, rx) = mpsc::channel();
    let worker = server.shutdown.worker(0).unwrap();
    std::thread::spawn(move || worker.spawn(move || async move { tx.send("ran").unwrap() }).unwrap())
        .join()
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("ran"), "a remote spawn was never polled");
    drop(c);
    server.stop();
}

// ---- 31. graceful_drain_flushes_pending ------------------------------------------------------

const DRAIN_BYTES: usize = 1 << 20;
static QUEUED: AtomicU64 = AtomicU64::new(0);
static DROP_AFTER_ADMISSION: AtomicBool = AtomicBool::new(false);

/// Queues 1 MiB (with `send_nowait`, or with a `send` future dropped after admission), then
/// waits to read.
struct QueuesAMebibyte;

impl AsyncEventHandler for QueuesAMebibyte {
    fn create_for_worker(_worker: usize) -> Self {
        QueuesAMebibyte
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let msg = pattern(conn.index() as u64, DRAIN_BYTES);
            if DROP_AFTER_ADMISSION.load(Ordering::SeqCst) {
                // The send is polled (and admitted) first; the ready future wins and the send
                // future is dropped with its bytes still queued.
                let _ = select(conn.send(&msg), std::future::ready(())).await;
            } else {
                conn.send_nowait(&msg).expect("the send pool holds the whole megabyte");
            }
            // Tell the client which pattern to expect, after the megabyte.
            QUEUED.fetch_add(1, Ordering::SeqCst);
            let _ = conn.recv().await;
        }
    }
}

fn graceful_drain(drop_after_admission: bool) {
    let fds = fd_count();
    QUEUED.store(0, Ordering::SeqCst);
    DROP_AFTER_ADMISSION.store(drop_after_admission, Ordering::SeqCst);
    let server = Server::start::<QueuesAMebibyte>(config().workers(2).send_pool(4096, 16 * 1024));
    let clients: Vec<TcpStream> = (0..100).map(|_| client(server.addr)).collect();
    assert!(settle(20, || QUEUED.load(Ordering::SeqCst) == 100), "handlers did not queue their sends");
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = c.read(&mut buf).expect("a slow reader got an error instead of data then EOF");
                    if n == 0 {
                        return got;
                    }
                    got.extend_from_slice(&buf[..n]);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    server.shutdown.shutdown();
    let mut sizes = Vec::new();
    for r in readers {
        let got = r.join().unwrap();
        sizes.push(got.len());
        let index = (0..4096u64).find(|&i| pattern(i, 64) == got[..64.min(got.len())]);
        assert!(
            got.len() == DRAIN_BYTES && index.is_some_and(|i| got == pattern(i, DRAIN_BYTES)),
            "a client got {} bytes (or the wrong ones) before EOF on {}",
            got.len(),
            backend_label()
        );
    }
    for h in server.handles {
        h.join().expect("worker panicked").expect("worker error");
    }
    // Each worker's unparker (an eventfd) lives as long as a handle that could still call it,
    // so that a late `notify` never writes into a reused descriptor.
    drop(server.shutdown);
    assert!(settle(5, || fd_count() <= fds), "fds {} > baseline {fds}: {:?}", fd_count(), common::fd_list());
    assert!(settle(5, || thread_count() == 0), "ringline threads left: {}", thread_count());
}

#[test]
fn graceful_drain_flushes_send_nowait() {
    let _serial = serial();
    let _w = Watchdog::new("graceful_drain_flushes_send_nowait", 60);
    graceful_drain(false);
}

#[test]
fn graceful_drain_flushes_sends_dropped_after_admission() {
    let _serial = serial();
    let _w = Watchdog::new("graceful_drain_flushes_sends_dropped_after_admission", 60);
    graceful_drain(true);
}

// ---- 33. shutdown_during_accept_burst --------------------------------------------------------

#[test]
fn shutdown_during_accept_burst() {
    let _serial = serial();
    let _w = Watchdog::new("shutdown_during_accept_burst", 60);
    let fds = fd_count();
    let server = Server::start::<common::Echo>(config().workers(2));
    let addr = server.addr;
    let go = Arc::new(std::sync::Barrier::new(101));
    let outcomes: Vec<_> = (0..100)
        .map(|_| {
            let go = go.clone();
            std::thread::spawn(move || {
                go.wait();
                let mut seen = [0usize; 4]; // echo, eof, reset/refused, connect refused
                for i in 0..5 {
                    let Ok(mut c) = TcpStream::connect(addr) else {
                        seen[3] += 1;
                        continue;
                    };
                    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let msg = [i as u8; 16];
                    let _ = c.write_all(&msg);
                    let mut back = [0u8; 16];
                    match c.read_exact(&mut back) {
                        Ok(()) => {
                            assert_eq!(back, msg, "a wrong echo during shutdown");
                            seen[0] += 1;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => seen[1] += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => seen[2] += 1,
                        Err(e) => panic!(
                            "a client hung or failed oddly during shutdown on {}: {e}",
                            backend_label()
                        ),
                    }
                }
                seen
            })
        })
        .collect();
    go.wait();
    std::thread::sleep(Duration::from_millis(5));
    server.shutdown.shutdown();
    let mut total = [0usize; 4];
    for o in outcomes {
        let seen = o.join().expect("client thread");
        for k in 0..4 {
            total[k] += seen[k];
        }
    }
    eprintln!(
        "shutdown_during_accept_burst on {}: echo {}, eof {}, reset {}, refused {}",
        backend_label(),
        total[0],
        total[1],
        total[2],
        total[3]
    );
    assert_eq!(total.iter().sum::<usize>(), 500);
    for h in server.handles {
        h.join().expect("worker panicked").expect("worker error");
    }
    // Each worker's unparker (an eventfd) lives as long as a handle that could still call it,
    // so that a late `notify` never writes into a reused descriptor.
    drop(server.shutdown);
    assert!(settle(5, || fd_count() <= fds), "fds {} > baseline {fds}", fd_count());
    assert!(settle(5, || thread_count() == 0), "ringline threads left: {}", thread_count());
}

#[test]
fn notify_and_spawn_wake_an_idle_client_runtime() {
    let _serial = serial();
    let _w = Watchdog::new("notify_and_spawn_wake_an_idle_client_runtime", 30);
    let (rt, handles) = client_runtime(config().tick_interval(None));
    for i in 0..50u32 {
        std::thread::sleep(Duration::from_millis(i as u64 % 7));
        assert_eq!(on_worker(&rt, move || async move { i * 2 }), i * 2);
    }
    stop(rt, handles);
}
