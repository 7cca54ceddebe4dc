//! Connection life-cycle edge cases over the `MockDriver`: linger, reset, half-close,
//! backpressure, connect timeout, shutdown.
#![cfg(feature = "testing")]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Hooks, Log, WAIT, cfg, pattern, start, start_on, wait_for, watchdog};
use ringline_core::testing::MockNet;
use ringline_core::{CloseReason, Error, ParseResult, sleep};

/// The handler queues bytes for a peer that never reads and returns: the close is bounded by
/// `close_linger`, then the connection is aborted.
#[test]
fn close_linger_bounds_a_close_by_task_return() {
    let _w = watchdog("close_linger_bounds_a_close_by_task_return");
    let closes = Log::default();
    let c2 = closes.clone();
    let rt = start(cfg().close_linger(Duration::from_millis(50)), move || Hooks {
        accept: Box::new(|conn| {
            Box::pin(async move {
                conn.send_nowait(b"never read").unwrap();
            })
        }),
        on_close: Box::new(move |_, r| c2.push(r)),
        ..Hooks::default()
    });
    let t0 = Instant::now();
    let peer = rt.net.connect_inbound_stalled(&rt.worker).unwrap();
    assert!(peer.wait_closed(Duration::from_secs(3)), "linger expired: connection aborted");
    assert!(t0.elapsed() >= Duration::from_millis(45));
    assert!(peer.was_aborted());
    assert!(wait_for(WAIT, || closes.len() == 1));
    assert_eq!(closes.get(), [CloseReason::Aborted]);
    let m = rt.stop();
    assert_eq!(m.close_aborted, 1);
}

/// Same with an explicit `close()`.
#[test]
fn close_linger_bounds_an_explicit_close() {
    let _w = watchdog("close_linger_bounds_an_explicit_close");
    let rt = start(cfg().close_linger(Duration::from_millis(50)), move || Hooks {
        accept: Box::new(|conn| {
            Box::pin(async move {
                conn.send_nowait(b"never read").unwrap();
                conn.close();
                sleep(Duration::from_secs(30)).await;
            })
        }),
        ..Hooks::default()
    });
    let peer = rt.net.connect_inbound_stalled(&rt.worker).unwrap();
    assert!(peer.wait_closed(Duration::from_secs(3)), "linger expired: connection aborted");
    assert!(peer.was_aborted());
    let m = rt.stop();
    assert_eq!(m.close_aborted, 1);
}

/// A peer reset fails the pending send and the read side; `on_close` sees `Reset`.
#[test]
fn peer_reset_fails_send_and_read() {
    let _w = watchdog("peer_reset_fails_send_and_read");
    let out = Log::default();
    let o2 = out.clone();
    let closes = Log::default();
    let c2 = closes.clone();
    let rt = start(cfg(), move || Hooks {
        accept: Box::new(move |conn| {
            let out = o2.clone();
            Box::pin(async move {
                let _ = conn.with_data(|d| ParseResult::Consumed(d.len())).await;
                let big = pattern(10_000, 3);
                let r = conn.send(&big).await;
                out.push(format!("send: {:?}", r.map_err(|e| e.kind())));
                let r = conn.with_data(|d| ParseResult::Consumed(d.len())).await;
                out.push(format!("read: {:?}", r.map_err(|e| e.kind())));
                let r = conn.send_nowait(b"x");
                out.push(format!("later send: {:?}", r.map_err(|e| e.kind())));
            })
        }),
        on_close: Box::new(move |_, r| c2.push(r)),
        ..Hooks::default()
    });
    let peer = rt.net.connect_inbound(&rt.worker).unwrap();
    peer.stall();
    peer.send(b"go").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    peer.reset();
    assert!(peer.wait_closed(WAIT));
    assert!(wait_for(WAIT, || closes.len() == 1));
    use std::io::ErrorKind::ConnectionReset;
    assert_eq!(
        out.get(),
        [
            format!("send: {:?}", Err::<usize, _>(ConnectionReset)),
            format!("read: {:?}", Err::<usize, _>(ConnectionReset)),
            format!("later send: {:?}", Err::<(), _>(ConnectionReset)),
        ]
    );
    assert_eq!(closes.get(), [CloseReason::Reset]);
    rt.stop();
}

