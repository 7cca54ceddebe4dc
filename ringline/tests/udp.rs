//! UDP through the facade: `bind_udp` echo integrity over 10,000 datagrams, truncation of oversize
//! datagrams, receive-queue overflow, ICMP errors on a connected `udp_bind` socket, typed
//! `try_send_to` errors, and fds back to baseline after shutdown. Runs on whichever backend the
//! build and `RINGLINE_BACKEND` select. One test at a time (one counts process-wide fds).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    Watchdog, backend_label, client_runtime, config, echo_loop, fd_count, on_worker, pattern, settle, stop,
};
use ringline::{AsyncEventHandler, ConfigBuilder, ConnCtx, Error, RinglineBuilder, UdpCtx, WorkerMetrics};

static SERIAL: Mutex<()> = Mutex::new(());

/// Echoes every datagram back to its sender, one at a time.
async fn udp_echo(udp: UdpCtx) {
    while let Ok((data, peer)) = udp.recv_from().await {
        let _ = udp.send_to(&data, peer).await;
    }
}

struct UdpEcho;

impl AsyncEventHandler for UdpEcho {
    fn create_for_worker(_worker: usize) -> Self {
        UdpEcho
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        echo_loop(conn)
    }
    fn on_udp_bind(&self, udp: UdpCtx) -> impl Future<Output = ()> + 'static {
        udp_echo(udp)
    }
}

/// A runtime with one `bind_udp` address on 127.0.0.1:0.
struct UdpServer {
    shutdown: ringline::ShutdownHandle,
    handles: Vec<std::thread::JoinHandle<Result<(), Error>>>,
    addr: SocketAddr,
}

impl UdpServer {
    fn start<H: AsyncEventHandler>(cfg: ConfigBuilder) -> UdpServer {
        let (shutdown, handles) = RinglineBuilder::new(cfg.build().expect("valid config"))
            .bind_udp("127.0.0.1:0".parse().unwrap())
            .launch::<H>()
            .unwrap_or_else(|e| panic!("launch failed on {}: {e}", backend_label()));
        let addr = shutdown.local_addrs()[0];
        UdpServer { shutdown, handles, addr }
    }

    fn metrics(&self) -> WorkerMetrics {
        let mut total = WorkerMetrics::default();
        for w in self.shutdown.metrics().workers {
            total.udp_datagrams_received += w.udp_datagrams_received;
            total.udp_datagrams_sent += w.udp_datagrams_sent;
            total.udp_dropped += w.udp_dropped;
            total.udp_truncated += w.udp_truncated;
            total.udp_send_errors += w.udp_send_errors;
        }
        total
    }

    fn stop(self) {
        stop(self.shutdown, self.handles);
    }
}

/// A std client socket connected to `server`, with a large receive buffer and a read timeout.
fn udp_client(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let size: libc::c_int = 4 << 20;
    // SAFETY: `size` is a live c_int and the length passed matches it; the socket is open.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF");
    s
}

/// Datagram sizes: zero-length, the IPv4 maximum, and a mix in between.
fn size_of_datagram(i: usize) -> usize {
    let r = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    match i % 10 {
        0 => 0,
        1 => 65_507,
        2 => (r % 65_508) as usize,
        3 => (r % 16_384) as usize,
        _ => (r % 1_500) as usize,
    }
}

#[test]
fn ten_thousand_datagrams_of_mixed_sizes_echo_intact_with_no_loss() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("ten_thousand_datagrams_of_mixed_sizes_echo_intact_with_no_loss", 240);
    let server = UdpServer::start::<UdpEcho>(config().socket_buffers(None, Some(4 << 20)));
    echo_integrity(&server, 10_000, 32);
    server.stop();
}

#[test]
fn eight_clients_at_once_each_get_their_own_datagrams_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("eight_clients_at_once_each_get_their_own_datagrams_back", 240);
    // Eight client sockets hash across both workers' SO_REUSEPORT sockets.
    let server = UdpServer::start::<UdpEcho>(config().socket_buffers(None, Some(4 << 20)));
    std::thread::scope(|s| {
        for id in 1..=8 {
            let server = &server;
            s.spawn(move || echo_client(server, 1_250, 8, id));
        }
    });
    let m = server.metrics();
    assert_eq!((m.udp_dropped, m.udp_truncated, m.udp_send_errors), (0, 0, 0), "on {}", backend_label());
    assert!(settle(5, || server.metrics().udp_datagrams_sent == 8 * 1_251), "{:?}", server.metrics());
    server.stop();
}

