//! `cargo xtask bench [--quick] [--rounds N]`: echo-server benchmarks of ringline (io_uring and
//! mio backends) against a tokio current-thread baseline, using the binaries of the `bench` crate.
//!
//! For each profile and round the three servers run in turn (A B C A B C …), each as a fresh
//! child process pinned to CPU 0 (`taskset -c 0`) on `127.0.0.1:0`; once it prints its
//! `listening on ADDR` line, `loadgen` runs pinned to CPU 1 with `--server-pid`, so it samples
//! the server's `/proc/PID/stat` CPU ticks at the start and end of the measured window and its
//! `/proc/PID/status` memory at the end. Then the server gets SIGTERM and is waited for.
//!
//! The report (a markdown table per profile: medians across rounds, min–max spreads, ratios
//! against tokio) is printed and written to `<target>/bench/latest.md`; child logs go to
//! `<target>/bench/logs/`. A failed child is reported as FAILED with the reason, the other runs
//! go on, and the command fails at the end.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{Cargo, StepResult};
use crate::server;

/// The variable that forces ringline's backend at launch.
const BACKEND_VAR: &str = "RINGLINE_BACKEND";

/// How long a server may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections of the idle-connections profile.
const IDLE_CONNS: usize = 2000;

/// Options of `cargo xtask bench`.
#[derive(Debug, PartialEq)]
pub(crate) struct Options {
    /// Rounds per load profile.
    rounds: usize,
    /// Seconds of warmup before each measured window.
    warmup_secs: f64,
    /// Seconds of each measured window.
    secs: f64,
    /// Seconds the idle connections are held.
    idle_secs: f64,
    /// `--quick` was given (shown in the report).
    quick: bool,
}

/// Parses `[--quick] [--rounds N]`; `--quick` means 1 round and shorter windows unless
/// `--rounds` says otherwise.
pub(crate) fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut quick = false;
    let mut rounds = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--rounds" => {
                let value = iter.next().ok_or("--rounds needs a number")?;
                match value.parse::<usize>() {
                    Ok(n) if n >= 1 => rounds = Some(n),
                    _ => return Err(format!("--rounds needs a number of at least 1, not {value:?}")),
                }
            }
            other => return Err(format!("unknown bench argument {other:?}")),
        }
    }
    Ok(if quick {
        Options { rounds: rounds.unwrap_or(1), warmup_secs: 0.5, secs: 1.5, idle_secs: 1.0, quick }
    } else {
        Options { rounds: rounds.unwrap_or(3), warmup_secs: 1.0, secs: 3.0, idle_secs: 2.0, quick }
    })
}

/// A server under test.
struct Server {
    /// Name in the tables.
    name: &'static str,
    /// Binary of the `bench` crate.
    bin: &'static str,
    /// `RINGLINE_BACKEND` for the run; `None` removes it.
    backend: Option<&'static str>,
}

/// The servers, in the order they alternate within a round; tokio is the baseline of the ratios.
const SERVERS: &[Server] = &[
    Server { name: "ringline uring", bin: "ringline_echo", backend: Some("uring") },
    Server { name: "ringline mio", bin: "ringline_echo", backend: Some("mio") },
    Server { name: "tokio", bin: "tokio_echo", backend: None },
];

/// The baseline server's name.
const BASELINE: &str = "tokio";

/// A load profile.
struct Profile {
    /// Title of its table.
    name: &'static str,
    /// Short name for log files.
    slug: &'static str,
    /// Connections.
    conns: usize,
    /// Messages in flight per connection.
    depth: usize,
    /// Bytes per message.
    size: usize,
}

