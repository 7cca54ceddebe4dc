//! The end of `cargo xtask test` (TESTPLAN 34, 35): per-configuration counts parsed from libtest's
//! output, the backend each facade run really used, the io_uring probe's verdict, recorded skips
//! checked against `xtask/expected-skips.txt`, and test-name parity across the facade runs.

use std::collections::BTreeSet;
use std::path::Path;

/// Declares a CI machine without io_uring: uring configurations may then fail or skip.
pub(crate) const NO_URING_VAR: &str = "RINGLINE_CI_NO_URING";

/// The checked-in list of skips expected on the CI kernel.
pub(crate) const EXPECTED_SKIPS: &str = "xtask/expected-skips.txt";

/// How one test ended, from libtest's `test <name> ... <status>` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Passed,
    Failed,
    Ignored,
}

/// The tests of one `cargo test` run, in output order.
#[derive(Debug, Default)]
pub(crate) struct Tests(pub(crate) Vec<(String, Status)>);

impl Tests {
    /// Parses libtest's per-test lines out of a run's stdout.
    pub(crate) fn parse(stdout: &str) -> Tests {
        let parsed = stdout.lines().filter_map(|line| {
            let rest = line.strip_prefix("test ")?;
            let (name, status) = rest.rsplit_once(" ... ")?;
            let status = match status.trim() {
                "ok" => Status::Passed,
                "FAILED" => Status::Failed,
                s if s.starts_with("ignored") => Status::Ignored,
                _ => return None,
            };
            Some((name.trim().to_owned(), status))
        });
        Tests(parsed.collect())
    }

    /// How many tests ended with `status`.
    pub(crate) fn count(&self, status: Status) -> usize {
        self.0.iter().filter(|(_, s)| *s == status).count()
    }

    /// Names of the integration and unit tests (doctests, named `path - item (line N)`, vary with
    /// features and are left out of the parity check).
    fn names(&self) -> BTreeSet<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).filter(|n| !n.contains(" - ")).collect()
    }
}

/// One entry of the expected-skip list: a backend (`uring`, `mio` or `any`) and a line prefix.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ExpectedSkip {
    backend: String,
    prefix: String,
}

/// Parses `<backend>: <skip line prefix>` lines; `#` starts a comment line.
pub(crate) fn parse_expected(text: &str) -> Result<Vec<ExpectedSkip>, String> {
    let lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    lines
        .map(|line| match line.split_once(": ") {
            Some((b @ ("uring" | "mio" | "any"), prefix)) => {
                Ok(ExpectedSkip { backend: b.to_owned(), prefix: prefix.trim().to_owned() })
            }
            _ => Err(format!("{EXPECTED_SKIPS}: `{line}` is not `uring|mio|any: <skip line prefix>`")),
        })
        .collect()
}

/// Reads the expected-skip list from the workspace root.
pub(crate) fn read_expected(root: &Path) -> Result<Vec<ExpectedSkip>, String> {
    let text = std::fs::read_to_string(root.join(EXPECTED_SKIPS))
        .map_err(|e| format!("cannot read {EXPECTED_SKIPS}: {e}"))?;
    parse_expected(&text)
}

/// The skips of a run on `backend` that no entry of `expected` allows.
pub(crate) fn unexpected_skips<'a>(
    skips: &'a [String],
    backend: &str,
    expected: &[ExpectedSkip],
) -> Vec<&'a str> {
    let allowed = |line: &str| {
        expected.iter().any(|e| (e.backend == "any" || e.backend == backend) && line.starts_with(&e.prefix))
    };
    skips.iter().map(String::as_str).filter(|l| !allowed(l)).collect()
}

/// The backends a run reported with `backend: <name>` lines.
pub(crate) fn reported_backends(runs: &[String]) -> BTreeSet<&str> {
    runs.iter().filter_map(|l| l.strip_prefix("backend: ")).map(str::trim).collect()
}

/// The probe verdict a run reported (`probe: io_uring=yes|no ...`), if any.
pub(crate) fn probe_verdict(runs: &[String]) -> Option<&str> {
    runs.iter().find_map(|l| l.strip_prefix("probe: "))
}

/// For each run (by name), the tests other runs have and it lacks.
pub(crate) fn missing_tests<'a>(runs: &[(&'a str, &'a Tests)]) -> Vec<(&'a str, Vec<&'a str>)> {
    let all: BTreeSet<&str> = runs.iter().flat_map(|(_, t)| t.names()).collect();
    runs.iter()
        .map(|(name, t)| (*name, all.difference(&t.names()).copied().collect::<Vec<_>>()))
        .filter(|(_, missing)| !missing.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_lines_are_counted() {
        let out = "running 3 tests\ntest a ... ok\ntest b::c ... FAILED\ntest d ... ignored, slow\n\
                   test src/lib.rs - x (line 3) ... ok\ntest result: FAILED. 2 passed\n";
        let t = Tests::parse(out);
        assert_eq!((t.count(Status::Passed), t.count(Status::Failed), t.count(Status::Ignored)), (2, 1, 1));
        assert_eq!(t.names().into_iter().collect::<Vec<_>>(), ["a", "b::c", "d"]);
    }

    #[test]
    fn expected_skips_match_by_backend_and_prefix() {
        let e = parse_expected("# comment\nmio: SKIPPED: fixed\nany: SKIPPED: both\n").unwrap();
        let skips =
            ["SKIPPED: fixed table".to_owned(), "SKIPPED: both x".to_owned(), "SKIPPED: z".to_owned()];
        assert_eq!(unexpected_skips(&skips, "mio", &e), ["SKIPPED: z"]);
        assert_eq!(unexpected_skips(&skips, "uring", &e), ["SKIPPED: fixed table", "SKIPPED: z"]);
        assert!(parse_expected("epoll: SKIPPED: x").is_err());
    }

    #[test]
    fn a_test_missing_from_one_run_is_reported() {
        let a = Tests::parse("test x ... ok\ntest y ... ok\n");
        let b = Tests::parse("test x ... ok\n");
        assert_eq!(missing_tests(&[("a", &a), ("b", &b)]), [("b", vec!["y"])]);
        assert!(missing_tests(&[("a", &a), ("a2", &a)]).is_empty());
    }

    #[test]
    fn backend_and_probe_reports_are_read() {
        let runs = ["backend: uring".to_owned(), "probe: io_uring=yes send_zc=yes".to_owned()];
        assert_eq!(reported_backends(&runs).into_iter().collect::<Vec<_>>(), ["uring"]);
        assert_eq!(probe_verdict(&runs), Some("io_uring=yes send_zc=yes"));
    }
}
