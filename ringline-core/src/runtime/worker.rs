//! The worker loop, generic over the backend: `Executor<D>` in one function.
//!
//! One iteration: drain the inbox; poll ready tasks; run `on_notify`/`on_tick`; turn dirty
//! connection state into submissions; park (with a zero timeout whenever anything is ready or
//! pending, else until the next deadline or at most one tick); fire due timers and connection deadlines.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::context::ContextGuard;
use super::core::{Core, panic_message};
use super::handle::WorkerHandle;
use super::shared::{RuntimeShared, WorkerShared};
use super::sink::CoreSink;
use crate::backend::Backend;
use crate::config::Config;
use crate::conn::flush::FlushReport;
use crate::conn::state::{Phase, WriteState};
use crate::conn::table::{ConnDeadline, ConnTable};
use crate::conn::{CloseReason, ConnCtx, abort_key, connect::connect_deadline};
use crate::driver::{Driver, Op, SubmitError};
use crate::error::Error;
use crate::executor::inbox::{Inbox, InboxMsg};
use crate::executor::waker::local_ready_pending;
use crate::handler::{AsyncEventHandler, WorkerCtx};
use crate::metrics::WorkerCounters;

static NEXT_WORKER_UID: AtomicU64 = AtomicU64::new(1);

/// Busy loop iterations between two metric publications.
const PUBLISH_EVERY: u32 = 64;

/// Grace period after the shutdown deadline for aborted connections to report `Closed`.
const TEARDOWN_GRACE: Duration = Duration::from_secs(2);

/// What a worker thread needs to start.
pub struct WorkerParams {
    /// The validated configuration.
    pub cfg: Config,
    /// Index of this worker.
    pub worker: usize,
    /// The runtime this worker belongs to.
    pub runtime: Arc<RuntimeShared>,
    /// Receives this worker's handle once its backend and handler are built, or the setup error.
    pub ready: mpsc::Sender<(usize, Result<WorkerHandle, Error>)>,
    /// Bound UDP sockets (`bind_udp`) this worker adopts and hands to `on_udp_bind`.
    pub udp_sockets: Vec<std::net::UdpSocket>,
}

/// Runs one worker on the calling thread until shutdown; the body of a worker thread.
///
/// # Errors
/// Setup failures (also reported through `ready`) and fatal backend errors.
pub fn run_worker<D: Driver, H: AsyncEventHandler>(p: WorkerParams) -> Result<(), Error> {
    p.runtime.worker_started();
    let runtime = p.runtime.clone();
    let result = run_worker_inner::<D, H>(p);
    runtime.worker_exited();
    result
}

fn run_worker_inner<D: Driver, H: AsyncEventHandler>(p: WorkerParams) -> Result<(), Error> {
    let span = tracing::info_span!("ringline.worker", worker = p.worker, backend = D::NAME);
    let _enter = span.enter();
    #[cfg(feature = "testing")]
    if p.cfg.faults().is_some_and(|f| f.take_setup_failure(p.worker)) {
        let reason = "injected by FaultPlan::fail_worker_setup".to_string();
        let _ =
            p.ready.send((p.worker, Err(Error::WorkerSetup { worker: p.worker, reason: reason.clone() })));
        return Err(Error::WorkerSetup { worker: p.worker, reason });
    }
    let driver = match D::new(&p.cfg, p.worker) {
        Ok(d) => d,
        Err(e) => {
            let _ = p.ready.send((p.worker, Err(e.duplicate())));
            return Err(e);
        }
    };
    let shared = Arc::new(WorkerShared::new(
        p.worker,
        Backend::from_driver_name(D::NAME),
        Arc::new(Inbox::new(Box::new(driver.unparker()))),
        p.cfg.accept_queue(),
    ));
    let core = Rc::new(Core {
        uid: NEXT_WORKER_UID.fetch_add(1, Ordering::Relaxed),
        worker: p.worker,
        cfg: p.cfg.clone(),
        shared: shared.clone(),
        runtime: p.runtime.clone(),
        tasks: std::cell::RefCell::new(crate::executor::task::TaskSlab::new(
            p.cfg.standalone_task_capacity(),
        )),
        conns: std::cell::RefCell::new(ConnTable::new(p.cfg.max_connections())),
        timers: std::cell::RefCell::new(crate::time::slots::TimerSlots::new(p.cfg.timer_slots())),
        pool: std::cell::RefCell::new(crate::conn::pool::SendPool::new(
            p.cfg.send_pool().0,
            p.cfg.send_pool().1,
        )),
        outbox: std::cell::RefCell::new(Vec::new()),
        shutting_down: std::cell::Cell::new(false),
        shutdown_waiters: std::cell::RefCell::new(Vec::new()),
        current_task: std::cell::Cell::new(None),
        nodelay: std::cell::RefCell::new(Vec::new()),
        warnings: Default::default(),
        udp: std::cell::RefCell::new(crate::udp::table_with(p.udp_sockets)),
        disk: std::cell::RefCell::new(crate::disk::table::DiskTable::new(p.cfg.disk_ops_in_flight())),
        caps: std::cell::Cell::new(driver.capabilities()),
    });
    let guard = ContextGuard::enter(core.clone());
    let handler = match catch_unwind(|| H::create_for_worker(p.worker)) {
        Ok(h) => h,
        Err(payload) => {
            let reason = format!("create_for_worker panicked: {}", panic_message(&payload));
            let _ = p
                .ready
                .send((p.worker, Err(Error::WorkerSetup { worker: p.worker, reason: reason.clone() })));
            shared.alive.store(false, Ordering::Release);
            drop(guard);
            return Err(Error::WorkerSetup { worker: p.worker, reason });
        }
    };
    let _ = p.ready.send((p.worker, Ok(WorkerHandle { shared: shared.clone() })));
    let mut w = Worker {
        core: core.clone(),
        driver,
        handler,
        ready: VecDeque::new(),
        pending: VecDeque::new(),
        clock: None,
    };
    let result = w.run();
    w.teardown();
    shared.alive.store(false, Ordering::Release);
    drop(w);
    drop(guard);
    result
}

