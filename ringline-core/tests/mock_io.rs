//! Connection I/O over the `MockDriver`: echo, send ordering, close after drain, slot reuse with
//! stale completions, refused submissions, outbound connects, receive buffers lent by the backend.
#![cfg(feature = "testing")]

mod common;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use common::{Hooks, Log, WAIT, cfg, frame, frame_echo, pattern, start, start_on, wait_for, watchdog};
use ringline_core::testing::Injected;
use ringline_core::{CloseReason, ConnKey, GuardBox, ParseResult, join_all};

/// Echo through `with_data` + `send`, with messages larger than a send-pool slot (and than the
/// whole pool), delivered in odd-sized chunks and written in partial steps.
#[test]
fn echo_with_data_and_send_is_byte_exact() {
    let _w = watchdog("echo_with_data_and_send_is_byte_exact");
    let sends = Log::default();
    let s2 = sends.clone();
    let rt = start(cfg().send_pool(4, 64), move || Hooks { accept: frame_echo(s2), ..Hooks::default() });
    rt.net.set_recv_chunk(37);
    rt.net.set_write_chunk(Some(50));
    let peer = rt.net.connect_inbound(&rt.worker).unwrap();
    let sizes = [5usize, 64, 65, 200, 256, 1000, 3000, 1];
    let mut expected = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let payload = pattern(n, i as u8);
        peer.send(&frame(&payload)).unwrap();
        assert_eq!(peer.read_exact(n, WAIT).unwrap(), payload, "echo of message {i} ({n} bytes)");
        expected.extend_from_slice(&payload);
    }
    assert_eq!(peer.written(), expected);
    assert!(wait_for(WAIT, || sends.len() == sizes.len()));
    let got = sends.get();
    for (i, (&n, (len, r))) in sizes.iter().zip(got.iter()).enumerate() {
        assert_eq!(*len, n, "send {i}");
        assert_eq!(r, &Ok(n), "send {i} resolves once with its own length");
    }
    let m = rt.metrics();
    assert!(m.send_overflow_bytes > 0, "the 1000 and 3000 byte sends overflowed the pool");
    assert_eq!(m.bytes_received as usize, sizes.iter().map(|n| n + 4).sum::<usize>());
    peer.fin();
    assert!(peer.wait_closed(WAIT), "handler returned at EOF, connection closed");
    let m = rt.stop();
    assert_eq!(m.bytes_sent as usize, expected.len());
    assert_eq!(m.connections_closed, 1);
    assert_eq!(m.send_pool_in_use, 0, "every pool slot came back");
}

/// `send_nowait`, `send`, `send_owned` (guards below and above `zero_copy_threshold`) and
/// `send_parts` queued back to back reach the peer in call order; each awaited send resolves
/// with its own length.
#[test]
fn mixed_sends_arrive_in_call_order() {
    let _w = watchdog("mixed_sends_arrive_in_call_order");
    let results = Log::default();
    let r2 = results.clone();
    let rt = start(cfg().send_pool(2, 64).zero_copy_threshold(16), move || Hooks {
        accept: Box::new(move |conn| {
            let results = r2.clone();
            Box::pin(async move {
                // Wait for the go signal so the peer can stall first.
                let _ = conn.with_data(|d| ParseResult::Consumed(d.len())).await;
                let big = pattern(300, 9); // overflows the 2 x 64 pool
                conn.send_nowait(b"<1:nowait>").unwrap();
                let f2 = conn.send(b"<2:send>");
                let f3 = conn.send_owned(b"<3:owned-guard-above-threshold>".to_vec());
                let f4 = conn.send_owned(bytes::Bytes::from_static(b"<4:small>"));
                conn.send_nowait(b"<5:nowait>").unwrap();
                let f6 = conn.send(&big);
                let f7 = conn
                    .send_parts()
                    .copy(b"<7:parts")
                    .guard(GuardBox::new(vec![b'#'; 20]))
                    .guard(GuardBox::new(Rc::<[u8]>::from(&b"tiny"[..])))
                    .copy(b">")
                    .submit();
                let f8 = conn.send_owned(String::from("<8:string-guard-also-above-threshold>"));
                let lens = [8usize, 31, 9, 300, 8 + 20 + 4 + 1, 37];
                let rs = join_all(vec![
                    Box::pin(f2) as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>,
                    Box::pin(f3),
                    Box::pin(f4),
                    Box::pin(f6),
                    Box::pin(f7),
                    Box::pin(f8),
                ])
                .await;
                for (r, len) in rs.into_iter().zip(lens) {
                    results.push((r.map_err(|e| e.to_string()), len));
                }
            })
        }),
        ..Hooks::default()
    });
    let peer = rt.net.connect_inbound(&rt.worker).unwrap();
    peer.stall();
    rt.net.set_write_chunk(Some(7));
    peer.send(b"go").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(peer.written().is_empty(), "a stalled peer accepts nothing");
    peer.unstall();
    let mut expected = Vec::new();
    expected.extend_from_slice(b"<1:nowait><2:send><3:owned-guard-above-threshold><4:small><5:nowait>");
    expected.extend_from_slice(&pattern(300, 9));
    expected.extend_from_slice(b"<7:parts");
    expected.extend_from_slice(&[b'#'; 20]);
    expected.extend_from_slice(b"tiny>");
    expected.extend_from_slice(b"<8:string-guard-also-above-threshold>");
    let got = peer.read_to_eof(WAIT).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&expected));
    assert_eq!(got, expected);
    assert!(wait_for(WAIT, || results.len() == 6));
    for (r, len) in results.get() {
        assert_eq!(r, Ok(len));
    }
    rt.stop();
}

