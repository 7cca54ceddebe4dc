//! The server under `cargo xtask soak`: answers the frames of `support/soak_frames.rs` in
//! order, using timers, timeouts, spawned tasks and the blocking pool on the way.
//!
//! `cargo run --release -p ringline --example soak_server -- --addr 127.0.0.1:0` prints
//! `soak_server listening on ADDR (... backend)`; on SIGINT/SIGTERM it drains for up to 5 s and
//! exits 0, or 1 if a task panicked or a worker failed. Drive it with the `soak_client` example.
//!
//! A frame with op `M` is answered with the runtime's gauges summed over the workers, as
//! `key=value` text in the payload (`connections_open`, `tasks_live`, `timers_in_use`,
//! `send_pool_in_use`, `task_panics`), so the harness can compare them before and after a run.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[path = "support/soak_frames.rs"]
mod soak_frames;

use ringline::{
    AsyncEventHandler, Config, ConnCtx, ParseResult, RinglineBuilder, ShutdownHandle, sleep, spawn,
    spawn_blocking, timeout,
};
use soak_frames::{self as soak, HEADER, Header, MAX_PAYLOAD, Op};

/// Replies at least this long go out as an owned buffer (zero-copy on io_uring), shorter ones
/// are copied into the send pool.
const OWNED_REPLY: usize = 64 * 1024;

/// The metrics op byte (not part of [`Op`]: only the harness uses it).
const METRICS_OP: u8 = b'M';

/// A handle for the metrics op; set once by `main`.
static RUNTIME: OnceLock<ShutdownHandle> = OnceLock::new();

/// The soak handler.
struct Soak;

impl AsyncEventHandler for Soak {
    fn create_for_worker(_worker: usize) -> Self {
        Soak
    }

    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        serve(conn)
    }
}

/// One connection: read every complete frame, answer each in order, send the answers together.
async fn serve(conn: ConnCtx) {
    let mut frames: Vec<Vec<u8>> = Vec::new();
    loop {
        match conn.with_data(|data| take_frames(data, &mut frames)).await {
            Ok(0) | Err(_) => return, // end of stream, reset, or a frame over the limit
            Ok(_) => {}
        }
        let mut out = Vec::new();
        for frame in frames.drain(..) {
            answer(&frame, &mut out).await;
        }
        let sent = if out.len() >= OWNED_REPLY { conn.send_owned(out).await } else { conn.send(&out).await };
        if sent.is_err() {
            return;
        }
    }
}

/// Moves every complete frame at the front of `data` into `frames`.
fn take_frames(data: &[u8], frames: &mut Vec<Vec<u8>>) -> ParseResult {
    let mut used = 0;
    while let Some(h) = Header::parse(&data[used..]) {
        if h.len as usize > MAX_PAYLOAD {
            // Not a frame of ours: make the read fail with `MessageTooLarge`, which closes.
            return ParseResult::NeedAtLeast(usize::MAX);
        }
        let end = used + h.frame_len();
        if end > data.len() {
            break;
        }
        frames.push(data[used..end].to_vec());
        used = end;
    }
    if used > 0 {
        return ParseResult::Consumed(used);
    }
    ParseResult::NeedAtLeast(Header::parse(data).map_or(HEADER, |h| h.frame_len()))
}

