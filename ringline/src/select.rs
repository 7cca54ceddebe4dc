//! Which backend a launch runs: a pure function of (compiled backends, probe, env, config).
//!
//! `launch.rs` reads `RINGLINE_BACKEND` (the only place that does) and calls [`parse_env`] and
//! [`choose`] once per launch.

use ringline_core::{Backend, BackendChoice, Error};

/// The variable that overrides `Config::backend`.
pub const BACKEND_ENV: &str = "RINGLINE_BACKEND";

/// Parses `RINGLINE_BACKEND`: `auto`, `uring`, `mio` (case-insensitive); empty means unset.
///
/// # Errors
/// `Error::Config { field: "RINGLINE_BACKEND" }` for any other value.
pub fn parse_env(value: Option<&str>) -> Result<Option<BackendChoice>, Error> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    match v.to_ascii_lowercase().as_str() {
        "auto" => Ok(Some(BackendChoice::Auto)),
        "uring" | "io_uring" | "io-uring" => Ok(Some(BackendChoice::Uring)),
        "mio" => Ok(Some(BackendChoice::Mio)),
        other => Err(Error::Config {
            field: "RINGLINE_BACKEND",
            reason: format!("`{other}` is not one of auto, uring, mio"),
        }),
    }
}

/// What was compiled in and what the io_uring probe found.
#[derive(Clone, Debug)]
pub struct Availability {
    /// The `uring` feature is on (and the target is Linux).
    pub uring_compiled: bool,
    /// The `mio` feature is on.
    pub mio_compiled: bool,
    /// The io_uring probe's verdict (`Err` names why it cannot run); only read when needed.
    pub uring_probe: Result<(), String>,
}

/// The backend to run, and a warning to log when `Auto` fell back.
///
/// # Errors
/// `BackendUnavailable` when the requested backend is not compiled in or cannot run.
pub fn choose(
    requested: BackendChoice,
    env: Option<BackendChoice>,
    avail: &Availability,
) -> Result<(Backend, Option<String>), Error> {
    let unavailable =
        |backend, reason: &str| Err(Error::BackendUnavailable { backend, reason: reason.to_string() });
    match env.unwrap_or(requested) {
        BackendChoice::Uring if !avail.uring_compiled => {
            unavailable(Backend::Uring, "the `uring` feature is not enabled (or the target is not Linux)")
        }
        BackendChoice::Uring => match &avail.uring_probe {
            Ok(()) => Ok((Backend::Uring, None)),
            Err(why) => unavailable(Backend::Uring, why),
        },
        BackendChoice::Mio if !avail.mio_compiled => {
            unavailable(Backend::Mio, "the `mio` feature is not enabled")
        }
        BackendChoice::Mio => Ok((Backend::Mio, None)),
        BackendChoice::Auto => match (avail.uring_compiled, avail.mio_compiled, &avail.uring_probe) {
            (true, _, Ok(())) => Ok((Backend::Uring, None)),
            (true, true, Err(why)) => {
                Ok((Backend::Mio, Some(format!("io_uring unavailable ({why}); using mio"))))
            }
            (true, false, Err(why)) => unavailable(Backend::Uring, why),
            (false, true, _) => Ok((Backend::Mio, None)),
            (false, false, _) => unavailable(Backend::Uring, "no backend compiled in"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avail(uring: bool, mio: bool, probe_ok: bool) -> Availability {
        Availability {
            uring_compiled: uring,
            mio_compiled: mio,
            uring_probe: if probe_ok { Ok(()) } else { Err("io_uring_setup: EPERM (seccomp?)".into()) },
        }
    }

    #[test]
    fn env_values_parse_case_insensitively_and_reject_others() {
        assert_eq!(parse_env(Some("MIO")).unwrap(), Some(BackendChoice::Mio));
        assert_eq!(parse_env(Some(" uring ")).unwrap(), Some(BackendChoice::Uring));
        assert_eq!(parse_env(Some("")).unwrap(), None);
        assert_eq!(parse_env(None).unwrap(), None);
        assert!(matches!(parse_env(Some("epoll")), Err(Error::Config { field: "RINGLINE_BACKEND", .. })));
    }

    #[test]
    fn every_combination_decides_as_documented() {
        use BackendChoice::*;
        let b = |r: Result<(Backend, Option<String>), Error>| r.map(|(b, w)| (b, w.is_some()));
        // Auto with both compiled: uring when the probe passes, else mio with a warning.
        assert_eq!(b(choose(Auto, None, &avail(true, true, true))).unwrap(), (Backend::Uring, false));
        assert_eq!(b(choose(Auto, None, &avail(true, true, false))).unwrap(), (Backend::Mio, true));
        // A single compiled backend.
        assert_eq!(b(choose(Auto, None, &avail(false, true, false))).unwrap(), (Backend::Mio, false));
        assert!(choose(Auto, None, &avail(true, false, false)).is_err());
        // Forced choices never switch silently.
        assert!(matches!(
            choose(Uring, None, &avail(true, true, false)),
            Err(Error::BackendUnavailable { backend: Backend::Uring, .. })
        ));
        assert!(matches!(
            choose(Mio, None, &avail(true, false, true)),
            Err(Error::BackendUnavailable { backend: Backend::Mio, .. })
        ));
        // The environment wins over the config.
        assert_eq!(b(choose(Uring, Some(Mio), &avail(true, true, true))).unwrap(), (Backend::Mio, false));
        assert_eq!(b(choose(Mio, Some(Auto), &avail(true, true, true))).unwrap(), (Backend::Uring, false));
    }
}
