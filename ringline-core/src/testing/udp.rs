//! UDP in the [`MockDriver`](super::MockDriver): sockets keyed by their real bound address, with
//! datagrams scripted by the test through [`MockNet`](super::MockNet) (`udp_push`,
//! `udp_push_truncated`, `udp_error`) and sends recorded (`udp_sent`), optionally held back
//! (`udp_hold_sends`) so admission limits can be observed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket};

use super::{Done, MAX_RECV_CHUNKS_PER_PARK, NetState};
use crate::buf::SendBuf;
use crate::driver::{Op, UdpKey};

/// One datagram sent by a mock UDP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentDatagram {
    /// The sending socket's local address.
    pub from: SocketAddr,
    /// The destination.
    pub to: SocketAddr,
    /// The payload.
    pub data: Vec<u8>,
}

/// What the test scripted for the UDP side of the net.
#[derive(Default)]
pub(super) struct UdpNet {
    /// Datagrams (payload, sender, truncated) waiting for the socket bound at the key.
    inbound: HashMap<SocketAddr, VecDeque<(Vec<u8>, SocketAddr, bool)>>,
    /// Receive errors waiting for the socket bound at the key.
    errors: HashMap<SocketAddr, VecDeque<io::ErrorKind>>,
    /// Every datagram sent, in order.
    pub(super) sent: Vec<SentDatagram>,
    /// Sends stay in flight while set.
    hold: bool,
}

impl super::MockNet {
    /// Queues a datagram from `from` for the mock UDP socket bound at `to`.
    pub fn udp_push(&self, to: SocketAddr, data: &[u8], from: SocketAddr) {
        self.poke(|st| st.udp.inbound.entry(to).or_default().push_back((data.to_vec(), from, false)));
    }

    /// Queues a datagram reported as truncated (larger than the receive buffers).
    pub fn udp_push_truncated(&self, to: SocketAddr, data: &[u8], from: SocketAddr) {
        self.poke(|st| st.udp.inbound.entry(to).or_default().push_back((data.to_vec(), from, true)));
    }

    /// Queues a receive error (as an ICMP error would give) for the socket bound at `to`.
    pub fn udp_error(&self, to: SocketAddr, kind: io::ErrorKind) {
        self.poke(|st| st.udp.errors.entry(to).or_default().push_back(kind));
    }

    /// Holds (`true`) or releases (`false`) every UDP send in flight.
    pub fn udp_hold_sends(&self, hold: bool) {
        self.poke(|st| st.udp.hold = hold);
    }

    /// Every datagram the mock UDP sockets sent, in order.
    pub fn udp_sent(&self) -> Vec<SentDatagram> {
        self.lock().udp.sent.clone()
    }
}

/// The driver's view of one UDP socket.
pub(super) struct DUdp {
    local: SocketAddr,
    peer: Option<SocketAddr>,
    receiving: bool,
    sends: VecDeque<(Option<SocketAddr>, SendBuf)>,
    /// The adopted socket, kept as the identity of the address until `UdpClose`.
    _socket: UdpSocket,
}

fn k(key: UdpKey) -> (u32, u32) {
    (key.index, key.generation)
}

/// Applies one UDP operation.
pub(super) fn apply(
    socks: &mut BTreeMap<(u32, u32), DUdp>,
    st: &mut NetState,
    op: Op,
    out: &mut Vec<Done>,
    violation: &mut dyn FnMut(&mut NetState, String),
) {
    match op {
        Op::UdpAdopt { sock, socket } => {
            if socks.contains_key(&k(sock)) {
                violation(st, format!("UdpAdopt for open socket {sock:?}"));
                return;
            }
            match socket.local_addr() {
                Ok(local) => {
                    socks.insert(
                        k(sock),
                        DUdp { local, peer: None, receiving: false, sends: VecDeque::new(), _socket: socket },
                    );
                }
                Err(e) => out.push(Done::UdpError(sock, e)),
            }
        }
        Op::UdpRecvStart { sock } => match socks.get_mut(&k(sock)) {
            Some(s) => s.receiving = true,
            None => violation(st, format!("UdpRecvStart for unknown socket {sock:?}")),
        },
        Op::UdpConnect { sock, peer } => match socks.get_mut(&k(sock)) {
            Some(s) => s.peer = Some(peer),
            None => violation(st, format!("UdpConnect for unknown socket {sock:?}")),
        },
        Op::UdpSend { sock, peer, buf } => match socks.get_mut(&k(sock)) {
            Some(s) => s.sends.push_back((peer, buf)),
            None => {
                violation(st, format!("UdpSend for unknown socket {sock:?}"));
                out.push(Done::UdpSent(sock, buf, Err(io::Error::from(io::ErrorKind::NotConnected))));
            }
        },
        Op::UdpClose { sock } => {
            let Some(mut s) = socks.remove(&k(sock)) else {
                violation(st, format!("UdpClose for unknown socket {sock:?} (second close?)"));
                return;
            };
            let hold = st.udp.hold;
            for (peer, buf) in s.sends.drain(..) {
                if hold {
                    out.push(Done::UdpSent(
                        sock,
                        buf,
                        Err(io::Error::from(io::ErrorKind::ConnectionAborted)),
                    ));
                } else {
                    out.push(send_one(st, s.local, s.peer, sock, peer, buf));
                }
            }
            out.push(Done::UdpClosed(sock));
        }
        _ => {}
    }
}

fn send_one(
    st: &mut NetState,
    local: SocketAddr,
    connected: Option<SocketAddr>,
    sock: UdpKey,
    peer: Option<SocketAddr>,
    buf: SendBuf,
) -> Done {
    let Some(to) = peer.or(connected) else {
        return Done::UdpSent(sock, buf, Err(io::Error::from(io::ErrorKind::NotConnected)));
    };
    let data: Vec<u8> = buf.slices().flatten().copied().collect();
    let n = data.len();
    st.udp.sent.push(SentDatagram { from: local, to, data });
    Done::UdpSent(sock, buf, Ok(n))
}

/// Sends and receives on every socket; true when anything happened.
pub(super) fn progress(
    socks: &mut BTreeMap<(u32, u32), DUdp>,
    st: &mut NetState,
    out: &mut Vec<Done>,
) -> bool {
    let mut any = false;
    for (&(index, generation), s) in socks.iter_mut() {
        let key = UdpKey { index, generation };
        if !st.udp.hold {
            while let Some((peer, buf)) = s.sends.pop_front() {
                out.push(send_one(st, s.local, s.peer, key, peer, buf));
                any = true;
            }
        }
        if !s.receiving {
            continue;
        }
        if let Some(errs) = st.udp.errors.get_mut(&s.local) {
            while let Some(kind) = errs.pop_front() {
                out.push(Done::UdpError(key, io::Error::from(kind)));
                any = true;
            }
        }
        if let Some(q) = st.udp.inbound.get_mut(&s.local) {
            for _ in 0..MAX_RECV_CHUNKS_PER_PARK {
                let Some((data, peer, truncated)) = q.pop_front() else { break };
                out.push(Done::Datagram(key, data, peer, truncated));
                any = true;
            }
        }
    }
    any
}
