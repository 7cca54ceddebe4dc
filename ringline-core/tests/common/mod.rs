//! Shared harness of the `MockDriver` tests: one worker on a thread, a watchdog, helpers.
#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringline_core::testing::{MockDriver, MockNet};
use ringline_core::{
    AsyncEventHandler, CloseReason, Config, ConfigBuilder, ConnCtx, ConnToken, Error, RuntimeShared,
    ShutdownHandle, WorkerCtx, WorkerHandle, WorkerMetrics, WorkerParams, run_worker,
};

/// How long any single wait in a test may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(5);

pub type LocalFut = Pin<Box<dyn Future<Output = ()>>>;

/// What the test handler does; built on the worker thread by the setup closure.
pub struct Hooks {
    pub accept: Box<dyn Fn(ConnCtx) -> LocalFut>,
    pub start: Option<Box<dyn FnOnce() -> LocalFut>>,
    pub on_close: Box<dyn FnMut(ConnToken, CloseReason)>,
    pub on_notify: Box<dyn FnMut(&mut WorkerCtx<'_>)>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            accept: Box::new(|_| Box::pin(async {})),
            start: None,
            on_close: Box::new(|_, _| {}),
            on_notify: Box::new(|_| {}),
        }
    }
}

type Setup = Box<dyn FnOnce() -> Hooks>;

thread_local! {
    static SETUP: RefCell<Option<Setup>> = const { RefCell::new(None) };
}

pub struct TestHandler {
    hooks: RefCell<Hooks>,
}

impl AsyncEventHandler for TestHandler {
    fn create_for_worker(_worker: usize) -> Self {
        let setup = SETUP.with(|s| s.borrow_mut().take()).expect("setup installed");
        TestHandler { hooks: RefCell::new(setup()) }
    }

    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        (self.hooks.borrow().accept)(conn)
    }

    fn on_start(&self) -> impl Future<Output = ()> + 'static {
        let start = self.hooks.borrow_mut().start.take();
        async move {
            if let Some(s) = start {
                s().await;
            }
        }
    }

    fn on_notify(&mut self, ctx: &mut WorkerCtx<'_>) {
        (self.hooks.get_mut().on_notify)(ctx)
    }

    fn on_close(&mut self, conn: ConnToken, reason: CloseReason) {
        (self.hooks.get_mut().on_close)(conn, reason)
    }
}

/// One worker running `run_worker::<MockDriver, TestHandler>` on its own thread.
pub struct Rt {
    pub net: MockNet,
    pub shutdown: ShutdownHandle,
    pub worker: WorkerHandle,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

/// A builder with test-friendly defaults.
pub fn cfg() -> ConfigBuilder {
    Config::builder().workers(1).shutdown_timeout(Duration::from_secs(2))
}

/// Starts one worker with `cfg`; `setup` runs on the worker thread and builds the handler.
pub fn start(cfg: ConfigBuilder, setup: impl FnOnce() -> Hooks + Send + 'static) -> Rt {
    start_on(MockNet::new(), cfg, setup)
}

/// Like [`start`], on a net the test prepared (e.g. with listeners).
pub fn start_on(net: MockNet, cfg: ConfigBuilder, setup: impl FnOnce() -> Hooks + Send + 'static) -> Rt {
    let cfg = cfg.build().expect("valid config");
    let runtime = RuntimeShared::new();
    let (tx, rx) = mpsc::channel();
    let params = WorkerParams {
        cfg: cfg.clone(),
        worker: 0,
        runtime: runtime.clone(),
        ready: tx,
        udp_sockets: Vec::new(),
    };
    let thread_net = net.clone();
    let thread = std::thread::Builder::new()
        .name("mock-w0".into())
        .spawn(move || {
            thread_net.install();
            SETUP.with(|s| *s.borrow_mut() = Some(Box::new(setup)));
            run_worker::<MockDriver, TestHandler>(params)
        })
        .expect("spawn worker");
    let (_, handle) = rx.recv_timeout(WAIT).expect("worker reported");
    let worker = handle.expect("worker started");
    runtime.register_workers(std::slice::from_ref(&worker));
    let shutdown = ShutdownHandle::new(runtime, cfg.shutdown_timeout());
    Rt { net, shutdown, worker, thread: Some(thread) }
}

impl Rt {
    pub fn metrics(&self) -> WorkerMetrics {
        self.shutdown.metrics().workers.into_iter().next().expect("one worker")
    }

    /// Stops the worker (graceful, then aborting after `deadline`), joins it, checks that the
    /// mock saw no contract violation, and returns the final metrics.
    pub fn stop_within(mut self, deadline: Duration) -> WorkerMetrics {
        self.shutdown.shutdown_with_deadline(deadline);
        let t = self.thread.take().expect("running");
        let started = Instant::now();
        while !t.is_finished() {
            assert!(started.elapsed() < Duration::from_secs(10), "worker did not stop");
            std::thread::sleep(Duration::from_millis(2));
        }
        t.join().expect("worker thread panicked").expect("worker returned an error");
        let m = self.metrics();
        assert!(!m.alive);
        assert_eq!(self.net.violations(), Vec::<String>::new(), "backend contract violations");
        m
    }

    pub fn stop(self) -> WorkerMetrics {
        self.stop_within(Duration::from_millis(500))
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shutdown.shutdown_with_deadline(Duration::ZERO);
            let _ = t.join();
        }
    }
}

/// Aborts the whole process if the test is still running after 20 s.
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
}

pub fn watchdog(name: &'static str) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(20)) {
            eprintln!("WATCHDOG: test `{name}` hung for 20 s; aborting");
            std::process::abort();
        }
    });
    Watchdog { done: Some(tx) }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

/// Polls `cond` every millisecond for up to `timeout`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A thread-safe event log.
pub struct Log<T>(pub Arc<Mutex<Vec<T>>>);

impl<T> Default for Log<T> {
    fn default() -> Self {
        Log(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Log(self.0.clone())
    }
}

impl<T: Clone> Log<T> {
    pub fn push(&self, v: T) {
        self.0.lock().unwrap().push(v);
    }
    pub fn get(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Deterministic test bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// A length-prefixed frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Echoes each length-prefixed frame's payload with an awaited `send`; logs `(len, result)`.
pub fn frame_echo(sends: Log<(usize, Result<usize, String>)>) -> Box<dyn Fn(ConnCtx) -> LocalFut> {
    Box::new(move |conn| {
        let sends = sends.clone();
        Box::pin(async move {
            loop {
                let mut payload = Vec::new();
                let n = conn
                    .with_data(|d| {
                        if d.len() < 4 {
                            return ringline_core::ParseResult::NeedAtLeast(4);
                        }
                        let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
                        if d.len() < 4 + len {
                            return ringline_core::ParseResult::NeedAtLeast(4 + len);
                        }
                        payload = d[4..4 + len].to_vec();
                        ringline_core::ParseResult::Consumed(4 + len)
                    })
                    .await;
                match n {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let r = conn.send(&payload).await;
                sends.push((payload.len(), r.map_err(|e| e.to_string())));
            }
        })
    })
}
