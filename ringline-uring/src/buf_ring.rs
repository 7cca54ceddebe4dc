//! The provided-buffer ring: `count` receive buffers of `size` bytes handed to the kernel through a
//! ring registered with `IORING_REGISTER_PBUF_RING`.
//!
//! The ring of descriptors is an anonymous `mmap` (page aligned, never moves). Each buffer is its
//! own heap allocation (the memory of a `Vec<u8>`), so a buffer can be given away whole: the
//! kernel picks a buffer for each multishot receive completion; the driver either copies the bytes
//! out at once ([`BufRing::data`]) or lends the buffer's memory to the core ([`BufRing::lend`]),
//! which puts other memory in its place; either way the id goes back with [`BufRing::release`] in
//! the same iteration (PITFALLS P10, P11), so no handler ever holds a ring entry. Buffers in the
//! ring are freed only after [`BufRing::unregister`] succeeded; a ring that could not be
//! unregistered is leaked on purpose.

use std::io;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

/// One anonymous, private, read-write mapping.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY:
        // - a null hint with MAP_PRIVATE | MAP_ANONYMOUS asks for fresh memory and touches nothing
        //   that exists; `len` is non-zero (callers pass at least one entry or buffer).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY:
        // - `ptr`/`len` describe exactly the mapping made in `Mapping::new`, unmapped only here;
        // - the owner drops a mapping only when the kernel can no longer access it (the buffer ring
        //   was unregistered or never registered).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// One receive buffer: the memory of a `Vec<u8>` (`cap` bytes, length 0), owned by the ring
/// without a live `Vec`, since the kernel may write it while it is in the ring.
struct HeapBuf {
    ptr: *mut u8,
    cap: usize,
}

impl HeapBuf {
    /// Takes over the memory of `v` (its bytes are forgotten).
    fn from_vec(v: Vec<u8>) -> HeapBuf {
        let mut v = ManuallyDrop::new(v);
        HeapBuf { ptr: v.as_mut_ptr(), cap: v.capacity() }
    }

    /// Gives the memory back as a `Vec` whose first `len` bytes are the buffer's.
    ///
    /// # Safety
    /// - `len <= cap` and the first `len` bytes were written (by the kernel, before the
    ///   completion that named this buffer);
    /// - nothing (the kernel included) reads or writes the memory any more, and `self` is not
    ///   used again.
    unsafe fn into_vec(self, len: usize) -> Vec<u8> {
        // SAFETY:
        // - `ptr`/`cap` come from a `Vec<u8>` of the global allocator (`from_vec`), never freed
        //   since; `len <= cap` and those bytes are initialized (caller).
        unsafe { Vec::from_raw_parts(self.ptr, len, self.cap) }
    }
}

/// A registered ring of provided receive buffers (buffer group `bgid`).
pub(crate) struct BufRing {
    ring: ManuallyDrop<Mapping>,
    /// Buffer `bid` is `bufs[bid]`; each at least `buf_size` bytes.
    bufs: Vec<HeapBuf>,
    /// `out[bid]`: a completion handed buffer `bid` out and it was not released yet, so the kernel
    /// does not touch it.
    out: Vec<bool>,
    /// A buffer handed back by the core, the next replacement for a lent one (never in the ring).
    spare: Option<Vec<u8>>,
    entries: u16,
    buf_size: usize,
    /// Next tail value to publish (kept locally; the kernel only reads it).
    tail: u16,
    /// Buffers currently in the ring (not handed out by a completion yet).
    free: usize,
    /// Buffers lent to the core so far.
    lent: u64,
    bgid: u16,
    registered: bool,
}

