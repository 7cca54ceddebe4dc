//! `cargo xtask stress` (TESTPLAN 36, loop_until_failure_smoke): reruns timing-sensitive facade
//! tests with a new seed each iteration, on each backend, once with `--test-threads 1` and once
//! with default parallelism, and stops at the first failure, printing the seed and a command that
//! replays it (tests read `RINGLINE_TEST_SEED`).

use std::path::Path;

use crate::cmd::{Cargo, StepResult};
use crate::soak;

/// TESTPLAN 36's tests (1, 3, 27, 29) as `file::test`.
const DEFAULT_TESTS: &[&str] = &[
    "integrity::echo_matrix_integrity",
    "integrity::connection_churn_small_table",
    "lifecycle::cancelled_connect_success_not_leaked",
    "limits::handle_outlives_connection",
];

/// What to run.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// Iterations (each one: every backend × both parallelism modes).
    pub(crate) iterations: u32,
    /// `file::test` names.
    pub(crate) tests: Vec<String>,
    /// Backends, forced with `RINGLINE_BACKEND` in a build of both.
    pub(crate) backends: Vec<&'static str>,
    /// The first iteration's seed; the next ones add 1. `None`: from the clock.
    pub(crate) seed: Option<u64>,
}

impl Options {
    /// The short run `cargo xtask ci` includes: one iteration of the default tests.
    pub(crate) fn smoke() -> Options {
        Options { iterations: 1, ..Options::default() }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            iterations: 20,
            tests: DEFAULT_TESTS.iter().map(|t| (*t).to_owned()).collect(),
            backends: vec!["uring", "mio"],
            seed: None,
        }
    }
}

/// Parses `[--iterations N] [--test file::name]... [--backend uring|mio|both] [--seed S]`.
pub(crate) fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut tests = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let value = iter.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--iterations" => match value?.parse::<u32>() {
                Ok(n) if n >= 1 => opts.iterations = n,
                _ => return Err("--iterations needs a whole number, at least 1".to_owned()),
            },
            "--test" => match value?.split_once("::") {
                Some((file, name)) if !file.is_empty() && !name.is_empty() => {
                    tests.push(format!("{file}::{name}"))
                }
                _ => {
                    return Err(
                        "--test needs file::test_name, e.g. integrity::echo_matrix_integrity".to_owned()
                    );
                }
            },
            "--backend" => {
                opts.backends = soak::parse_backend(value?)?;
            }
            "--seed" => opts.seed = Some(value?.parse().map_err(|_| "--seed needs a u64".to_owned())?),
            other => return Err(format!("unknown stress argument {other:?}")),
        }
    }
    if !tests.is_empty() {
        opts.tests = tests;
    }
    Ok(opts)
}

/// The `cargo test` arguments for `tests` in a build of both backends with the facade's extras.
fn cargo_args(extras: &[&str], tests: &[String], serial: bool) -> Vec<String> {
    let features = ["uring", "mio"].iter().chain(extras).copied().collect::<Vec<_>>().join(",");
    let mut args: Vec<String> =
        ["test", "-q", "-p", "ringline", "--no-default-features", "--features", &features]
            .map(String::from)
            .to_vec();
    let mut files: Vec<&str> = tests.iter().filter_map(|t| t.split_once("::")).map(|(f, _)| f).collect();
    files.dedup();
    for file in files {
        args.extend(["--test".to_owned(), file.to_owned()]);
    }
    args.extend(["--".to_owned(), "--exact".to_owned()]);
    args.extend(tests.iter().filter_map(|t| t.split_once("::")).map(|(_, name)| name.to_owned()));
    if serial {
        args.extend(["--test-threads".to_owned(), "1".to_owned()]);
    }
    args
}

/// Runs the loop; the first failure ends it with the seed and a replay command.
pub(crate) fn run(root: &Path, opts: &Options) -> StepResult {
    let extras = crate::test::facade_extras(root)?;
    let base = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    let runs = opts.iterations as usize * opts.backends.len() * 2;
    println!("stress: {} test(s), {runs} run(s), seeds from {base}", opts.tests.len());
    for i in 0..opts.iterations {
        let seed = base.wrapping_add(u64::from(i)).to_string();
        for &backend in &opts.backends {
            for serial in [true, false] {
                let args = cargo_args(&extras, &opts.tests, serial);
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                let cargo =
                    Cargo::new(root, &argv).env("RINGLINE_BACKEND", backend).env("RINGLINE_TEST_SEED", &seed);
                if let Err(e) = cargo.run() {
                    let mode = if serial { "--test-threads 1" } else { "default parallelism" };
                    return Err(format!(
                        "iteration {} of {} failed on {backend} with {mode}, RINGLINE_TEST_SEED={seed}\n  \
                         replay: RINGLINE_BACKEND={backend} RINGLINE_TEST_SEED={seed} cargo {}\n  {e}",
                        i + 1,
                        opts.iterations,
                        args.join(" ")
                    ));
                }
            }
        }
    }
    println!("\nstress: {runs} run(s) passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn arguments_are_parsed_and_checked() {
        assert_eq!(parse_args(&[]).unwrap(), Options::default());
        let o =
            parse_args(&strings(&["--iterations", "3", "--test", "limits::x", "--backend", "mio"])).unwrap();
        assert_eq!((o.iterations, o.tests, o.backends), (3, strings(&["limits::x"]), vec!["mio"]));
        assert!(parse_args(&strings(&["--iterations", "0"])).is_err());
        assert!(parse_args(&strings(&["--test", "no_file"])).is_err());
        assert!(parse_args(&strings(&["--backend", "epoll"])).is_err());
    }

    #[test]
    fn one_cargo_run_covers_every_file_and_name() {
        let tests = strings(&["integrity::a", "integrity::b", "limits::c"]);
        let args = cargo_args(&["testing"], &tests, true).join(" ");
        assert_eq!(
            args,
            "test -q -p ringline --no-default-features --features uring,mio,testing --test integrity \
             --test limits -- --exact a b c --test-threads 1"
        );
    }
}