/// `shutdown_write` sends FIN after the queued bytes; reading goes on; later sends fail.
#[test]
fn shutdown_write_then_keep_reading() {
    let _w = watchdog("shutdown_write_then_keep_reading");
    let out = Log::default();
    let o2 = out.clone();
    let rt = start(cfg().send_pool(2, 64), move || Hooks {
        accept: Box::new(move |conn| {
            let out = o2.clone();
            Box::pin(async move {
                conn.send_nowait(b"request").unwrap();
                let big = pattern(1000, 5);
                let f = conn.send(&big);
                conn.shutdown_write();
                out.push(format!("send: {:?}", f.await.map_err(|e| e.to_string())));
                out.push(format!("after: {:?}", conn.send_nowait(b"x").err().map(|e| e.to_string())));
                let mut total = 0;
                loop {
                    match conn.with_data(|d| ParseResult::Consumed(d.len())).await {
                        Ok(0) => break,
                        Ok(n) => total += n,
                        Err(e) => {
                            out.push(format!("err {e}"));
                            break;
                        }
                    }
                }
                out.push(format!("read {total}"));
            })
        }),
        ..Hooks::default()
    });
    rt.net.set_write_chunk(Some(100));
    let peer = rt.net.connect_inbound(&rt.worker).unwrap();
    let mut expected = b"request".to_vec();
    expected.extend(pattern(1000, 5));
    assert_eq!(peer.read_to_eof(WAIT).unwrap(), expected);
    assert!(!peer.is_closed(), "half-closed only");
    peer.send(&pattern(5000, 1)).unwrap();
    peer.fin();
    assert!(peer.wait_closed(WAIT));
    assert_eq!(
        out.get(),
        [
            "send: Ok(1000)".to_string(),
            format!("after: {:?}", Some(Error::Closed.to_string())),
            "read 5000".into()
        ]
    );
    rt.stop();
}

/// A slow reader: receiving pauses at `recv_accumulator_limit` and resumes; nothing is lost.
#[test]
fn receive_backpressure_pauses_and_resumes() {
    let _w = watchdog("receive_backpressure_pauses_and_resumes");
    let got = Log::default();
    let g2 = got.clone();
    let rt = start(cfg().recv_accumulator_limit(1000), move || Hooks {
        accept: Box::new(move |conn| {
            let got = g2.clone();
            Box::pin(async move {
                sleep(Duration::from_millis(30)).await;
                loop {
                    let mut chunk = Vec::new();
                    match conn
                        .with_data(|d| {
                            let n = d.len().min(100);
                            chunk.extend_from_slice(&d[..n]);
                            ParseResult::Consumed(n)
                        })
                        .await
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            for b in chunk {
                                got.push(b);
                            }
                        }
                    }
                }
            })
        }),
        ..Hooks::default()
    });
    rt.net.set_recv_chunk(64);
    let peer = rt.net.connect_inbound(&rt.worker).unwrap();
    let data = pattern(50_000, 7);
    peer.send(&data).unwrap();
    peer.fin();
    assert!(peer.wait_closed(WAIT));
    assert!(got.get() == data, "received {} of {} bytes intact", got.len(), data.len());
    let m = rt.stop();
    assert!(m.recv_paused > 0, "receiving paused at the limit");
}

