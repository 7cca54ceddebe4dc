//! `Config` and `ConfigBuilder`: every size and limit a worker uses, validated once.

use std::time::Duration;

use crate::backend::BackendChoice;
use crate::error::Error;

/// Runtime configuration shared by every backend; made with [`Config::builder`].
///
/// Per-worker sizes apply to each worker. Settings a backend does not use are ignored there.
#[derive(Clone, Debug)]
pub struct Config {
    workers: usize,
    pin_workers: bool,
    core_offset: usize,
    backend: BackendChoice,
    max_connections: usize,
    accept_queue: usize,
    backlog: u32,
    tcp_nodelay: bool,
    socket_buffers: (Option<usize>, Option<usize>),
    connect_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    close_linger: Duration,
    shutdown_timeout: Duration,
    sq_entries: u32,
    cq_entries: Option<u32>,
    sqpoll: Option<Duration>,
    recv_buffers: (usize, usize),
    fixed_files: Option<usize>,
    direct_descriptors: bool,
    recv_accumulator_limit: usize,
    send_pool: (usize, usize),
    send_queue_limit: usize,
    zero_copy_threshold: usize,
    zero_copy_local: bool,
    timer_slots: usize,
    standalone_task_capacity: usize,
    tick_interval: Option<Duration>,
    udp_recv_buffers: (usize, usize),
    udp_recv_queue: usize,
    udp_sends_in_flight: usize,
    tls_handshake_timeout: Duration,
    disk_ops_in_flight: usize,
    blocking_threads: usize,
    nvme: bool,
    #[cfg(feature = "testing")]
    faults: Option<crate::faults::FaultPlan>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 0,
            pin_workers: false,
            core_offset: 0,
            backend: BackendChoice::Auto,
            max_connections: 16_384,
            accept_queue: 1_024,
            backlog: 1_024,
            tcp_nodelay: true,
            socket_buffers: (None, None),
            connect_timeout: Some(Duration::from_secs(30)),
            idle_timeout: None,
            close_linger: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            sq_entries: 256,
            cq_entries: None,
            sqpoll: None,
            recv_buffers: (256, 16 * 1024),
            fixed_files: None,
            direct_descriptors: true,
            recv_accumulator_limit: 64 << 20,
            send_pool: (1_024, 16 * 1024),
            send_queue_limit: 4 << 20,
            zero_copy_threshold: 4_096,
            zero_copy_local: false,
            timer_slots: 4_096,
            standalone_task_capacity: 4_096,
            tick_interval: Some(Duration::from_millis(10)),
            udp_recv_buffers: (64, 65_536),
            udp_recv_queue: 1_024,
            udp_sends_in_flight: 64,
            tls_handshake_timeout: Duration::from_secs(10),
            disk_ops_in_flight: 256,
            blocking_threads: 4,
            nvme: false,
            #[cfg(feature = "testing")]
            faults: None,
        }
    }
}

/// Builds a [`Config`]; [`ConfigBuilder::build`] validates every value.
#[derive(Clone, Debug, Default)]
pub struct ConfigBuilder {
    cfg: Config,
}

