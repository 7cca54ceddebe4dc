//! Timers: `sleep`, `timeout`, `select` and `interval` on a client-only runtime.
//!
//! `cargo run -p ringline --example timers`
//! Ends with `timers: done in DURATION (BACKEND backend)`; `cargo xtask examples` checks the lines.

use std::time::{Duration, Instant};

use ringline::{
    AsyncEventHandler, Config, ConnCtx, Either, RinglineBuilder, interval, request_shutdown, select, sleep,
    timeout,
};

struct Timers;

impl AsyncEventHandler for Timers {
    fn create_for_worker(_worker: usize) -> Self {
        Timers
    }

    fn on_accept(&self, _conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async {}
    }

    fn on_start(&self) -> impl Future<Output = ()> + 'static {
        async {
            let start = Instant::now();
            sleep(Duration::from_millis(50)).await;
            println!("slept {:?} (asked for 50 ms; never less)", start.elapsed());

            match timeout(Duration::from_millis(20), sleep(Duration::from_secs(10))).await {
                Ok(()) => println!("the long sleep finished first (unexpected)"),
                Err(e) => println!("timeout: {e}"),
            }

            match select(sleep(Duration::from_millis(10)), sleep(Duration::from_millis(30))).await {
                Either::Left(()) => {
                    println!("select: the 10 ms sleep won; the other was dropped and freed its slot")
                }
                Either::Right(()) => println!("select: the 30 ms sleep won (unexpected)"),
            }

            let mut ticks = interval(Duration::from_millis(25));
            for i in 0..4 {
                let at = ticks.tick().await;
                println!("tick {i} scheduled at +{:?}", at.instant().saturating_duration_since(start));
            }
            let backend = ringline::backend().map_or_else(|| "unknown".to_string(), |b| format!("{b:?}"));
            println!("timers: done in {:?} ({backend} backend)", start.elapsed());
            let _ = request_shutdown();
        }
    }
}

fn main() -> Result<(), ringline::Error> {
    let (_shutdown, workers) =
        RinglineBuilder::new(Config::builder().workers(1).build()?).launch::<Timers>()?;
    for w in workers {
        w.join().expect("worker panicked")?;
    }
    Ok(())
}
