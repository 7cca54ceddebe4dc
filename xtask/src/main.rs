//! `cargo xtask`: the project's automation, shared by developers and CI (`.ci/run`).
//!
//! Std only, so a fresh machine builds it in seconds. Each subcommand lives in its own module;
//! this file finds the workspace root, parses the subcommand and dispatches in one `match`.

mod bench;
mod check_core;
mod ci;
mod cmd;
mod examples;
mod lint;
mod loom;
mod manifest;
mod micro;
mod parity;
mod server;
mod soak;
mod stress;
mod test;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Printed for `help` and, on stderr, for an unknown subcommand.
const USAGE: &str = "\
usage: cargo xtask <subcommand>

subcommands:
  ci                          lint, check-core, tidy, test, stress (1 iteration), loom, examples, 5 s soak
                              (what .ci/run runs)
  test                        workspace tests, then the facade suite on every backend configuration
  lint                        rustfmt check, clippy -D warnings per configuration, rustdoc -D warnings
  check-core [--tree-file F]  fail if io-uring, mio or libc is in ringline-core's normal tree
  loom                        loom models of core's cross-thread paths (--cfg loom, target/loom)
  tidy                        text checks over every member's src/ (//! docs, SAFETY comments, no todo!)
  bench [--quick] [--rounds N] echo benchmarks: ringline uring/mio (and a uring-only build) vs tokio,
                              idle memory per connection; report in target/bench/latest.md
  microbench [--full]         criterion microbenchmarks of ringline-core; median ns/op table
  examples                    http_hello, resp_server, udp_echo, direct_io_copy under clients; timers,
                              connect_echo (vs echo_server), shutdown (drain on SIGTERM), per backend
  soak [--secs N] [--backend uring|mio|both]
                              mixed load for N s (default 60) per backend, then fail on fd/thread growth
  stress [--iterations N] [--test file::name]... [--backend uring|mio|both] [--seed S]
                              rerun timing-sensitive tests (default: TESTPLAN 1, 3, 27, 29) N times (20)
                              per backend, serial and parallel; stop at the first failure with its seed
";

/// Entry point: `cargo xtask <subcommand> [args]`.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((subcommand, rest)) = args.split_first() else {
        return usage_error("no subcommand given");
    };
    let root = workspace_root();
    let outcome = match (subcommand.as_str(), rest) {
        ("ci", []) => ci::run(&root),
        ("test", []) => test::run(&root),
        ("lint", []) => lint::run(&root),
        ("check-core", args) => match check_core::parse_args(args) {
            Ok(source) => check_core::run(&root, &source),
            Err(message) => return usage_error(&message),
        },
        ("tidy", []) => tidy::run(&root),
        ("loom", []) => loom::run(&root),
        ("bench", args) => match bench::parse_args(args) {
            Ok(options) => bench::run(&root, &options),
            Err(message) => return usage_error(&message),
        },
        ("examples", []) => examples::run(&root),
        ("microbench", args) => match micro::parse_args(args) {
            Ok(full) => micro::run(&root, full),
            Err(message) => return usage_error(&message),
        },
        ("soak", args) => match soak::parse_args(args) {
            Ok(options) => soak::run(&root, &options),
            Err(message) => return usage_error(&message),
        },
        ("stress", args) => match stress::parse_args(args) {
            Ok(options) => stress::run(&root, &options),
            Err(message) => return usage_error(&message),
        },
        ("help" | "-h" | "--help", []) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => return usage_error(&format!("unknown subcommand or arguments: {}", args.join(" "))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("\nxtask {subcommand} failed: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `message` and the usage text to stderr; exit status 2.
fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

/// The workspace root: the parent of this crate's manifest directory.
pub(crate) fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().expect("xtask lives one level below the workspace root").to_path_buf()
}
