//! TLS 1.3 on the TCP links (`FERROCOLL_TLS=1`; cargo feature `tls`), with rustls.
//!
//! The mesh is formed as without TLS: every connection first passes the challenge–response
//! of [`super::setup`], so strangers are dropped before any TLS work. Then
//! [`TcpEndpoint::with_tls`] runs a TLS 1.3 handshake on every link (the rank that dialled is
//! the TLS client) and binds each session to the job's key:
//!
//! - Each endpoint presents a fresh self-signed certificate (rcgen). Certificates name no one
//!   a verifier could check, so they are not what authenticates the peer: the handshake's
//!   signatures are still verified, and the chain is not.
//! - Authentication is a channel binding instead. Both ends derive 32 bytes from the session
//!   (the TLS exporter, RFC 8446 §7.5, bound to both ranks and the world size) and send
//!   `HMAC(key, "client"|"server" ‖ exporter)` as their first application data. Only the two
//!   ends of one TLS session share an exporter, so someone in the middle who terminated TLS
//!   on both sides would need the job key to pass; the two directions use different words, so
//!   a proof cannot be reflected.
//! - After that every byte is encrypted and authenticated (AES-128-GCM first). A flipped or
//!   injected byte fails the record's check: the link reports [`LinkError::Protocol`], never
//!   wrong data.
//!
//! The links keep the contract of [`crate::link::Link`] on non-blocking sockets:
//! - [`Session::try_write`] counts bytes as written only once their records are all in the
//!   kernel. Records it could not hand over yet stay in the session, and the call answers
//!   `Ok(0)` until they are out; the caller then retries with the same bytes, as it does
//!   after a full socket, and gets the count. No accepted byte can thus be stranded in user
//!   space while its peer waits for it.
//! - [`Session::read`] comes back short only once the socket has nothing more (the same
//!   edge-triggered promise as a plain socket's read), so a caller that stops at a short read
//!   is woken by the next arrival.
//! - [`Session::flush`] pushes out records queued by the session itself (its answers to the
//!   peer's key updates); the endpoint calls it before it sleeps.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, Connection, DigitallySignedStruct, ServerConfig};
use rustls::{ServerConnection, SignatureScheme};

use super::{is_disconnect, TcpEndpoint};
use crate::auth::{JobKey, PROOF_BYTES};
use crate::link::LinkError;

/// Whether this build can run TLS on its TCP links.
pub const AVAILABLE: bool = true;

/// Plaintext bytes one [`Session::try_write`] encrypts at most (16 records).
const WRITE_CHUNK: usize = 256 << 10;
/// What the channel-binding proofs are bound to (with the ranks and world size).
const BINDING_LABEL: &[u8] = b"ferrocoll tls binding";
/// The TLS exporter label of the binding (RFC 8446 §7.5).
const EXPORTER_LABEL: &[u8] = b"EXPORTER-ferrocoll-link";
/// The name the client asks for; no certificate is checked against it (see the module docs).
const SERVER_NAME: &str = "ferrocoll";
/// How often the handshake loop looks at every link even without events.
const TICK: Duration = Duration::from_millis(50);

/// One link's TLS session. See the module docs.
pub struct Session {
    conn: Connection,
    /// Plaintext bytes taken by [`Session::try_write`] whose records are not all in the
    /// kernel yet: reported once they are.
    unreported: usize,
    /// The socket returned end-of-file: nothing more to read from it.
    tcp_eof: bool,
}

fn protocol(peer: usize, detail: impl Into<String>) -> LinkError {
    LinkError::Protocol {
        peer,
        detail: detail.into(),
    }
}

fn tls_err(peer: usize, e: rustls::Error) -> LinkError {
    protocol(peer, format!("TLS: {e}"))
}

