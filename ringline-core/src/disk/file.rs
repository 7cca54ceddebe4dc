//! `fs::File`: positional reads and writes of owned `Vec<u8>` buffers, plus the descriptor
//! handling shared with [`DirectIoFile`](super::DirectIoFile).

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use super::contract::{FileBuf, FileOp, OpenFlags};
use super::op::{DiskOp, Request};
use super::table::Done;
use crate::error::Error;

/// What a file operation gave back.
pub(crate) struct FileOutcome {
    pub(crate) result: Result<usize, Error>,
    pub(crate) buf: Option<FileBuf>,
    pub(crate) fd: Option<OwnedFd>,
}

/// Runs one file operation through the worker's disk table.
pub(crate) async fn run(op: FileOp) -> FileOutcome {
    match DiskOp::new(Request::File(op)).await {
        Ok(Done::File { result, buf, fd }) => FileOutcome { result: result.map_err(Error::Io), buf, fd },
        Ok(Done::Nvme { buf, .. }) => FileOutcome {
            result: Err(Error::Io(io::Error::other("NVMe completion for a file operation"))),
            buf: buf.map(FileBuf::Aligned),
            fd: None,
        },
        Err((error, req)) => {
            let (buf, fd) = match req {
                Some(Request::File(op)) => op.into_parts(),
                _ => (None, None),
            };
            FileOutcome { result: Err(error), buf, fd }
        }
    }
}

/// Opens `path` with `flags`; the descriptor the backend opened.
pub(crate) async fn open_fd(path: &Path, flags: OpenFlags) -> Result<Arc<OwnedFd>, Error> {
    let out = run(FileOp::Open { path: path.to_path_buf(), flags }).await;
    out.result?;
    out.fd.map(Arc::new).ok_or(Error::Io(io::Error::other("open completed without a descriptor")))
}

/// Closes `fd` through the backend if this is its last reference; otherwise the operations
/// still holding it close it when their completions come back.
pub(crate) async fn close_fd(fd: Arc<OwnedFd>) -> Result<(), Error> {
    match Arc::try_unwrap(fd) {
        Ok(fd) => run(FileOp::Close { fd }).await.result.map(|_| ()),
        Err(shared) => {
            drop(shared);
            Ok(())
        }
    }
}

/// A regular file on this worker: `open`, `create`, `read_at`, `write_at`, `sync_all`, `len`,
/// `close`. `!Send`. Every operation takes its buffer by value and returns it with the result;
/// dropping an operation's future keeps the buffer with the runtime until the kernel (or the
/// blocking thread) is done with it.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ringline_core::disk::fs::File>();
/// ```
#[derive(Debug)]
pub struct File {
    fd: Arc<OwnedFd>,
    _not_send: PhantomData<*const ()>,
}

impl File {
    /// Opens an existing file for reading and writing.
    ///
    /// # Errors
    /// `Io` with the OS error (`NotFound`, `PermissionDenied`, ...); `NotInRuntime` off a worker.
    pub fn open(path: impl AsRef<Path>) -> impl Future<Output = Result<File, Error>> + 'static {
        let path = path.as_ref().to_path_buf();
        let flags = OpenFlags { read: true, write: true, ..OpenFlags::default() };
        async move { Ok(File::from_fd(open_fd(&path, flags).await?)) }
    }

    /// Creates a file for reading and writing, truncating it if it exists.
    ///
    /// # Errors
    /// As [`File::open`].
    pub fn create(path: impl AsRef<Path>) -> impl Future<Output = Result<File, Error>> + 'static {
        let path = path.as_ref().to_path_buf();
        let flags = OpenFlags { read: true, write: true, create: true, truncate: true, direct: false };
        async move { Ok(File::from_fd(open_fd(&path, flags).await?)) }
    }

    fn from_fd(fd: Arc<OwnedFd>) -> File {
        File { fd, _not_send: PhantomData }
    }

    /// Reads up to `buf.len()` bytes at `offset` into `buf`; `Ok(n)` with `n < buf.len()` means
    /// the end of the file was reached. The buffer comes back in every case.
    pub fn read_at(
        &self,
        buf: Vec<u8>,
        offset: u64,
    ) -> impl Future<Output = (Result<usize, Error>, Vec<u8>)> + 'static {
        let op = FileOp::Read { fd: self.fd.clone(), buf: FileBuf::Vec(buf), offset };
        async move { vec_outcome(run(op).await) }
    }

    /// Writes `buf` at `offset`: `Ok(buf.len())`, or the short count the OS accepted.
    pub fn write_at(
        &self,
        buf: Vec<u8>,
        offset: u64,
    ) -> impl Future<Output = (Result<usize, Error>, Vec<u8>)> + 'static {
        let op = FileOp::Write { fd: self.fd.clone(), buf: FileBuf::Vec(buf), offset };
        async move { vec_outcome(run(op).await) }
    }

    /// Flushes data and metadata to the device (`fsync`).
    ///
    /// # Errors
    /// `Io` with the OS error.
    pub fn sync_all(&self) -> impl Future<Output = Result<(), Error>> + 'static {
        let op = FileOp::Sync { fd: self.fd.clone(), data_only: false };
        async move { run(op).await.result.map(|_| ()) }
    }

    /// The file's size in bytes (`statx`).
    ///
    /// # Errors
    /// `Io` with the OS error.
    #[allow(clippy::len_without_is_empty)] // an async size query; emptiness is `len() == 0`
    pub fn len(&self) -> impl Future<Output = Result<u64, Error>> + 'static {
        let op = FileOp::Size { fd: self.fd.clone() };
        async move { run(op).await.result.map(|n| n as u64) }
    }

    /// Closes the file. Operations whose futures were dropped keep the descriptor open until
    /// they complete; then it is closed without an error report.
    ///
    /// # Errors
    /// `Io` with the error of `close(2)`.
    pub fn close(self) -> impl Future<Output = Result<(), Error>> + 'static {
        close_fd(self.fd)
    }
}

/// Splits an outcome with a `Vec` buffer.
fn vec_outcome(out: FileOutcome) -> (Result<usize, Error>, Vec<u8>) {
    let buf = match out.buf {
        Some(FileBuf::Vec(v)) => v,
        Some(FileBuf::Aligned(a)) => a.to_vec(),
        None => Vec::new(),
    };
    (out.result, buf)
}
