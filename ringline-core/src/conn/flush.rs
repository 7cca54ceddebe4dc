//! Turning dirty connection state into backend operations, and releasing finished slots.
//!
//! Public handles only change core state and mark the slot dirty; after each poll pass the worker
//! calls [`ConnTable::flush`], which decides what to submit. This keeps the hot paths free of
//! backend calls and keeps the per-connection rules (one write in flight, FIN after the queue,
//! close after the queue) in one place.

use crate::buf::{SendBuf, SendPart};
use crate::conn::CloseReason;
use crate::conn::state::{CloseMode, Conn, Phase, WriteState};
use crate::conn::table::ConnTable;
use crate::driver::{ConnKey, Op};

/// Most parts gathered into one write (the backends' iovec limit).
const MAX_PARTS_PER_WRITE: usize = 1024;

/// What a flush produced besides operations.
#[derive(Default)]
pub(crate) struct FlushReport {
    /// Slots released, with the reason for `on_close`.
    pub(crate) released: Vec<(ConnKey, CloseReason)>,
    /// Receives paused by the accumulator limit.
    pub(crate) paused: u64,
    /// Slots released that the handler never saw (failed TLS handshakes): no `on_close`.
    pub(crate) silent: u64,
}

impl ConnTable {
    /// Emits operations for every dirty slot and releases slots whose life ended.
    pub(crate) fn flush(&mut self, acc_limit: usize, ops: &mut Vec<Op>, report: &mut FlushReport) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &index in &dirty {
            let c = &mut self.slots[index as usize];
            c.dirty = false;
            if c.phase == Phase::Free {
                continue;
            }
            let key = ConnKey { index, generation: c.generation };
            let spare = &mut self.spare_parts;
            if flush_one(key, c, acc_limit, ops, spare) {
                report.paused += 1;
            }
            // A connection still hidden in its TLS handshake has no holder but its `on_accept`,
            // which never runs once it closed.
            let known = crate::conn::layer::handler_knows(c);
            if c.phase == Phase::Closed && (!c.held || !known) {
                let reason = c.reason.unwrap_or(CloseReason::Local);
                if known {
                    report.released.push((key, reason));
                } else {
                    report.silent += 1;
                }
                self.release(index);
            }
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }
}

/// One slot; returns true when it paused receiving.
fn flush_one(
    key: ConnKey,
    c: &mut Conn,
    acc_limit: usize,
    ops: &mut Vec<Op>,
    spare: &mut Vec<Vec<SendPart>>,
) -> bool {
    match c.phase {
        Phase::Connecting if c.close.is_some() && !c.close_submitted => {
            c.close_submitted = true;
            c.phase = Phase::Closing;
            ops.push(Op::Close { conn: key, abort: true });
            false
        }
        Phase::Open => flush_open(key, c, acc_limit, ops, spare),
        _ => false,
    }
}

fn flush_open(
    key: ConnKey,
    c: &mut Conn,
    acc_limit: usize,
    ops: &mut Vec<Op>,
    spare: &mut Vec<Vec<SendPart>>,
) -> bool {
    let mut paused = false;
    if c.read_end.is_none() {
        let over = c.acc.len() >= acc_limit;
        if over && c.recv_active {
            c.recv_active = false;
            c.recv_paused = true;
            paused = true;
            ops.push(Op::RecvPause { conn: key });
        } else if !over && !c.recv_active {
            c.recv_active = true;
            c.recv_paused = false;
            ops.push(Op::RecvStart { conn: key });
        }
    }
    if c.layer.is_some() {
        crate::conn::layer::before_flush(c);
    }
    let aborting = c.close == Some(CloseMode::Abort);
    if !c.in_flight && !c.queue.is_empty() && !aborting {
        let n = c.queue.len().min(MAX_PARTS_PER_WRITE);
        let mut parts = spare.pop().unwrap_or_default();
        parts.extend(c.queue.drain(..n));
        let buf = SendBuf::from_parts(parts);
        c.in_flight = true;
        ops.push(Op::Send { conn: key, buf });
    }
    let drained = !c.in_flight && c.queue.is_empty();
    if matches!(c.write, WriteState::ShutdownPending) && drained {
        c.write = WriteState::Closed;
        ops.push(Op::ShutdownWrite { conn: key });
    }
    if let Some(mode) = c.close
        && !c.close_submitted
        && (aborting || drained || matches!(c.write, WriteState::Failed(_)))
    {
        c.close_submitted = true;
        c.phase = Phase::Closing;
        ops.push(Op::Close { conn: key, abort: mode == CloseMode::Abort });
    }
    paused
}
