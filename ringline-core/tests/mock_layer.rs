//! Stream layers over the `MockDriver`, with a toy layer standing in for TLS: the handshake is
//! `HI` from the client answered by `OK`, records are bytes XORed with 0x5A, and the close alert
//! is `BYE`. Checks that the core resolves a layered connect after the handshake, encrypts sends
//! into the ordered queue, decrypts receives, queues the close alert before the close, tells
//! the close alert from a bare FIN, and counts a failed handshake.
#![cfg(feature = "testing")]

mod common;

use std::io::Write;
use std::net::SocketAddr;

use bytes::BytesMut;
use common::{Hooks, Log, WAIT, cfg, start_on};
use ringline_core::Error;
use ringline_core::conn::{StreamLayer, connect_layered};
use ringline_core::testing::MockNet;

const KEY: u8 = 0x5A;

/// The toy layer of a client.
#[derive(Default)]
struct Toy {
    handshaking: bool,
    /// Handshake bytes received so far.
    hello: Vec<u8>,
    /// Record bytes received so far that may start the close alert.
    tail: Vec<u8>,
    peer_closed: bool,
}

impl Toy {
    fn boxed() -> Box<dyn StreamLayer> {
        Box::new(Toy { handshaking: true, ..Toy::default() })
    }
}

impl StreamLayer for Toy {
    fn start(&mut self, out: &mut dyn Write) -> Result<(), Error> {
        out.write_all(b"HI").map_err(Error::Io)
    }

    fn read_wire(
        &mut self,
        mut wire: &[u8],
        plain: &mut BytesMut,
        _out: &mut dyn Write,
    ) -> Result<(), Error> {
        if self.handshaking {
            let n = wire.len().min(2 - self.hello.len());
            self.hello.extend_from_slice(&wire[..n]);
            wire = &wire[n..];
            if self.hello.len() == 2 {
                if self.hello != b"OK" {
                    return Err(Error::InvalidInput("toy handshake refused"));
                }
                self.handshaking = false;
            }
        }
        for &b in wire {
            self.tail.push(b);
            if b"BYE".starts_with(&self.tail) {
                if self.tail.len() == 3 {
                    self.peer_closed = true;
                    self.tail.clear();
                }
                continue;
            }
            plain.extend(self.tail.drain(..).map(|b| b ^ KEY));
        }
        Ok(())
    }

    fn write_plain(&mut self, plain: &[u8], out: &mut dyn Write) -> Result<(), Error> {
        let wire: Vec<u8> = plain.iter().map(|b| b ^ KEY).collect();
        out.write_all(&wire).map_err(Error::Io)
    }

    fn close(&mut self, out: &mut dyn Write) {
        let _ = out.write_all(b"BYE");
    }

    fn is_handshaking(&self) -> bool {
        self.handshaking
    }

    fn peer_closed(&self) -> bool {
        self.peer_closed
    }
}

fn xor(data: &[u8]) -> Vec<u8> {
    data.iter().map(|b| b ^ KEY).collect()
}

