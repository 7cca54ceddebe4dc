//! Scatter-gather sends through the facade: copied and guarded parts form one ordered send, and
//! a guard lives until its send was acknowledged (TESTPLAN 28, issue 3), on either backend.

mod common;

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use common::{Server, Watchdog, backend_label, client, config, pattern};
use ringline::{AsyncEventHandler, ConnCtx, GuardBox, SendGuard, join, sleep};

/// A guard that counts its drops.
struct Counted {
    bytes: Vec<u8>,
    drops: Rc<Cell<u32>>,
}

impl SendGuard for Counted {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

/// (drops while the send was pending, drops after it resolved, the send's result)
static REPORT: Mutex<Vec<(u32, u32, String)>> = Mutex::new(Vec::new());

/// Each guard: with the small server send buffer, 8 MiB cannot be absorbed by the kernel before
/// the client starts reading.
const BIG: usize = 4 << 20;

fn expected() -> Vec<u8> {
    let mut v = b"HEAD".to_vec();
    v.extend(pattern(1, BIG));
    v.extend(b"MID");
    v.extend(pattern(2, BIG));
    v.extend(b"TAIL");
    v
}

/// Set once the handler looked at the guards while the send was pending; the client reads only
/// then. (A fixed pause was not enough: on a loaded machine building the two 4 MiB guards in a
/// debug build can take longer than the pause, and the client then drained the send first.)
static PROBED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct Gather;

impl AsyncEventHandler for Gather {
    fn create_for_worker(_worker: usize) -> Self {
        Gather
    }
    fn on_accept(&self, conn: ConnCtx) -> impl Future<Output = ()> + 'static {
        async move {
            let drops = Rc::new(Cell::new(0));
            let g1 = Counted { bytes: pattern(1, BIG), drops: drops.clone() };
            let g2 = Counted { bytes: pattern(2, BIG), drops: drops.clone() };
            let send = conn
                .send_parts()
                .copy(b"HEAD")
                .guard(GuardBox::new(g1))
                .copy(b"MID")
                .guard(GuardBox::new(g2))
                .copy(b"TAIL")
                .submit();
            let probe = {
                let drops = drops.clone();
                async move {
                    // The peer is not reading yet: 8 MiB cannot have been acknowledged.
                    sleep(Duration::from_millis(150)).await;
                    let pending = drops.get();
                    PROBED.store(true, std::sync::atomic::Ordering::SeqCst);
                    pending
                }
            };
            let (result, pending_drops) = join(send, probe).await;
            REPORT.lock().unwrap().push((pending_drops, drops.get(), format!("{result:?}")));
        }
    }
}

#[test]
fn a_gathered_send_of_copies_and_guards_arrives_in_order_and_holds_its_guards() {
    let _w = Watchdog::new("a_gathered_send_of_copies_and_guards", 60);
    let server = Server::start::<Gather>(
        config()
            .workers(1)
            .zero_copy_threshold(4096)
            .zero_copy_local(true)
            .socket_buffers(Some(64 * 1024), None),
    );
    let mut c = client(server.addr);
    // Lock the client's receive buffer small: with autotuning up to `tcp_rmem`'s maximum (32 MiB
    // on some machines) the kernel could absorb all 8 MiB unread, and the guards would rightly go
    // early (mio releases them once the kernel holds their bytes).
    set_rcvbuf(&c, 64 * 1024);
    let probed = common::settle(30, || PROBED.load(std::sync::atomic::Ordering::SeqCst));
    assert!(probed, "the handler never probed its guards on {}", backend_label());
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let want = expected();
    assert_eq!(all.len(), want.len(), "length on {}", backend_label());
    assert!(all == want, "order or content differs on {}", backend_label());
    assert!(common::settle(5, || !REPORT.lock().unwrap().is_empty()), "handler never reported");
    let (pending, after, result) = REPORT.lock().unwrap()[0].clone();
    assert_eq!(result, format!("Ok({})", want.len()), "one logical send resolves with its whole length");
    assert_eq!(pending, 0, "a guard was dropped before its bytes were acknowledged on {}", backend_label());
    assert_eq!(after, 2, "each guard is dropped exactly once, before the send resolves");
    server.stop();
}

/// `SO_RCVBUF` on `s` (which also stops the kernel from growing it).
fn set_rcvbuf(s: &std::net::TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: `bytes` outlives the call, its size is passed, and `s` keeps the fd open.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const bytes).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt(SO_RCVBUF): {}", std::io::Error::last_os_error());
}
