//! Core UDP logic over `MockDriver`: receive queue overflow, FIFO delivery to waiting readers,
//! truncation, connected-socket errors, and send admission (`udp_sends_in_flight`).
#![cfg(feature = "testing")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Hooks, Log, WAIT, cfg, start_on, wait_for, watchdog};
use ringline_core::testing::MockNet;
use ringline_core::{Error, UdpCtx, sleep, spawn, udp_bind};

fn peer() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

/// Waits (in a task) until `flag` is set.
async fn until(flag: &AtomicBool) {
    while !flag.load(Ordering::Acquire) {
        sleep(Duration::from_millis(2)).await;
    }
}

/// Starts one worker whose `on_start` binds a socket, publishes its address, then runs `body`.
fn with_socket<F, Fut>(builder: ringline_core::ConfigBuilder, body: F) -> (common::Rt, SocketAddr)
where
    F: FnOnce(UdpCtx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    with_socket_on(MockNet::new(), builder, body)
}

/// [`with_socket`] on a net the test prepared.
fn with_socket_on<F, Fut>(
    net: MockNet,
    builder: ringline_core::ConfigBuilder,
    body: F,
) -> (common::Rt, SocketAddr)
where
    F: FnOnce(UdpCtx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let addr: Log<SocketAddr> = Log::default();
    let a = addr.clone();
    let rt = start_on(net, builder, move || Hooks {
        start: Some(Box::new(move || {
            Box::pin(async move {
                let u = udp_bind("127.0.0.1:0".parse().unwrap()).expect("udp_bind");
                a.push(u.local_addr());
                body(u.ctx()).await;
                drop(u);
            })
        })),
        ..Hooks::default()
    });
    assert!(wait_for(WAIT, || addr.len() == 1), "socket bound");
    let local = addr.get()[0];
    (rt, local)
}

#[test]
fn a_full_receive_queue_drops_the_newest_and_counts_them() {
    let _w = watchdog("a_full_receive_queue_drops_the_newest_and_counts_them");
    let go = Arc::new(AtomicBool::new(false));
    let got: Log<Vec<u8>> = Log::default();
    let (g, out) = (go.clone(), got.clone());
    let (rt, local) = with_socket(cfg().udp_recv_queue(4), move |u| async move {
        until(&g).await;
        while u.queued_datagrams() > 0 {
            let (d, _) = u.recv_from().await.expect("queued datagram");
            out.push(d);
        }
    });
    for i in 0..10u8 {
        rt.net.udp_push(local, &[i; 3], peer());
    }
    assert!(wait_for(WAIT, || rt.metrics().udp_dropped == 6), "6 dropped: {:?}", rt.metrics());
    go.store(true, Ordering::Release);
    assert!(wait_for(WAIT, || got.len() == 4));
    assert_eq!(got.get(), vec![vec![0u8; 3], vec![1; 3], vec![2; 3], vec![3; 3]], "the oldest four kept");
    let m = rt.stop();
    assert_eq!(m.udp_datagrams_received, 4);
    assert_eq!(m.udp_dropped, 6);
}

#[test]
fn each_datagram_goes_to_exactly_one_waiter_in_fifo_order() {
    let _w = watchdog("each_datagram_goes_to_exactly_one_waiter_in_fifo_order");
    let waiting = Arc::new(AtomicUsize::new(0));
    let got: Log<(usize, Vec<u8>)> = Log::default();
    let (wt, out) = (waiting.clone(), got.clone());
    let (rt, local) = with_socket(cfg(), move |u| async move {
        let mut handles = Vec::new();
        for id in 0..3usize {
            let (wt, out) = (wt.clone(), out.clone());
            handles.push(
                spawn(async move {
                    wt.fetch_add(1, Ordering::AcqRel);
                    let (d, _) = u.recv_from().await.expect("datagram");
                    out.push((id, d));
                })
                .expect("spawn"),
            );
        }
        for h in handles {
            let _ = h.await;
        }
        // Two datagrams are left over: one more reader takes exactly the next one.
        let (d, _) = u.recv_from().await.expect("leftover");
        out.push((9, d));
        sleep(Duration::from_millis(20)).await;
        out.push((10, vec![u.queued_datagrams() as u8]));
    });
    assert!(wait_for(WAIT, || waiting.load(Ordering::Acquire) == 3));
    std::thread::sleep(Duration::from_millis(50));
    for d in [b"a", b"b", b"c", b"d", b"e"] {
        rt.net.udp_push(local, d, peer());
    }
    assert!(wait_for(WAIT, || got.len() == 5), "got {:?}", got.get());
    assert_eq!(
        got.get(),
        vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec()), (9, b"d".to_vec()), (10, vec![1])]
    );
    rt.stop();
}

#[test]
fn truncated_datagrams_are_counted_and_never_delivered() {
    let _w = watchdog("truncated_datagrams_are_counted_and_never_delivered");
    let got: Log<Vec<u8>> = Log::default();
    let out = got.clone();
    let (rt, local) = with_socket(cfg(), move |u| async move {
        let (d, _) = u.recv_from().await.expect("datagram");
        out.push(d);
    });
    rt.net.udp_push_truncated(local, &[7; 64], peer());
    rt.net.udp_push(local, b"whole", peer());
    assert!(wait_for(WAIT, || got.len() == 1));
    assert_eq!(got.get(), vec![b"whole".to_vec()]);
    let m = rt.stop();
    assert_eq!(m.udp_truncated, 1);
    assert_eq!(m.udp_datagrams_received, 1);
}

