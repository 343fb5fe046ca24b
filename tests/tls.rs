//! HTTPS and URL credentials (issue 15): uploads over TLS to the loopback endpoint behind a
//! TLS front with a CA made for the test; a certificate problem keeps files pending with a
//! WARN that names the cause and sends nothing; a client certificate when the server asks;
//! `user:password@` of the URL sent as Basic auth; `check-config` showing all of it.

use std::path::PathBuf;

use crate::util::*;
use sega_testsrv::tls::{Ca, Issued, TlsFront, Validity};
use serde_json::json;

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(16, 16, seed)
}

/// The endpoint behind https, with a certificate `cert` issued by `ca`.
struct Https {
    ca: Ca,
    front: TlsFront,
}

impl Https {
    /// `names`: what the server's certificate is for.
    fn new(env: &Env, names: &[&str], validity: Validity, client_ca: bool) -> Https {
        let ca = Ca::new("sega test CA");
        let cert = ca.server_cert(names, validity);
        let front = TlsFront::start(env.server.addr(), &cert, client_ca.then_some(&ca)).unwrap();
        let url = front.url("127.0.0.1").replacen(
            "https://",
            &format!("https://sega:{}@", SECRETS[0]),
            1,
        );
        env.set("/upload/url", json!(url));
        Https { ca, front }
    }

    /// Writes the CA's certificate into the test tree: its path.
    fn ca_file(&self, env: &Env) -> PathBuf {
        write(env, "ca.pem", &self.ca.pem)
    }
}

