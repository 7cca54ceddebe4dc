//! Files and disk I/O (API section 15): [`AlignedBuf`], [`fs::File`], [`DirectIoFile`],
//! [`NvmeDevice`], and the disk part of the backend contract ([`DiskKey`], [`FileOp`],
//! [`NvmeOp`]).
//!
//! Every operation is admitted into the worker's disk table (at most `disk_ops_in_flight`
//! outstanding, more wait FIFO), gets a (slot, generation) [`DiskKey`], and goes to the backend
//! as `Op::File` / `Op::Nvme` with its buffer and descriptor by value. The backend answers with
//! one `Completion::File` / `Completion::Nvme` returning them. io_uring runs native operations;
//! mio runs the same syscalls on the blocking pool and wakes the worker through its unparker.
//! The core opens nothing itself: `open(2)` flags are the backend's business.

mod aligned;
mod contract;
mod direct;
mod file;
mod nvme;
mod op;
pub(crate) mod table;

pub use aligned::{ALIGN, AlignedBuf};
pub use contract::{DiskKey, FileBuf, FileOp, NvmeError, NvmeOp, OpenFlags};
pub use direct::{DirectIoFile, check_alignment};
pub use nvme::{MAX_BLOCKS, NvmeDevice, block_count};

/// Regular files (`fs::File`).
pub mod fs {
    pub use super::file::File;
}

use crate::driver::Completion;
use crate::runtime::core::Core;
use table::Done;

/// Applies a `Completion::File` or `Completion::Nvme`; anything else is ignored.
pub(crate) fn on_completion(core: &Core, c: Completion<'_>) {
    let (key, done) = match c {
        Completion::File { key, result, buf, fd } => (key, Done::File { result, buf, fd }),
        Completion::Nvme { key, result, buf } => (key, Done::Nvme { result, buf }),
        _ => return,
    };
    let leftover = core.disk.borrow_mut().complete(key, done);
    // An abandoned or stale operation's buffer and descriptor are freed here, after the
    // terminal completion and outside the table borrow.
    drop(leftover);
}
