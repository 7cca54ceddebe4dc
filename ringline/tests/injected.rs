//! Injected faults (TESTPLAN 12 and 26) through `ringline::testing::FaultPlan` (feature
//! `testing`, which `cargo xtask test` enables). Tests in this binary run one at a time.

mod common;

#[cfg(not(feature = "testing"))]
#[test]
fn injected_faults_need_the_testing_feature() {
    common::record_skip("SKIPPED: injected (TESTPLAN 12, 26) needs feature testing");
}

#[cfg(feature = "testing")]
mod with_faults {
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener};
    use std::sync::{Mutex, MutexGuard};
    use std::time::Duration;

    use super::common::{
        Echo, Server, Watchdog, backend_label, client, config, fd_count, on_worker, pattern, round_trip,
        settle, thread_count,
    };
    use ringline::testing::FaultPlan;
    use ringline::{Backend, Error, OwnedConn, RinglineBuilder, connect, join, join3, sleep, spawn};

    fn serial() -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `msg` and reads the same number of bytes back.
    async fn echo_through(c: &OwnedConn, msg: &[u8]) -> Result<Vec<u8>, Error> {
        let (sent, got) = join(c.send(msg), async {
            let mut got = Vec::new();
            while got.len() < msg.len() {
                let d = c.recv().await?;
                if d.is_empty() {
                    break;
                }
                got.extend_from_slice(&d);
            }
            Ok::<_, Error>(got)
        })
        .await;
        sent?;
        got
    }

    /// TESTPLAN 12: a tiny submission queue under 512 tasks that each send, receive, sleep and
    /// connect at once; then 50 injected submit refusals while a new connection is handed over.
    #[test]
    fn sq_full_retry_and_injected_push_failures() {
        let _serial = serial();
        let _w = Watchdog::new("sq_full_retry_and_injected_push_failures", 120);
        let plan = FaultPlan::new();
        let server = Server::start::<Echo>(config().workers(1).sq_entries(8).faults(plan.clone()));
        let addr = server.addr;
        let failures = on_worker(&server.shutdown, move || async move {
            let tasks: Vec<_> = (0..512u64)
                .map(|i| {
                    spawn(async move {
                        let first = connect(addr).await.map_err(|e| format!("connect {i}: {e}"))?;
                        let msg = pattern(i, 100 + i as usize);
                        let (echo, (), second) =
                            join3(echo_through(&first, &msg), sleep(Duration::from_millis(1)), async {
                                connect(addr).await
                            })
                            .await;
                        if echo.map_err(|e| e.to_string())? != msg {
                            return Err(format!("task {i}: wrong echo"));
                        }
                        let second = second.map_err(|e| format!("second connect {i}: {e}"))?;
                        let back = echo_through(&second, b"second").await.map_err(|e| e.to_string())?;
                        if back != b"second" {
                            return Err(format!("task {i}: wrong echo on the second connection"));
                        }
                        Ok(())
                    })
                    .expect("spawn")
                })
                .collect();
            let mut failures = Vec::new();
            for t in tasks {
                match t.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failures.push(e),
                    Err(e) => failures.push(format!("task ended: {e}")),
                }
            }
            failures
        });
        assert!(
            failures.is_empty(),
            "{} of 512 tasks failed on {}: {:?}",
            failures.len(),
            backend_label(),
            failures.first()
        );
        // A deterministic burst beside the racing tasks above: 32 sends queued in one poll pass
        // are flushed together, 32 SQEs into an 8-entry SQ, whatever the timing of the tasks.
        let burst = on_worker(&server.shutdown, move || async move {
            let mut conns = Vec::new();
            for i in 0..32 {
                conns.push(connect(addr).await.map_err(|e| format!("burst connect {i}: {e}"))?);
            }
            for c in &conns {
                c.send_nowait(b"burst").map_err(|e| format!("burst send: {e}"))?;
            }
            for c in &conns {
                let mut got = Vec::new();
                while got.len() < 5 {
                    let d = c.recv().await.map_err(|e| e.to_string())?;
                    if d.is_empty() {
                        break;
                    }
                    got.extend_from_slice(&d);
                }
                if got != b"burst" {
                    return Err(format!("burst echo {got:?}"));
                }
            }
            Ok::<(), String>(())
        });
        assert_eq!(burst, Ok(()), "the burst of 32 sends on {}", backend_label());
        let m = server.shutdown.metrics().workers[0].clone();
        if server.shutdown.backend() == Some(Backend::Uring) {
            assert!(
                m.sq_full_retries > 0,
                "an 8-entry SQ under 2,048 operations and a burst of 32 sends never filled"
            );
        } else {
            eprintln!("sq_full_retry: mio has no submission queue; sq_full_retries stays 0 there");
        }

        plan.fail_submits(0, 50);
        let mut late = client(addr);
        round_trip(&mut late, b"handed over after 50 refused submissions");
        assert_eq!(plan.pending_submit_failures(0), 0, "the injected failures were not all consumed");
        round_trip(&mut late, &pattern(9, 100_000));
        drop(late);
        server.stop();
    }

    /// TESTPLAN 26: an injected setup failure rolls launch back completely, and 64 parallel
    /// launches either serve or fail with a typed error.
    #[test]
    fn startup_failure_rollback() {
        let _serial = serial();
        let _w = Watchdog::new("startup_failure_rollback", 120);
        let (fds, threads) = (fd_count(), thread_count());
        let port: SocketAddr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let plan = FaultPlan::new();
        plan.fail_worker_setup(1);
        let cfg = config().workers(2).faults(plan).build().unwrap();
        match RinglineBuilder::new(cfg).bind(port).launch::<Echo>() {
            Err(Error::WorkerSetup { worker: 1, reason }) => {
                assert!(reason.contains("FaultPlan"), "{reason}")
            }
            Err(e) => panic!("an injected setup failure gave {e:?} on {}", backend_label()),
            Ok(_) => panic!("launch succeeded although worker 1 failed its setup"),
        }
        TcpListener::bind(port).expect("the port is free at once after a failed launch");
        assert!(settle(5, || fd_count() <= fds), "fds {} > baseline {fds}", fd_count());
        assert!(settle(5, || thread_count() <= threads), "threads {} > baseline {threads}", thread_count());

        let launches: Vec<_> = (0..64u64)
            .map(|i| {
                std::thread::spawn(move || {
                    let cfg = config().workers(1).max_connections(64).build().unwrap();
                    match RinglineBuilder::new(cfg).bind("127.0.0.1:0".parse().unwrap()).launch::<Echo>() {
                        Ok((shutdown, handles)) => {
                            let mut c = client(shutdown.local_addrs()[0]);
                            round_trip(&mut c, &pattern(i, 64));
                            drop(c);
                            shutdown.shutdown_with_deadline(Duration::from_secs(5));
                            for h in handles {
                                h.join().expect("worker panicked").expect("worker error");
                            }
                            "served".to_string()
                        }
                        Err(e @ (Error::WorkerSetup { .. } | Error::BackendUnavailable { .. })) => {
                            format!("typed failure: {e}")
                        }
                        Err(e) => panic!("parallel launch {i} failed with an unexpected error: {e:?}"),
                    }
                })
            })
            .collect();
        let outcomes: Vec<String> = launches.into_iter().map(|t| t.join().expect("launch thread")).collect();
        let served = outcomes.iter().filter(|o| *o == "served").count();
        eprintln!("startup_failure_rollback on {}: {served} of 64 parallel launches served", backend_label());
        assert!(served > 0, "no parallel launch served: {:?}", outcomes.first());
        assert!(settle(5, || fd_count() <= fds), "fds {} > baseline {fds}", fd_count());
        assert!(settle(5, || thread_count() <= threads), "threads {} > baseline {threads}", thread_count());
    }

    // ---- 28. zc_guard_lifetime_and_deferred_close ---------------------------------------------

    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};

    use ringline::testing::Event;
    use ringline::{AsyncEventHandler, ConnCtx, ConnToken, SendGuard, join_all};

    const MESSAGES: u64 = 1000;
    const MESSAGE: usize = 64 * 1024;
    static GUARD_DROPS: AtomicU64 = AtomicU64::new(0);
    static TOKEN: Mutex<Option<ConnToken>> = Mutex::new(None);

    /// 64 KiB of message `i`, counting its drop.
    struct CountedGuard(Vec<u8>);

    impl SendGuard for CountedGuard {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for CountedGuard {
        fn drop(&mut self) {
            GUARD_DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Queues 1,000 guarded 64 KiB sends at once, then `close()`s (client sent `A`) or
    /// `abort()`s (client sent `B`) while they are in flight.
    struct GuardedSender;

    impl AsyncEventHandler for GuardedSender {
        fn create_for_worker(_worker: usize) -> Self {
            GuardedSender
        }
        fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
            async move {
                *TOKEN.lock().unwrap() = Some(conn.token());
                let cmd = conn.recv().await.unwrap_or_default();
                let sends =
                    join_all((0..MESSAGES).map(|i| conn.send_owned(CountedGuard(pattern(i, MESSAGE)))));
                let sender = spawn(sends).expect("spawn the sends");
                ringline::yield_now().await;
                if cmd.first() == Some(&b'A') {
                    conn.close();
                } else {
                    conn.abort();
                }
                let _ = sender.await;
            }
        }
    }

    fn guard_lifetime(variant: u8) {
        GUARD_DROPS.store(0, Ordering::SeqCst);
        *TOKEN.lock().unwrap() = None;
        let cfg =
            config().workers(1).send_queue_limit(128 << 20).zero_copy_threshold(4096).zero_copy_local(true);
        let server = Server::start::<GuardedSender>(cfg);
        server.shutdown.enable_event_log();
        let mut c = client(server.addr);
        c.write_all(&[variant]).unwrap();
        let expected: Vec<u8> = (0..MESSAGES).flat_map(|i| pattern(i, MESSAGE)).collect();
        let mut got = Vec::with_capacity(expected.len());
        let mut buf = vec![0u8; 64 * 1024];
        let end = loop {
            match c.read(&mut buf) {
                Ok(0) => break "eof",
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
                Err(e) => panic!("client read failed on {}: {e}", backend_label()),
            }
            if got.len() % (4 << 20) < 64 * 1024 {
                std::thread::sleep(Duration::from_millis(2)); // a slow reader
            }
        };
        assert!(
            got[..] == expected[..got.len()],
            "variant {}: the client's bytes are not an exact prefix",
            variant as char
        );
        if variant == b'A' {
            assert_eq!(
                (got.len(), end),
                (expected.len(), "eof"),
                "close() must deliver everything, then EOF"
            );
        } else {
            assert!(
                got.len() < expected.len(),
                "abort() delivered everything (the reader was not slow enough)"
            );
        }
        let token = TOKEN.lock().unwrap().expect("the handler ran");
        let drops = || GUARD_DROPS.load(Ordering::SeqCst);
        assert!(settle(10, || drops() == MESSAGES), "guards dropped {} times, not {MESSAGES}", drops());
        let log = || server.shutdown.event_log(token);
        assert!(settle(10, || log().last() == Some(&Event::SlotReleased)), "the slot was not released last");
        let log = log();
        let mut released_guards = 0;
        let mut closed_seen = false;
        for (i, e) in log.iter().enumerate() {
            match e {
                Event::BufferReleased { guards, .. } => {
                    let prev = i.checked_sub(1).map(|p| &log[p]);
                    assert!(
                        matches!(prev, Some(Event::Completed { kind: "Sent", .. })),
                        "a send buffer was released before its terminal completion: {:?}",
                        &log[i.saturating_sub(3)..=i]
                    );
                    released_guards += guards;
                }
                Event::Completed { kind: "Closed", .. } => closed_seen = true,
                Event::Completed { kind, .. } => {
                    assert!(!closed_seen, "a {kind} completion after Closed (the fd was closed too early)")
                }
                _ => {}
            }
        }
        if variant == b'A' {
            assert_eq!(released_guards as u64, MESSAGES, "every guard went out through a send buffer");
        }
        eprintln!(
            "zc_guard_lifetime {} on {}: {} events, {released_guards} guards released with send buffers, client {} B then {end}",
            variant as char,
            backend_label(),
            log.len(),
            got.len()
        );
        let m = || server.shutdown.metrics().workers[0].clone();
        assert!(
            settle(5, || m().send_pool_in_use == 0 && m().connections_open == 0),
            "pools not back: {:?}",
            m()
        );
        server.stop();
    }

    #[test]
    fn zc_guard_lifetime_and_deferred_close() {
        let _serial = serial();
        let _w = Watchdog::new("zc_guard_lifetime_and_deferred_close", 120);
        guard_lifetime(b'A');
    }

    #[test]
    fn zc_guard_lifetime_and_abort() {
        let _serial = serial();
        let _w = Watchdog::new("zc_guard_lifetime_and_abort", 120);
        guard_lifetime(b'B');
    }
}
