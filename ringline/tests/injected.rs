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
        let m = server.shutdown.metrics().workers[0].clone();
        if server.shutdown.backend() == Some(Backend::Uring) {
            assert!(m.sq_full_retries > 0, "an 8-entry SQ under 2,048 operations never filled");
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
}