fn write(env: &Env, name: &str, text: &str) -> PathBuf {
    let p = env.dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn client_files(env: &Env, id: &Issued) -> (PathBuf, PathBuf) {
    (
        write(env, "client.pem", &id.cert_pem),
        write(env, "client.key", &id.key_pem),
    )
}

/// Three files, the daemon, and the outage it must report: every file still pending, no
/// request at the endpoint, the WARN naming `cause`.
fn refused(env: &Env, https: &Https, cause: &str) {
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    for i in 0..3 {
        env.put("Sega_1", format!("t{i}.jpg"), &jpeg(i));
    }
    d.wait_log("is down");
    let log = d.log_text();
    let warn = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("is down"))
        .unwrap_or_else(|| panic!("no WARN that the endpoint is down: {log}"));
    assert!(
        warn.contains(cause),
        "the WARN names the cause ({cause}): {warn}"
    );
    wait_until("three attempts recorded", DEADLINE, || {
        env.rows().iter().filter(|r| r.attempts >= 1).count() == 3
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    let rows = env.rows();
    assert!(
        rows.iter().all(|r| r.status == "pending"),
        "a certificate problem is the endpoint's, never the file's: {rows:?}"
    );
    assert!(rows.iter().all(|r| r
        .last_error
        .as_deref()
        .is_some_and(|e| e.starts_with("TLS: "))));
    assert_eq!(env.server.request_count(), 0, "nothing was sent");
    assert_eq!(https.front.handshakes(), 0);
}

#[test]
fn a_private_ca_in_ca_file_is_trusted_and_credentials_go_as_basic_auth() {
    let env = Env::new("tls-ca-file");
    let https = Https::new(&env, &["127.0.0.1"], Validity::Current, false);
    env.set("/upload/tls/ca_file", json!(https.ca_file(&env)));
    env.put("Sega_1", "a.jpg", &jpeg(1));
    env.put("Sega_2", "b.jpg", &jpeg(2));
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(env.count_status("uploaded"), 2);
    let sent = env.successful_uploads();
    assert_eq!(sent.len(), 2);
    // Over TLS: a worker keeps its connection, so the two may share one.
    assert!(https.front.handshakes() >= 1);
    // `sega:<password>` of the URL, on the wire as Basic auth.
    let basic = format!("Basic {}", base64(&format!("sega:{}", SECRETS[0])));
    for r in &sent {
        assert_eq!(r.header("Authorization"), Some(basic.as_str()));
    }
}

/// A worker keeps its TLS connection for its next upload: 24 files go over fewer
/// handshakes than files (4 workers; a worker idle for over 1 s on a loaded machine opens
/// another), each file once.
#[test]
fn uploads_over_https_reuse_their_connections() {
    let env = Env::new("tls-keep");
    let https = Https::new(&env, &["127.0.0.1"], Validity::Current, false);
    env.set("/upload/tls/ca_file", json!(https.ca_file(&env)));
    for i in 0..24 {
        env.put(
            &format!("Sega_{}", i % 3 + 1),
            format!("k{i}.jpg"),
            &jpeg(100 + i),
        );
    }
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(env.count_status("uploaded"), 24);
    assert_eq!(env.server.request_count(), 24, "a request went twice");
    let handshakes = https.front.handshakes();
    assert!(
        (1..24).contains(&handshakes),
        "{handshakes} TLS handshakes for 24 uploads: no connection was kept"
    );
}

/// An answer the endpoint sends before it has read the body, closing on the rest (a 413),
/// is the result over https too: the TLS records the failed write left unsent are dropped
/// before the answer is read (vendor patch 6).
#[test]
fn an_early_answer_over_https_is_the_result() {
    let env = Env::new("tls-early");
    let https = Https::new(&env, &["127.0.0.1"], Validity::Current, false);
    env.set("/upload/tls/ca_file", json!(https.ca_file(&env)));
    env.scan_a_big_file_refused_by_its_head();
}

#[test]
fn ssl_cert_file_is_the_system_trust_store() {
    let env = Env::new("tls-ssl-cert-file");
    let https = Https::new(&env, &["127.0.0.1"], Validity::Current, false);
    let ca = https.ca_file(&env);
    env.put("Sega_1", "a.jpg", &jpeg(1));
    // Without it the CA is unknown: the file stays pending.
    let o = env.capture(out(env
        .cmd(&["scan"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap()));
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(env.count_status("pending"), 1);
    // With it (once the file's retry is due): uploaded.
    wait_until("the upload trusted through SSL_CERT_FILE", DEADLINE, || {
        let o = env.capture(out(env
            .cmd(&["scan"])
            .env("SSL_CERT_FILE", &ca)
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap()));
        o.code == 0
    });
    assert_eq!(env.count_status("uploaded"), 1);
    assert_eq!(env.successful_uploads().len(), 1);
}

#[test]
fn an_untrusted_certificate_keeps_files_pending() {
    let env = Env::new("tls-untrusted");
    let https = Https::new(&env, &["127.0.0.1"], Validity::Current, false);
    refused(&env, &https, "not trusted (unknown issuer)");
    // The client gave up on the handshake; the server saw why.
    let errors = https.front.handshake_errors();
    assert!(!errors.is_empty());
}

#[test]
fn a_certificate_for_another_name_keeps_files_pending() {
    let env = Env::new("tls-wrong-name");
    let https = Https::new(&env, &["other.example"], Validity::Current, false);
    env.set("/upload/tls/ca_file", json!(https.ca_file(&env)));
    refused(
        &env,
        &https,
        "not valid for 127.0.0.1 (name mismatch: it is for other.example)",
    );
}

#[test]
fn an_expired_certificate_keeps_files_pending() {
    let env = Env::new("tls-expired");
    let https = Https::new(&env, &["127.0.0.1"], Validity::Expired, false);
    env.set("/upload/tls/ca_file", json!(https.ca_file(&env)));
    refused(&env, &https, "expired on");
}

/// The server requires a client certificate: without one nothing is sent; with one (given
/// by a reload, the daemon kept running) the pending files go.
#[test]
fn a_client_certificate_is_presented_when_the_server_requires_one() {
    let env = Env::new("tls-client-cert");
    let https = Https::new(&env, &["127.0.0.1"], Validity::Current, true);
    env.set("/upload/tls/ca_file", json!(https.ca_file(&env)));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    for i in 0..3 {
        env.put("Sega_1", format!("c{i}.jpg"), &jpeg(i));
    }
    d.wait_log("is down");
    // "is down" is logged while the report that tipped it is judged, before its result
    // is saved: the third row may still say uploading for a moment.
    wait_until("three pending", DEADLINE, || {
        env.count_status("pending") == 3
    });
    assert_eq!(env.server.request_count(), 0, "nothing was sent");
    assert!(
        https
            .front
            .handshake_errors()
            .iter()
            .any(|e| e.contains("no certificates")),
        "{:?}",
        https.front.handshake_errors()
    );
    let (cert, key) = client_files(&env, &https.ca.client_cert("camera-host-1"));
    env.set("/upload/tls/client_cert", json!(cert));
    env.set("/upload/tls/client_key", json!(key));
    d.signal(libc::SIGHUP);
    d.wait_log("configuration reloaded");
    wait_until("three uploads", DEADLINE, || {
        env.count_status("uploaded") == 3
    });
    assert!(https.front.handshakes() >= 1);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

#[test]
fn a_header_authorization_wins_over_url_credentials() {
    let env = Env::new("basic-auth-header");
    env.set(
        "/upload/headers",
        json!({ "X-Api-Key": SECRETS[1], "authorization": format!("Token {}", SECRETS[1]) }),
    );
    env.put("Sega_1", "a.jpg", &jpeg(1));
    assert_eq!(env.run(&["scan"]).code, 0);
    let sent = env.successful_uploads();
    let auth: Vec<_> = sent[0]
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(auth, [format!("Token {}", SECRETS[1])]);
}

#[test]
fn check_config_shows_the_endpoint_certificate_and_checks_the_files() {
    let env = Env::new("tls-check-config");
    let https = Https::new(&env, &["127.0.0.1"], Validity::Current, false);
    // Untrusted: the handshake fails, and the line says what was presented.
    let o = env.run(&["check-config"]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    let line = tls_line(&o.stdout);
    assert!(
        line.starts_with("fail") && line.contains("not trusted (unknown issuer)"),
        "{line}"
    );
    assert!(
        line.contains("it presented subject CN=127.0.0.1, issuer O=sega-uploader tests, CN=sega test CA, expires 2"),
        "{line}"
    );
    // Trusted: protocol, subject, issuer, expiry.
    env.set("/upload/tls/ca_file", json!(https.ca_file(&env)));
    let o = env.run(&["check-config"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let line = tls_line(&o.stdout);
    assert!(
        line.starts_with("ok") && line.contains("TLSv1.3, TLS13_"),
        "{line}"
    );
    assert!(
        line.contains("certificate subject CN=127.0.0.1, issuer O=sega-uploader tests, CN=sega test CA, expires 2"),
        "{line}"
    );
    assert!(
        o.stdout.contains("1 from upload.tls.ca_file"),
        "{}",
        o.stdout
    );
    // A key that belongs to another certificate: named, offline too.
    let (cert, _) = client_files(&env, &https.ca.client_cert("a"));
    let other = write(&env, "other.key", &https.ca.client_cert("b").key_pem);
    env.set("/upload/tls/client_cert", json!(cert));
    env.set("/upload/tls/client_key", json!(other));
    let o = env.run(&["check-config", "--offline"]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("fail upload.tls.client_key: ")
                && l.contains("does not belong to the certificate")),
        "{}",
        o.stdout
    );
    // ... and `run` refuses that config (exit 78) naming the key.
    let o = env.run(&["run"]);
    assert_eq!(o.code, 78, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("upload.tls.client_key"), "{}", o.stderr);
    // The matching key: the client certificate's line.
    let (cert, key) = client_files(&env, &https.ca.client_cert("camera-host-1"));
    env.set("/upload/tls/client_cert", json!(cert));
    env.set("/upload/tls/client_key", json!(key));
    let o = env.run(&["check-config", "--offline"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("ok   TLS client certificate: ")
                && l.contains("subject CN=camera-host-1, issuer O=sega-uploader tests")
                && l.contains("belongs to it")),
        "{}",
        o.stdout
    );
}

#[test]
fn tls_keys_are_config_errors_at_their_key() {
    let env = Env::new("tls-config-errors");
    env.set(
        "/upload/tls",
        json!({ "client_cert": "/etc/sega/client.pem" }),
    );
    for args in [&["check-config"][..], &["run"], &["status"]] {
        let o = env.run(args);
        assert_eq!(o.code, 78, "{args:?}: {}\n{}", o.stdout, o.stderr);
        assert!(
            o.stderr.contains("upload.tls.client_key: required"),
            "{}",
            o.stderr
        );
    }
}

/// The `TLS <host>:<port>` line of check-config's output.
fn tls_line(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| {
            l.get(4..)
                .is_some_and(|rest| rest.trim_start().starts_with("TLS 127.0.0.1:"))
        })
        .unwrap_or_else(|| panic!("no TLS line: {stdout}"))
        .to_string()
}

/// Standard base64 (RFC 4648), for the Basic credentials the tests expect on the wire.
pub(crate) fn base64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
