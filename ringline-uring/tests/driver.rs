//! End-to-end tests of `UringDriver` on real loopback sockets, driving it directly with a test sink.
#![cfg(target_os = "linux")]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::time::{Duration, Instant};

use common::*;
use ringline_core::config::Config;
use ringline_core::driver::{Driver, Op, SocketOpts, Unpark};

const LIMIT: Duration = Duration::from_secs(10);

fn cfg() -> Config {
    Config::builder().build().unwrap()
}

#[test]
fn recv_then_fin_then_close() {
    let _w = watchdog("recv_then_fin_then_close", 20);
    let mut d = driver(&cfg());
    let mut sink = TestSink::default();
    let (server, mut client) = pair();
    let k = key(0);
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    d.submit(Op::RecvStart { conn: k }).unwrap();
    client.write_all(b"hello").unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.received(k) == b"hello");
    client.write_all(b" world").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::RecvEnd(..))) == 1);
    assert_eq!(sink.received(k), b"hello world");
    assert!(matches!(sink.events.last(), Some(Event::RecvEnd(kk, Ok(()))) if *kk == k));
    d.submit(Op::Close { conn: k, abort: false }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == 1);
    // The peer sees EOF.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // Nothing more arrives, and every buffer is back in the ring.
    d.park(Some(Duration::from_millis(20)), &mut sink).unwrap();
    assert_eq!(sink.count(|e| matches!(e, Event::Closed(_))), 1);
    let st = d.stats();
    assert_eq!(st.recv_buffers_free, st.recv_buffers_total);
    assert_eq!(st.fixed_files_in_use, 0);
    d.shutdown();
}

#[test]
fn peer_reset_is_connection_reset() {
    let _w = watchdog("peer_reset_is_connection_reset", 20);
    let mut d = driver(&cfg());
    let mut sink = TestSink::default();
    let (server, client) = pair();
    let k = key(3);
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    d.submit(Op::RecvStart { conn: k }).unwrap();
    d.park(Some(Duration::ZERO), &mut sink).unwrap();
    set_linger_zero(&client);
    drop(client);
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::RecvEnd(..))) == 1);
    assert!(
        sink.events
            .iter()
            .any(|e| matches!(e, Event::RecvEnd(kk, Err(ErrorKind::ConnectionReset)) if *kk == k)),
        "{:?}",
        sink.events
    );
    d.submit(Op::Close { conn: k, abort: true }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == 1);
}

#[test]
fn large_gathered_send_to_slow_reader_arrives_in_order() {
    let _w = watchdog("large_gathered_send", 30);
    let mut d = driver(&cfg());
    let mut sink = TestSink::default();
    let (server, mut client) = pair();
    let k = key(1);
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    const LEN: usize = 8 << 20;
    let data = pattern(LEN, 7);
    // 2048 parts: more than IOV_MAX, so the driver must continue the write itself.
    d.submit(Op::Send { conn: k, buf: send_buf(&data, 4096) }).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(LEN);
        let mut chunk = vec![0u8; 256 * 1024];
        while got.len() < LEN {
            let n = client.read(&mut chunk).unwrap();
            assert!(n > 0, "early EOF after {} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
            std::thread::sleep(Duration::from_micros(500));
        }
        got
    });
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Sent(..))) == 1);
    let got = reader.join().unwrap();
    assert!(got == data, "bytes differ or are out of order");
    assert!(matches!(sink.events[..], [Event::Sent(kk, LEN, Ok(LEN))] if kk == k), "{:?}", sink.events);
    // A single-slice send too.
    d.park(Some(Duration::from_millis(10)), &mut sink).unwrap();
    assert_eq!(sink.count(|e| matches!(e, Event::Sent(..))), 1);
    d.submit(Op::Close { conn: k, abort: false }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == 1);
}

