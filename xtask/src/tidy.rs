//! `cargo xtask tidy`: text checks over every `*.rs` file under each member crate's `src/`.
//!
//! 1. The first non-empty line is a `//!` module doc.
//! 2. Each `unsafe` block or impl has a `// SAFETY:` comment above it: within 6 code lines, comment lines not counted.
//! 3. No unfinished or debugging macros (to-do, unimplemented, dbg) are left in.
//!
//! The patterns are spelled with `concat!` so that this file does not match its own checks.
//! The whole check also runs as a `#[test]`, so `cargo test` enforces it.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::cmd::StepResult;
use crate::manifest;

/// Lines that open an unsafe block or impl.
const UNSAFE_PATTERNS: &[&str] = &[concat!("unsafe", " {"), concat!("unsafe", " impl")];

/// The comment an unsafe line needs above it.
const SAFETY_MARKER: &str = concat!("// SAFE", "TY:");

/// How many lines above an unsafe line may hold its safety comment.
const SAFETY_WINDOW: usize = 6;

/// Macros that must not be left in `src/`.
const BANNED_MACROS: &[&str] = &[concat!("to", "do!("), concat!("unimple", "mented!("), concat!("db", "g!(")];

/// A finding in a file's text: 1-based line number and what is wrong.
type Finding = (usize, String);

/// One failed check at a place in the workspace.
pub(crate) struct Violation {
    /// The file, relative to the workspace root.
    path: PathBuf,
    /// 1-based line number.
    line: usize,
    /// What is wrong.
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// Checks the workspace, prints each violation, and fails if there are any.
pub(crate) fn run(root: &Path) -> StepResult {
    let (files, violations) = check_workspace(root)?;
    violations.iter().for_each(|v| eprintln!("{v}"));
    if violations.is_empty() {
        println!("tidy: {files} files clean");
        Ok(())
    } else {
        Err(format!("{} tidy violation(s) in {files} files", violations.len()))
    }
}

/// Checks every `*.rs` under the members' `src/`: the number of files and the violations found.
pub(crate) fn check_workspace(root: &Path) -> StepResult<(usize, Vec<Violation>)> {
    let members = manifest::workspace_members(&manifest::read(&root.join("Cargo.toml"))?);
    if members.is_empty() {
        return Err("no `members` found in the workspace Cargo.toml".into());
    }
    let mut files = Vec::new();
    for member in &members {
        collect_rust_files(&root.join(member).join("src"), &mut files)?;
    }
    let mut violations = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let path = file.strip_prefix(root).unwrap_or(file).to_path_buf();
        let found = check_text(&text).into_iter();
        violations.extend(found.map(|(line, message)| Violation { path: path.clone(), line, message }));
    }
    Ok((files.len(), violations))
}

