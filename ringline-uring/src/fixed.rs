//! The registered-file (fixed-file) table: a sparse table registered at setup and a free list of
//! its slots.
//!
//! Sockets keep their ordinary fd (so fd accounting matches the mio backend, PITFALLS P27); the
//! table entry only speeds up submissions. A full table, or a failing update, makes the socket use
//! its plain fd and is counted, never refused (PITFALLS P28).

use std::io;
use std::os::fd::RawFd;

use io_uring::Submitter;

/// Free-list allocator over a registered sparse file table.
pub(crate) struct FixedTable {
    size: u32,
    free: Vec<u32>,
}

impl FixedTable {
    /// Registers a sparse table of `size` entries.
    pub(crate) fn register(submitter: &Submitter<'_>, size: u32) -> io::Result<FixedTable> {
        submitter.register_files_sparse(size)?;
        // Pop from the end: hand out low slots first.
        Ok(FixedTable { size, free: (0..size).rev().collect() })
    }

    /// Puts `fd` into a free slot; `None` when the table is full or the update failed.
    pub(crate) fn insert(&mut self, submitter: &Submitter<'_>, fd: RawFd) -> Option<u32> {
        let slot = self.free.pop()?;
        match submitter.register_files_update(slot, &[fd]) {
            Ok(_) => Some(slot),
            Err(e) => {
                tracing::warn!(slot, "registering a fixed file failed: {e}");
                self.free.push(slot);
                None
            }
        }
    }

    /// Clears `slot` and makes it available again.
    pub(crate) fn remove(&mut self, submitter: &Submitter<'_>, slot: u32) {
        if let Err(e) = submitter.register_files_update(slot, &[-1]) {
            // The entry keeps a reference to the socket until the ring goes away; the plain fd is
            // still closed and the peer has already seen the shutdown.
            tracing::warn!(slot, "clearing a fixed file failed: {e}");
            return;
        }
        self.free.push(slot);
    }

    /// Entries in use (gauge).
    pub(crate) fn in_use(&self) -> u64 {
        u64::from(self.size) - self.free.len() as u64
    }
}
