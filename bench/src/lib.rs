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

/// Parses `--addr HOST:PORT` (default `127.0.0.1:7878`) for the echo servers; exits 2 on
/// anything else.
pub fn parse_server_args(program: &str) -> String {
    let mut addr = "127.0.0.1:7878".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().unwrap_or_else(|| usage(program, "--addr needs HOST:PORT")),
            other => usage(program, &format!("unknown argument {other}")),
        }
    }
    addr
}

/// Prints a usage error for an echo server and exits with status 2.
fn usage(program: &str, message: &str) -> ! {
    eprintln!("{message}; usage: {program} [--addr HOST:PORT]");
    std::process::exit(2);
}
