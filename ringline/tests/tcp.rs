//! TCP server path through the facade: echo integrity, half-close, reset, panics, tiny pools.
//! Runs on whichever backend the build and `RINGLINE_BACKEND` select.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;

use common::{Echo, LineEcho, Server, Watchdog, backend_label, client, config, pattern, round_trip};
use ringline::{AsyncEventHandler, ConnCtx, ParseResult};

#[test]
fn echoes_one_byte_and_one_mebibyte() {
    let _w = Watchdog::new("echoes_one_byte_and_one_mebibyte", 60);
    let server = Server::start::<Echo>(config());
    let mut c = client(server.addr);
    round_trip(&mut c, b"x");
    round_trip(&mut c, &pattern(1, 1 << 20));
    drop(c);
    server.stop();
}

#[test]
fn echoes_a_64_mib_stream_read_concurrently() {
    let _w = Watchdog::new("echoes_a_64_mib_stream_read_concurrently", 120);
    let server = Server::start::<Echo>(config());
    let c = client(server.addr);
    let mut writer = c.try_clone().unwrap();
    const TOTAL: usize = 64 << 20;
    let data = pattern(7, 1 << 20);
    let expected = data.clone();
    let w = std::thread::spawn(move || {
        for _ in 0..TOTAL / data.len() {
            writer.write_all(&data).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = c;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0usize;
    loop {
        let n = reader.read(&mut buf[..]).unwrap();
        if n == 0 {
            break;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(
                *b,
                expected[(got + i) % expected.len()],
                "byte {} differs on {}",
                got + i,
                backend_label()
            );
        }
        got += n;
    }
    w.join().unwrap();
    assert_eq!(got, TOTAL, "stream length on {}", backend_label());
    server.stop();
}

#[test]
fn thousand_concurrent_connections_each_get_their_own_bytes() {
    let _w = Watchdog::new("thousand_concurrent_connections_each_get_their_own_bytes", 90);
    let server = Server::start::<Echo>(config());
    let addr = server.addr;
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conns: Vec<_> = (0..125).map(|_| client(addr)).collect();
                for (i, c) in conns.iter_mut().enumerate() {
                    c.write_all(&pattern(t * 1000 + i as u64, 4096)).unwrap();
                }
                for (i, c) in conns.iter_mut().enumerate() {
                    let mut back = vec![0u8; 4096];
                    c.read_exact(&mut back).unwrap();
                    assert!(
                        back == pattern(t * 1000 + i as u64, 4096),
                        "payload mix-up on {}",
                        backend_label()
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    server.stop();
}

/// Reads the whole request until the peer half-closes, then answers with its length and data.
struct ReadAllThenAnswer;

impl AsyncEventHandler for ReadAllThenAnswer {
    fn create_for_worker(_worker: usize) -> Self {
        ReadAllThenAnswer
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let mut all = Vec::new();
            loop {
                match conn.recv().await {
                    Ok(d) if !d.is_empty() => all.extend_from_slice(&d),
                    _ => break,
                }
            }
            conn.send_nowait(&(all.len() as u64).to_be_bytes()).unwrap();
            let _ = conn.send(&all).await;
        }
    }
}

#[test]
fn half_closed_request_is_answered_before_close() {
    let _w = Watchdog::new("half_closed_request_is_answered_before_close", 60);
    let server = Server::start::<ReadAllThenAnswer>(config());
    let mut c = client(server.addr);
    let req = pattern(3, 300_000);
    c.write_all(&req).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).unwrap();
    assert_eq!(&resp[..8], &(req.len() as u64).to_be_bytes(), "length prefix on {}", backend_label());
    assert!(resp[8..] == req[..], "body on {}", backend_label());
    server.stop();
}

#[test]
fn peer_reset_mid_stream_leaves_other_connections_alone() {
    let _w = Watchdog::new("peer_reset_mid_stream_leaves_other_connections_alone", 60);
    let server = Server::start::<Echo>(config());
    let mut canary = client(server.addr);
    round_trip(&mut canary, b"before");
    for i in 0..20 {
        let mut c = client(server.addr);
        c.write_all(&pattern(i, 256 * 1024)).unwrap();
        common::set_linger_zero(&c);
        drop(c);
    }
    round_trip(&mut canary, &pattern(99, 100_000));
    drop(canary);
    server.stop();
}

/// Echoes with `with_data`, but panics when it sees `boom!`.
struct PanicsOnBang;

impl AsyncEventHandler for PanicsOnBang {
    fn create_for_worker(_worker: usize) -> Self {
        PanicsOnBang
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            loop {
                let mut chunk = Vec::new();
                let n = conn
                    .with_data(|d| {
                        assert!(!d.windows(5).any(|w| w == b"boom!"), "test-induced panic");
                        chunk.extend_from_slice(d);
                        ParseResult::Consumed(d.len())
                    })
                    .await;
                match n {
                    Ok(n) if n > 0 => {
                        if conn.send(&chunk).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
    }
}

#[test]
fn a_panicking_connection_task_closes_only_its_connection() {
    let _w = Watchdog::new("a_panicking_connection_task_closes_only_its_connection", 60);
    let server = Server::start::<PanicsOnBang>(config().workers(1));
    let mut good: Vec<_> = (0..5).map(|_| client(server.addr)).collect();
    for c in good.iter_mut() {
        round_trip(c, b"hello");
    }
    let mut bad = client(server.addr);
    bad.write_all(b"boom!").unwrap();
    let mut buf = [0u8; 16];
    let n = bad.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the panicking connection must be closed on {}", backend_label());
    for (i, c) in good.iter_mut().enumerate() {
        round_trip(c, &pattern(i as u64, 50_000));
    }
    let panics: u64 = server.shutdown.metrics().workers.iter().map(|w| w.task_panics).sum();
    assert_eq!(panics, 1, "task_panics on {}", backend_label());
    drop(good);
    server.stop();
}

#[test]
fn tiny_receive_pool_under_200_connections_loses_nothing() {
    let _w = Watchdog::new("tiny_receive_pool_under_200_connections_loses_nothing", 90);
    let server = Server::start::<Echo>(config().recv_buffers(4, 4096).tick_interval(None));
    let addr = server.addr;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conns: Vec<_> = (0..50).map(|_| client(addr)).collect();
                for round in 0..4u64 {
                    for (i, c) in conns.iter_mut().enumerate() {
                        c.write_all(&pattern(t * 10_000 + round * 100 + i as u64, 64 * 1024)).unwrap();
                    }
                    for (i, c) in conns.iter_mut().enumerate() {
                        let mut back = vec![0u8; 64 * 1024];
                        c.read_exact(&mut back).unwrap();
                        assert!(
                            back == pattern(t * 10_000 + round * 100 + i as u64, 64 * 1024),
                            "payload mix-up on {}",
                            backend_label()
                        );
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let m = server.shutdown.metrics();
    let exhausted: u64 = m.workers.iter().map(|w| w.recv_buffer_exhausted).sum();
    let rearmed: u64 = m.workers.iter().map(|w| w.recv_rearms_after_refill + w.recv_rearms).sum();
    let iterations: u64 = m.workers.iter().map(|w| w.loop_iterations).sum();
    eprintln!(
        "tiny pool on {}: exhausted={exhausted} rearms={rearmed} loop_iterations={iterations}",
        backend_label()
    );
    if m.workers[0].backend == Some(ringline::Backend::Uring) {
        assert!(exhausted > 0, "a 4-buffer ring must run dry under this load");
        assert!(rearmed > 0, "starved receives must be re-armed");
        // 200 connections × 256 KiB through 16 KiB of buffers: a spinning loop would run
        // millions of iterations; an event-driven one stays within a few per completion.
        let bytes: u64 = m.workers.iter().map(|w| w.bytes_received).sum();
        assert!(iterations < bytes / 64, "loop ran {iterations} iterations for {bytes} bytes: spinning?");
    }
    server.stop();
}

#[test]
fn runs_on_the_backend_the_environment_asks_for() {
    let _w = Watchdog::new("runs_on_the_backend_the_environment_asks_for", 30);
    let server = Server::start::<Echo>(config());
    let running = server.shutdown.backend().expect("backend known after launch");
    match std::env::var("RINGLINE_BACKEND").ok().as_deref() {
        Some("mio") => assert_eq!(running, ringline::Backend::Mio),
        Some("uring") => assert_eq!(running, ringline::Backend::Uring),
        _ => assert!(ringline::COMPILED_BACKENDS.contains(&running)),
    }
    assert!(server.shutdown.metrics().workers.iter().all(|w| w.backend == Some(running) && w.alive));
    server.stop();
}

#[test]
fn idle_timeout_closes_a_dribbling_peer_and_spares_an_active_one() {
    let _w = Watchdog::new("idle_timeout_closes_a_dribbling_peer", 30);
    let server = Server::start::<LineEcho>(config().idle_timeout(Some(std::time::Duration::from_secs(1))));
    let mut active = client(server.addr);
    let mut dribbler = client(server.addr);
    let started = std::time::Instant::now();
    let mut closed_at = None;
    // The active peer makes progress every 100 ms, ten times inside the idle timeout, so a loaded
    // machine delaying a few turns cannot make it look idle.
    for i in 0..25 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        round_trip(&mut active, format!("line {i}\n").as_bytes());
        if closed_at.is_none() && dribbler.write_all(b"x").is_err() {
            closed_at = Some(started.elapsed());
        }
    }
    dribbler.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 8];
    let n = dribbler.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the dribbling peer must be closed on {}", backend_label());
    let idle: u64 = server.shutdown.metrics().workers.iter().map(|w| w.idle_timeouts).sum();
    assert_eq!(idle, 1, "exactly the dribbler timed out on {}", backend_label());
    drop(active);
    server.stop();
}
