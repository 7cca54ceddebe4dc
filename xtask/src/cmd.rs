//! Running cargo: every command is echoed as `$ cargo args` before it runs.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

/// The result of a step: `Err` carries a message for the user.
pub(crate) type StepResult<T = ()> = Result<T, String>;

/// A cargo invocation in the workspace root, with the text to echo for it.
pub(crate) struct Cargo {
    /// The process to run.
    command: Command,
    /// The shell-like line echoed before running: env assignments, then `cargo` and its args.
    shown: String,
}

impl Cargo {
    /// `$CARGO args` (falling back to `cargo`) with `root` as the working directory.
    pub(crate) fn new(root: &Path, args: &[&str]) -> Cargo {
        let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut command = Command::new(program);
        command.args(args).current_dir(root);
        let shown =
            std::iter::once("cargo").chain(args.iter().copied()).map(quote).collect::<Vec<_>>().join(" ");
        Cargo { command, shown }
    }

    /// Sets an environment variable for the command and shows it in the echo.
    pub(crate) fn env(mut self, key: &str, value: &str) -> Cargo {
        self.command.env(key, value);
        self.shown = format!("{key}={} {}", quote(value), self.shown);
        self
    }

    /// Removes an environment variable, so the caller's shell cannot change what runs.
    pub(crate) fn env_remove(mut self, key: &str) -> Cargo {
        self.command.env_remove(key);
        self
    }

    /// Echoes and runs the command with inherited output; `Err` if it fails to start or exits non-zero.
    pub(crate) fn run(mut self) -> StepResult {
        println!("$ {}", self.shown);
        let status = self.command.status().map_err(|e| format!("`{}` did not start: {e}", self.shown))?;
        if status.success() { Ok(()) } else { Err(format!("`{}` failed ({status})", self.shown)) }
    }

    /// Echoes and runs the command, printing its stdout line by line as it comes and also
    /// returning it; stderr goes to the terminal. The text is returned whether or not it passed.
    pub(crate) fn tee(mut self) -> (StepResult, String) {
        use std::io::BufRead;
        println!("$ {}", self.shown);
        let child = self.command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => return (Err(format!("`{}` did not start: {e}", self.shown)), String::new()),
        };
        let mut text = String::new();
        if let Some(out) = child.stdout.take() {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                println!("{line}");
                text.push_str(&line);
                text.push('\n');
            }
        }
        let result = match child.wait() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("`{}` failed ({status})", self.shown)),
            Err(e) => Err(format!("`{}`: {e}", self.shown)),
        };
        (result, text)
    }

    /// Echoes and runs the command, returning its stdout; stderr goes to the terminal.
    pub(crate) fn stdout(mut self) -> StepResult<String> {
        println!("$ {}", self.shown);
        let output = self
            .command
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("`{}` did not start: {e}", self.shown))?;
        if !output.status.success() {
            return Err(format!("`{}` failed ({})", self.shown, output.status));
        }
        String::from_utf8(output.stdout).map_err(|e| format!("`{}` printed non-UTF-8: {e}", self.shown))
    }
}

/// Quotes an argument for the echo when it holds spaces or is empty.
fn quote(arg: &str) -> String {
    if arg.is_empty() || arg.contains(char::is_whitespace) { format!("\"{arg}\"") } else { arg.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_shows_env_and_quotes_spaces() {
        let cargo = Cargo::new(Path::new("."), &["doc", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(cargo.shown, "RUSTDOCFLAGS=\"-D warnings\" cargo doc --no-deps");
    }
}
