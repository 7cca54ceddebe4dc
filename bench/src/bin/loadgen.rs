//! Single-threaded, epoll-based (mio) load generator for echo servers.
//!
//! Opens `--conns` connections to `--addr`; each keeps `--depth` messages of `--size` bytes in
//! flight (ping-pong at depth 1). Every echoed byte is checked against a pattern derived from the
//! connection id and the message sequence number, and every message's round trip (from being
//! queued for writing to its last byte being read back) goes into a log-linear histogram. After
//! `--warmup-secs` the counters reset and a window of `--secs` is measured; then one line is
//! printed:
//!
//! `msgs=<n> secs=<f> p50_us=<f> p99_us=<f> p999_us=<f> errors=<n>`
//!
//! With `--server-pid PID` a second line gives the server's CPU over the window (user and system
//! time from `/proc/PID/stat` in clock ticks; on-CPU time of all its threads from
//! `/proc/PID/task/*/schedstat` in ns, 0 if unavailable) and its memory at the end (from
//! `/proc/PID/status`): `utime_ticks=<n> stime_ticks=<n> cpu_ns=<n> rss_kib=<n> hwm_kib=<n>`.
//!
//! `--connect-only` measures idle connections: it samples the server's RSS, opens the
//! connections, waits until the server reports holding all of them (`--server-stats PATH`, the
//! file the echo servers keep with `--stats-file`: `open=N`), holds them idle for `--secs` and
//! samples the RSS again, before any byte was sent. Then it echoes one message on each
//! connection, holds them for `--secs` more and samples a third time. It prints
//! `conns=<n> secs=<f> rss_before_kib=<n> rss_idle_kib=<n> rss_echoed_kib=<n> hwm_kib=<n>
//! server_open=<n> errors=<n>` (one line), where `server_open` is the server's count when the
//! idle RSS was sampled.
//!
//! A byte mismatch, a connection error or a stall makes the exit status non-zero.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Connections opened at once before waiting for them to be established.
const CONNECT_BATCH: usize = 200;
/// How long one batch of connects may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// No message completed for this long while some are in flight: the run has stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of the shared read buffer.
const SCRATCH: usize = 64 * 1024;

/// Command-line options.
struct Opts {
    /// Server address.
    addr: SocketAddr,
    /// Connections to open.
    conns: usize,
    /// Messages in flight per connection.
    depth: usize,
    /// Bytes per message.
    size: usize,
    /// Seconds before the measured window.
    warmup_secs: f64,
    /// Seconds measured (or held, with `connect_only`).
    secs: f64,
    /// Open idle connections only.
    connect_only: bool,
    /// Server process to sample in `/proc`.
    server_pid: Option<u32>,
    /// The server's stats file (`open=N`), read by `connect_only`.
    server_stats: Option<std::path::PathBuf>,
}

/// Parses the command line; `Err` holds the message for the user.
fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        addr: "127.0.0.1:7878".parse().map_err(|e| format!("{e}"))?,
        conns: 1,
        depth: 1,
        size: 64,
        warmup_secs: 1.0,
        secs: 3.0,
        connect_only: false,
        server_pid: None,
        server_stats: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--connect-only" {
            o.connect_only = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("bad value {value:?} for {a}: {e}");
        match a.as_str() {
            "--addr" => o.addr = value.parse().map_err(|e| bad(&e))?,
            "--conns" => o.conns = value.parse().map_err(|e| bad(&e))?,
            "--depth" => o.depth = value.parse().map_err(|e| bad(&e))?,
            "--size" => o.size = value.parse().map_err(|e| bad(&e))?,
            "--warmup-secs" => o.warmup_secs = value.parse().map_err(|e| bad(&e))?,
            "--secs" => o.secs = value.parse().map_err(|e| bad(&e))?,
            "--server-pid" => o.server_pid = Some(value.parse().map_err(|e| bad(&e))?),
            "--server-stats" => o.server_stats = Some(value.into()),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if o.conns == 0 || o.depth == 0 || o.size == 0 {
        return Err("--conns, --depth and --size must be at least 1".into());
    }
    if !(o.secs > 0.0 && o.warmup_secs >= 0.0) {
        return Err("--secs must be positive and --warmup-secs not negative".into());
    }
    Ok(o)
}

