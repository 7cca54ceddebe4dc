//! `cargo xtask bench [--quick] [--rounds N]`: echo-server benchmarks of ringline (io_uring and
//! mio backends) against a tokio current-thread baseline, using the binaries of the `bench` crate.
//!
//! `ringline_echo` is built twice from the same source: once as the `bench` crate's default
//! (ringline with both backends, `RINGLINE_BACKEND` picks one at launch) and once with
//! `--no-default-features` (ringline with io_uring only), copied to
//! `<target>/bench/bin/ringline_echo_uring_only` before the default build puts the
//! both-backend binary back in `<target>/release/`. Each server's `listening on` line names the
//! backend it runs and the backends it was built with, and the harness checks both.
//!
//! For each profile and round the servers run in turn (A B C A B C …), each as a fresh
//! child process pinned to CPU 0 (`taskset -c 0`) on `127.0.0.1:0`; once it prints its
//! `listening on ADDR` line, `loadgen` runs pinned to CPU 1 with `--server-pid`, so it samples
//! the server's CPU (`/proc/PID/stat` ticks, `/proc/PID/task/*/schedstat` ns) at the start and
//! end of the measured window and its `/proc/PID/status` memory at the end. Then the server gets
//! SIGTERM and is waited for.
//!
//! The idle profile opens 2,000 connections with `loadgen --connect-only`; the server keeps its
//! open-connection count in a stats file (`--stats-file`), and loadgen samples the server's RSS
//! only once that count says the server holds all of them, before any byte is sent, then again
//! after one echo on each.
//!
//! The report (a markdown table per profile: medians across rounds, min–max spreads, ratios
//! against tokio, the two builds compared) is printed and written to `<target>/bench/latest.md`;
//! child logs go to `<target>/bench/logs/`. A failed child is reported as FAILED with the reason,
//! the other runs go on, and the command fails at the end.

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

/// Where the uring-only `ringline_echo` is kept, relative to the target directory.
const URING_ONLY_BIN: &str = "bench/bin/ringline_echo_uring_only";

/// The target of the both-backend build: CPU per message at most this times the uring-only
/// build's.
const BUILD_RATIO_TARGET: f64 = 1.02;

/// Options of `cargo xtask bench`.
#[derive(Debug, PartialEq)]
pub(crate) struct Options {
    /// Rounds per profile (the idle profile included).
    rounds: usize,
    /// Seconds of warmup before each measured window.
    warmup_secs: f64,
    /// Seconds of each measured window.
    secs: f64,
    /// Seconds the idle connections are held before each memory sample.
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
        Options { rounds: rounds.unwrap_or(1), warmup_secs: 0.5, secs: 1.5, idle_secs: 0.3, quick }
    } else {
        // Warmup 0.5 s (was 1 s) and idle holds of 0.5 s keep the whole command, builds included,
        // near 5 minutes on a fresh clone of a 2-core machine now that the first profile has a
        // fourth server and the idle profile three rounds.
        Options { rounds: rounds.unwrap_or(3), warmup_secs: 0.5, secs: 3.0, idle_secs: 0.5, quick }
    })
}

/// A server under test.
struct Server {
    /// Name in the tables.
    name: &'static str,
    /// The binary, relative to the target directory.
    bin: &'static str,
    /// `RINGLINE_BACKEND` for the run; `None` removes it.
    backend: Option<&'static str>,
    /// What its `listening on` line must contain: the backend it runs and the backends it
    /// was built with (`None`: not checked).
    reports: Option<&'static str>,
}

/// The both-backend ringline build on io_uring.
const URING: Server = Server {
    name: "ringline uring",
    bin: "release/ringline_echo",
    backend: Some("uring"),
    reports: Some("(Uring backend; built with Uring+Mio)"),
};

/// The uring-only ringline build: the same source without the mio backend compiled in.
const URING_ONLY: Server = Server {
    name: "ringline uring-only build",
    bin: URING_ONLY_BIN,
    backend: Some("uring"),
    reports: Some("(Uring backend; built with Uring)"),
};

/// The both-backend ringline build on mio.
const MIO: Server = Server {
    name: "ringline mio",
    bin: "release/ringline_echo",
    backend: Some("mio"),
    reports: Some("(Mio backend; built with Uring+Mio)"),
};

/// The baseline.
const TOKIO: Server = Server { name: "tokio", bin: "release/tokio_echo", backend: None, reports: None };

/// The servers of most profiles, in the order they alternate within a round; tokio is the
/// baseline of the ratios.
const SERVERS: &[Server] = &[URING, MIO, TOKIO];

/// The servers of the profile that compares the two builds.
const SERVERS_WITH_URING_ONLY: &[Server] = &[URING, URING_ONLY, MIO, TOKIO];