/// Adds every `*.rs` file under `dir` (recursively, sorted) to `files`; a missing `dir` adds none.
fn collect_rust_files(dir: &Path, files: &mut Vec<PathBuf>) -> StepResult {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_rust_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// All checks over one file's text.
pub(crate) fn check_text(text: &str) -> Vec<Finding> {
    let mut findings: Vec<Finding> = check_module_doc(text).into_iter().collect();
    findings.extend(check_unsafe_has_safety(text));
    findings.extend(check_banned_macros(text));
    findings.sort_by_key(|(line, _)| *line);
    findings
}

/// The first non-empty line must start with `//!`.
pub(crate) fn check_module_doc(text: &str) -> Option<Finding> {
    match text.lines().enumerate().find(|(_, line)| !line.trim().is_empty()) {
        Some((_, line)) if line.trim_start().starts_with("//!") => None,
        Some((index, _)) => Some((index + 1, "the file must open with a `//!` module doc".into())),
        None => Some((1, "empty file: it must open with a `//!` module doc".into())),
    }
}

/// Every unsafe block or impl outside a comment needs a safety comment in the lines above it.
pub(crate) fn check_unsafe_has_safety(text: &str) -> Vec<Finding> {
    let lines: Vec<&str> = text.lines().collect();
    let needs_comment =
        |line: &str| !line.trim_start().starts_with("//") && UNSAFE_PATTERNS.iter().any(|p| line.contains(p));
    // Walk up from the `unsafe` line: comment lines are free (a SAFETY comment may have several
    // bullets), code lines count against the window.
    let documented = |index: usize| {
        let mut code_lines = 0;
        for l in lines[..index].iter().rev() {
            if l.contains(SAFETY_MARKER) {
                return true;
            }
            if !l.trim_start().starts_with("//") {
                code_lines += 1;
                if code_lines >= SAFETY_WINDOW {
                    return false;
                }
            }
        }
        false
    };
    (0..lines.len())
        .filter(|&index| needs_comment(lines[index]) && !documented(index))
        .map(|index| {
            (
                index + 1,
                format!(
                    "`unsafe` without a `{SAFETY_MARKER}` comment in the {SAFETY_WINDOW} code lines above"
                ),
            )
        })
        .collect()
}

/// No unfinished or debugging macro may appear anywhere in the file.
pub(crate) fn check_banned_macros(text: &str) -> Vec<Finding> {
    let banned = |line: &str| BANNED_MACROS.iter().find(|m| line.contains(*m)).copied();
    let found = text.lines().enumerate().filter_map(|(index, line)| Some((index, banned(line)?)));
    found.map(|(index, m)| (index + 1, format!("`{m}..)` must not be left in src/"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test sources write `UNSAFE`, `TODO!`, `SAFE_TY` so this file does not trip its own checks.
    fn source(template: &str) -> String {
        template
            .replace("UNSAFE", "unsafe")
            .replace("TODO!", concat!("to", "do!"))
            .replace("SAFE_TY", "SAFETY")
    }

    #[test]
    fn workspace_is_tidy() {
        let (files, violations) = check_workspace(&crate::workspace_root()).unwrap();
        let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert!(files > 0, "tidy found no source files");
        assert!(report.is_empty(), "tidy violations:\n{}", report.join("\n"));
    }

    #[test]
    fn module_doc_must_be_the_first_non_empty_line() {
        assert_eq!(check_module_doc("\n//! Docs.\nfn f() {}\n"), None);
        assert_eq!(check_module_doc("\nuse std::io;\n//! Late.\n").map(|f| f.0), Some(2));
        assert_eq!(check_module_doc("/// Item doc, not a module doc.\nfn f() {}\n").map(|f| f.0), Some(1));
        assert!(check_module_doc("\n\n").is_some());
    }

    #[test]
    fn unsafe_block_needs_a_safety_comment_close_above() {
        let good = source("fn f() {\n    // SAFE_TY: `p` is valid, checked above.\n    UNSAFE { *p }\n}\n");
        assert!(check_unsafe_has_safety(&good).is_empty());
        let missing = source("fn f() {\n    UNSAFE { *p }\n}\n");
        assert_eq!(check_unsafe_has_safety(&missing).len(), 1);
        let too_far = source("// SAFE_TY: far\n\n\n\n\n\n\nUNSAFE { *p }\n");
        assert_eq!(check_unsafe_has_safety(&too_far)[0].0, 8);
    }

    #[test]
    fn unsafe_impl_needs_a_safety_comment_but_comments_do_not() {
        let missing = source("struct S;\nUNSAFE impl Send for S {}\n");
        assert_eq!(check_unsafe_has_safety(&missing)[0].0, 2);
        let good = source("struct S;\n// SAFE_TY: S holds no data.\nUNSAFE impl Send for S {}\n");
        assert!(check_unsafe_has_safety(&good).is_empty());
        let comment = source("/// let x = UNSAFE { f() };\n// UNSAFE impl in prose\n");
        assert!(check_unsafe_has_safety(&comment).is_empty());
    }

    #[test]
    fn banned_macros_are_reported_by_line() {
        let text = source("fn f() {\n    TODO!()\n}\n");
        assert_eq!(check_banned_macros(&text)[0].0, 2);
        let text = format!("fn f() {{ {}x) }}\n", concat!("db", "g!("));
        assert_eq!(check_banned_macros(&text).len(), 1);
        assert!(check_banned_macros("fn todo() { to_do(); }\n// TODO: later\n").is_empty());
    }
}