#[test]
fn a_tiny_udp_buffer_ring_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("a_tiny_udp_buffer_ring_loses_nothing", 240);
    // The worker naps in `on_tick`, so up to 64 datagrams wait in the socket for 16 io_uring
    // buffers between two waits; none may be lost whether the kernel ends the multishot with
    // ENOBUFS (re-armed after refill) or holds it until buffers return. On mio the setting only
    // sizes the read buffer.
    let cfg = config().workers(1).udp_recv_buffers(16, 65_536).socket_buffers(None, Some(4 << 20));
    let server = UdpServer::start::<SleepyEcho>(cfg);
    echo_integrity(&server, 3_000, 64);
    if server.shutdown.backend() == Some(ringline::Backend::Uring) {
        let w = &server.shutdown.metrics().workers[0];
        assert!(w.recv_buffer_exhausted + w.recv_rearms > 0, "the multishot never ended: {w:?}");
    }
    server.stop();
}

/// [`UdpEcho`] on a worker that sleeps 1 ms in every `on_tick` (so datagrams pile up in the
/// kernel between two waits).
struct SleepyEcho;

impl AsyncEventHandler for SleepyEcho {
    fn create_for_worker(_worker: usize) -> Self {
        SleepyEcho
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        echo_loop(conn)
    }
    fn on_udp_bind(&self, udp: UdpCtx) -> impl Future<Output = ()> + 'static {
        udp_echo(udp)
    }
    fn on_tick(&mut self, _ctx: &mut ringline::WorkerCtx<'_>) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends `n` datagrams of mixed sizes through a `bind_udp` echo server with a window of `window`
/// datagrams (and 512 KiB) and checks that every one comes back whole, in order, and that
/// nothing was dropped.
fn echo_integrity(server: &UdpServer, n: usize, window: usize) {
    echo_client(server, n, window, 0);
    let m = server.metrics();
    assert_eq!((m.udp_dropped, m.udp_truncated, m.udp_send_errors), (0, 0, 0), "on {}", backend_label());
    // Each client's closing zero-length datagram is counted too.
    assert!(settle(5, || server.metrics().udp_datagrams_sent == n as u64 + 1), "{:?}", server.metrics());
    assert_eq!(server.metrics().udp_datagrams_received, n as u64 + 1);
}

/// One client socket of [`echo_integrity`]: `n` datagrams (payloads seeded by `id`), then a
/// zero-length one.
fn echo_client(server: &UdpServer, n: usize, window: usize, id: u64) {
    let c = udp_client(server.addr);
    let total = n;
    let seed = |i: usize| id * 1_000_000 + i as u64;
    // A bounded window keeps every socket buffer on the path far from overflowing.
    const WINDOW_BYTES: usize = 512 * 1024;
    let (mut next, mut done, mut in_flight_bytes) = (0usize, 0usize, 0usize);
    let mut buf = vec![0u8; 65_536];
    while done < total {
        while next < total
            && next - done < window
            && (next == done || in_flight_bytes + size_of_datagram(next) <= WINDOW_BYTES)
        {
            let d = pattern(seed(next), size_of_datagram(next));
            c.send(&d).unwrap();
            in_flight_bytes += d.len();
            next += 1;
        }
        let n = c.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "datagram {done} never came back on {} (lost?): {e}; {:?}",
                backend_label(),
                server.metrics()
            )
        });
        let want = pattern(seed(done), size_of_datagram(done));
        assert_eq!(n, want.len(), "datagram {done}: length on {}", backend_label());
        assert!(buf[..n] == want[..], "datagram {done}: content on {}", backend_label());
        in_flight_bytes -= n;
        done += 1;
    }
    // A zero-length datagram after all that still comes back.
    c.send(&[]).unwrap();
    assert_eq!(c.recv(&mut buf).expect("empty datagram echoed"), 0);
}

#[test]
fn oversize_datagrams_are_counted_as_truncated_and_never_delivered() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("oversize_datagrams_are_counted_as_truncated_and_never_delivered", 60);
    let server = UdpServer::start::<UdpEcho>(config().workers(1).udp_recv_buffers(16, 2048));
    let c = udp_client(server.addr);
    for i in 0..5 {
        c.send(&pattern(i, 4000)).unwrap();
    }
    let small = pattern(99, 2048);
    c.send(&small).unwrap();
    let mut buf = vec![0u8; 65_536];
    let n = c.recv(&mut buf).expect("the datagram that fits comes back");
    assert!(buf[..n] == small[..], "only the fitting datagram is echoed, on {}", backend_label());
    assert!(
        settle(5, || server.metrics().udp_truncated == 5),
        "{:?} on {}",
        server.metrics(),
        backend_label()
    );
    assert_eq!(server.metrics().udp_datagrams_received, 1);
    c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(c.recv(&mut buf).is_err(), "no truncated datagram was delivered");
    server.stop();
}

