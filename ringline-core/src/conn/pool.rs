//! The per-worker send pool: fixed-size slots that copied sends are staged in.
//!
//! Slots are allocated lazily and kept for reuse; a slot travels by value inside a `SendBuf` to
//! the backend and comes back in `Completion::Sent`, so it can never be reused while the kernel
//! still reads it.

/// Staging memory for copied sends.
pub(crate) struct SendPool {
    free: Vec<Box<[u8]>>,
    slot_size: usize,
    slots: usize,
    in_use: usize,
}

impl SendPool {
    pub(crate) fn new(slots: usize, slot_size: usize) -> Self {
        SendPool { free: Vec::new(), slot_size, slots, in_use: 0 }
    }

    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    pub(crate) fn available(&self) -> usize {
        self.slots - self.in_use
    }

    /// Takes a slot, or `None` when all are in use.
    pub(crate) fn alloc(&mut self) -> Option<Box<[u8]>> {
        if self.in_use >= self.slots {
            return None;
        }
        self.in_use += 1;
        Some(self.free.pop().unwrap_or_else(|| vec![0u8; self.slot_size].into_boxed_slice()))
    }

    /// Returns a slot.
    pub(crate) fn release(&mut self, slot: Box<[u8]>) {
        debug_assert!(self.in_use > 0);
        self.in_use -= 1;
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_reused() {
        let mut p = SendPool::new(2, 64);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        assert!(p.alloc().is_none());
        let ptr = a.as_ptr();
        p.release(a);
        let again = p.alloc().unwrap();
        assert_eq!(again.as_ptr(), ptr);
        p.release(b);
    }
}