/// Does what the frame's op asks, then appends its answer to `out`.
async fn answer(frame: &[u8], out: &mut Vec<u8>) {
    let Some(h) = Header::parse(frame) else { return };
    let payload = &frame[HEADER..];
    if h.op == METRICS_OP {
        soak::encode(out, Op::Echo, h.seq, gauges().as_bytes());
        return;
    }
    let millis = Duration::from_millis(soak::millis_arg(payload));
    let mut ok = soak::fnv1a(payload) == h.fnv;
    match Op::from_byte(h.op) {
        Some(Op::Echo) => {}
        Some(Op::Sleep) => sleep(millis).await,
        // The timeout must win, dropping (cancelling) the long sleep's timer.
        Some(Op::Timeout) => ok &= timeout(millis, sleep(Duration::from_secs(10))).await.is_err(),
        Some(Op::Spawn) => ok &= spawned_hash(payload, millis).await == Some(h.fnv),
        Some(Op::Blocking) => {
            let copy = payload.to_vec();
            let job = move || {
                std::thread::sleep(millis);
                soak::fnv1a(&copy)
            };
            ok &= spawn_blocking(job).await.ok() == Some(h.fnv);
        }
        Some(Op::Mismatch) | None => ok = false,
    }
    if ok {
        out.extend_from_slice(frame);
    } else {
        soak::encode(out, Op::Mismatch, h.seq, &[]);
    }
}

/// Hashes `payload` in a spawned task that first sleeps `delay`; also spawns a detached task
/// that sleeps twice as long and ends by itself. `None` if a spawn failed.
async fn spawned_hash(payload: &[u8], delay: Duration) -> Option<u32> {
    let copy = payload.to_vec();
    let task = spawn(async move {
        sleep(delay).await;
        soak::fnv1a(&copy)
    })
    .ok()?;
    spawn(async move { sleep(delay * 2).await }).ok()?;
    task.await.ok()
}

/// The gauges of every worker, summed, as `key=value` text.
fn gauges() -> String {
    let Some(runtime) = RUNTIME.get() else { return "metrics=unavailable".to_string() };
    let workers = runtime.metrics().workers;
    let sum = |f: fn(&ringline::WorkerMetrics) -> u64| workers.iter().map(f).sum::<u64>();
    format!(
        "connections_open={} tasks_live={} timers_in_use={} send_pool_in_use={} task_panics={}",
        sum(|w| w.connections_open),
        sum(|w| w.tasks_live),
        sum(|w| w.timers_in_use),
        sum(|w| w.send_pool_in_use),
        sum(|w| w.task_panics),
    )
}

/// Set by the signal handler; the main thread polls it.
static STOP: AtomicBool = AtomicBool::new(false);

/// SIGINT/SIGTERM handler: only stores to an atomic.
extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// `--addr HOST:PORT` (default `127.0.0.1:7879`); exits 2 on anything else.
fn parse_addr() -> String {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (None, ..) => "127.0.0.1:7879".to_string(),
        (Some("--addr"), Some(addr), None) => addr,
        _ => {
            eprintln!("usage: soak_server [--addr HOST:PORT]");
            std::process::exit(2);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let addr = parse_addr();
    // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    // Small queues so slow readers reach send admission and receive pauses; two blocking
    // threads so one warm-up run starts them all.
    let config = Config::builder()
        .workers(2)
        .max_connections(2048)
        .send_queue_limit(256 * 1024)
        .recv_accumulator_limit(1 << 20)
        .blocking_threads(2)
        .idle_timeout(Some(Duration::from_secs(30)))
        .build()?;
    let (shutdown, handles) = RinglineBuilder::new(config).bind(addr.parse()?).launch::<Soak>()?;
    let backend = shutdown.backend().map_or_else(|| "unknown".to_string(), |b| format!("{b:?}"));
    let _ = RUNTIME.set(shutdown.clone());
    println!("soak_server listening on {} ({backend} backend)", shutdown.local_addrs()[0]);
    while !STOP.load(Ordering::SeqCst) && !shutdown.is_shutting_down() {
        std::thread::sleep(Duration::from_millis(50));
    }
    shutdown.shutdown_with_deadline(Duration::from_secs(5));
    let mut failed = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("worker error: {e}")),
            Err(_) => failed.push("worker panicked".to_string()),
        }
    }
    let panics: u64 = shutdown.metrics().workers.iter().map(|w| w.task_panics).sum();
    if panics > 0 {
        failed.push(format!("{panics} task(s) panicked"));
    }
    if failed.is_empty() {
        println!("bye");
        Ok(())
    } else {
        Err(failed.join("; ").into())
    }
}
