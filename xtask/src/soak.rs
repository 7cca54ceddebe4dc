//! `cargo xtask soak [--secs N] [--backend uring|mio|both]`: mixed load against the
//! `soak_server` example for N seconds per backend, then a check that nothing grew and every byte
//! came back.
//!
//! The `soak_server` and `soak_client` examples are built in release mode per backend, with the
//! same feature sets as `cargo xtask examples` (default, and `--no-default-features --features
//! mio`), and copied to `<target>/xtask-soak/<backend>/`. Per backend: the server starts on
//! `127.0.0.1:0`, and its `listening on` line must name that backend. A 2 s `soak_client
//! --warmup` run exercises every path once (and starts both blocking-pool threads); once the
//! server's counts are steady, the baseline is taken: open descriptors (`/proc/PID/fd`), threads
//! (`/proc/PID/task`, without the kernel's `iou-*` io_uring workers, which the kernel starts and
//! reaps on its own), `VmRSS`, and the runtime's gauges as the server reports them (`soak_client
//! --probe`). Then `soak_client` runs the mix for N seconds and must report no mismatch and no
//! error. After a settle loop (up to 15 s) the counts must be back at or below the baseline, the
//! gauges equal to it, and RSS within [`rss_allowed`]; the server must still be running, and exit
//! 0 within 10 s of SIGTERM.
//!
//! One summary line per backend is printed and written to `<target>/soak/latest.txt`; logs go to
//! `<target>/soak/logs/`. `cargo xtask ci` ends with a 5 s run ([`Options::smoke`]), after the
//! examples step has built the same binaries.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{Cargo, StepResult};
use crate::server;

/// How long the server may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for the counts to come back after the load.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);

/// The variable that forces ringline's backend; removed for the server (each build has one).
const BACKEND_VAR: &str = "RINGLINE_BACKEND";

/// The examples this step builds and runs.
const BINARIES: &[&str] = &["soak_server", "soak_client"];

/// Seconds of the warm-up run.
const WARMUP_SECS: &str = "2";

/// Options of `cargo xtask soak`.
#[derive(Debug, PartialEq)]
pub(crate) struct Options {
    /// Seconds of load per backend.
    secs: u64,
    /// Backends to soak, in order.
    backends: Vec<&'static str>,
}

impl Options {
    /// The short run `cargo xtask ci` ends with: 5 s on each backend.
    pub(crate) fn smoke() -> Options {
        Options { secs: 5, backends: vec!["uring", "mio"] }
    }
}

/// The backends a `--backend uring|mio|both` value names (soak and stress share it).
pub(crate) fn parse_backend(value: &str) -> Result<Vec<&'static str>, String> {
    match value {
        "uring" => Ok(vec!["uring"]),
        "mio" => Ok(vec!["mio"]),
        "both" => Ok(vec!["uring", "mio"]),
        other => Err(format!("--backend is uring, mio or both, not {other:?}")),
    }
}

/// Parses `[--secs N] [--backend uring|mio|both]`; defaults: 60 s, both.
pub(crate) fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut opts = Options { secs: 60, backends: vec!["uring", "mio"] };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let value = iter.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--secs" => match value?.parse::<u64>() {
                Ok(n) if n >= 1 => opts.secs = n,
                _ => return Err("--secs needs a whole number of seconds, at least 1".to_string()),
            },
            "--backend" => {
                opts.backends = parse_backend(value?)?;
            }
            other => return Err(format!("unknown soak argument {other:?}")),
        }
    }
    Ok(opts)
}

/// What the harness reads from the server process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counts {
    /// Entries of `/proc/PID/fd`.
    fds: usize,
    /// Entries of `/proc/PID/task`, without `iou-*` kernel workers.
    threads: usize,
    /// `VmRSS`, KiB.
    rss_kib: u64,
}

