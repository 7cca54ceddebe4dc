//! `cargo xtask test`: the workspace tests, then the facade suite once per backend configuration.
//!
//! Every configuration runs even when an earlier one fails; the end shows a summary table (per
//! configuration: the backend that really ran, tests passed, failed, ignored and skipped), the
//! tests that skipped themselves, and the parity checks of [`crate::parity`] (TESTPLAN 34, 35),
//! which fail the run like a failing configuration does.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cmd::{Cargo, StepResult};
use crate::manifest;
use crate::parity::{self, Status, Tests};

/// The variable that forces the facade's backend at launch.
const BACKEND_VAR: &str = "RINGLINE_BACKEND";

/// Skip records, relative to the target directory: the agreed file, and the
/// `CARGO_TARGET_TMPDIR` (`<target>/tmp`) location that integration tests can also reach.
const SKIP_FILES: &[&str] = &["ringline-skips.txt", "tmp/ringline-skips.txt"];

/// Run reports (`backend: <name>`, `probe: ...`), written by the facade tests like the skips.
const RUN_FILE: &str = "ringline-runs.txt";

/// One `cargo test` run of the matrix.
struct Configuration {
    /// Name in the summary table.
    name: String,
    /// Arguments after `cargo test`.
    args: Vec<String>,
    /// `RINGLINE_BACKEND` for the run; `None` removes it from the environment.
    backend: Option<&'static str>,
    /// The backend a facade run must report; `None` for the workspace run.
    expect: Option<&'static str>,
    /// Facade runs of one group must run the same tests: the single-backend builds, or the runs
    /// of the build of both backends (a few tests exist only where both backends are built).
    group: &'static str,
}

/// What one configuration did.
struct Outcome {
    /// The configuration's name.
    name: String,
    /// Whether `cargo test` passed.
    passed: bool,
    /// Wall-clock seconds.
    seconds: f64,
    /// The skip lines its tests recorded.
    skips: Vec<String>,
    /// Its tests and how they ended.
    tests: Tests,
    /// Its run reports.
    runs: Vec<String>,
    /// The backend it had to run on, for facade runs.
    expect: Option<&'static str>,
    /// Its parity group.
    group: &'static str,
}

/// Runs every configuration, prints the summary, and fails if any configuration failed.
pub(crate) fn run(root: &Path) -> StepResult {
    let expected = parity::read_expected(root)?;
    let files = Records {
        skips: SKIP_FILES.iter().map(|file| target_dir(root).join(file)).collect(),
        runs: target_dir(root).join(RUN_FILE),
    };
    let outcomes: Vec<Outcome> =
        configurations(root)?.iter().map(|config| run_one(root, config, &files)).collect();
    print_summary(&outcomes);
    print_skips(&outcomes);
    let mut failed: Vec<String> =
        outcomes.iter().filter(|o| !o.passed).map(|o| format!("configuration `{}`", o.name)).collect();
    failed.extend(parity_failures(&outcomes, &expected));
    if failed.is_empty() {
        println!("\nparity: every facade run had the same tests, its own backend, and only expected skips");
        Ok(())
    } else {
        Err(format!("\n  {}", failed.join("\n  ")))
    }
}

/// The files tests write their records to.
struct Records {
    /// Skip lines (two agreed locations).
    skips: Vec<PathBuf>,
    /// Run reports.
    runs: PathBuf,
}