#[test]
fn single_slice_send_and_echo() {
    let _w = watchdog("single_slice_send_and_echo", 20);
    let mut d = driver(&cfg());
    let mut sink = TestSink::default();
    let (server, mut client) = pair();
    let k = key(2);
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    d.submit(Op::RecvStart { conn: k }).unwrap();
    let data = pattern(3 << 20, 1);
    d.submit(Op::Send { conn: k, buf: send_buf(&data, data.len()) }).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; 3 << 20];
        client.read_exact(&mut got).unwrap();
        client.write_all(b"ack").unwrap();
        got
    });
    park_until(&mut d, &mut sink, LIMIT, |s| s.received(k) == b"ack");
    assert!(reader.join().unwrap() == data);
    assert_eq!(sink.count(|e| matches!(e, Event::Sent(_, _, Ok(n)) if *n == 3 << 20)), 1);
    d.submit(Op::Close { conn: k, abort: false }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == 1);
}

#[test]
fn pause_and_resume_keep_order() {
    let _w = watchdog("pause_and_resume_keep_order", 20);
    let mut d = driver(&cfg());
    let mut sink = TestSink::default();
    let (server, mut client) = pair();
    let k = key(4);
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    d.submit(Op::RecvStart { conn: k }).unwrap();
    client.write_all(b"one").unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.received(k) == b"one");
    d.submit(Op::RecvPause { conn: k }).unwrap();
    d.park(Some(Duration::from_millis(20)), &mut sink).unwrap();
    client.write_all(b"two").unwrap();
    // Paused: nothing new is delivered.
    for _ in 0..5 {
        d.park(Some(Duration::from_millis(10)), &mut sink).unwrap();
    }
    assert_eq!(sink.received(k), b"one");
    d.submit(Op::RecvStart { conn: k }).unwrap();
    client.write_all(b"three").unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.received(k) == b"onetwothree");
    d.submit(Op::Close { conn: k, abort: false }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == 1);
}

#[test]
fn close_with_send_in_flight_reports_sent_before_closed() {
    let _w = watchdog("close_with_send_in_flight", 20);
    let mut d = driver(&cfg());
    let mut sink = TestSink::default();
    let (server, client) = pair();
    let k = key(5);
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    d.submit(Op::RecvStart { conn: k }).unwrap();
    // The peer never reads: the send cannot finish.
    d.submit(Op::Send { conn: k, buf: send_buf(&pattern(32 << 20, 0), 1 << 20) }).unwrap();
    for _ in 0..5 {
        d.park(Some(Duration::from_millis(10)), &mut sink).unwrap();
    }
    assert_eq!(sink.count(|e| matches!(e, Event::Sent(..))), 0);
    d.submit(Op::Close { conn: k, abort: true }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == 1);
    let sent = sink.events.iter().position(|e| matches!(e, Event::Sent(_, _, Err(_))));
    let closed = sink.events.iter().position(|e| matches!(e, Event::Closed(_)));
    assert!(sent.is_some() && sent < closed, "{:?}", sink.events);
    drop(client);
}

#[test]
fn connect_ok_and_refused() {
    let _w = watchdog("connect_ok_and_refused", 20);
    let mut d = driver(&cfg());
    let mut sink = TestSink::default();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let opts = SocketOpts { nodelay: true, send_buffer: Some(64 * 1024), recv_buffer: None };
    let ok = key(6);
    d.submit(Op::Connect { conn: ok, addr, opts }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Connected(..))) == 1);
    let (mut peer, peer_addr) = l.accept().unwrap();
    match &sink.events[0] {
        Event::Connected(kk, Ok(local)) => {
            assert_eq!(*kk, ok);
            assert_eq!(*local, peer_addr);
        }
        other => panic!("unexpected {other:?}"),
    }
    d.set_nodelay(ok, false).unwrap();
    // The connected socket works both ways.
    d.submit(Op::RecvStart { conn: ok }).unwrap();
    peer.write_all(b"greeting").unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.received(ok) == b"greeting");
    d.submit(Op::Close { conn: ok, abort: false }).unwrap();

    // A closed port: bind, note the port, close.
    let closed_addr = {
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        l2.local_addr().unwrap()
    };
    let refused = key(7);
    d.submit(Op::Connect { conn: refused, addr: closed_addr, opts: SocketOpts::default() }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Connected(..))) == 2);
    assert!(
        sink.events
            .iter()
            .any(|e| matches!(e, Event::Connected(kk, Err(ErrorKind::ConnectionRefused)) if *kk == refused)),
        "{:?}",
        sink.events
    );
    d.submit(Op::Close { conn: refused, abort: false }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == 2);
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).unwrap();
}

