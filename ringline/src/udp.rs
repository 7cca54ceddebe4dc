//! `bind_udp` sockets: port resolution at launch and one `SO_REUSEPORT` socket per worker.

use std::net::{SocketAddr, UdpSocket};

use ringline_core::Error;

use crate::sys;

/// Resolves port 0 in `binds`: binds a first socket of the `SO_REUSEPORT` group to learn the
/// port. Returns the addresses the workers bind and those first sockets, to be dropped once the
/// workers hold theirs.
pub(crate) fn resolve(
    binds: &[SocketAddr],
    buffers: (Option<usize>, Option<usize>),
) -> Result<(Vec<SocketAddr>, Vec<UdpSocket>), Error> {
    let mut addrs = Vec::with_capacity(binds.len());
    let mut probes = Vec::new();
    for &addr in binds {
        if addr.port() != 0 {
            addrs.push(addr);
            continue;
        }
        let probe = sys::bind_udp(addr, buffers).map_err(|source| Error::Bind { addr, source })?;
        addrs.push(probe.local_addr().map_err(|source| Error::Bind { addr, source })?);
        probes.push(probe);
    }
    Ok((addrs, probes))
}

/// Opens this worker's socket on each address (on the worker thread, during launch).
pub(crate) fn open_for_worker(
    addrs: &[SocketAddr],
    buffers: (Option<usize>, Option<usize>),
) -> Result<Vec<UdpSocket>, Error> {
    addrs
        .iter()
        .map(|&addr| sys::bind_udp(addr, buffers).map_err(|source| Error::Bind { addr, source }))
        .collect()
}
