//! Files and NVMe on io_uring: native `OpenAt`, `Read`, `Write`, `Fsync`, `Statx` and `Close`
//! on the worker's ring, tagged `Kind::File` with the core's [`DiskKey`]; NVMe passthrough
//! (`URING_CMD`) on the separate [`NvmeRing`](crate::nvme::NvmeRing).
//!
//! Every operation's owned state (path, buffer, descriptor `Arc`, `statx` target) lives in a
//! boxed [`FileInFlight`] keyed by the key's index and checked against its generation, and is
//! handed back (or dropped) only when its CQE is reaped; operations still in flight at a failed
//! shutdown are leaked, never freed under the kernel.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use io_uring::{opcode, types};
use ringline_core::driver::{
    AlignedBuf, Completion, CompletionSink, ConnKey, DiskKey, FileBuf, FileOp, NvmeError, NvmeOp, Op,
    OpenFlags, SubmitError,
};

use super::UringDriver;
use crate::nvme::{NVME_CMD_READ, NVME_CMD_WRITE, NvmeInFlight, NvmeRing, NvmeUringCmd};
use crate::user_data::{Kind, encode};

/// `STATX_SIZE`.
const STATX_SIZE: u32 = 0x200;
/// `STATX_DIOALIGN` (Linux 6.1).
const STATX_DIOALIGN: u32 = 0x2000;
/// Offsets in `struct statx` (`<linux/stat.h>`).
const STX_MASK: usize = 0;
const STX_SIZE: usize = 40;
const STX_DIO_MEM_ALIGN: usize = 152;
const STX_DIO_OFFSET_ALIGN: usize = 156;

/// A `struct statx` target (256 bytes, 8-aligned), read by offset.
#[repr(C, align(8))]
pub(crate) struct StatxBuf(pub(crate) [u8; 256]);

impl StatxBuf {
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().unwrap_or_default())
    }
    fn u64_at(&self, at: usize) -> u64 {
        u64::from_ne_bytes(self.0[at..at + 8].try_into().unwrap_or_default())
    }
    /// The size, if the kernel filled it.
    pub(crate) fn size(&self) -> Option<u64> {
        (self.u32_at(STX_MASK) & STATX_SIZE != 0).then(|| self.u64_at(STX_SIZE))
    }
    /// max(dio_mem_align, dio_offset_align), or 0 when not reported (no direct I/O support).
    pub(crate) fn dio_alignment(&self) -> u32 {
        if self.u32_at(STX_MASK) & STATX_DIOALIGN == 0 {
            return 0;
        }
        self.u32_at(STX_DIO_MEM_ALIGN).max(self.u32_at(STX_DIO_OFFSET_ALIGN))
    }
}

/// The `statx` mask for a size query or an alignment query.
pub(crate) fn statx_mask(dio: bool) -> u32 {
    if dio { STATX_DIOALIGN } else { STATX_SIZE }
}

/// `open(2)` flags for `f` (always `O_CLOEXEC`).
pub(crate) fn open_flags(f: OpenFlags) -> i32 {
    let mut flags = libc::O_CLOEXEC;
    flags |= match (f.read, f.write) {
        (_, false) => libc::O_RDONLY,
        (false, true) => libc::O_WRONLY,
        (true, true) => libc::O_RDWR,
    };
    if f.create {
        flags |= libc::O_CREAT;
    }
    if f.truncate {
        flags |= libc::O_TRUNC;
    }
    if f.direct {
        flags |= libc::O_DIRECT;
    }
    flags
}

/// What a file operation holds until its CQE (fields are kept, not read: the kernel uses them).
#[allow(dead_code)]
enum Held {
    Open(CString),
    Buf(Arc<OwnedFd>, FileBuf),
    Fd(Arc<OwnedFd>),
    Statx { _fd: Arc<OwnedFd>, buf: Box<StatxBuf>, dio: bool },
    Close,
}

/// One file operation in flight.
pub(super) struct FileInFlight {
    key: DiskKey,
    held: Held,
}

/// A completion produced without the kernel, delivered at the next `park`.
pub(super) enum DiskDeferred {
    File { key: DiskKey, result: io::Result<usize>, buf: Option<FileBuf>, fd: Option<OwnedFd> },
    Nvme { key: DiskKey, result: Result<(), NvmeError>, buf: Option<AlignedBuf> },
}

/// The disk state of one driver.
#[derive(Default)]
pub(super) struct Disk {
    files: HashMap<u32, Box<FileInFlight>>,
    pub(super) deferred: VecDeque<DiskDeferred>,
    pub(super) nvme: Option<NvmeRing>,
    /// Scratch for NVMe completions.
    reaped: Vec<(DiskKey, i32)>,
}

impl Disk {
    /// Disk state with an optional NVMe ring.
    pub(super) fn new(nvme: Option<NvmeRing>) -> Disk {
        Disk { nvme, ..Disk::default() }
    }