/// Fills `buf` with the content of message `seq` on connection `conn`.
///
/// A splitmix64 seed of (conn, seq) stepped by an LCG every 8 bytes: messages differ between
/// connections and sequence numbers, so reordering, duplication or loss is caught.
fn fill_pattern(buf: &mut [u8], conn: u64, seq: u64) {
    let mut x = ((conn << 40) ^ seq).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    for chunk in buf.chunks_mut(8) {
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    }
}

/// Log-linear latency histogram in nanoseconds: exact below 128 ns, then 64 buckets per power of
/// two (under 1.6 % error).
struct Histogram {
    /// Count per bucket.
    counts: Vec<u64>,
    /// Sum of `counts`.
    total: u64,
}

/// log2 of the sub-buckets per power of two.
const SUB_BITS: u32 = 6;

impl Histogram {
    /// An empty histogram covering all of `u64`.
    fn new() -> Self {
        Histogram { counts: vec![0; Self::index(u64::MAX) + 1], total: 0 }
    }

    /// The bucket of `v`.
    fn index(v: u64) -> usize {
        if v < 1 << (SUB_BITS + 1) {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        let sub = (v >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        (2 << SUB_BITS) + ((e - SUB_BITS - 1) as usize) * (1 << SUB_BITS) + sub as usize
    }

    /// The middle value of bucket `i`.
    fn value(i: usize) -> f64 {
        if i < 2 << SUB_BITS {
            return i as f64;
        }
        let rel = i - (2 << SUB_BITS);
        let e = (rel >> SUB_BITS) as u32 + SUB_BITS + 1;
        let sub = (rel & ((1 << SUB_BITS) - 1)) as u64;
        let width = 1u64 << (e - SUB_BITS);
        ((1u64 << SUB_BITS) + sub) as f64 * width as f64 + width as f64 / 2.0
    }

    /// Adds one sample.
    fn record(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
    }

    /// The `q` quantile (0 ..= 1) in nanoseconds; 0 when empty.
    fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i);
            }
        }
        0.0
    }
}

/// Completed messages and their latencies, counted only while `measuring`.
struct Recorder {
    /// Inside the measured window.
    measuring: bool,
    /// Messages completed in the window.
    msgs: u64,
    /// Latencies of those messages.
    hist: Histogram,
    /// When any message last completed (for stall detection).
    last_progress: Instant,
}

/// One client connection and its stream positions.
struct Conn {
    /// The socket.
    stream: TcpStream,
    /// Connection id, part of the pattern.
    id: u64,
    /// The TCP handshake finished.
    connected: bool,
    /// Closed after an error.
    dead: bool,
    /// Bytes queued for writing; `out[out_pos..]` is unsent.
    out: Vec<u8>,
    /// Sent prefix of `out`.
    out_pos: usize,
    /// Sequence number of the next message to queue.
    send_seq: u64,
    /// Sequence number of the message being received.
    recv_seq: u64,
    /// Bytes of message `recv_seq` received so far.
    recv_off: usize,
    /// The content of message `recv_seq`.
    expect: Vec<u8>,
    /// When each in-flight message was queued, oldest first.
    sent_at: VecDeque<Instant>,
    /// Queue a new message whenever one completes.
    refill: bool,
}

impl Conn {
    /// Appends message `send_seq` to the output, stamped `now`.
    fn queue_message(&mut self, size: usize, now: Instant) {
        let start = self.out.len();
        self.out.resize(start + size, 0);
        fill_pattern(&mut self.out[start..], self.id, self.send_seq);
        self.send_seq += 1;
        self.sent_at.push_back(now);
    }