/// TESTPLAN 34 and 35: wrong backends, an io_uring-less machine not declared as such, unexpected
/// skips and tests missing from a facade run.
fn parity_failures(outcomes: &[Outcome], expected: &[parity::ExpectedSkip]) -> Vec<String> {
    let no_uring = std::env::var_os(parity::NO_URING_VAR).is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    let facade: Vec<&Outcome> = outcomes.iter().filter(|o| o.expect.is_some()).collect();
    let probes: Vec<&str> = facade.iter().filter_map(|o| parity::probe_verdict(&o.runs)).collect();
    println!();
    match probes.first() {
        Some(p) => println!("io_uring probe: {p}"),
        None => println!("io_uring probe: not reported (kernel_feature_probe_honesty did not run)"),
    }
    if probes.iter().any(|p| p.starts_with("io_uring=no")) {
        println!("io_uring probe: NO io_uring on this machine");
        if !no_uring {
            failures.push(format!("the probe found no io_uring and {} is not 1", parity::NO_URING_VAR));
        }
    }
    for o in &facade {
        let want = o.expect.unwrap_or_default();
        let ran = parity::reported_backends(&o.runs);
        let skip_check = no_uring && want == "uring";
        if !skip_check && ran.iter().copied().ne([want]) {
            failures.push(format!("`{}` must run on {want} but reported {ran:?}", o.name));
        }
        for line in parity::unexpected_skips(&o.skips, want, expected) {
            if !skip_check {
                failures.push(format!(
                    "`{}`: unexpected skip (not in {}): {line}",
                    o.name,
                    parity::EXPECTED_SKIPS
                ));
            }
        }
    }
    let mut groups: Vec<&str> = facade.iter().map(|o| o.group).collect();
    groups.dedup();
    for group in groups {
        let runs: Vec<(&str, &Tests)> =
            facade.iter().filter(|o| o.group == group).map(|o| (o.name.as_str(), &o.tests)).collect();
        for (name, missing) in parity::missing_tests(&runs) {
            failures.push(format!("`{name}` lacks tests other {group} have: {}", missing.join(", ")));
        }
    }
    failures
}

/// The matrix: workspace without the facade, then the facade per backend build and forced backend.
fn configurations(root: &Path) -> StepResult<Vec<Configuration>> {
    let core_testing =
        manifest::has_feature(&manifest::read(&root.join("ringline-core/Cargo.toml"))?, "testing");
    let extras = facade_extras(root)?;
    let mut workspace = vec!["--workspace", "--exclude", "ringline"];
    if core_testing {
        workspace.extend(["--features", "ringline-core/testing"]);
    }
    let facade = |features, backend| facade_configuration(features, &extras, backend);
    let workspace = Configuration {
        name: "workspace without facade".into(),
        args: strings(&workspace),
        backend: None,
        expect: None,
        group: "",
    };
    Ok(vec![
        workspace,
        facade(None, None),
        facade(Some("mio"), None),
        facade(Some("uring,mio"), Some("uring")),
        facade(Some("uring,mio"), Some("mio")),
    ])
}

/// Optional facade features whose tests run in every backend configuration (those it declares).
pub(crate) fn facade_extras(root: &Path) -> StepResult<Vec<&'static str>> {
    let facade_manifest = manifest::read(&root.join("ringline/Cargo.toml"))?;
    Ok(["testing", "futures-io", "tls"]
        .into_iter()
        .filter(|f| manifest::has_feature(&facade_manifest, f))
        .collect())
}

/// A facade run: `-p ringline` with exactly `features`, or its default features for `None`.
fn facade_configuration(
    features: Option<&str>,
    extras: &[&str],
    backend: Option<&'static str>,
) -> Configuration {
    let mut args = strings(&["-p", "ringline"]);
    if features.is_some() {
        args.push("--no-default-features".into());
    }
    let enabled: Vec<&str> = features.into_iter().chain(extras.iter().copied()).collect();
    if !enabled.is_empty() {
        args.extend(["--features".into(), enabled.join(",")]);
    }
    let forced = backend.map_or(String::new(), |b| format!(", {BACKEND_VAR}={b}"));
    let label = features.unwrap_or("default: uring");
    // A single-backend build runs on its backend; a build of both on the forced one.
    let expect = backend.or(if features == Some("mio") { Some("mio") } else { Some("uring") });
    let group = if backend.is_some() { "runs of the uring+mio build" } else { "single-backend builds" };
    Configuration { name: format!("ringline [{label}]{forced}"), args, backend, expect, group }
}

/// Runs one configuration, timing it and collecting the skips its tests recorded.
fn run_one(root: &Path, config: &Configuration, files: &Records) -> Outcome {
    println!("\n==> test: {}", config.name);
    remove_files(&files.skips);
    remove_files(std::slice::from_ref(&files.runs));
    let mut args = vec!["test", "--no-fail-fast"];
    args.extend(config.args.iter().map(String::as_str));
    let cargo = Cargo::new(root, &args);
    let cargo = match config.backend {
        Some(backend) => cargo.env(BACKEND_VAR, backend),
        None => cargo.env_remove(BACKEND_VAR),
    };
    let start = Instant::now();
    let (result, stdout) = cargo.tee();
    let seconds = start.elapsed().as_secs_f64();
    if let Err(message) = &result {
        eprintln!("test: {message}");
    }
    let skips = read_skips(&files.skips);
    let runs = read_skips(std::slice::from_ref(&files.runs));
    remove_files(&files.skips);
    remove_files(std::slice::from_ref(&files.runs));
    let tests = Tests::parse(&stdout);
    Outcome {
        name: config.name.clone(),
        passed: result.is_ok(),
        seconds,
        skips,
        tests,
        runs,
        expect: config.expect,
        group: config.group,
    }
}