/// Sends waiting for admission under a tiny `send_queue_limit` keep their order; `send_nowait`
/// is refused while earlier sends wait.
#[test]
fn sends_waiting_for_admission_keep_order() {
    let _w = watchdog("sends_waiting_for_admission_keep_order");
    let nowait = Log::default();
    let n2 = nowait.clone();
    let rt = start(cfg().send_queue_limit(8), move || Hooks {
        accept: Box::new(move |conn| {
            let nowait = n2.clone();
            Box::pin(async move {
                let _ = conn.with_data(|d| ParseResult::Consumed(d.len())).await;
                let msgs: Vec<Vec<u8>> = (0..10).map(|i| format!("[msg {i:02}]").into_bytes()).collect();
                let futs: Vec<_> = msgs.iter().map(|m| conn.send(m)).collect();
                nowait.push(conn.send_nowait(b"X").map_err(|e| e.to_string()));
                for r in join_all(futs).await {
                    assert_eq!(r.unwrap(), 8);
                }
            })
        }),
        ..Hooks::default()
    });
    let peer = rt.net.connect_inbound(&rt.worker).unwrap();
    peer.stall();
    peer.send(b"go").unwrap();
    assert!(wait_for(WAIT, || nowait.len() == 1));
    assert_eq!(nowait.get()[0], Err(ringline_core::Error::SendQueueFull.to_string()));
    peer.unstall();
    let got = peer.read_to_eof(WAIT).unwrap();
    let expected: Vec<u8> = (0..10).flat_map(|i| format!("[msg {i:02}]").into_bytes()).collect();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&expected));
    let m = rt.stop();
    assert!(m.send_queue_full > 0);
}

/// The handler queues data and returns: the peer gets every byte, then EOF, and `on_close` runs
/// once.
#[test]
fn close_after_drain_delivers_everything_then_eof() {
    let _w = watchdog("close_after_drain_delivers_everything_then_eof");
    let closes = Log::default();
    let c2 = closes.clone();
    let rt = start(cfg().send_pool(32, 1024), move || Hooks {
        accept: Box::new(|conn| {
            Box::pin(async move {
                conn.send_nowait(&pattern(3000, 1)).unwrap();
                let big = pattern(20_000, 2);
                let admitted = conn.send(&big); // admitted at once, dropped unawaited
                drop(admitted);
                conn.send_nowait(b"tail").unwrap();
            })
        }),
        on_close: Box::new(move |t, r| c2.push((t, r))),
        ..Hooks::default()
    });
    rt.net.set_write_chunk(Some(1000));
    let peer = rt.net.connect_inbound_stalled(&rt.worker).unwrap();
    let key = peer.wait_key(WAIT).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(!peer.eof(), "no FIN before the queue drained");
    assert!(closes.get().is_empty());
    peer.unstall();
    let got = peer.read_to_eof(WAIT).unwrap();
    let mut expected = pattern(3000, 1);
    expected.extend(pattern(20_000, 2));
    expected.extend_from_slice(b"tail");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
    assert!(peer.wait_closed(WAIT));
    assert!(!peer.was_aborted(), "graceful close, not a reset");
    assert!(wait_for(WAIT, || closes.len() == 1));
    std::thread::sleep(Duration::from_millis(20));
    let c = closes.get();
    assert_eq!(c.len(), 1, "on_close exactly once");
    assert_eq!((c[0].0.index, c[0].0.generation), (key.index, key.generation));
    assert_eq!(c[0].1, CloseReason::Local);
    assert_eq!(rt.net.closed_count(), 1);
    rt.stop();
}