    /// Writes queued bytes until done or the socket would block.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > 64 * 1024 && self.out_pos > self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Checks received bytes against the pattern and completes messages.
    fn absorb(
        &mut self,
        mut data: &[u8],
        size: usize,
        now: Instant,
        rec: &mut Recorder,
    ) -> Result<(), String> {
        while !data.is_empty() {
            if self.sent_at.is_empty() {
                return Err(format!(
                    "conn {}: {} unexpected byte(s) after message {}: more came back than was sent",
                    self.id,
                    data.len(),
                    self.recv_seq
                ));
            }
            let n = (size - self.recv_off).min(data.len());
            let expected = &self.expect[self.recv_off..self.recv_off + n];
            if let Some(i) = (0..n).find(|&i| data[i] != expected[i]) {
                return Err(format!(
                    "conn {}: byte mismatch in message {} at offset {}: expected {:#04x}, got {:#04x}",
                    self.id,
                    self.recv_seq,
                    self.recv_off + i,
                    expected[i],
                    data[i]
                ));
            }
            self.recv_off += n;
            data = &data[n..];
            if self.recv_off == size {
                let sent = self.sent_at.pop_front().unwrap_or(now);
                rec.last_progress = now;
                if rec.measuring {
                    rec.msgs += 1;
                    rec.hist.record(now.saturating_duration_since(sent).as_nanos() as u64);
                }
                self.recv_seq += 1;
                self.recv_off = 0;
                fill_pattern(&mut self.expect, self.id, self.recv_seq);
                if self.refill {
                    self.queue_message(size, now);
                }
            }
        }
        Ok(())
    }

    /// Reads until the socket would block, absorbing and flushing as it goes.
    fn on_readable(&mut self, scratch: &mut [u8], size: usize, rec: &mut Recorder) -> Result<(), String> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Err(format!("conn {}: server closed the connection", self.id)),
                Ok(n) => {
                    let now = Instant::now();
                    self.absorb(&scratch[..n], size, now, rec)?;
                    self.flush().map_err(|e| format!("conn {}: write failed: {e}", self.id))?;
                    if n < scratch.len() {
                        // Drained: with edge-triggered epoll, new data raises a new event.
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("conn {}: read failed: {e}", self.id)),
            }
        }
    }

    /// Bytes sent but not yet echoed.
    fn outstanding(&self, size: usize) -> usize {
        (self.sent_at.len() * size).saturating_sub(self.recv_off)
    }
}

