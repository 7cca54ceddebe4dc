//! The `futures-io` adapter (`ConnCtx::stream()` / `ConnStream`, API 6.7) against std clients:
//! echo through `futures_util::io::copy`, interleaving with native calls (R2), `poll_close` as a
//! half-close, and writes waiting for admission under a tiny `send_queue_limit`.
//! Runs on whichever backend the build and `RINGLINE_BACKEND` select.
#![cfg(feature = "futures-io")]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Server, Watchdog, backend_label, client, config, pattern};
use futures_util::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use ringline::{AsyncEventHandler, ConnCtx, ParseResult};

/// Writes `data` from a second thread, half-closes, reads everything back and checks it.
fn echo_stream(s: TcpStream, data: Vec<u8>) {
    let mut writer = s.try_clone().unwrap();
    let expected = data.clone();
    let w = std::thread::spawn(move || {
        for chunk in data.chunks(256 * 1024) {
            writer.write_all(chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = s;
    let mut back = Vec::with_capacity(expected.len());
    reader.read_to_end(&mut back).unwrap_or_else(|e| panic!("read back on {}: {e}", backend_label()));
    w.join().unwrap();
    assert_eq!(back.len(), expected.len(), "echoed length on {}", backend_label());
    assert!(back == expected, "echo mismatch on {}", backend_label());
}

/// Echo through `futures_util::io::copy` from one stream into another of the same connection,
/// then `close()` (FIN); the task returning closes the connection.
struct CopyEcho;

impl AsyncEventHandler for CopyEcho {
    fn create_for_worker(_worker: usize) -> Self {
        CopyEcho
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let reader = conn.stream();
            let mut writer = conn.stream();
            if futures_util::io::copy(reader, &mut writer).await.is_ok() {
                let _ = writer.close().await;
            }
        }
    }
}

/// Echo through `futures_util::io::copy_buf`, driving the stream's own `AsyncBufRead`.
struct CopyBufEcho;

impl AsyncEventHandler for CopyBufEcho {
    fn create_for_worker(_worker: usize) -> Self {
        CopyBufEcho
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let reader = conn.stream();
            let mut writer = conn.stream();
            if futures_util::io::copy_buf(reader, &mut writer).await.is_ok() {
                let _ = writer.close().await;
            }
        }
    }
}

/// Echo with one stream: `read` into a buffer, `write_all` it back.
struct ReadWriteEcho;

impl AsyncEventHandler for ReadWriteEcho {
    fn create_for_worker(_worker: usize) -> Self {
        ReadWriteEcho
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let mut s = conn.stream();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = s.close().await;
        }
    }
}

/// Echoes 1 byte, 1 MiB and 16 MiB (each on its own connection, client half-close); returns the
/// running server.
fn echo_sizes<H: AsyncEventHandler>(cfg: ringline::ConfigBuilder) -> Server {
    let server = Server::start::<H>(cfg);
    echo_stream(client(server.addr), b"x".to_vec());
    echo_stream(client(server.addr), pattern(1, 1 << 20));
    echo_stream(client(server.addr), pattern(2, 16 << 20));
    server
}

fn run_echo_sizes<H: AsyncEventHandler>(cfg: ringline::ConfigBuilder) {
    echo_sizes::<H>(cfg).stop();
}

/// `send_queue_full` summed over the server's workers (only stream writes happen in these tests,
/// so a non-zero count means stream writes waited for admission).
fn queue_full_waits(server: &Server) -> u64 {
    server.shutdown.metrics().workers.iter().map(|w| w.send_queue_full).sum()
}

#[test]
fn copy_echoes_one_byte_one_mib_and_16_mib() {
    let _w = Watchdog::new("copy_echoes_one_byte_one_mib_and_16_mib", 120);
    run_echo_sizes::<CopyEcho>(config());
}

#[test]
fn copy_buf_echoes_one_byte_one_mib_and_16_mib() {
    let _w = Watchdog::new("copy_buf_echoes_one_byte_one_mib_and_16_mib", 120);
    run_echo_sizes::<CopyBufEcho>(config());
}

#[test]
fn read_write_all_echoes_one_byte_one_mib_and_16_mib() {
    let _w = Watchdog::new("read_write_all_echoes_one_byte_one_mib_and_16_mib", 120);
    run_echo_sizes::<ReadWriteEcho>(config());
}

/// Tiny send queue: every write past 1 KiB queued must wait for admission.
#[test]
fn writes_wait_for_admission_under_a_tiny_send_queue_limit() {
    let _w = Watchdog::new("writes_wait_for_admission_under_a_tiny_send_queue_limit", 120);
    for server in [
        echo_sizes::<ReadWriteEcho>(config().send_queue_limit(1024)),
        echo_sizes::<CopyEcho>(config().send_queue_limit(1024).send_pool(16, 1024)),
    ] {
        assert!(
            common::settle(5, || queue_full_waits(&server) > 0),
            "no write waited for admission on {}",
            backend_label()
        );
        server.stop();
    }
}

const FRAME: usize = 16;
const FRAMES: u32 = 2000;

/// Reads fixed-size frames, alternating `read_exact` on a stream and a native `with_data`, and
/// answers each with a native `send_nowait` header, the frame through the stream, and a native
/// trailer: the reply bytes must come out in call order.
struct Interleave;

impl AsyncEventHandler for Interleave {
    fn create_for_worker(_worker: usize) -> Self {
        Interleave
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let mut s = conn.stream();
            let mut frame = [0u8; FRAME];
            for i in 0..FRAMES {
                if i % 2 == 0 {
                    if s.read_exact(&mut frame).await.is_err() {
                        return;
                    }
                } else {
                    let r = conn
                        .with_data(|d| {
                            if d.len() < FRAME {
                                return ParseResult::NeedAtLeast(FRAME);
                            }
                            frame.copy_from_slice(&d[..FRAME]);
                            ParseResult::Consumed(FRAME)
                        })
                        .await;
                    if !matches!(r, Ok(FRAME)) {
                        return;
                    }
                }
                // `send_nowait` fails rather than waits: on a full queue, drain it and retry.
                loop {
                    match conn.send_nowait(b"<") {
                        Ok(()) => break,
                        Err(ringline::Error::SendQueueFull | ringline::Error::SendPoolExhausted) => {
                            if conn.flush().await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                if s.write_all(&frame).await.is_err() {
                    return;
                }
                if conn.send(b">").await.is_err() {
                    return;
                }
            }
            let _ = s.close().await;
        }
    }
}

#[test]
fn read_exact_and_native_calls_interleave_in_order() {
    let _w = Watchdog::new("read_exact_and_native_calls_interleave_in_order", 60);
    let server = Server::start::<Interleave>(config());
    let c = client(server.addr);
    let data = pattern(3, FRAME * FRAMES as usize);
    let mut expected = Vec::new();
    for f in data.chunks(FRAME) {
        expected.push(b'<');
        expected.extend_from_slice(f);
        expected.push(b'>');
    }
    let mut writer = c.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        // Odd chunk sizes so frames straddle receives.
        for chunk in data.chunks(FRAME * 7 + 3) {
            writer.write_all(chunk).unwrap();
        }
    });
    let mut reader = c;
    let mut back = Vec::new();
    reader.read_to_end(&mut back).unwrap_or_else(|e| panic!("read on {}: {e}", backend_label()));
    w.join().unwrap();
    assert_eq!(back.len(), expected.len(), "reply length on {}", backend_label());
    assert!(back == expected, "reply bytes out of order on {}", backend_label());
    server.stop();
}

static CLOSE_CHECKS: AtomicUsize = AtomicUsize::new(0);
const CLOSE_BODY: usize = 4 << 20;

/// Writes 4 MiB in odd-sized pieces, then `close()` (half-close). The task stays alive: it reads
/// the client's reply after the FIN, checks that a later write fails, then answers nothing more.
struct CloseSendsFin;

impl AsyncEventHandler for CloseSendsFin {
    fn create_for_worker(_worker: usize) -> Self {
        CloseSendsFin
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let mut s = conn.stream();
            let body = pattern(4, CLOSE_BODY);
            for piece in body.chunks(10_007) {
                s.write_all(piece).await.expect("write before close");
            }
            s.close().await.expect("close");
            assert_eq!(conn.queued_len(), 0, "close resolved before the queue drained");
            let e = s.write_all(b"late").await.expect_err("write after close");
            assert_eq!(e.kind(), ErrorKind::NotConnected);
            // Reading goes on after the half-close.
            let mut line = String::new();
            s.read_line(&mut line).await.expect("read after close");
            assert_eq!(line, "thanks\n");
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.expect("read to end");
            assert!(rest.is_empty());
            CLOSE_CHECKS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn close_sends_fin_after_every_written_byte() {
    let _w = Watchdog::new("close_sends_fin_after_every_written_byte", 60);
    let server = Server::start::<CloseSendsFin>(config());
    let mut c = client(server.addr);
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap_or_else(|e| panic!("read on {}: {e}", backend_label()));
    assert_eq!(got.len(), CLOSE_BODY, "bytes before FIN on {}", backend_label());
    assert!(got == pattern(4, CLOSE_BODY), "body mismatch on {}", backend_label());
    // The server only half-closed: it still reads.
    c.write_all(b"thanks\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert!(
        common::settle(10, || CLOSE_CHECKS.load(Ordering::SeqCst) == 1),
        "server checks after close did not finish on {}",
        backend_label()
    );
    server.stop();
}

/// A line protocol on `AsyncBufRead::read_line`; after the line `native` the stream is dropped
/// with bytes it detached but did not consume, and native `recv` must still see them, in order.
struct LinesThenNative;

impl AsyncEventHandler for LinesThenNative {
    fn create_for_worker(_worker: usize) -> Self {
        LinesThenNative
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let mut s = conn.stream();
            loop {
                let mut line = String::new();
                match s.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == "native\n" {
                    break;
                }
                let reply = format!("{}:{}", line.len(), line);
                if s.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
            drop(s);
            // Everything after `native\n` goes back through the native API.
            loop {
                let data = match conn.recv().await {
                    Ok(d) if !d.is_empty() => d,
                    _ => break,
                };
                if conn.send_owned(data).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn buf_read_lines_then_dropped_stream_hands_bytes_back() {
    let _w = Watchdog::new("buf_read_lines_then_dropped_stream_hands_bytes_back", 60);
    let server = Server::start::<LinesThenNative>(config());
    let mut c = client(server.addr);
    let tail = pattern(5, 100_000);
    // One write: the lines and the tail arrive together, so the stream holds part of the tail.
    let mut req = b"a\nbcd\nnative\n".to_vec();
    req.extend_from_slice(&tail);
    c.write_all(&req).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap_or_else(|e| panic!("read on {}: {e}", backend_label()));
    let mut expected = b"2:a\n4:bcd\n".to_vec();
    expected.extend_from_slice(&tail);
    assert_eq!(got.len(), expected.len(), "reply length on {}", backend_label());
    assert!(got == expected, "reply mismatch on {}", backend_label());
    server.stop();
}

const TAGGED: usize = 64;
const PER_WRITER: u32 = 3000;

/// Two writers on one connection under a tiny queue: a stream (`write_all`) and a spawned task
/// using native `send`. Both wait for admission; each message must arrive whole and in its
/// writer's order, and neither writer may hang.
struct TwoWriters;

fn tagged(tag: u8, seq: u32) -> [u8; TAGGED] {
    let mut m = [tag; TAGGED];
    m[1..5].copy_from_slice(&seq.to_be_bytes());
    m
}

impl AsyncEventHandler for TwoWriters {
    fn create_for_worker(_worker: usize) -> Self {
        TwoWriters
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let native = ringline::spawn(async move {
                for seq in 0..PER_WRITER {
                    conn.send(&tagged(b'N', seq)).await.expect("native send");
                }
            })
            .expect("spawn");
            let mut s = conn.stream();
            for seq in 0..PER_WRITER {
                s.write_all(&tagged(b'S', seq)).await.expect("stream write");
                if seq % 97 == 0 {
                    ringline::yield_now().await;
                }
            }
            native.await.expect("native task");
            s.flush().await.expect("flush");
        }
    }
}

#[test]
fn stream_and_native_waiting_sends_share_admission() {
    let _w = Watchdog::new("stream_and_native_waiting_sends_share_admission", 60);
    let server = Server::start::<TwoWriters>(config().send_queue_limit(1024));
    let mut c = client(server.addr);
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap_or_else(|e| panic!("read on {}: {e}", backend_label()));
    assert_eq!(got.len(), 2 * PER_WRITER as usize * TAGGED, "total on {}", backend_label());
    let (mut next_s, mut next_n) = (0u32, 0u32);
    for m in got.chunks(TAGGED) {
        let seq = u32::from_be_bytes(m[1..5].try_into().unwrap());
        let next = match m[0] {
            b'S' => &mut next_s,
            b'N' => &mut next_n,
            t => panic!("torn message (tag {t}) on {}", backend_label()),
        };
        assert_eq!(m, tagged(m[0], seq), "torn message on {}", backend_label());
        assert_eq!(seq, *next, "writer order on {}", backend_label());
        *next += 1;
    }
    server.stop();
}

static ABANDON_CHECKS: AtomicUsize = AtomicUsize::new(0);

/// Fills the queue past the limit, then starts a stream write that must wait and drops it (the
/// loser of a `select`). The stream's admission place must not block later native sends once the
/// stream flushed (first round) or was dropped (second round).
struct AbandonedWrite;

impl AsyncEventHandler for AbandonedWrite {
    fn create_for_worker(_worker: usize) -> Self {
        AbandonedWrite
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            for round in 0..2u8 {
                let mut s = conn.stream();
                conn.send_nowait(&[b'a' + round; 2048]).expect("fill the queue");
                let lost = ringline::select(s.write_all(b"never"), std::future::ready(())).await;
                assert!(matches!(lost, ringline::Either::Right(())), "write was admitted over the limit");
                if round == 0 {
                    s.flush().await.expect("flush");
                } else {
                    drop(s);
                }
                conn.send(&[b'A' + round; 10]).await.expect("native send after the abandoned write");
            }
            ABANDON_CHECKS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn abandoned_write_gives_its_place_up_on_flush_and_drop() {
    let _w = Watchdog::new("abandoned_write_gives_its_place_up_on_flush_and_drop", 60);
    let server = Server::start::<AbandonedWrite>(config().send_queue_limit(1024));
    let mut c = client(server.addr);
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap_or_else(|e| panic!("read on {}: {e}", backend_label()));
    let mut expected = vec![b'a'; 2048];
    expected.extend_from_slice(&[b'A'; 10]);
    expected.extend_from_slice(&[b'b'; 2048]);
    expected.extend_from_slice(&[b'B'; 10]);
    assert!(got == expected, "bytes on {}: {} received", backend_label(), got.len());
    assert_eq!(ABANDON_CHECKS.load(Ordering::SeqCst), 1, "server checks on {}", backend_label());
    server.stop();
}