#[test]
fn unpark_from_another_thread_wakes_park() {
    let _w = watchdog("unpark_wakes_park", 20);
    let mut d = driver(&cfg());
    let mut sink = TestSink::default();
    for _ in 0..3 {
        let u = d.unparker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            u.unpark();
            u.unpark();
        });
        let start = Instant::now();
        d.park(None, &mut sink).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }
    // An unpark before the park makes it return at once.
    d.unparker().unpark();
    let start = Instant::now();
    d.park(Some(Duration::from_secs(5)), &mut sink).unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(sink.events.is_empty());
    // Unpark after the driver is gone does nothing.
    let u = d.unparker();
    drop(d);
    u.unpark();
}

#[test]
fn park_honours_its_timeout() {
    let _w = watchdog("park_honours_its_timeout", 20);
    let mut d = driver(&cfg());
    let mut sink = TestSink::default();
    let start = Instant::now();
    d.park(Some(Duration::from_millis(50)), &mut sink).unwrap();
    let t = start.elapsed();
    assert!(t >= Duration::from_millis(45) && t < Duration::from_secs(2), "{t:?}");
    let start = Instant::now();
    d.park(Some(Duration::ZERO), &mut sink).unwrap();
    assert!(start.elapsed() < Duration::from_millis(50));
}

#[test]
fn tiny_buffer_ring_many_senders() {
    let _w = watchdog("tiny_buffer_ring_many_senders", 40);
    let cfg = Config::builder().recv_buffers(4, 4096).build().unwrap();
    let mut d = driver(&cfg);
    let mut sink = TestSink::default();
    const CONNS: u32 = 20;
    const LEN: usize = 1 << 20;
    let mut writers = Vec::new();
    for i in 0..CONNS {
        let (server, mut client) = pair();
        d.submit(Op::Adopt { conn: key(i), stream: server }).unwrap();
        d.submit(Op::RecvStart { conn: key(i) }).unwrap();
        writers.push(std::thread::spawn(move || {
            client.write_all(&pattern(LEN, i as usize)).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            client
        }));
    }
    let mut parks = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.count(|e| matches!(e, Event::RecvEnd(..))) < CONNS as usize {
        assert!(Instant::now() < deadline, "not all streams ended");
        // Unbounded waits: a starved connection must be resumed by the driver itself.
        d.park(Some(Duration::from_secs(5)), &mut sink).unwrap();
        parks += 1;
    }
    for i in 0..CONNS {
        let got = sink.received(key(i));
        assert_eq!(got.len(), LEN, "conn {i}");
        assert!(got == pattern(LEN, i as usize), "conn {i}: bytes out of order");
        assert!(sink.events.iter().any(|e| matches!(e, Event::RecvEnd(k, Ok(())) if *k == key(i))));
    }
    let st = d.stats();
    assert!(st.recv_buffer_exhausted > 0 || st.recv_rearms > 0, "{st:?}");
    assert_eq!(st.recv_buffers_free, 4);
    // 20 MiB through 16 KiB of buffers is at least 1280 fills; a busy loop would be far above.
    assert!(parks < 50_000, "parks = {parks}, stats = {st:?}");
    eprintln!("tiny ring: {parks} parks, {st:?}");
    for w in writers {
        drop(w.join().unwrap());
    }
    for i in 0..CONNS {
        d.submit(Op::Close { conn: key(i), abort: false }).unwrap();
    }
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == CONNS as usize);
}

