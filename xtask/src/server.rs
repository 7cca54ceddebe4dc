//! Helpers for the children that `bench` and `examples` start: finding a server's
//! `listening on ADDR` line, and waiting for a client with a time limit.

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Reads the child's stdout until a line containing `listening on `, which it returns.
///
/// A thread keeps draining stdout afterwards so the child never blocks on a full pipe.
pub(crate) fn wait_listening_line(child: &mut Child, timeout: Duration) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + timeout;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("listening on ") => return Ok(line),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("no `listening on` line within {} s", timeout.as_secs()));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("it closed stdout without a `listening on` line".to_string());
            }
        }
    }
}

/// `ADDR` from a line containing `listening on ADDR`.
pub(crate) fn listening_addr(line: &str) -> Option<String> {
    let rest = line.split_once("listening on ")?.1;
    rest.split_whitespace().next().map(str::to_owned)
}

/// Waits for `child` up to `limit`; kills it after that.
pub(crate) fn wait_timeout(child: &mut Child, limit: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {} s; killed", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_follows_listening_on() {
        assert_eq!(
            listening_addr("echo_server listening on 127.0.0.1:7878 (Uring backend)").as_deref(),
            Some("127.0.0.1:7878")
        );
        assert_eq!(listening_addr("starting up"), None);
    }
}