/// Builds the soak binaries and soaks each backend; fails if any backend fails.
pub(crate) fn run(root: &Path, opts: &Options) -> StepResult {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
    let logs = target.join("soak").join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let mut builds = Vec::new();
    for backend in &opts.backends {
        let bin = build(root, &target, backend)?;
        builds.push((*backend, Dirs { bin, logs: logs.clone() }));
    }
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs());
    let mut lines = Vec::new();
    for (backend, dirs) in &builds {
        println!("\n==> soak: {backend}, {} s", opts.secs);
        let line = match soak_one(dirs, backend, opts.secs, seed) {
            Ok(line) => line,
            Err(reason) => format!("soak {backend}: FAIL secs={} {reason}", opts.secs),
        };
        println!("{line}");
        lines.push(line);
    }
    println!("\nsoak summary:");
    lines.iter().for_each(|l| println!("{l}"));
    let report = target.join("soak").join("latest.txt");
    std::fs::write(&report, lines.join("\n") + "\n")
        .map_err(|e| format!("cannot write {}: {e}", report.display()))?;
    let failed = lines.iter().filter(|l| !l.contains(": PASS ")).count();
    if failed == 0 { Ok(()) } else { Err(format!("{failed} backend(s) failed; logs in {}", logs.display())) }
}

/// Builds the soak examples for `backend` and copies them to `<target>/xtask-soak/<backend>/`.
fn build(root: &Path, target: &Path, backend: &str) -> StepResult<PathBuf> {
    let mut args = vec!["build", "--release", "-p", "ringline"];
    if backend == "mio" {
        args.extend(["--no-default-features", "--features", "mio"]);
    }
    for bin in BINARIES {
        args.extend(["--example", bin]);
    }
    Cargo::new(root, &args).run()?;
    let dir = target.join("xtask-soak").join(backend);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for bin in BINARIES {
        let from = target.join("release").join("examples").join(bin);
        std::fs::copy(&from, dir.join(bin)).map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    }
    Ok(dir)
}

/// Where the binaries are and where logs go.
struct Dirs {
    /// The release binaries.
    bin: PathBuf,
    /// Child logs.
    logs: PathBuf,
}

/// Soaks one backend; `Ok` is the summary line (PASS or FAIL), `Err` a failure before the
/// measurement (the server did not start, the warm-up failed).
fn soak_one(dirs: &Dirs, backend: &str, secs: u64, seed: u64) -> Result<String, String> {
    let server_log = dirs.logs.join(format!("{backend}.server.stderr"));
    let (mut child, addr) = start_server(dirs, backend, &server_log)?;
    let outcome = measure(dirs, backend, secs, seed, child.id(), &addr);
    let alive = child.try_wait().ok().flatten().is_none();
    let exit = if alive { stop(&mut child) } else { Err("the server died during the run".to_string()) };
    match outcome {
        Ok(mut measured) => {
            if let Err(e) = exit {
                measured.problems.push(format!("{e}; stderr: {}", tail(&server_log)));
            }
            Ok(measured.summary(backend, secs))
        }
        Err(reason) => Err(format!("{reason}; server stderr: {}", tail(&server_log))),
    }
}

/// Everything measured on one backend.
struct Measured {
    /// The client's `key=value` counters.
    client: HashMap<String, String>,
    /// Counts after the warm-up.
    before: Counts,
    /// Counts after the load and the settle loop.
    after: Counts,
    /// Why the run fails; empty for a pass.
    problems: Vec<String>,
}

impl Measured {
    /// The one-line summary.
    fn summary(&self, backend: &str, secs: u64) -> String {
        let v = |k: &str| self.client.get(k).map_or("?", String::as_str);
        let verdict = if self.problems.is_empty() { "PASS" } else { "FAIL" };
        let mut line = format!(
            "soak {backend}: {verdict} secs={secs} conns={} msgs={} bytes={} resets={} half_closes={} \
             slow_readers={} timer_ops={} spawn_ops={} blocking_ops={} mismatches={} errors={} \
             fds={}->{} threads={}->{} rss_mib={:.1}->{:.1} seed={}",
            v("conns"),
            v("msgs"),
            v("bytes"),
            v("resets"),
            v("half_closes"),
            v("slow_readers"),
            v("timer_ops"),
            v("spawn_ops"),
            v("blocking_ops"),
            v("mismatches"),
            v("errors"),
            self.before.fds,
            self.after.fds,
            self.before.threads,
            self.after.threads,
            self.before.rss_kib as f64 / 1024.0,
            self.after.rss_kib as f64 / 1024.0,
            v("seed"),
        );
        if !self.problems.is_empty() {
            line.push_str(&format!(" problems: {}", self.problems.join("; ")));
        }
        line
    }
}

