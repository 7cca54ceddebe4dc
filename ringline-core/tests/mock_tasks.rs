//! Tasks over the `MockDriver`: spawn limits, abort, panics, and wakes from other threads.
#![cfg(feature = "testing")]

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use common::{Hooks, Log, WAIT, cfg, start, wait_for, watchdog};
use ringline_core::{CloseReason, Error, ParseResult, sleep, spawn, worker_metrics};

/// Runs `scenario` as the task of one inbound connection and returns what it reported.
fn in_conn_task(
    cfg: ringline_core::ConfigBuilder,
    scenario: impl Fn(mpsc::Sender<String>) -> common::LocalFut + Send + 'static,
) -> (Vec<String>, ringline_core::WorkerMetrics) {
    let (tx, rx) = mpsc::channel();
    let rt = start(cfg, move || {
        let tx = Mutex::new(tx);
        Hooks {
            accept: Box::new(move |_conn| {
                let tx = tx.lock().unwrap().clone();
                let done = tx.clone();
                let fut = scenario(tx);
                Box::pin(async move {
                    fut.await;
                    done.send("done".into()).unwrap();
                })
            }),
            ..Hooks::default()
        }
    });
    let _peer = rt.net.connect_inbound(&rt.worker).unwrap();
    let mut out = Vec::new();
    loop {
        let line = rx.recv_timeout(WAIT).expect("scenario finished in time");
        if line == "done" {
            break;
        }
        out.push(line);
    }
    (out, rt.stop())
}

/// `standalone_task_capacity(2)`: the third spawn fails with `TaskSlotsExhausted` and succeeds
/// once a task ended; connection tasks do not count.
#[test]
fn spawn_capacity_is_enforced() {
    let _w = watchdog("spawn_capacity_is_enforced");
    let (out, m) = in_conn_task(cfg().standalone_task_capacity(2), |tx| {
        Box::pin(async move {
            let h1 = spawn(async {
                sleep(Duration::from_millis(20)).await;
                1
            })
            .unwrap();
            let h2 = spawn(async {
                sleep(Duration::from_millis(30)).await;
                2
            })
            .unwrap();
            let third = spawn(async { 3 });
            tx.send(format!("third: {:?}", third.err())).unwrap();
            assert_eq!(h1.await.unwrap(), 1);
            let h3 = spawn(async { 3 }).expect("a slot is free again");
            assert_eq!(h2.await.unwrap() + h3.await.unwrap(), 5);
            tx.send("ok".into()).unwrap();
        })
    });
    assert_eq!(out, [format!("third: {:?}", Some(Error::TaskSlotsExhausted)), "ok".to_string()]);
    assert_eq!(m.task_slots, 2);
}

/// A panicking task resolves its handle with `TaskPanicked`; the worker keeps running and counts
/// it. Aborting a live task resolves `TaskAborted`; `TaskId::abort` on a finished id whose slot
/// was reused returns false and leaves the new task alone.
#[test]
fn panic_and_abort_of_spawned_tasks() {
    let _w = watchdog("panic_and_abort_of_spawned_tasks");
    let (out, m) = in_conn_task(cfg().standalone_task_capacity(4), |tx| {
        Box::pin(async move {
            let h = spawn(async {
                if worker_metrics().is_some() {
                    panic!("deliberate panic in a spawned task");
                }
            })
            .unwrap();
            tx.send(format!("panicked: {:?}", h.await.err())).unwrap();
            tx.send(format!("task_panics: {}", worker_metrics().unwrap().task_panics)).unwrap();

            let live = spawn(sleep(Duration::from_secs(30))).unwrap();
            assert!(live.id().abort());
            tx.send(format!("aborted: {:?}", live.await.err())).unwrap();

            let old = spawn(async { 1 }).unwrap();
            let old_id = old.id();
            assert_eq!(old.await.unwrap(), 1);
            let new = spawn(async {
                sleep(Duration::from_millis(20)).await;
                2
            })
            .unwrap();
            assert_ne!(new.id(), old_id);
            tx.send(format!("stale abort: {}", old_id.abort())).unwrap();
            assert!(!new.is_finished());
            tx.send(format!("new task: {:?}", new.await)).unwrap();
        })
    });
    assert_eq!(
        out,
        [
            format!("panicked: {:?}", Some(Error::TaskPanicked)),
            "task_panics: 1".to_string(),
            format!("aborted: {:?}", Some(Error::TaskAborted)),
            "stale abort: false".to_string(),
            "new task: Ok(2)".to_string(),
        ]
    );
    assert_eq!(m.task_panics, 1);
}

