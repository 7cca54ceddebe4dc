//! Baseline echo server on tokio's current-thread runtime: a task per connection, reading into a
//! 16 KiB buffer and writing every read back with `write_all`.
//!
//! `tokio_echo --addr 127.0.0.1:0` prints `tokio_echo listening on ADDR (...)`; exits on
//! SIGINT/SIGTERM. With `--stats-file PATH` it keeps `open=N` (connection tasks alive) in that
//! file, checked every 50 ms.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

/// Bytes read per `read` call on each connection.
const READ_BUF: usize = 16 * 1024;

/// Counts a live connection task in the stats counter; uncounts it when dropped.
struct Open(Arc<AtomicU64>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Echoes everything read on `stream` until EOF or an error.
async fn echo(mut stream: TcpStream, _open: Open) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The next tick of `tick`; never, without one.
async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(tick) => {
            tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = bench::parse_server_args("tokio_echo");
    let addr: SocketAddr = args.addr.parse()?;
    let mut stats = args.stats_file.map(bench::StatsFile::new);
    let open = Arc::new(AtomicU64::new(0));
    bench::raise_nofile_limit(1 << 16)?;
    // The time driver only when the stats file needs a tick, so the load profiles run the same
    // runtime as before.
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_io();
    if stats.is_some() {
        builder.enable_time();
    }
    let rt = builder.build()?;
    rt.block_on(async move {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // Same backlog as ringline_echo, so 2000 near-simultaneous connects do not overflow it.
        let listener = socket.listen(4096)?;
        println!("tokio_echo listening on {} (tokio current_thread)", listener.local_addr()?);
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut tick = stats.as_ref().map(|_| tokio::time::interval(Duration::from_millis(50)));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        stream.set_nodelay(true)?;
                        open.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(echo(stream, Open(open.clone())));
                    }
                    Err(e) => eprintln!("accept failed: {e}"),
                },
                () = next_tick(&mut tick) => {
                    if let Some(stats) = &mut stats {
                        stats.update(open.load(Ordering::Relaxed))?;
                    }
                }
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
            }
        }
        println!("shutting down");
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    println!("bye");
    Ok(())
}
