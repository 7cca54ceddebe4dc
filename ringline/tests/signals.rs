//! Interrupted waits are not errors (API R9, TESTPLAN 10): a storm of signals at the worker
//! threads during an echo load loses nothing and kills nothing. Its own test binary, because it
//! installs a process-wide signal handler.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Echo, Server, Watchdog, backend_label, client, config, pattern, round_trip};

extern "C" fn ignore_signal(_: libc::c_int) {}

fn install_sigusr1_handler() {
    // SAFETY: `act` is fully initialised (zeroed, then the handler and flags set) before the call;
    // the handler does nothing, which is async-signal-safe.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = ignore_signal as *const () as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut()), 0);
    }
}

fn worker_tids() -> Vec<libc::pid_t> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let is_worker =
                name.trim().strip_prefix("ringline-w").is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
            if is_worker { e.file_name().to_str()?.parse().ok() } else { None }
        })
        .collect()
}

#[test]
fn a_signal_storm_at_the_workers_loses_no_byte_and_kills_no_worker() {
    let _w = Watchdog::new("a_signal_storm_at_the_workers", 60);
    install_sigusr1_handler();
    let server = Server::start::<Echo>(config().tick_interval(None));
    let tids = worker_tids();
    assert_eq!(tids.len(), 2, "found worker threads {tids:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for &tid in &tids {
                    // SAFETY: tgkill with this process's id and one of its thread ids; SIGUSR1
                    // has a handler installed above, so it cannot kill the process.
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            sent
        })
    };
    let addr = server.addr;
    let clients: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conns: Vec<_> = (0..8).map(|_| client(addr)).collect();
                let end = Instant::now() + Duration::from_secs(3);
                let mut round = 0u64;
                while Instant::now() < end {
                    for (i, c) in conns.iter_mut().enumerate() {
                        round_trip(
                            c,
                            &pattern(
                                t * 1_000_000 + round * 100 + i as u64,
                                1 + (round as usize * 977) % 20_000,
                            ),
                        );
                    }
                    round += 1;
                    // Idle gaps, so workers are often parked when a signal lands.
                    std::thread::sleep(Duration::from_millis(1));
                }
                round
            })
        })
        .collect();
    let rounds: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let sent = storm.join().unwrap();
    let m = server.shutdown.metrics();
    assert!(m.workers.iter().all(|w| w.alive), "a worker died on {}", backend_label());
    let retries: u64 = m.workers.iter().map(|w| w.submit_retries).sum();
    eprintln!(
        "signal storm on {}: {sent} signals, {rounds} rounds, submit_retries={retries}",
        backend_label()
    );
    assert!(
        retries > 0,
        "no interrupted wait was retried: the EINTR path did not run on {}",
        backend_label()
    );
    server.stop();
}
