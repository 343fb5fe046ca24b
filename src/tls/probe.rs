//! `check-config`'s look at the endpoint's TLS: a connection and a handshake with the very
//! configuration the uploads use, and the certificate the server presented (subject,
//! issuer, expiry), shown also when it is refused, which is when an operator needs it.
//! Nothing is sent after the handshake. Through `upload.proxy`, the connection is a
//! `CONNECT` tunnel, as the uploads' are.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, SignatureScheme};

use super::{explain, explain_io, CertInfo, ClientTls};
use crate::config::Endpoint;

/// What the handshake came to.
#[derive(Debug)]
pub struct Handshake {
    /// The certificate the server presented, when there was one this reader understands.
    pub cert: Option<CertInfo>,
    /// The protocol and cipher suite (`TLSv1.3, TLS13_AES_256_GCM_SHA384`), or why the
    /// handshake failed, explained.
    pub result: Result<String, String>,
}

/// Connects to `host:port` (through `proxy`, if given) and shakes hands as an upload
/// would. `Err` when no connection could be made at all (cannot resolve, refused, timed
/// out, the proxy refused the tunnel).
pub fn handshake(
    tls: &ClientTls,
    host: &str,
    port: u16,
    proxy: Option<&Endpoint>,
    timeout: Duration,
) -> Result<Handshake, String> {
    let name = ServerName::try_from(host)
        .map_err(|_| format!("{host} is not a valid TLS server name"))?
        .to_owned();
    let mut sock = match proxy {
        None => connect(host, port, timeout)?,
        Some(p) => connect(&p.host, p.port, timeout)
            .map_err(|e| format!("proxy {}:{}: {e}", p.host, p.port))?,
    };
    let _ = sock.set_read_timeout(Some(timeout));
    let _ = sock.set_write_timeout(Some(timeout));
    if let Some(p) = proxy {
        tunnel(&mut sock, host, port, p)?;
    }

    let recorder = Arc::new(Recorder {
        inner: WebPkiServerVerifier::builder_with_provider(
            tls.roots.clone(),
            tls.config.crypto_provider().clone(),
        )
        .build()
        .map_err(|e| format!("TLS: {e}"))?,
        seen: Mutex::new(None),
    });
    let mut config = (*tls.config).clone();
    config
        .dangerous()
        .set_certificate_verifier(recorder.clone());
    let mut conn = ClientConnection::new(Arc::new(config), name).map_err(|e| explain(&e))?;
    let result = shake(&mut conn, &mut sock, timeout);
    let cert = recorder
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .and_then(|der| CertInfo::read(&der));
    if result.is_ok() {
        conn.send_close_notify();
        let _ = conn.write_tls(&mut sock);
    }
    Ok(Handshake { cert, result })
}

fn shake(
    conn: &mut ClientConnection,
    sock: &mut TcpStream,
    timeout: Duration,
) -> Result<String, String> {
    let failed = |e: io::Error| explain_io(&e).unwrap_or_else(|| crate::error::describe_io(&e));
    while conn.is_handshaking() {
        conn.complete_io(sock).map_err(failed)?;
    }
    // With TLS 1.3 the server judges our certificate after the client's last handshake
    // message: its refusal arrives as an alert just after. A moment's read catches it
    // (a server that accepted says nothing, or sends session tickets).
    let _ = sock.set_read_timeout(Some(timeout.min(Duration::from_secs(1))));
    let mut byte = [0u8; 1];
    match rustls::Stream::new(conn, sock).read(&mut byte) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        Err(e) => return Err(failed(e)),
    }
    let version = conn
        .protocol_version()
        .map_or("TLS".into(), |v| format!("{v:?}").replace('_', "."));
    let suite = conn
        .negotiated_cipher_suite()
        .map_or(String::new(), |s| format!(", {:?}", s.suite()));
    Ok(format!("{version}{suite}"))
}

/// `CONNECT host:port` through the proxy, as attohttpc does for an upload; the answer's
/// head is read a byte at a time, so nothing of the TLS that follows is taken.
fn tunnel(sock: &mut TcpStream, host: &str, port: u16, proxy: &Endpoint) -> Result<(), String> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = proxy.basic_auth() {
        head += &format!("Proxy-Authorization: {}\r\n", auth.expose());
    }
    head += "\r\n";
    let failed = |e: io::Error| format!("proxy: {}", crate::error::describe_io(&e));
    sock.write_all(head.as_bytes()).map_err(failed)?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() > 16 * 1024 || sock.read(&mut byte).map_err(failed)? == 0 {
            return Err("proxy: no answer to CONNECT".into());
        }
        answer.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&answer);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!(
            "the proxy answered CONNECT with HTTP {}{}",
            crate::layout::display_name(std::ffi::OsStr::new(status)),
            if status == "407" {
                " (proxy authentication: the user and password of upload.proxy)"
            } else {
                ""
            }
        ))
    }
}

/// A TCP connection to the first of `host`'s addresses that answers within `timeout`, or
/// why none did: `check-config`'s reachability lines and its handshake share it.
pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = crate::error::describe_io(&e),
        }
    }
    Err(last)
}

/// The verifier the uploads use, unchanged, which also keeps the certificate it was shown.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