/// A connection task that panics closes only its own connection (reason `Panicked`); another
/// connection keeps echoing.
#[test]
fn panicking_handler_task_closes_only_its_connection() {
    let _w = watchdog("panicking_handler_task_closes_only_its_connection");
    let closes = Log::default();
    let c2 = closes.clone();
    let rt = start(cfg(), move || Hooks {
        accept: Box::new(|conn| {
            Box::pin(async move {
                loop {
                    let mut got = Vec::new();
                    match conn
                        .with_data(|d| {
                            got = d.to_vec();
                            ParseResult::Consumed(d.len())
                        })
                        .await
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if got.starts_with(b"panic") {
                        panic!("deliberate panic in a connection task");
                    }
                    if conn.send(&got).await.is_err() {
                        break;
                    }
                }
            })
        }),
        on_close: Box::new(move |_, r| c2.push(r)),
        ..Hooks::default()
    });
    let a = rt.net.connect_inbound(&rt.worker).unwrap();
    let b = rt.net.connect_inbound(&rt.worker).unwrap();
    a.send(b"hello a").unwrap();
    b.send(b"hello b").unwrap();
    assert_eq!(a.read_exact(7, WAIT).unwrap(), b"hello a");
    assert_eq!(b.read_exact(7, WAIT).unwrap(), b"hello b");
    a.send(b"panic!").unwrap();
    assert!(a.wait_closed(WAIT), "the panicking connection is closed");
    assert!(a.was_aborted(), "closed by reset");
    assert!(wait_for(WAIT, || closes.len() == 1));
    assert_eq!(closes.get(), [CloseReason::Panicked]);
    b.send(b"still here").unwrap();
    assert_eq!(b.read_exact(10, WAIT).unwrap(), b"still here");
    assert!(!b.is_closed());
    let m = rt.metrics();
    assert_eq!(m.task_panics, 1);
    assert_eq!(m.connections_open, 1);
    b.fin();
    assert!(b.wait_closed(WAIT));
    rt.stop();
}

/// A oneshot completed from a plain std thread through a cloned `Waker`.
struct Oneshot<T>(Arc<Mutex<(Option<T>, Option<Waker>)>>);

impl<T> Oneshot<T> {
    fn new() -> (Oneshot<T>, Oneshot<T>) {
        let s = Arc::new(Mutex::new((None, None)));
        (Oneshot(s.clone()), Oneshot(s))
    }
    fn send(self, v: T) {
        let w = {
            let mut g = self.0.lock().unwrap();
            g.0 = Some(v);
            g.1.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
    async fn recv(self) -> T {
        std::future::poll_fn(|cx| {
            let mut g = self.0.lock().unwrap();
            match g.0.take() {
                Some(v) => Poll::Ready(v),
                None => {
                    g.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// With no tick and no timers the worker parks without a bound: only a cross-thread wake can
/// move it. A cloned `Waker` woken from a std thread, `WorkerHandle::spawn` and
/// `WorkerHandle::notify` from the test thread each complete.
#[test]
fn wakes_from_other_threads() {
    let _w = watchdog("wakes_from_other_threads");
    let (tx, rx) = mpsc::channel::<String>();
    let tx_start = tx.clone();
    let tx_notify = Mutex::new(tx.clone());
    let rt = start(cfg().tick_interval(None), move || Hooks {
        start: Some(Box::new(move || {
            Box::pin(async move {
                for i in 0..3 {
                    let (s, r) = Oneshot::new();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(15));
                        s.send(i);
                    });
                    let v = r.recv().await;
                    tx_start.send(format!("oneshot {v}")).unwrap();
                }
            })
        })),
        on_notify: Box::new(move |ctx| {
            tx_notify.lock().unwrap().send(format!("notify on worker {}", ctx.worker_id())).unwrap();
        }),
        ..Hooks::default()
    });
    for i in 0..3 {
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), format!("oneshot {i}"));
    }
    // The worker is parked with no deadline now.
    std::thread::sleep(Duration::from_millis(20));
    let tx2 = tx.clone();
    rt.worker
        .spawn(move || async move {
            sleep(Duration::from_millis(1)).await;
            tx2.send(format!("remote spawn ran on {:?}", ringline_core::worker_id())).unwrap();
        })
        .unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "remote spawn ran on Some(0)");
    std::thread::sleep(Duration::from_millis(20));
    rt.worker.notify().unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "notify on worker 0");
    let handle = rt.worker.clone();
    let m = rt.stop();
    assert_eq!(m.remote_spawn_dropped, 0);
    assert!(matches!(handle.notify(), Err(Error::ShuttingDown)), "worker gone");
    assert!(matches!(handle.spawn(|| async {}), Err(Error::ShuttingDown)));
}
