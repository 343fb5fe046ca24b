//! HTTPS for the tests: a throwaway PKI made on the spot ([`Ca`]: server and client
//! certificates, current, expired or for another name) and [`TlsFront`], a loopback TLS
//! listener that shakes hands with rustls and forwards the plaintext to a [`crate::Server`],
//! so that the plain endpoint's request log and fault modes serve https as they are.
//!
//! A handshake the front refuses never reaches the endpoint: no connection to it is opened
//! until the handshake is complete, so "nothing was sent" reads as an empty request log.
//! What went wrong is kept ([`TlsFront::handshake_errors`]).
//!
//! Threads: `testsrv-tls-accept`, and per connection one thread that shakes hands and then
//! carries client → endpoint, plus one that carries endpoint → client. Dropping the front
//! stops accepting and shuts every open socket down.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{HandshakeKind, RootCertStore, ServerConfig, ServerConnection};
use time::OffsetDateTime;

/// A certificate authority made for one test; it signs server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate, PEM: what `upload.tls.ca_file` or `SSL_CERT_FILE` names.
    pub pem: String,
}

/// When an issued certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday for 30 days.
    Current,
    /// Ended yesterday.
    Expired,
    /// Starts tomorrow.
    NotYetValid,
}

/// A certificate with its key, PEM and DER.
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl Ca {
    /// A new CA whose subject is `O=sega-uploader tests, CN=<name>`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "sega-uploader tests");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (not_before, not_after) = span(Validity::Current);
        params.not_before = not_before;
        params.not_after = not_after + time::Duration::days(365);
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// The CA's certificate, DER.
    pub fn der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// A server certificate for `names` (DNS names or IP addresses), `CN=` the first.
    pub fn server_cert(&self, names: &[&str], validity: Validity) -> Issued {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("certificate params");
        params.distinguished_name = DistinguishedName::new();
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        self.sign(params, ExtendedKeyUsagePurpose::ServerAuth, validity)
    }

    /// A client certificate whose subject is `CN=<name>`.
    pub fn client_cert(&self, name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        self.sign(
            params,
            ExtendedKeyUsagePurpose::ClientAuth,
            Validity::Current,
        )
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Issued {
        params.extended_key_usages = vec![usage];
        (params.not_before, params.not_after) = span(validity);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }
}

fn span(validity: Validity) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    match validity {
        Validity::Current => (now - day, now + 30 * day),
        Validity::Expired => (now - 30 * day, now - day),
        Validity::NotYetValid => (now + day, now + 30 * day),
    }
}