impl BufRing {
    /// Allocates `count` buffers of `size` bytes (count a power of two, at most 32768).
    pub(crate) fn new(count: usize, size: usize, bgid: u16) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32_768 || size == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad provided-buffer ring size"));
        }
        let ring = Mapping::new(count * std::mem::size_of::<BufRingEntry>())?;
        let bufs = (0..count).map(|_| HeapBuf::from_vec(Vec::with_capacity(size))).collect();
        Ok(BufRing {
            ring: ManuallyDrop::new(ring),
            bufs,
            out: vec![false; count],
            spare: None,
            entries: count as u16,
            buf_size: size,
            tail: 0,
            free: 0,
            lent: 0,
            bgid,
            registered: false,
        })
    }

    /// Registers the ring with the kernel and fills it with every buffer.
    pub(crate) fn register(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        let entries = self.count();
        // SAFETY:
        // - the ring mapping is page aligned, `entries * 16` bytes long and zeroed (fresh anonymous
        //   memory), as IORING_REGISTER_PBUF_RING requires;
        // - it stays mapped until `unregister` succeeded: `Drop` leaks it while `registered` is set.
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.ring.ptr.as_ptr() as u64,
                entries as u16,
                self.bgid,
                0,
            )?;
        }
        self.registered = true;
        for bid in 0..entries {
            self.write_entry(bid as u16);
        }
        self.publish();
        Ok(())
    }

    /// Unregisters the ring; afterwards dropping it frees the memory.
    pub(crate) fn unregister(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        if self.registered {
            submitter.unregister_buf_ring(self.bgid)?;
            self.registered = false;
        }
        Ok(())
    }

    /// The buffer group id used in receive SQEs.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Number of buffers.
    pub(crate) fn count(&self) -> usize {
        usize::from(self.entries)
    }

    /// Buffers currently available to the kernel.
    pub(crate) fn free(&self) -> usize {
        self.free
    }

    /// Size of each buffer.
    pub(crate) fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Buffers lent to the core so far.
    pub(crate) fn lent(&self) -> u64 {
        self.lent
    }

    /// Notes that a completion handed out buffer `bid`; false for an id out of range or one that
    /// is already out (then the completion must not use it).
    pub(crate) fn taken(&mut self, bid: u16) -> bool {
        match self.out.get_mut(usize::from(bid)) {
            Some(out) if !*out => {
                *out = true;
                self.free = self.free.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    fn is_out(&self, bid: u16) -> bool {
        self.out.get(usize::from(bid)).copied().unwrap_or(false)
    }

    /// The first `len` bytes of buffer `bid` (clamped to the buffer size), which a completion
    /// handed out (`taken`); empty for any other id.
    pub(crate) fn data(&self, bid: u16, len: usize) -> &[u8] {
        if !self.is_out(bid) {
            return &[];
        }
        let len = len.min(self.buf_size);
        let buf = &self.bufs[usize::from(bid)];
        // SAFETY:
        // - `bid` is out (checked above): the kernel wrote these bytes before posting the
        //   completion that named `bid`, and does not touch the buffer until `release` puts it
        //   back in the ring;
        // - `len <= buf_size <= cap`, so the slice stays inside the buffer's allocation.
        unsafe { std::slice::from_raw_parts(buf.ptr, len) }
    }

    /// Gives away the memory of buffer `bid` holding `len` bytes (clamped to the buffer size),
    /// which a completion handed out (`taken`), and puts other memory in its place: the spare
    /// buffer or a new allocation. `None` for an id that is not out. `release` then puts the new
    /// memory in the ring under the same id.
    pub(crate) fn lend(&mut self, bid: u16, len: usize) -> Option<Vec<u8>> {
        if !self.is_out(bid) {
            return None;
        }
        let len = len.min(self.buf_size);
        let fresh = self.spare.take().unwrap_or_else(|| Vec::with_capacity(self.buf_size));
        let old = std::mem::replace(&mut self.bufs[usize::from(bid)], HeapBuf::from_vec(fresh));
        self.lent += 1;
        // SAFETY:
        // - `bid` is out (checked above), so the kernel wrote its first `len` bytes before the
        //   completion and no ring entry names this memory: the entry for `bid` is rewritten by
        //   `release` with the new buffer's address before the kernel can pick it again;
        // - `len <= buf_size <= cap`; `old` was removed from `bufs`, so nothing here uses it again.
        Some(unsafe { old.into_vec(len) })
    }

    /// Takes back a buffer the core did not keep, as the next replacement (or frees it).
    pub(crate) fn give_back(&mut self, mut v: Vec<u8>) {
        if self.spare.is_none() && v.capacity() >= self.buf_size {
            v.clear();
            self.spare = Some(v);
        }
    }

    /// Returns buffer `bid` to the kernel (after `taken`); ignores ids that are not out.
    pub(crate) fn release(&mut self, bid: u16) {
        if !self.is_out(bid) {
            return;
        }
        self.out[usize::from(bid)] = false;
        self.write_entry(bid);
        self.publish();
    }

    /// Writes the descriptor of `bid` at the current tail and advances the local tail.
    fn write_entry(&mut self, bid: u16) {
        let mask = self.count() - 1;
        let slot = usize::from(self.tail) & mask;
        let entry = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        let addr = self.bufs[usize::from(bid)].ptr as u64;
        // SAFETY:
        // - `slot < count`, so the entry lies inside the ring mapping, which is suitably aligned
        //   (page aligned, entries of 16 bytes);
        // - the kernel reads only entries between its head and the published tail; `slot` is past
        //   the published tail, so nobody reads it concurrently;
        // - the setters write `addr`, `len` and `bid` only, never the `resv` field that doubles as
        //   the tail of entry 0;
        // - `addr` is buffer `bid`'s allocation of at least `buf_size` bytes, which the ring owns:
        //   it is freed only after `unregister` (`Drop`), and `lend` moves it out of `bufs` only
        //   while `bid` is out of the ring, putting other memory in its place.
        unsafe {
            let e = &mut *entry.add(slot);
            e.set_addr(addr);
            e.set_len(self.buf_size as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.free += 1;
    }

    /// Publishes the local tail with release ordering, after the entries it covers were written.
    fn publish(&mut self) {
        let base = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY:
        // - `base` is the first entry of a live ring mapping, so `tail` points at its `resv` field,
        //   a naturally aligned u16 inside the mapping;
        // - the kernel only reads that field and we are its only writer, so treating it as an
        //   `AtomicU16` for the duration of the store is sound.
        unsafe {
            let tail = BufRingEntry::tail(base).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            tracing::error!(
                bgid = self.bgid,
                "provided-buffer ring dropped while registered; leaking its memory"
            );
            return;
        }
        for buf in self.bufs.drain(..) {
            // SAFETY:
            // - the ring is not registered, so the kernel no longer writes the buffers; each was
            //   taken out of `bufs` here and is freed once, with length 0 (nothing initialized).
            drop(unsafe { buf.into_vec(0) });
        }
        // SAFETY:
        // - the ring is not registered, so the kernel no longer reads the descriptors; the field
        //   is dropped exactly once, here, and never used afterwards.
        unsafe {
            ManuallyDrop::drop(&mut self.ring);
        }
    }
}
