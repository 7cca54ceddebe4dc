//! Bad input (TESTPLAN 17, 18): oversized frames, parsers that never finish, and random garbage
//! through the real runtime. Tests in this binary run one at a time (heap and fd baselines).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::alloc::{CountingAlloc, live_bytes, peak_bytes, reset_peak};
use common::framed::{self, Rng, StreamHash};
use common::{Server, Watchdog, backend_label, client, config, fd_count, round_trip, settle};
use ringline::{AsyncEventHandler, ConnCtx, Error, ParseResult};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- 17. oversized_frame_and_nonterminating_parser -------------------------------------------

const LIMIT: usize = 1 << 20;
static READ_ENDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The first byte picks a behaviour: `A` parses a u32 length header and waits for the whole frame,
/// `B` never finishes parsing, anything else echoes (the canary).
struct Greedy;

impl AsyncEventHandler for Greedy {
    fn create_for_worker(_worker: usize) -> Self {
        Greedy
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let mut mode = 0u8;
            let _ = conn
                .with_data(|d| {
                    mode = d[0];
                    ParseResult::Consumed(1)
                })
                .await;
            let end = match mode {
                b'A' => {
                    conn.with_data(|d| match d.get(..4) {
                        None => ParseResult::NeedAtLeast(4),
                        Some(h) => {
                            ParseResult::NeedAtLeast(4 + u32::from_le_bytes(h.try_into().unwrap()) as usize)
                        }
                    })
                    .await
                }
                b'B' => conn.with_data(|_| ParseResult::NeedMore).await,
                _ => return common::echo_loop(conn).await,
            };
            let line = match end {
                Err(Error::MessageTooLarge { limit }) => format!("{} MessageTooLarge {limit}", mode as char),
                other => format!("{} unexpected {other:?}", mode as char),
            };
            READ_ENDS.lock().unwrap().push(line);
        }
    }
}

/// Writes `greeting`, then `stream` bytes (stopping at the first error), then reads until the
/// server ends the connection.
fn hostile_peer(addr: SocketAddr, greeting: &[u8], stream: usize) {
    let mut c = client(addr);
    c.write_all(greeting).unwrap();
    let chunk = vec![0x5Au8; 64 * 1024];
    let mut sent = 0;
    while sent < stream {
        if c.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = c.shutdown(Shutdown::Write);
    let mut sink = Vec::new();
    match c.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not end a hostile connection: {e}"),
    }
}

#[test]
fn oversized_frame_and_nonterminating_parser() {
    let _serial = serial();
    let _w = Watchdog::new("oversized_frame_and_nonterminating_parser", 120);
    READ_ENDS.lock().unwrap().clear();
    let server = Server::start::<Greedy>(config().workers(1).recv_accumulator_limit(LIMIT));
    let addr = server.addr;
    let mut canary = client(addr);
    canary.write_all(b"C").unwrap();
    round_trip(&mut canary, b"canary");

    hostile_peer(addr, &[b'A', 0xFF, 0xFF, 0xFF, 0xFF], 0);
    hostile_peer(addr, b"B", 64 << 20);

    let heap_before = live_bytes();
    reset_peak();
    let peers: Vec<_> =
        (0..16).map(|_| std::thread::spawn(move || hostile_peer(addr, b"B", 64 << 20))).collect();
    for p in peers {
        p.join().unwrap();
    }
    let peak = peak_bytes().saturating_sub(heap_before);
    round_trip(&mut canary, b"canary still served");

    let ends = READ_ENDS.lock().unwrap().clone();
    assert_eq!(ends.len(), 18, "every hostile connection's read must end: {ends:?}");
    let want_a = format!("A MessageTooLarge {LIMIT}");
    let want_b = format!("B MessageTooLarge {LIMIT}");
    assert!(
        ends.iter().all(|e| *e == want_a || *e == want_b),
        "unexpected read results on {}: {ends:?}",
        backend_label()
    );
    assert_eq!(ends.iter().filter(|e| **e == want_a).count(), 1);
    // Each accumulator may hold up to the limit, and growing a buffer briefly holds the old one
    // too; the slack covers the receive path's staging memory.
    let bound = 2 * LIMIT * 16 + (8 << 20);
    eprintln!(
        "oversized_frame_and_nonterminating_parser on {}: heap peak +{peak} B (bound {bound})",
        backend_label()
    );
    assert!(peak < bound, "16 capped peers raised the heap peak by {peak} B (bound {bound})");
    drop(canary);
    assert!(
        settle(5, || server.shutdown.metrics().workers[0].connections_open == 0),
        "connections left open"
    );
    assert_eq!(server.shutdown.metrics().workers[0].task_panics, 0);
    server.stop();
}

