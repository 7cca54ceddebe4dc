//! Files on mio: the same syscalls as the io_uring backend (`open`, `pread`, `pwrite`,
//! `fsync`/`fdatasync`, `statx`, `close`), run on the runtime's blocking pool
//! (`blocking_threads`). A finished job queues its completion and wakes the worker through the
//! driver's `mio::Waker`, so a result is never found by a poll timeout. NVMe passthrough is
//! io_uring only: `Op::Nvme` is answered with `Unsupported`.
//!
//! A job owns its operation (buffer and descriptor `Arc`) while it runs; a job dropped unrun
//! (the pool shut down) still answers, with `ECANCELED`, returning the buffer.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use ringline_core::driver::{
    AlignedBuf, Completion, CompletionSink, DiskKey, FileBuf, FileOp, NvmeError, Op, OpenFlags, Unpark,
};

use crate::unpark::MioUnpark;

/// `STATX_SIZE`, `STATX_DIOALIGN` and the `struct statx` offsets read (`<linux/stat.h>`).
const STATX_SIZE: u32 = 0x200;
const STATX_DIOALIGN: u32 = 0x2000;
const STX_SIZE: usize = 40;
const STX_DIO_MEM_ALIGN: usize = 152;
const STX_DIO_OFFSET_ALIGN: usize = 156;

/// A `struct statx` target (256 bytes, 8-aligned).
#[repr(C, align(8))]
struct StatxBuf([u8; 256]);

impl StatxBuf {
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().unwrap_or_default())
    }
}

/// One finished operation.
enum DiskDone {
    File { key: DiskKey, result: io::Result<usize>, buf: Option<FileBuf>, fd: Option<OwnedFd> },
    Nvme { key: DiskKey, buf: Option<AlignedBuf> },
}

/// Completions from the pool, and the waker that tells the worker about them.
struct Shared {
    done: Mutex<VecDeque<DiskDone>>,
    unpark: MioUnpark,
}

impl Shared {
    fn push(&self, d: DiskDone) {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).push_back(d);
        self.unpark.unpark();
    }
}

/// A file operation on its way through the pool.
struct Job {
    key: DiskKey,
    op: Option<FileOp>,
    shared: Arc<Shared>,
}

impl Job {
    fn run(mut self) {
        if let Some(op) = self.op.take() {
            let (result, buf, fd) = run(op);
            self.shared.push(DiskDone::File { key: self.key, result, buf, fd });
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            let (buf, fd) = op.into_parts();
            let result = Err(io::Error::from_raw_os_error(libc::ECANCELED));
            self.shared.push(DiskDone::File { key: self.key, result, buf, fd });
        }
    }
}

/// The disk state of one mio driver.
pub(crate) struct MioDisk {
    shared: Arc<Shared>,
    /// Operations submitted and not delivered yet; each produces exactly one `DiskDone` (a job
    /// that never runs reports `ECANCELED` from its drop). At zero the shared queue is not locked.
    in_flight: usize,
}

impl MioDisk {
    pub(crate) fn new(unpark: MioUnpark) -> MioDisk {
        MioDisk { shared: Arc::new(Shared { done: Mutex::new(VecDeque::new()), unpark }), in_flight: 0 }
    }