/// Server CPU ticks `(utime, stime)`: fields 14 and 15 of `/proc/PID/stat`.
fn proc_cpu(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it start at field 3.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// On-CPU time in ns of all the server's threads: the first field of each
/// `/proc/PID/task/TID/schedstat`. `None` if the directory cannot be read or a file is malformed.
fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // A thread that exited since the listing holds no more CPU time.
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Server memory `(VmRSS, VmHWM)` in KiB from `/proc/PID/status`.
fn proc_mem(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse::<u64>().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The client: the poll instance, the connections and the shared read buffer.
struct Client {
    /// The epoll instance.
    poll: Poll,
    /// Readiness events, reused.
    events: Events,
    /// Connections, indexed by their token.
    conns: Vec<Conn>,
    /// Shared read buffer.
    scratch: Vec<u8>,
    /// Message size.
    size: usize,
    /// Connection failures so far.
    errors: u64,
    /// Connections not closed after an error.
    alive: usize,
    /// Completed messages and latencies.
    rec: Recorder,
}

impl Client {
    /// Opens `n` connections in batches, waiting for each batch to be established.
    fn connect(addr: SocketAddr, n: usize, size: usize) -> Result<Client, String> {
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let mut client = Client {
            poll,
            events: Events::with_capacity(1024),
            conns: Vec::with_capacity(n),
            scratch: vec![0; SCRATCH],
            size,
            errors: 0,
            alive: n,
            rec: Recorder {
                measuring: false,
                msgs: 0,
                hist: Histogram::new(),
                last_progress: Instant::now(),
            },
        };
        while client.conns.len() < n {
            let first = client.conns.len();
            let last = (first + CONNECT_BATCH).min(n);
            for id in first..last {
                let mut stream =
                    TcpStream::connect(addr).map_err(|e| format!("connect #{id} to {addr}: {e}"))?;
                client
                    .poll
                    .registry()
                    .register(&mut stream, Token(id), Interest::READABLE | Interest::WRITABLE)
                    .map_err(|e| format!("register #{id}: {e}"))?;
                let mut expect = vec![0; size];
                fill_pattern(&mut expect, id as u64, 0);
                client.conns.push(Conn {
                    stream,
                    id: id as u64,
                    connected: false,
                    dead: false,
                    out: Vec::new(),
                    out_pos: 0,
                    send_seq: 0,
                    recv_seq: 0,
                    recv_off: 0,
                    expect,
                    sent_at: VecDeque::new(),
                    refill: true,
                });
            }
            let deadline = Instant::now() + CONNECT_TIMEOUT;
            let mut pending = last - first;
            while pending > 0 {
                let now = Instant::now();
                if now >= deadline {
                    return Err(format!("{pending} of connections {first}..{last} not established in time"));
                }
                client
                    .poll
                    .poll(&mut client.events, Some(deadline - now))
                    .map_err(|e| format!("poll: {e}"))?;
                for event in client.events.iter() {
                    let conn = &mut client.conns[event.token().0];
                    if conn.connected || !(event.is_writable() || event.is_error()) {
                        continue;
                    }
                    if let Ok(Some(e)) | Err(e) = conn.stream.take_error() {
                        return Err(format!("connect #{}: {e}", conn.id));
                    }
                    match conn.stream.peer_addr() {
                        Ok(_) => {
                            conn.connected = true;
                            pending -= 1;
                            conn.stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                        Err(e) => return Err(format!("connect #{}: {e}", conn.id)),
                    }
                }
            }
        }
        Ok(client)
    }

    /// Queues `depth` messages on every connection and starts writing them.
    fn start(&mut self, depth: usize, refill: bool) {
        let now = Instant::now();
        self.rec.last_progress = now;
        for i in 0..self.conns.len() {
            let conn = &mut self.conns[i];
            conn.refill = refill;
            for _ in 0..depth {
                conn.queue_message(self.size, now);
            }
            if let Err(e) = conn.flush() {
                let message = format!("conn {i}: write failed: {e}");
                self.fail(i, &message);
            }
        }
    }

    /// Records a failed connection and closes it.
    fn fail(&mut self, i: usize, message: &str) {
        eprintln!("loadgen: {message}");
        self.errors += 1;
        let conn = &mut self.conns[i];
        if !conn.dead {
            self.alive -= 1;
        }
        conn.dead = true;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Connections still open.
    fn alive(&self) -> usize {
        self.alive
    }

    /// Bytes in flight over all open connections.
    fn outstanding(&self) -> usize {
        self.conns.iter().filter(|c| !c.dead).map(|c| c.outstanding(self.size)).sum()
    }

    /// Waits up to `timeout` for events and handles them; detects stalls.
    fn turn(&mut self, timeout: Duration) -> Result<(), String> {
        self.poll.poll(&mut self.events, Some(timeout)).map_err(|e| format!("poll: {e}"))?;
        let mut failed = Vec::new();
        for event in self.events.iter() {
            let i = event.token().0;
            let conn = &mut self.conns[i];
            if conn.dead {
                continue;
            }
            let result = if event.is_readable() || event.is_read_closed() || event.is_error() {
                conn.on_readable(&mut self.scratch, self.size, &mut self.rec)
            } else {
                Ok(())
            };
            let result = result.and_then(|()| {
                if event.is_writable() {
                    conn.flush().map_err(|e| format!("conn {i}: write failed: {e}"))
                } else {
                    Ok(())
                }
            });
            if let Err(message) = result {
                failed.push((i, message));
            }
        }
        for (i, message) in failed {
            self.fail(i, &message);
        }
        // Scanning every connection is O(conns): only done once progress looks overdue.
        if self.rec.last_progress.elapsed() > STALL_TIMEOUT && self.outstanding() > 0 {
            let outstanding = self.outstanding();
            return Err(format!(
                "stalled: no message completed for {} s with {outstanding} byte(s) in flight on {} connection(s)",
                STALL_TIMEOUT.as_secs(),
                self.alive()
            ));
        }
        Ok(())
    }
}

/// The load run: warmup, then the measured window.
fn run_load(o: &Opts) -> Result<bool, String> {
    let mut client = Client::connect(o.addr, o.conns, o.size)?;
    client.start(o.depth, true);
    let warm_end = Instant::now() + Duration::from_secs_f64(o.warmup_secs);
    let mut fatal = None;
    while fatal.is_none() && Instant::now() < warm_end && client.alive() > 0 {
        let left = warm_end.saturating_duration_since(Instant::now());
        fatal = client.turn(left.min(Duration::from_millis(100))).err();
    }
    let window_start = Instant::now();
    let cpu_start = o.server_pid.and_then(proc_cpu);
    let ns_start = o.server_pid.and_then(proc_cpu_ns);
    client.rec.measuring = true;
    let window_end = window_start + Duration::from_secs_f64(o.secs);
    while fatal.is_none() && Instant::now() < window_end && client.alive() > 0 {
        let left = window_end.saturating_duration_since(Instant::now());
        fatal = client.turn(left.min(Duration::from_millis(100))).err();
    }
    let secs = window_start.elapsed().as_secs_f64();
    let cpu_end = o.server_pid.and_then(proc_cpu);
    let ns_end = o.server_pid.and_then(proc_cpu_ns);
    let mem = o.server_pid.and_then(proc_mem);
    if let Some(message) = &fatal {
        eprintln!("loadgen: {message}");
        client.errors += 1;
    }
    let h = &client.rec.hist;
    println!(
        "msgs={} secs={secs:.3} p50_us={:.3} p99_us={:.3} p999_us={:.3} errors={}",
        client.rec.msgs,
        h.quantile(0.50) / 1e3,
        h.quantile(0.99) / 1e3,
        h.quantile(0.999) / 1e3,
        client.errors
    );
    if let Some(pid) = o.server_pid {
        match (cpu_start, cpu_end, mem) {
            (Some((u0, s0)), Some((u1, s1)), Some((rss, hwm))) => println!(
                "utime_ticks={} stime_ticks={} cpu_ns={} rss_kib={rss} hwm_kib={hwm}",
                u1.saturating_sub(u0),
                s1.saturating_sub(s0),
                match (ns_start, ns_end) {
                    (Some(a), Some(b)) => b.saturating_sub(a),
                    _ => 0,
                }
            ),
            _ => {
                eprintln!("loadgen: could not read /proc/{pid}/stat or status (server gone?)");
                return Ok(false);
            }
        }
    }
    Ok(client.errors == 0)
}

/// How long the server may take to report every connection open.
const SERVER_OPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// The `open=N` count in the server's stats file; `None` while it does not exist yet.
fn server_open(path: &std::path::Path) -> Result<Option<u64>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let value = text.trim().strip_prefix("open=").and_then(|v| v.parse().ok());
    value.map(Some).ok_or_else(|| format!("{} holds {text:?}, not `open=N`", path.display()))
}

/// Waits until the server's stats file says `open=<conns>`; handles events meanwhile, so a
/// connection the server closes is noticed.
fn wait_server_open(client: &mut Client, path: &std::path::Path, conns: usize) -> Result<u64, String> {
    let deadline = Instant::now() + SERVER_OPEN_TIMEOUT;
    loop {
        let open = server_open(path)?;
        if open == Some(conns as u64) {
            return Ok(conns as u64);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the server reports {} of {conns} connections open after {} s",
                open.map_or_else(|| "no count (no stats file)".to_string(), |n| n.to_string()),
                SERVER_OPEN_TIMEOUT.as_secs()
            ));
        }
        if client.alive() < conns {
            return Err(format!("{} of {conns} connections failed", conns - client.alive()));
        }
        client.turn(Duration::from_millis(20))?;
    }
}

/// Handles events for `secs` (nothing is expected to arrive on idle connections).
fn hold(client: &mut Client, secs: f64) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end && client.alive() > 0 {
        let left = end.saturating_duration_since(Instant::now());
        client.turn(left.min(Duration::from_millis(100)))?;
    }
    Ok(())
}

