//! Zero-copy sends (`SendMsgZc`): bytes arrive exactly, `Sent` comes once and only after the
//! notification, guards live until the returned buffer is dropped, and closing with a zero-copy
//! send in flight reports `Sent` before `Closed` and releases the descriptor.
//!
//! The tests take a common lock: the close test counts this process's descriptors.
#![cfg(target_os = "linux")]

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use ringline_core::SendGuard;
use ringline_core::buf::{GuardBox, PartMemory, SendBuf, SendPart};
use ringline_core::config::Config;
use ringline_core::driver::{Completion, CompletionSink, ConnKey, Driver, Op};
use ringline_uring::UringDriver;

const LIMIT: Duration = Duration::from_secs(20);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when the kernel offers `IORING_OP_SENDMSG_ZC`; otherwise prints the skip notice.
fn send_zc_supported(test: &str) -> bool {
    let ok = matches!(ringline_uring::probe(), Ok(f) if f.send_zc);
    if !ok {
        eprintln!("SKIPPED: {test} needs send_zc");
    }
    ok
}

/// Defaults, plus zero-copy to local peers: every test here talks over loopback, where the
/// driver otherwise copies (`Config::zero_copy_local`).
fn zc_config() -> Config {
    Config::builder().zero_copy_local(true).build().unwrap()
}

/// A guard that counts its drops.
struct CountedGuard {
    data: Vec<u8>,
    drops: Arc<AtomicU32>,
}

