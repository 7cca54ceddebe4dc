//! The load side of `cargo xtask soak`: std threads and blocking sockets, no ringline.
//!
//! `cargo run --release -p ringline --example soak_client -- --addr HOST:PORT --secs N [--threads T] [--seed S] [--warmup]` runs, on each of
//! `T` threads until `N` seconds have passed, scenarios picked at random from a printed seed:
//! connect/close churn, pipelined frames (echo, and ops that make the server sleep, time out,
//! spawn tasks and use the blocking pool), half-closes that must still get every answer before
//! EOF, resets (`SO_LINGER` 0 close mid-stream) and slow readers that push the server into send
//! backpressure. Every answer is compared byte for byte with what was sent. It prints one line of
//! `key=value` counters and exits 1 on any mismatch or unexpected error.
//!
//! `--warmup` first keeps both blocking-pool threads busy at once, so a baseline taken after it
//! already has every thread the server will start. `--probe` asks the server for its gauges
//! (one `M` frame) and prints the answer.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/soak_frames.rs"]
mod soak_frames;

use soak_frames::{self as soak, HEADER, Header, Op, Rng};

/// Read and write timeout of every socket: a stuck server fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// How long past `--secs` the whole client may run before it gives up.
const OVERRUN: Duration = Duration::from_secs(90);

/// Most request bytes a pipelined batch writes before reading the answers back.
const MAX_BATCH_BYTES: usize = 128 * 1024;

/// Error messages kept for the report.
const KEPT_ERRORS: usize = 10;

/// What went wrong in a scenario.
enum Failure {
    /// An answer differed from what was sent.
    Mismatch(String),
    /// Anything else: connect, read, write, timeout, early EOF.
    Io(String),
}

/// `?` on I/O results inside scenarios.
impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Io(e.to_string())
    }
}

/// Shared counters.
#[derive(Default)]
struct Stats {
    conns: AtomicU64,
    msgs: AtomicU64,
    bytes: AtomicU64,
    resets: AtomicU64,
    half_closes: AtomicU64,
    slow_readers: AtomicU64,
    timer_ops: AtomicU64,
    spawn_ops: AtomicU64,
    blocking_ops: AtomicU64,
    mismatches: AtomicU64,
    errors: AtomicU64,
    messages: Mutex<Vec<String>>,
    /// A slow reader is running (at most one at a time, to bound memory and time).
    slow_busy: AtomicBool,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn fail(&self, scenario: &str, failure: Failure) {
        let (counter, text) = match failure {
            Failure::Mismatch(m) => (&self.mismatches, format!("{scenario}: MISMATCH: {m}")),
            Failure::Io(m) => (&self.errors, format!("{scenario}: {m}")),
        };
        Stats::add(counter, 1);
        let mut kept = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT_ERRORS {
            kept.push(text);
        }
    }
}

/// Command-line options.
struct Options {
    addr: SocketAddr,
    secs: f64,
    threads: usize,
    seed: u64,
    warmup: bool,
    probe: bool,
}

