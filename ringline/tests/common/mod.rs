//! Shared helpers of the facade's integration tests: launching, watchdogs, fd baselines.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod alloc;
pub mod framed;
pub mod skip;

#[allow(unused_imports)]
pub use skip::{record_run, record_skip};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringline::{
    AsyncEventHandler, Config, ConfigBuilder, ConnCtx, Error, ParseResult, RinglineBuilder, ShutdownHandle,
};

/// Aborts the process with the test's name if the guard is not dropped within `secs`.
pub struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    pub fn new(name: &'static str, secs: u64) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
                eprintln!("WATCHDOG: test `{name}` hung for {secs}s on backend {}", backend_label());
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The backend this test run asked for (for failure messages).
pub fn backend_label() -> String {
    std::env::var("RINGLINE_BACKEND").unwrap_or_else(|_| format!("default ({:?})", ringline::BACKEND))
}

/// A running server under test.
pub struct Server {
    pub shutdown: ShutdownHandle,
    pub handles: Vec<JoinHandle<Result<(), Error>>>,
    pub addr: SocketAddr,
}

impl Server {
    /// Launches handler `H` on 127.0.0.1:0 with `cfg` (workers default to 2 when unset).
    pub fn start<H: AsyncEventHandler>(cfg: ConfigBuilder) -> Server {
        let cfg = cfg.build().expect("valid test config");
        let cfg = if cfg.workers() == 0 { rebuild_workers(cfg, 2) } else { cfg };
        let (shutdown, handles) = RinglineBuilder::new(cfg)
            .bind("127.0.0.1:0".parse().unwrap())
            .launch::<H>()
            .unwrap_or_else(|e| panic!("launch failed on {}: {e}", backend_label()));
        let addr = shutdown.local_addrs()[0];
        Server { shutdown, handles, addr }
    }

    /// Graceful shutdown; asserts every worker joins cleanly.
    pub fn stop(self) {
        self.shutdown.shutdown_with_deadline(Duration::from_secs(5));
        for h in self.handles {
            h.join()
                .expect("worker thread panicked")
                .unwrap_or_else(|e| panic!("worker error on {}: {e}", backend_label()));
        }
    }
}

fn rebuild_workers(_cfg: Config, n: usize) -> Config {
    // Config has no setters after build; tests that care pass `workers` explicitly.
    Config::builder().workers(n).build().unwrap()
}

/// A test config with 2 workers and small, test-friendly sizes.
pub fn config() -> ConfigBuilder {
    Config::builder().workers(2).max_connections(4096)
}

/// The lossless echo handler of the README.
pub struct Echo;

impl AsyncEventHandler for Echo {
    fn create_for_worker(_worker: usize) -> Self {
        Echo
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        echo_loop(conn)
    }
}

pub async fn echo_loop(conn: ConnCtx) {
    loop {
        let data = match conn.recv().await {
            Ok(d) if !d.is_empty() => d,
            _ => break,
        };
        if conn.send_owned(data).await.is_err() {
            break;
        }
    }
}

/// Connects with read/write timeouts so a broken server fails the test instead of hanging it.
pub fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect on {}: {e}", backend_label()));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Writes `data`, then reads exactly `data.len()` bytes back and checks them.
pub fn round_trip(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).unwrap();
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).unwrap_or_else(|e| panic!("read back on {}: {e}", backend_label()));
    assert!(back == data, "echo mismatch on {}", backend_label());
}

/// Deterministic bytes for stream `id`.
pub fn pattern(id: u64, len: usize) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// What each open descriptor of this process points at (for failure messages).
pub fn fd_list() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                Some(format!(
                    "{}->{}",
                    e.file_name().to_string_lossy(),
                    std::fs::read_link(e.path()).ok()?.display()
                ))
            })
            .collect()
        })
        .unwrap_or_default()
}

/// Threads of this process started by ringline (named `ringline-*`). Other threads come and go
/// with the test harness running tests in parallel, so they are not counted.
pub fn thread_count() -> usize {
    thread_names().iter().filter(|n| n.starts_with("ringline-")).count()
}