/// The load profiles, in run order.
const PROFILES: &[Profile] = &[
    Profile { name: "64B x 100 conns, depth 1", slug: "64b-100c-d1", conns: 100, depth: 1, size: 64 },
    Profile { name: "64B x 100 conns, depth 16", slug: "64b-100c-d16", conns: 100, depth: 16, size: 64 },
    Profile { name: "16KiB x 50 conns, depth 1", slug: "16k-50c-d1", conns: 50, depth: 1, size: 16 * 1024 },
    Profile { name: "64B x 2000 conns, depth 1", slug: "64b-2000c-d1", conns: 2000, depth: 1, size: 64 },
    Profile { name: "64B x 1 conn, depth 1 (latency)", slug: "64b-1c-d1", conns: 1, depth: 1, size: 64 },
];

/// What the harness found about the machine.
struct Machine {
    /// Directory of the release binaries.
    bin_dir: PathBuf,
    /// Directory for child logs.
    log_dir: PathBuf,
    /// CPUs for the server and the load generator, when pinning is possible.
    pin: Option<(&'static str, &'static str)>,
    /// Why there is no pinning, if there is none.
    pin_note: String,
    /// Clock ticks per second of `/proc/PID/stat`.
    clk_tck: f64,
    /// Where `CLK_TCK` came from.
    clk_note: String,
}

/// One measured window of one server.
#[derive(Clone, Copy, Debug, Default)]
struct LoadSample {
    /// Messages per second.
    rate: f64,
    /// Latency percentiles in µs.
    p50: f64,
    /// 99th percentile, µs.
    p99: f64,
    /// 99.9th percentile, µs.
    p999: f64,
    /// Server user CPU per message, µs.
    user: f64,
    /// Server system CPU per message, µs.
    sys: f64,
    /// Server peak RSS (VmHWM), MiB.
    hwm_mib: f64,
}

/// The idle-connections measurement of one server.
#[derive(Clone, Copy, Debug)]
struct IdleSample {
    /// Server RSS before any connection, KiB.
    before_kib: f64,
    /// Server RSS while holding the connections, KiB.
    with_kib: f64,
    /// Server peak RSS, KiB.
    hwm_kib: f64,
}

/// What one run produced: the loadgen's `key=value` pairs and the non-fatal problems seen.
struct RunOutput {
    /// Every `key=value` token of loadgen's stdout.
    values: HashMap<String, String>,
    /// Problems that did not invalidate the measurement (e.g. an unclean server exit).
    problems: Vec<String>,
}

/// Results of one server in one profile, over the rounds.
struct Row<S> {
    /// The server's name.
    server: &'static str,
    /// Successful samples.
    samples: Vec<S>,
    /// Failure reasons of failed rounds.
    failures: Vec<String>,
    /// Non-fatal problems.
    problems: Vec<String>,
}

impl<S> Row<S> {
    /// An empty row for `server`.
    fn new(server: &'static str) -> Self {
        Row { server, samples: Vec::new(), failures: Vec::new(), problems: Vec::new() }
    }
}

