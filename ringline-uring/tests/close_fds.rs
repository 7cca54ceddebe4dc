//! Closing connections returns the process's descriptor count to its baseline (own binary, so no
//! other test opens descriptors meanwhile).
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use ringline_core::config::Config;
use ringline_core::driver::{Driver, Op};

#[test]
fn close_reports_closed_once_and_releases_fds() {
    let _w = watchdog("close_reports_closed_once_and_releases_fds", 20);
    let cfg = Config::builder().build().unwrap();
    let mut d = driver(&cfg);
    let mut sink = TestSink::default();
    let baseline = fd_count();
    let mut clients = Vec::new();
    for i in 0..8 {
        let (server, mut client) = pair();
        d.submit(Op::Adopt { conn: key(i), stream: server }).unwrap();
        d.submit(Op::RecvStart { conn: key(i) }).unwrap();
        client.write_all(b"ping").unwrap();
        clients.push(client);
    }
    park_until(&mut d, &mut sink, Duration::from_secs(10), |s| (0..8).all(|i| s.received(key(i)) == b"ping"));
    assert_eq!(d.stats().fixed_files_in_use, 8);
    for i in 0..8 {
        d.submit(Op::Close { conn: key(i), abort: i % 2 == 1 }).unwrap();
    }
    park_until(&mut d, &mut sink, Duration::from_secs(10), |s| {
        s.count(|e| matches!(e, Event::Closed(_))) == 8
    });
    for _ in 0..3 {
        d.park(Some(Duration::from_millis(10)), &mut sink).unwrap();
    }
    for i in 0..8 {
        assert_eq!(sink.count(|e| matches!(e, Event::Closed(k) if *k == key(i))), 1);
    }
    for (i, mut c) in clients.into_iter().enumerate() {
        let mut buf = Vec::new();
        let r = c.read_to_end(&mut buf);
        if i % 2 == 0 {
            assert!(r.is_ok(), "graceful close must read as EOF: {r:?}");
        }
    }
    assert_eq!(fd_count(), baseline);
    assert_eq!(d.stats().fixed_files_in_use, 0);
    // A key can be reused once Closed was reported.
    let (server, mut client) = pair();
    let k = ringline_core::driver::ConnKey { index: 0, generation: 2 };
    d.submit(Op::Adopt { conn: k, stream: server }).unwrap();
    d.submit(Op::RecvStart { conn: k }).unwrap();
    client.write_all(b"again").unwrap();
    park_until(&mut d, &mut sink, Duration::from_secs(10), |s| s.received(k) == b"again");
    d.submit(Op::Close { conn: k, abort: false }).unwrap();
    park_until(&mut d, &mut sink, Duration::from_secs(10), |s| {
        s.count(|e| matches!(e, Event::Closed(_))) == 9
    });
    drop(client);
    assert_eq!(fd_count(), baseline);

    // Shutdown with connections still open and operations in flight: bounded, and every fd goes
    // (the ring's and the eventfd included).
    let mut peers = Vec::new();
    for i in 20..24 {
        let (server, client) = pair();
        d.submit(Op::Adopt { conn: key(i), stream: server }).unwrap();
        d.submit(Op::RecvStart { conn: key(i) }).unwrap();
        d.submit(Op::Send { conn: key(i), buf: send_buf(&pattern(4 << 20, 0), 1 << 20) }).unwrap();
        peers.push(client);
    }
    for _ in 0..3 {
        d.park(Some(Duration::from_millis(5)), &mut sink).unwrap();
    }
    let start = std::time::Instant::now();
    d.shutdown();
    eprintln!("shutdown took {:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(d);
    drop(peers);
    assert_eq!(fd_count(), baseline - 2);
}
