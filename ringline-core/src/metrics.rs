//! Per-worker counters and gauges: relaxed atomics written by the worker, snapshots from anywhere.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::Backend;
use crate::driver::BackendStats;

macro_rules! worker_metrics {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A snapshot of one worker's counters (monotonic) and gauges (current values).
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct WorkerMetrics {
            /// Index of the worker.
            pub worker: usize,
            /// The backend the worker runs, once started.
            pub backend: Option<Backend>,
            /// True while the worker's loop runs.
            pub alive: bool,
            $( $(#[$doc])* pub $name: u64, )*
        }

        /// The live counters of one worker.
        #[derive(Debug, Default)]
        pub(crate) struct WorkerCounters {
            $( pub(crate) $name: AtomicU64, )*
        }

        impl WorkerCounters {
            fn fill(&self, m: &mut WorkerMetrics) {
                $( m.$name = self.$name.load(Ordering::Relaxed); )*
            }
        }
    };
}

worker_metrics! {
    /// Inbound connections adopted.
    connections_accepted,
    /// Outbound connections established.
    connections_connected,
    /// Connection slots released.
    connections_closed,
    /// Connections holding a slot (gauge).
    connections_open,
    /// Inbound connections closed at once because the table was full.
    connections_refused,
    /// Closes that hit `close_linger` or the shutdown deadline and were aborted.
    close_aborted,
    /// Connections closed by `idle_timeout`.
    idle_timeouts,
    /// TLS handshakes that failed.
    tls_handshake_failures,
    /// Bytes delivered by the backend.
    bytes_received,
    /// Bytes acknowledged by the backend.
    bytes_sent,
    /// Times the receive-buffer ring ran dry.
    recv_buffer_exhausted,
    /// Starved receives re-armed after buffers returned.
    recv_rearms_after_refill,
    /// Multishot receives re-armed after they ended.
    recv_rearms,
    /// One-shot fallback receives while starved.
    recv_fallbacks,
    /// Free receive buffers (gauge).
    recv_buffers_free,
    /// Receive buffers in the ring (gauge).
    recv_buffers_total,
    /// Received chunks the backend handed over in its own buffer (`CompletionSink::recv_owned`)
    /// instead of as a slice to copy.
    recv_buffers_lent,
    /// Receives paused by `recv_accumulator_limit`.
    recv_paused,
    /// Non-waiting sends refused for lack of pool slots.
    send_pool_exhausted,
    /// Send-pool slots in use (gauge).
    send_pool_in_use,
    /// Send-pool slots in all (gauge).
    send_pool_slots,
    /// Bytes staged in heap memory because the pool was short.
    send_overflow_bytes,
    /// Sends written zero-copy.
    zero_copy_sends,
    /// Sends refused or delayed by `send_queue_limit`.
    send_queue_full,
    /// User timers armed (gauge).
    timers_in_use,
    /// User timer slots in all (gauge).
    timer_slots,
    /// Timer waits for a free slot.
    timer_exhausted,
    /// Tasks alive (gauge).
    tasks_live,
    /// Standalone task slots in use (gauge).
    task_slots_in_use,
    /// Standalone task slots in all (gauge).
    task_slots,
    /// Panics caught in tasks and callbacks.
    task_panics,
    /// Remote spawns dropped because the task slab was full.
    remote_spawn_dropped,
    /// Event-loop iterations.
    loop_iterations,
    /// Waits or submits retried after EINTR/EAGAIN/EBUSY.
    submit_retries,
    /// Submission-queue-full events.
    sq_full_retries,
    /// Completion-queue overflows.
    cq_overflows,
    /// Completions for stale keys, released and dropped.
    stale_completions,
    /// Fixed-file entries in use (gauge).
    fixed_files_in_use,
    /// Sockets that fell back to a plain fd.
    fixed_file_fallbacks,
    /// Datagrams delivered to UDP sockets.
    udp_datagrams_received,
    /// Datagrams the kernel accepted for sending.
    udp_datagrams_sent,
    /// Datagrams dropped because a socket's receive queue was full.
    udp_dropped,
    /// Datagrams larger than a receive buffer, dropped and counted.
    udp_truncated,
    /// Datagram sends (or unconnected-socket ICMP errors) that failed after admission.
    udp_send_errors,
    /// File and disk operations completed.
    disk_ops,
    /// File and disk operations outstanding (gauge).
    disk_ops_in_flight,
}

impl WorkerCounters {
    /// Adds `n` to a counter written only by the owning worker (no locked instruction).
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub(crate) fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// Copies the backend's own counters.
    pub(crate) fn publish_backend(&self, s: &BackendStats) {
        Self::set(&self.recv_buffer_exhausted, s.recv_buffer_exhausted);
        Self::set(&self.recv_rearms_after_refill, s.recv_rearms_after_refill);
        Self::set(&self.recv_rearms, s.recv_rearms);
        Self::set(&self.recv_fallbacks, s.recv_fallbacks);
        Self::set(&self.recv_buffers_free, s.recv_buffers_free);
        Self::set(&self.recv_buffers_total, s.recv_buffers_total);
        Self::set(&self.recv_buffers_lent, s.recv_buffers_lent);
        Self::set(&self.submit_retries, s.submit_retries);
        Self::set(&self.sq_full_retries, s.sq_full_retries);
        Self::set(&self.cq_overflows, s.cq_overflows);
        Self::set(&self.fixed_files_in_use, s.fixed_files_in_use);
        Self::set(&self.fixed_file_fallbacks, s.fixed_file_fallbacks);
        Self::set(&self.zero_copy_sends, s.zero_copy_sends);
    }

    /// A snapshot.
    pub(crate) fn snapshot(&self, worker: usize, backend: Option<Backend>, alive: bool) -> WorkerMetrics {
        let mut m = WorkerMetrics { worker, backend, alive, ..WorkerMetrics::default() };
        self.fill(&mut m);
        m
    }
}

/// Counters of an acceptor thread (one per listener; summed in [`RuntimeMetrics`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcceptorMetrics {
    /// Connections accepted and handed to a worker.
    pub accepted: u64,
    /// Connections closed because every worker's hand-off queue was full.
    pub handoff_full_closed: u64,
    /// `EMFILE` errors.
    pub errors_emfile: u64,
    /// `ENFILE` errors.
    pub errors_enfile: u64,
    /// Transient errors retried at once.
    pub errors_transient: u64,
    /// Other errors (retried after 100 ms).
    pub errors_other: u64,
    /// Back-offs taken.
    pub backoffs: u64,
}