/// Builds the `bench` binaries, runs every profile and writes the report.
pub(crate) fn run(root: &Path, opts: &Options) -> StepResult {
    let started = Instant::now();
    Cargo::new(root, &["build", "--release", "-p", "bench"]).run()?;
    let target = target_dir(root);
    let machine = probe_machine(&target)?;
    println!("bench: {}; {}", machine.pin_note, machine.clk_note);

    let mut report = header(opts, &machine);
    let mut failed_runs = 0;
    let mut problem_runs = 0;
    for profile in PROFILES {
        let mut rows: Vec<Row<LoadSample>> = SERVERS.iter().map(|s| Row::new(s.name)).collect();
        for round in 1..=opts.rounds {
            for (server, row) in SERVERS.iter().zip(rows.iter_mut()) {
                let tag = format!("{}-{}-r{round}", profile.slug, server.name.replace(' ', "-"));
                let args = load_args(profile, opts);
                let outcome = run_one(&machine, server, &args, &tag, opts.warmup_secs + opts.secs)
                    .and_then(|out| load_sample(&out.values, machine.clk_tck).map(|s| (s, out.problems)));
                match outcome {
                    Ok((sample, problems)) => {
                        println!(
                            "  [{}] round {round}/{}: {:<15} {:>10.0} msgs/s  p50 {:>8.1} µs  p99 {:>8.1} µs  \
                             user {:.3} sys {:.3} µs/msg",
                            profile.name,
                            opts.rounds,
                            server.name,
                            sample.rate,
                            sample.p50,
                            sample.p99,
                            sample.user,
                            sample.sys
                        );
                        problem_runs += usize::from(!problems.is_empty());
                        for p in &problems {
                            println!("    problem: {p}");
                        }
                        row.samples.push(sample);
                        row.problems.extend(problems);
                    }
                    Err(reason) => {
                        println!(
                            "  [{}] round {round}/{}: {:<15} FAILED: {reason}",
                            profile.name, opts.rounds, server.name
                        );
                        failed_runs += 1;
                        row.failures.push(reason);
                    }
                }
            }
        }
        let table = load_table(profile, &rows, opts.rounds);
        println!("\n{table}");
        report.push_str(&table);
    }

    let mut rows: Vec<Row<IdleSample>> = SERVERS.iter().map(|s| Row::new(s.name)).collect();
    for (server, row) in SERVERS.iter().zip(rows.iter_mut()) {
        let tag = format!("idle-{}", server.name.replace(' ', "-"));
        let args = vec![
            "--connect-only".to_string(),
            "--conns".to_string(),
            IDLE_CONNS.to_string(),
            "--secs".to_string(),
            opts.idle_secs.to_string(),
        ];
        match run_one(&machine, server, &args, &tag, opts.idle_secs).and_then(|out| {
            let sample = idle_sample(&out.values)?;
            Ok((sample, out.problems))
        }) {
            Ok((sample, problems)) => {
                println!(
                    "  [idle] {:<15} rss {:.1} -> {:.1} MiB",
                    server.name,
                    sample.before_kib / 1024.0,
                    sample.with_kib / 1024.0
                );
                problem_runs += usize::from(!problems.is_empty());
                row.samples.push(sample);
                row.problems.extend(problems);
            }
            Err(reason) => {
                println!("  [idle] {:<15} FAILED: {reason}", server.name);
                failed_runs += 1;
                row.failures.push(reason);
            }
        }
    }
    let table = idle_table(&rows);
    println!("\n{table}");
    report.push_str(&table);

    let _ = writeln!(report, "Total wall time: {:.0} s.", started.elapsed().as_secs_f64());
    let path = target.join("bench").join("latest.md");
    std::fs::write(&path, &report).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("report written to {}", path.display());
    match (failed_runs, problem_runs) {
        (0, 0) => Ok(()),
        (f, p) => Err(format!(
            "{f} run(s) FAILED and {p} run(s) had problems (unclean server exit); see {}",
            path.display()
        )),
    }
}

/// The target directory: `CARGO_TARGET_DIR` (relative to the root) or `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// Finds the binaries, `taskset`, the CPU count and `CLK_TCK`; creates the log directory.
fn probe_machine(target: &Path) -> StepResult<Machine> {
    let bin_dir = target.join("release");
    for server in SERVERS.iter().map(|s| s.bin).chain(["loadgen"]) {
        if !bin_dir.join(server).is_file() {
            return Err(format!("{} was not built", bin_dir.join(server).display()));
        }
    }
    let log_dir = target.join("bench").join("logs");
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let (pin, pin_note) = match (taskset, cpus >= 2) {
        (true, true) => (Some(("0", "1")), "server pinned to CPU 0, loadgen to CPU 1 (taskset)".to_string()),
        (false, _) => (None, "NOT pinned: `taskset` (util-linux) was not found".to_string()),
        (true, false) => (None, format!("NOT pinned: only {cpus} CPU available")),
    };
    let getconf = Command::new("getconf").arg("CLK_TCK").output().ok();
    let ticks = getconf
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0);
    let (clk_tck, clk_note) = match ticks {
        Some(t) => (t, format!("CLK_TCK {t} (getconf)")),
        None => (100.0, "CLK_TCK assumed 100 (getconf failed)".to_string()),
    };
    Ok(Machine { bin_dir, log_dir, pin, pin_note, clk_tck, clk_note })
}

