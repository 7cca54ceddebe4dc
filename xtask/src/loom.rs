//! `cargo xtask loom`: the loom models of core's cross-thread paths (inbox, task wakers).
//!
//! Builds `ringline-core`'s unit tests with `--cfg loom`, which swaps `ringline-core/src/sync.rs`
//! to loom's types, and runs the tests named `loom` in release mode. The build goes to its own
//! target directory (`<target>/loom`), so the changed `RUSTFLAGS` never invalidate the normal cache.

use std::path::{Path, PathBuf};

use crate::cmd::{Cargo, StepResult};

/// Preemption bound when `LOOM_MAX_PREEMPTIONS` is not set: enough for the models' races, and
/// the run stays within seconds.
const DEFAULT_MAX_PREEMPTIONS: &str = "3";

/// Runs the loom models.
pub(crate) fn run(root: &Path) -> StepResult {
    let preemptions =
        std::env::var("LOOM_MAX_PREEMPTIONS").unwrap_or_else(|_| DEFAULT_MAX_PREEMPTIONS.to_owned());
    let target = loom_target_dir();
    command(root, &target.to_string_lossy(), &preemptions).run()
}

/// `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=N cargo <test_args>`.
fn command(root: &Path, target_dir: &str, preemptions: &str) -> Cargo {
    Cargo::new(root, &test_args(target_dir))
        // Takes precedence over RUSTFLAGS when set (e.g. by an outer cargo), so drop it.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("LOOM_MAX_PREEMPTIONS", preemptions)
        .env("RUSTFLAGS", "--cfg loom")
}

/// `test -p ringline-core --lib --release --target-dir DIR -- loom`: core's unit tests whose path
/// names loom; the other unit tests cannot run on loom's types outside `loom::model`.
fn test_args(target_dir: &str) -> [&str; 9] {
    ["test", "-p", "ringline-core", "--lib", "--release", "--target-dir", target_dir, "--", "loom"]
}

/// `<target>/loom`: under `CARGO_TARGET_DIR` when set, else `target/loom` (relative to the root).
fn loom_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from).join("loom")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_only_core_lib_loom_tests_in_release_in_a_separate_target_dir() {
        let args = test_args("target/loom");
        assert_eq!(args.join(" "), "test -p ringline-core --lib --release --target-dir target/loom -- loom");
    }
}
