//! Loud skips (TESTPLAN §0): a test that cannot run here says why, and `cargo xtask test` collects
//! the line. Standalone (no other `common` item) so binaries that compile without `common` use it.
#![allow(dead_code, unreachable_pub)]

/// Prints `line` to stderr (even under capture) and appends it to `<target>/ringline-skips.txt` for `cargo xtask test`.
pub fn record_skip(line: &str) {
    use std::io::Write;

    // Straight to the handle: libtest captures only the print macros, and a skip must show.
    let _ = writeln!(std::io::stderr(), "{line}");
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().unwrap_or(manifest);
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    let file = target.join("ringline-skips.txt");
    let written = std::fs::create_dir_all(&target).and_then(|()| {
        // One `write_all` of the whole line: appends from concurrent test binaries do not interleave.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)?
            .write_all(format!("{line}\n").as_bytes())
    });
    if let Err(e) = written {
        eprintln!("could not record the skip in {}: {e}", file.display());
    }
}