static RELEASE: AtomicBool = AtomicBool::new(false);

/// Echoes only after `RELEASE`, so datagrams pile up in the socket's queue first.
struct SlowEcho;

impl AsyncEventHandler for SlowEcho {
    fn create_for_worker(_worker: usize) -> Self {
        SlowEcho
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        echo_loop(conn)
    }
    fn on_udp_bind(&self, udp: UdpCtx) -> impl Future<Output = ()> + 'static {
        async move {
            while !RELEASE.load(Ordering::Acquire) {
                ringline::sleep(Duration::from_millis(5)).await;
                if ringline::shutdown_requested() {
                    return;
                }
            }
            udp_echo(udp).await;
        }
    }
}

#[test]
fn a_full_receive_queue_drops_new_datagrams_and_counts_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("a_full_receive_queue_drops_new_datagrams_and_counts_them", 60);
    RELEASE.store(false, Ordering::Release);
    let server = UdpServer::start::<SlowEcho>(config().workers(1).udp_recv_queue(8));
    let c = udp_client(server.addr);
    for i in 0..50u64 {
        c.send(&pattern(i, 100)).unwrap();
    }
    assert!(
        settle(10, || {
            let m = server.metrics();
            m.udp_datagrams_received + m.udp_dropped == 50
        }),
        "{:?} on {}",
        server.metrics(),
        backend_label()
    );
    let m = server.metrics();
    assert_eq!((m.udp_datagrams_received, m.udp_dropped), (8, 42), "on {}", backend_label());
    RELEASE.store(true, Ordering::Release);
    let mut buf = vec![0u8; 1024];
    for i in 0..8u64 {
        let n = c.recv(&mut buf).expect("queued datagram echoed");
        assert!(buf[..n] == pattern(i, 100)[..], "the oldest 8 were kept, in order");
    }
    server.stop();
}

#[test]
fn icmp_refused_on_a_connected_socket_surfaces_once_and_the_socket_keeps_working() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w =
        Watchdog::new("icmp_refused_on_a_connected_socket_surfaces_once_and_the_socket_keeps_working", 60);
    let server = UdpServer::start::<UdpEcho>(config().workers(1));
    let echo = server.addr;
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let (shutdown, handles) = client_runtime(config());
    let (refused, reply) = on_worker(&shutdown, move || async move {
        let u = ringline::udp_bind("127.0.0.1:0".parse().unwrap()).expect("udp_bind");
        u.connect(closed).expect("connect");
        let sent = u.send(b"anyone?").await;
        let kind = |r: Result<_, Error>| match r {
            Err(Error::Io(e)) => Some(e.kind()),
            _ => None,
        };
        let refused = match kind(sent.map(|_| ())) {
            Some(k) => Some(k),
            None => match ringline::timeout(Duration::from_secs(5), u.recv()).await {
                Ok(r) => kind(r.map(|_| ())),
                Err(_) => None,
            },
        };
        u.connect(echo).expect("reconnect");
        let sent = u.send(b"hello").await;
        let back = ringline::timeout(Duration::from_secs(5), u.recv()).await;
        (refused, (sent.ok(), back.ok().and_then(|r| r.ok())))
    });
    assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused), "on {}", backend_label());
    assert_eq!(reply, (Some(5), Some((b"hello".to_vec(), echo))), "on {}", backend_label());
    stop(shutdown, handles);
    server.stop();
}