fn main() {
    let opts = parse_args();
    if opts.probe {
        match probe(opts.addr) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("soak_client: probe failed: {}", describe(&e));
                std::process::exit(1);
            }
        }
        return;
    }
    let overrun = Duration::from_secs_f64(opts.secs) + OVERRUN;
    std::thread::spawn(move || {
        std::thread::sleep(overrun);
        eprintln!("soak_client: still running {} s after the end; giving up", OVERRUN.as_secs());
        std::process::exit(3);
    });
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    if opts.warmup {
        if let Err(e) = saturate_blocking_pool(opts.addr, &stats) {
            stats.fail("warm-up", e);
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(opts.secs);
    let workers: Vec<_> = (0..opts.threads)
        .map(|t| {
            let stats = stats.clone();
            let (addr, seed) = (opts.addr, opts.seed.wrapping_add(t as u64));
            std::thread::spawn(move || run_thread(addr, seed, deadline, &stats))
        })
        .collect();
    for w in workers {
        if w.join().is_err() {
            stats.fail("thread", Failure::Io("a load thread panicked".into()));
        }
    }
    report(&stats, &opts, started.elapsed());
    if Stats::get(&stats.mismatches) + Stats::get(&stats.errors) > 0 {
        std::process::exit(1);
    }
}

/// Parses the flags; exits 2 on a bad one.
fn parse_args() -> Options {
    let default_seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut opts = Options {
        addr: ([127, 0, 0, 1], 7879).into(),
        secs: 10.0,
        threads: 6,
        seed: default_seed,
        warmup: false,
        probe: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().unwrap_or_else(|| usage(&format!("{a} needs {what}")));
        match a.as_str() {
            "--addr" => opts.addr = value("HOST:PORT").parse().unwrap_or_else(|_| usage("bad --addr")),
            "--secs" => opts.secs = value("seconds").parse().unwrap_or_else(|_| usage("bad --secs")),
            "--threads" => opts.threads = value("a count").parse().unwrap_or_else(|_| usage("bad --threads")),
            "--seed" => opts.seed = value("a number").parse().unwrap_or_else(|_| usage("bad --seed")),
            "--warmup" => opts.warmup = true,
            "--probe" => opts.probe = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    opts
}

/// Prints a usage error and exits with status 2.
fn usage(message: &str) -> ! {
    eprintln!(
        "{message}; usage: soak_client --addr HOST:PORT [--secs N] [--threads T] [--seed S] [--warmup | --probe]"
    );
    std::process::exit(2);
}

/// Prints the counters line and the kept error messages.
fn report(stats: &Stats, opts: &Options, elapsed: Duration) {
    let g = Stats::get;
    println!(
        "conns={} msgs={} bytes={} resets={} half_closes={} slow_readers={} timer_ops={} spawn_ops={} \
         blocking_ops={} mismatches={} errors={} seed={} threads={} secs={:.1}",
        g(&stats.conns),
        g(&stats.msgs),
        g(&stats.bytes),
        g(&stats.resets),
        g(&stats.half_closes),
        g(&stats.slow_readers),
        g(&stats.timer_ops),
        g(&stats.spawn_ops),
        g(&stats.blocking_ops),
        g(&stats.mismatches),
        g(&stats.errors),
        opts.seed,
        opts.threads,
        elapsed.as_secs_f64()
    );
    for m in stats.messages.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        eprintln!("soak_client: {m}");
    }
}

/// One load thread: random scenarios until the deadline.
fn run_thread(addr: SocketAddr, seed: u64, deadline: Instant, stats: &Stats) {
    let mut rng = Rng::new(seed);
    while Instant::now() < deadline {
        let pick = rng.below(100);
        let (name, result) = match pick {
            0..25 => ("churn", churn(addr, &mut rng, stats)),
            25..55 => ("pipelined echo", pipelined(addr, &mut rng, stats, false, false)),
            55..75 => ("timers and spawns", pipelined(addr, &mut rng, stats, true, false)),
            75..85 => {
                let commands = rng.below(2) == 0;
                ("half-close", pipelined(addr, &mut rng, stats, commands, true))
            }
            85..95 => ("reset", reset(addr, &mut rng, stats)),
            _ => ("slow reader", slow_reader(addr, &mut rng, stats)),
        };
        if let Err(e) = result {
            stats.fail(name, e);
        }
    }
}

/// Connects with timeouts and `TCP_NODELAY`.
fn connect(addr: SocketAddr, stats: &Stats) -> Result<TcpStream, Failure> {
    let s = TcpStream::connect(addr).map_err(|e| Failure::Io(format!("connect: {e}")))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Stats::add(&stats.conns, 1);
    Ok(s)
}

/// A random payload length: mostly small, sometimes a few KiB, rarely tens of KiB.
fn payload_len(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..70 => rng.below(256) as usize,
        70..95 => 256 + rng.below(4096) as usize,
        _ => 4096 + rng.below(28 * 1024) as usize,
    }
}

/// One random frame; `commands` mixes in the timer, spawn and blocking ops.
fn random_frame(rng: &mut Rng, seq: u32, commands: bool, stats: &Stats) -> Vec<u8> {
    let op = if commands {
        [Op::Echo, Op::Echo, Op::Sleep, Op::Timeout, Op::Spawn, Op::Blocking][rng.below(6) as usize]
    } else {
        Op::Echo
    };
    let mut payload = vec![0u8; payload_len(rng).max(2)];
    rng.fill(&mut payload);
    let millis: u16 = match op {
        Op::Sleep | Op::Spawn => rng.below(16) as u16,
        Op::Timeout => 1 + rng.below(10) as u16,
        Op::Blocking => rng.below(3) as u16,
        _ => u16::from_le_bytes([payload[0], payload[1]]),
    };
    payload[..2].copy_from_slice(&millis.to_le_bytes());
    match op {
        Op::Sleep | Op::Timeout => Stats::add(&stats.timer_ops, 1),
        Op::Spawn => Stats::add(&stats.spawn_ops, 1),
        Op::Blocking => Stats::add(&stats.blocking_ops, 1),
        _ => {}
    }
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    soak::encode(&mut frame, op, seq, &payload);
    frame
}

/// Reads one whole frame.
fn read_frame(s: &mut TcpStream) -> Result<Vec<u8>, Failure> {
    let mut frame = vec![0u8; HEADER];
    s.read_exact(&mut frame).map_err(|e| Failure::Io(format!("reading a header: {e}")))?;
    let h = Header::parse(&frame).ok_or_else(|| Failure::Io("short header".into()))?;
    if h.len as usize > soak::MAX_PAYLOAD {
        return Err(Failure::Mismatch(format!("answer header claims {} payload bytes", h.len)));
    }
    frame.resize(h.frame_len(), 0);
    s.read_exact(&mut frame[HEADER..]).map_err(|e| Failure::Io(format!("reading a payload: {e}")))?;
    Ok(frame)
}

/// Reads the answer to each of `sent` and compares it byte for byte.
fn expect_answers(s: &mut TcpStream, sent: &[Vec<u8>], stats: &Stats) -> Result<(), Failure> {
    for frame in sent {
        let got = read_frame(s)?;
        if got != *frame {
            let h = Header::parse(&got);
            return Err(Failure::Mismatch(format!(
                "answer to seq {:?} differs (got op {:?} seq {:?}, {} bytes, want {} bytes)",
                Header::parse(frame).map(|h| h.seq),
                h.map(|h| h.op as char),
                h.map(|h| h.seq),
                got.len(),
                frame.len()
            )));
        }
        Stats::add(&stats.msgs, 1);
        Stats::add(&stats.bytes, frame.len() as u64);
    }
    Ok(())
}

/// Expects end of stream next.
fn expect_eof(s: &mut TcpStream) -> Result<(), Failure> {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => Ok(()),
        Ok(_) => Err(Failure::Mismatch("bytes after the last answer".into())),
        Err(e) => Err(Failure::Io(format!("waiting for EOF: {e}"))),
    }
}

