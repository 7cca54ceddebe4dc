//! `cargo xtask examples`: drives the `http_hello`, `resp_server` and `udp_echo` examples with
//! real clients (`wrk`, `redis-benchmark`, a std `UdpSocket`) on every backend configuration.
//!
//! The examples are built in release mode for io_uring (`--examples`) and for mio
//! (`--no-default-features --features mio --examples`); after each build the two binaries are
//! copied to `<target>/xtask-examples/<backend>/`, so both builds exist side by side. Missing
//! clients are installed with `apt-get install -y wrk redis-tools` (through `sudo` when not root).
//!
//! Each server runs as a child on `127.0.0.1:0` with `RUST_LOG=info`; its `listening on ADDR
//! (… backend)` line gives the address and must name the expected backend. A short functional
//! probe over a `TcpStream` checks pipelined answers and an error reply, then the client runs:
//! `wrk` must report requests and no socket errors or non-2xx/3xx responses; `redis-benchmark`
//! must finish its ping, set and get tests without any error. The server then gets SIGTERM and
//! must exit 0 within 10 s, and its stderr (`<target>/xtask-examples/logs/`) must hold the
//! `tracing` INFO line of ringline's launch summary (`ringline launched`). Failures are
//! collected; a table of every run is printed at the end.
//!
//! `udp_echo` is driven by a std `UdpSocket` client instead: 2,000 datagrams of 0 to 65,507
//! bytes, one at a time, each of which must come back whole.
//!
//! `direct_io_copy` is not a server: it copies a generated source file (3 MiB + 1,111 bytes of
//! pseudo-random data, in `<target>/xtask-examples/`) with `O_DIRECT`, must exit 0 within
//! [`CLIENT_TIMEOUT`] naming the expected backend, and the copy must equal the source byte
//! for byte.
//!
//! Three usage examples are run too (no rate; the table shows `-`):
//! - `timers` must exit 0 within [`EXAMPLE_TIMEOUT`] and print, in order, the 50 ms sleep (at
//!   least 50 ms), the timeout, the 10 ms branch winning the `select`, four interval ticks
//!   scheduled 25 ms apart after those, and `timers: done … (BACKEND backend)`.
//! - `connect_echo ADDR`, run against `echo_server` (started as above), must exit 0 within
//!   [`EXAMPLE_TIMEOUT`] and print that its 100 round trips to ADDR were echoed byte-exactly on
//!   the expected backend.
//! - `shutdown` is started like a server; a std `TcpStream` sends a line and must get it echoed,
//!   then the server gets SIGTERM and must exit 0 within 10 s, and the client must then read
//!   exactly the goodbye line followed by EOF.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{Cargo, StepResult};
use crate::server;

/// How long a server may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may run before it is killed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `timers` and `connect_echo` may run before they are killed.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a functional probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Worker threads of every server.
const WORKERS: &str = "2";

/// The variable that forces ringline's backend at launch; removed for the servers.
const BACKEND_VAR: &str = "RINGLINE_BACKEND";

/// A backend configuration the examples are built for.
struct Build {
    /// Name in the table and of the binaries' directory.
    name: &'static str,
    /// Cargo feature arguments.
    features: &'static [&'static str],
    /// What the `listening on` line must say: `(NAME backend)`.
    backend: &'static str,
}

/// The configurations, in run order.
const BUILDS: &[Build] = &[
    Build { name: "uring", features: &[], backend: "Uring" },
    Build { name: "mio", features: &["--no-default-features", "--features", "mio"], backend: "Mio" },
];

/// The examples run by this step.
const EXAMPLES: &[&str] = &[
    "http_hello",
    "resp_server",
    "udp_echo",
    "direct_io_copy",
    "timers",
    "echo_server",
    "connect_echo",
    "shutdown",
];

/// The line the `shutdown` run sends (and must get back).
const SHUTDOWN_LINE: &[u8] = b"hello from cargo xtask examples\n";

/// What the `shutdown` example sends each connection when it drains.
const GOODBYE: &[u8] = b"server shutting down, goodbye\n";

/// The tests `redis-benchmark -t ping,set,get` reports.
const REDIS_TESTS: &[&str] = &["PING_INLINE", "PING_MBULK", "SET", "GET"];

/// One line of the final table.
struct Row {
    /// The example.
    example: &'static str,
    /// The backend configuration.
    backend: &'static str,
    /// The client (and its test, for `redis-benchmark`).
    client: String,
    /// Requests per second the client reported.
    rate: Option<f64>,
    /// `ok`, or `FAILED: reason`.
    result: String,
}

