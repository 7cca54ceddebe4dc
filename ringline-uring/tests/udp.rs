//! `UringDriver` UDP on real loopback sockets: zero-length floods through a tiny buffer ring,
//! truncation, ordered send results, and close after sends.
#![cfg(target_os = "linux")]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use ringline_core::config::Config;
use ringline_core::driver::{Driver, Op, UdpKey};

const LIMIT: Duration = Duration::from_secs(10);

/// One test at a time: one of them counts process-wide fds.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn udp_cfg() -> Config {
    Config::builder().udp_recv_buffers(16, 2048).build().unwrap()
}

fn sock(index: u32) -> UdpKey {
    UdpKey { index, generation: 1 }
}

fn datagrams(sink: &TestSink) -> Vec<(Vec<u8>, bool)> {
    sink.events
        .iter()
        .filter_map(|e| match e {
            Event::Datagram(_, d, _, t) => Some((d.clone(), *t)),
            _ => None,
        })
        .collect()
}

#[test]
fn zero_length_floods_recycle_a_tiny_ring_and_oversize_is_truncated() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = watchdog("zero_length_floods_recycle_a_tiny_ring_and_oversize_is_truncated", 60);
    let mut d = driver(&udp_cfg());
    let mut sink = TestSink::default();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let k = sock(0);
    d.submit(Op::UdpAdopt { sock: k, socket: server }).unwrap();
    d.submit(Op::UdpRecvStart { sock: k }).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let from = client.local_addr().unwrap();
    // 2,000 empty datagrams through 16 buffers: every buffer must come back every time.
    for burst in 0..20 {
        for _ in 0..100 {
            client.send_to(&[], addr).unwrap();
        }
        park_until(&mut d, &mut sink, LIMIT, |s| datagrams(s).len() == (burst + 1) * 100);
    }
    client.send_to(&[9u8; 4000], addr).unwrap();
    client.send_to(&pattern(2048, 1), addr).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| datagrams(s).len() == 2002);
    let got = datagrams(&sink);
    assert!(got[..2000].iter().all(|(d, t)| d.is_empty() && !t));
    // 100-datagram bursts into 16 buffers end the multishot (ENOBUFS, or a last completion
    // without F_MORE) and the driver re-arms it.
    let st = d.stats();
    assert!(st.recv_buffer_exhausted > 0 || st.recv_rearms > 0, "{st:?}");
    assert!(got[2000].1, "the 4,000-byte datagram is reported truncated");
    assert_eq!(got[2001], (pattern(2048, 1), false), "a datagram of exactly the buffer size is whole");
    assert!(sink.events.iter().all(|e| !matches!(e, Event::Datagram(_, _, p, _) if *p != from)));
    d.submit(Op::UdpClose { sock: k }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::UdpClosed(_))) == 1);
    d.shutdown();
}

#[test]
fn send_results_come_in_submission_order_and_close_waits_for_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = watchdog("send_results_come_in_submission_order_and_close_waits_for_them", 60);
    let mut d = driver(&udp_cfg());
    let mut sink = TestSink::default();
    let baseline = fd_count();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let to = peer.local_addr().unwrap();
    let k = sock(3);
    d.submit(Op::UdpAdopt { sock: k, socket: a }).unwrap();
    d.submit(Op::UdpRecvStart { sock: k }).unwrap();
    let sizes = [1usize, 0, 3000, 7];
    for (i, &n) in sizes.iter().enumerate() {
        d.submit(Op::UdpSend { sock: k, peer: Some(to), buf: send_buf(&pattern(n, i), 1024) }).unwrap();
    }
    d.submit(Op::UdpClose { sock: k }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.count(|e| matches!(e, Event::UdpClosed(_))) == 1);
    let sent: Vec<usize> = sink
        .events
        .iter()
        .filter_map(|e| match e {
            Event::UdpSent(kk, len, Ok(n)) if *kk == k => {
                assert_eq!(len, n);
                Some(*n)
            }
            Event::UdpSent(_, _, Err(e)) => panic!("send failed: {e:?}"),
            _ => None,
        })
        .collect();
    assert_eq!(sent, sizes, "one UdpSent per send, in submission order");
    assert!(matches!(sink.events.last(), Some(Event::UdpClosed(kk)) if *kk == k), "UdpClosed comes last");
    let mut buf = [0u8; 4096];
    for (i, &n) in sizes.iter().enumerate() {
        let got = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], &pattern(n, i)[..], "gathered parts form one datagram");
    }
    drop(peer);
    assert_eq!(fd_count(), baseline, "the socket's fd is closed");
    d.shutdown();
}