/// The TLS listener in front of a test endpoint.
pub struct TlsFront {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    stopping: AtomicBool,
    next_id: AtomicU64,
    /// Every open socket (client side, endpoint side), so that stopping can unblock them.
    conns: Mutex<HashMap<u64, Vec<TcpStream>>>,
    /// Handshakes that failed, each as `rustls`'s error text.
    errors: Mutex<Vec<String>>,
    /// Handshakes that completed.
    handshakes: AtomicU64,
    /// Of those, the ones that resumed an earlier session (no certificate sent).
    resumed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TlsFront {
    /// Listens on 127.0.0.1 with `cert` and forwards each connection, once its handshake
    /// is complete, to `backend`. With `client_ca`, a client certificate it issued is
    /// required.
    pub fn start(
        backend: SocketAddr,
        cert: &Issued,
        client_ca: Option<&Ca>,
    ) -> io::Result<TlsFront> {
        TlsFront::start_at("127.0.0.1:0", backend, cert, client_ca)
    }

    /// As [`TlsFront::start`], listening on `listen` (a loopback address, e.g.
    /// `127.0.0.1:8443`).
    pub fn start_at(
        listen: &str,
        backend: SocketAddr,
        cert: &Issued,
        client_ca: Option<&Ca>,
    ) -> io::Result<TlsFront> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots
                    .add(CertificateDer::from(ca.der()))
                    .map_err(io::Error::other)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(io::Error::other)?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::try_from(cert.key_der.clone()).map_err(io::Error::other)?;
        let config = Arc::new(
            builder
                .with_single_cert(vec![CertificateDer::from(cert.cert_der.clone())], key)
                .map_err(io::Error::other)?,
        );
        let listener = crate::bind_loopback(listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            errors: Mutex::new(Vec::new()),
            handshakes: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let acceptor = thread::Builder::new()
            .name("testsrv-tls-accept".into())
            .spawn(move || accept(listener, backend, config, sh))?;
        Ok(TlsFront {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<host>:PORT/upload`: `host` as the client should name the server
    /// (`127.0.0.1`, or `localhost` for a certificate issued to that name).
    pub fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/upload", self.addr.port())
    }

    /// Why each refused handshake failed, as rustls said it, in order.
    pub fn handshake_errors(&self) -> Vec<String> {
        lock(&self.shared.errors).clone()
    }

    /// Handshakes completed so far.
    pub fn handshakes(&self) -> u64 {
        self.shared.handshakes.load(Ordering::Relaxed)
    }

    /// Handshakes completed so far that resumed a session.
    pub fn resumed_handshakes(&self) -> u64 {
        self.shared.resumed.load(Ordering::Relaxed)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        for socks in lock(&self.shared.conns).values() {
            for s in socks {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn accept(listener: TcpListener, backend: SocketAddr, config: Arc<ServerConfig>, sh: Arc<Shared>) {
    for sock in listener.incoming() {
        if sh.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(sock) = sock else { continue };
        let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = sock.try_clone() {
            lock(&sh.conns).insert(id, vec![clone]);
        }
        let (config, sh2) = (config.clone(), sh.clone());
        let spawned = thread::Builder::new()
            .name(format!("testsrv-tls-{id}"))
            .spawn(move || {
                serve(sock, backend, config, &sh2, id);
                lock(&sh2.conns).remove(&id);
            });
        if spawned.is_err() {
            lock(&sh.conns).remove(&id);
        }
    }
}

/// One connection: the handshake, then plaintext both ways until either side closes.
fn serve(
    mut sock: TcpStream,
    backend: SocketAddr,
    config: Arc<ServerConfig>,
    sh: &Shared,
    id: u64,
) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
    // A relay must not hold back a small record (a handshake flight, the end of an answer)
    // for Nagle's algorithm: the endpoint itself answers with TCP_NODELAY too.
    let _ = sock.set_nodelay(true);
    let Ok(mut conn) = ServerConnection::new(config) else {
        return;
    };
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            lock(&sh.errors).push(e.to_string());
            // Send the alert that says why, then close.
            let _ = conn.write_tls(&mut sock);
            return;
        }
    }
    sh.handshakes.fetch_add(1, Ordering::Relaxed);
    if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
        sh.resumed.fetch_add(1, Ordering::Relaxed);
    }
    let _ = sock.set_read_timeout(None);
    let Ok(mut up) = TcpStream::connect(backend) else {
        return;
    };
    let _ = up.set_nodelay(true);
    if let Ok(c) = up.try_clone() {
        lock(&sh.conns).entry(id).or_default().push(c);
    }
    let conn = Arc::new(Mutex::new(conn));
    // Plaintext that arrived with the client's last handshake flight.
    let early = drain(&mut lock(&conn));
    if up.write_all(&early).is_err() {
        return;
    }
    let (Ok(down_sock), Ok(mut up_read)) = (sock.try_clone(), up.try_clone()) else {
        return;
    };
    let conn2 = conn.clone();
    // Endpoint → client.
    let back = thread::Builder::new()
        .name(format!("testsrv-tls-{id}-back"))
        .spawn(move || {
            let mut sock = down_sock;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match up_read.read(&mut buf) {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                let mut c = lock(&conn2);
                if n == 0 {
                    c.send_close_notify();
                } else if c.writer().write_all(&buf[..n]).is_err() {
                    break;
                }
                let flushed = flush(&mut c, &mut sock);
                drop(c);
                if n == 0 || flushed.is_err() {
                    break;
                }
            }
            let _ = sock.shutdown(Shutdown::Write);
        });
    // Client → endpoint. rustls holds at most 16 KiB of received plaintext (more and
    // `read_tls` refuses the next record), so what each record decrypts to is taken out
    // before the next is fed: a big upload arrives in 64 KiB reads of several records.
    let mut buf = vec![0u8; 64 * 1024];
    let mut plain = Vec::with_capacity(128 * 1024);
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        plain.clear();
        let failed = {
            let mut c = lock(&conn);
            let mut input = &buf[..n];
            let mut failed = false;
            while !input.is_empty() && !failed {
                failed = c.read_tls(&mut input).is_err() || c.process_new_packets().is_err();
                drain_into(&mut c, &mut plain);
            }
            let _ = flush(&mut c, &mut sock);
            failed
        };
        // Outside the lock: the endpoint may be answering through the other thread.
        if up.write_all(&plain).is_err() || failed {
            break;
        }
    }
    let _ = up.shutdown(Shutdown::Write);
    if let Ok(h) = back {
        let _ = h.join();
    }
}

/// Every plaintext byte rustls holds.
fn drain(conn: &mut ServerConnection) -> Vec<u8> {
    let mut out = Vec::new();
    drain_into(conn, &mut out);
    out
}

/// Every plaintext byte rustls holds, appended to `out`.
fn drain_into(conn: &mut ServerConnection, out: &mut Vec<u8>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.reader().read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn flush(conn: &mut ServerConnection, sock: &mut TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    Ok(())
}
