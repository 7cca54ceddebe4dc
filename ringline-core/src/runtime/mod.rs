//! The worker runtime: context, core state, cross-thread handles, the generic loop.

pub(crate) mod api;
pub(crate) mod context;
pub(crate) mod core;
pub(crate) mod exhaustion;
pub(crate) mod handle;
pub(crate) mod shared;
pub(crate) mod sink;
pub(crate) mod worker;