#[test]
fn an_error_on_a_connected_socket_reaches_the_next_recv_and_the_socket_keeps_working() {
    let _w = watchdog("an_error_on_a_connected_socket_reaches_the_next_recv");
    let results: Log<String> = Log::default();
    let out = results.clone();
    let (rt, local) = with_socket(cfg(), move |u| async move {
        u.connect(peer()).expect("connect");
        out.push("connected".into());
        for _ in 0..2 {
            match u.recv().await {
                Ok((d, from)) => out.push(format!("ok {} from {from}", String::from_utf8_lossy(&d))),
                Err(Error::Io(e)) => out.push(format!("io {:?}", e.kind())),
                Err(e) => out.push(format!("other {e}")),
            }
        }
        let sent = u.send(b"again").await;
        out.push(format!("send {sent:?}"));
    });
    assert!(wait_for(WAIT, || results.len() == 1));
    rt.net.udp_error(local, std::io::ErrorKind::ConnectionRefused);
    assert!(wait_for(WAIT, || results.len() == 2));
    rt.net.udp_push(local, b"x", "127.0.0.1:10".parse().unwrap()); // not the peer: filtered
    rt.net.udp_push(local, b"hi", peer());
    assert!(wait_for(WAIT, || results.len() == 4), "{:?}", results.get());
    assert_eq!(
        results.get(),
        vec![
            "connected".to_string(),
            "io ConnectionRefused".into(),
            format!("ok hi from {}", peer()),
            "send Ok(5)".into()
        ]
    );
    assert_eq!(rt.net.udp_sent().last().map(|d| (d.to, d.data.clone())), Some((peer(), b"again".to_vec())));
    rt.stop();
}

#[test]
fn sends_past_the_in_flight_limit_wait_fifo_and_try_send_to_refuses() {
    let _w = watchdog("sends_past_the_in_flight_limit_wait_fifo_and_try_send_to_refuses");
    let waiting = Arc::new(AtomicBool::new(false));
    let results: Log<String> = Log::default();
    let (wt, out) = (waiting.clone(), results.clone());
    let net = MockNet::new();
    net.udp_hold_sends(true);
    let (rt, _local) = with_socket_on(net, cfg().udp_sends_in_flight(2), move |u| async move {
        let a = u.send_to(b"a", peer());
        let b = u.send_to(b"bb", peer());
        out.push(format!("{:?}", u.try_send_to(b"c", peer()).map_err(|e| e.to_string())));
        let d = u.send_to(b"ddd", peer());
        wt.store(true, Ordering::Release);
        let (ra, rb, rd) = ringline_core::join3(a, b, d).await;
        out.push(format!("{ra:?} {rb:?} {rd:?}"));
        out.push(format!("{:?}", u.try_send_to(b"e", peer())));
        sleep(Duration::from_millis(20)).await;
    });
    assert!(wait_for(WAIT, || waiting.load(Ordering::Acquire)));
    std::thread::sleep(Duration::from_millis(30));
    assert!(rt.net.udp_sent().is_empty(), "held sends are not out yet");
    rt.net.udp_hold_sends(false);
    assert!(wait_for(WAIT, || results.len() == 3), "{:?}", results.get());
    let r = results.get();
    assert_eq!(r[0], format!("Err({:?})", Error::SendQueueFull.to_string()));
    assert_eq!(r[1], "Ok(1) Ok(2) Ok(3)");
    assert_eq!(r[2], "Ok(())");
    assert!(wait_for(WAIT, || rt.net.udp_sent().len() == 4));
    let sent: Vec<Vec<u8>> = rt.net.udp_sent().into_iter().map(|d| d.data).collect();
    assert_eq!(sent, vec![b"a".to_vec(), b"bb".to_vec(), b"ddd".to_vec(), b"e".to_vec()]);
    let m = rt.stop();
    assert_eq!(m.udp_datagrams_sent, 4);
    assert_eq!(m.send_pool_in_use, 0);
}

#[test]
fn with_datagram_runs_the_closure_on_one_datagram_and_its_sender() {
    let _w = watchdog("with_datagram_runs_the_closure_on_one_datagram_and_its_sender");
    let got: Log<(usize, u8, SocketAddr)> = Log::default();
    let out = got.clone();
    let (rt, local) = with_socket(cfg(), move |u| async move {
        for _ in 0..2 {
            let r = u.with_datagram(|d, from| (d.len(), d.first().copied().unwrap_or(0), from)).await;
            out.push(r.expect("datagram"));
        }
        u.close();
        let after = u.recv_from().await;
        out.push((usize::from(matches!(after, Err(Error::Closed))), 0, peer()));
    });
    rt.net.udp_push(local, &[5, 6, 7], peer());
    rt.net.udp_push(local, &[], "127.0.0.1:11".parse().unwrap());
    assert!(wait_for(WAIT, || got.len() == 3), "{:?}", got.get());
    assert_eq!(got.get(), vec![(3, 5, peer()), (0, 0, "127.0.0.1:11".parse().unwrap()), (1, 0, peer())]);
    rt.stop();
}