/// A slot is reused after `Closed`; late completions for the old generation (Recv, RecvEnd,
/// Sent, Connected, Closed) never reach the new occupant and are counted as stale.
#[test]
fn stale_completions_never_reach_the_new_occupant() {
    let _w = watchdog("stale_completions_never_reach_the_new_occupant");
    let seen = Log::default();
    let s2 = seen.clone();
    let rt = start(cfg().max_connections(1), move || Hooks {
        accept: Box::new(move |conn| {
            let seen = s2.clone();
            Box::pin(async move {
                loop {
                    let mut got = Vec::new();
                    match conn
                        .with_data(|d| {
                            got = d.to_vec();
                            ParseResult::Consumed(d.len())
                        })
                        .await
                    {
                        Ok(0) => {
                            seen.push((conn.token().generation, b"<eof>".to_vec()));
                            break;
                        }
                        Err(e) => {
                            seen.push((conn.token().generation, format!("<err {e}>").into_bytes()));
                            break;
                        }
                        Ok(_) => {}
                    }
                    seen.push((conn.token().generation, got.clone()));
                    if conn.send(&got).await.is_err() {
                        break;
                    }
                }
            })
        }),
        ..Hooks::default()
    });
    let p1 = rt.net.connect_inbound(&rt.worker).unwrap();
    let old = p1.wait_key(WAIT).unwrap();
    p1.send(b"first").unwrap();
    assert_eq!(p1.read_exact(5, WAIT).unwrap(), b"first");
    p1.fin();
    assert!(p1.wait_closed(WAIT));
    assert!(wait_for(WAIT, || rt.metrics().connections_closed == 1));

    let p2 = rt.net.connect_inbound(&rt.worker).unwrap();
    let new = p2.wait_key(WAIT).unwrap();
    assert_eq!(new.index, old.index, "max_connections(1): the slot is reused");
    assert_ne!(new.generation, old.generation);
    let before = rt.metrics().stale_completions;
    for inj in [
        Injected::Recv { conn: old, data: b"STALE".to_vec() },
        Injected::Sent { conn: old },
        Injected::Connected { conn: old },
        Injected::RecvEnd { conn: old, error: Some(std::io::ErrorKind::ConnectionReset) },
        Injected::Closed { conn: old },
        Injected::Recv { conn: ConnKey { index: 77, generation: 0 }, data: b"NOWHERE".to_vec() },
        Injected::RecvOwned { conn: old, data: b"STALE".to_vec() },
    ] {
        rt.net.inject(inj);
    }
    assert!(wait_for(WAIT, || rt.net.injected_delivered()));
    p2.send(b"fresh").unwrap();
    assert_eq!(p2.read_exact(5, WAIT).unwrap(), b"fresh");
    assert!(wait_for(WAIT, || rt.metrics().stale_completions >= before + 7));
    let m = rt.metrics();
    assert_eq!(m.connections_open, 1, "the stale Closed did not release the new occupant");
    assert!(!p2.is_closed());
    p2.fin();
    assert!(p2.wait_closed(WAIT));
    let log = seen.get();
    assert!(log.iter().all(|(_, d)| d != b"STALE" && d != b"NOWHERE"), "{log:?}");
    let of_new: Vec<Vec<u8>> =
        log.iter().filter(|(g, _)| *g == new.generation).map(|(_, d)| d.clone()).collect();
    assert_eq!(of_new, vec![b"fresh".to_vec(), b"<eof>".to_vec()]);
    assert_eq!(rt.net.lent_buffers(), (0, 1), "the stale owned chunk was handed back");
    let m = rt.stop();
    assert!(m.stale_completions >= 7);
    assert_eq!(m.connections_closed, 2);
}