/// Received chunks of a whole buffer are lent: the sink keeps every one of them (the kernel must
/// never write them again), yet the 4-buffer ring keeps refilling with fresh memory and every
/// stream arrives byte-exact.
#[test]
fn lent_buffers_are_replaced_and_the_ring_keeps_refilling() {
    let _w = watchdog("lent_buffers_are_replaced_and_the_ring_keeps_refilling", 40);
    let cfg = Config::builder().recv_buffers(4, 16 * 1024).build().unwrap();
    let mut d = driver(&cfg);
    let mut sink = TestSink { keep_owned: true, ..TestSink::default() };
    const CONNS: u32 = 8;
    const LEN: usize = 1 << 20;
    let mut writers = Vec::new();
    for i in 0..CONNS {
        let (server, mut client) = pair();
        d.submit(Op::Adopt { conn: key(i), stream: server }).unwrap();
        d.submit(Op::RecvStart { conn: key(i) }).unwrap();
        writers.push(std::thread::spawn(move || {
            client.write_all(&pattern(LEN, i as usize + 40)).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            client
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.count(|e| matches!(e, Event::RecvEnd(..))) < CONNS as usize {
        assert!(Instant::now() < deadline, "not all streams ended: {:?}", d.stats());
        d.park(Some(Duration::from_secs(5)), &mut sink).unwrap();
    }
    // Checked only now: a kept buffer the ring handed to the kernel again would be overwritten.
    for i in 0..CONNS {
        let got = sink.received(key(i));
        assert_eq!(got.len(), LEN, "conn {i}");
        assert!(got == pattern(LEN, i as usize + 40), "conn {i}: bytes differ or out of order");
    }
    let st = d.stats();
    assert!(sink.owned_kept > 0 && st.recv_buffers_lent >= sink.owned_kept as u64, "{st:?}");
    assert_eq!(st.recv_buffers_free, 4, "every id is back in the ring: {st:?}");
    eprintln!("lent: {} kept of {st:?}", sink.owned_kept);
    for w in writers {
        drop(w.join().unwrap());
    }
    for i in 0..CONNS {
        d.submit(Op::Close { conn: key(i), abort: false }).unwrap();
    }
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == CONNS as usize);
    d.shutdown();
}

/// Below the lending threshold chunks are copied; a lent chunk the sink hands back is reused as
/// the next replacement, and the bytes stay exact either way.
#[test]
fn small_chunks_are_copied_and_handed_back_buffers_reused() {
    let _w = watchdog("small_chunks_are_copied_and_handed_back_buffers_reused", 20);
    let mut d = driver(&cfg());
    let mut sink = TestSink::default();
    let (server, mut client) = pair();
    let k = key(5);
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    d.submit(Op::RecvStart { conn: k }).unwrap();
    client.write_all(b"small").unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.received(k) == b"small");
    assert_eq!(d.stats().recv_buffers_lent, 0, "a 5-byte chunk is copied");
    let big = pattern(256 * 1024, 9);
    client.write_all(&big).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.received(k).len() == 5 + big.len());
    assert!(sink.received(k)[5..] == big[..]);
    assert!(d.stats().recv_buffers_lent > 0, "{:?}", d.stats());
    d.submit(Op::Close { conn: k, abort: false }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == 1);
    let st = d.stats();
    assert_eq!(st.recv_buffers_free, st.recv_buffers_total);
    d.shutdown();
}

#[test]
fn unknown_keys_and_stale_closes() {
    let _w = watchdog("unknown_keys", 20);
    let mut d = driver(&cfg());
    let mut sink = TestSink::default();
    // Close of a key that was never opened is still answered once.
    d.submit(Op::Close { conn: key(9), abort: false }).unwrap();
    // Send to an unknown key comes back as an error, never inline.
    d.submit(Op::Send { conn: key(10), buf: send_buf(b"x", 1) }).unwrap();
    assert!(sink.events.is_empty());
    d.park(Some(Duration::ZERO), &mut sink).unwrap();
    assert_eq!(sink.count(|e| matches!(e, Event::Closed(_))), 1);
    assert_eq!(sink.count(|e| matches!(e, Event::Sent(_, 1, Err(ErrorKind::NotConnected)))), 1);
}

#[test]
fn tiny_queues_retry_submissions_and_flush_overflow() {
    let _w = watchdog("tiny_queues", 30);
    let cfg = Config::builder().sq_entries(2).cq_entries(2).recv_buffers(64, 1024).build().unwrap();
    let mut d = driver(&cfg);
    let mut sink = TestSink::default();
    const CONNS: u32 = 12;
    const LEN: usize = 256 * 1024;
    let mut clients = Vec::new();
    let mut pending = Vec::new();
    for i in 0..CONNS {
        let (server, client) = pair();
        d.submit(Op::Adopt { conn: key(i), stream: server }).unwrap();
        // Internal re-arms never refuse: they queue for the next park.
        d.submit(Op::RecvStart { conn: key(i) }).unwrap();
        pending.push(Op::Send { conn: key(i), buf: send_buf(&pattern(LEN, i as usize), 16 * 1024) });
        clients.push(client);
    }
    // Offer the sends like the core does: refused ones come back and are offered after a park.
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pending.is_empty() {
        assert!(Instant::now() < deadline);
        let mut again = Vec::new();
        for op in pending.drain(..) {
            if let Err(ringline_core::driver::SubmitError::Full(op)) = d.submit(op) {
                refused += 1;
                again.push(op);
            }
        }
        pending = again;
        d.park(Some(Duration::ZERO), &mut sink).unwrap();
    }
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                let mut got = vec![0u8; LEN];
                c.read_exact(&mut got).unwrap();
                assert!(got == pattern(LEN, i), "conn {i}");
                c.write_all(&pattern(LEN, i + 100)).unwrap();
                c
            })
        })
        .collect();
    park_until(&mut d, &mut sink, Duration::from_secs(20), |s| {
        s.count(|e| matches!(e, Event::Sent(_, _, Ok(LEN)))) == CONNS as usize
            && (0..CONNS).all(|i| s.received(key(i)).len() == LEN)
    });
    for i in 0..CONNS {
        assert!(sink.received(key(i)) == pattern(LEN, i as usize + 100), "conn {i}");
    }
    let st = d.stats();
    eprintln!("tiny queues: refused {refused}, {st:?}");
    assert!(st.sq_full_retries > 0, "{st:?}");
    let clients: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for i in 0..CONNS {
        d.submit(Op::Close { conn: key(i), abort: false }).unwrap();
    }
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == CONNS as usize);
    drop(clients);
}

