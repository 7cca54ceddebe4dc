//! The core's [`CompletionSink`]: backend completions applied to the connection table.

use super::core::Core;
use crate::driver::{Completion, CompletionSink, ConnKey};
use crate::metrics::WorkerCounters;

/// Applies completions to one worker's state.
pub(crate) struct CoreSink<'a> {
    pub(crate) core: &'a Core,
}

impl CompletionSink for CoreSink<'_> {
    fn complete(&mut self, c: Completion<'_>) {
        #[cfg(feature = "testing")]
        let after = log_completion(self.core, &c);
        self.apply(c);
        #[cfg(feature = "testing")]
        if let Some((conn, event)) = after {
            self.core.runtime.events.record(self.core.worker, conn, || event);
        }
    }

    fn recv_owned(&mut self, conn: ConnKey, data: Vec<u8>) -> Option<Vec<u8>> {
        #[cfg(feature = "testing")]
        log_completion(self.core, &Completion::Recv { conn, data: &data });
        let core = self.core;
        let (n, back) = core.conns.borrow_mut().on_recv_owned(conn, data);
        WorkerCounters::add(&core.counters().bytes_received, n as u64);
        back
    }
}

/// Records a completion in the test event log and returns what to record once it was applied:
/// a send buffer's release (its guards are dropped while it is applied) or the slot's release.
#[cfg(feature = "testing")]
fn log_completion(
    core: &Core,
    c: &Completion<'_>,
) -> Option<(crate::driver::ConnKey, crate::event_log::Event)> {
    use crate::event_log::{Event, completion_event};
    let log = &core.runtime.events;
    if !log.is_enabled() {
        return None;
    }
    if let Some((conn, event)) = completion_event(c) {
        log.record(core.worker, conn, || event);
    }
    match c {
        Completion::Sent { conn, buf, .. } => {
            Some((*conn, Event::BufferReleased { bytes: buf.total_len(), guards: buf.guard_count() }))
        }
        Completion::Closed { conn } => Some((*conn, Event::SlotReleased)),
        _ => None,
    }
}

impl CoreSink<'_> {
    fn apply(&mut self, c: Completion<'_>) {
        let core = self.core;
        let counters = core.counters();
        let mut conns = core.conns.borrow_mut();
        match c {
            Completion::Recv { conn, data } => {
                let n = conns.on_recv(conn, data);
                WorkerCounters::add(&counters.bytes_received, n as u64);
            }
            Completion::RecvEnd { conn, result } => conns.on_recv_end(conn, result),
            Completion::RecvStarved { .. } => {}
            Completion::Sent { conn, buf, result } => {
                let mut pool = core.pool.borrow_mut();
                let n = conns.on_sent(conn, buf, result, &mut pool);
                WorkerCounters::add(&counters.bytes_sent, n as u64);
            }
            Completion::Connected { conn, result } => {
                conns.on_connected(conn, result);
            }
            Completion::Closed { conn } => {
                let mut pool = core.pool.borrow_mut();
                conns.on_closed(conn, &mut pool);
            }
            Completion::Datagram { sock, data, peer, truncated } => {
                crate::udp::table::on_datagram(core, sock, data, peer, truncated)
            }
            Completion::UdpError { sock, error } => crate::udp::table::on_error(core, sock, error),
            Completion::UdpClosed { sock } => crate::udp::table::on_closed(core, sock),
            Completion::UdpSent { sock, buf, result } => crate::udp::table::on_sent(core, sock, buf, result),
            c @ (Completion::File { .. } | Completion::Nvme { .. }) => {
                drop(conns);
                crate::disk::on_completion(core, c);
            }
        }
    }
}