/// Names of this process's threads.
pub fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `f` every 10 ms for up to `secs` until it returns true.
pub fn settle(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A client-only runtime (no listener) with one worker.
pub fn client_runtime(cfg: ConfigBuilder) -> (ShutdownHandle, Vec<JoinHandle<Result<(), Error>>>) {
    RinglineBuilder::new(cfg.workers(1).build().unwrap())
        .launch::<Idle>()
        .unwrap_or_else(|e| panic!("launch failed on {}: {e}", backend_label()))
}

/// A handler with no connections of its own.
pub struct Idle;

impl AsyncEventHandler for Idle {
    fn create_for_worker(_worker: usize) -> Self {
        Idle
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        echo_loop(conn)
    }
}

/// Runs the future made by `f` on worker 0 and returns its output (watchdog: 30 s).
pub fn on_worker<T, F, Fut>(shutdown: &ShutdownHandle, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel();
    shutdown
        .worker(0)
        .expect("worker 0")
        .spawn(move || async move {
            let _ = tx.send(f().await);
        })
        .expect("remote spawn");
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("worker task did not finish on {}", backend_label()))
}

/// Stops a runtime and joins its workers.
pub fn stop(shutdown: ShutdownHandle, handles: Vec<JoinHandle<Result<(), Error>>>) {
    shutdown.shutdown_with_deadline(Duration::from_secs(5));
    for h in handles {
        h.join().expect("worker panicked").expect("worker error");
    }
}

/// Makes closing `s` send a reset (`SO_LINGER {on, 0}`) instead of a FIN.
pub fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `l` outlives the call, its size is passed, and `s` keeps the fd open.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt(SO_LINGER): {}", std::io::Error::last_os_error());
}

/// Environment variable telling a re-executed test binary that it runs as the child.
pub const CHILD_ENV: &str = "RINGLINE_TEST_CHILD";

/// True in a child started by [`run_child`].
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Re-executes this test binary running only `test`, as a child marked by [`CHILD_ENV`] (for
/// rlimit and signal-disposition tests); returns its exit status after echoing its output.
pub fn run_child(test: &str) -> std::process::ExitStatus {
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("spawn the child test process");
    eprintln!("--- child `{test}` stdout ---\n{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("--- child `{test}` stderr ---\n{}", String::from_utf8_lossy(&out.stderr));
    out.status
}

/// Descriptors of this process that are TCP sockets bound locally to `port` (listeners and the
/// connections accepted on them). Unlike [`fd_count`] it is unaffected by other tests running in
/// parallel in the same binary, so a test can compare its own server's fds with a baseline.
pub fn fds_on_port(port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1).and_then(|a| a.rsplit(':').next());
            if local_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port) {
                if let Some(inode) = cols.get(9) {
                    inodes.insert(format!("socket:[{inode}]"));
                }
            }
        }
    }
    let links = std::fs::read_dir("/proc/self/fd").into_iter().flatten().filter_map(Result::ok);
    links
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| inodes.contains(&target.to_string_lossy().into_owned()))
        .count()
}

/// Answers each newline-terminated line; a peer that never finishes a line makes no progress.
/// A read error other than the idle timeout panics the task (counted in `task_panics`).
pub struct LineEcho;

impl AsyncEventHandler for LineEcho {
    fn create_for_worker(_worker: usize) -> Self {
        LineEcho
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            loop {
                let mut line = Vec::new();
                let r = conn
                    .with_data(|d| match d.iter().position(|b| *b == b'\n') {
                        Some(i) => {
                            line.extend_from_slice(&d[..=i]);
                            ParseResult::Consumed(i + 1)
                        }
                        None => ParseResult::NeedMore,
                    })
                    .await;
                match r {
                    Ok(n) if n > 0 => {
                        if conn.send(&line).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => return,
                    Err(e) => {
                        assert!(matches!(e, Error::IdleTimeout), "unexpected {e:?}");
                        return;
                    }
                }
            }
        }
    }
}