/// The baseline server's name.
const BASELINE: &str = "tokio";

/// The order of `servers` in round `round` (1-based): as listed, except that the two uring
/// builds swap places in even rounds, so neither always runs first.
fn round_order(servers: &'static [Server], round: usize) -> Vec<&'static Server> {
    let mut order: Vec<&Server> = servers.iter().collect();
    let pos = |name: &str| order.iter().position(|s| s.name == name);
    if let (0, Some(a), Some(b)) = (round % 2, pos(URING.name), pos(URING_ONLY.name)) {
        order.swap(a, b);
    }
    order
}

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
    /// The servers it runs.
    servers: &'static [Server],
}

/// The load profiles, in run order.
const PROFILES: &[Profile] = &[
    Profile {
        name: "64B x 100 conns, depth 1",
        slug: "64b-100c-d1",
        conns: 100,
        depth: 1,
        size: 64,
        servers: SERVERS_WITH_URING_ONLY,
    },
    Profile {
        name: "64B x 100 conns, depth 16",
        slug: "64b-100c-d16",
        conns: 100,
        depth: 16,
        size: 64,
        servers: SERVERS,
    },
    Profile {
        name: "16KiB x 50 conns, depth 1",
        slug: "16k-50c-d1",
        conns: 50,
        depth: 1,
        size: 16 * 1024,
        servers: SERVERS,
    },
    Profile {
        name: "64B x 2000 conns, depth 1",
        slug: "64b-2000c-d1",
        conns: 2000,
        depth: 1,
        size: 64,
        servers: SERVERS,
    },
    Profile {
        name: "64B x 1 conn, depth 1 (latency)",
        slug: "64b-1c-d1",
        conns: 1,
        depth: 1,
        size: 64,
        servers: SERVERS,
    },
];

/// The servers of the idle-connections profile.
const IDLE_SERVERS: &[Server] = SERVERS;

/// What the harness found about the machine.
struct Machine {
    /// The target directory, which the servers' `bin` paths are relative to.
    target: PathBuf,
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
    /// Server CPU per message, µs: schedstat's on-CPU time when loadgen got it, else user + sys.
    total: f64,
    /// Server peak RSS (VmHWM), MiB.
    hwm_mib: f64,
}

/// The idle-connections measurement of one server.
#[derive(Clone, Copy, Debug, Default)]
struct IdleSample {
    /// Server RSS before any connection, KiB.
    before_kib: f64,
    /// Server RSS holding the connections before any byte was sent, KiB.
    idle_kib: f64,
    /// Server RSS holding the connections after one echo on each, KiB.
    echoed_kib: f64,
    /// Server peak RSS, KiB.
    hwm_kib: f64,
}

impl IdleSample {
    /// KiB per idle connection above the baseline.
    fn idle_per_conn(&self) -> f64 {
        (self.idle_kib - self.before_kib) / IDLE_CONNS as f64
    }

    /// KiB per connection above the baseline after one echo on each.
    fn echoed_per_conn(&self) -> f64 {
        (self.echoed_kib - self.before_kib) / IDLE_CONNS as f64
    }
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
    /// Successful samples with their round (1-based).
    samples: Vec<(usize, S)>,
    /// Failure reasons of failed rounds.
    failures: Vec<String>,
    /// Non-fatal problems.
    problems: Vec<String>,
}

impl<S: Copy> Row<S> {
    /// An empty row for `server`.
    fn new(server: &'static str) -> Self {
        Row { server, samples: Vec::new(), failures: Vec::new(), problems: Vec::new() }
    }

    /// `f` of every sample.
    fn values(&self, f: impl Fn(&S) -> f64) -> Vec<f64> {
        self.samples.iter().map(|(_, s)| f(s)).collect()
    }

    /// The median of `f` over the samples.
    fn median(&self, f: impl Fn(&S) -> f64) -> f64 {
        median(&self.values(f))
    }

    /// Records one run of `round`: prints `what` with `describe` of the sample (and each
    /// problem), or the failure; counts both in `tally`.
    fn record(
        &mut self,
        round: usize,
        what: &str,
        outcome: Result<(S, Vec<String>), String>,
        tally: &mut Tally,
        describe: impl Fn(&S) -> String,
    ) {
        match outcome {
            Ok((sample, problems)) => {
                println!("  {what} {}", describe(&sample));
                tally.problems += usize::from(!problems.is_empty());
                for p in &problems {
                    println!("    problem: {p}");
                }
                self.samples.push((round, sample));
                self.problems.extend(problems);
            }
            Err(reason) => {
                println!("  {what} FAILED: {reason}");
                tally.failed += 1;
                self.failures.push(reason);
            }
        }
    }
}