struct Worker<D: Driver, H> {
    core: Rc<Core>,
    driver: D,
    handler: H,
    ready: VecDeque<crate::executor::TaskId>,
    /// Operations the backend refused as full, offered again after the next park.
    pending: VecDeque<Op>,
    /// The clock as `fire_due` read it after the last park, if it did: the next `park_timeout`
    /// uses it instead of reading again (one clock read per iteration instead of two; a deadline
    /// is then met late by at most the time the tasks of that iteration ran).
    clock: Option<Instant>,
}

impl<D: Driver, H: AsyncEventHandler> Worker<D, H> {
    fn run(&mut self) -> Result<(), Error> {
        let start = self.handler.on_start();
        self.core.spawn_entry(start);
        crate::udp::bind_initial(&self.core, |ctx| self.handler.on_udp_bind(ctx));
        let tick = self.core.cfg.tick_interval();
        let mut inbox = Vec::new();
        let mut ops = Vec::new();
        let mut forced = false;
        let mut iterations_since_publish = 0u32;
        loop {
            WorkerCounters::add(&self.core.counters().loop_iterations, 1);
            self.drain_inbox(&mut inbox);
            self.check_shutdown();
            self.core.run_ready(&mut self.ready);
            self.callbacks();
            self.flush(&mut ops);
            if self.core.shutting_down.get() {
                let now = Instant::now();
                let deadline = self.core.runtime.deadline().unwrap_or(now);
                if self.core.tasks.borrow().live() == 0
                    && self.core.conns.borrow().open() == 0
                    && crate::udp::open(&self.core) == 0
                    && self.core.disk.borrow().in_flight() == 0
                {
                    return Ok(());
                }
                if now >= deadline && !forced {
                    forced = true;
                    self.force_close();
                    continue;
                }
                if forced && now >= deadline + TEARDOWN_GRACE {
                    tracing::error!(
                        worker = self.core.worker,
                        "connections still open after the shutdown deadline"
                    );
                    return Ok(());
                }
            }
            let timeout = self.park_timeout(tick);
            iterations_since_publish += 1;
            if timeout != Some(Duration::ZERO) || iterations_since_publish >= PUBLISH_EVERY {
                // Metrics are published before every blocking park and at least every
                // `PUBLISH_EVERY` busy iterations, not on each one.
                self.publish();
                iterations_since_publish = 0;
            }
            let mut sink = CoreSink { core: &self.core };
            self.driver.park(timeout, &mut sink)?;
            self.retry_pending();
            self.apply_nodelay();
            self.fire_due();
            self.layer_events();
        }
    }