// ---- 18. protocol_garbage_smoke --------------------------------------------------------------

/// Largest payload the framing handler accepts; a longer header is a protocol error.
const MAX_FRAME: usize = 4096;

static ENDED_EOF: AtomicU64 = AtomicU64::new(0);
static ENDED_ERROR: AtomicU64 = AtomicU64::new(0);
static ENDED_PROTOCOL: AtomicU64 = AtomicU64::new(0);
static FRAMES: AtomicU64 = AtomicU64::new(0);

/// Length-prefixed frames (u32 little-endian length, payload); each frame is answered with the
/// 8-byte hash of its payload. A length over `MAX_FRAME` closes the connection.
struct Framing;

impl AsyncEventHandler for Framing {
    fn create_for_worker(_worker: usize) -> Self {
        Framing
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            loop {
                let mut reply = None;
                let mut bad = false;
                let read = conn
                    .with_data(|d| {
                        let Some(h) = d.get(..4) else { return ParseResult::NeedAtLeast(4) };
                        let len = u32::from_le_bytes(h.try_into().unwrap()) as usize;
                        if len > MAX_FRAME {
                            bad = true;
                            ParseResult::Consumed(d.len())
                        } else if d.len() < 4 + len {
                            ParseResult::NeedAtLeast(4 + len)
                        } else {
                            let mut hash = StreamHash::default();
                            hash.update(&d[4..4 + len]);
                            reply = Some(format!("{hash:?}"));
                            ParseResult::Consumed(4 + len)
                        }
                    })
                    .await;
                match read {
                    Ok(0) => return ended(&ENDED_EOF),
                    Err(_) => return ended(&ENDED_ERROR),
                    Ok(_) if bad => return ended(&ENDED_PROTOCOL),
                    Ok(_) => {}
                }
                if let Some(r) = reply {
                    FRAMES.fetch_add(1, Ordering::Relaxed);
                    if conn.send(r.as_bytes()).await.is_err() {
                        return ended(&ENDED_ERROR);
                    }
                }
            }
        }
    }
}

fn ended(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One garbage input: random bytes, often starting with a plausible header, sometimes several
/// frames, sometimes a header announcing far more than the limit.
fn garbage(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.range(1, 4) {
        let len = rng.range(0, 600);
        match rng.range(0, 5) {
            0 => out.extend_from_slice(&(rng.next_u64() as u32).to_le_bytes()),
            1 => out.extend_from_slice(&(len as u32 + rng.range(0, 8) as u32).to_le_bytes()),
            _ => out.extend_from_slice(&(len as u32).to_le_bytes()),
        }
        let start = out.len();
        out.resize(start + len, 0);
        rng.fill(&mut out[start..]);
    }
    out.truncate(rng.range(0, out.len()));
    out
}

/// Sends `input` in random chunks, half-closes, and reads until the server ends the connection.
fn deliver(addr: SocketAddr, input: &[u8], rng: &mut Rng) {
    let mut c = client(addr);
    let mut rest = input;
    while !rest.is_empty() {
        let n = rng.range(1, 64).min(rest.len());
        if c.write_all(&rest[..n]).is_err() {
            break; // the server already closed on a protocol error
        }
        rest = &rest[n..];
    }
    let _ = c.shutdown(Shutdown::Write);
    let mut sink = Vec::new();
    match c.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("a garbage connection was neither answered nor closed on {}: {e}", backend_label()),
    }
}

