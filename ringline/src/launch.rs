//! `RinglineBuilder`: transactional launch of workers, listeners and acceptors on the chosen
//! backend. The only place with backend `cfg`s.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use ringline_core::{
    AsyncEventHandler, Backend, Config, Driver, Error, RuntimeShared, ShutdownHandle, WorkerHandle,
};
use ringline_core::{WorkerParams, run_worker};

use crate::acceptor::{self, AcceptOpts};
use crate::select::{self, Availability};
use crate::sys;

/// What `launch` returns: the shutdown handle and one join handle per worker.
pub type Launched = (ShutdownHandle, Vec<JoinHandle<Result<(), Error>>>);

/// Runs on each worker thread before its worker starts (installs the TLS client configuration).
pub(crate) type WorkerInit = Arc<dyn Fn() + Send + Sync>;

/// Builds and starts a ringline runtime.
///
/// ```no_run
/// # use ringline::{AsyncEventHandler, Config, ConnCtx, RinglineBuilder};
/// struct Echo;
/// impl AsyncEventHandler for Echo {
///     fn create_for_worker(_worker: usize) -> Self { Echo }
///     fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
///         async move {
///             while let Ok(data) = conn.recv().await {
///                 if data.is_empty() || conn.send_owned(data).await.is_err() { break; }
///             }
///         }
///     }
/// }
/// let (shutdown, workers) = RinglineBuilder::new(Config::builder().max_connections(4096).build()?)
///     .bind("127.0.0.1:7878".parse().unwrap())
///     .launch::<Echo>()?;
/// # drop(shutdown); for w in workers { let _ = w.join(); }
/// # Ok::<(), ringline::Error>(())
/// ```
#[derive(Debug)]
pub struct RinglineBuilder {
    config: Config,
    pub(crate) binds: Vec<SocketAddr>,
    udp_binds: Vec<SocketAddr>,
    /// The stream layer (TLS) of each listener in `binds`, by position.
    pub(crate) layers: Vec<Option<ringline_core::conn::LayerFactory>>,
    #[cfg(feature = "tls")]
    pub(crate) tls_client: Option<Arc<rustls::ClientConfig>>,
}

impl RinglineBuilder {
    /// A builder with `config` and no listeners (a client-only runtime until `bind`).
    pub fn new(config: Config) -> Self {
        RinglineBuilder {
            config,
            binds: Vec::new(),
            udp_binds: Vec::new(),
            layers: Vec::new(),
            #[cfg(feature = "tls")]
            tls_client: None,
        }
    }

