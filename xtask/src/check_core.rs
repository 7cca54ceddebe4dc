//! `cargo xtask check-core`: the Architecture Invariant that `ringline-core` stays portable.
//!
//! No io-uring, mio or libc may appear in `ringline-core`'s normal dependency tree on any target.
//! Dev-dependencies are not checked: a test-only edge may bring libc, never a backend.

use std::path::{Path, PathBuf};

use crate::cmd::{Cargo, StepResult};

/// Crates that must not be in core's tree, as `cargo tree --prefix none` starts their lines.
const FORBIDDEN: &[&str] = &["io-uring", "mio", "libc"];

/// Where the dependency tree text comes from.
#[derive(Debug, PartialEq)]
pub(crate) enum TreeSource {
    /// Run `cargo tree` on the workspace.
    Cargo,
    /// Read a saved `cargo tree --prefix none` output (`--tree-file PATH`).
    File(PathBuf),
}

/// Parses the subcommand's arguments: none, or `--tree-file PATH`.
pub(crate) fn parse_args(args: &[String]) -> Result<TreeSource, String> {
    match args {
        [] => Ok(TreeSource::Cargo),
        [flag, path] if flag == "--tree-file" => Ok(TreeSource::File(PathBuf::from(path))),
        _ => Err(format!("check-core takes no arguments or `--tree-file PATH`, got: {}", args.join(" "))),
    }
}

/// Gets the tree and fails, printing the offending lines, if a forbidden crate is in it.
pub(crate) fn run(root: &Path, source: &TreeSource) -> StepResult {
    let tree = match source {
        TreeSource::Cargo => {
            // With every optional feature of core that users can enable (`testing` is test-only);
            // `tls` brings rustls without a crypto provider, which must stay libc-free too.
            let args = [
                "tree",
                "-p",
                "ringline-core",
                "-e",
                "normal",
                "--target",
                "all",
                "--features",
                "futures-io,tls",
                "--prefix",
                "none",
            ];
            Cargo::new(root, &args).stdout()?
        }
        TreeSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read tree file {}: {e}", path.display()))?,
    };
    let offending = forbidden_lines(&tree);
    if offending.is_empty() {
        println!(
            "check-core: ringline-core has no io-uring, mio or libc ({} tree lines)",
            tree.lines().count()
        );
        return match source {
            TreeSource::Cargo => check_mio_only_build(root),
            TreeSource::File(_) => Ok(()),
        };
    }
    eprintln!("check-core: ringline-core's normal dependency tree must not contain io-uring, mio or libc:");
    offending.iter().for_each(|line| eprintln!("  {line}"));
    Err(format!("{} forbidden dependency line(s) in ringline-core's tree", offending.len()))
}

/// The mio-only build of the facade must not compile io-uring at all.
fn check_mio_only_build(root: &Path) -> StepResult {
    let args = [
        "tree",
        "-p",
        "ringline",
        "--no-default-features",
        "--features",
        "mio",
        "-e",
        "normal",
        "--prefix",
        "none",
    ];
    let tree = Cargo::new(root, &args).stdout()?;
    let uring: Vec<&str> = tree.lines().map(str::trim).filter(|l| l.starts_with("io-uring ")).collect();
    if uring.is_empty() {
        println!("check-core: the mio-only build of ringline has no io-uring");
        return Ok(());
    }
    uring.iter().for_each(|line| eprintln!("  {line}"));
    Err("io-uring is in the tree of `ringline --no-default-features --features mio`".to_string())
}

/// The lines of a `cargo tree --prefix none` output that name a forbidden crate.
pub(crate) fn forbidden_lines(tree: &str) -> Vec<&str> {
    let forbidden =
        |line: &str| FORBIDDEN.iter().any(|name| line.strip_prefix(name).is_some_and(|r| r.starts_with(' ')));
    tree.lines().map(str::trim).filter(|line| forbidden(line)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "ringline-core v0.1.0 (/work/main/ringline-core)\nbytes v1.12.2\nthiserror v2.0.17\n";

    #[test]
    fn tree_with_only_portable_crates_passes() {
        assert!(forbidden_lines(CLEAN).is_empty());
        assert!(forbidden_lines("bytes v1.12.2\n").is_empty());
    }

    #[test]
    fn tree_with_mio_fails_and_names_the_line() {
        let tree = format!("{CLEAN}mio v1.2.5\n");
        assert_eq!(forbidden_lines(&tree), ["mio v1.2.5"]);
    }

    #[test]
    fn each_forbidden_crate_is_caught_but_similar_names_are_not() {
        let tree = "io-uring v0.7.16\nlibc v0.2.177 (*)\nmiow v0.6.0\nlibcore-ish v1.0.0\n";
        assert_eq!(forbidden_lines(tree), ["io-uring v0.7.16", "libc v0.2.177 (*)"]);
    }

    #[test]
    fn tree_file_with_mio_makes_the_check_fail() {
        let path = std::env::temp_dir().join(format!("xtask-check-core-{}.txt", std::process::id()));
        std::fs::write(&path, format!("{CLEAN}mio v1.2.5\n")).unwrap();
        let result = run(Path::new("."), &TreeSource::File(path.clone()));
        std::fs::remove_file(&path).unwrap();
        assert!(result.unwrap_err().contains("1 forbidden"));
    }

    #[test]
    fn arguments_are_none_or_a_tree_file() {
        assert_eq!(parse_args(&[]), Ok(TreeSource::Cargo));
        let args = ["--tree-file".to_owned(), "t.txt".to_owned()];
        assert_eq!(parse_args(&args), Ok(TreeSource::File(PathBuf::from("t.txt"))));
        assert!(parse_args(&["--bogus".to_owned()]).is_err());
    }
}