/// Builds the `bench` binaries, runs every profile and writes the report.
pub(crate) fn run(root: &Path, opts: &Options) -> StepResult {
    let started = Instant::now();
    let target = target_dir(root);
    build(root, &target)?;
    let machine = probe_machine(&target)?;
    println!("bench: {}; {}", machine.pin_note, machine.clk_note);

    let mut report = header(opts, &machine);
    let mut tally = Tally::default();
    for profile in PROFILES {
        let rows = run_load_profile(&machine, profile, opts, &mut tally);
        let mut text = load_table(profile, &rows, opts.rounds);
        if let (Some(both), Some(only)) =
            (rows.iter().find(|r| r.server == URING.name), rows.iter().find(|r| r.server == URING_ONLY.name))
        {
            text.push_str(&build_table(profile, both, only));
        }
        println!("\n{text}");
        report.push_str(&text);
    }
    let rows = run_idle_profile(&machine, opts, &mut tally);
    let text = idle_table(&rows, opts.rounds);
    println!("\n{text}");
    report.push_str(&text);

    let _ = writeln!(report, "Total wall time: {:.0} s.", started.elapsed().as_secs_f64());
    let path = target.join("bench").join("latest.md");
    std::fs::write(&path, &report).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("report written to {}", path.display());
    match (tally.failed, tally.problems) {
        (0, 0) => Ok(()),
        (f, p) => Err(format!(
            "{f} run(s) FAILED and {p} run(s) had problems (unclean server exit); see {}",
            path.display()
        )),
    }
}

/// Failed runs and runs with problems, over the whole benchmark.
#[derive(Default)]
struct Tally {
    /// Runs that produced no sample.
    failed: usize,
    /// Runs whose sample counts but that had a problem.
    problems: usize,
}

/// Builds the uring-only `ringline_echo`, keeps a copy of it, then builds the `bench` crate's
/// default (both-backend) binaries, which puts the both-backend `ringline_echo` back in
/// `<target>/release/`.
///
/// Cargo unifies features within one build, so the two builds are separate invocations; they
/// share the target directory (dependencies whose features do not change are built once), and
/// cargo keeps both variants of `ringline` and the binary, so a rerun rebuilds nothing.
fn build(root: &Path, target: &Path) -> StepResult {
    Cargo::new(
        root,
        &["build", "--release", "-p", "bench", "--no-default-features", "--bin", "ringline_echo"],
    )
    .run()?;
    let copy = target.join(URING_ONLY_BIN);
    let dir = copy.parent().ok_or("the uring-only path has no parent")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let built = target.join("release").join("ringline_echo");
    // Removed first: copying onto a binary that is still running fails with ETXTBSY.
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(&built, &copy)
        .map_err(|e| format!("cannot copy {} to {}: {e}", built.display(), copy.display()))?;
    Cargo::new(root, &["build", "--release", "-p", "bench"]).run()
}

/// Runs every round of a load profile; prints a line per run.
fn run_load_profile(
    machine: &Machine,
    profile: &Profile,
    opts: &Options,
    tally: &mut Tally,
) -> Vec<Row<LoadSample>> {
    let mut rows: Vec<Row<LoadSample>> = profile.servers.iter().map(|s| Row::new(s.name)).collect();
    for round in 1..=opts.rounds {
        for server in round_order(profile.servers, round) {
            let row = rows.iter_mut().find(|r| r.server == server.name).expect("a row per server");
            let tag = format!("{}-{}-r{round}", profile.slug, slug(server.name));
            let args = load_args(profile, opts);
            let outcome = run_one(machine, server, &args, None, &tag, opts.warmup_secs + opts.secs)
                .and_then(|out| load_sample(&out.values, machine.clk_tck).map(|s| (s, out.problems)));
            let what = format!("[{}] round {round}/{}: {:<25}", profile.name, opts.rounds, server.name);
            row.record(round, &what, outcome, tally, |sample| {
                format!(
                    "{:>10.0} msgs/s  p50 {:>8.1} µs  p99 {:>8.1} µs  user {:.3} sys {:.3} total {:.3} µs/msg",
                    sample.rate, sample.p50, sample.p99, sample.user, sample.sys, sample.total
                )
            });
        }
    }
    rows
}