    /// True when completions wait to be delivered.
    pub(crate) fn has_done(&self) -> bool {
        self.in_flight > 0 && !self.shared.done.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Hands a file operation to the blocking pool (a plain thread off a worker); answers an
    /// NVMe command with `Unsupported` at the next park.
    pub(crate) fn submit(&mut self, op: Op) {
        if matches!(op, Op::File { .. } | Op::Nvme { .. }) {
            self.in_flight += 1;
        }
        match op {
            Op::File { key, op } => {
                let job = Job { key, op: Some(op), shared: self.shared.clone() };
                if let Err(job) = ringline_core::blocking::execute(Box::new(move || job.run())) {
                    // Off a worker (driver tests) or after the pool stopped: a thread of its own.
                    if let Err(e) = std::thread::Builder::new().name("ringline-disk".into()).spawn(job) {
                        tracing::error!("cannot start a disk thread: {e}");
                    }
                }
            }
            Op::Nvme { key, op } => {
                let done = DiskDone::Nvme { key, buf: op.into_buf() };
                self.shared.done.lock().unwrap_or_else(|e| e.into_inner()).push_back(done);
            }
            _ => tracing::error!("MioDisk::submit got a non-disk operation"),
        }
    }

    /// Delivers every finished operation.
    pub(crate) fn deliver(&mut self, sink: &mut dyn CompletionSink) {
        if self.in_flight == 0 {
            return;
        }
        let done = std::mem::take(&mut *self.shared.done.lock().unwrap_or_else(|e| e.into_inner()));
        self.in_flight = self.in_flight.saturating_sub(done.len());
        for d in done {
            match d {
                DiskDone::File { key, result, buf, fd } => {
                    sink.complete(Completion::File { key, result, buf, fd })
                }
                DiskDone::Nvme { key, buf } => {
                    let e = io::Error::new(
                        io::ErrorKind::Unsupported,
                        "NVMe passthrough needs the io_uring backend",
                    );
                    sink.complete(Completion::Nvme { key, result: Err(NvmeError::Io(e)), buf });
                }
            }
        }
    }
}

/// `open(2)` flags for `f` (always `O_CLOEXEC`).
fn open_flags(f: OpenFlags) -> i32 {
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

/// A syscall's `-1` as the OS error, else the value.
fn check(r: isize) -> io::Result<usize> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
}

/// Runs one operation on the calling (blocking) thread.
fn run(op: FileOp) -> (io::Result<usize>, Option<FileBuf>, Option<OwnedFd>) {
    match op {
        FileOp::Open { path, flags } => {
            let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
                return (
                    Err(io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte")),
                    None,
                    None,
                );
            };
            // SAFETY:
            // - `c` is a NUL-terminated string that outlives the call; flags and mode are plain ints.
            let fd = unsafe { libc::open(c.as_ptr(), open_flags(flags), 0o644 as libc::c_uint) };
            if fd < 0 {
                return (Err(io::Error::last_os_error()), None, None);
            }
            // SAFETY:
            // - `open` just returned this descriptor; nothing else owns it.
            (Ok(0), None, Some(unsafe { OwnedFd::from_raw_fd(fd) }))
        }
        FileOp::Read { fd, mut buf, offset } => {
            let s = buf.as_mut_slice();
            // SAFETY:
            // - `s` is writable memory of `s.len()` bytes owned by this job for the whole call;
            // - `fd` is kept open by the `Arc` the operation holds.
            let r =
                unsafe { libc::pread(fd.as_raw_fd(), s.as_mut_ptr().cast(), s.len(), offset as libc::off_t) };
            let r = if stream_file(r) {
                // SAFETY:
                // - as above; io_uring ignores the offset of non-seekable files, so does this.
                unsafe { libc::read(fd.as_raw_fd(), s.as_mut_ptr().cast(), s.len()) }
            } else {
                r
            };
            (check(r), Some(buf), None)
        }
        FileOp::Write { fd, buf, offset } => {
            let s = buf.as_slice();
            // SAFETY:
            // - `s` is readable memory of `s.len()` bytes owned by this job for the whole call;
            // - `fd` is kept open by the `Arc` the operation holds.
            let r =
                unsafe { libc::pwrite(fd.as_raw_fd(), s.as_ptr().cast(), s.len(), offset as libc::off_t) };
            let r = if stream_file(r) {
                // SAFETY:
                // - as above; io_uring ignores the offset of non-seekable files, so does this.
                unsafe { libc::write(fd.as_raw_fd(), s.as_ptr().cast(), s.len()) }
            } else {
                r
            };
            (check(r), Some(buf), None)
        }
        FileOp::Sync { fd, data_only } => {
            // SAFETY:
            // - `fsync`/`fdatasync` take no pointers; `fd` is open (held by the `Arc`).
            let r = unsafe {
                if data_only { libc::fdatasync(fd.as_raw_fd()) } else { libc::fsync(fd.as_raw_fd()) }
            };
            (check(r as isize).map(|_| 0), None, None)
        }
        FileOp::Size { fd } => (statx(&fd, false), None, None),
        FileOp::DioAlignment { fd } => (statx(&fd, true), None, None),
        FileOp::Close { fd } => {
            // SAFETY:
            // - the operation owned the descriptor; `into_raw_fd` gave up that ownership, so
            //   it is closed exactly once, here.
            let r = unsafe { libc::close(fd.into_raw_fd()) };
            (check(r as isize).map(|_| 0), None, None)
        }
    }
}

/// True when a positional call failed with `ESPIPE` (a pipe, FIFO or socket).
fn stream_file(r: isize) -> bool {
    r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESPIPE)
}

/// `statx` for the size, or for max(dio_mem_align, dio_offset_align) (0 when not reported).
fn statx(fd: &OwnedFd, dio: bool) -> io::Result<usize> {
    let mut buf = StatxBuf([0; 256]);
    let mask = if dio { STATX_DIOALIGN } else { STATX_SIZE };
    // SAFETY:
    // - the path is a static empty C string (with `AT_EMPTY_PATH` the fd itself is examined);
    // - `buf` is 256 writable bytes, 8-aligned: the size and alignment of `struct statx`.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            mask,
            (&raw mut buf).cast::<libc::statx>(),
        )
    };
    check(r as isize)?;
    let got = buf.u32_at(0);
    if dio {
        if got & STATX_DIOALIGN == 0 {
            return Ok(0);
        }
        return Ok(buf.u32_at(STX_DIO_MEM_ALIGN).max(buf.u32_at(STX_DIO_OFFSET_ALIGN)) as usize);
    }
    if got & STATX_SIZE == 0 {
        return Err(io::Error::other("statx gave no size"));
    }
    Ok(u64::from_ne_bytes(buf.0[STX_SIZE..STX_SIZE + 8].try_into().unwrap_or_default()) as usize)
}
