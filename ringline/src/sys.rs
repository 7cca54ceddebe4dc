//! The facade's few system calls: listening and `bind_udp` sockets, rlimits, CPU pinning, listener wake-up.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// A blocking listener with `SO_REUSEADDR`, the given backlog, and `SO_SNDBUF`/`SO_RCVBUF` (which
/// accepted sockets inherit).
pub(crate) fn listen(
    addr: SocketAddr,
    backlog: u32,
    buffers: (Option<usize>, Option<usize>),
) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2) call with constant arguments; the result is checked.
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if let Some(n) = buffers.0 {
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, n.min(i32::MAX as usize) as libc::c_int)?;
    }
    if let Some(n) = buffers.1 {
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, n.min(i32::MAX as usize) as libc::c_int)?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` is a valid sockaddr of `len` bytes for `addr`'s family; `fd` is open.
    cvt(unsafe { libc::bind(fd, (&raw const storage).cast(), len) })?;
    let backlog = backlog.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `fd` is an open, bound stream socket.
    cvt(unsafe { libc::listen(fd, backlog) })?;
    Ok(listener)
}

/// A non-blocking UDP socket bound to `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` (one per
/// worker on the same address; the kernel spreads datagrams), and `SO_SNDBUF`/`SO_RCVBUF`.
pub(crate) fn bind_udp(addr: SocketAddr, buffers: (Option<usize>, Option<usize>)) -> io::Result<UdpSocket> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let flags = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: plain socket(2) call with constant arguments; the result is checked.
    let fd = cvt(unsafe { libc::socket(family, flags, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let socket = unsafe { UdpSocket::from_raw_fd(fd) };
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    if let Some(n) = buffers.0 {
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, n.min(i32::MAX as usize) as libc::c_int)?;
    }
    if let Some(n) = buffers.1 {
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, n.min(i32::MAX as usize) as libc::c_int)?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` is a valid sockaddr of `len` bytes for `addr`'s family; `fd` is open.
    cvt(unsafe { libc::bind(fd, (&raw const storage).cast(), len) })?;
    Ok(socket)
}

fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed; `fd` is an open socket.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all-zero bytes are valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Wakes a thread blocked in `accept` on `listener` (Linux: `shutdown(SHUT_RD)`).
pub(crate) fn wake_acceptor(listener: &TcpListener) {
    // SAFETY: the caller's borrow keeps the listener (and so its fd) open during the call.
    let _ = unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
}

/// Raises the soft `RLIMIT_NOFILE` to at least `needed`, up to the hard limit.
///
/// # Errors
/// `(needed, available)` when the hard limit is too low.
pub(crate) fn ensure_nofile(needed: u64) -> Result<(), (u64, u64)> {
    // SAFETY: rlimit is plain data; all-zero is valid.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a valid out-pointer for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(());
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max < needed {
        return Err((needed, lim.rlim_max));
    }
    let current = lim.rlim_cur;
    lim.rlim_cur = needed;
    // SAFETY: `lim` is a valid rlimit with cur <= max.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err((needed, current));
    }
    Ok(())
}

/// Open file descriptors of this process.
pub(crate) fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0)
}

/// Pins the calling thread to the `n`-th CPU (modulo the count) of the process's allowed set.
pub(crate) fn pin_to_nth_cpu(n: usize) -> io::Result<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid out-pointer of the size passed.
    cvt(unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) })?;
    // SAFETY: CPU_ISSET only reads `set`; every index is below CPU_SETSIZE.
    let allowed: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect();
    if allowed.is_empty() {
        return Err(io::Error::other("empty CPU affinity set"));
    }
    let cpu = allowed[n % allowed.len()];
    // SAFETY: as above, all-zero is an empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE (it came from the loop above).
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: `one` is a valid cpu set of the size passed; 0 means the calling thread.
    cvt(unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one) })?;
    Ok(cpu)
}