/// Installs missing clients, builds both configurations, runs every example with its client.
pub(crate) fn run(root: &Path) -> StepResult {
    let started = Instant::now();
    ensure_clients()?;
    let out_dir = target_dir(root).join("xtask-examples");
    let log_dir = out_dir.join("logs");
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
    for build in BUILDS {
        let mut args = vec!["build", "--release", "-p", "ringline"];
        args.extend(build.features);
        args.push("--examples");
        Cargo::new(root, &args).run()?;
        let bin_dir = out_dir.join(build.name);
        std::fs::create_dir_all(&bin_dir).map_err(|e| format!("cannot create {}: {e}", bin_dir.display()))?;
        for example in EXAMPLES {
            let from = target_dir(root).join("release").join("examples").join(example);
            let to = bin_dir.join(example);
            std::fs::copy(&from, &to)
                .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
        }
    }

    let mut rows = Vec::new();
    for build in BUILDS {
        let bin_dir = out_dir.join(build.name);
        rows.extend(run_http(build, &bin_dir, &log_dir));
        rows.extend(run_resp(build, &bin_dir, &log_dir));
        rows.extend(run_udp(build, &bin_dir, &log_dir));
        rows.extend(run_copy(build, &bin_dir, &out_dir));
        rows.extend(run_timers(build, &bin_dir, &log_dir));
        rows.extend(run_connect_echo(build, &bin_dir, &log_dir));
        rows.extend(run_shutdown(build, &bin_dir, &log_dir));
    }
    println!("\n{}", table(&rows));
    println!(
        "examples: {:.0} s in all; server logs in {}",
        started.elapsed().as_secs_f64(),
        log_dir.display()
    );
    let failed = rows.iter().filter(|r| r.result != "ok").count();
    if failed == 0 { Ok(()) } else { Err(format!("{failed} of {} run(s) FAILED; see the table", rows.len())) }
}

/// The target directory: `CARGO_TARGET_DIR` (relative to the root) or `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// `http_hello` under `wrk -t2 -c100 -d5s`: one row.
fn run_http(build: &Build, bin_dir: &Path, log_dir: &Path) -> Vec<Row> {
    let outcome = with_server(build, bin_dir, log_dir, "http_hello", |addr| {
        probe_http(addr)?;
        let url = format!("http://{addr}/");
        let out =
            run_client(log_dir, &format!("wrk-{}", build.name), "wrk", &["-t2", "-c100", "-d5s", &url])?;
        parse_wrk(&out).map(|rate| vec![("wrk".to_string(), rate)])
    });
    rows("http_hello", build, "wrk", outcome)
}

/// `resp_server` under `redis-benchmark -t ping,set,get -P 16 -n 100000 -q`: a row per test.
fn run_resp(build: &Build, bin_dir: &Path, log_dir: &Path) -> Vec<Row> {
    let outcome = with_server(build, bin_dir, log_dir, "resp_server", |addr| {
        probe_resp(addr)?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("odd address {addr:?}"))?;
        let args = ["-h", host, "-p", port, "-t", "ping,set,get", "-P", "16", "-n", "100000", "-q"];
        let out = run_client(log_dir, &format!("redis-benchmark-{}", build.name), "redis-benchmark", &args)?;
        parse_redis_benchmark(&out).map(|tests| {
            tests.into_iter().map(|(test, rate)| (format!("redis-benchmark {test}"), rate)).collect()
        })
    });
    rows("resp_server", build, "redis-benchmark", outcome)
}

/// `udp_echo` under a std `UdpSocket` client: one row (datagrams per second).
fn run_udp(build: &Build, bin_dir: &Path, log_dir: &Path) -> Vec<Row> {
    let outcome = with_server(build, bin_dir, log_dir, "udp_echo", |addr| {
        udp_round_trips(addr, 2_000).map(|rate| vec![("std UdpSocket".to_string(), rate)])
    });
    rows("udp_echo", build, "std UdpSocket", outcome)
}

/// `direct_io_copy SRC DST` on a generated file: one row (MiB per second).
fn run_copy(build: &Build, bin_dir: &Path, out_dir: &Path) -> Vec<Row> {
    let src = out_dir.join(format!("direct_io_copy-{}.src", build.name));
    let dst = src.with_extension("dst");
    let outcome = copy_and_compare(build, &bin_dir.join("direct_io_copy"), &src, &dst);
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
    rows(
        "direct_io_copy",
        build,
        "byte compare",
        outcome.map(|rate| vec![("byte compare".to_string(), rate)]),
    )
}