    /// True when no disk operation waits for the kernel.
    pub(super) fn settled(&self) -> bool {
        self.files.is_empty() && self.nvme.as_ref().is_none_or(|n| n.inflight.is_empty())
    }

    /// Leaks what is still in flight (shutdown gave up waiting for it).
    pub(super) fn abandon(&mut self) {
        for (_, op) in self.files.drain() {
            Box::leak(op);
        }
        if let Some(n) = self.nvme.as_mut() {
            for (_, op) in n.inflight.drain() {
                std::mem::forget(op);
            }
        }
    }
}

impl UringDriver {
    /// `Op::File` and `Op::Nvme`.
    pub(super) fn disk_submit(&mut self, op: Op) -> Result<(), SubmitError> {
        match op {
            Op::File { key, op } => self.file_submit(key, op),
            Op::Nvme { key, op } => self.nvme_submit(key, op),
            other => {
                tracing::error!("disk_submit got a non-disk operation");
                drop(other);
                Ok(())
            }
        }
    }

    fn file_submit(&mut self, key: DiskKey, op: FileOp) -> Result<(), SubmitError> {
        if self.disk.files.contains_key(&key.index) {
            // The core reuses a disk slot only after its completion; never overwrite (and so
            // free) state the kernel may still use. Answer instead of dropping.
            tracing::error!(?key, "File operation for a disk slot still in flight");
            let (buf, fd) = op.into_parts();
            let result = Err(io::Error::new(io::ErrorKind::AlreadyExists, "disk slot in use"));
            self.disk.deferred.push_back(DiskDeferred::File { key, result, buf, fd });
            return Ok(());
        }
        if !self.room() {
            return Err(SubmitError::Full(Op::File { key, op }));
        }
        let (entry, held) = match op {
            FileOp::Open { path, flags } => {
                let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
                    let result = Err(io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"));
                    self.disk.deferred.push_back(DiskDeferred::File { key, result, buf: None, fd: None });
                    return Ok(());
                };
                let e = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), c.as_ptr())
                    .flags(open_flags(flags))
                    .mode(0o644)
                    .build();
                (e, Held::Open(c))
            }
            FileOp::Read { fd, mut buf, offset } => {
                let s = buf.as_mut_slice();
                let len = s.len().min(u32::MAX as usize) as u32;
                let e =
                    opcode::Read::new(types::Fd(fd.as_raw_fd()), s.as_mut_ptr(), len).offset(offset).build();
                (e, Held::Buf(fd, buf))
            }
            FileOp::Write { fd, buf, offset } => {
                let s = buf.as_slice();
                let len = s.len().min(u32::MAX as usize) as u32;
                let e = opcode::Write::new(types::Fd(fd.as_raw_fd()), s.as_ptr(), len).offset(offset).build();
                (e, Held::Buf(fd, buf))
            }
            FileOp::Sync { fd, data_only } => {
                let flags = if data_only { types::FsyncFlags::DATASYNC } else { types::FsyncFlags::empty() };
                let e = opcode::Fsync::new(types::Fd(fd.as_raw_fd())).flags(flags).build();
                (e, Held::Fd(fd))
            }
            FileOp::Size { fd } => self.statx_entry(fd, false),
            FileOp::DioAlignment { fd } => self.statx_entry(fd, true),
            FileOp::Close { fd } => {
                let e = opcode::Close::new(types::Fd(fd.into_raw_fd())).build();
                (e, Held::Close)
            }
        };
        let entry =
            entry.user_data(encode(Kind::File, ConnKey { index: key.index, generation: key.generation }));
        self.disk.files.insert(key.index, Box::new(FileInFlight { key, held }));
        // Room was ensured above, so this lands in the SQ (or, at worst, the retry queue).
        self.push_internal(entry);
        Ok(())
    }

    fn statx_entry(&mut self, fd: Arc<OwnedFd>, dio: bool) -> (io_uring::squeue::Entry, Held) {
        let mut buf = Box::new(StatxBuf([0; 256]));
        let target: *mut StatxBuf = &mut *buf;
        let e = opcode::Statx::new(types::Fd(fd.as_raw_fd()), c"".as_ptr(), target.cast())
            .flags(libc::AT_EMPTY_PATH)
            .mask(statx_mask(dio))
            .build();
        (e, Held::Statx { _fd: fd, buf, dio })
    }

    /// A `Kind::File` CQE.
    pub(super) fn file_on_cqe(&mut self, key: ConnKey, res: i32, sink: &mut dyn CompletionSink) {
        let dkey = DiskKey { index: key.index, generation: key.generation };
        let op = match self.disk.files.remove(&key.index) {
            Some(op) if op.key == dkey => op,
            other => {
                if let Some(op) = other {
                    self.disk.files.insert(key.index, op);
                }
                self.stats.stale_completions += 1;
                return;
            }
        };
        let err = || io::Error::from_raw_os_error(-res);
        let (result, buf, fd) = match op.held {
            Held::Open(_) if res >= 0 => {
                // SAFETY:
                // - a successful `OpenAt` CQE carries a new descriptor that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(res) };
                (Ok(0), None, Some(fd))
            }
            Held::Buf(_, buf) => (if res >= 0 { Ok(res as usize) } else { Err(err()) }, Some(buf), None),
            Held::Statx { buf, dio, .. } if res >= 0 => {
                let value = if dio { Some(u64::from(buf.dio_alignment())) } else { buf.size() };
                let result = value.map(|v| v as usize).ok_or_else(|| io::Error::other("statx gave no size"));
                (result, None, None)
            }
            _ => (if res >= 0 { Ok(0) } else { Err(err()) }, None, None),
        };
        sink.complete(Completion::File { key: dkey, result, buf, fd });
    }

    fn nvme_submit(&mut self, key: DiskKey, op: NvmeOp) -> Result<(), SubmitError> {
        let Some(ring) = self.disk.nvme.as_mut() else {
            let result = Err(NvmeError::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "NVMe passthrough needs Config::nvme(true)",
            )));
            self.disk.deferred.push_back(DiskDeferred::Nvme { key, result, buf: op.into_buf() });
            return Ok(());
        };
        if ring.inflight.contains_key(&key.index) {
            tracing::error!(?key, "NVMe command for a disk slot still in flight");
            let result = Err(NvmeError::Io(io::Error::new(io::ErrorKind::AlreadyExists, "disk slot in use")));
            self.disk.deferred.push_back(DiskDeferred::Nvme { key, result, buf: op.into_buf() });
            return Ok(());
        }
        if !ring.has_room() {
            return Err(SubmitError::Full(Op::Nvme { key, op }));
        }
        let rw = |opcode, nsid, lba, blocks, buf: &mut AlignedBuf| {
            NvmeUringCmd::rw(opcode, nsid, lba, blocks, buf.as_mut_ptr() as u64, buf.len() as u32)
        };
        let (cmd, fd, buf) = match op {
            NvmeOp::Read { fd, nsid, lba, blocks, mut buf } => {
                (rw(NVME_CMD_READ, nsid, lba, blocks, &mut buf), fd, Some(buf))
            }
            NvmeOp::Write { fd, nsid, lba, blocks, mut buf } => {
                (rw(NVME_CMD_WRITE, nsid, lba, blocks, &mut buf), fd, Some(buf))
            }
            NvmeOp::Flush { fd, nsid } => (NvmeUringCmd::flush(nsid), fd, None),
        };
        let raw = fd.as_raw_fd();
        if let Err(op) = ring.push(cmd, NvmeInFlight { key, _fd: fd, buf }, raw) {
            // `has_room` said yes a moment ago; answer rather than drop.
            let result = Err(NvmeError::Io(io::Error::from_raw_os_error(libc::EBUSY)));
            self.disk.deferred.push_back(DiskDeferred::Nvme { key, result, buf: op.buf });
            return Ok(());
        }
        self.arm_nvme_poll();
        Ok(())
    }

    /// Keeps a `PollAdd` on the NVMe ring's fd armed while commands are in flight.
    pub(super) fn arm_nvme_poll(&mut self) {
        let Some(ring) = self.disk.nvme.as_mut() else { return };
        if ring.poll_armed || ring.inflight.is_empty() || self.shut {
            return;
        }
        ring.poll_armed = true;
        let fd = ring.fd();
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(encode(Kind::NvmeRing, ConnKey { index: 0, generation: 0 }));
        self.push_internal(entry);
    }

    /// The NVMe ring's poll fired (or `park` looks anyway): reap its completions.
    pub(super) fn nvme_reap(&mut self, sink: &mut dyn CompletionSink) {
        let Some(ring) = self.disk.nvme.as_mut() else { return };
        ring.submit();
        let mut reaped = std::mem::take(&mut self.disk.reaped);
        ring.reap(&mut reaped);
        for (key, res) in reaped.drain(..) {
            let Some(op) = ring.inflight.remove(&key.index) else {
                self.stats.stale_completions += 1;
                continue;
            };
            if op.key != key {
                ring.inflight.insert(key.index, op);
                self.stats.stale_completions += 1;
                continue;
            }
            let result = match res {
                0 => Ok(()),
                r if r < 0 => Err(NvmeError::Io(io::Error::from_raw_os_error(-r))),
                status => Err(NvmeError::Status(status as u16)),
            };
            sink.complete(Completion::Nvme { key, result, buf: op.buf });
        }
        self.disk.reaped = reaped;
    }

    /// Delivers completions produced without the kernel.
    pub(super) fn disk_deliver_deferred(&mut self, sink: &mut dyn CompletionSink) {
        while let Some(d) = self.disk.deferred.pop_front() {
            match d {
                DiskDeferred::File { key, result, buf, fd } => {
                    sink.complete(Completion::File { key, result, buf, fd })
                }
                DiskDeferred::Nvme { key, result, buf } => {
                    sink.complete(Completion::Nvme { key, result, buf })
                }
            }
        }
    }
}
