//! Copies a file with `O_DIRECT` (`DirectIoFile`): aligned chunks read into an `AlignedBuf`
//! and written back out, the unaligned tail through a plain `fs::File`.
//!
//! `cargo run -p ringline --example direct_io_copy -- SRC DST`
//! With no arguments it generates a temporary source file (5 MiB + 777 bytes), copies it and
//! checks the copy byte for byte. Prints `copied N bytes from SRC to DST (BACKEND backend)`.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use ringline::{AlignedBuf, AsyncEventHandler, Config, ConnCtx, DirectIoFile, Error, RinglineBuilder, fs};

/// Chunk size of each read and write (a multiple of every direct I/O alignment up to 1 MiB).
const CHUNK: usize = 1 << 20;

static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
static OUTCOME: Mutex<Option<Result<(u64, String), String>>> = Mutex::new(None);

struct Copy;

impl AsyncEventHandler for Copy {
    fn create_for_worker(_worker: usize) -> Self {
        Copy
    }

    fn on_accept(&self, _conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async {}
    }

    fn on_start(&self) -> impl Future<Output = ()> + 'static {
        async {
            let (src, dst) = PATHS.get().expect("paths set before launch").clone();
            let outcome = copy(&src, &dst).await.map_err(|e| e.to_string());
            let backend = ringline::backend().map_or("?".to_string(), |b| format!("{b:?}"));
            *OUTCOME.lock().unwrap() = Some(outcome.map(|n| (n, backend)));
            let _ = ringline::request_shutdown();
        }
    }
}

/// The copy itself; returns the number of bytes copied.
async fn copy(src: &std::path::Path, dst: &std::path::Path) -> Result<u64, Error> {
    let from = DirectIoFile::open(src).await?;
    let to = DirectIoFile::create(dst).await?;
    let align = from.alignment().max(to.alignment());
    let len = from.len().await?;
    let mut offset = 0u64;
    while offset < len {
        let (n, mut chunk) = from.read_at(AlignedBuf::zeroed(CHUNK), offset).await;
        let n = n?;
        if n == 0 {
            break;
        }
        // Direct writes need whole alignment units; only the file's last chunk has a tail.
        let whole = n - n % align;
        let tail = chunk[whole..n].to_vec();
        if whole > 0 {
            chunk.truncate(whole);
            let (written, _) = to.write_at(chunk, offset).await;
            if written? != whole {
                return Err(Error::Io(std::io::Error::from(std::io::ErrorKind::WriteZero)));
            }
        }
        if !tail.is_empty() {
            // The unaligned tail goes through the page cache.
            let plain = fs::File::open(dst).await?;
            let (written, _) = plain.write_at(tail, offset + whole as u64).await;
            written?;
            plain.sync_all().await?;
            plain.close().await?;
        }
        offset += n as u64;
    }
    to.sync_all().await?;
    to.close().await?;
    from.close().await?;
    Ok(offset)
}

/// A deterministic pseudo-random byte stream.
fn generated(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let generate = args.is_empty();
    let (src, dst) = match args.as_slice() {
        [] => {
            let dir = std::env::temp_dir();
            let src = dir.join(format!("direct_io_copy-{}.src", std::process::id()));
            std::fs::write(&src, generated(5 * CHUNK + 777))?;
            (src.clone(), src.with_extension("dst"))
        }
        [src, dst] => (PathBuf::from(src), PathBuf::from(dst)),
        _ => return Err("usage: direct_io_copy [SRC DST]".into()),
    };
    PATHS.set((src.clone(), dst.clone())).expect("set once");
    let (_shutdown, workers) =
        RinglineBuilder::new(Config::builder().workers(1).build()?).launch::<Copy>()?;
    for w in workers {
        w.join().expect("worker panicked")?;
    }
    let outcome = OUTCOME.lock().unwrap().take().ok_or("the copy task did not run")?;
    let (n, backend) = outcome.map_err(|e| format!("copy failed: {e}"))?;
    println!("copied {n} bytes from {} to {} ({backend} backend)", src.display(), dst.display());
    if generate {
        let same = std::fs::read(&src)? == std::fs::read(&dst)?;
        let _ = std::fs::remove_file(&src);
        let _ = std::fs::remove_file(&dst);
        if !same {
            return Err("the copy differs from the source".into());
        }
        println!("verified: the copy is byte-exact");
    }
    Ok(())
}