/// Runs every round of the idle-connections profile; prints a line per run.
fn run_idle_profile(machine: &Machine, opts: &Options, tally: &mut Tally) -> Vec<Row<IdleSample>> {
    let mut rows: Vec<Row<IdleSample>> = IDLE_SERVERS.iter().map(|s| Row::new(s.name)).collect();
    for round in 1..=opts.rounds {
        for server in round_order(IDLE_SERVERS, round) {
            let row = rows.iter_mut().find(|r| r.server == server.name).expect("a row per server");
            let tag = format!("idle-{}-r{round}", slug(server.name));
            let stats = machine.log_dir.join(format!("{tag}.stats"));
            // A file left by an earlier run would confirm connections this server never saw.
            let _ = std::fs::remove_file(&stats);
            let stats_arg = stats.display().to_string();
            let args = vec![
                "--connect-only".to_string(),
                "--conns".to_string(),
                IDLE_CONNS.to_string(),
                "--secs".to_string(),
                opts.idle_secs.to_string(),
                "--server-stats".to_string(),
                stats_arg.clone(),
            ];
            let outcome = run_one(machine, server, &args, Some(&stats_arg), &tag, 2.0 * opts.idle_secs)
                .and_then(|out| idle_sample(&out.values).map(|s| (s, out.problems)));
            let what = format!("[idle] round {round}/{}: {:<25}", opts.rounds, server.name);
            row.record(round, &what, outcome, tally, |sample| {
                format!(
                    "rss {:.1} -> {:.1} MiB idle ({:.2} KiB/conn) -> {:.1} MiB after one echo each ({:.2} KiB/conn)",
                    sample.before_kib / 1024.0,
                    sample.idle_kib / 1024.0,
                    sample.idle_per_conn(),
                    sample.echoed_kib / 1024.0,
                    sample.echoed_per_conn()
                )
            });
        }
    }
    rows
}

/// A server name as part of a log file name.
fn slug(name: &str) -> String {
    name.replace(' ', "-")
}

