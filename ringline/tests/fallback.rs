//! Proof of the io_uring → mio fallback (needs the `uring` and `mio` features).
//!
//! `fallback_to_mio_under_seccomp` re-executes this test binary as a child that installs a seccomp
//! filter making `io_uring_setup`/`_enter`/`_register` fail with `EPERM` (as restrictive container
//! profiles do) before anything touches io_uring. The child then checks that the default `Auto`
//! config launches on mio, echoes through it and shuts down cleanly, and that a forced `Uring`
//! launch fails with `BackendUnavailable` instead of panicking, hanging or switching silently.
//! `auto_picks_uring_without_the_filter` checks the other half in this, unfiltered, process.
//!
//! Builds without both features record a skip instead.

mod common;
#[cfg(all(feature = "uring", feature = "mio"))]
#[path = "common/seccomp.rs"]
mod seccomp;

/// The test that runs in both the parent and the child.
const TEST: &str = "fallback_to_mio_under_seccomp";

#[cfg(all(feature = "uring", feature = "mio"))]
#[test]
fn fallback_to_mio_under_seccomp() {
    if std::env::var_os(imp::CHILD_ENV).is_some() { imp::child() } else { imp::parent() }
}

#[cfg(all(feature = "uring", feature = "mio"))]
#[test]
fn auto_picks_uring_without_the_filter() {
    imp::auto_picks_uring();
}

#[cfg(not(all(feature = "uring", feature = "mio")))]
#[test]
fn fallback_to_mio_under_seccomp() {
    record_skip(&format!("SKIPPED: {TEST} needs features uring+mio"));
}

use common::record_skip;

#[cfg(all(feature = "uring", feature = "mio"))]
mod imp {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use ringline::{Backend, BackendChoice, Config, Error, RinglineBuilder};

    use super::common::{Echo, Server, Watchdog, client, pattern, round_trip};
    use super::{TEST, record_skip, seccomp};

    /// Set in the child's environment: run the child half of the test.
    pub(super) const CHILD_ENV: &str = "RINGLINE_FALLBACK_CHILD";
    /// Printed by the child when every check passed.
    const MARKER_OK: &str = "FALLBACK-OK backend=Mio";
    /// Printed by the child with the forced-io_uring launch error.
    const MARKER_FORCED: &str = "FORCED-URING-ERR";
    /// Printed by the child when the filter could not be installed here.
    const MARKER_SKIP: &str = "FALLBACK-SKIP";
    /// How long the parent lets the child run before killing it.
    const CHILD_LIMIT: Duration = Duration::from_secs(60);

