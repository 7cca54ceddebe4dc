//! Baseline echo server on tokio's current-thread runtime: a task per connection, reading into a
//! 16 KiB buffer and writing every read back with `write_all`.
//!
//! `tokio_echo --addr 127.0.0.1:0` prints `tokio_echo listening on ADDR (...)`; exits on
//! SIGINT/SIGTERM.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

/// Bytes read per `read` call on each connection.
const READ_BUF: usize = 16 * 1024;

/// Echoes everything read on `stream` until EOF or an error.
async fn echo(mut stream: TcpStream) {
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = bench::parse_server_args("tokio_echo").parse()?;
    bench::raise_nofile_limit(1 << 16)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    rt.block_on(async move {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // Same backlog as ringline_echo, so 2000 near-simultaneous connects do not overflow it.
        let listener = socket.listen(4096)?;
        println!("tokio_echo listening on {} (tokio current_thread)", listener.local_addr()?);
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        stream.set_nodelay(true)?;
                        tokio::spawn(echo(stream));
                    }
                    Err(e) => eprintln!("accept failed: {e}"),
                },
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
