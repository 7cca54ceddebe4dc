//! Microbenchmarks of the core's hot structures: tasks (spawn, poll, wake) on a `MockDriver`
//! worker, and timers, the receive accumulator and the send pool through `bench_support`.
//!
//! `cargo xtask microbench` runs them with short measurement times and prints the medians;
//! `cargo bench -p ringline-core --features testing --bench core` runs them with criterion's
//! defaults. Every figure is per operation (one task, one wake, one timer, one slot).

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

mod support;

use std::hint::black_box;
use std::task::Waker;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ringline_core::bench_support::{AccumulatorBench, SendPoolBench, TimerSlotsBench};
use ringline_core::{sleep, spawn, yield_now};
use support::BenchWorker;

/// Tasks spawned, or kept waking, at once.
const BATCH: u64 = 256;

/// Spawn, first poll, completion and join of a task that returns at once, in batches of
/// [`BATCH`]; then wake and poll: [`BATCH`] tasks yielding in turn, so each loop pass polls all
/// of them and its fixed cost is shared.
fn tasks(c: &mut Criterion) {
    let worker = BenchWorker::start();
    let mut g = c.benchmark_group("task");
    g.bench_function("spawn_poll_join", |b| {
        b.iter_custom(|iters| {
            worker.time(move || async move {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH);
                    let handles: Vec<_> =
                        (0..n).map(|i| spawn(async move { black_box(i) }).expect("a task slot")).collect();
                    for h in handles {
                        black_box(h.await.expect("the task finished"));
                    }
                    left -= n;
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("wake_poll", |b| {
        b.iter_custom(|iters| {
            worker.time(move || async move {
                let rounds = iters.div_ceil(BATCH);
                let start = Instant::now();
                let handles: Vec<_> = (0..BATCH)
                    .map(|_| {
                        spawn(async move {
                            for _ in 0..rounds {
                                yield_now().await;
                            }
                        })
                        .expect("a task slot")
                    })
                    .collect();
                for h in handles {
                    h.await.expect("the task finished");
                }
                start.elapsed().mul_f64(iters as f64 / (rounds * BATCH) as f64)
            })
        })
    });
    g.finish();
}

/// Timer insert and cancel (with 1,024 other timers armed), insert and expire (fire, poll,
/// release), and a `sleep` polled once and dropped through the public API on the worker.
fn timers(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer");
    let now = Instant::now();
    let later = now + Duration::from_secs(3600);
    g.bench_function("insert_cancel", |b| {
        let mut slots = TimerSlotsBench::new(4096);
        for i in 0..1024 {
            slots.arm(later + Duration::from_millis(i), Waker::noop()).expect("a timer slot");
        }
        let sooner = now + Duration::from_secs(1800);
        b.iter(|| {
            let key = slots.arm(black_box(sooner), Waker::noop()).expect("a timer slot");
            slots.release(key);
            black_box(slots.next_deadline());
        })
    });
    g.bench_function("insert_expire", |b| {
        let mut slots = TimerSlotsBench::new(4096);
        let mut keys = Vec::with_capacity(BATCH as usize);
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                let due = Instant::now();
                keys.extend((0..n).map(|_| slots.arm(due, Waker::noop()).expect("a timer slot")));
                slots.fire_due(due);
                for key in keys.drain(..) {
                    assert!(slots.poll_fired(key, Waker::noop()));
                    slots.release(key);
                }
                left -= n;
            }
            start.elapsed()
        })
    });
    let worker = BenchWorker::start();
    g.bench_function("sleep_poll_drop_api", |b| {
        b.iter_custom(|iters| {
            worker.time(move || async move {
                let mut cx = std::task::Context::from_waker(Waker::noop());
                let start = Instant::now();
                for _ in 0..iters {
                    let mut s = std::pin::pin!(sleep(Duration::from_secs(3600)));
                    black_box(s.as_mut().poll(&mut cx).is_pending());
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

/// Receive accumulator: a 64 B append consumed by a `with_data` closure; a 16 KiB append taken
/// whole by `recv`.
fn accumulator(c: &mut Criterion) {
    let mut g = c.benchmark_group("accumulator");
    g.bench_function("append_consume_64B", |b| {
        let mut acc = AccumulatorBench::new();
        let data = [7u8; 64];
        b.iter(|| {
            acc.append(black_box(&data));
            acc.consume(64, |d| {
                black_box(d);
            });
        })
    });
    g.bench_function("append_take_16KiB", |b| {
        let mut acc = AccumulatorBench::new();
        let data = vec![7u8; 16 * 1024];
        b.iter(|| {
            acc.append(black_box(&data));
            black_box(acc.take_all());
        })
    });
    g.finish();
}

/// Send pool: one slot taken and returned; 64 slots taken, then returned (per slot).
fn send_pool(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_pool");
    g.bench_function("alloc_free", |b| {
        let mut pool = SendPoolBench::new(1024, 16 * 1024);
        b.iter(|| {
            let slot = pool.alloc().expect("a free slot");
            pool.release(black_box(slot));
        })
    });
    g.bench_function("alloc_free_64", |b| {
        let mut pool = SendPoolBench::new(1024, 16 * 1024);
        let mut held = Vec::with_capacity(64);
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut left = iters;
            while left > 0 {
                let n = left.min(64);
                held.extend((0..n).map(|_| pool.alloc().expect("a free slot")));
                held.drain(..).for_each(|slot| pool.release(black_box(slot)));
                left -= n;
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, tasks, timers, accumulator, send_pool);
criterion_main!(benches);