#[test]
fn full_fixed_table_falls_back_to_plain_fds() {
    let _w = watchdog("full_fixed_table", 20);
    for (cfg, want_fixed) in [
        (Config::builder().fixed_files(2).build().unwrap(), true),
        (Config::builder().direct_descriptors(false).build().unwrap(), false),
    ] {
        let mut d = driver(&cfg);
        assert_eq!(d.capabilities().fixed_files, want_fixed);
        let mut sink = TestSink::default();
        let mut clients = Vec::new();
        for i in 0..4 {
            let (server, mut client) = pair();
            d.submit(Op::Adopt { conn: key(i), stream: server }).unwrap();
            d.submit(Op::RecvStart { conn: key(i) }).unwrap();
            client.write_all(b"data").unwrap();
            clients.push(client);
        }
        park_until(&mut d, &mut sink, LIMIT, |s| (0..4).all(|i| s.received(key(i)) == b"data"));
        let st = d.stats();
        if want_fixed {
            assert_eq!((st.fixed_files_in_use, st.fixed_file_fallbacks), (2, 2));
        } else {
            assert_eq!((st.fixed_files_in_use, st.fixed_file_fallbacks), (0, 0));
        }
        for i in 0..4 {
            d.submit(Op::Close { conn: key(i), abort: false }).unwrap();
        }
        park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::Closed(_))) == 4);
        assert_eq!(d.stats().fixed_files_in_use, 0);
    }
}