/// The idle-connections run: sample, connect, confirm, hold, sample; echo once each, hold,
/// sample.
fn run_connect_only(o: &Opts) -> Result<bool, String> {
    let mem = |when: &str| match o.server_pid {
        None => Ok((0, 0)),
        Some(pid) => {
            proc_mem(pid).ok_or_else(|| format!("could not read /proc/{pid}/status {when} (server gone?)"))
        }
    };
    let (rss_before, _) = mem("before connecting")?;
    let started = Instant::now();
    let mut client = Client::connect(o.addr, o.conns, o.size)?;
    // Every handshake is done, but a connection may still wait in the listen backlog or in the
    // hand-off to a worker: only the server's own count says it holds them all.
    if let Some(path) = &o.server_stats {
        wait_server_open(&mut client, path, o.conns)?;
    }
    hold(&mut client, o.secs)?;
    let (rss_idle, _) = mem("with idle connections")?;
    let open_at_sample = match &o.server_stats {
        Some(path) => server_open(path)?.unwrap_or(0),
        None => 0,
    };
    client.start(1, false);
    // Every connection's one message must come back.
    while client.outstanding() > 0 && client.alive() > 0 {
        client.turn(Duration::from_millis(100))?;
    }
    hold(&mut client, o.secs)?;
    let (rss_echoed, hwm) = mem("after the echoes")?;
    println!(
        "conns={} secs={:.3} rss_before_kib={rss_before} rss_idle_kib={rss_idle} rss_echoed_kib={rss_echoed} \
         hwm_kib={hwm} server_open={open_at_sample} errors={}",
        client.alive(),
        started.elapsed().as_secs_f64(),
        client.errors
    );
    Ok(client.errors == 0)
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(message) => {
            eprintln!(
                "loadgen: {message}\nusage: loadgen [--addr HOST:PORT] [--conns N] [--depth N] [--size BYTES] \
                 [--warmup-secs F] [--secs F] [--connect-only] [--server-pid PID] [--server-stats PATH]"
            );
            return ExitCode::from(2);
        }
    };
    if let Err(e) = bench::raise_nofile_limit(opts.conns as libc::rlim_t + 64) {
        eprintln!("loadgen: cannot raise RLIMIT_NOFILE: {e}");
    }
    let outcome = if opts.connect_only { run_connect_only(&opts) } else { run_load(&opts) };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("loadgen: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_close() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 20, 1 << 40, u64::MAX]) {
            let i = Histogram::index(v);
            assert!(i >= last, "index not monotonic at {v}");
            last = i;
            let mid = Histogram::value(i);
            assert!((mid - v as f64).abs() <= (v as f64) * 0.016 + 0.5, "{v} -> bucket {i} mid {mid}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut h = Histogram::new();
        (1..=10_000u64).for_each(|v| h.record(v * 1000));
        let p50 = h.quantile(0.5);
        assert!((p50 - 5_000_000.0).abs() < 5_000_000.0 * 0.02, "{p50}");
        assert!(h.quantile(0.999) > 9_900_000.0 * 0.98);
    }

    #[test]
    fn the_servers_stats_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("loadgen-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.stats");
        let _ = std::fs::remove_file(&path);
        assert_eq!(server_open(&path).unwrap(), None);
        let mut stats = bench::StatsFile::new(path.clone());
        stats.update(0).unwrap();
        assert_eq!(server_open(&path).unwrap(), Some(0));
        stats.update(2000).unwrap();
        assert_eq!(server_open(&path).unwrap(), Some(2000));
        std::fs::write(&path, "open=lots\n").unwrap();
        assert!(server_open(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn patterns_differ_by_connection_and_sequence() {
        let (mut a, mut b, mut c) = (vec![0; 64], vec![0; 64], vec![0; 64]);
        fill_pattern(&mut a, 1, 7);
        fill_pattern(&mut b, 2, 7);
        fill_pattern(&mut c, 1, 8);
        assert_ne!(a, b);
        assert_ne!(a, c);
        let mut d = vec![0; 61];
        fill_pattern(&mut d, 1, 7);
        assert_eq!(&a[..61], &d[..]);
    }
}
