//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.

use std::path::Path;

use crate::check_core::TreeSource;
use crate::cmd::StepResult;
use crate::{check_core, lint, test, tidy};

/// Runs lint, check-core, tidy, then test.
pub(crate) fn run(root: &Path) -> StepResult {
    step("lint", || lint::run(root))?;
    step("check-core", || check_core::run(root, &TreeSource::Cargo))?;
    step("tidy", || tidy::run(root))?;
    step("test", || test::run(root))?;
    println!("\nci: all steps passed");
    Ok(())
}

/// Runs one named step under a banner; its error names the step.
fn step(name: &str, body: impl FnOnce() -> StepResult) -> StepResult {
    println!("\n==> ci: {name}");
    body().map_err(|e| format!("step `{name}`: {e}"))
}
