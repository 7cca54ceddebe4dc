//! Loud skips (TESTPLAN §0): a test that cannot run here says why, and `cargo xtask test` collects
//! the line. Also the run reports `cargo xtask test` checks (TESTPLAN 34, 35): the backend a run
//! used and the io_uring probe's verdict. Standalone (no other `common` item) so binaries that
//! compile without `common` use it.
#![allow(dead_code, unreachable_pub)]

/// Prints `line` to stderr (even under capture) and appends it to `<target>/ringline-skips.txt` for `cargo xtask test`.
pub fn record_skip(line: &str) {
    use std::io::Write;

    // Straight to the handle: libtest captures only the print macros, and a skip must show.
    let _ = writeln!(std::io::stderr(), "{line}");
    append("ringline-skips.txt", line);
}

/// Appends `line` (`backend: uring`, `probe: io_uring=yes ...`) to `<target>/ringline-runs.txt`,
/// which `cargo xtask test` reads after each configuration.
pub fn record_run(line: &str) {
    append("ringline-runs.txt", line);
}

/// Appends one line to `name` in the target directory.
fn append(name: &str, line: &str) {
    use std::io::Write;

    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().unwrap_or(manifest);
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    let file = target.join(name);
    let written = std::fs::create_dir_all(&target).and_then(|()| {
        // One `write_all` of the whole line: appends from concurrent test binaries do not interleave.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)?
            .write_all(format!("{line}\n").as_bytes())
    });
    if let Err(e) = written {
        eprintln!("could not record `{line}` in {}: {e}", file.display());
    }
}