/// The loadgen arguments of a load profile.
fn load_args(profile: &Profile, opts: &Options) -> Vec<String> {
    [
        ("--conns", profile.conns.to_string()),
        ("--depth", profile.depth.to_string()),
        ("--size", profile.size.to_string()),
        ("--warmup-secs", opts.warmup_secs.to_string()),
        ("--secs", opts.secs.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// A command for `bin`, pinned to `cpu` when pinning is available.
fn pinned(machine: &Machine, bin: &str, cpu: Option<&str>) -> Command {
    let path = machine.bin_dir.join(bin);
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(path);
            c
        }
        None => Command::new(path),
    }
}

/// Starts `server`, runs loadgen against it with `args`, stops the server.
///
/// `Err` is a failure reason for the table: the server did not start or died, loadgen failed
/// or timed out. `run_secs` is how long loadgen is expected to run after connecting.
fn run_one(
    machine: &Machine,
    server: &Server,
    args: &[String],
    tag: &str,
    run_secs: f64,
) -> Result<RunOutput, String> {
    let server_err = machine.log_dir.join(format!("{tag}.server.stderr"));
    let mut cmd = pinned(machine, server.bin, machine.pin.map(|p| p.0));
    cmd.args(["--addr", "127.0.0.1:0"]).stdin(Stdio::null()).stdout(Stdio::piped());
    cmd.stderr(log_file(&server_err)?);
    match server.backend {
        Some(backend) => cmd.env(BACKEND_VAR, backend),
        None => cmd.env_remove(BACKEND_VAR),
    };
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", server.bin))?;
    let addr = match wait_listening(&mut child) {
        Ok(addr) => addr,
        Err(reason) => {
            let status = stop(&mut child).0;
            return Err(format!(
                "server did not start: {reason} (exit: {}); stderr: {}",
                status.map_or("still running, killed".to_string(), |s| s.to_string()),
                tail(&server_err)
            ));
        }
    };

    let (out_path, err_path) = (
        machine.log_dir.join(format!("{tag}.loadgen.stdout")),
        machine.log_dir.join(format!("{tag}.loadgen.stderr")),
    );
    let mut load = pinned(machine, "loadgen", machine.pin.map(|p| p.1));
    load.args(args).args(["--addr", &addr, "--server-pid", &child.id().to_string()]);
    load.stdin(Stdio::null()).stdout(log_file(&out_path)?).stderr(log_file(&err_path)?);
    // Connecting 2000 sockets and the window itself, plus generous slack.
    let limit = Duration::from_secs_f64(run_secs + 60.0);
    let load_result = match load.spawn() {
        Ok(mut loadgen) => server::wait_timeout(&mut loadgen, limit).map_err(|e| format!("loadgen {e}")),
        Err(e) => Err(format!("cannot start loadgen: {e}")),
    };

    let died = child.try_wait().ok().flatten();
    let (stop_status, stop_problem) = if died.is_some() { (died, None) } else { stop(&mut child) };
    let mut failures = Vec::new();
    if let Some(status) = died {
        failures.push(format!("server died during the run ({status}); stderr: {}", tail(&server_err)));
    }
    match load_result {
        Ok(status) if status.success() => {}
        Ok(status) => failures.push(format!("loadgen {status}: {}", tail(&err_path))),
        Err(reason) => failures.push(reason),
    }
    if !failures.is_empty() {
        if died.is_none() && !tail(&server_err).is_empty() {
            failures.push(format!("server stderr: {}", tail(&server_err)));
        }
        return Err(failures.join("; "));
    }
    let mut problems = Vec::new();
    problems.extend(stop_problem);
    if let Some(status) = stop_status.filter(|s| !s.success()) {
        problems.push(format!("server exited with {status} after SIGTERM; stderr: {}", tail(&server_err)));
    }
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    Ok(RunOutput { values: parse_values(&stdout), problems })
}

/// Reads the server's stdout until its `listening on ADDR` line; returns `ADDR`.
fn wait_listening(child: &mut Child) -> Result<String, String> {
    let line = server::wait_listening_line(child, START_TIMEOUT)?;
    server::listening_addr(&line).ok_or_else(|| format!("no address in {line:?}"))
}

/// Creates (truncates) a log file for a child's output.
fn log_file(path: &Path) -> Result<File, String> {
    File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Sends SIGTERM to the server and waits; kills it after [`STOP_TIMEOUT`].
///
/// Returns its exit status (if it exited by itself) and a problem description, if any.
fn stop(child: &mut Child) -> (Option<ExitStatus>, Option<String>) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let deadline = Instant::now() + if sent { STOP_TIMEOUT } else { Duration::ZERO };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Some(status), None),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let why = if sent {
        format!("did not exit within {} s of SIGTERM", STOP_TIMEOUT.as_secs())
    } else {
        "`kill -TERM` failed".to_string()
    };
    (None, Some(format!("server {why}; killed")))
}