/// The target directory: `CARGO_TARGET_DIR` (relative to the root) or `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// Finds the binaries, `taskset`, the CPU count and `CLK_TCK`; creates the log directory.
fn probe_machine(target: &Path) -> StepResult<Machine> {
    for bin in SERVERS_WITH_URING_ONLY.iter().map(|s| s.bin).chain(["release/loadgen"]) {
        if !target.join(bin).is_file() {
            return Err(format!("{} was not built", target.join(bin).display()));
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
    Ok(Machine { target: target.to_path_buf(), log_dir, pin, pin_note, clk_tck, clk_note })
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

/// A command for `bin` (relative to the target directory), pinned to `cpu` when pinning is
/// available.
fn pinned(machine: &Machine, bin: &str, cpu: Option<&str>) -> Command {
    let path = machine.target.join(bin);
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(path);
            c
        }
        None => Command::new(path),
    }
}

/// Starts `server` (with `--stats-file stats_file` if given), runs loadgen against it with
/// `args`, stops the server.
///
/// `Err` is a failure reason for the table: the server did not start, reported another backend
/// or build than expected, or died; loadgen failed or timed out. `run_secs` is how long loadgen
/// is expected to run after connecting.
fn run_one(
    machine: &Machine,
    server: &Server,
    args: &[String],
    stats_file: Option<&str>,
    tag: &str,
    run_secs: f64,
) -> Result<RunOutput, String> {
    let server_err = machine.log_dir.join(format!("{tag}.server.stderr"));
    let mut cmd = pinned(machine, server.bin, machine.pin.map(|p| p.0));
    cmd.args(["--addr", "127.0.0.1:0"]).stdin(Stdio::null()).stdout(Stdio::piped());
    if let Some(path) = stats_file {
        cmd.args(["--stats-file", path]);
    }
    cmd.stderr(log_file(&server_err)?);
    match server.backend {
        Some(backend) => cmd.env(BACKEND_VAR, backend),
        None => cmd.env_remove(BACKEND_VAR),
    };
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", server.bin))?;
    let addr = match wait_listening(&mut child, server) {
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
    let mut load = pinned(machine, "release/loadgen", machine.pin.map(|p| p.1));
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
fn wait_listening(child: &mut Child, server: &Server) -> Result<String, String> {
    let line = server::wait_listening_line(child, START_TIMEOUT)?;
    check_reports(&line, server)?;
    server::listening_addr(&line).ok_or_else(|| format!("no address in {line:?}"))
}

/// `Err` unless the `listening on` line names the backend and build `server` should run.
fn check_reports(line: &str, server: &Server) -> Result<(), String> {
    match server.reports {
        Some(expected) if !line.contains(expected) => {
            Err(format!("it should report {expected:?} but printed {line:?} (wrong binary or backend?)"))
        }
        _ => Ok(()),
    }
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

/// Turns loadgen's values into a sample; CPU ticks and ns become µs per message.
fn load_sample(values: &HashMap<String, String>, clk_tck: f64) -> Result<LoadSample, String> {
    let msgs = value(values, "msgs")?;
    let secs = value(values, "secs")?;
    if msgs < 1.0 || secs <= 0.0 {
        return Err(format!("no messages completed in the {secs} s window"));
    }
    let per_msg = |ticks: f64| ticks / clk_tck * 1e6 / msgs;
    let (user, sys) = (per_msg(value(values, "utime_ticks")?), per_msg(value(values, "stime_ticks")?));
    // schedstat is 0 (or missing, from an older loadgen) where the kernel does not provide it.
    let cpu_ns = value(values, "cpu_ns").unwrap_or(0.0);
    Ok(LoadSample {
        rate: msgs / secs,
        p50: value(values, "p50_us")?,
        p99: value(values, "p99_us")?,
        p999: value(values, "p999_us")?,
        user,
        sys,
        total: if cpu_ns > 0.0 { cpu_ns / 1e3 / msgs } else { user + sys },
        hwm_mib: value(values, "hwm_kib")? / 1024.0,
    })
}

/// Turns loadgen's `--connect-only` values into a sample; `Err` unless loadgen kept every
/// connection and the server reported holding all of them when the idle RSS was sampled.
fn idle_sample(values: &HashMap<String, String>) -> Result<IdleSample, String> {
    let conns = value(values, "conns")?;
    if conns as usize != IDLE_CONNS {
        return Err(format!("only {conns} of {IDLE_CONNS} connections survived"));
    }
    let open = value(values, "server_open")?;
    if open as usize != IDLE_CONNS {
        return Err(format!("the server held {open} of {IDLE_CONNS} connections when its RSS was sampled"));
    }
    Ok(IdleSample {
        before_kib: value(values, "rss_before_kib")?,
        idle_kib: value(values, "rss_idle_kib")?,
        echoed_kib: value(values, "rss_echoed_kib")?,
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

/// `median (min–max)` of `values` with `decimals` decimals; just the value for one sample (a
/// one-round run has no spread), `–` for none.
fn with_spread(values: &[f64], decimals: usize) -> String {
    match values {
        [] => return "–".to_string(),
        [only] => return format!("{only:.decimals$}"),
        _ => {}
    }
    let (lo, hi) = spread(values);
    format!("{:.d$} ({lo:.d$}–{hi:.d$})", median(values), d = decimals)
}

/// The ratios of paired rounds: `f(a) / f(b)` for every round both rows have a sample of.
fn round_ratios<S: Copy>(a: &Row<S>, b: &Row<S>, f: impl Fn(&S) -> f64) -> Vec<f64> {
    a.samples
        .iter()
        .filter_map(|(round, sa)| {
            let (_, sb) = b.samples.iter().find(|(r, _)| r == round)?;
            let (x, y) = (f(sa), f(sb));
            (y > 0.0 && x.is_finite()).then(|| x / y)
        })
        .collect()
}

/// `a` against `b` in `f`: the median of the per-round ratios with their min–max,
/// `1.23 (1.10–1.40)` (the bare ratio for one round); without a round both have, the ratio of
/// the medians; `n/a` without a sample on either side.
fn ratio_cell<S: Copy>(
    a: &Row<S>,
    b: Option<&Row<S>>,
    f: impl Fn(&S) -> f64 + Copy,
    decimals: usize,
) -> String {
    let Some(b) = b.filter(|b| !b.samples.is_empty() && !a.samples.is_empty()) else {
        return "n/a".to_string();
    };
    let per_round = round_ratios(a, b, f);
    if !per_round.is_empty() {
        return with_spread(&per_round, decimals);
    }
    let (x, y) = (a.median(f), b.median(f));
    if y > 0.0 && x.is_finite() { format!("{:.decimals$}", x / y) } else { "n/a".to_string() }
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

/// The markdown table of a load profile: every figure as `median (min–max)` over the rounds.
fn load_table(profile: &Profile, rows: &[Row<LoadSample>], rounds: usize) -> String {
    let mut t = format!(
        "### {}\n\n\
         | server | msgs/s | p50 µs | p99 µs | p999 µs | user µs/msg | sys µs/msg | total µs/msg \
         | ratio user vs tokio | ratio total vs tokio | peak RSS MiB | notes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        profile.name
    );
    let baseline = rows.iter().find(|r| r.server == BASELINE);
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
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.server,
            with_spread(&row.values(|s| s.rate), 0),
            with_spread(&row.values(|s| s.p50), 1),
            with_spread(&row.values(|s| s.p99), 1),
            with_spread(&row.values(|s| s.p999), 1),
            with_spread(&row.values(|s| s.user), 3),
            with_spread(&row.values(|s| s.sys), 3),
            with_spread(&row.values(|s| s.total), 3),
            ratio_cell(row, baseline, |s| s.user, 2),
            ratio_cell(row, baseline, |s| s.total, 2),
            with_spread(&row.values(|s| s.hwm_mib), 1),
            notes(row, rounds)
        );
    }
    t.push('\n');
    t
}

/// What the per-round ratios of the two builds say about the target.
fn build_verdict(per_round: &[f64]) -> String {
    if per_round.is_empty() {
        return "no round has both builds: not measured".to_string();
    }
    let (lo, hi) = spread(per_round);
    let n = per_round.len();
    if n == 1 {
        format!("one round only ({lo:.3}): too few to judge a {BUILD_RATIO_TARGET:.2} target")
    } else if hi <= BUILD_RATIO_TARGET {
        format!("all {n} round(s) within the target (≤ {BUILD_RATIO_TARGET:.2})")
    } else if lo > BUILD_RATIO_TARGET {
        format!("all {n} round(s) above the target (≤ {BUILD_RATIO_TARGET:.2})")
    } else {
        format!(
            "the rounds straddle the target ({lo:.3}–{hi:.3} around {BUILD_RATIO_TARGET:.2}): \
             this run cannot tell"
        )
    }
}

/// A figure of a sample: its name, how to get it, its decimals.
type Figure = (&'static str, fn(&LoadSample) -> f64, usize);

/// The both-backend build against the uring-only build, both on io_uring, in one profile.
fn build_table(profile: &Profile, both: &Row<LoadSample>, only: &Row<LoadSample>) -> String {
    let mut t = format!(
        "#### Both-backend build vs uring-only build ({}, io_uring)\n\n\
         | figure | {} (uring+mio built in) | {} | ratio both / uring-only, per round: median (min–max) |\n\
         |---|---:|---:|---:|\n",
        profile.name, both.server, only.server
    );
    let figures: [Figure; 4] = [
        ("total CPU µs/msg", |s| s.total, 3),
        ("user CPU µs/msg", |s| s.user, 3),
        ("sys CPU µs/msg", |s| s.sys, 3),
        ("msgs/s", |s| s.rate, 0),
    ];
    for (name, f, decimals) in figures {
        let _ = writeln!(
            t,
            "| {name} | {} | {} | {} |",
            with_spread(&both.values(f), decimals),
            with_spread(&only.values(f), decimals),
            ratio_cell(both, Some(only), f, 3)
        );
    }
    let _ = writeln!(
        t,
        "\nTarget: total CPU per message of the both-backend build ≤ {BUILD_RATIO_TARGET:.2}× the uring-only \
         build's; {}. The two builds run next to each other in every round (their order swaps each round).\n",
        build_verdict(&round_ratios(both, only, |s| s.total))
    );
    t
}

/// The markdown table of the idle-connections profile.
fn idle_table(rows: &[Row<IdleSample>], rounds: usize) -> String {
    let mut t = format!(
        "### {IDLE_CONNS} idle connections (RSS before any byte is sent, then after one 64 B echo each)\n\n\
         | server | baseline RSS MiB | idle RSS MiB | KiB per idle conn | ratio idle vs tokio \
         | RSS after one echo MiB | KiB per conn after one echo | peak RSS MiB | notes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|\n"
    );
    let baseline = rows.iter().find(|r| r.server == BASELINE);
    for row in rows {
        if row.samples.is_empty() {
            let reason = row.failures.first().map_or("no samples", String::as_str);
            let _ = writeln!(
                t,
                "| {} | **FAILED**: {} | – | – | – | – | – | – | all {rounds} round(s) failed |",
                row.server,
                cell(reason)
            );
            continue;
        }
        let mib = |f: fn(&IdleSample) -> f64| with_spread(&row.values(|s| f(s) / 1024.0), 1);
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.server,
            mib(|s| s.before_kib),
            mib(|s| s.idle_kib),
            with_spread(&row.values(IdleSample::idle_per_conn), 2),
            ratio_cell(row, baseline, IdleSample::idle_per_conn, 2),
            mib(|s| s.echoed_kib),
            with_spread(&row.values(IdleSample::echoed_per_conn), 2),
            mib(|s| s.hwm_kib),
            notes(row, rounds)
        );
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
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "# ringline echo benchmark{}\n\n\
         {date}; Linux {}; {cpus} CPUs; load average at start {}; {}; {}.\n\
         Rounds: {} per profile, servers alternating within a round; warmup {} s, window {} s; \
         idle profile: {IDLE_CONNS} connections held {} s before each memory sample.\n\n\
         Every server is one thread serving (ringline: 1 worker plus its acceptor thread; tokio: \
         current_thread runtime). `ringline uring` and `ringline mio` are one binary built with both \
         backends (`RINGLINE_BACKEND` picks one); `ringline uring-only build` is the same source built \
         with io_uring only, run in the first profile. Every figure is the median across rounds with \
         the min–max in parentheses; a ratio is the median of the per-round ratios with their min–max \
         (servers of one round run back to back). Latency is per message, from being \
         queued by loadgen to its last byte read back. CPU is the server process's over the measured \
         window divided by the messages completed in it: user and sys from `/proc/PID/stat` \
         (resolution 1/CLK_TCK s, so user is a sample of a few dozen ticks in the short profiles), \
         total from `/proc/PID/task/*/schedstat` (on-CPU ns of every thread). Peak RSS is VmHWM at \
         the end of the window. Idle memory: RSS (`/proc/PID/status`) before connecting, then once \
         the server's own count (its stats file) shows all {IDLE_CONNS} connections open and they \
         have been idle for the hold time, then after one echo on each; per connection = (RSS − \
         baseline) / {IDLE_CONNS}. Loadgen is a single thread and may be the bottleneck for msgs/s; \
         compare CPU per message.\n\n",
        if opts.quick { " (quick run)" } else { "" },
        kernel.trim(),
        load.join(" "),
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
                   utime_ticks=20 stime_ticks=100 cpu_ns=1300000000 rss_kib=2048 hwm_kib=4096\n";
        let s = load_sample(&parse_values(out), 100.0).unwrap();
        assert_eq!(s.rate, 100_000.0);
        assert_eq!((s.p50, s.p99, s.p999), (10.5, 20.0, 40.0));
        // 0.2 s user over 200k messages is 1 µs each; 1 s system is 5 µs each.
        assert!((s.user - 1.0).abs() < 1e-9 && (s.sys - 5.0).abs() < 1e-9);
        // schedstat's 1.3 s is the total: 6.5 µs each.
        assert!((s.total - 6.5).abs() < 1e-9, "{}", s.total);
        assert_eq!(s.hwm_mib, 4.0);
        // Without schedstat the total is user + sys.
        let no_ns = out.replace("cpu_ns=1300000000", "cpu_ns=0");
        assert!((load_sample(&parse_values(&no_ns), 100.0).unwrap().total - 6.0).abs() < 1e-9);
        assert!(load_sample(&parse_values("msgs=0 secs=1"), 100.0).is_err());
        assert!(load_sample(&parse_values("msgs=10 secs=1 p50_us=1"), 100.0).is_err());
    }

    #[test]
    fn idle_output_becomes_a_sample_only_when_the_server_held_every_connection() {
        let out = "conns=2000 secs=3.1 rss_before_kib=3000 rss_idle_kib=5000 rss_echoed_kib=7000 \
                   hwm_kib=7100 server_open=2000 errors=0";
        let s = idle_sample(&parse_values(out)).unwrap();
        assert_eq!((s.idle_per_conn(), s.echoed_per_conn()), (1.0, 2.0));
        assert_eq!(s.hwm_kib, 7100.0);
        let short = out.replace("server_open=2000", "server_open=1999");
        assert!(idle_sample(&parse_values(&short)).unwrap_err().contains("held 1999"));
        let lost = out.replace("conns=2000", "conns=1990");
        assert!(idle_sample(&parse_values(&lost)).unwrap_err().contains("1990"));
        let old = out.replace(" server_open=2000", "");
        assert!(idle_sample(&parse_values(&old)).is_err());
    }

    #[test]
    fn the_listening_line_must_name_the_expected_build() {
        let both = "ringline_echo listening on 127.0.0.1:1 (Uring backend; built with Uring+Mio)";
        let only = "ringline_echo listening on 127.0.0.1:1 (Uring backend; built with Uring)";
        let mio = "ringline_echo listening on 127.0.0.1:1 (Mio backend; built with Uring+Mio)";
        assert!(check_reports(both, &URING).is_ok());
        assert!(check_reports(only, &URING_ONLY).is_ok());
        assert!(check_reports(mio, &MIO).is_ok());
        assert!(check_reports(only, &URING).is_err());
        assert!(check_reports(both, &URING_ONLY).is_err());
        assert!(check_reports(both, &MIO).is_err());
        assert!(check_reports("tokio_echo listening on 127.0.0.1:1 (tokio current_thread)", &TOKIO).is_ok());
    }

    #[test]
    fn the_two_uring_builds_swap_places_every_round() {
        let names =
            |round| round_order(SERVERS_WITH_URING_ONLY, round).iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(1), [URING.name, URING_ONLY.name, MIO.name, TOKIO.name]);
        assert_eq!(names(2), [URING_ONLY.name, URING.name, MIO.name, TOKIO.name]);
        assert_eq!(names(3), names(1));
        let plain = round_order(SERVERS, 2).iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(plain, [URING.name, MIO.name, TOKIO.name]);
        assert_eq!(PROFILES.iter().filter(|p| p.servers.len() == 4).count(), 1);
    }

    fn row(name: &'static str, samples: &[(usize, f64)]) -> Row<LoadSample> {
        let mut row = Row::new(name);
        for &(round, v) in samples {
            let s = LoadSample {
                rate: v * 1000.0,
                user: v,
                sys: 2.0 * v,
                total: 3.0 * v,
                ..LoadSample::default()
            };
            row.samples.push((round, s));
        }
        row
    }

    #[test]
    fn spreads_and_paired_ratios() {
        assert_eq!(with_spread(&[2.0, 1.0, 4.0], 2), "2.00 (1.00–4.00)");
        assert_eq!(with_spread(&[], 2), "–");
        assert_eq!(with_spread(&[1.5], 1), "1.5");
        // Round 2 of `b` failed: only rounds 1 and 3 pair up.
        let a = row("a", &[(1, 1.1), (2, 5.0), (3, 1.3)]);
        let b = row("b", &[(1, 1.0), (3, 1.0)]);
        let ratios = round_ratios(&a, &b, |s| s.total);
        assert_eq!(ratios.len(), 2);
        assert!((ratios[0] - 1.1).abs() < 1e-9 && (ratios[1] - 1.3).abs() < 1e-9);
        // The median of the per-round ratios 1.1 and 1.3, with their spread.
        assert_eq!(ratio_cell(&a, Some(&b), |s| s.total, 2), "1.20 (1.10–1.30)");
        // No round in common: the ratio of the medians (3.9 / 3.0).
        let c = row("c", &[(4, 1.0)]);
        assert_eq!(ratio_cell(&a, Some(&c), |s| s.total, 2), "1.30");
        assert_eq!(ratio_cell(&a, None, |s| s.total, 2), "n/a");
        assert_eq!(ratio_cell(&a, Some(&row("c", &[])), |s| s.total, 2), "n/a");
    }

    #[test]
    fn the_build_verdict_only_speaks_when_every_round_agrees() {
        assert!(build_verdict(&[0.99, 1.01]).starts_with("all 2 round(s) within"));
        assert!(build_verdict(&[1.03, 1.05]).starts_with("all 2 round(s) above"));
        assert!(build_verdict(&[0.99, 1.05]).contains("cannot tell"));
        assert!(build_verdict(&[]).contains("not measured"));
        assert!(build_verdict(&[0.9]).starts_with("one round only"));
    }

    #[test]
    fn every_figure_of_the_tables_has_its_spread() {
        let profile = &PROFILES[0];
        let rows = [
            row(URING.name, &[(1, 1.0), (2, 1.2)]),
            row(URING_ONLY.name, &[(1, 1.0), (2, 1.0)]),
            row("tokio", &[(1, 0.5), (2, 0.5)]),
        ];
        let table = load_table(profile, &rows, 2);
        let uring = table.lines().find(|l| l.starts_with("| ringline uring |")).unwrap();
        // Ten figures, each `median (min–max)`.
        assert_eq!(uring.matches('–').count(), 10, "{uring}");
        let build = build_table(profile, &rows[0], &rows[1]);
        assert!(
            build.contains(
                "| total CPU µs/msg | 3.300 (3.000–3.600) | 3.000 (3.000–3.000) | 1.100 (1.000–1.200) |"
            ),
            "{build}"
        );
        assert!(build.contains("cannot tell"), "{build}");

        let mut idle = Row::new("tokio");
        for (round, kib) in [(1, 5000.0), (2, 7000.0)] {
            let s = IdleSample {
                before_kib: 3000.0,
                idle_kib: kib,
                echoed_kib: kib + 2000.0,
                hwm_kib: kib + 2000.0,
            };
            idle.samples.push((round, s));
        }
        let table = idle_table(&[idle], 2);
        let line = table.lines().find(|l| l.starts_with("| tokio |")).unwrap();
        assert!(line.contains("| 1.50 (1.00–2.00) | 1.00 (1.00–1.00) |"), "{line}");
        assert!(line.contains("| 2.50 (2.00–3.00) |"), "{line}");
        assert_eq!(line.matches('–').count(), 7, "{line}");
    }

    #[test]
    fn failed_rows_are_marked_in_the_table() {
        let profile = &PROFILES[0];
        let mut ok = Row::new("tokio");
        ok.samples
            .push((1, LoadSample { rate: 1000.0, user: 2.0, sys: 3.0, total: 5.0, ..LoadSample::default() }));
        let mut failed = Row::new("ringline uring");
        failed.failures.push("server did not start: a | b".to_string());
        let table = load_table(profile, &[failed, ok], 1);
        assert!(table.contains("| ringline uring | **FAILED**: server did not start: a \\| b |"), "{table}");
        // One round: no spread to show.
        assert!(table.contains("| tokio | 1000 | 0.0 |"), "{table}");
        assert!(table.contains("| 1.00 | 1.00 |"), "{table}");
    }
}
