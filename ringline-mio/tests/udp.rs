//! `MioDriver` UDP on real loopback sockets: a flood larger than the fair share, truncation,
//! gathered sends reported in order, and a stale event after close.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use ringline_core::config::Config;
use ringline_core::driver::{Driver, Op, UdpKey};
use ringline_mio::MioDriver;

const LIMIT: Duration = Duration::from_secs(10);

fn datagrams(sink: &Sink) -> Vec<(Vec<u8>, bool)> {
    sink.evs
        .iter()
        .filter_map(|e| match e {
            Ev::Datagram(_, d, _, t) => Some((d.clone(), *t)),
            _ => None,
        })
        .collect()
}

#[test]
fn datagrams_past_the_fair_share_and_oversize_ones_are_reported_one_by_one() {
    let _w = watchdog(30);
    let cfg = Config::builder().udp_recv_buffers(16, 2048).build().unwrap();
    let mut d = MioDriver::new(&cfg, 0).unwrap();
    let mut sink = Sink::default();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let k = UdpKey { index: 2, generation: 1 };
    d.submit(Op::UdpAdopt { sock: k, socket: server }).unwrap();
    d.submit(Op::UdpRecvStart { sock: k }).unwrap();
    park_some(&mut d, &mut sink, 1);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    // 200 datagrams, more than one park's fair share of 64.
    for i in 0..200u32 {
        client.send_to(&i.to_be_bytes(), addr).unwrap();
    }
    client.send_to(&[1u8; 3000], addr).unwrap();
    client.send_to(&[], addr).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| datagrams(s).len() == 202);
    let got = datagrams(&sink);
    for (i, (data, truncated)) in got[..200].iter().enumerate() {
        assert_eq!((data.as_slice(), *truncated), (&(i as u32).to_be_bytes()[..], false));
    }
    assert!(got[200].1, "3,000 bytes over a 2,048-byte buffer is truncated");
    assert_eq!(got[201], (Vec::new(), false), "a zero-length datagram is delivered");
    d.submit(Op::UdpClose { sock: k }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.evs.iter().any(|e| matches!(e, Ev::UdpClosed(_))));
}

#[test]
fn gathered_sends_go_out_as_single_datagrams_in_order_before_closed() {
    let _w = watchdog(30);
    let mut d = driver();
    let mut sink = Sink::default();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let to = peer.local_addr().unwrap();
    let k = UdpKey { index: 0, generation: 4 };
    d.submit(Op::UdpAdopt { sock: k, socket: a }).unwrap();
    d.submit(Op::UdpConnect { sock: k, peer: to }).unwrap();
    d.submit(Op::UdpSend { sock: k, peer: None, buf: send_buf(vec![b"ab".to_vec(), b"cd".to_vec()]) })
        .unwrap();
    d.submit(Op::UdpSend { sock: k, peer: Some(to), buf: send_buf(vec![]) }).unwrap();
    d.submit(Op::UdpSend { sock: k, peer: None, buf: send_buf(vec![b"xyz".to_vec()]) }).unwrap();
    d.submit(Op::UdpClose { sock: k }).unwrap();
    park_until(&mut d, &mut sink, LIMIT, |s| s.evs.iter().any(|e| matches!(e, Ev::UdpClosed(_))));
    let results: Vec<usize> = sink
        .evs
        .iter()
        .filter_map(|e| match e {
            Ev::UdpSent(_, _, r) => Some(*r.as_ref().expect("sent")),
            _ => None,
        })
        .collect();
    assert_eq!(results, vec![4, 0, 3]);
    assert!(matches!(sink.evs.last(), Some(Ev::UdpClosed(kk)) if *kk == k));
    let mut buf = [0u8; 64];
    for want in [&b"abcd"[..], b"", b"xyz"] {
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }
}