/// The last few non-empty lines of a log file, on one line (empty if none).
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let joined = lines[lines.len().saturating_sub(3)..].join(" / ");
    const MAX: usize = 400;
    if joined.chars().count() > MAX {
        format!("…{}", joined.chars().skip(joined.chars().count() - MAX).collect::<String>())
    } else {
        joined
    }
}

/// Every `key=value` token in `text`.
fn parse_values(text: &str) -> HashMap<String, String> {
    text.split_whitespace()
        .filter_map(|token| token.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A numeric value of loadgen's output.
fn value(values: &HashMap<String, String>, key: &str) -> Result<f64, String> {
    let text = values.get(key).ok_or_else(|| format!("loadgen printed no `{key}=`"))?;
    text.parse().map_err(|_| format!("loadgen printed `{key}={text}`, not a number"))
}

/// Turns loadgen's values into a sample; CPU ticks become µs per message.
fn load_sample(values: &HashMap<String, String>, clk_tck: f64) -> Result<LoadSample, String> {
    let msgs = value(values, "msgs")?;
    let secs = value(values, "secs")?;
    if msgs < 1.0 || secs <= 0.0 {
        return Err(format!("no messages completed in the {secs} s window"));
    }
    let per_msg = |ticks: f64| ticks / clk_tck * 1e6 / msgs;
    Ok(LoadSample {
        rate: msgs / secs,
        p50: value(values, "p50_us")?,
        p99: value(values, "p99_us")?,
        p999: value(values, "p999_us")?,
        user: per_msg(value(values, "utime_ticks")?),
        sys: per_msg(value(values, "stime_ticks")?),
        hwm_mib: value(values, "hwm_kib")? / 1024.0,
    })
}

/// Turns loadgen's `--connect-only` values into a sample.
fn idle_sample(values: &HashMap<String, String>) -> Result<IdleSample, String> {
    let conns = value(values, "conns")?;
    if conns as usize != IDLE_CONNS {
        return Err(format!("only {conns} of {IDLE_CONNS} connections survived"));
    }
    Ok(IdleSample {
        before_kib: value(values, "rss_before_kib")?,
        with_kib: value(values, "rss_kib")?,
        hwm_kib: value(values, "hwm_kib")?,
    })
}

/// The median of `values` (mean of the middle two for an even count); NaN when empty.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `(min, max)` of `values`.
fn spread(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// `a / b` with two decimals, or `n/a`.
fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 && a.is_finite() => format!("{:.2}", a / b),
        _ => "n/a".to_string(),
    }
}

/// Makes free text safe for a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The notes cell of a row: partial failures and problems.
fn notes<S>(row: &Row<S>, rounds: usize) -> String {
    let mut notes = Vec::new();
    if !row.failures.is_empty() {
        notes.push(format!("FAILED {}/{rounds}: {}", row.failures.len(), row.failures[0]));
    }
    notes.extend(row.problems.iter().cloned());
    cell(&notes.join("; "))
}

/// The medians of one load row: `(rate, p50, p99, p999, user, sys, total, hwm)`.
fn load_medians(samples: &[LoadSample]) -> [f64; 8] {
    let m = |f: fn(&LoadSample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
    [
        m(|s| s.rate),
        m(|s| s.p50),
        m(|s| s.p99),
        m(|s| s.p999),
        m(|s| s.user),
        m(|s| s.sys),
        m(|s| s.user + s.sys),
        m(|s| s.hwm_mib),
    ]
}

/// The markdown table of a load profile.
fn load_table(profile: &Profile, rows: &[Row<LoadSample>], rounds: usize) -> String {
    let mut t = format!(
        "### {}\n\n\
         | server | msgs/s (min–max) | p50 µs | p99 µs | p999 µs | user µs/msg (min–max) | sys µs/msg \
         | total µs/msg | ratio user vs tokio | ratio total vs tokio | peak RSS MiB | notes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        profile.name
    );
    let baseline =
        rows.iter().find(|r| r.server == BASELINE && !r.samples.is_empty()).map(|r| load_medians(&r.samples));
    for row in rows {
        if row.samples.is_empty() {
            let reason = row.failures.first().map_or("no samples", String::as_str);
            let _ = writeln!(
                t,
                "| {} | **FAILED**: {} | – | – | – | – | – | – | – | – | – | all {rounds} round(s) failed |",
                row.server,
                cell(reason)
            );
            continue;
        }
        let [rate, p50, p99, p999, user, sys, total, hwm] = load_medians(&row.samples);
        let (rate_lo, rate_hi) = spread(&row.samples.iter().map(|s| s.rate).collect::<Vec<_>>());
        let (user_lo, user_hi) = spread(&row.samples.iter().map(|s| s.user).collect::<Vec<_>>());
        let _ = writeln!(
            t,
            "| {} | {rate:.0} ({rate_lo:.0}–{rate_hi:.0}) | {p50:.1} | {p99:.1} | {p999:.1} | \
             {user:.3} ({user_lo:.3}–{user_hi:.3}) | {sys:.3} | {total:.3} | {} | {} | {hwm:.1} | {} |",
            row.server,
            ratio(user, baseline.map(|b| b[4])),
            ratio(total, baseline.map(|b| b[6])),
            notes(row, rounds)
        );
    }
    t.push('\n');
    t
}

/// The markdown table of the idle-connections profile.
fn idle_table(rows: &[Row<IdleSample>]) -> String {
    let mut t = format!(
        "### {IDLE_CONNS} idle connections (one 64 B echo each, then held)\n\n\
         | server | RSS before MiB | RSS with conns MiB | KiB per conn | ratio vs tokio | peak RSS MiB | notes |\n\
         |---|---:|---:|---:|---:|---:|---|\n"
    );
    let per_conn = |s: &IdleSample| (s.with_kib - s.before_kib) / IDLE_CONNS as f64;
    let baseline = rows.iter().find(|r| r.server == BASELINE).and_then(|r| r.samples.first()).map(per_conn);
    for row in rows {
        match row.samples.first() {
            Some(s) => {
                let _ = writeln!(
                    t,
                    "| {} | {:.1} | {:.1} | {:.2} | {} | {:.1} | {} |",
                    row.server,
                    s.before_kib / 1024.0,
                    s.with_kib / 1024.0,
                    per_conn(s),
                    ratio(per_conn(s), baseline),
                    s.hwm_kib / 1024.0,
                    notes(row, 1)
                );
            }
            None => {
                let reason = row.failures.first().map_or("no samples", String::as_str);
                let _ = writeln!(t, "| {} | **FAILED**: {} | – | – | – | – | |", row.server, cell(reason));
            }
        }
    }
    t.push('\n');
    t
}

/// The report's title and method notes.
fn header(opts: &Options, machine: &Machine) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "# ringline echo benchmark{}\n\n\
         {date}; Linux {}; {cpus} CPUs; {}; {}.\n\
         Rounds: {} per load profile, servers alternating within a round; warmup {} s, window {} s; \
         idle profile: 1 round, held {} s.\n\n\
         Every server is one thread serving (ringline: 1 worker plus its acceptor thread; tokio: \
         current_thread runtime). Values are medians across rounds; min–max spreads in parentheses. \
         Latency is per message, from being queued by loadgen to its last byte read back. CPU is the \
         server process's utime/stime over the measured window (`/proc/PID/stat`, resolution 1/CLK_TCK s), \
         divided by the messages completed in it. Peak RSS is VmHWM at the end of the window. \
         Loadgen is a single thread and may be the bottleneck for msgs/s; compare CPU per message.\n\n",
        if opts.quick { " (quick run)" } else { "" },
        kernel.trim(),
        machine.pin_note,
        machine.clk_note,
        opts.rounds,
        opts.warmup_secs,
        opts.secs,
        opts.idle_secs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn args_default_quick_and_rounds() {
        let default = parse_args(&[]).unwrap();
        assert_eq!((default.rounds, default.secs, default.quick), (3, 3.0, false));
        let quick = parse_args(&strings(&["--quick"])).unwrap();
        assert_eq!((quick.rounds, quick.quick), (1, true));
        assert!(quick.secs < default.secs);
        assert_eq!(parse_args(&strings(&["--rounds", "5"])).unwrap().rounds, 5);
        assert_eq!(parse_args(&strings(&["--quick", "--rounds", "2"])).unwrap().rounds, 2);
        assert!(parse_args(&strings(&["--rounds", "0"])).is_err());
        assert!(parse_args(&strings(&["--rounds"])).is_err());
        assert!(parse_args(&strings(&["--fast"])).is_err());
    }

    #[test]
    fn median_and_spread() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (1.0, 3.0));
    }

    #[test]
    fn listening_line_gives_the_address() {
        let line = "ringline_echo listening on 127.0.0.1:40123 (Uring backend)";
        assert_eq!(server::listening_addr(line).as_deref(), Some("127.0.0.1:40123"));
        assert_eq!(server::listening_addr("starting up"), None);
    }

    #[test]
    fn loadgen_output_becomes_a_sample() {
        let out = "msgs=200000 secs=2.000 p50_us=10.5 p99_us=20.0 p999_us=40.0 errors=0\n\
                   utime_ticks=20 stime_ticks=100 rss_kib=2048 hwm_kib=4096\n";
        let s = load_sample(&parse_values(out), 100.0).unwrap();
        assert_eq!(s.rate, 100_000.0);
        assert_eq!((s.p50, s.p99, s.p999), (10.5, 20.0, 40.0));
        // 0.2 s user over 200k messages is 1 µs each; 1 s system is 5 µs each.
        assert!((s.user - 1.0).abs() < 1e-9 && (s.sys - 5.0).abs() < 1e-9);
        assert_eq!(s.hwm_mib, 4.0);
        assert!(load_sample(&parse_values("msgs=0 secs=1"), 100.0).is_err());
        assert!(load_sample(&parse_values("msgs=10 secs=1 p50_us=1"), 100.0).is_err());
    }

    #[test]
    fn failed_rows_are_marked_in_the_table() {
        let profile = &PROFILES[0];
        let mut ok = Row::new("tokio");
        ok.samples.push(LoadSample { rate: 1000.0, user: 2.0, sys: 3.0, ..LoadSample::default() });
        let mut failed = Row::new("ringline uring");
        failed.failures.push("server did not start: a | b".to_string());
        let table = load_table(profile, &[failed, ok], 1);
        assert!(table.contains("| ringline uring | **FAILED**: server did not start: a \\| b |"), "{table}");
        assert!(table.contains("| tokio | 1000 (1000–1000) |"), "{table}");
        assert!(table.contains("| 1.00 | 1.00 |"), "{table}");
    }
}