#[test]
fn try_send_to_reports_typed_capacity_errors() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("try_send_to_reports_typed_capacity_errors", 60);
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let to = sink.local_addr().unwrap();
    let (shutdown, handles) = client_runtime(config().udp_sends_in_flight(2).send_pool(1, 64));
    let results = on_worker(&shutdown, move || async move {
        let u = ringline::udp_bind("127.0.0.1:0".parse().unwrap()).expect("udp_bind");
        let show = |r: Result<(), Error>| format!("{r:?}");
        let mut out = vec![
            show(u.try_send_to(b"one", to)),
            show(u.try_send_to(b"two", to)),
            show(u.try_send_to(&[7u8; 100], to)),
            show(u.try_send_to(b"x", to)),
        ];
        ringline::sleep(Duration::from_millis(100)).await;
        out.push(format!("{:?}", u.send_to(b"three", to).await));
        out
    });
    assert_eq!(
        results,
        vec![
            "Ok(())".to_string(),
            format!("{:?}", Err::<(), _>(Error::SendPoolExhausted)),
            "Ok(())".into(),
            format!("{:?}", Err::<(), _>(Error::SendQueueFull)),
            "Ok(5)".into(),
        ],
        "on {}",
        backend_label()
    );
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    for _ in 0..3 {
        let n = sink.recv(&mut buf).expect("datagram");
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got, vec![b"one".to_vec(), vec![7u8; 100], b"three".to_vec()]);
    let pool_in_use = || shutdown.metrics().workers[0].send_pool_in_use;
    assert!(settle(5, || pool_in_use() == 0), "pool slots returned: {}", pool_in_use());
    stop(shutdown, handles);
}

#[test]
fn bind_udp_sockets_share_one_port_and_fds_return_to_baseline() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("bind_udp_sockets_share_one_port_and_fds_return_to_baseline", 60);
    // Warm-up: the first launch of the process sets up lazily created state (probe, pools).
    UdpServer::start::<UdpEcho>(config()).stop();
    let baseline = fd_count();
    let (shutdown, handles) = RinglineBuilder::new(config().workers(2).build().unwrap())
        .bind_udp("127.0.0.1:0".parse().unwrap())
        .bind_udp("127.0.0.1:0".parse().unwrap())
        .launch::<UdpEcho>()
        .unwrap_or_else(|e| panic!("launch failed on {}: {e}", backend_label()));
    let addrs = shutdown.local_addrs();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0].port(), 0);
    assert_ne!(addrs[0], addrs[1]);
    // Two workers × two addresses: both sockets of a port are in one SO_REUSEPORT group, so a
    // plain bind of that port fails while they live.
    assert!(UdpSocket::bind(addrs[0]).is_err(), "the port is held");
    // Many client sockets hash across both workers' sockets; every one is echoed.
    for (i, &addr) in addrs.iter().enumerate() {
        for k in 0..16u64 {
            let c = udp_client(addr);
            let d = pattern(i as u64 * 100 + k, 64);
            c.send(&d).unwrap();
            let mut buf = [0u8; 128];
            let n =
                c.recv(&mut buf).unwrap_or_else(|e| panic!("echo from {addr} on {}: {e}", backend_label()));
            assert!(buf[..n] == d[..]);
        }
    }
    let udp_bound = on_worker(&shutdown, || async {
        // Dropping the `OwnedUdp` closes the socket.
        ringline::udp_bind("127.0.0.1:0".parse().unwrap()).map(|u| u.local_addr())
    });
    assert!(udp_bound.is_ok());
    let per_worker: Vec<u64> = shutdown.metrics().workers.iter().map(|w| w.udp_datagrams_received).collect();
    assert_eq!(per_worker.iter().sum::<u64>(), 32, "{per_worker:?}");
    stop(shutdown, handles);
    assert!(
        settle(5, || fd_count() <= baseline),
        "fds {} vs baseline {baseline} on {}",
        fd_count(),
        backend_label()
    );
    assert!(UdpSocket::bind(addrs[0]).is_ok(), "the port is free again");
}

#[test]
fn a_bind_udp_address_that_cannot_be_bound_rolls_the_launch_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("a_bind_udp_address_that_cannot_be_bound_rolls_the_launch_back", 60);
    UdpServer::start::<UdpEcho>(config()).stop();
    let baseline = fd_count();
    let threads = common::thread_count();
    // A port held by a socket without SO_REUSEPORT: every worker's bind fails.
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap();
    let r = RinglineBuilder::new(config().workers(2).build().unwrap())
        .bind_udp("127.0.0.1:0".parse().unwrap())
        .bind_udp(held)
        .launch::<UdpEcho>();
    match r {
        Err(Error::Bind { addr, .. }) => assert_eq!(addr, held),
        Err(e) => panic!("expected Bind for {held}, got {e} on {}", backend_label()),
        Ok(_) => panic!("launch succeeded on a held port on {}", backend_label()),
    }
    drop(holder);
    assert!(settle(5, || fd_count() <= baseline), "fds {} vs baseline {baseline}", fd_count());
    assert!(settle(5, || common::thread_count() <= threads), "ringline threads left running");
}

// ---- 5. udp_datagram_integrity ---------------------------------------------------------------