/// The live counters of the acceptors.
#[derive(Debug, Default)]
pub struct AcceptorCounters {
    /// See [`AcceptorMetrics::accepted`].
    pub accepted: AtomicU64,
    /// See [`AcceptorMetrics::handoff_full_closed`].
    pub handoff_full_closed: AtomicU64,
    /// See [`AcceptorMetrics::errors_emfile`].
    pub errors_emfile: AtomicU64,
    /// See [`AcceptorMetrics::errors_enfile`].
    pub errors_enfile: AtomicU64,
    /// See [`AcceptorMetrics::errors_transient`].
    pub errors_transient: AtomicU64,
    /// See [`AcceptorMetrics::errors_other`].
    pub errors_other: AtomicU64,
    /// See [`AcceptorMetrics::backoffs`].
    pub backoffs: AtomicU64,
}

impl AcceptorCounters {
    /// A snapshot.
    pub fn snapshot(&self) -> AcceptorMetrics {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AcceptorMetrics {
            accepted: l(&self.accepted),
            handoff_full_closed: l(&self.handoff_full_closed),
            errors_emfile: l(&self.errors_emfile),
            errors_enfile: l(&self.errors_enfile),
            errors_transient: l(&self.errors_transient),
            errors_other: l(&self.errors_other),
            backoffs: l(&self.backoffs),
        }
    }
}

/// Metrics of the whole runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeMetrics {
    /// One entry per worker, by index.
    pub workers: Vec<WorkerMetrics>,
    /// All acceptors together.
    pub acceptor: AcceptorMetrics,
}