/// `refuse_next_submits`: refused operations are offered again after the next park; an echo
/// (accept included) loses nothing.
#[test]
fn refused_submissions_are_retried_and_nothing_is_lost() {
    let _w = watchdog("refused_submissions_are_retried_and_nothing_is_lost");
    let sends = Log::default();
    let s2 = sends.clone();
    let rt = start(cfg().send_pool(4, 64), move || Hooks { accept: frame_echo(s2), ..Hooks::default() });
    rt.net.refuse_next_submits(5);
    let peer = rt.net.connect_inbound(&rt.worker).unwrap();
    let mut expected = Vec::new();
    for i in 0..20u8 {
        if i % 4 == 0 {
            rt.net.refuse_next_submits(5);
        }
        let payload = pattern(10 + 50 * i as usize, i);
        peer.send(&frame(&payload)).unwrap();
        assert_eq!(peer.read_exact(payload.len(), WAIT).unwrap(), payload, "message {i}");
        expected.extend(payload);
    }
    assert_eq!(peer.written(), expected);
    assert!(rt.net.refused_submits() >= 25, "refused {}", rt.net.refused_submits());
    peer.fin();
    assert!(peer.wait_closed(WAIT));
    assert!(sends.get().iter().all(|(len, r)| r == &Ok(*len)));
    let m = rt.stop();
    assert_eq!(m.connections_closed, 1);
}

/// Outbound connects: a listening address connects and exchanges bytes; another is refused.
#[test]
fn outbound_connect_to_listening_and_refused_addresses() {
    let _w = watchdog("outbound_connect_to_listening_and_refused_addresses");
    let up: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let down: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let out = Log::default();
    let o2 = out.clone();
    let net = ringline_core::testing::MockNet::new();
    net.listen(up);
    let rt = start_on(net, cfg(), move || Hooks {
        start: Some(Box::new(move || {
            Box::pin(async move {
                let r = ringline_core::connect(down).await;
                o2.push(format!("down: {:?}", r.as_ref().err().map(|e| e.kind())));
                let conn = ringline_core::connect(up).await.expect("connect to listener");
                o2.push(format!("outbound={} local={}", conn.is_outbound(), conn.local_addr().is_some()));
                conn.send(b"ping").await.unwrap();
                let reply = conn.recv().await.unwrap();
                o2.push(String::from_utf8_lossy(&reply).into_owned());
            })
        })),
        ..Hooks::default()
    });
    let peer = rt.net.accept(up, WAIT).expect("outbound connection");
    assert_eq!(peer.read_exact(4, WAIT).unwrap(), b"ping");
    peer.send(b"pong").unwrap();
    assert!(peer.wait_closed(WAIT), "OwnedConn dropped: connection closed");
    assert_eq!(
        out.get(),
        vec![
            format!("down: {:?}", Some(std::io::ErrorKind::ConnectionRefused)),
            "outbound=true local=true".to_string(),
            "pong".to_string(),
        ]
    );
    let m = rt.stop();
    assert_eq!(m.connections_connected, 1);
    assert_eq!(m.connections_open, 0);
}

/// With completions of different connections delivered out of order, concurrent echoes stay
/// byte-exact per connection.
#[test]
fn reordered_completions_keep_each_stream_intact() {
    let _w = watchdog("reordered_completions_keep_each_stream_intact");
    let sends = Log::default();
    let s2 = sends.clone();
    let rt = start(cfg().send_pool(4, 64), move || Hooks { accept: frame_echo(s2), ..Hooks::default() });
    rt.net.reorder_completions(true);
    rt.net.set_recv_chunk(13);
    rt.net.set_write_chunk(Some(29));
    let peers: Vec<_> = (0..4).map(|_| rt.net.connect_inbound(&rt.worker).unwrap()).collect();
    let mut expected = vec![Vec::new(); peers.len()];
    for round in 0..5u8 {
        for (i, p) in peers.iter().enumerate() {
            let payload = pattern(50 + 97 * usize::from(round) + i, round ^ i as u8);
            p.send(&frame(&payload)).unwrap();
            expected[i].extend(payload);
        }
    }
    for (p, exp) in peers.iter().zip(&expected) {
        assert_eq!(p.read_exact(exp.len(), WAIT).unwrap(), *exp);
        p.fin();
        assert!(p.wait_closed(WAIT));
    }
    assert!(sends.get().iter().all(|(len, r)| r == &Ok(*len)));
    let m = rt.stop();
    assert_eq!(m.connections_closed, 4);
}

/// Echoes with `recv` + `send_owned` until end of stream.
fn recv_echo() -> Hooks {
    Hooks {
        accept: Box::new(|conn| {
            Box::pin(async move {
                while let Ok(data) = conn.recv().await {
                    if data.is_empty() || conn.send_owned(data).await.is_err() {
                        break;
                    }
                }
            })
        }),
        ..Hooks::default()
    }
}

