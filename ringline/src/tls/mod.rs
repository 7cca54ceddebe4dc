//! TLS (feature `tls`): a rustls [`StreamLayer`] per connection, `bind_tls`, `tls_client`,
//! [`connect_tls`] and [`connect_tls_with_timeout`].
//!
//! The core runs the layer (API 20.4): received wire bytes go through [`TlsLayer::read_wire`]
//! into the plaintext accumulator, and plaintext sends are encrypted into the connection's one
//! ordered send queue, 64 KiB (rustls' default buffer limit) at a time. ringline enables no
//! crypto provider: the user's `ServerConfig` and `ClientConfig` carry one.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ringline_core::Error;
use ringline_core::conn::{ConnectFuture, LayerFactory, StreamLayer, TlsInfo, connect_layered};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::RinglineBuilder;

thread_local! {
    /// The `tls_client` configuration of the runtime this worker thread belongs to.
    static CLIENT_CONFIG: RefCell<Option<Arc<ClientConfig>>> = const { RefCell::new(None) };
}

impl RinglineBuilder {
    /// Adds a TLS listener; repeatable. Each connection runs its handshake on its worker, bounded
    /// by `tls_handshake_timeout`, before `on_accept`; failed handshakes are closed (after
    /// rustls' alert, if any), counted in `tls_handshake_failures` and never reach the handler.
    pub fn bind_tls(mut self, addr: SocketAddr, cfg: Arc<ServerConfig>) -> Self {
        self.binds.push(addr);
        self.layers.push(Some(server_factory(cfg)));
        self
    }

    /// The client configuration used by [`connect_tls`] and [`connect_tls_with_timeout`].
    pub fn tls_client(mut self, cfg: Arc<ClientConfig>) -> Self {
        self.tls_client = Some(cfg);
        self
    }

    /// Installs this runtime's `tls_client` configuration on each worker thread.
    pub(crate) fn worker_init(&self) -> crate::launch::WorkerInit {
        let cfg = self.tls_client.clone();
        Arc::new(move || CLIENT_CONFIG.with(|c| *c.borrow_mut() = cfg.clone()))
    }
}

/// Connects to `addr` over TLS, verifying the server as `server_name`; resolves after the
/// handshake. `connect_timeout` (if set) covers the TCP connect and the handshake; the handshake
/// is also bounded by `tls_handshake_timeout`.
///
/// # Errors
/// As [`crate::connect`], plus `NotConfigured("tls_client")` without
/// [`RinglineBuilder::tls_client`], `InvalidInput` for a bad server name, `Tls(e)` when the
/// handshake fails, and `ConnectTimeout` when it takes too long.
pub fn connect_tls(addr: SocketAddr, server_name: &str) -> ConnectFuture {
    let name = server_name.to_owned();
    connect_layered(addr, None, Box::new(move || client_layer(name)))
}

/// [`connect_tls`] failing with `ConnectTimeout` when the connect and the handshake together take
/// longer than `t`.
pub fn connect_tls_with_timeout(addr: SocketAddr, server_name: &str, t: Duration) -> ConnectFuture {
    let name = server_name.to_owned();
    connect_layered(addr, Some(t), Box::new(move || client_layer(name)))
}

/// Builds the layer of an outbound connection from this worker's `tls_client` configuration.
fn client_layer(name: String) -> Result<Box<dyn StreamLayer>, Error> {
    let cfg = CLIENT_CONFIG.with(|c| c.borrow().clone()).ok_or(Error::NotConfigured("tls_client"))?;
    let server_name =
        ServerName::try_from(name.clone()).map_err(|_| Error::InvalidInput("invalid TLS server name"))?;
    let conn = ClientConnection::new(cfg, server_name).map_err(Error::Tls)?;
    Ok(Box::new(TlsLayer::new(Connection::Client(conn), Some(name))))
}

/// A factory building one server-side layer per accepted connection.
fn server_factory(cfg: Arc<ServerConfig>) -> LayerFactory {
    LayerFactory::new(move || {
        let conn = ServerConnection::new(cfg.clone()).map_err(Error::Tls)?;
        Ok(Box::new(TlsLayer::new(Connection::Server(conn), None)) as Box<dyn StreamLayer>)
    })
}

/// One connection's rustls state.
pub(crate) struct TlsLayer {
    conn: Connection,
    /// The name a client connected to (the server side reads the client's SNI from rustls).
    client_name: Option<String>,
    /// The peer's close_notify arrived.
    peer_closed: bool,
}

impl TlsLayer {
    fn new(conn: Connection, client_name: Option<String>) -> Self {
        TlsLayer { conn, client_name, peer_closed: false }
    }

    /// Moves every pending TLS record (handshake, alerts, application data) to `out`.
    fn write_out(&mut self, out: &mut dyn Write) -> Result<(), Error> {
        while self.conn.wants_write() {
            if self.conn.write_tls(out)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Appends every decrypted byte rustls holds to `plain`.
    fn read_plain(&mut self, available: usize, plain: &mut BytesMut) -> Result<(), Error> {
        let start = plain.len();
        plain.resize(start + available, 0);
        let mut got = 0;
        while got < available {
            match self.conn.reader().read(&mut plain[start + got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    plain.truncate(start + got);
                    return Err(Error::Io(e));
                }
            }
        }
        plain.truncate(start + got);
        Ok(())
    }
}

impl StreamLayer for TlsLayer {
    fn start(&mut self, out: &mut dyn Write) -> Result<(), Error> {
        self.write_out(out)
    }

    fn read_wire(&mut self, mut wire: &[u8], plain: &mut BytesMut, out: &mut dyn Write) -> Result<(), Error> {
        while !wire.is_empty() {
            // `&[u8]` reads advance the slice; `Ok(0)` after the peer's close_notify.
            if self.conn.read_tls(&mut wire)? == 0 {
                break;
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // rustls queued its alert: it goes out before the close.
                    let _ = self.write_out(out);
                    return Err(Error::Tls(e));
                }
            };
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                self.read_plain(available, plain)?;
            }
            self.peer_closed |= state.peer_has_closed();
            self.write_out(out)?;
        }
        Ok(())
    }

    fn write_plain(&mut self, mut plain: &[u8], out: &mut dyn Write) -> Result<(), Error> {
        while !plain.is_empty() {
            // Within rustls' buffer limit: each step is encrypted and moved to the queue at once.
            let n = self.conn.writer().write(plain)?;
            self.write_out(out)?;
            if n == 0 {
                return Err(Error::Closed);
            }
            plain = &plain[n..];
        }
        Ok(())
    }

    fn close(&mut self, out: &mut dyn Write) {
        self.conn.send_close_notify();
        let _ = self.write_out(out);
    }

    fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    fn tls_info(&self) -> Option<TlsInfo> {
        let server_name = match &self.conn {
            Connection::Server(s) => s.server_name().map(str::to_owned),
            Connection::Client(_) => self.client_name.clone(),
        };
        Some(TlsInfo::new(
            self.conn.protocol_version()?,
            self.conn.negotiated_cipher_suite()?.suite(),
            server_name,
            self.conn.alpn_protocol().map(<[u8]>::to_vec),
        ))
    }
}
