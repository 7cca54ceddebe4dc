//! `cargo xtask test`: the workspace tests, then the facade suite once per backend configuration.
//!
//! Every configuration runs even when an earlier one fails; the end shows a summary table, the
//! tests that skipped themselves for a missing kernel feature, and the list of failures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cmd::{Cargo, StepResult};
use crate::manifest;

/// The variable that forces the facade's backend at launch.
const BACKEND_VAR: &str = "RINGLINE_BACKEND";

/// Skip records, relative to the target directory: the agreed file, and the
/// `CARGO_TARGET_TMPDIR` (`<target>/tmp`) location that integration tests can also reach.
const SKIP_FILES: &[&str] = &["ringline-skips.txt", "tmp/ringline-skips.txt"];

/// One `cargo test` run of the matrix.
struct Configuration {
    /// Name in the summary table.
    name: String,
    /// Arguments after `cargo test`.
    args: Vec<String>,
    /// `RINGLINE_BACKEND` for the run; `None` removes it from the environment.
    backend: Option<&'static str>,
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
}

/// Runs every configuration, prints the summary, and fails if any configuration failed.
pub(crate) fn run(root: &Path) -> StepResult {
    let skip_files: Vec<PathBuf> = SKIP_FILES.iter().map(|file| target_dir(root).join(file)).collect();
    let outcomes: Vec<Outcome> =
        configurations(root)?.iter().map(|config| run_one(root, config, &skip_files)).collect();
    print_summary(&outcomes);
    print_skips(&outcomes);
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.passed).map(|o| o.name.as_str()).collect();
    if failed.is_empty() { Ok(()) } else { Err(format!("failing configurations: {}", failed.join("; "))) }
}

/// The matrix: workspace without the facade, then the facade per backend build and forced backend.
fn configurations(root: &Path) -> StepResult<Vec<Configuration>> {
    let core_testing =
        manifest::has_feature(&manifest::read(&root.join("ringline-core/Cargo.toml"))?, "testing");
    let facade_manifest = manifest::read(&root.join("ringline/Cargo.toml"))?;
    // Optional facade features whose tests run in every backend configuration.
    let extras: Vec<&'static str> = ["testing", "futures-io", "tls"]
        .into_iter()
        .filter(|f| manifest::has_feature(&facade_manifest, f))
        .collect();
    let mut workspace = vec!["--workspace", "--exclude", "ringline"];
    if core_testing {
        workspace.extend(["--features", "ringline-core/testing"]);
    }
    let facade = |features, backend| facade_configuration(features, &extras, backend);
    Ok(vec![
        Configuration { name: "workspace without facade".into(), args: strings(&workspace), backend: None },
        facade(None, None),
        facade(Some("mio"), None),
        facade(Some("uring,mio"), Some("uring")),
        facade(Some("uring,mio"), Some("mio")),
    ])
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
    Configuration { name: format!("ringline [{label}]{forced}"), args, backend }
}

/// Runs one configuration, timing it and collecting the skips its tests recorded.
fn run_one(root: &Path, config: &Configuration, skip_files: &[PathBuf]) -> Outcome {
    println!("\n==> test: {}", config.name);
    remove_files(skip_files);
    let mut args = vec!["test", "--no-fail-fast"];
    args.extend(config.args.iter().map(String::as_str));
    let cargo = Cargo::new(root, &args);
    let cargo = match config.backend {
        Some(backend) => cargo.env(BACKEND_VAR, backend),
        None => cargo.env_remove(BACKEND_VAR),
    };
    let start = Instant::now();
    let result = cargo.run();
    let seconds = start.elapsed().as_secs_f64();
    if let Err(message) = &result {
        eprintln!("test: {message}");
    }
    let skips = read_skips(skip_files);
    remove_files(skip_files);
    Outcome { name: config.name.clone(), passed: result.is_ok(), seconds, skips }
}

/// Prints one row per configuration: name, pass or fail, seconds.
fn print_summary(outcomes: &[Outcome]) {
    let width = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(0).max("configuration".len());
    println!("\n{:<width$}  result  seconds", "configuration");
    for o in outcomes {
        let result = if o.passed { "pass" } else { "FAIL" };
        println!("{:<width$}  {result:<6}  {:>7.1}", o.name, o.seconds);
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