/// Batches of frames written at once and answered in order; ends by half-closing (then every
/// answer and EOF must still arrive) when `half_close`, else by closing.
fn pipelined(
    addr: SocketAddr,
    rng: &mut Rng,
    stats: &Stats,
    commands: bool,
    half_close: bool,
) -> Result<(), Failure> {
    let mut s = connect(addr, stats)?;
    let rounds = 1 + rng.below(20);
    let mut seq = 0u32;
    for round in 0..rounds {
        let last = round + 1 == rounds;
        let (batch, bytes) = batch(rng, &mut seq, commands, stats);
        s.write_all(&bytes)?;
        if last && half_close {
            s.shutdown(Shutdown::Write)?;
        }
        expect_answers(&mut s, &batch, stats)?;
    }
    if half_close {
        expect_eof(&mut s)?;
        Stats::add(&stats.half_closes, 1);
    }
    Ok(())
}

/// Up to 32 random frames, at most [`MAX_BATCH_BYTES`] in all; returns them and their bytes.
fn batch(rng: &mut Rng, seq: &mut u32, commands: bool, stats: &Stats) -> (Vec<Vec<u8>>, Vec<u8>) {
    let count = 1 + rng.below(32);
    let (mut frames, mut bytes) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let frame = random_frame(rng, *seq, commands, stats);
        *seq += 1;
        if !bytes.is_empty() && bytes.len() + frame.len() > MAX_BATCH_BYTES {
            break;
        }
        bytes.extend_from_slice(&frame);
        frames.push(frame);
    }
    (frames, bytes)
}

/// Twenty connections, each closed at once or after one small echo.
fn churn(addr: SocketAddr, rng: &mut Rng, stats: &Stats) -> Result<(), Failure> {
    for i in 0..20 {
        let mut s = connect(addr, stats)?;
        if rng.below(2) == 0 {
            let mut frame = Vec::new();
            soak::encode(&mut frame, Op::Echo, i, &rng.next_u64().to_le_bytes());
            s.write_all(&frame)?;
            expect_answers(&mut s, &[frame], stats)?;
        }
    }
    Ok(())
}

/// Writes big frames, maybe reads one answer, then resets the connection (`SO_LINGER` 0).
fn reset(addr: SocketAddr, rng: &mut Rng, stats: &Stats) -> Result<(), Failure> {
    let mut s = connect(addr, stats)?;
    let mut seq = 0;
    let commands = rng.below(2) == 0;
    let (frames, bytes) = batch(rng, &mut seq, commands, stats);
    s.write_all(&bytes)?;
    if rng.below(2) == 0 {
        expect_answers(&mut s, &frames[..1], stats)?;
    }
    linger_zero(&s)?;
    drop(s);
    Stats::add(&stats.resets, 1);
    Ok(())
}