    /// Adds a TCP listener; repeatable. Port 0 picks a free port (see `local_addrs`).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.binds.push(addr);
        self.layers.push(None);
        self
    }

    /// Adds a UDP address; repeatable. Each worker opens its own `SO_REUSEPORT` socket on it
    /// during launch (with `socket_buffers`), passes it to `on_udp_bind` and closes it at
    /// shutdown. With port 0 every worker's socket shares one free port; the real addresses
    /// follow the TCP ones in `ShutdownHandle::local_addrs()`, in `bind_udp` order.
    pub fn bind_udp(mut self, addr: SocketAddr) -> Self {
        self.udp_binds.push(addr);
        self
    }

    #[cfg(not(feature = "tls"))]
    fn worker_init(&self) -> WorkerInit {
        Arc::new(|| {})
    }

    /// Starts the runtime on the backend chosen from the config, `RINGLINE_BACKEND` and the
    /// io_uring probe. Returns once every worker serves.
    ///
    /// # Errors
    /// `Config`, `BackendUnavailable`, `ResourceLimit`, `WorkerSetup`, `Bind`: on any failure
    /// everything started is stopped and joined first.
    pub fn launch<H: AsyncEventHandler>(self) -> Result<Launched, Error> {
        self.config.validate()?;
        let env = select::parse_env(std::env::var(select::BACKEND_ENV).ok().as_deref())?;
        let avail = availability(env.unwrap_or(self.config.backend()));
        let (backend, warning) = select::choose(self.config.backend(), env, &avail)?;
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        match backend {
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Backend::Uring => match self.launch_with_backend::<ringline_uring::UringDriver, H>() {
                Err(e @ Error::WorkerSetup { .. }) if auto_may_fall_back(&self.config, env) => {
                    tracing::warn!("io_uring worker setup failed ({e}); retrying once with mio");
                    self.launch_mio::<H>()
                }
                other => other,
            },
            Backend::Mio => self.launch_mio::<H>(),
            other => Err(Error::BackendUnavailable { backend: other, reason: "not compiled in".into() }),
        }
    }

    #[cfg(feature = "mio")]
    fn launch_mio<H: AsyncEventHandler>(&self) -> Result<Launched, Error> {
        self.launch_with_backend::<ringline_mio::MioDriver, H>()
    }

    #[cfg(not(feature = "mio"))]
    #[allow(clippy::extra_unused_type_parameters, reason = "same signature as with the mio feature")]
    fn launch_mio<H: AsyncEventHandler>(&self) -> Result<Launched, Error> {
        Err(Error::BackendUnavailable {
            backend: Backend::Mio,
            reason: "the `mio` feature is not enabled".into(),
        })
    }

    /// Starts the runtime over any [`Driver`] (for custom backends and tests).
    ///
    /// # Errors
    /// As [`RinglineBuilder::launch`].
    pub fn launch_with<D: Driver, H: AsyncEventHandler>(self) -> Result<Launched, Error> {
        self.config.validate()?;
        self.launch_with_backend::<D, H>()
    }

    fn launch_with_backend<D: Driver, H: AsyncEventHandler>(&self) -> Result<Launched, Error> {
        let cfg = &self.config;
        let workers = cfg.resolved_workers();
        let per_worker = cfg.max_connections() as u64 + 16 + self.udp_binds.len() as u64;
        let needed = sys::open_fds() + (workers as u64) * per_worker + 64;
        sys::ensure_nofile(needed).map_err(|(needed, available)| Error::ResourceLimit {
            resource: "RLIMIT_NOFILE",
            needed,
            available,
        })?;
        let runtime = RuntimeShared::new();
        runtime.set_backend(Backend::from_driver_name(D::NAME));
        let acceptors = Arc::new(Mutex::new(Vec::new()));
        let mut started =
            Started { runtime: runtime.clone(), threads: Vec::new(), acceptors: acceptors.clone() };
        // Port 0: a first socket in the SO_REUSEPORT group picks the port every worker then binds;
        // it is closed once the workers hold theirs (nobody knows the port before launch returns).
        let (udp_addrs, udp_probes) = crate::udp::resolve(&self.udp_binds, cfg.socket_buffers())?;
        let handles = started.spawn_workers::<D, H>(cfg, workers, &udp_addrs, &self.worker_init())?;
        drop(udp_probes);
        runtime.register_workers(&handles);
        let mut addrs = Vec::new();
        for (&addr, layer) in self.binds.iter().zip(&self.layers) {
            let listener = Arc::new(
                sys::listen(addr, cfg.backlog(), cfg.socket_buffers())
                    .map_err(|source| Error::Bind { addr, source })?,
            );
            addrs.push(listener.local_addr().map_err(|source| Error::Bind { addr, source })?);
            let wake = listener.clone();
            runtime.on_shutdown(Box::new(move || sys::wake_acceptor(&wake)));
            let opts = AcceptOpts { nodelay: cfg.tcp_nodelay(), layer: layer.clone() };
            let (ws, rt) = (handles.clone(), runtime.clone());
            let name = format!("ringline-accept-{}", addrs.last().map_or(0, SocketAddr::port));
            let t = std::thread::Builder::new()
                .name(name)
                .spawn(move || acceptor::run(listener, ws, rt, opts))
                .map_err(|e| Error::WorkerSetup { worker: 0, reason: format!("acceptor thread: {e}") })?;
            acceptors.lock().unwrap_or_else(|e| e.into_inner()).push(t);
        }
        if runtime.is_shutting_down() {
            // Shutdown began during launch (e.g. from `on_start`). Workers join the acceptors they
            // find as they exit, but one that exited before an acceptor was listed missed it; the
            // shutdown hook already woke that acceptor, so join whatever is still listed here.
            let late = std::mem::take(&mut *acceptors.lock().unwrap_or_else(|e| e.into_inner()));
            for a in late {
                let _ = a.join();
            }
        }
        addrs.extend_from_slice(&udp_addrs);
        runtime.set_local_addrs(addrs.clone());
        tracing::info!(backend = D::NAME, workers, ?addrs, "ringline launched");
        let threads = std::mem::take(&mut started.threads);
        Ok((ShutdownHandle::new(runtime, cfg.shutdown_timeout()), threads))
    }
}

