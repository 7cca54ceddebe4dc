//! `cargo xtask lint`: rustfmt, clippy per feature configuration, and rustdoc, all with warnings denied;
//! also builds the core's criterion benchmarks so they cannot rot.

use std::path::Path;

use crate::cmd::{Cargo, StepResult};
use crate::manifest;

/// Clippy runs, one per feature configuration; each gets `--all-targets -- -D warnings` appended.
const CLIPPY_CONFIGURATIONS: &[&[&str]] = &[
    &["--workspace"],
    &["-p", "ringline", "--no-default-features", "--features", "mio"],
    &["-p", "ringline", "--features", "uring,mio"],
    &["-p", "ringline", "--features", "uring,mio,futures-io,tls"],
    &["-p", "ringline", "--no-default-features", "--features", "mio,futures-io,tls"],
    // The uring-only echo server `cargo xtask bench` builds next to the default one.
    &["-p", "bench", "--no-default-features"],
];

/// Runs each lint step in turn and stops at the first failure.
pub(crate) fn run(root: &Path) -> StepResult {
    Cargo::new(root, &["fmt", "--all", "--", "--check"]).run()?;
    for configuration in CLIPPY_CONFIGURATIONS {
        clippy(root, configuration)?;
    }
    if manifest::has_feature(&manifest::read(&root.join("ringline-core/Cargo.toml"))?, "testing") {
        clippy(root, &["-p", "ringline-core", "--features", "testing"])?;
        // Build (not only check) the criterion benchmarks, in the dev profile the tests share.
        Cargo::new(
            root,
            &["bench", "--no-run", "--profile", "dev", "-p", "ringline-core", "--features", "testing"],
        )
        .run()?;
    }
    Cargo::new(root, &["doc", "--workspace", "--no-deps", "--features", "ringline/futures-io,ringline/tls"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .run()
}

/// `cargo clippy <selection> --all-targets -- -D warnings`.
fn clippy(root: &Path, selection: &[&str]) -> StepResult {
    let mut args = vec!["clippy"];
    args.extend_from_slice(selection);
    args.extend_from_slice(&["--all-targets", "--", "-D", "warnings"]);
    Cargo::new(root, &args).run()
}
