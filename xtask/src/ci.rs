//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.

use std::path::Path;

use crate::check_core::TreeSource;
use crate::cmd::StepResult;
use crate::{check_core, examples, lint, loom, soak, stress, test, tidy};

/// Runs lint, check-core, tidy, test, one stress iteration (TESTPLAN 36), the loom models, the
/// examples under real clients, then a 5 s soak per backend.
pub(crate) fn run(root: &Path) -> StepResult {
    step("lint", || lint::run(root))?;
    step("check-core", || check_core::run(root, &TreeSource::Cargo))?;
    step("tidy", || tidy::run(root))?;
    step("test", || test::run(root))?;
    step("stress (1 iteration)", || stress::run(root, &stress::Options::smoke()))?;
    step("loom", || loom::run(root))?;
    step("examples", || examples::run(root))?;
    step("soak (5 s per backend)", || soak::run(root, &soak::Options::smoke()))?;
    println!("\nci: all steps passed");
    Ok(())
}

/// Runs one named step under a banner; its error names the step.
fn step(name: &str, body: impl FnOnce() -> StepResult) -> StepResult {
    println!("\n==> ci: {name}");
    body().map_err(|e| format!("step `{name}`: {e}"))
}