/// A chunk delivered in an owned buffer while the accumulator is empty becomes the accumulator
/// (the core keeps the buffer, nothing is handed back) and `recv` returns exactly its bytes.
#[test]
fn lent_chunk_is_adopted_by_an_empty_accumulator() {
    let _w = watchdog("lent_chunk_is_adopted_by_an_empty_accumulator");
    let rt = start(cfg(), recv_echo);
    rt.net.set_recv_chunk(8192);
    rt.net.lend_recv_from(Some(4096));
    let peer = rt.net.connect_inbound(&rt.worker).unwrap();
    let mut expected = Vec::new();
    for (i, n) in [8192usize, 5000, 100, 4096].into_iter().enumerate() {
        let payload = pattern(n, i as u8);
        peer.send(&payload).unwrap();
        assert_eq!(peer.read_exact(n, WAIT).unwrap(), payload, "echo of message {i} ({n} bytes)");
        expected.extend_from_slice(&payload);
    }
    assert_eq!(rt.net.lent_buffers(), (3, 0), "three large chunks adopted, the small one copied");
    peer.fin();
    assert!(peer.wait_closed(WAIT));
    let m = rt.stop();
    assert_eq!(m.bytes_received as usize, expected.len());
    assert_eq!(peer.written(), expected);
}

/// A chunk in an owned buffer that arrives behind bytes still buffered (a frame not complete
/// yet) is appended in order and its buffer handed back; the frames echo byte-exact.
#[test]
fn lent_chunk_behind_buffered_bytes_is_appended_and_handed_back() {
    let _w = watchdog("lent_chunk_behind_buffered_bytes_is_appended_and_handed_back");
    let sends = Log::default();
    let s2 = sends.clone();
    let rt = start(cfg(), move || Hooks { accept: frame_echo(s2), ..Hooks::default() });
    rt.net.set_recv_chunk(4096);
    rt.net.lend_recv_from(Some(1024));
    let peer = rt.net.connect_inbound(&rt.worker).unwrap();
    // 1. A frame header alone: a small chunk, copied into the accumulator.
    let payload = pattern(3 * 4096, 7);
    let framed = frame(&payload);
    peer.send(&framed[..100]).unwrap();
    assert!(wait_for(WAIT, || rt.metrics().bytes_received == 100));
    assert_eq!(rt.net.lent_buffers(), (0, 0));
    // 2. The rest: three full chunks land behind the buffered 100 bytes, copied and handed back.
    peer.send(&framed[100..]).unwrap();
    assert_eq!(peer.read_exact(payload.len(), WAIT).unwrap(), payload);
    let (kept, returned) = rt.net.lent_buffers();
    assert_eq!(kept, 0, "the accumulator was never empty when a lent chunk came");
    assert_eq!(returned, 3);
    // 3. The next frame starts on an empty accumulator: its first chunk is adopted.
    let second = pattern(4092, 8);
    peer.send(&frame(&second)).unwrap();
    assert_eq!(peer.read_exact(second.len(), WAIT).unwrap(), second);
    assert_eq!(rt.net.lent_buffers(), (1, 3));
    peer.fin();
    assert!(peer.wait_closed(WAIT));
    let m = rt.stop();
    assert_eq!(m.bytes_received as usize, framed.len() + second.len() + 4);
}

/// Lent and copied chunks over many connections at once: every stream echoes byte-exact and in
/// order, whichever path each chunk took.
#[test]
fn lent_chunks_over_many_connections_keep_every_stream_intact() {
    let _w = watchdog("lent_chunks_over_many_connections_keep_every_stream_intact");
    let rt = start(cfg(), recv_echo);
    rt.net.set_recv_chunk(3000);
    rt.net.lend_recv_from(Some(2000));
    rt.net.reorder_completions(true);
    let peers: Vec<_> = (0..16).map(|_| rt.net.connect_inbound(&rt.worker).unwrap()).collect();
    let streams: Vec<Vec<u8>> = (0..peers.len()).map(|i| pattern(64 * 1024 + i * 777, i as u8)).collect();
    for round in 0..8 {
        for (peer, data) in peers.iter().zip(&streams) {
            let step = data.len().div_ceil(8);
            let part = &data[(round * step).min(data.len())..((round + 1) * step).min(data.len())];
            peer.send(part).unwrap();
        }
    }
    for (i, (peer, data)) in peers.iter().zip(&streams).enumerate() {
        assert_eq!(&peer.read_exact(data.len(), WAIT).unwrap(), data, "stream {i}");
        peer.fin();
        assert!(peer.wait_closed(WAIT));
    }
    let (kept, returned) = rt.net.lent_buffers();
    assert!(kept > 0, "some chunks were adopted ({kept}, {returned})");
    let m = rt.stop();
    assert_eq!(m.bytes_received as usize, streams.iter().map(Vec::len).sum::<usize>());
}