/// Runs the copy and checks it; returns MiB per second of the whole run.
fn copy_and_compare(build: &Build, bin: &Path, src: &Path, dst: &Path) -> Result<f64, String> {
    let data = copy_source(3 * (1 << 20) + 1_111);
    std::fs::write(src, &data).map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    let started = Instant::now();
    let mut child = Command::new(bin)
        .arg(src)
        .arg(dst)
        .env_remove(BACKEND_VAR)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            return Err(format!("did not finish within {CLIENT_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    check_copy(out.status.success(), &stdout, build.backend, &data, &std::fs::read(dst).unwrap_or_default())
        .map_err(|e| format!("{e}; stderr: {}", last_lines(&String::from_utf8_lossy(&out.stderr))))?;
    Ok(data.len() as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64())
}

/// The checks of one copy run: exit status, the backend named, the bytes.
fn check_copy(ok: bool, stdout: &str, backend: &str, source: &[u8], copy: &[u8]) -> Result<(), String> {
    if !ok {
        return Err(format!("exited with an error: {}", last_lines(stdout)));
    }
    let expect = format!("({backend} backend)");
    if !stdout.contains(&expect) {
        return Err(format!("output does not name {expect}: {}", last_lines(stdout)));
    }
    if copy.len() != source.len() {
        return Err(format!("copy has {} bytes, source {}", copy.len(), source.len()));
    }
    match copy.iter().zip(source).position(|(a, b)| a != b) {
        Some(i) => Err(format!("copy differs from the source at byte {i}")),
        None => Ok(()),
    }
}

/// Deterministic pseudo-random bytes for the copy's source.
fn copy_source(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Sends `n` datagrams of mixed sizes (zero-length and 65,507 bytes included) one at a time and
/// checks each echo; returns datagrams per second.
fn udp_round_trips(addr: &str, n: usize) -> Result<f64, String> {
    let fail = |e: std::io::Error| format!("UDP client of {addr}: {e}");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(fail)?;
    socket.connect(addr).map_err(fail)?;
    socket.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(fail)?;
    let mut buf = vec![0u8; 65_536];
    let started = Instant::now();
    for i in 0..n {
        let len = match i % 10 {
            0 => 0,
            1 => 65_507,
            _ => (i * 7_919) % 1_500,
        };
        let data: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
        socket.send(&data).map_err(fail)?;
        let got = socket.recv(&mut buf).map_err(|e| format!("datagram {i} ({len} bytes) not echoed: {e}"))?;
        if buf[..got] != data[..] {
            return Err(format!("datagram {i}: {got} bytes came back, not the {len} sent"));
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// `timers`: one row, `ok` when it exits 0 and its output passes [`check_timers`].
fn run_timers(build: &Build, bin_dir: &Path, log_dir: &Path) -> Vec<Row> {
    let tag = format!("timers-{}", build.name);
    let outcome = run_example(log_dir, &tag, &bin_dir.join("timers"), &[]).and_then(|(ok, out, err)| {
        check_timers(ok, &out, build.backend).map_err(|e| format!("{e}; stderr: {}", last_lines(&err)))
    });
    check_row("timers", build, "exit + output", outcome)
}

/// `connect_echo ADDR` against `echo_server`: one row, `ok` when the server runs as in
/// [`with_server`] and the client passes [`check_connect_echo`].
fn run_connect_echo(build: &Build, bin_dir: &Path, log_dir: &Path) -> Vec<Row> {
    let outcome = with_server(build, bin_dir, log_dir, "echo_server", |addr| {
        let tag = format!("connect_echo-{}", build.name);
        let (ok, out, err) = run_example(log_dir, &tag, &bin_dir.join("connect_echo"), &[addr])?;
        check_connect_echo(ok, &out, build.backend, addr)
            .map_err(|e| format!("{e}; stderr: {}", last_lines(&err)))
    });
    check_row("echo_server", build, "connect_echo", outcome)
}

/// `shutdown` with a std `TcpStream` client and SIGTERM: one row (see [`drain_probe`]).
fn run_shutdown(build: &Build, bin_dir: &Path, log_dir: &Path) -> Vec<Row> {
    let outcome =
        start_server(build, bin_dir, log_dir, "shutdown").and_then(|(mut child, addr, stderr_path)| {
            let result = drain_probe(&mut child, &addr);
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
            result.map_err(|e| format!("{e}; stderr: {}", tail(&stderr_path)))
        });
    check_row("shutdown", build, "std TcpStream + SIGTERM", outcome)
}

/// Sends [`SHUTDOWN_LINE`] and waits for its echo, stops the server with SIGTERM (it must exit 0
/// in time), then reads to EOF; the bytes must pass [`check_drain`].
fn drain_probe(child: &mut Child, addr: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("client of {addr}: {e}");
    let mut stream = TcpStream::connect(addr).map_err(fail)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(fail)?;
    stream.write_all(SHUTDOWN_LINE).map_err(fail)?;
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while got.len() < SHUTDOWN_LINE.len() {
        match stream.read(&mut buf).map_err(|e| format!("waiting for the echo: {e}"))? {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    if !got.starts_with(SHUTDOWN_LINE) {
        return Err(format!(
            "the line was not echoed before SIGTERM: got {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    if let Ok(Some(status)) = child.try_wait() {
        return Err(format!("server died during the run ({status})"));
    }
    stop(child)?;
    let eof = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    check_drain(&got, eof)
}

/// The bytes a `shutdown` client read: its line echoed, then exactly the goodbye line, then EOF.
fn check_drain(got: &[u8], eof: bool) -> Result<(), String> {
    let rest = got
        .strip_prefix(SHUTDOWN_LINE)
        .ok_or_else(|| format!("the line was not echoed: got {:?}", String::from_utf8_lossy(got)))?;
    if rest != GOODBYE {
        return Err(format!(
            "after SIGTERM the client got {:?}, not {:?}",
            String::from_utf8_lossy(rest),
            String::from_utf8_lossy(GOODBYE)
        ));
    }
    if !eof {
        return Err("no EOF after the goodbye line".to_string());
    }
    Ok(())
}

/// The checks of a `connect_echo` run: exit 0 and its success line for `addr` on `backend`.
fn check_connect_echo(ok: bool, stdout: &str, backend: &str, addr: &str) -> Result<(), String> {
    if !ok {
        return Err(format!("exited with an error: {}", last_lines(stdout)));
    }
    let expect = format!("connect_echo: 100 round trips to {addr} echoed byte-exactly ({backend} backend)");
    if !stdout.lines().any(|l| l.trim() == expect) {
        return Err(format!("no `{expect}` line: {}", last_lines(stdout)));
    }
    Ok(())
}

/// The checks of a `timers` run: exit 0, no `unexpected` branch, and its lines in order — the
/// sleep (at least 50 ms), the timeout, the 10 ms `select` branch, ticks 0 to 3 scheduled 25 ms
/// apart after the 80 ms of earlier timers, and `timers: done … (BACKEND backend)`.
fn check_timers(ok: bool, stdout: &str, backend: &str) -> Result<(), String> {
    if !ok {
        return Err(format!("exited with an error: {}", last_lines(stdout)));
    }
    if let Some(line) = stdout.lines().find(|l| l.contains("unexpected")) {
        return Err(format!("timers printed `{}`", line.trim()));
    }
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    let find = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .ok_or_else(|| format!("no `{prefix}…` line: {}", last_lines(stdout)))
    };
    let mut order = vec![find("slept ")?, find("timeout: ")?, find("select: the 10 ms sleep won")?];
    let mut ticks = Vec::new();
    for i in 0..4 {
        let prefix = format!("tick {i} scheduled at +");
        let at = find(&prefix)?;
        order.push(at);
        ticks.push(
            parse_debug_duration(&lines[at][prefix.len()..])
                .ok_or_else(|| format!("no duration in `{}`", lines[at]))?,
        );
    }
    let done = find("timers: done")?;
    order.push(done);
    if order.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("lines out of order: {}", lines.join(" / ")));
    }
    let slept = lines[order[0]]["slept ".len()..].split_whitespace().next().and_then(parse_debug_duration);
    match slept {
        Some(d) if d >= Duration::from_millis(50) => {}
        _ => return Err(format!("the 50 ms sleep reported `{}`", lines[order[0]])),
    }
    if ticks[0] < Duration::from_millis(80) {
        return Err(format!("tick 0 at +{:?}, before the 80 ms of earlier timers", ticks[0]));
    }
    for (i, pair) in ticks.windows(2).enumerate() {
        let gap = pair[1].saturating_sub(pair[0]);
        if gap.abs_diff(Duration::from_millis(25)) > Duration::from_millis(1) {
            return Err(format!("ticks {i} and {} are {gap:?} apart, not 25 ms", i + 1));
        }
    }
    let expect = format!("({backend} backend)");
    if !lines[done].contains(&expect) {
        return Err(format!("`{}` does not name {expect}", lines[done]));
    }
    Ok(())
}

/// A `Duration`'s `Debug` form (`50.057132ms`, `1.5s`, `999µs`, `0ns`).
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .into_iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|n| (n, unit)))?;
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| Duration::from_secs_f64(value * unit))
}

/// Runs an example binary (without [`BACKEND_VAR`]) for up to [`EXAMPLE_TIMEOUT`]; its stdout
/// and stderr go to `<tag>.stdout` / `<tag>.stderr` in `log_dir`. Returns whether it exited 0,
/// its stdout and its stderr; `Err` if it cannot start or times out.
fn run_example(
    log_dir: &Path,
    tag: &str,
    bin: &Path,
    args: &[&str],
) -> Result<(bool, String, String), String> {
    println!("$ {} {}", bin.display(), args.join(" "));
    let (out_path, err_path) = (log_dir.join(format!("{tag}.stdout")), log_dir.join(format!("{tag}.stderr")));
    let create = |p: &Path| File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()));
    let mut child = Command::new(bin)
        .args(args)
        .env_remove(BACKEND_VAR)
        .stdin(Stdio::null())
        .stdout(create(&out_path)?)
        .stderr(create(&err_path)?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let status = server::wait_timeout(&mut child, EXAMPLE_TIMEOUT)
        .map_err(|reason| format!("{} {reason}; output in {}", bin.display(), out_path.display()))?;
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    Ok((status.success(), out, err))
}

/// The table row of a run without a rate: `ok`, or one FAILED row.
fn check_row(example: &'static str, build: &Build, client: &str, outcome: Result<(), String>) -> Vec<Row> {
    let mut rows = rows(example, build, client, outcome.map(|()| vec![(client.to_string(), 0.0)]));
    for row in &mut rows {
        row.rate = None;
    }
    rows
}

/// Table rows of one server run: one per client result, or one FAILED row.
fn rows(
    example: &'static str,
    build: &Build,
    client: &str,
    outcome: Result<Vec<(String, f64)>, String>,
) -> Vec<Row> {
    match outcome {
        Ok(results) => results
            .into_iter()
            .map(|(client, rate)| Row {
                example,
                backend: build.name,
                client,
                rate: Some(rate),
                result: "ok".to_string(),
            })
            .collect(),
        Err(reason) => {
            println!("examples: {example} ({}) FAILED: {reason}", build.name);
            vec![Row {
                example,
                backend: build.name,
                client: client.to_string(),
                rate: None,
                result: format!("FAILED: {reason}"),
            }]
        }
    }
}

/// Starts `example` of `build`, runs `client` with its address, stops it with SIGTERM.
///
/// `Err` when the server does not start on the expected backend, `client` fails, the server
/// dies, does not exit 0 within [`STOP_TIMEOUT`] of SIGTERM, or logged no INFO line.
fn with_server<T>(
    build: &Build,
    bin_dir: &Path,
    log_dir: &Path,
    example: &str,
    client: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, String> {
    let (mut child, addr, stderr_path) = start_server(build, bin_dir, log_dir, example)?;
    let outcome = client(&addr);
    let died = child.try_wait().ok().flatten();
    let stopped = match died {
        Some(status) => Err(format!("server died during the run ({status})")),
        None => stop(&mut child),
    };
    let logged = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let value = outcome?;
    stopped.map_err(|reason| format!("{reason}; stderr: {}", tail(&stderr_path)))?;
    if !logged.lines().any(|l| l.contains(" INFO ") && l.contains("launched")) {
        return Err(format!(
            "no tracing INFO line with the launch summary (`ringline launched`) on the server's stderr ({})",
            stderr_path.display()
        ));
    }
    Ok(value)
}

/// Starts `example` of `build` on `127.0.0.1:0`; returns the child, the address of its
/// `listening on` line and the path of its stderr log.
///
/// `Err` (the child stopped) when it does not print the line in time or not on the expected
/// backend.
fn start_server(
    build: &Build,
    bin_dir: &Path,
    log_dir: &Path,
    example: &str,
) -> Result<(Child, String, PathBuf), String> {
    let bin = bin_dir.join(example);
    let stderr_path = log_dir.join(format!("{example}-{}.stderr", build.name));
    let stderr =
        File::create(&stderr_path).map_err(|e| format!("cannot create {}: {e}", stderr_path.display()))?;
    let mut command = Command::new(&bin);
    command
        .args(["--addr", "127.0.0.1:0", "--workers", WORKERS])
        .env_remove(BACKEND_VAR)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    println!("$ {} --addr 127.0.0.1:0 --workers {WORKERS}", bin.display());
    let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let line = match server::wait_listening_line(&mut child, START_TIMEOUT) {
        Ok(line) => line,
        Err(reason) => {
            let _ = stop(&mut child);
            return Err(format!("server did not start: {reason}; stderr: {}", tail(&stderr_path)));
        }
    };
    println!("  {line}");
    let addr = match server::listening_addr(&line) {
        Some(addr) if line.contains(&format!("({} backend)", build.backend)) => Ok(addr),
        Some(_) => Err(format!("expected the {} backend: {line:?}", build.backend)),
        None => Err(format!("no address in {line:?}")),
    };
    match addr {
        Ok(addr) => Ok((child, addr, stderr_path)),
        Err(reason) => {
            let _ = stop(&mut child);
            Err(reason)
        }
    }
}

/// Sends SIGTERM and waits up to [`STOP_TIMEOUT`]; `Err` unless the server exits 0 in time
/// (it is killed after the timeout).
fn stop(child: &mut Child) -> Result<(), String> {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if sent {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("server exited with {status} after SIGTERM")),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("waiting for the server: {e}")),
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(if sent {
        format!("server did not exit within {} s of SIGTERM; killed", STOP_TIMEOUT.as_secs())
    } else {
        "`kill -TERM` failed; server killed".to_string()
    })
}

/// Runs a client with a time limit; its stdout and stderr go to log files and are returned
/// together. `Err` if it cannot start, times out or exits non-zero.
fn run_client(log_dir: &Path, tag: &str, program: &str, args: &[&str]) -> Result<String, String> {
    println!("$ {program} {}", args.join(" "));
    let (out_path, err_path) = (log_dir.join(format!("{tag}.stdout")), log_dir.join(format!("{tag}.stderr")));
    let create = |p: &Path| File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(create(&out_path)?)
        .stderr(create(&err_path)?)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let status = server::wait_timeout(&mut child, CLIENT_TIMEOUT)
        .map_err(|reason| format!("{program} {reason}; output in {}", out_path.display()))?;
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let text = format!("{out}{err}");
    if !status.success() {
        return Err(format!("{program} failed ({status}): {}", last_lines(&text)));
    }
    Ok(text)
}

/// The requests per second of `wrk`'s output; `Err` on socket errors, non-2xx/3xx responses
/// or no requests at all.
fn parse_wrk(out: &str) -> Result<f64, String> {
    for bad in ["Socket errors", "Non-2xx or 3xx responses"] {
        if let Some(line) = out.lines().find(|l| l.contains(bad)) {
            return Err(format!("wrk reported `{}`", line.trim()));
        }
    }
    let requests = out
        .lines()
        .find_map(|l| l.split_once(" requests in ").map(|(n, _)| n.trim().parse::<u64>()))
        .ok_or_else(|| format!("no `N requests in` line in wrk's output: {}", last_lines(out)))?
        .map_err(|e| format!("wrk's request count is not a number: {e}"))?;
    if requests == 0 {
        return Err("wrk completed no requests".to_string());
    }
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no `Requests/sec:` in wrk's output: {}", last_lines(out)))
}

/// `(test, requests per second)` of `redis-benchmark -q` output; `Err` on any error or a
/// missing test.
fn parse_redis_benchmark(out: &str) -> Result<Vec<(String, f64)>, String> {
    let segments = || out.split(['\r', '\n']).map(str::trim).filter(|s| !s.is_empty());
    if let Some(bad) = segments().find(|s| s.contains("ERR") || s.to_ascii_lowercase().contains("error")) {
        return Err(format!("redis-benchmark reported `{bad}`"));
    }
    let results: Vec<(String, f64)> = segments()
        .filter_map(|s| {
            let (test, rest) = s.split_once(": ")?;
            let (rate, _) = rest.split_once(" requests per second")?;
            Some((test.to_string(), rate.trim().parse().ok()?))
        })
        .collect();
    for test in REDIS_TESTS {
        if !results.iter().any(|(t, rate)| t == test && *rate > 0.0) {
            return Err(format!("redis-benchmark reported no {test} result: {}", last_lines(out)));
        }
    }
    Ok(results)
}

/// Two pipelined GETs must get two greetings; a malformed request a 400 and the end of stream.
fn probe_http(addr: &str) -> Result<(), String> {
    let twice = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let reply = exchange(addr, twice, |r| count(r, b"Hello, world!\n") >= 2)?;
    if count(&reply, b"HTTP/1.1 200 OK\r\n") != 2 {
        return Err(format!("probe: two pipelined GETs got {:?}", String::from_utf8_lossy(&reply)));
    }
    let reply = exchange(addr, b"NONSENSE\r\n\r\n", |_| false)?;
    if !reply.starts_with(b"HTTP/1.1 400 ") {
        return Err(format!("probe: a bad request got {:?}", String::from_utf8_lossy(&reply)));
    }
    Ok(())
}

/// SET, GET and an inline PING, pipelined, must get their three answers in order.
fn probe_resp(addr: &str) -> Result<(), String> {
    let request = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nPING\r\n";
    let expected = b"+OK\r\n$5\r\nvalue\r\n+PONG\r\n";
    let reply = exchange(addr, request, |r| r.len() >= expected.len())?;
    if reply != expected {
        return Err(format!("probe: SET/GET/PING got {:?}", String::from_utf8_lossy(&reply)));
    }
    Ok(())
}

/// Sends `request` on a new connection and reads until `done` holds or the peer closes.
fn exchange(addr: &str, request: &[u8], done: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, String> {
    let fail = |e: std::io::Error| format!("probe of {addr}: {e}");
    let mut stream = TcpStream::connect(addr).map_err(fail)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(fail)?;
    stream.write_all(request).map_err(fail)?;
    let mut reply = Vec::new();
    let mut buf = [0; 4096];
    while !done(&reply) {
        match stream.read(&mut buf).map_err(fail)? {
            0 => break,
            n => reply.extend_from_slice(&buf[..n]),
        }
    }
    Ok(reply)
}

/// Occurrences of `needle` in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Installs `wrk` and `redis-benchmark` (package `redis-tools`) with apt-get when missing.
fn ensure_clients() -> StepResult {
    let missing: Vec<&str> =
        ["wrk", "redis-benchmark"].into_iter().filter(|p| find_program(p).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let manual =
        "install wrk and redis-benchmark (Debian/Ubuntu: `apt-get install wrk redis-tools`) and retry";
    println!("examples: {} not found; installing wrk and redis-tools with apt-get", missing.join(" and "));
    if find_program("apt-get").is_none() {
        return Err(format!("{} not found and apt-get is not available: {manual}", missing.join(" and ")));
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0");
    let sudo = match (is_root, find_program("sudo").is_some()) {
        (true, _) => false,
        (false, true) => true,
        (false, false) => return Err(format!("not root and sudo is not available: {manual}")),
    };
    let apt = |args: &[&str]| -> StepResult {
        let mut line: Vec<&str> = Vec::new();
        if sudo {
            line.extend(["sudo", "env", "DEBIAN_FRONTEND=noninteractive"]);
        }
        line.push("apt-get");
        line.extend(args);
        println!("$ {}", line.join(" "));
        let status = Command::new(line[0])
            .args(&line[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("`{}` did not start: {e}", line.join(" ")))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{}` failed ({status}): {manual}", line.join(" ")))
        }
    };
    apt(&["update"])?;
    apt(&["install", "-y", "wrk", "redis-tools"])?;
    match ["wrk", "redis-benchmark"].into_iter().find(|p| find_program(p).is_none()) {
        Some(program) => Err(format!("{program} is still missing after apt-get install: {manual}")),
        None => Ok(()),
    }
}

/// The executable `name` in `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The last few non-empty lines of `text`, on one line.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.split(['\r', '\n']).map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// The last few lines of a log file, on one line.
fn tail(path: &Path) -> String {
    last_lines(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The results table.
fn table(rows: &[Row]) -> String {
    let width = |f: fn(&Row) -> usize, title: &str| rows.iter().map(f).max().unwrap_or(0).max(title.len());
    let (we, wb, wc) = (
        width(|r| r.example.len(), "example"),
        width(|r| r.backend.len(), "backend"),
        width(|r| r.client.len(), "client"),
    );
    let mut t = format!(
        "| {:we$} | {:wb$} | {:wc$} | {:>12} | result\n|{}|{}|{}|{}|-------\n",
        "example",
        "backend",
        "client",
        "requests/s",
        "-".repeat(we + 2),
        "-".repeat(wb + 2),
        "-".repeat(wc + 2),
        "-".repeat(14)
    );
    for r in rows {
        let rate = r.rate.map_or("-".to_string(), |rate| format!("{rate:.0}"));
        let _ = writeln!(
            t,
            "| {:we$} | {:wb$} | {:wc$} | {rate:>12} | {}",
            r.example, r.backend, r.client, r.result
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_udp_client_checks_every_echo() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let echo = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            for i in 0..14 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                // The 14th echo (the second of the second run, 65,507 bytes) is cut short.
                let n = if i == 13 { n - 1 } else { n };
                server.send_to(&buf[..n], from).unwrap();
            }
        });
        assert!(udp_round_trips(&addr, 12).is_ok_and(|rate| rate > 0.0));
        let err = udp_round_trips(&addr, 8).unwrap_err();
        assert!(err.starts_with("datagram 1: 65506 bytes"), "{err}");
        echo.join().unwrap();
    }

    #[test]
    fn the_copy_check_rejects_wrong_bytes_lengths_and_backends() {
        let src = copy_source(10_000);
        let out = "copied 10000 bytes from a to b (Mio backend)";
        assert!(check_copy(true, out, "Mio", &src, &src).is_ok());
        assert!(check_copy(false, out, "Mio", &src, &src).is_err());
        assert!(check_copy(true, out, "Uring", &src, &src).is_err());
        assert!(check_copy(true, out, "Mio", &src, &src[..9_999]).is_err());
        let mut bad = src.clone();
        bad[4_321] ^= 1;
        assert!(check_copy(true, out, "Mio", &src, &bad).unwrap_err().contains("4321"));
    }

    #[test]
    fn wrk_output_is_checked() {
        let ok = "Running 5s test @ http://127.0.0.1:1/\n  2 threads and 100 connections\n\
                  \x20 523450 requests in 5.00s, 43.42MB read\n\
                  Requests/sec: 104650.12\nTransfer/sec: 8.68MB\n";
        assert_eq!(parse_wrk(ok), Ok(104650.12));
        let errors = ok
            .replace("Requests/sec", "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec");
        assert!(parse_wrk(&errors).unwrap_err().contains("Socket errors"));
        let non2xx = ok.replace("Requests/sec", "  Non-2xx or 3xx responses: 7\nRequests/sec");
        assert!(parse_wrk(&non2xx).is_err());
        assert!(parse_wrk(&ok.replace("523450 requests", "0 requests")).is_err());
        assert!(parse_wrk("").is_err());
    }

    #[test]
    fn redis_benchmark_output_is_checked() {
        let ok = "PING_INLINE: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\r\
                  PING_INLINE: 250000.00 requests per second, p50=0.191 msec\n\
                  PING_MBULK: 333333.34 requests per second, p50=0.135 msec\n\
                  SET: 200000.00 requests per second, p50=0.223 msec\n\
                  GET: 249376.56 requests per second, p50=0.183 msec\n";
        let results = parse_redis_benchmark(ok).unwrap();
        assert_eq!(results.len(), 4);
        assert_eq!(results[2], ("SET".to_string(), 200000.0));
        assert!(parse_redis_benchmark(&format!("{ok}Error: Connection reset by peer\n")).is_err());
        assert!(parse_redis_benchmark(&ok.replace("GET: 249376.56", "GET: x")).is_err());
    }

    const TIMERS_OUT: &str = "slept 50.057132ms (asked for 50 ms; never less)\n\
        timeout: deadline elapsed\n\
        select: the 10 ms sleep won; the other was dropped and freed its slot\n\
        tick 0 scheduled at +105.250677ms\n\
        tick 1 scheduled at +130.250677ms\n\
        tick 2 scheduled at +155.250677ms\n\
        tick 3 scheduled at +180.250677ms\n\
        timers: done in 180.933453ms (Uring backend)\n";

    #[test]
    fn debug_durations_parse() {
        assert_eq!(parse_debug_duration("50.5ms"), Some(Duration::from_micros(50_500)));
        assert_eq!(parse_debug_duration("1.5s"), Some(Duration::from_millis(1_500)));
        assert_eq!(parse_debug_duration("999µs"), Some(Duration::from_micros(999)));
        assert_eq!(parse_debug_duration("0ns"), Some(Duration::ZERO));
        assert_eq!(parse_debug_duration("12"), None);
        assert_eq!(parse_debug_duration("xms"), None);
    }

    #[test]
    fn the_timers_check_wants_every_line_in_order() {
        assert_eq!(check_timers(true, TIMERS_OUT, "Uring"), Ok(()));
        assert!(check_timers(false, TIMERS_OUT, "Uring").is_err());
        assert!(check_timers(true, TIMERS_OUT, "Mio").unwrap_err().contains("(Mio backend)"));
        assert!(
            check_timers(true, &TIMERS_OUT.replace("slept 50.057132ms", "slept 49.9ms"), "Uring").is_err()
        );
        let unexpected = TIMERS_OUT.replace("the 10 ms sleep won;", "the 30 ms sleep won (unexpected)");
        assert!(check_timers(true, &unexpected, "Uring").unwrap_err().contains("unexpected"));
        let no_tick = TIMERS_OUT.replace("tick 2 scheduled at +155.250677ms\n", "");
        assert!(check_timers(true, &no_tick, "Uring").unwrap_err().contains("tick 2"));
        let late = TIMERS_OUT.replace("+155.250677ms", "+160.250677ms");
        assert!(check_timers(true, &late, "Uring").unwrap_err().contains("not 25 ms"));
        let early = TIMERS_OUT
            .replace("+105.", "+5.")
            .replace("+130.", "+30.")
            .replace("+155.", "+55.")
            .replace("+180.", "+80.");
        assert!(check_timers(true, &early, "Uring").unwrap_err().contains("before the 80 ms"));
        let swapped = TIMERS_OUT
            .replace("timeout: deadline elapsed\n", "")
            .replace("timers: done", "timeout: deadline elapsed\ntimers: done");
        assert!(check_timers(true, &swapped, "Uring").unwrap_err().contains("out of order"));
        assert!(check_timers(true, "", "Uring").is_err());
    }

    #[test]
    fn the_connect_echo_check_wants_the_success_line() {
        let out = "connect_echo: 100 round trips to 127.0.0.1:9 echoed byte-exactly (Mio backend)\n";
        assert_eq!(check_connect_echo(true, out, "Mio", "127.0.0.1:9"), Ok(()));
        assert!(check_connect_echo(false, out, "Mio", "127.0.0.1:9").is_err());
        assert!(check_connect_echo(true, out, "Uring", "127.0.0.1:9").is_err());
        assert!(check_connect_echo(true, out, "Mio", "127.0.0.1:10").is_err());
        assert!(
            check_connect_echo(true, &out.replace("100 round", "99 round"), "Mio", "127.0.0.1:9").is_err()
        );
        assert!(check_connect_echo(true, "", "Mio", "127.0.0.1:9").is_err());
    }

    #[test]
    fn the_drain_check_wants_the_echo_the_goodbye_and_eof() {
        let good = [SHUTDOWN_LINE, GOODBYE].concat();
        assert_eq!(check_drain(&good, true), Ok(()));
        assert!(check_drain(&good, false).unwrap_err().contains("EOF"));
        assert!(check_drain(SHUTDOWN_LINE, true).unwrap_err().contains("after SIGTERM"));
        assert!(check_drain(GOODBYE, true).unwrap_err().contains("not echoed"));
        assert!(check_drain(&[&good[..], b"x"].concat(), true).is_err());
        assert!(check_drain(&good[..good.len() - 1], true).is_err());
    }

    #[test]
    fn table_lines_up() {
        let row = |client: &str, rate, result: &str| Row {
            example: "http_hello",
            backend: "uring",
            client: client.to_string(),
            rate,
            result: result.to_string(),
        };
        let t = table(&[row("wrk", Some(1234.4), "ok"), row("redis-benchmark SET", None, "FAILED: x")]);
        assert!(t.contains("| http_hello | uring   | wrk                 |         1234 | ok\n"), "{t}");
        assert!(t.contains("| redis-benchmark SET |            - | FAILED: x\n"), "{t}");
    }
}
