//! Timers over the `MockDriver` (real clock: lower bounds only, completion under a watchdog).
#![cfg(feature = "testing")]

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Hooks, WAIT, cfg, start, watchdog};
use ringline_core::{Elapsed, TimerExhausted, interval, join, sleep, timeout, try_sleep, yield_now};

fn run_scenario(
    slots: usize,
    f: impl FnOnce(mpsc::Sender<String>) -> common::LocalFut + Send + 'static,
) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    let rt = start(cfg().timer_slots(slots).tick_interval(None), move || Hooks {
        start: Some(Box::new(move || {
            let done = tx.clone();
            let fut = f(tx);
            Box::pin(async move {
                fut.await;
                done.send("done".into()).unwrap();
            })
        })),
        ..Hooks::default()
    });
    let mut out = Vec::new();
    loop {
        let line = rx.recv_timeout(WAIT).expect("scenario finished in time");
        if line == "done" {
            break;
        }
        out.push(line);
    }
    let m = rt.stop();
    assert_eq!(m.timers_in_use, 0, "every timer slot came back");
    out
}

/// `sleep` never resolves early, also for several concurrent sleeps and an `interval`.
#[test]
fn sleep_never_resolves_early() {
    let _w = watchdog("sleep_never_resolves_early");
    let out = run_scenario(16, |tx| {
        Box::pin(async move {
            for ms in [1u64, 15, 30] {
                let t0 = Instant::now();
                sleep(Duration::from_millis(ms)).await;
                let el = t0.elapsed();
                assert!(el >= Duration::from_millis(ms), "sleep({ms}ms) woke after {el:?}");
                tx.send(format!("slept {ms}")).unwrap();
            }
            let t0 = Instant::now();
            let (_, _) = join(sleep(Duration::from_millis(20)), sleep(Duration::from_millis(10))).await;
            assert!(t0.elapsed() >= Duration::from_millis(20));
            let mut iv = interval(Duration::from_millis(10));
            let t0 = Instant::now();
            for _ in 0..3 {
                let at = iv.tick().await;
                assert!(Instant::now() >= at.instant(), "tick never early");
            }
            assert!(t0.elapsed() >= Duration::from_millis(30));
            tx.send("interval".into()).unwrap();
        })
    });
    assert_eq!(out, ["slept 1", "slept 15", "slept 30", "interval"]);
}

/// `timer_slots(2)`: the third `try_sleep` fails with `TimerExhausted` and succeeds after one
/// sleep is dropped; a plain `sleep` waits (FIFO) for a slot and then completes, never early.
#[test]
fn timer_exhaustion_and_fifo_waiting() {
    let _w = watchdog("timer_exhaustion_and_fifo_waiting");
    let out = run_scenario(2, |tx| {
        Box::pin(async move {
            let a = try_sleep(Duration::from_secs(30)).expect("slot 1");
            let b = try_sleep(Duration::from_millis(40)).expect("slot 2");
            assert_eq!(try_sleep(Duration::from_millis(1)).err(), Some(TimerExhausted));
            drop(a);
            let c = try_sleep(Duration::from_secs(30)).expect("slot freed by the drop");
            assert!(try_sleep(Duration::from_millis(1)).is_err());
            let m = ringline_core::worker_metrics().unwrap();
            tx.send(format!("exhausted counted: {}", m.timer_exhausted >= 2)).unwrap();

            // Both slots busy (b: 40 ms, c: 30 s): two plain sleeps queue for a slot. The second
            // has the earlier deadline but queued later, so it gets the slot only after the first
            // one (FIFO) and resolves after it.
            let t0 = Instant::now();
            let first = async {
                sleep(Duration::from_millis(60)).await;
                tx.send("first".into()).unwrap();
                t0.elapsed()
            };
            let second = async {
                sleep(Duration::from_millis(45)).await;
                tx.send("second".into()).unwrap();
                t0.elapsed()
            };
            let ((), (e1, e2)) = join(b, join(first, second)).await;
            assert!(e1 >= Duration::from_millis(60) && e2 >= Duration::from_millis(60), "{e1:?} {e2:?}");
            drop(c);
            // Slots are free again.
            let d = try_sleep(Duration::from_millis(5)).expect("free");
            let e = try_sleep(Duration::from_millis(5)).expect("free");
            join(d, e).await;
        })
    });
    assert_eq!(out, ["exhausted counted: true", "first", "second"]);
}

/// `timeout(sleep(long))` returns `Err(Elapsed)` no earlier than its deadline; a future that
/// finishes first returns `Ok`.
#[test]
fn timeout_elapses_and_passes_through() {
    let _w = watchdog("timeout_elapses_and_passes_through");
    let out = run_scenario(4, |tx| {
        Box::pin(async move {
            let t0 = Instant::now();
            let r = timeout(Duration::from_millis(25), sleep(Duration::from_secs(30))).await;
            assert_eq!(r, Err(Elapsed));
            assert!(t0.elapsed() >= Duration::from_millis(25));
            tx.send("elapsed".into()).unwrap();
            let r = timeout(Duration::from_secs(30), async {
                sleep(Duration::from_millis(5)).await;
                yield_now().await;
                7
            })
            .await;
            assert_eq!(r, Ok(7));
            tx.send("ok".into()).unwrap();
        })
    });
    assert_eq!(out, ["elapsed", "ok"]);
}
