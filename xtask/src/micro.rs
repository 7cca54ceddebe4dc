//! `cargo xtask microbench [--full]`: the criterion microbenchmarks of `ringline-core`
//! (`benches/core.rs`, `benches/dispatch.rs`), then a table of the median time per operation.
//!
//! By default criterion runs with a short warm-up (0.5 s), measurement (1.5 s) and 20 samples
//! per benchmark, about half a minute in all; `--full` keeps criterion's defaults. The table is
//! read from the `estimates.json` files criterion writes under `<target>/criterion/` (only those
//! written by this run), printed, and saved to `<target>/microbench/latest.md`, with the ratio
//! of one round of the worker loop to a bare poll (`dispatch/loop_round` ÷ `dispatch/direct_round`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cmd::{Cargo, StepResult};

/// Criterion arguments of the default, short run.
const SHORT: &[&str] = &["--warm-up-time", "0.5", "--measurement-time", "1.5", "--sample-size", "20"];

/// One benchmark's result.
#[derive(Debug, PartialEq)]
struct Estimate {
    /// `group/function`.
    id: String,
    /// Median time per iteration, ns.
    median: f64,
    /// Lower bound of its 95 % confidence interval, ns.
    lower: f64,
    /// Upper bound, ns.
    upper: f64,
}

/// Parses `[--full]`; `true` means criterion's default measurement times.
pub(crate) fn parse_args(args: &[String]) -> Result<bool, String> {
    match args {
        [] => Ok(false),
        [flag] if flag == "--full" => Ok(true),
        _ => Err(format!("microbench takes only --full, not {}", args.join(" "))),
    }
}

/// Runs the benchmarks and prints the table.
pub(crate) fn run(root: &Path, full: bool) -> StepResult {
    let started = SystemTime::now();
    let mut args = vec!["bench", "-p", "ringline-core", "--features", "testing", "--bench", "core"];
    args.extend(["--bench", "dispatch", "--", "--noplot"]);
    if !full {
        args.extend(SHORT);
    }
    Cargo::new(root, &args).run()?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
    let mut estimates = collect(&target.join("criterion"), started)?;
    if estimates.is_empty() {
        return Err("criterion wrote no estimates".to_string());
    }
    estimates.sort_by(|a, b| a.id.cmp(&b.id));
    let report = table(&estimates);
    println!("\n{report}");
    let dir = target.join("microbench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("latest.md");
    std::fs::write(&path, &report).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("written to {}", path.display());
    Ok(())
}

/// The estimates under `dir` (`<group>/<function>/new/estimates.json`) written since `since`.
fn collect(dir: &Path, since: SystemTime) -> StepResult<Vec<Estimate>> {
    let mut found = Vec::new();
    for group in read_dir(dir)? {
        for function in read_dir(&group)? {
            let file = function.join("new").join("estimates.json");
            let fresh = std::fs::metadata(&file).and_then(|m| m.modified()).is_ok_and(|t| t >= since);
            if !fresh {
                continue;
            }
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let id = format!("{}/{}", name(&group), name(&function));
            found.push(parse_estimate(&id, &text).ok_or_else(|| format!("no median in {}", file.display()))?);
        }
    }
    Ok(found)
}

/// The subdirectories of `dir`.
fn read_dir(dir: &Path) -> StepResult<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    Ok(entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect())
}

/// The last component of a path.
fn name(path: &Path) -> String {
    path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// The median's point estimate and confidence interval from criterion's `estimates.json`.
fn parse_estimate(id: &str, json: &str) -> Option<Estimate> {
    let median = &json[json.find("\"median\":")?..];
    let median =
        &median[..median.find('}').and_then(|ci| median[ci + 1..].find('}').map(|end| ci + end + 2))?];
    Some(Estimate {
        id: id.to_string(),
        median: number_after(median, "\"point_estimate\":")?,
        lower: number_after(median, "\"lower_bound\":")?,
        upper: number_after(median, "\"upper_bound\":")?,
    })
}

/// The number right after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// The markdown table, with the dispatch ratio under it when both rounds were measured.
fn table(estimates: &[Estimate]) -> String {
    let mut t = String::from("| benchmark | median ns/op | 95 % CI of the median |\n|---|---:|---:|\n");
    for e in estimates {
        let _ = writeln!(t, "| {} | {:.1} | {:.1}–{:.1} |", e.id, e.median, e.lower, e.upper);
    }
    let find = |id: &str| estimates.iter().find(|e| e.id == id).map(|e| e.median);
    if let (Some(round), Some(direct)) = (find("dispatch/loop_round"), find("dispatch/direct_round")) {
        let _ = writeln!(
            t,
            "\ndispatch: one worker-loop round (MockDriver) costs {round:.1} ns, {:.1}× a bare poll ({direct:.1} ns)",
            round / direct
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_read_from_criterion_estimates() {
        let json = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":40.0,"upper_bound":63.3},"point_estimate":50.4,"standard_error":5.9},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":38.9,"upper_bound":47.5},"point_estimate":41.3,"standard_error":3.1},"median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":4.3,"upper_bound":26.5},"point_estimate":13.1,"standard_error":6.3}}"#;
        let e = parse_estimate("task/wake_poll", json).unwrap();
        assert_eq!(e, Estimate { id: "task/wake_poll".into(), median: 41.3, lower: 38.9, upper: 47.5 });
        assert!(parse_estimate("x", r#"{"mean":{}}"#).is_none());
    }

    #[test]
    fn the_table_shows_the_dispatch_ratio() {
        let e = |id: &str, median| Estimate { id: id.into(), median, lower: median, upper: median };
        let t = table(&[e("dispatch/direct_round", 20.0), e("dispatch/loop_round", 110.0)]);
        assert!(t.contains("| dispatch/loop_round | 110.0 | 110.0–110.0 |"), "{t}");
        assert!(t.contains("5.5× a bare poll"), "{t}");
    }

    #[test]
    fn only_full_is_accepted() {
        assert_eq!(parse_args(&[]), Ok(false));
        assert_eq!(parse_args(&["--full".to_string()]), Ok(true));
        assert!(parse_args(&["--quick".to_string()]).is_err());
    }
}
