//! The command line of the example servers: `--addr HOST:PORT` and `--workers N`. Used by the
//! shared `main` in `mod.rs` and, on its own, by the `shutdown` example.

/// `--addr HOST:PORT` (default `default_addr`) and `--workers N` (default `default_workers`; 0:
/// one per CPU). Exits with status 2 on an unknown argument.
pub(crate) fn parse_args(name: &str, default_addr: &str, default_workers: usize) -> (String, usize) {
    let mut addr = default_addr.to_string();
    let mut workers = default_workers;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().expect("--addr needs HOST:PORT"),
            "--workers" => {
                workers = args.next().and_then(|n| n.parse().ok()).expect("--workers needs a number")
            }
            other => {
                eprintln!("unknown argument {other}; usage: {name} [--addr HOST:PORT] [--workers N]");
                std::process::exit(2);
            }
        }
    }
    (addr, workers)
}