/// `RcvbufErrors` of `/proc/net/snmp` (system-wide UDP receive-buffer drops).
fn kernel_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors");
    at.and_then(|i| values.split_whitespace().nth(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Payload of datagram `seq` of client `id`: its first bytes name it, so a merged or foreign
/// datagram cannot pass for it.
fn tagged_datagram(id: u64, seq: usize, len: usize) -> Vec<u8> {
    let mut d = pattern(id << 32 | seq as u64, len);
    let tag = (id << 32 | seq as u64).to_le_bytes();
    let n = len.min(8);
    d[..n].copy_from_slice(&tag[..n]);
    d
}

/// Sends `sizes.len()` datagrams in back-to-back bursts of up to `window` (and 512 KiB), and
/// checks that each echo is exactly the datagram sent, in order (never merged or split).
fn burst_client(addr: SocketAddr, id: u64, sizes: &[usize], window: usize) {
    const WINDOW_BYTES: usize = 512 * 1024;
    let c = udp_client(addr);
    let (mut next, mut done, mut bytes) = (0usize, 0usize, 0usize);
    let mut buf = vec![0u8; 65_536];
    while done < sizes.len() {
        // A burst: everything the window allows, back to back.
        while next < sizes.len()
            && next - done < window
            && (next == done || bytes + sizes[next] <= WINDOW_BYTES)
        {
            c.send(&tagged_datagram(id, next, sizes[next])).unwrap();
            bytes += sizes[next];
            next += 1;
        }
        let n = c.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "client {id}: datagram {done} of {} lost on {} ({e}); kernel RcvbufErrors {}",
                sizes.len(),
                backend_label(),
                kernel_rcvbuf_errors()
            )
        });
        let want = tagged_datagram(id, done, sizes[done]);
        assert_eq!(n, want.len(), "client {id}, datagram {done}: length on {}", backend_label());
        assert!(buf[..n] == want[..], "client {id}, datagram {done}: content on {}", backend_label());
        bytes -= n;
        done += 1;
    }
}

#[test]
fn udp_datagram_integrity() {
    use common::framed::{Rng, scaled, seed};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("udp_datagram_integrity", 240);
    let seed = seed("udp_datagram_integrity");
    let kernel_drops = kernel_rcvbuf_errors();

    // 1. Eight sockets at once, seeded sizes 0 ..= 65,000 (zero-length and maximal ones included).
    let server = UdpServer::start::<UdpEcho>(config().socket_buffers(None, Some(4 << 20)));
    let per_socket = scaled(2_500);
    std::thread::scope(|s| {
        for id in 1..=8u64 {
            let mut rng = Rng::new(seed ^ id);
            let sizes: Vec<usize> = (0..per_socket)
                .map(|_| match rng.range(0, 9) {
                    0 => 0,
                    1 => 65_000,
                    2 => rng.range(0, 65_000),
                    3 => rng.range(0, 16_384),
                    _ => rng.range(0, 1_500),
                })
                .collect();
            let addr = server.addr;
            s.spawn(move || burst_client(addr, id, &sizes, 32));
        }
    });
    let m = server.metrics();
    assert_eq!((m.udp_dropped, m.udp_truncated, m.udp_send_errors), (0, 0, 0), "on {}", backend_label());
    assert_eq!(m.udp_datagrams_received, 8 * per_socket as u64, "on {}", backend_label());
    server.stop();

    // 2. A 16-buffer ring: 10,000 zero-length datagrams in bursts, then a normal datagram still
    //    arrives. On io_uring a buffer not returned for any of them would stall the ring within
    //    16 datagrams, so getting through checks that every buffer came back.
    let cfg = config().workers(1).udp_recv_buffers(16, 65_536).socket_buffers(None, Some(4 << 20));
    let server = UdpServer::start::<UdpEcho>(cfg);
    let zeros = scaled(10_000);
    let mut sizes = vec![0usize; zeros];
    sizes.push(1_000);
    burst_client(server.addr, 9, &sizes, 64);
    let m = server.metrics();
    assert_eq!((m.udp_dropped, m.udp_truncated), (0, 0), "on {}", backend_label());
    assert_eq!(m.udp_datagrams_received, zeros as u64 + 1, "on {}", backend_label());
    let w = &server.shutdown.metrics().workers[0];
    assert_eq!(w.recv_buffers_free, w.recv_buffers_total, "receive buffers not back on {}", backend_label());
    server.stop();
    eprintln!(
        "udp_datagram_integrity on {}: kernel RcvbufErrors grew by {} (system-wide)",
        backend_label(),
        kernel_rcvbuf_errors().saturating_sub(kernel_drops)
    );
}