/// Starts `soak_server` for `backend`; returns it and the address of its `listening on` line.
fn start_server(dirs: &Dirs, backend: &str, log: &Path) -> Result<(Child, String), String> {
    let stderr = File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut child = Command::new(dirs.bin.join("soak_server"))
        .args(["--addr", "127.0.0.1:0"])
        .env_remove(BACKEND_VAR)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start soak_server: {e}"))?;
    match server::wait_listening_line(&mut child, START_TIMEOUT) {
        Ok(line) if line.to_lowercase().contains(&format!("({backend} backend)")) => {
            match server::listening_addr(&line) {
                Some(addr) => Ok((child, addr)),
                None => {
                    let _ = stop(&mut child);
                    Err(format!("no address in {line:?}"))
                }
            }
        }
        Ok(line) => {
            let _ = stop(&mut child);
            Err(format!("soak_server runs the wrong backend: {line:?}"))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("soak_server did not start: {e}"))
        }
    }
}

/// Warm-up, baseline, load, settle, against the server `pid` listening on `addr`.
fn measure(
    dirs: &Dirs,
    backend: &str,
    secs: u64,
    seed: u64,
    pid: u32,
    addr: &str,
) -> Result<Measured, String> {
    let client = |tag: &str, args: &[&str], limit: Duration| {
        run_client(dirs, &format!("{backend}.{tag}"), addr, args, limit)
    };
    let warm_seed = seed.to_string();
    client("warmup", &["--warmup", "--secs", WARMUP_SECS, "--seed", &warm_seed], Duration::from_secs(120))
        .map_err(|e| format!("warm-up failed: {e}"))?;
    let before = steady_counts(pid)?;
    let gauges_before = client("probe-before", &["--probe"], Duration::from_secs(30))?;
    println!("soak: baseline {before:?}; gauges {}", gauges_before.trim());

    let load_seed = (seed + 1).to_string();
    let limit = Duration::from_secs(secs + 150);
    let load = client("load", &["--secs", &secs.to_string(), "--seed", &load_seed], limit);
    let mut problems = Vec::new();
    let values = match &load {
        Ok(out) => parse_values(out),
        Err(e) => {
            problems.push(format!("client: {e}"));
            parse_values(
                &std::fs::read_to_string(dirs.logs.join(format!("{backend}.load.stdout")))
                    .unwrap_or_default(),
            )
        }
    };

    let started = Instant::now();
    let (after, gauges_after) = loop {
        let counts = read_counts(pid)?;
        let gauges = client("probe-after", &["--probe"], Duration::from_secs(30))?;
        let settled = growth(&before, &counts).is_empty() && gauges == gauges_before;
        if settled || started.elapsed() >= SETTLE_LIMIT {
            break (counts, gauges);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "soak: after {:.1} s of settling {after:?}; gauges {}",
        started.elapsed().as_secs_f64(),
        gauges_after.trim()
    );
    problems.extend(growth(&before, &after));
    if gauges_after != gauges_before {
        problems.push(format!("gauges {} (baseline {})", gauges_after.trim(), gauges_before.trim()));
    }
    Ok(Measured { client: values, before, after, problems })
}

/// Runs `soak_client --addr ADDR args` with a time limit; `Ok` is its stdout, `Err` says why
/// it failed (exit status, its stderr). Output is kept in `<logs>/<tag>.{stdout,stderr}`.
fn run_client(dirs: &Dirs, tag: &str, addr: &str, args: &[&str], limit: Duration) -> Result<String, String> {
    let (out_path, err_path) =
        (dirs.logs.join(format!("{tag}.stdout")), dirs.logs.join(format!("{tag}.stderr")));
    let create = |p: &Path| File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()));
    let mut child = Command::new(dirs.bin.join("soak_client"))
        .args(["--addr", addr])
        .args(args)
        .stdin(Stdio::null())
        .stdout(create(&out_path)?)
        .stderr(create(&err_path)?)
        .spawn()
        .map_err(|e| format!("cannot start soak_client: {e}"))?;
    let status = server::wait_timeout(&mut child, limit).map_err(|e| format!("soak_client {e}"))?;
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    if status.success() { Ok(stdout) } else { Err(format!("soak_client {status}: {}", tail(&err_path))) }
}

