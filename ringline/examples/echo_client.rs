//! An independent black-box client for `echo_server`: plain std threads and sockets, no ringline.
//!
//! `cargo run --release -p ringline --example echo_client -- --addr 127.0.0.1:7878 [--quick]`
//! runs every check and exits non-zero on the first failure:
//! 5,000 concurrent connections with unique payloads; a 64 MiB stream read concurrently; a
//! half-closed request; peers resetting mid-stream while a canary keeps echoing; a slow reader;
//! 10,000 connect/close cycles.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

type Check = Result<(), String>;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn pattern(id: u64, len: usize) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn echo_once(s: &mut TcpStream, data: &[u8]) -> Check {
    s.write_all(data).map_err(|e| e.to_string())?;
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).map_err(|e| e.to_string())?;
    if back == data { Ok(()) } else { Err("echo mismatch".into()) }
}

fn many_connections(addr: SocketAddr, n: usize) -> Check {
    let per = n.div_ceil(8);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            std::thread::spawn(move || -> Check {
                let mut conns: Vec<_> = (0..per).map(|_| connect(addr)).collect();
                for (i, c) in conns.iter_mut().enumerate() {
                    c.write_all(&pattern(t << 32 | i as u64, 512)).map_err(|e| e.to_string())?;
                }
                for (i, c) in conns.iter_mut().enumerate() {
                    let mut back = vec![0u8; 512];
                    c.read_exact(&mut back).map_err(|e| e.to_string())?;
                    if back != pattern(t << 32 | i as u64, 512) {
                        return Err(format!("connection {t}/{i}: payload mix-up"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    threads.into_iter().try_for_each(|t| t.join().map_err(|_| "thread panicked".to_string())?)
}

fn big_stream(addr: SocketAddr, mib: usize) -> Check {
    let c = connect(addr);
    let mut w = c.try_clone().unwrap();
    let chunk = pattern(42, 1 << 20);
    let expected = chunk.clone();
    let writer = std::thread::spawn(move || {
        for _ in 0..mib {
            w.write_all(&chunk).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let (mut r, mut got, mut buf) = (c, 0usize, vec![0u8; 1 << 16]);
    loop {
        let n = r.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().enumerate().any(|(i, b)| *b != expected[(got + i) % expected.len()]) {
            return Err(format!("stream byte mismatch near offset {got}"));
        }
        got += n;
    }
    writer.join().map_err(|_| "writer panicked")?;
    if got == mib << 20 { Ok(()) } else { Err(format!("stream length {got}, want {}", mib << 20)) }
}

fn half_close(addr: SocketAddr) -> Check {
    let mut c = connect(addr);
    let req = pattern(9, 200_000);
    c.write_all(&req).map_err(|e| e.to_string())?;
    c.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    c.read_to_end(&mut all).map_err(|e| e.to_string())?;
    if all == req { Ok(()) } else { Err(format!("half-close: got {} of {} bytes", all.len(), req.len())) }
}

fn resets(addr: SocketAddr) -> Check {
    let mut canary = connect(addr);
    echo_once(&mut canary, b"canary")?;
    for i in 0..50 {
        let mut c = connect(addr);
        let _ = c.write_all(&pattern(i, 128 * 1024));
        let _ = socket_linger_zero(&c);
        drop(c);
        if i % 10 == 0 {
            echo_once(&mut canary, &pattern(1000 + i, 4096))?;
        }
    }
    echo_once(&mut canary, b"still here")
}

fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `l` outlives the call and its size is passed; `s` keeps the fd open.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn slow_reader(addr: SocketAddr) -> Check {
    let c = connect(addr);
    let mut w = c.try_clone().unwrap();
    let data = pattern(5, 8 << 20);
    let expected = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let (mut r, mut all, mut buf) = (c, Vec::new(), [0u8; 4096]);
    loop {
        let n = r.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if all.len() % (256 * 1024) < 4096 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    writer.join().map_err(|_| "writer panicked")?;
    if all == expected {
        Ok(())
    } else {
        Err(format!("slow reader got {} of {} bytes", all.len(), expected.len()))
    }
}

fn cycles(addr: SocketAddr, n: usize) -> Check {
    for i in 0..n {
        let mut c = connect(addr);
        if i % 100 == 0 {
            echo_once(&mut c, b"cycle")?;
        }
    }
    Ok(())
}

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:7878".parse().unwrap();
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().and_then(|a| a.parse().ok()).expect("--addr HOST:PORT"),
            "--quick" => quick = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let (conns, mib, n_cycles) = if quick { (500, 8, 1000) } else { (5000, 64, 10_000) };
    let checks: Vec<(String, Box<dyn FnOnce() -> Check>)> = vec![
        (format!("{conns} concurrent connections"), Box::new(move || many_connections(addr, conns))),
        (format!("{mib} MiB stream"), Box::new(move || big_stream(addr, mib))),
        ("half-close".into(), Box::new(move || half_close(addr))),
        ("peer resets beside a canary".into(), Box::new(move || resets(addr))),
        ("slow reader".into(), Box::new(move || slow_reader(addr))),
        (format!("{n_cycles} connect/close cycles"), Box::new(move || cycles(addr, n_cycles))),
    ];
    for (name, check) in checks {
        let start = Instant::now();
        match check() {
            Ok(()) => println!("ok    {name} ({:.2?})", start.elapsed()),
            Err(e) => {
                println!("FAIL  {name}: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("all checks passed against {addr}");
}
