//! mio backend (in progress).