/// Reads the server's counts from `/proc`.
fn read_counts(pid: u32) -> Result<Counts, String> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let fds =
        std::fs::read_dir(proc.join("fd")).map_err(|e| format!("cannot read /proc/{pid}/fd: {e}"))?.count();
    let threads = std::fs::read_dir(proc.join("task"))
        .map_err(|e| format!("cannot read /proc/{pid}/task: {e}"))?
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|name| !name.starts_with("iou-"))
        .count();
    let status =
        std::fs::read_to_string(proc.join("status")).map_err(|e| format!("cannot read status: {e}"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok(Counts { fds, threads, rss_kib })
}

/// Counts once fds and threads have not changed for a second (at most 10 s).
fn steady_counts(pid: u32) -> Result<Counts, String> {
    let started = Instant::now();
    let mut last = read_counts(pid)?;
    let mut since = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        let now = read_counts(pid)?;
        if (now.fds, now.threads) != (last.fds, last.threads) {
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(1) {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// RSS the server may have after the load: the baseline plus the larger of 64 MiB and the
/// baseline itself (send-pool slots and allocator caches are kept for reuse, not leaked).
fn rss_allowed(before_kib: u64) -> u64 {
    before_kib + before_kib.max(64 * 1024)
}

/// What grew beyond the baseline, one message per count.
fn growth(before: &Counts, after: &Counts) -> Vec<String> {
    let mut grew = Vec::new();
    if after.fds > before.fds {
        grew.push(format!("fds grew {} -> {}", before.fds, after.fds));
    }
    if after.threads > before.threads {
        grew.push(format!("threads grew {} -> {}", before.threads, after.threads));
    }
    if after.rss_kib > rss_allowed(before.rss_kib) {
        grew.push(format!("RSS grew {} -> {} KiB", before.rss_kib, after.rss_kib));
    }
    grew
}

/// Sends SIGTERM and waits; `Err` unless the server exits 0 within [`STOP_TIMEOUT`] (it is
/// killed then).
fn stop(child: &mut Child) -> Result<(), String> {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !sent {
        let _ = child.kill();
        let _ = child.wait();
        return Err("`kill -TERM` failed; killed".to_string());
    }
    match server::wait_timeout(child, STOP_TIMEOUT) {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("the server exited with {status} after SIGTERM")),
        Err(e) => Err(format!("the server {e} after SIGTERM")),
    }
}

/// The last three non-empty lines of a log, on one line.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Every `key=value` token of `text`.
fn parse_values(text: &str) -> HashMap<String, String> {
    text.split_whitespace()
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn args_default_to_a_minute_on_both_backends() {
        assert_eq!(parse_args(&[]).unwrap(), Options { secs: 60, backends: vec!["uring", "mio"] });
        let one = parse_args(&strings(&["--secs", "5", "--backend", "mio"])).unwrap();
        assert_eq!(one, Options { secs: 5, backends: vec!["mio"] });
        assert!(parse_args(&strings(&["--secs", "0"])).is_err());
        assert!(parse_args(&strings(&["--secs"])).is_err());
        assert!(parse_args(&strings(&["--backend", "epoll"])).is_err());
        assert!(parse_args(&strings(&["--quick"])).is_err());
    }

    #[test]
    fn growth_flags_fds_threads_and_large_rss_only() {
        let before = Counts { fds: 10, threads: 6, rss_kib: 8 * 1024 };
        assert!(growth(&before, &before).is_empty());
        assert!(growth(&before, &Counts { fds: 9, threads: 5, rss_kib: 60 * 1024 }).is_empty());
        let grew = growth(&before, &Counts { fds: 11, threads: 7, rss_kib: 80 * 1024 });
        assert_eq!(grew.len(), 3, "{grew:?}");
        assert!(grew[0].contains("fds grew 10 -> 11"));
    }

    #[test]
    fn the_summary_says_pass_only_without_problems() {
        let client = parse_values("conns=5 msgs=7 bytes=9 mismatches=0 errors=0 seed=3");
        let counts = Counts { fds: 10, threads: 6, rss_kib: 2048 };
        let mut m = Measured { client, before: counts, after: counts, problems: Vec::new() };
        let line = m.summary("uring", 5);
        assert!(line.starts_with("soak uring: PASS secs=5 conns=5 msgs=7 bytes=9"), "{line}");
        assert!(line.contains("fds=10->10 threads=6->6 rss_mib=2.0->2.0 seed=3"), "{line}");
        m.problems.push("fds grew 10 -> 11".into());
        assert!(
            m.summary("mio", 5).contains(": FAIL ") && m.summary("mio", 5).ends_with("fds grew 10 -> 11")
        );
    }
}