    /// Acts on handshake results of layered (TLS) connections; `on_accept` for completed ones.
    fn layer_events(&mut self) {
        if self.core.conns.borrow().layer_events.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.core.conns.borrow_mut().layer_events);
        for (key, event) in events {
            if crate::conn::layer::on_event(&self.core, key, event) {
                self.start_conn_task(key);
            }
        }
    }

    fn drain_inbox(&mut self, buf: &mut Vec<InboxMsg>) {
        self.core.shared.inbox.drain(buf);
        for msg in buf.drain(..) {
            match msg {
                InboxMsg::Wake(id) => self.ready.push_back(id),
                InboxMsg::Accept(stream) => {
                    self.core.shared.accept_taken();
                    self.adopt(stream, None);
                }
                InboxMsg::AcceptLayered(stream, layer) => {
                    self.core.shared.accept_taken();
                    self.adopt(stream, Some(layer));
                }
                InboxMsg::Spawn(f) => {
                    let spawned = catch_unwind(AssertUnwindSafe(f)).map(|fut| self.core.spawn(fut));
                    if !matches!(spawned, Ok(Ok(_))) {
                        WorkerCounters::add(&self.core.counters().remote_spawn_dropped, 1);
                        tracing::warn!(worker = self.core.worker, "remote spawn dropped");
                    }
                }
            }
        }
    }

    fn adopt(&mut self, stream: std::net::TcpStream, layer: Option<crate::conn::LayerFactory>) {
        let core = &self.core;
        if core.shutting_down.get() {
            // Handed over but not yet adopted when shutdown began: closed and counted.
            WorkerCounters::add(&core.counters().connections_refused, 1);
            return;
        }
        let key = {
            let mut conns = core.conns.borrow_mut();
            let Some(key) = conns.alloc(false) else {
                WorkerCounters::add(&core.counters().connections_refused, 1);
                core.exhausted(super::exhaustion::Exhaustion::Connections);
                return;
            };
            let c = conns.get(key).expect("just allocated");
            c.phase = Phase::Open;
            c.peer = stream.peer_addr().ok();
            c.local = stream.local_addr().ok();
            conns.mark_dirty(key);
            crate::conn::arm_idle(core, &mut conns, key);
            key
        };
        core.outbox.borrow_mut().push(Op::Adopt { conn: key, stream });
        WorkerCounters::add(&core.counters().connections_accepted, 1);
        if let Some(factory) = layer {
            // `on_accept` runs after the handshake (`layer_events`).
            crate::conn::layer::adopt_layered(core, key, &factory);
            return;
        }
        self.start_conn_task(key);
    }

    /// Calls `on_accept` for an adopted connection and spawns its task.
    fn start_conn_task(&mut self, key: crate::driver::ConnKey) {
        let core = &self.core;
        let ctx = ConnCtx::new(core, key);
        match catch_unwind(AssertUnwindSafe(|| self.handler.on_accept(ctx))) {
            Ok(fut) => {
                let id = core.spawn_conn_task(key, Box::pin(fut));
                if let Some(c) = core.conns.borrow_mut().get(key) {
                    c.task = Some(id);
                }
            }
            Err(payload) => {
                WorkerCounters::add(&core.counters().task_panics, 1);
                tracing::error!(worker = core.worker, "on_accept panicked: {}", panic_message(&payload));
                abort_key(core, key, CloseReason::Panicked);
                if let Some(c) = core.conns.borrow_mut().get(key) {
                    c.held = false;
                }
            }
        }
    }

    fn check_shutdown(&mut self) {
        if self.core.runtime.is_shutting_down() && !self.core.shutting_down.get() {
            self.core.shutting_down.set(true);
            tracing::debug!(worker = self.core.worker, "worker entering shutdown");
            for w in self.core.shutdown_waiters.borrow_mut().drain(..) {
                w.wake();
            }
            crate::udp::on_shutdown(&self.core);
            let mut conns = self.core.conns.borrow_mut();
            for key in conns.live_keys() {
                if let Some(c) = conns.get(key) {
                    c.wake_readers();
                }
            }
            drop(conns);
            crate::conn::layer::on_shutdown(&self.core);
        }
    }

    fn callbacks(&mut self) {
        let core = self.core.clone();
        let notified = core.shared.notify_pending.load(Ordering::Acquire)
            && core.shared.notify_pending.swap(false, Ordering::AcqRel);
        if notified {
            let handler = &mut self.handler;
            guarded(&core, "on_notify", || handler.on_notify(&mut WorkerCtx { core: &core }));
        }
        let handler = &mut self.handler;
        guarded(&core, "on_tick", || handler.on_tick(&mut WorkerCtx { core: &core }));
    }

    fn flush(&mut self, ops: &mut Vec<Op>) {
        let core = self.core.clone();
        ops.append(&mut core.outbox.borrow_mut());
        let mut report = FlushReport::default();
        core.conns.borrow_mut().flush(core.cfg.recv_accumulator_limit(), ops, &mut report);
        WorkerCounters::add(&core.counters().recv_paused, report.paused);
        WorkerCounters::add(&core.counters().connections_closed, report.silent);
        for op in ops.drain(..) {
            self.submit(op);
        }
        for (key, reason) in report.released {
            WorkerCounters::add(&core.counters().connections_closed, 1);
            tracing::debug!(worker = core.worker, index = key.index, ?reason, "connection released");
            let token =
                crate::conn::ConnToken { worker: core.worker, index: key.index, generation: key.generation };
            let handler = &mut self.handler;
            guarded(&core, "on_close", || handler.on_close(token, reason));
        }
    }

    fn submit(&mut self, op: Op) {
        if !self.pending.is_empty() {
            self.pending.push_back(op);
            return;
        }
        if let Err(SubmitError::Full(op)) = self.submit_to_driver(op) {
            self.pending.push_back(op);
        }
    }

    /// `Driver::submit`, unless a test's `FaultPlan` makes this submission report "full".
    fn submit_to_driver(&mut self, op: Op) -> Result<(), SubmitError> {
        #[cfg(feature = "testing")]
        if self.core.cfg.faults().is_some_and(|f| f.take_submit_failure(self.core.worker)) {
            return Err(SubmitError::Full(op));
        }
        #[cfg(feature = "testing")]
        let logged =
            if self.core.runtime.events.is_enabled() { crate::event_log::op_event(&op) } else { None };
        let result = self.driver.submit(op);
        #[cfg(feature = "testing")]
        if let (Some((conn, name)), Ok(())) = (logged, &result) {
            let event = crate::event_log::Event::Submitted(name);
            self.core.runtime.events.record(self.core.worker, conn, || event);
        }
        result
    }

    /// Applies `set_nodelay` requests after a park, so a connection adopted or connected in the
    /// same pass is already known to the backend (mio registers sockets during `park`).
    fn apply_nodelay(&mut self) {
        let requests = std::mem::take(&mut *self.core.nodelay.borrow_mut());
        for (key, on) in requests {
            if let Err(e) = self.driver.set_nodelay(key, on) {
                tracing::debug!(index = key.index, "set_nodelay failed: {e}");
            }
        }
    }

    fn retry_pending(&mut self) {
        while let Some(op) = self.pending.pop_front() {
            if let Err(SubmitError::Full(op)) = self.submit_to_driver(op) {
                self.pending.push_front(op);
                break;
            }
        }
    }

    /// How long the next park may block: zero when anything is ready, else until the earliest
    /// deadline, and never longer than `tick` (`on_tick` runs on every loop iteration, so a
    /// bounded wait is all the tick needs; no clock is read for it on busy iterations).
    fn park_timeout(&mut self, tick: Option<Duration>) -> Option<Duration> {
        let clock = self.clock.take();
        let core = &self.core;
        let busy = !self.ready.is_empty()
            || local_ready_pending()
            || !self.pending.is_empty()
            || !core.outbox.borrow().is_empty()
            || !core.conns.borrow().dirty.is_empty()
            || !core.nodelay.borrow().is_empty()
            || core.shared.notify_pending.load(Ordering::Acquire)
            || (core.runtime.is_shutting_down() && !core.shutting_down.get());
        if busy {
            return Some(Duration::ZERO);
        }
        let mut deadline: Option<Instant> = None;
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        };
        consider(core.timers.borrow_mut().next_deadline());
        consider(core.conns.borrow().next_deadline());
        if core.shutting_down.get() {
            let d = core.runtime.deadline();
            consider(d);
            consider(d.map(|d| d + TEARDOWN_GRACE));
        }
        let until_deadline =
            deadline.map(|d| d.saturating_duration_since(clock.unwrap_or_else(Instant::now)));
        match (until_deadline, tick) {
            (Some(d), Some(t)) => Some(d.min(t)),
            (d, t) => d.or(t),
        }
    }

    fn fire_due(&mut self) {
        let timers_due = self.core.timers.borrow_mut().next_deadline();
        let conns_due = self.core.conns.borrow().next_deadline();
        if timers_due.is_none() && conns_due.is_none() {
            return;
        }
        let now = Instant::now();
        self.clock = Some(now);
        // Most parks end before the earliest deadline (an idle timeout, say): skip both passes.
        if timers_due.is_some_and(|d| d <= now) {
            self.core.timers.borrow_mut().fire_due(now);
        }
        if conns_due.is_none_or(|d| d > now) {
            return;
        }
        let due = self.core.conns.borrow_mut().due_deadlines(now);
        for (key, kind) in due {
            match kind {
                ConnDeadline::Connect => connect_deadline(&self.core, key),
                ConnDeadline::Idle => crate::conn::idle_deadline(&self.core, key, now),
                ConnDeadline::Handshake => crate::conn::layer::handshake_deadline(&self.core, key),
                ConnDeadline::Linger => {
                    // Only the current deadline counts; it ends a close not yet submitted or a FIN
                    // still behind queued bytes.
                    let open = self.core.conns.borrow_mut().get(key).is_some_and(|c| {
                        !c.close_submitted
                            && c.linger_deadline.is_some_and(|d| d <= now)
                            && (c.close.is_some() || matches!(c.write, WriteState::ShutdownPending))
                    });
                    if open {
                        WorkerCounters::add(&self.core.counters().close_aborted, 1);
                        abort_key(&self.core, key, CloseReason::Aborted);
                    }
                }
            }
        }
    }

    fn publish(&self) {
        let core = &self.core;
        let c = core.counters();
        let stats = self.driver.stats();
        let ring_ran_dry = stats.recv_buffer_exhausted > c.recv_buffer_exhausted.load(Ordering::Relaxed);
        if ring_ran_dry {
            core.exhausted(super::exhaustion::Exhaustion::RecvBuffers);
        }
        c.publish_backend(&stats);
        let stale = core.conns.borrow().stale;
        let stale = stale + crate::udp::stale(core) + core.disk.borrow().stale;
        let disk = core.disk.borrow();
        WorkerCounters::set(&c.disk_ops, disk.completed);
        WorkerCounters::set(&c.disk_ops_in_flight, disk.in_flight() as u64);
        drop(disk);
        WorkerCounters::set(&c.stale_completions, stats.stale_completions + stale);
        WorkerCounters::set(&c.connections_open, core.conns.borrow().open() as u64);
        let pool = core.pool.borrow();
        WorkerCounters::set(&c.send_pool_in_use, pool.in_use() as u64);
        WorkerCounters::set(&c.send_pool_slots, pool.slots() as u64);
        let timers = core.timers.borrow();
        WorkerCounters::set(&c.timers_in_use, timers.in_use() as u64);
        WorkerCounters::set(&c.timer_slots, timers.capacity() as u64);
        let tasks = core.tasks.borrow();
        WorkerCounters::set(&c.tasks_live, tasks.live() as u64);
        WorkerCounters::set(&c.task_slots_in_use, tasks.standalone_live() as u64);
        WorkerCounters::set(&c.task_slots, core.cfg.standalone_task_capacity() as u64);
    }

    /// At the shutdown deadline: drop every task and abort every connection.
    fn force_close(&mut self) {
        let core = self.core.clone();
        let ids = core.tasks.borrow().live_ids();
        for id in ids {
            core.abort_task(id);
        }
        crate::udp::close_all(&core);
        let keys = core.conns.borrow().live_keys();
        for key in keys {
            let open = core.conns.borrow_mut().get(key).is_some_and(|c| !c.close_submitted);
            if open {
                WorkerCounters::add(&core.counters().close_aborted, 1);
            }
            abort_key(&core, key, CloseReason::Shutdown);
            if let Some(c) = core.conns.borrow_mut().get(key) {
                c.held = false;
            }
        }
    }

    fn teardown(&mut self) {
        let core = self.core.clone();
        let ids = core.tasks.borrow().live_ids();
        for id in ids {
            core.abort_task(id);
        }
        self.driver.shutdown();
        self.publish();
        tracing::info!(worker = core.worker, "worker stopped");
    }
}

/// Runs a handler callback, containing a panic (counted and logged).
fn guarded(core: &Core, what: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        WorkerCounters::add(&core.counters().task_panics, 1);
        tracing::error!(worker = core.worker, "{what} panicked: {}", panic_message(&payload));
    }
}