impl Session {
    /// Writes the session's queued records to `stream` until they are out or the socket is
    /// full; `eof` is set when the peer is gone.
    fn push(
        &mut self,
        stream: &mut TcpStream,
        eof: &mut bool,
        peer: usize,
    ) -> Result<(), LinkError> {
        while self.conn.wants_write() {
            match self.conn.write_tls(stream) {
                Ok(0) => {
                    *eof = true;
                    return Err(LinkError::Closed { peer });
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_disconnect(&e) => {
                    *eof = true;
                    return Err(LinkError::Closed { peer });
                }
                Err(source) => return Err(LinkError::Io { peer, source }),
            }
        }
        Ok(())
    }

    /// Pushes out what the session has queued, as far as the socket takes it; errors are
    /// left for the next read or write to report.
    pub fn flush(&mut self, stream: &mut TcpStream, eof: &mut bool, peer: usize) {
        let _ = self.push(stream, eof, peer);
    }

    /// [`crate::link::Link::try_write`] through the session (see the module docs).
    pub fn try_write(
        &mut self,
        stream: &mut TcpStream,
        eof: &mut bool,
        peer: usize,
        buf: &[u8],
    ) -> Result<usize, LinkError> {
        self.push(stream, eof, peer)?;
        if self.conn.wants_write() {
            return Ok(0);
        }
        if self.unreported > 0 {
            let n = std::mem::take(&mut self.unreported);
            if buf.len() < n {
                return Err(protocol(
                    peer,
                    format!(
                        "TLS link: {n} bytes were taken, the retry offers {}",
                        buf.len()
                    ),
                ));
            }
            return Ok(n);
        }
        let k = buf.len().min(WRITE_CHUNK);
        let n = match self.conn.writer().write(&buf[..k]) {
            Ok(n) => n,
            Err(source) => return Err(LinkError::Io { peer, source }),
        };
        self.push(stream, eof, peer)?;
        if self.conn.wants_write() {
            self.unreported = n;
            return Ok(0);
        }
        Ok(n)
    }

    /// Reads plaintext into `dst`: short only once the socket has nothing more; `eof` is set
    /// when the peer closed (a close alert, or the socket's end).
    pub fn read(
        &mut self,
        stream: &mut TcpStream,
        eof: &mut bool,
        peer: usize,
        dst: &mut [u8],
    ) -> Result<usize, LinkError> {
        let mut got = 0;
        loop {
            if got == dst.len() {
                return Ok(got);
            }
            match self.conn.reader().read(&mut dst[got..]) {
                Ok(0) => {
                    // The peer's close alert: nothing more will come.
                    *eof = true;
                    return Ok(got);
                }
                Ok(n) => {
                    got += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    *eof = true;
                    return Ok(got);
                }
                Err(source) => return Err(LinkError::Io { peer, source }),
            }
            if self.tcp_eof {
                *eof = true;
                return Ok(got);
            }
            match self.conn.read_tls(stream) {
                Ok(0) => self.tcp_eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_disconnect(&e) => self.tcp_eof = true,
                Err(source) => return Err(LinkError::Io { peer, source }),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the peer why (a queued alert), then report it.
                self.flush(stream, eof, peer);
                return Err(tls_err(peer, e));
            }
            // The peer's key update asks for ours.
            if self.conn.wants_write() {
                self.flush(stream, eof, peer);
            }
        }
    }

    /// Sends the close alert (best effort) before the socket is shut down.
    pub fn close(&mut self, stream: &mut TcpStream, eof: &mut bool, peer: usize) {
        self.conn.send_close_notify();
        self.flush(stream, eof, peer);
    }
}

/// Accepts any server certificate but checks the handshake's signatures: the peer is
/// authenticated by the channel binding (see the module docs), not by its certificate.
#[derive(Debug)]
struct BoundByKey(Arc<CryptoProvider>);

impl ServerCertVerifier for BoundByKey {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client and server configurations of one endpoint: TLS 1.3 only, AES-128-GCM
/// preferred, a fresh self-signed certificate, no session tickets.
fn configs(rank: usize) -> Result<(Arc<ClientConfig>, Arc<ServerConfig>), LinkError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| protocol(rank, format!("TLS {what}: {e}"));
    let mut p = provider::default_provider();
    p.cipher_suites = vec![
        provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
        provider::cipher_suite::TLS13_AES_256_GCM_SHA384,
        provider::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let p = Arc::new(p);
    let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .map_err(|e| fail("certificate", &e))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let mut server = ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| fail("server configuration", &e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(|e| fail("server configuration", &e))?;
    server.send_tls13_tickets = 0;
    let client = ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| fail("client configuration", &e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(BoundByKey(p)))
        .with_no_client_auth();
    Ok((Arc::new(client), Arc::new(server)))
}

/// The label the binding proofs of the link between `client` and `server` are bound to.
fn binding_label(client: usize, server: usize, world: usize) -> Vec<u8> {
    let mut l = BINDING_LABEL.to_vec();
    for v in [client, server, world] {
        l.extend_from_slice(&(v as u64).to_le_bytes());
    }
    l
}

/// One link's handshake in progress.
struct Pending {
    peer: usize,
    session: Session,
    /// This side dialled: the TLS client.
    client: bool,
    label: Vec<u8>,
    sent_proof: bool,
    proof: [u8; PROOF_BYTES],
    got: usize,
}

impl Pending {
    /// Moves the handshake as far as the socket allows: `Ok(true)` once the peer's binding
    /// proof checked out and ours is out.
    fn progress(&mut self, stream: &mut TcpStream, key: &JobKey) -> Result<bool, LinkError> {
        let peer = self.peer;
        let mut eof = false;
        loop {
            self.session.push(stream, &mut eof, peer)?;
            if !self.session.conn.is_handshaking() && !self.sent_proof {
                let exporter = self
                    .session
                    .conn
                    .export_keying_material([0u8; 32], EXPORTER_LABEL, Some(&self.label))
                    .map_err(|e| tls_err(peer, e))?;
                let side: &[u8] = if self.client { b"client" } else { b"server" };
                let proof = key.tag(&self.label, &[side, &exporter[..]].concat());
                self.session
                    .conn
                    .writer()
                    .write_all(&proof)
                    .map_err(|source| LinkError::Io { peer, source })?;
                self.sent_proof = true;
                continue;
            }
            if self.sent_proof && self.got < PROOF_BYTES {
                match self.session.conn.reader().read(&mut self.proof[self.got..]) {
                    Ok(0) => return Err(LinkError::Closed { peer }),
                    Ok(n) => {
                        self.got += n;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Err(LinkError::Closed { peer })
                    }
                    Err(source) => return Err(LinkError::Io { peer, source }),
                }
            }
            if self.got == PROOF_BYTES {
                let exporter = self
                    .session
                    .conn
                    .export_keying_material([0u8; 32], EXPORTER_LABEL, Some(&self.label))
                    .map_err(|e| tls_err(peer, e))?;
                let side: &[u8] = if self.client { b"server" } else { b"client" };
                let message = [side, &exporter[..]].concat();
                if !key.verify_tag(&self.label, &message, &self.proof) {
                    return Err(protocol(
                        peer,
                        "TLS: the peer's session is not bound to the job's key (someone in \
                         the middle, or another job)",
                    ));
                }
                return Ok(!self.session.conn.wants_write());
            }
            match self.session.conn.read_tls(stream) {
                Ok(0) => return Err(LinkError::Closed { peer }),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(LinkError::Io { peer, source }),
            }
            if let Err(e) = self.session.conn.process_new_packets() {
                self.session.flush(stream, &mut eof, peer);
                return Err(tls_err(peer, e));
            }
        }
    }
}

impl TcpEndpoint {
    /// Runs TLS on every link of this endpoint (see the module docs): the handshakes and the
    /// channel bindings of all links together, within `timeout`. Every rank of the mesh must
    /// call it; a peer that does not, or fails the binding, gives an error naming it.
    pub fn with_tls(mut self, key: &JobKey, timeout: Duration) -> Result<TcpEndpoint, LinkError> {
        let (client_cfg, server_cfg) = configs(self.rank)?;
        let (rank, world) = (self.rank, self.world);
        let mut pending = Vec::new();
        for (peer, l) in self.links.iter().enumerate() {
            if l.is_none() {
                continue;
            }
            // The rank that dialled (the higher one, see `setup`) is the TLS client.
            let client = peer < rank;
            let conn: Connection = if client {
                let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
                ClientConnection::new(client_cfg.clone(), name)
                    .map_err(|e| tls_err(peer, e))?
                    .into()
            } else {
                ServerConnection::new(server_cfg.clone())
                    .map_err(|e| tls_err(peer, e))?
                    .into()
            };
            let (c, s) = if client { (rank, peer) } else { (peer, rank) };
            pending.push(Pending {
                peer,
                session: Session {
                    conn,
                    unreported: 0,
                    tcp_eof: false,
                },
                client,
                label: binding_label(c, s, world),
                sent_proof: false,
                proof: [0; PROOF_BYTES],
                got: 0,
            });
        }
        let deadline = Instant::now() + timeout;
        while !pending.is_empty() {
            let mut i = 0;
            while i < pending.len() {
                let peer = pending[i].peer;
                let link = self.links[peer]
                    .as_mut()
                    .expect("a link to every pending peer");
                if pending[i].progress(&mut link.stream, key)? {
                    let p = pending.swap_remove(i);
                    link.tls = Some(Box::new(p.session));
                } else {
                    i += 1;
                }
            }
            if pending.is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                let peers: Vec<usize> = pending.iter().map(|p| p.peer).collect();
                return Err(LinkError::Io {
                    peer: peers[0],
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "rank {rank}: no TLS session with ranks {peers:?} within {timeout:?}"
                        ),
                    ),
                });
            }
            let sleep = deadline.saturating_duration_since(now).min(TICK);
            match self.poll.poll(&mut self.events, Some(sleep)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(LinkError::Io { peer: rank, source }),
            }
        }
        Ok(self)
    }
}
