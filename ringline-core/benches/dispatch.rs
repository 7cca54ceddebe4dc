//! What one round of the generic worker loop costs beyond polling a task (API 20.3).
//!
//! The backend is chosen once, at launch: `run_worker::<D, H>` is monomorphised per driver, so no
//! call matches on the backend. What remains per round is the loop itself: inbox check, ready
//! queue, flush of dirty connections, `park` with a zero timeout, due timers, and the
//! thread-local context that handles reach the core through. `loop_round` runs a task that
//! yields once per iteration on a `MockDriver` worker (one full loop round per yield);
//! `direct_round` polls the same future with a bare loop and a flag waker on this thread, the
//! baseline with nothing of the runtime in it. `cargo xtask microbench` prints the ratio.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

mod support;

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use ringline_core::yield_now;
use support::BenchWorker;

/// A waker that only records that it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// `iters` yields, one per round.
async fn yields(iters: u64) {
    for _ in 0..iters {
        yield_now().await;
    }
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    let worker = BenchWorker::start();
    g.bench_function("loop_round", |b| {
        b.iter_custom(|iters| {
            worker.time(move || async move {
                let start = Instant::now();
                yields(iters).await;
                start.elapsed()
            })
        })
    });
    g.bench_function("direct_round", |b| {
        b.iter_custom(|iters| {
            let flag = Arc::new(Flag(AtomicBool::new(true)));
            let waker = Waker::from(flag.clone());
            let mut cx = Context::from_waker(&waker);
            let mut task = Box::pin(yields(iters));
            let start = Instant::now();
            loop {
                if flag.0.swap(false, Ordering::AcqRel) {
                    if let Poll::Ready(()) = task.as_mut().poll(&mut cx) {
                        break;
                    }
                } else {
                    black_box(());
                }
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
