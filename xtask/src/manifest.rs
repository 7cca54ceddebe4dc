//! Just enough reading of `Cargo.toml` text for xtask: workspace members and declared features.

use std::path::Path;

use crate::cmd::StepResult;

/// Reads a manifest file, with the path in the error.
pub(crate) fn read(path: &Path) -> StepResult<String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The entries of `members = [...]` in a workspace manifest (globs are not expanded).
pub(crate) fn workspace_members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.lines().position(|line| key_of(line) == Some("members")) else {
        return Vec::new();
    };
    let text: String = manifest.lines().skip(start).collect::<Vec<_>>().join("\n");
    let list = text.split_once('[').map_or("", |(_, rest)| rest.split(']').next().unwrap_or(""));
    list.split(',').map(|entry| entry.trim().trim_matches('"').to_owned()).filter(|e| !e.is_empty()).collect()
}

/// Whether the manifest's `[features]` table declares `feature`.
pub(crate) fn has_feature(manifest: &str, feature: &str) -> bool {
    let mut in_features = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_features = line == "[features]";
        } else if in_features && key_of(line) == Some(feature) {
            return true;
        }
    }
    false
}

/// The key of a `key = value` line, if the line is one.
fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('#')).then_some(key.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_read_from_one_or_many_lines() {
        let one = "[workspace]\nresolver = \"3\"\nmembers = [\"a\", \"b-c\"]\n";
        assert_eq!(workspace_members(one), ["a", "b-c"]);
        let many = "[workspace]\nmembers = [\n    \"a\",\n    \"b\",\n]\n[workspace.package]\n";
        assert_eq!(workspace_members(many), ["a", "b"]);
    }

    #[test]
    fn feature_counts_only_inside_the_features_table() {
        let manifest = "[features]\n# comment\ntesting = []\n\n[dependencies]\nmio = \"1\"\n";
        assert!(has_feature(manifest, "testing"));
        assert!(!has_feature(manifest, "mio"));
        assert!(!has_feature("[dependencies]\ntesting = \"1\"\n", "testing"));
    }
}