    /// Parent half: runs the child, bounded, and checks what it reports.
    pub(super) fn parent() {
        let _w = Watchdog::new("fallback_to_mio_under_seccomp (parent)", 90);
        let exe = std::env::current_exe().expect("path of this test binary");
        let mut child = Command::new(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .env_remove("RINGLINE_BACKEND")
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", exe.display()));
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for the child") {
                break Some(status);
            }
            if start.elapsed() > CHILD_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
        let output = format!("--- child stdout ---\n{stdout}--- child stderr ---\n{stderr}--- end ---");
        let Some(status) = status else {
            panic!("the child hung for {CHILD_LIMIT:?} and was killed\n{output}");
        };
        assert!(status.success(), "the child failed ({status})\n{output}");
        if let Some(line) = stdout.lines().find(|l| l.starts_with(MARKER_SKIP)) {
            let reason = line.trim_start_matches(MARKER_SKIP).trim_start_matches(" reason=");
            record_skip(&format!("SKIPPED: {TEST}: the seccomp filter could not be installed ({reason})"));
            return;
        }
        assert!(stdout.contains(MARKER_OK), "the child did not report `{MARKER_OK}`\n{output}");
        assert!(stdout.contains(MARKER_FORCED), "the child did not report the forced launch\n{output}");
        assert!(
            stderr.contains("io_uring unavailable") && stderr.contains("using mio"),
            "the fallback did not log its warning\n{output}"
        );
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            println!("child | {line}");
        }
        for line in stderr.lines().filter(|l| l.contains("using mio")) {
            println!("child log | {line}");
        }
    }

    /// Child half: filter io_uring away, then launch with `Auto` and with `Uring` forced.
    pub(super) fn child() {
        let _w = Watchdog::new("fallback_to_mio_under_seccomp (child)", 45);
        let _ = tracing_subscriber::fmt().with_ansi(false).with_writer(std::io::stderr).try_init();
        assert!(std::env::var_os("RINGLINE_BACKEND").is_none(), "the parent removes RINGLINE_BACKEND");
        // libtest printed `test <name> ... ` without a newline; start the child's lines on their own.
        println!();

        let before = seccomp::raw_io_uring_setup();
        println!("child: io_uring_setup before the filter: {}", describe(&before));
        if let Err(why) = seccomp::deny_io_uring() {
            println!("{MARKER_SKIP} reason={why}");
            return;
        }
        let after = seccomp::raw_io_uring_setup();
        println!("child: io_uring_setup after the filter: {}", describe(&after));
        assert_eq!(
            after.as_ref().map_err(std::io::Error::raw_os_error),
            Err(Some(libc::EPERM)),
            "the filter must make io_uring_setup fail with EPERM"
        );

        // 1. The default config (`Auto`) falls back to mio and serves.
        let cfg = Config::builder().workers(2).max_connections(1024);
        assert_eq!(cfg.clone().build().unwrap().backend(), BackendChoice::Auto);
        let server = Server::start::<Echo>(cfg);
        let backend = server.shutdown.backend();
        assert_eq!(backend, Some(Backend::Mio), "Auto under the filter must run mio");
        let mut c = client(server.addr);
        let mut echoed = 0;
        for (i, len) in [1usize, 4 << 10, 64 << 10].into_iter().enumerate() {
            round_trip(&mut c, &pattern(i as u64, len));
            echoed += len;
        }
        drop(c);
        server.stop();
        println!("child: Auto launched {backend:?}, echoed {echoed} bytes, workers joined cleanly");

        // 2. Forcing io_uring is an error, not a panic, a hang or a silent switch.
        let start = Instant::now();
        let cfg = Config::builder().workers(2).backend(BackendChoice::Uring).build().unwrap();
        let launched = std::panic::catch_unwind(move || {
            RinglineBuilder::new(cfg).bind("127.0.0.1:0".parse().unwrap()).launch::<Echo>()
        });
        let elapsed = start.elapsed();
        match launched {
            Ok(Err(Error::BackendUnavailable { backend: Backend::Uring, reason })) => {
                println!("{MARKER_FORCED} backend=Uring reason={reason} ({elapsed:?})");
                assert!(reason.contains("EPERM"), "the reason should name EPERM: {reason}");
            }
            Ok(Err(e)) => panic!("forced io_uring failed with the wrong error: {e:?}"),
            Ok(Ok((shutdown, workers))) => {
                let backend = shutdown.backend();
                shutdown.shutdown_with_deadline(Duration::from_secs(5));
                for w in workers {
                    let _ = w.join();
                }
                panic!("forced io_uring launched ({backend:?}) although the filter denies io_uring");
            }
            Err(_) => panic!("forced io_uring launch panicked"),
        }
        assert!(elapsed < Duration::from_secs(10), "the forced launch took {elapsed:?}");
        println!("{MARKER_OK}");
    }

    /// Without the filter, `Auto` runs io_uring wherever a forced io_uring launch would work.
    pub(super) fn auto_picks_uring() {
        if std::env::var_os(CHILD_ENV).is_some() {
            return;
        }
        if let Ok(v) = std::env::var("RINGLINE_BACKEND") {
            if !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("auto") {
                eprintln!("auto_picks_uring_without_the_filter: not run, RINGLINE_BACKEND={v} forces it");
                return;
            }
        }
        let _w = Watchdog::new("auto_picks_uring_without_the_filter", 60);
        let server = Server::start::<Echo>(Config::builder().workers(2).max_connections(1024));
        let backend = server.shutdown.backend();
        let mut c = client(server.addr);
        round_trip(&mut c, &pattern(9, 16 << 10));
        drop(c);
        server.stop();
        if backend == Some(Backend::Uring) {
            println!("parent: Auto without the filter launched {backend:?}");
            return;
        }
        // Auto chose mio: right only if io_uring cannot run in this environment.
        let cfg = Config::builder().workers(1).max_connections(1024).backend(BackendChoice::Uring);
        match RinglineBuilder::new(cfg.build().unwrap()).launch::<Echo>() {
            Err(Error::BackendUnavailable { backend: Backend::Uring, reason }) => record_skip(&format!(
                "SKIPPED: auto_picks_uring_without_the_filter: io_uring unavailable here ({reason})"
            )),
            Err(e) => panic!("Auto chose {backend:?}; forced io_uring failed with {e:?}"),
            Ok((shutdown, workers)) => {
                shutdown.shutdown_with_deadline(Duration::from_secs(5));
                for w in workers {
                    let _ = w.join();
                }
                panic!("Auto chose {backend:?} although a forced io_uring launch works here");
            }
        }
    }

    fn describe(r: &std::io::Result<()>) -> String {
        match r {
            Ok(()) => "ok (a ring was created and closed)".into(),
            Err(e) => format!("{e}"),
        }
    }
}