/// True when `Auto` chose io_uring and a failed ring setup may retry on mio.
#[cfg(all(feature = "uring", target_os = "linux"))]
fn auto_may_fall_back(cfg: &Config, env: Option<ringline_core::BackendChoice>) -> bool {
    cfg!(feature = "mio") && env.unwrap_or(cfg.backend()) == ringline_core::BackendChoice::Auto
}

fn availability(choice: ringline_core::BackendChoice) -> Availability {
    let uring_compiled = cfg!(all(feature = "uring", target_os = "linux"));
    let uring_probe = if uring_compiled && choice != ringline_core::BackendChoice::Mio {
        probe_uring()
    } else {
        Err("not probed".into())
    };
    Availability { uring_compiled, mio_compiled: cfg!(feature = "mio"), uring_probe }
}

#[cfg(all(feature = "uring", target_os = "linux"))]
fn probe_uring() -> Result<(), String> {
    ringline_uring::available()
}

#[cfg(not(all(feature = "uring", target_os = "linux")))]
fn probe_uring() -> Result<(), String> {
    Err("io_uring not compiled in".into())
}

/// Worker threads started so far; stopped and joined if the launch fails.
struct Started {
    runtime: Arc<RuntimeShared>,
    threads: Vec<JoinHandle<Result<(), Error>>>,
    /// Acceptor threads; every worker joins them when it ends, so joining the workers joins them.
    acceptors: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Started {
    fn spawn_workers<D: Driver, H: AsyncEventHandler>(
        &mut self,
        cfg: &Config,
        workers: usize,
        udp: &[SocketAddr],
        init: &WorkerInit,
    ) -> Result<Vec<WorkerHandle>, Error> {
        let (tx, rx) = mpsc::channel();
        for i in 0..workers {
            let params = WorkerParams {
                cfg: cfg.clone(),
                worker: i,
                runtime: self.runtime.clone(),
                ready: tx.clone(),
                udp_sockets: Vec::new(),
            };
            let (udp, buffers) = (udp.to_vec(), cfg.socket_buffers());
            let pin = cfg.pin_workers().then_some(cfg.core_offset() + i);
            let acceptors = self.acceptors.clone();
            let init = init.clone();
            let t = std::thread::Builder::new()
                .name(format!("ringline-w{i}"))
                .spawn(move || {
                    init();
                    worker_main::<D, H>(params, pin, &acceptors, &udp, buffers)
                })
                .map_err(|e| Error::WorkerSetup { worker: i, reason: format!("spawn: {e}") })?;
            self.threads.push(t);
        }
        drop(tx);
        let mut handles: Vec<Option<WorkerHandle>> = vec![None; workers];
        for _ in 0..workers {
            let (i, r) =
                rx.recv().map_err(|_| Error::WorkerSetup { worker: 0, reason: "worker exited".into() })?;
            handles[i] = Some(r?);
        }
        Ok(handles.into_iter().map(|h| h.expect("every worker reported")).collect())
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.runtime.begin_shutdown(Instant::now());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker_main<D: Driver, H: AsyncEventHandler>(
    mut params: WorkerParams,
    pin: Option<usize>,
    acceptors: &Mutex<Vec<JoinHandle<()>>>,
    udp: &[SocketAddr],
    buffers: (Option<usize>, Option<usize>),
) -> Result<(), Error> {
    if let Some(n) = pin {
        if let Err(e) = sys::pin_to_nth_cpu(n) {
            let err =
                Error::WorkerSetup { worker: params.worker, reason: format!("pinning to CPU #{n}: {e}") };
            let _ = params.ready.send((params.worker, Err(err.duplicate())));
            return Err(err);
        }
    }
    match crate::udp::open_for_worker(udp, buffers) {
        Ok(sockets) => params.udp_sockets = sockets,
        Err(err) => {
            let _ = params.ready.send((params.worker, Err(err.duplicate())));
            return Err(err);
        }
    }
    let result = run_worker::<D, H>(params);
    let ended = std::mem::take(&mut *acceptors.lock().unwrap_or_else(|e| e.into_inner()));
    for a in ended {
        let _ = a.join();
    }
    result
}
