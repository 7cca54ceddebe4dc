//! Shared helpers of the benchmark binaries (`tokio_echo`, `ringline_echo`, `loadgen`).
//!
//! The harness that drives them is `cargo xtask bench` (xtask/src/bench.rs).

/// Raises the soft `RLIMIT_NOFILE` to at least `wanted` (capped at the hard limit).
///
/// Returns the soft limit in force afterwards; the 2000-connection profiles need more
/// descriptors than the common default of 1024.
pub fn raise_nofile_limit(wanted: libc::rlim_t) -> std::io::Result<libc::rlim_t> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable `rlimit` for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let target = wanted.min(lim.rlim_max);
    if lim.rlim_cur >= target {
        return Ok(lim.rlim_cur);
    }
    lim.rlim_cur = target;
    // SAFETY: `lim` is a valid `rlimit`; the soft limit does not exceed the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(target)
}

/// Command line of the echo servers.
#[derive(Debug)]
pub struct ServerArgs {
    /// `--addr HOST:PORT` (default `127.0.0.1:7878`).
    pub addr: String,
    /// `--stats-file PATH`: where the server keeps `open=N` (its open connections) up to date.
    pub stats_file: Option<std::path::PathBuf>,
}

/// Parses `[--addr HOST:PORT] [--stats-file PATH]` for the echo servers; exits 2 on anything
/// else.
pub fn parse_server_args(program: &str) -> ServerArgs {
    let mut parsed = ServerArgs { addr: "127.0.0.1:7878".to_string(), stats_file: None };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => {
                parsed.addr = args.next().unwrap_or_else(|| usage(program, "--addr needs HOST:PORT"));
            }
            "--stats-file" => {
                let path = args.next().unwrap_or_else(|| usage(program, "--stats-file needs a path"));
                parsed.stats_file = Some(path.into());
            }
            other => usage(program, &format!("unknown argument {other}")),
        }
    }
    parsed
}

/// Keeps a `--stats-file` current: rewrites it (through a temporary file and a rename, so a
/// reader never sees half a line) whenever the open-connection count changed.
///
/// `loadgen --connect-only --server-stats PATH` reads it to confirm that the server itself
/// holds every connection (accepted and adopted, not just queued in the listen backlog)
/// before it samples the server's memory.
#[derive(Debug)]
pub struct StatsFile {
    /// The file.
    path: std::path::PathBuf,
    /// The count last written.
    written: Option<u64>,
}

impl StatsFile {
    /// A stats file at `path`, written at the first [`StatsFile::update`].
    pub fn new(path: std::path::PathBuf) -> Self {
        StatsFile { path, written: None }
    }

    /// Writes `open=N` if `open` differs from what the file holds.
    pub fn update(&mut self, open: u64) -> std::io::Result<()> {
        if self.written == Some(open) {
            return Ok(());
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, format!("open={open}\n"))?;
        std::fs::rename(&tmp, &self.path)?;
        self.written = Some(open);
        Ok(())
    }
}

/// Prints a usage error for an echo server and exits with status 2.
fn usage(program: &str, message: &str) -> ! {
    eprintln!("{message}; usage: {program} [--addr HOST:PORT] [--stats-file PATH]");
    std::process::exit(2);
}