/// Inputs kept as a fixed corpus: the edges the random generator reaches only by chance.
const CORPUS: &[&[u8]] = &[
    b"",
    b"\x00",
    b"\x00\x00\x00",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x01\x10\x00\x00",
    b"\x00\x10\x00\x00",
    b"\x05\x00\x00\x00abc",
    b"\x03\x00\x00\x00abc\x03\x00\x00\x00de",
    b"\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\x7f",
];

fn run_garbage(inputs: Vec<Vec<u8>>, seed: u64) {
    let fds = fd_count();
    let before = [&ENDED_EOF, &ENDED_ERROR, &ENDED_PROTOCOL].map(|c| c.load(Ordering::SeqCst));
    let server = Server::start::<Framing>(config().workers(2));
    let addr = server.addr;
    let count = inputs.len() as u64;
    let per_thread = inputs.len().div_ceil(8);
    let mut inputs = inputs.into_iter();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let mine: Vec<_> = inputs.by_ref().take(per_thread).collect();
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ (t + 1));
                for input in mine {
                    deliver(addr, &input, &mut rng);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let ended = || {
        [&ENDED_EOF, &ENDED_ERROR, &ENDED_PROTOCOL]
            .iter()
            .zip(before)
            .map(|(c, b)| c.load(Ordering::SeqCst) - b)
            .sum::<u64>()
    };
    assert!(settle(10, || ended() == count), "{} of {count} connections ended in the handler", ended());
    let m = server.shutdown.metrics();
    let panics: u64 = m.workers.iter().map(|w| w.task_panics).sum();
    assert_eq!(panics, 0, "garbage made a task panic on {}", backend_label());
    let open = || server.shutdown.metrics().workers.iter().map(|w| w.connections_open).sum::<u64>();
    assert!(settle(5, || open() == 0), "{} connections left open", open());
    server.stop();
    assert!(settle(5, || fd_count() <= fds), "fds {} > baseline {fds}", fd_count());
}

#[test]
fn protocol_garbage_smoke() {
    let _serial = serial();
    let _w = Watchdog::new("protocol_garbage_smoke", 240);
    let seed = framed::seed("protocol_garbage_smoke");
    let mut rng = Rng::new(seed);
    let inputs: Vec<Vec<u8>> = (0..framed::scaled(10_000)).map(|_| garbage(&mut rng)).collect();
    run_garbage(inputs, seed);
    eprintln!(
        "protocol_garbage_smoke: {} frames answered; ends: eof {}, typed error {}, protocol error {}",
        FRAMES.load(Ordering::SeqCst),
        ENDED_EOF.load(Ordering::SeqCst),
        ENDED_ERROR.load(Ordering::SeqCst),
        ENDED_PROTOCOL.load(Ordering::SeqCst)
    );
}

#[test]
fn protocol_garbage_corpus() {
    let _serial = serial();
    let _w = Watchdog::new("protocol_garbage_corpus", 60);
    run_garbage(CORPUS.iter().map(|c| c.to_vec()).collect(), 7);
}

#[test]
fn a_frame_answer_is_exact() {
    let _serial = serial();
    let _w = Watchdog::new("a_frame_answer_is_exact", 30);
    let server = Server::start::<Framing>(config().workers(1));
    let mut c = client(server.addr);
    c.write_all(b"\x03\x00\x00\x00abc").unwrap();
    let mut hash = StreamHash::default();
    hash.update(b"abc");
    let want = format!("{hash:?}");
    let mut got = vec![0u8; want.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), want, "the framing handler's answer on {}", backend_label());
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    drop(c);
    server.stop();
}
