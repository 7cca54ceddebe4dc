//! One module per operation kind, mirroring the io_uring backend: each holds the socket work of
//! that operation and reports its completions; the driver only dispatches and keeps the table.

pub(crate) mod close;
pub(crate) mod connect;
pub(crate) mod recv;
pub(crate) mod send;

use std::io;

/// The error reported for an operation cut short by `Close`.
pub(crate) fn canceled() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}