macro_rules! setters {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty ),* $(,)?) => {
        impl ConfigBuilder {
            $( $(#[$doc])* pub fn $name(mut self, value: $ty) -> Self { self.cfg.$name = value; self } )*
        }
        impl Config {
            $( $(#[$doc])* pub fn $name(&self) -> $ty { self.$name } )*
        }
    };
}

setters! {
    /// Worker threads; 0 means one per available CPU.
    workers: usize,
    /// Pin worker `i` to CPU `core_offset + i` of the allowed set.
    pin_workers: bool,
    /// First CPU index used for pinning.
    core_offset: usize,
    /// Which backend to run (overridden by `RINGLINE_BACKEND`).
    backend: BackendChoice,
    /// Connections per worker, inbound plus outbound (1 ..= 2^24).
    max_connections: usize,
    /// Per-worker hand-off queue from the acceptor (at least 1).
    accept_queue: usize,
    /// `listen()` backlog.
    backlog: u32,
    /// `TCP_NODELAY` on accepted and outbound sockets.
    tcp_nodelay: bool,
    /// Default timeout of `connect`; `None` leaves it to the kernel.
    connect_timeout: Option<Duration>,
    /// Close a connection that made no progress for this long.
    idle_timeout: Option<Duration>,
    /// How long a closing connection may wait for its queued sends before it is aborted.
    close_linger: Duration,
    /// Deadline used by `ShutdownHandle::shutdown()`.
    shutdown_timeout: Duration,
    /// io_uring submission queue entries (power of two, 2 ..= 32768).
    sq_entries: u32,
    /// io_uring SQPOLL with this idle time.
    sqpoll: Option<Duration>,
    /// Register sockets in the io_uring fixed-file table.
    direct_descriptors: bool,
    /// Per-connection cap on buffered, unconsumed received bytes.
    recv_accumulator_limit: usize,
    /// Per-connection queued send bytes above which sends wait or fail.
    send_queue_limit: usize,
    /// Guarded sends smaller than this are copied instead of sent zero-copy.
    zero_copy_threshold: usize,
    /// Also send zero-copy to peers on this host (loopback or one of its own addresses). Off by
    /// default: Linux copies looped-back zero-copy data anyway (a deferred copy, so an unread
    /// local socket cannot pin user memory), so zero-copy there only adds the notification's cost.
    /// Tests turn it on to exercise the zero-copy path over loopback.
    zero_copy_local: bool,
    /// User timers per worker (1 ..= 2^24).
    timer_slots: usize,
    /// Spawned standalone tasks per worker (1 ..= 2^24).
    standalone_task_capacity: usize,
    /// Longest wait between `on_tick` calls; `None`: only when the loop wakes anyway.
    tick_interval: Option<Duration>,
    /// Datagrams buffered per UDP socket before new ones are dropped (at least 1).
    udp_recv_queue: usize,
    /// UDP sends outstanding per socket before `send_to` waits (at least 1).
    udp_sends_in_flight: usize,
    /// Longest a TLS handshake may take, server and client (feature `tls`).
    tls_handshake_timeout: Duration,
    /// File and disk operations outstanding per worker; more wait (at least 1).
    disk_ops_in_flight: usize,
    /// Threads of the shared blocking pool.
    blocking_threads: usize,
    /// io_uring: build rings with 128-byte entries so NVMe passthrough can run.
    nvme: bool,
}

impl ConfigBuilder {
    /// `SO_SNDBUF` and `SO_RCVBUF` for accepted and outbound sockets.
    pub fn socket_buffers(mut self, send: Option<usize>, recv: Option<usize>) -> Self {
        self.cfg.socket_buffers = (send, recv);
        self
    }
    /// io_uring completion queue entries (power of two, at least `sq_entries`).
    pub fn cq_entries(mut self, n: u32) -> Self {
        self.cfg.cq_entries = Some(n);
        self
    }
    /// Provided receive buffers per worker: `count` (power of two) of `size` bytes.
    pub fn recv_buffers(mut self, count: usize, size: usize) -> Self {
        self.cfg.recv_buffers = (count, size);
        self
    }
    /// io_uring registered-file table size; 0 disables it.
    pub fn fixed_files(mut self, n: usize) -> Self {
        self.cfg.fixed_files = Some(n);
        self
    }
    /// Per-worker staging memory for copied sends: `slots` of `slot_size` bytes.
    pub fn send_pool(mut self, slots: usize, slot_size: usize) -> Self {
        self.cfg.send_pool = (slots, slot_size);
        self
    }
    /// Per-worker datagram receive buffers: `count` (power of two) of `size` bytes; larger
    /// datagrams are counted as truncated and dropped.
    pub fn udp_recv_buffers(mut self, count: usize, size: usize) -> Self {
        self.cfg.udp_recv_buffers = (count, size);
        self
    }

    /// Faults to inject (feature `testing`, for tests only; see [`crate::faults::FaultPlan`]).
    #[cfg(feature = "testing")]
    pub fn faults(mut self, plan: crate::faults::FaultPlan) -> Self {
        self.cfg.faults = Some(plan);
        self
    }

    /// Checks every value and returns the configuration, or the first invalid setting.
    pub fn build(self) -> Result<Config, Error> {
        let c = self.cfg;
        c.validate()?;
        Ok(c)
    }
}

fn check(ok: bool, field: &'static str, reason: &str) -> Result<(), Error> {
    if ok { Ok(()) } else { Err(Error::Config { field, reason: reason.to_string() }) }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Checks every value; `launch` calls this again.
    pub fn validate(&self) -> Result<(), Error> {
        const MAX_SLOTS: usize = 1 << 24;
        check((1..=MAX_SLOTS).contains(&self.max_connections), "max_connections", "must be 1 ..= 2^24")?;
        check(self.accept_queue >= 1, "accept_queue", "must be at least 1")?;
        check(self.backlog >= 1, "backlog", "must be at least 1")?;
        let sq = self.sq_entries;
        check(
            sq.is_power_of_two() && (2..=32_768).contains(&sq),
            "sq_entries",
            "must be a power of two in 2 ..= 32768",
        )?;
        let cq = self.cq_entries();
        check(
            cq.is_power_of_two() && cq >= sq && cq <= 65_536,
            "cq_entries",
            "must be a power of two, >= sq_entries, <= 65536",
        )?;
        let (count, size) = self.recv_buffers;
        check(
            count.is_power_of_two() && (1..=32_768).contains(&count),
            "recv_buffers",
            "count must be a power of two in 1 ..= 32768",
        )?;
        check((64..=1 << 20).contains(&size), "recv_buffers", "size must be 64 B ..= 1 MiB")?;
        let (slots, slot_size) = self.send_pool;
        check(slots >= 1, "send_pool", "slots must be at least 1")?;
        check((64..=16 << 20).contains(&slot_size), "send_pool", "slot_size must be 64 B ..= 16 MiB")?;
        check(self.send_queue_limit >= 1, "send_queue_limit", "must be at least 1")?;
        check(self.recv_accumulator_limit >= 1, "recv_accumulator_limit", "must be at least 1")?;
        check((1..=MAX_SLOTS).contains(&self.timer_slots), "timer_slots", "must be 1 ..= 2^24")?;
        check(
            (1..=MAX_SLOTS).contains(&self.standalone_task_capacity),
            "standalone_task_capacity",
            "must be 1 ..= 2^24",
        )?;
        check(self.tick_interval != Some(Duration::ZERO), "tick_interval", "must be non-zero or None")?;
        check(self.blocking_threads >= 1, "blocking_threads", "must be at least 1")?;
        let (udp_count, udp_size) = self.udp_recv_buffers;
        check(
            udp_count.is_power_of_two() && (1..=32_768).contains(&udp_count),
            "udp_recv_buffers",
            "count must be a power of two in 1 ..= 32768",
        )?;
        check((64..=65_536).contains(&udp_size), "udp_recv_buffers", "size must be 64 B ..= 64 KiB")?;
        check(self.udp_recv_queue >= 1, "udp_recv_queue", "must be at least 1")?;
        check(self.udp_sends_in_flight >= 1, "udp_sends_in_flight", "must be at least 1")?;
        check(self.tls_handshake_timeout > Duration::ZERO, "tls_handshake_timeout", "must be non-zero")?;
        check(self.disk_ops_in_flight >= 1, "disk_ops_in_flight", "must be at least 1")?;
        Ok(())
    }

    /// `SO_SNDBUF` and `SO_RCVBUF` for accepted and outbound sockets.
    pub fn socket_buffers(&self) -> (Option<usize>, Option<usize>) {
        self.socket_buffers
    }
    /// io_uring completion queue entries (default 4 × `sq_entries`, at most 65536).
    pub fn cq_entries(&self) -> u32 {
        self.cq_entries.unwrap_or_else(|| (self.sq_entries * 4).min(65_536))
    }
    /// Provided receive buffers per worker: `(count, size)`.
    pub fn recv_buffers(&self) -> (usize, usize) {
        self.recv_buffers
    }
    /// io_uring registered-file table size (default `max_connections + 64`).
    pub fn fixed_files(&self) -> usize {
        let n = self.fixed_files.unwrap_or(self.max_connections + 64);
        #[cfg(feature = "testing")]
        if let Some(cap) = self.faults.as_ref().and_then(|f| f.fixed_file_cap()) {
            return n.min(cap);
        }
        n
    }
    /// The fault plan (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn faults(&self) -> Option<&crate::faults::FaultPlan> {
        self.faults.as_ref()
    }
    /// Send pool: `(slots, slot_size)`.
    pub fn send_pool(&self) -> (usize, usize) {
        self.send_pool
    }
    /// Per-worker datagram receive buffers: `(count, size)`.
    pub fn udp_recv_buffers(&self) -> (usize, usize) {
        self.udp_recv_buffers
    }
    /// The worker count with 0 resolved to the available parallelism.
    pub fn resolved_workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
        assert_eq!(Config::default().cq_entries(), 1024);
    }

    #[test]
    fn invalid_values_name_their_setter() {
        let cases: Vec<(ConfigBuilder, &str)> = vec![
            (Config::builder().max_connections(0), "max_connections"),
            (Config::builder().sq_entries(3), "sq_entries"),
            (Config::builder().cq_entries(8), "cq_entries"),
            (Config::builder().recv_buffers(3, 4096), "recv_buffers"),
            (Config::builder().recv_buffers(4, 8), "recv_buffers"),
            (Config::builder().send_pool(0, 4096), "send_pool"),
            (Config::builder().timer_slots(0), "timer_slots"),
            (Config::builder().tick_interval(Some(Duration::ZERO)), "tick_interval"),
            (Config::builder().udp_recv_buffers(3, 2048), "udp_recv_buffers"),
            (Config::builder().udp_recv_buffers(4, 65_537), "udp_recv_buffers"),
            (Config::builder().udp_recv_queue(0), "udp_recv_queue"),
            (Config::builder().udp_sends_in_flight(0), "udp_sends_in_flight"),
            (Config::builder().tls_handshake_timeout(Duration::ZERO), "tls_handshake_timeout"),
            (Config::builder().disk_ops_in_flight(0), "disk_ops_in_flight"),
        ];
        for (b, want) in cases {
            match b.build() {
                Err(Error::Config { field, .. }) => assert_eq!(field, want),
                other => panic!("expected Config error for {want}, got {other:?}"),
            }
        }
    }

    #[test]
    fn tiny_pools_are_accepted() {
        let c =
            Config::builder().recv_buffers(4, 4096).send_pool(4, 16 * 1024).timer_slots(2).build().unwrap();
        assert_eq!(c.recv_buffers(), (4, 4096));
        assert_eq!(c.timer_slots(), 2);
    }
}