#[test]
fn a_layered_connect_handshakes_encrypts_decrypts_and_sends_its_close_alert() {
    let _w = common::watchdog("a_layered_connect_handshakes_encrypts_decrypts_and_sends_its_close_alert");
    let addr: SocketAddr = "10.0.0.7:443".parse().unwrap();
    let out = Log::default();
    let o2 = out.clone();
    let net = MockNet::new();
    net.listen(addr);
    // Every chunk comes in an owned buffer: a layered connection decrypts it like a borrowed one
    // and hands the buffer back.
    net.lend_recv_from(Some(1));
    let rt = start_on(net, cfg().send_pool(2, 64), move || Hooks {
        start: Some(Box::new(move || {
            Box::pin(async move {
                let conn =
                    connect_layered(addr, None, Box::new(|| Ok(Toy::boxed()))).await.expect("handshake");
                // Larger than the whole send pool: the rest goes to the heap, in order.
                let big: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
                conn.send(&big).await.unwrap();
                conn.send(b"tail").await.unwrap();
                let mut got = Vec::new();
                loop {
                    let chunk = conn.recv().await.unwrap();
                    if chunk.is_empty() {
                        break;
                    }
                    got.extend_from_slice(&chunk);
                }
                o2.push(format!("{}|{}", String::from_utf8_lossy(&got), conn.eof_truncated()));
            })
        })),
        ..Hooks::default()
    });
    let peer = rt.net.accept(addr, WAIT).expect("outbound connection");
    assert_eq!(peer.read_exact(2, WAIT).unwrap(), b"HI", "the layer's first bytes");
    peer.send(b"OK").unwrap();
    let big: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    assert_eq!(peer.read_exact(300, WAIT).unwrap(), xor(&big), "the first send, encrypted");
    assert_eq!(peer.read_exact(4, WAIT).unwrap(), xor(b"tail"));
    peer.send(&xor(b"reply")).unwrap();
    peer.send(b"BYE").unwrap();
    assert!(peer.wait_closed(WAIT), "the task returned and closed");
    assert_eq!(peer.written()[2 + 300 + 4..], b"BYE"[..], "close alert before the close");
    assert_eq!(out.get(), vec!["reply|false".to_string()]);
    let (kept, returned) = rt.net.lent_buffers();
    assert_eq!(kept, 0, "a layered connection never keeps the wire bytes' buffer");
    assert!(returned >= 2, "the handshake reply and the records came in owned buffers ({returned})");
    let m = rt.stop();
    assert_eq!(m.connections_connected, 1);
    assert_eq!(m.tls_handshake_failures, 0);
    assert_eq!(m.connections_open, 0);
}

#[test]
fn a_bare_fin_is_truncation_and_a_refused_handshake_fails_the_connect() {
    let _w = common::watchdog("a_bare_fin_is_truncation_and_a_refused_handshake_fails_the_connect");
    let good: SocketAddr = "10.0.0.8:443".parse().unwrap();
    let bad: SocketAddr = "10.0.0.9:443".parse().unwrap();
    let out = Log::default();
    let o2 = out.clone();
    let net = MockNet::new();
    net.listen(good);
    net.listen(bad);
    let rt = start_on(net, cfg(), move || Hooks {
        start: Some(Box::new(move || {
            Box::pin(async move {
                let refused = connect_layered(bad, None, Box::new(|| Ok(Toy::boxed()))).await;
                o2.push(format!("refused: {:?}", refused.err()));
                let conn =
                    connect_layered(good, None, Box::new(|| Ok(Toy::boxed()))).await.expect("handshake");
                let end = conn.recv().await.unwrap();
                o2.push(format!("end: {} truncated: {}", end.len(), conn.eof_truncated()));
            })
        })),
        ..Hooks::default()
    });
    let peer = rt.net.accept(bad, WAIT).expect("first connection");
    assert_eq!(peer.read_exact(2, WAIT).unwrap(), b"HI");
    peer.send(b"NO").unwrap();
    assert!(peer.wait_closed(WAIT), "a refused handshake closes the connection");
    let peer = rt.net.accept(good, WAIT).expect("second connection");
    assert_eq!(peer.read_exact(2, WAIT).unwrap(), b"HI");
    peer.send(b"OK").unwrap();
    peer.fin();
    assert!(peer.wait_closed(WAIT));
    assert!(common::wait_for(WAIT, || out.len() == 2));
    assert_eq!(
        out.get(),
        vec![
            "refused: Some(InvalidInput(\"toy handshake refused\"))".to_string(),
            "end: 0 truncated: true".to_string(),
        ]
    );
    let m = rt.stop();
    assert_eq!(m.tls_handshake_failures, 1, "the refused handshake is counted");
    assert_eq!(m.connections_connected, 1);
}
