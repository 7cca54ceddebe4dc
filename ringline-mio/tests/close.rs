//! `Close` reports exactly one `Closed`, returns an in-flight send, and releases every fd.

mod common;

use std::io::{ErrorKind, Read};
use std::time::Duration;

use common::*;
use ringline_core::driver::{Driver, Op};

const T: Duration = Duration::from_secs(5);

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn close_releases_everything_once() {
    let _w = watchdog(10);
    let mut d = driver();
    let mut s = Sink::default();
    let baseline = open_fds();

    // Graceful close with a send cut short: Sent Err first, then exactly one Closed; the peer
    // sees the data that went out followed by EOF.
    let (ours, mut peer_a) = pair();
    let a = key(1);
    d.submit(Op::Adopt { conn: a, stream: ours }).unwrap();
    d.submit(Op::RecvStart { conn: a }).unwrap();
    d.submit(Op::Send { conn: a, buf: send_buf(vec![vec![9u8; 16 << 20]]) }).unwrap();
    park_some(&mut d, &mut s, 3);
    assert!(s.sents(a).is_empty());
    d.submit(Op::Close { conn: a, abort: false }).unwrap();
    assert_eq!(s.closed(a), 0, "Close completed inline in submit");
    park_until(&mut d, &mut s, T, |s| s.closed(a) == 1);
    let sent_at = s.evs.iter().position(|e| matches!(e, Ev::Sent(k, ..) if *k == a)).unwrap();
    let closed_at = s.evs.iter().position(|e| matches!(e, Ev::Closed(k) if *k == a)).unwrap();
    assert!(sent_at < closed_at);
    assert!(s.sents(a)[0].is_err());
    // Reading to the end must terminate (EOF or reset: unread data on close may reset).
    let mut sink = Vec::new();
    let _ = peer_a.read_to_end(&mut sink);

    // Abort: the peer sees a reset.
    let (ours, mut peer_b) = pair();
    let b = key(2);
    d.submit(Op::Adopt { conn: b, stream: ours }).unwrap();
    d.submit(Op::Close { conn: b, abort: true }).unwrap();
    park_until(&mut d, &mut s, T, |s| s.closed(b) == 1);
    let mut buf = [0u8; 16];
    let e = peer_b.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset);

    // An outbound connect still in progress (unroutable address) is cancelled by Close.
    let c = key(3);
    let addr = "10.255.255.1:9".parse().unwrap();
    d.submit(Op::Connect { conn: c, addr, opts: Default::default() }).unwrap();
    d.park(Some(Duration::ZERO), &mut s).unwrap();
    d.submit(Op::Close { conn: c, abort: false }).unwrap();
    park_until(&mut d, &mut s, T, |s| s.closed(c) == 1);
    assert_eq!(s.connecteds(c).len(), 1, "the connect needs its terminal completion");
    let ci = s.evs.iter().position(|e| matches!(e, Ev::Connected(k, _) if *k == c)).unwrap();
    let cl = s.evs.iter().position(|e| matches!(e, Ev::Closed(k) if *k == c)).unwrap();
    assert!(ci < cl);

    // Nothing more for any key afterwards.
    let n = s.evs.len();
    park_some(&mut d, &mut s, 5);
    assert_eq!(s.evs.len(), n, "{:?}", &s.evs[n..]);
    for k in [a, b, c] {
        assert_eq!(s.closed(k), 1);
    }

    drop((peer_a, peer_b));
    assert_eq!(open_fds(), baseline, "fds leaked");

    // shutdown() releases what is still open.
    let (ours, _peer) = pair();
    d.submit(Op::Adopt { conn: key(4), stream: ours }).unwrap();
    park_some(&mut d, &mut s, 1);
    d.shutdown();
    drop(_peer);
    assert_eq!(open_fds(), baseline, "fds leaked by shutdown");
}
