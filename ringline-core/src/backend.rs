//! Names of backends: the one asked for ([`BackendChoice`]) and the one running ([`Backend`]).

/// Which backend a launch should use; see `Config::backend`.
///
/// The environment variable `RINGLINE_BACKEND` (`auto`, `uring`, `mio`) overrides it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendChoice {
    /// io_uring when it is compiled in and works here, else mio.
    #[default]
    Auto,
    /// io_uring or a launch error.
    Uring,
    /// mio (epoll or kqueue) or a launch error.
    Mio,
}

/// The backend a worker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Linux io_uring.
    Uring,
    /// mio: epoll on Linux, kqueue on BSDs and macOS.
    Mio,
    /// A third-party driver started with `launch_with`; the driver's `NAME`.
    Custom(&'static str),
}

impl Backend {
    /// The backend a driver with this `NAME` stands for.
    pub fn from_driver_name(name: &'static str) -> Backend {
        match name {
            "uring" => Backend::Uring,
            "mio" => Backend::Mio,
            other => Backend::Custom(other),
        }
    }

    /// A short lowercase name: `uring`, `mio`, or the custom driver's name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Mio => "mio",
            Backend::Custom(n) => n,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