/// A connect that never completes fails with `ConnectTimeout`; its key is closed once.
#[test]
fn connect_timeout_closes_the_key() {
    let _w = watchdog("connect_timeout_closes_the_key");
    let hole: SocketAddr = "10.9.9.9:80".parse().unwrap();
    let net = MockNet::new();
    net.blackhole(hole);
    let out = Log::default();
    let o2 = out.clone();
    let rt = start_on(net, cfg(), move || Hooks {
        start: Some(Box::new(move || {
            Box::pin(async move {
                let t0 = Instant::now();
                let r = ringline_core::connect_with_timeout(hole, Duration::from_millis(30)).await;
                assert!(t0.elapsed() >= Duration::from_millis(30));
                o2.push(format!("{:?}", r.err()));
            })
        })),
        ..Hooks::default()
    });
    assert!(wait_for(WAIT, || out.len() == 1));
    assert_eq!(out.get(), [format!("{:?}", Some(Error::ConnectTimeout))]);
    assert!(wait_for(WAIT, || rt.net.closed_count() == 1 && rt.metrics().connections_open == 0));
    rt.stop();
}

/// Graceful shutdown with idle connections: reads end with `ShuttingDown`, every connection
/// closes, and the worker stops well before the deadline.
#[test]
fn graceful_shutdown_closes_idle_connections() {
    let _w = watchdog("graceful_shutdown_closes_idle_connections");
    let out = Log::default();
    let o2 = out.clone();
    let rt = start(cfg(), move || Hooks {
        accept: Box::new(move |conn| {
            let out = o2.clone();
            Box::pin(async move {
                let r = conn.with_data(|d| ParseResult::Consumed(d.len())).await;
                out.push(format!("{:?}", r.err()));
            })
        }),
        ..Hooks::default()
    });
    let peers: Vec<_> = (0..3).map(|_| rt.net.connect_inbound(&rt.worker).unwrap()).collect();
    for p in &peers {
        p.wait_key(WAIT).unwrap();
    }
    std::thread::sleep(Duration::from_millis(10));
    let t0 = Instant::now();
    let net = rt.net.clone();
    let m = rt.stop_within(Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_secs(2), "stopped without waiting for the deadline");
    assert_eq!(out.get(), vec![format!("{:?}", Some(Error::ShuttingDown)); 3]);
    for p in &peers {
        assert!(p.is_closed() && !p.was_aborted());
    }
    assert_eq!(net.closed_count(), 3);
    assert_eq!(m.connections_closed, 3);
    assert_eq!(m.close_aborted, 0);
}

/// `shutdown_write` with a peer that never reads is bounded by `close_linger` too; a half-close
/// whose FIN went out is not aborted by it, however long the connection keeps reading.
#[test]
fn close_linger_bounds_half_close_only_while_pending() {
    let _w = watchdog("close_linger_bounds_half_close_only_while_pending");
    let out = Log::default();
    let o2 = out.clone();
    let rt = start(cfg().close_linger(Duration::from_millis(40)), move || Hooks {
        accept: Box::new(move |conn| {
            let out = o2.clone();
            Box::pin(async move {
                conn.send_nowait(b"bye").unwrap();
                conn.shutdown_write();
                let mut total = 0;
                while let Ok(n) = conn.with_data(|d| ParseResult::Consumed(d.len())).await {
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                out.push(total);
            })
        }),
        ..Hooks::default()
    });
    // Drains at once: FIN goes out; the connection keeps reading well past the linger.
    let a = rt.net.connect_inbound(&rt.worker).unwrap();
    assert_eq!(a.read_to_eof(WAIT).unwrap(), b"bye");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!a.is_closed(), "a drained half-close is not aborted by the linger");
    a.send(b"late data").unwrap();
    a.fin();
    assert!(a.wait_closed(WAIT));
    assert!(!a.was_aborted());
    assert!(wait_for(WAIT, || out.get() == [9]));
    // Never drains: aborted after the linger.
    let t0 = Instant::now();
    let b = rt.net.connect_inbound_stalled(&rt.worker).unwrap();
    assert!(b.wait_closed(Duration::from_secs(3)), "pending half-close aborted at the linger");
    assert!(t0.elapsed() >= Duration::from_millis(35));
    assert!(b.was_aborted());
    assert!(b.written().is_empty());
    let m = rt.stop();
    assert_eq!(m.close_aborted, 1);
}