/// Prints one row per configuration: name, result, the backend it reported, test counts, seconds.
fn print_summary(outcomes: &[Outcome]) {
    let width = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(0).max("configuration".len());
    println!("\n{:<width$}  result  backend  passed  failed  ignored  skipped  seconds", "configuration");
    for o in outcomes {
        let result = if o.passed { "pass" } else { "FAIL" };
        let ran: Vec<&str> = parity::reported_backends(&o.runs).into_iter().collect();
        let ran = if ran.is_empty() { "-".to_owned() } else { ran.join("+") };
        let [p, f, i] = [Status::Passed, Status::Failed, Status::Ignored].map(|s| o.tests.count(s));
        let skipped = o.skips.len();
        println!(
            "{:<width$}  {result:<6}  {ran:<7}  {p:>6}  {f:>6}  {i:>7}  {skipped:>7}  {:>7.1}",
            o.name, o.seconds
        );
    }
}

/// Prints the recorded skips, grouped by configuration.
fn print_skips(outcomes: &[Outcome]) {
    let total: usize = outcomes.iter().map(|o| o.skips.len()).sum();
    if total == 0 {
        println!("\nno test reported a skip");
        return;
    }
    println!("\n{total} skip(s) reported by tests:");
    for o in outcomes.iter().filter(|o| !o.skips.is_empty()) {
        println!("  {}:", o.name);
        o.skips.iter().for_each(|line| println!("    {line}"));
    }
}

/// The distinct non-empty lines of the skip files, in first-seen order.
fn read_skips(files: &[PathBuf]) -> Vec<String> {
    let text: String = files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect();
    distinct_lines(&text)
}

/// The distinct non-empty trimmed lines of `text`, in first-seen order.
fn distinct_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !lines.iter().any(|seen| seen == line) {
            lines.push(line.to_owned());
        }
    }
    lines
}

/// Removes files that may not exist.
fn remove_files(files: &[PathBuf]) {
    files.iter().for_each(|file| drop(std::fs::remove_file(file)));
}

/// `$CARGO_TARGET_DIR` (relative to the root if relative), else `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// Owned copies of string slices.
fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|&arg| arg.to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facade_matrix_has_each_backend_build_and_both_forced_backends() {
        let configs = configurations(&crate::workspace_root()).unwrap();
        let runs: Vec<(String, Option<&str>)> =
            configs.iter().map(|c| (c.args.join(" "), c.backend)).collect();
        assert!(runs[0].0.starts_with("--workspace --exclude ringline"));
        assert_eq!(runs[1].0.split(" --features").next(), Some("-p ringline"));
        assert!(runs[2].0.starts_with("-p ringline --no-default-features --features mio"));
        assert!(runs[3].0.starts_with("-p ringline --no-default-features --features uring,mio"));
        assert_eq!((runs[3].1, runs[4].1), (Some("uring"), Some("mio")));
        assert_eq!(runs[3].0, runs[4].0);
        let groups: Vec<&str> = configs.iter().map(|c| c.group).collect();
        assert!(groups[1] == groups[2] && groups[3] == groups[4] && groups[1] != groups[3], "{groups:?}");
        let expect: Vec<_> = configs.iter().map(|c| c.expect).collect();
        assert_eq!(expect, [None, Some("uring"), Some("mio"), Some("uring"), Some("mio")]);
    }

    #[test]
    fn facade_testing_feature_is_added_when_declared() {
        let config = facade_configuration(None, &["testing"], None);
        assert_eq!(config.args, ["-p", "ringline", "--features", "testing"]);
        let config = facade_configuration(Some("mio"), &["testing"], None);
        assert_eq!(config.args.join(" "), "-p ringline --no-default-features --features mio,testing");
    }

    #[test]
    fn skip_lines_are_deduplicated_in_order() {
        let text = "SKIPPED: a needs x\n\nSKIPPED: b needs y\nSKIPPED: a needs x\n";
        assert_eq!(distinct_lines(text), ["SKIPPED: a needs x", "SKIPPED: b needs y"]);
    }
}
