//! A peer reset surfaces as typed errors of that connection, and never as `SIGPIPE`, even when
//! the process has the default (fatal) `SIGPIPE` disposition.

mod common;

use std::io::{ErrorKind, Write};
use std::time::Duration;

use common::*;
use ringline_core::driver::{Driver, Op};

const T: Duration = Duration::from_secs(5);

fn is_reset(k: ErrorKind) -> bool {
    matches!(k, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
}

#[test]
fn reset_is_a_connection_error_not_a_signal() {
    let _w = watchdog(10);
    // SAFETY: restoring the default disposition of SIGPIPE is always valid; this test binary
    // holds only this test, so no other test depends on the disposition.
    let prev = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(prev, libc::SIG_ERR);

    let mut d = driver();
    let mut s = Sink::default();

    // 1. Reset while receiving: RecvEnd Err(ConnectionReset); a later send fails, no SIGPIPE.
    let (ours, mut peer) = pair();
    let a = key(1);
    d.submit(Op::Adopt { conn: a, stream: ours }).unwrap();
    d.submit(Op::RecvStart { conn: a }).unwrap();
    peer.write_all(b"x").unwrap();
    park_until(&mut d, &mut s, T, |s| s.bytes(a) == b"x");
    set_linger_zero(&peer);
    drop(peer);
    park_until(&mut d, &mut s, T, |s| !s.recv_ends(a).is_empty());
    let ends = s.recv_ends(a);
    assert_eq!(ends.len(), 1);
    let e = ends[0].as_ref().unwrap_err();
    assert!(is_reset(e.kind()), "{e:?}");
    for _ in 0..2 {
        d.submit(Op::Send { conn: a, buf: send_buf(vec![vec![1u8; 64 * 1024]]) }).unwrap();
        let n = s.sents(a).len();
        park_until(&mut d, &mut s, T, |s| s.sents(a).len() == n + 1);
        let e = s.sents(a)[n].as_ref().unwrap_err();
        assert!(is_reset(e.kind()), "{e:?}");
    }

    // 2. Reset while a large send is in flight (peer not reading): Sent Err, exactly once.
    let (ours, peer) = pair();
    let b = key(2);
    d.submit(Op::Adopt { conn: b, stream: ours }).unwrap();
    d.submit(Op::Send { conn: b, buf: send_buf(vec![vec![7u8; 16 << 20]]) }).unwrap();
    park_some(&mut d, &mut s, 3);
    assert!(s.sents(b).is_empty(), "16 MiB cannot fit in loopback buffers");
    set_linger_zero(&peer);
    drop(peer);
    park_until(&mut d, &mut s, T, |s| !s.sents(b).is_empty());
    let e = s.sents(b)[0].as_ref().unwrap_err();
    assert!(is_reset(e.kind()), "{e:?}");
    // Receiving afterwards reports the end once (the reset may have been consumed by the send).
    d.submit(Op::RecvStart { conn: b }).unwrap();
    park_until(&mut d, &mut s, T, |s| !s.recv_ends(b).is_empty());

    for k in [a, b] {
        d.submit(Op::Close { conn: k, abort: false }).unwrap();
    }
    park_until(&mut d, &mut s, T, |s| s.closed(a) == 1 && s.closed(b) == 1);
    assert_eq!(s.sents(b).len(), 1);
    assert_eq!(s.recv_ends(a).len(), 1);
    assert_eq!(s.recv_ends(b).len(), 1);
}