impl SendGuard for CountedGuard {
    fn bytes(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for CountedGuard {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// A heap part, a guard part and another heap part; returns the buffer and its bytes in order.
fn guarded_buf(guard_len: usize, seed: usize, drops: &Arc<AtomicU32>) -> (SendBuf, Vec<u8>) {
    let head = pattern(1000, seed);
    let guard = pattern(guard_len, seed + 1);
    let tail = pattern(3000, seed + 2);
    let mut all = Vec::with_capacity(head.len() + guard.len() + tail.len());
    all.extend_from_slice(&head);
    all.extend_from_slice(&guard);
    all.extend_from_slice(&tail);
    let mut b = SendBuf::new();
    b.push(SendPart { memory: PartMemory::Heap(head.clone()), start: 0, end: head.len() });
    let g = CountedGuard { data: guard, drops: Arc::clone(drops) };
    b.push(SendPart { memory: PartMemory::Guard(GuardBox::new(g)), start: 0, end: guard_len });
    b.push(SendPart { memory: PartMemory::Heap(tail.clone()), start: 0, end: tail.len() });
    (b, all)
}

/// Records every completion, keeps returned buffers, and notes the guard drop count at each
/// `Sent`.
struct ZcSink {
    inner: TestSink,
    drops: Arc<AtomicU32>,
    bufs: Vec<SendBuf>,
    drops_at_sent: Vec<u32>,
}

impl ZcSink {
    fn new(drops: &Arc<AtomicU32>) -> ZcSink {
        ZcSink {
            inner: TestSink::default(),
            drops: Arc::clone(drops),
            bufs: Vec::new(),
            drops_at_sent: Vec::new(),
        }
    }

    fn sent(&self) -> usize {
        self.inner.count(|e| matches!(e, Event::Sent(..)))
    }

    fn closed(&self) -> usize {
        self.inner.count(|e| matches!(e, Event::Closed(_)))
    }
}

impl CompletionSink for ZcSink {
    fn complete(&mut self, c: Completion<'_>) {
        match c {
            Completion::Sent { conn, buf, result } => {
                self.drops_at_sent.push(self.drops.load(Ordering::SeqCst));
                self.inner.events.push(Event::Sent(conn, buf.total_len(), result.map_err(|e| e.kind())));
                self.bufs.push(buf);
            }
            other => self.inner.complete(other),
        }
    }
}

/// Parks until `pred` holds; panics after `limit`.
fn park_zc(d: &mut UringDriver, sink: &mut ZcSink, limit: Duration, mut pred: impl FnMut(&ZcSink) -> bool) {
    let deadline = Instant::now() + limit;
    while !pred(sink) {
        assert!(
            Instant::now() < deadline,
            "condition not reached in {limit:?}; events: {:?}",
            sink.inner.events
        );
        d.park(Some(Duration::from_millis(10)), sink).expect("park");
    }
}

/// Reads `len` bytes, sleeping `pause` between reads.
fn spawn_reader(
    mut client: std::net::TcpStream,
    len: usize,
    pause: Duration,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut got = Vec::with_capacity(len);
        let mut chunk = vec![0u8; 64 * 1024];
        while got.len() < len {
            let n = client.read(&mut chunk).unwrap();
            assert!(n > 0, "early EOF after {} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        got
    })
}

#[test]
fn guarded_send_goes_out_zero_copy_and_keeps_the_guard_until_sent() {
    let _s = serial();
    let _w = watchdog("guarded_send_goes_out_zero_copy", 60);
    if !send_zc_supported("guarded_send_goes_out_zero_copy_and_keeps_the_guard_until_sent") {
        return;
    }
    let mut d = driver(&zc_config());
    assert!(d.capabilities().zero_copy);
    let drops = Arc::new(AtomicU32::new(0));
    let mut sink = ZcSink::new(&drops);
    let (server, client) = pair();
    let k = key(0);
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    let (buf, data) = guarded_buf(64 * 1024, 3, &drops);
    let total = data.len();
    d.submit(Op::Send { conn: k, buf }).unwrap();
    let reader = spawn_reader(client, total, Duration::ZERO);
    park_zc(&mut d, &mut sink, LIMIT, |s| s.sent() == 1);
    let got = reader.join().unwrap();
    assert!(got == data, "bytes differ or are out of order");
    // Nothing more arrives for the send (the notification does not produce a second `Sent`).
    for _ in 0..5 {
        d.park(Some(Duration::from_millis(10)), &mut sink).unwrap();
    }
    assert_eq!(sink.sent(), 1);
    assert!(
        matches!(sink.inner.events[..], [Event::Sent(kk, l, Ok(n))] if kk == k && l == total && n == total)
    );
    assert_eq!(sink.drops_at_sent, [0], "the guard was dropped before `Sent`");
    assert!(d.stats().zero_copy_sends >= 1, "{:?}", d.stats());
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    sink.bufs.clear();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    d.submit(Op::Close { conn: k, abort: false }).unwrap();
    park_zc(&mut d, &mut sink, LIMIT, |s| s.closed() == 1);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    d.shutdown();
}

#[test]
fn many_zero_copy_sends_to_a_slow_reader_arrive_in_order() {
    let _s = serial();
    let _w = watchdog("many_zero_copy_sends", 120);
    if !send_zc_supported("many_zero_copy_sends_to_a_slow_reader_arrive_in_order") {
        return;
    }
    const SENDS: usize = 200;
    let mut d = driver(&zc_config());
    let drops = Arc::new(AtomicU32::new(0));
    let mut sink = ZcSink::new(&drops);
    let (server, client) = pair();
    let k = key(5);
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    let mut expected = Vec::new();
    let mut bufs = Vec::new();
    for i in 0..SENDS {
        let (buf, data) = guarded_buf(64 * 1024, i, &drops);
        expected.extend_from_slice(&data);
        bufs.push(buf);
    }
    let reader = spawn_reader(client, expected.len(), Duration::from_micros(300));
    for (i, buf) in bufs.into_iter().enumerate() {
        // One send in flight per connection (the core's rule): the next goes after `Sent`.
        d.submit(Op::Send { conn: k, buf }).unwrap();
        park_zc(&mut d, &mut sink, LIMIT, |s| s.sent() == i + 1);
    }
    let got = reader.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "bytes differ or are out of order");
    for _ in 0..5 {
        d.park(Some(Duration::from_millis(10)), &mut sink).unwrap();
    }
    assert_eq!(sink.sent(), SENDS);
    for e in &sink.inner.events {
        assert!(matches!(e, Event::Sent(kk, l, Ok(n)) if *kk == k && l == n), "{e:?}");
    }
    assert!(sink.drops_at_sent.iter().all(|&n| n == 0), "a guard was dropped before its `Sent`");
    assert!(d.stats().zero_copy_sends >= SENDS as u64, "{:?}", d.stats());
    sink.bufs.clear();
    assert_eq!(drops.load(Ordering::SeqCst), SENDS as u32);
    d.submit(Op::Close { conn: k, abort: false }).unwrap();
    park_zc(&mut d, &mut sink, LIMIT, |s| s.closed() == 1);
    d.shutdown();
}

#[test]
fn guarded_send_to_a_loopback_peer_is_copied_by_default() {
    let _s = serial();
    let _w = watchdog("guarded_send_to_a_loopback_peer_is_copied_by_default", 60);
    let mut d = driver(&Config::builder().build().unwrap());
    let drops = Arc::new(AtomicU32::new(0));
    let mut sink = ZcSink::new(&drops);
    let (server, client) = pair();
    let k = key(7);
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    let (buf, data) = guarded_buf(64 * 1024, 9, &drops);
    let total = data.len();
    d.submit(Op::Send { conn: k, buf }).unwrap();
    let reader = spawn_reader(client, total, Duration::ZERO);
    park_zc(&mut d, &mut sink, LIMIT, |s| s.sent() == 1);
    assert!(reader.join().unwrap() == data, "bytes differ or are out of order");
    assert_eq!(d.stats().zero_copy_sends, 0, "a loopback peer got a zero-copy send: {:?}", d.stats());
    sink.bufs.clear();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    d.submit(Op::Close { conn: k, abort: false }).unwrap();
    park_zc(&mut d, &mut sink, LIMIT, |s| s.closed() == 1);
    d.shutdown();
}

/// Closes a connection whose zero-copy send is stuck on a peer that does not read.
fn close_with_zero_copy_in_flight(abort: bool) {
    let mut d = driver(&zc_config());
    let baseline = fd_count();
    let drops = Arc::new(AtomicU32::new(0));
    let mut sink = ZcSink::new(&drops);
    let (server, mut client) = pair();
    let k = ConnKey { index: 9, generation: 4 };
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    // Far more than loopback socket buffers hold: the write stalls until the peer reads.
    let (buf, _) = guarded_buf(32 << 20, 11, &drops);
    d.submit(Op::Send { conn: k, buf }).unwrap();
    for _ in 0..10 {
        d.park(Some(Duration::from_millis(10)), &mut sink).unwrap();
    }
    assert_eq!(sink.sent(), 0, "the send cannot have finished: {:?}", sink.inner.events);
    d.submit(Op::Close { conn: k, abort }).unwrap();
    let reader = if abort {
        // The reset must release the kernel's hold on the memory without the peer's help.
        park_zc(&mut d, &mut sink, LIMIT, |s| s.closed() == 1);
        drop(client);
        None
    } else {
        for _ in 0..10 {
            d.park(Some(Duration::from_millis(10)), &mut sink).unwrap();
        }
        // A graceful close delivers what is queued: the peer drains it, then sees EOF.
        Some(std::thread::spawn(move || {
            let mut chunk = vec![0u8; 256 * 1024];
            let mut total = 0usize;
            loop {
                match client.read(&mut chunk) {
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n,
                    Err(e) => return Err(e.kind()),
                }
            }
        }))
    };
    park_zc(&mut d, &mut sink, LIMIT, |s| s.closed() == 1);
    for _ in 0..5 {
        d.park(Some(Duration::from_millis(10)), &mut sink).unwrap();
    }
    let events: Vec<&Event> = sink.inner.events.iter().collect();
    assert!(
        matches!(events[..], [Event::Sent(k1, _, _), Event::Closed(k2)] if *k1 == k && *k2 == k),
        "expected exactly one Sent then one Closed: {events:?}"
    );
    assert_eq!(sink.drops_at_sent, [0], "the guard was dropped before `Sent`");
    sink.bufs.clear();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    if let Some(r) = reader {
        let got = r.join().unwrap();
        assert!(got.is_ok(), "graceful close must read as EOF: {got:?}");
    }
    assert_eq!(fd_count(), baseline);
    d.shutdown();
}

#[test]
fn close_with_zero_copy_send_in_flight_reports_sent_then_closed() {
    let _s = serial();
    let _w = watchdog("close_with_zero_copy_send_in_flight", 90);
    if !send_zc_supported("close_with_zero_copy_send_in_flight_reports_sent_then_closed") {
        return;
    }
    close_with_zero_copy_in_flight(true);
    close_with_zero_copy_in_flight(false);
}

#[test]
fn zero_copy_send_over_iov_max_is_continued_and_reported_once() {
    let _s = serial();
    let _w = watchdog("zero_copy_send_over_iov_max", 60);
    if !send_zc_supported("zero_copy_send_over_iov_max_is_continued_and_reported_once") {
        return;
    }
    let mut d = driver(&zc_config());
    let drops = Arc::new(AtomicU32::new(0));
    let mut sink = ZcSink::new(&drops);
    let (server, client) = pair();
    let k = key(7);
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    // 3000 parts with a guard in the middle: more than IOV_MAX, so the driver submits several
    // zero-copy writes and must hold the buffer until every one of them was notified.
    let mut buf = SendBuf::new();
    let mut data = Vec::new();
    for i in 0..3000 {
        let part = pattern(512, i);
        data.extend_from_slice(&part);
        buf.push(SendPart { memory: PartMemory::Heap(part), start: 0, end: 512 });
        if i == 1500 {
            let g = pattern(128 * 1024, 99);
            data.extend_from_slice(&g);
            let len = g.len();
            let guard = CountedGuard { data: g, drops: Arc::clone(&drops) };
            buf.push(SendPart { memory: PartMemory::Guard(GuardBox::new(guard)), start: 0, end: len });
        }
    }
    let total = data.len();
    d.submit(Op::Send { conn: k, buf }).unwrap();
    let reader = spawn_reader(client, total, Duration::from_micros(200));
    park_zc(&mut d, &mut sink, LIMIT, |s| s.sent() == 1);
    let got = reader.join().unwrap();
    assert!(got == data, "bytes differ or are out of order");
    for _ in 0..5 {
        d.park(Some(Duration::from_millis(10)), &mut sink).unwrap();
    }
    assert!(matches!(sink.inner.events[..], [Event::Sent(kk, _, Ok(n))] if kk == k && n == total));
    assert_eq!(sink.drops_at_sent, [0]);
    assert!(d.stats().zero_copy_sends >= 3, "{:?}", d.stats());
    sink.bufs.clear();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    d.submit(Op::Close { conn: k, abort: false }).unwrap();
    park_zc(&mut d, &mut sink, LIMIT, |s| s.closed() == 1);
    d.shutdown();
}
