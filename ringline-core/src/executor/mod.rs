//! The task side of a worker: the task slab, wakers, the cross-thread inbox, join handles.

pub(crate) mod inbox;
pub(crate) mod join_handle;
pub(crate) mod task;
pub(crate) mod waker;

pub use inbox::RemoteSpawn;
pub use join_handle::TaskHandle;
pub use task::TaskId;