/// Sets `SO_LINGER {on, 0}`, so closing sends RST.
fn linger_zero(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `l` outlives the call and its size is passed; `s` keeps the fd open.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// A writer thread pushes 2–6 MiB of echo frames and half-closes while this thread reads
/// slowly, so the server's send queue fills and its receive side pauses; the whole stream must
/// come back byte for byte, then EOF.
fn slow_reader(addr: SocketAddr, rng: &mut Rng, stats: &Stats) -> Result<(), Failure> {
    if stats.slow_busy.swap(true, Ordering::AcqRel) {
        return pipelined(addr, rng, stats, false, false);
    }
    let result = slow_reader_run(addr, rng, stats);
    stats.slow_busy.store(false, Ordering::Release);
    result
}

/// The body of [`slow_reader`].
fn slow_reader_run(addr: SocketAddr, rng: &mut Rng, stats: &Stats) -> Result<(), Failure> {
    let target = (2 + rng.below(5) as usize) << 20;
    let mut stream = Vec::with_capacity(target + 64 * 1024);
    let mut frames = 0u64;
    while stream.len() < target {
        let mut payload = vec![0u8; 8192 + rng.below(24 * 1024) as usize];
        rng.fill(&mut payload);
        soak::encode(&mut stream, Op::Echo, frames as u32, &payload);
        frames += 1;
    }
    let stream = Arc::new(stream);
    let mut s = connect(addr, stats)?;
    let mut w = s.try_clone()?;
    let to_send = stream.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        w.write_all(&to_send)?;
        w.shutdown(Shutdown::Write)
    });
    let (mut got, mut buf, mut since_pause) = (0usize, vec![0u8; 4096], 0usize);
    let read_result = loop {
        let n = match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(Failure::Io(format!("slow read at byte {got}: {e}"))),
        };
        if got + n > stream.len() || buf[..n] != stream[got..got + n] {
            break Err(Failure::Mismatch(format!("slow reader: stream differs near byte {got}")));
        }
        got += n;
        since_pause += n;
        if since_pause >= 64 * 1024 {
            since_pause = 0;
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    if read_result.is_err() {
        let _ = s.shutdown(Shutdown::Both); // unblock the writer
    }
    let written = writer.join().map_err(|_| Failure::Io("slow reader's writer panicked".into()))?;
    read_result?;
    written.map_err(|e| Failure::Io(format!("slow reader's writer: {e}")))?;
    if got != stream.len() {
        return Err(Failure::Mismatch(format!("slow reader: EOF after {got} of {} bytes", stream.len())));
    }
    Stats::add(&stats.msgs, frames);
    Stats::add(&stats.bytes, got as u64);
    Stats::add(&stats.slow_readers, 1);
    Ok(())
}

/// Four connections ask for a 200 ms blocking job at the same time, so the server starts
/// every blocking-pool thread it may (the soak server allows two).
fn saturate_blocking_pool(addr: SocketAddr, stats: &Arc<Stats>) -> Result<(), Failure> {
    let threads: Vec<_> = (0..4u32)
        .map(|i| {
            let stats = stats.clone();
            std::thread::spawn(move || -> Result<(), Failure> {
                let mut s = connect(addr, &stats)?;
                let mut payload = vec![0u8; 64];
                payload[..2].copy_from_slice(&200u16.to_le_bytes());
                let mut frame = Vec::new();
                soak::encode(&mut frame, Op::Blocking, i, &payload);
                s.write_all(&frame)?;
                Stats::add(&stats.blocking_ops, 1);
                expect_answers(&mut s, &[frame], &stats)
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| Failure::Io("warm-up thread panicked".into()))??;
    }
    Ok(())
}

/// Asks the server for its gauges.
fn probe(addr: SocketAddr) -> Result<String, Failure> {
    let stats = Stats::default();
    let mut s = connect(addr, &stats)?;
    let mut frame = Vec::new();
    soak::encode(&mut frame, Op::Echo, 0, &[]);
    frame[0] = b'M';
    s.write_all(&frame)?;
    let answer = read_frame(&mut s)?;
    Ok(String::from_utf8_lossy(&answer[HEADER..]).into_owned())
}

/// A failure as text.
fn describe(f: &Failure) -> String {
    match f {
        Failure::Mismatch(m) => format!("mismatch: {m}"),
        Failure::Io(m) => m.clone(),
    }
}
