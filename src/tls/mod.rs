//! TLS for the endpoint and the webhook: the trust store (the system's, read the way OpenSSL
//! reads it, plus `upload.tls.ca_file`) and the client certificate, loaded into one rustls
//! configuration ([`ClientTls`]) that every https request of a configuration shares.
//!
//! Loaded when something is about to be sent (`run`, `scan`, `upload-test`) and again at
//! each reload, never by `config::parse` (which does no I/O) nor by the read-only commands.
//! A file that cannot be used is a configuration error naming its key ([`LoadError`], exit
//! 78; a reload keeps the running configuration). There is no switch that turns
//! verification off.
//!
//! `explain` words a failed handshake for the operator (untrusted issuer, name mismatch,
//! expired), `cert` reads a certificate's names and validity for messages, `probe` is
//! `check-config`'s handshake with the endpoint.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::{self, ConfigError, Problem};
use crate::layout::Show;

mod cert;
mod explain;
mod probe;

pub use cert::CertInfo;
pub use explain::{explain, explain_io};
pub use probe::{connect, handshake};

/// Where OpenSSL on Linux looks when `SSL_CERT_FILE` / `SSL_CERT_DIR` are not set: the
/// bundle of Debian and Ubuntu (also Arch, Gentoo), of RHEL and Fedora, of Alpine and
/// openSUSE; the hashed directory of Debian and Ubuntu. The first file that exists is used.
const DEFAULT_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];
const DEFAULT_DIRS: &[&str] = &["/etc/ssl/certs"];

/// The rustls configuration every https request of one configuration uses, and what went
/// into it (for `check-config` and the start-up log).
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// The trust anchors `config` verifies with (for `probe`'s recording verifier).
    roots: Arc<RootCertStore>,
    /// Trust anchors from the system store.
    pub system_roots: usize,
    /// Where they were read from: the bundle and directories actually used.
    pub system_from: Vec<PathBuf>,
    /// Problems reading the system store (a file named by `SSL_CERT_FILE` that is missing,
    /// an unreadable certificate in the directory). OpenSSL ignores them; `check-config`
    /// shows them.
    pub system_problems: Vec<String>,
    /// Trust anchors from `upload.tls.ca_file`.
    pub extra_roots: usize,
    /// The client certificate, when one is configured.
    pub client: Option<CertInfo>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("system_roots", &self.system_roots)
            .field("extra_roots", &self.extra_roots)
            .field("client", &self.client.as_ref().map(|c| &c.subject))
            .finish_non_exhaustive()
    }
}

/// A TLS file named by the config that cannot be used: which key, which file, why.
#[derive(Debug)]
pub struct LoadError {
    /// The dotted config key (`upload.tls.client_key`).
    pub key: &'static str,
    pub path: PathBuf,
    pub why: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.key, self.path.shown(), self.why)
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    /// As a configuration error of the file at `config_path` (exit 78).
    pub fn in_config(self, config_path: &Path) -> ConfigError {
        ConfigError {
            source_name: config_path.shown().to_string(),
            problems: vec![Problem {
                location: self.key.into(),
                message: format!("{}: {}", self.path.shown(), self.why),
            }],
        }
    }
}

impl ClientTls {
    /// Reads the system trust store, `ca_file` and the client certificate and key, and
    /// checks that the key belongs to the certificate.
    pub fn load(files: &config::Tls) -> Result<ClientTls, LoadError> {
        let mut roots = RootCertStore::empty();
        let system = system_store();
        let (system_roots, _) = roots.add_parsable_certificates(system.certs);
        let mut extra_roots = 0;
        if let Some(path) = &files.ca_file {
            let fail = |why: String| LoadError {
                key: "upload.tls.ca_file",
                path: path.clone(),
                why,
            };
            for (i, cert) in read_certs(path).map_err(fail)?.into_iter().enumerate() {
                roots.add(cert).map_err(|e| {
                    fail(format!(
                        "certificate {} is not usable as a CA certificate: {e}",
                        i + 1
                    ))
                })?;
                extra_roots += 1;
            }
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| LoadError {
                key: "upload.tls",
                path: PathBuf::new(),
                why: e.to_string(),
            })?
            .with_root_certificates(roots.clone());
        let (config, client) = match &files.client {
            None => (builder.with_no_client_auth(), None),
            Some(id) => {
                let chain = read_certs(&id.cert).map_err(|why| LoadError {
                    key: "upload.tls.client_cert",
                    path: id.cert.clone(),
                    why,
                })?;
                let info = CertInfo::read(&chain[0]);
                let key = read_key(&id.key).map_err(|why| LoadError {
                    key: "upload.tls.client_key",
                    path: id.key.clone(),
                    why,
                })?;
                let config = builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| key_problem(e, id))?;
                (config, info)
            }
        };
        Ok(ClientTls {
            config: Arc::new(config),
            roots,
            system_roots,
            system_from: system.from,
            system_problems: system.problems,
            extra_roots,
            client,
        })
    }

    /// One line for the log: what is trusted, what is presented.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "trusting {} CA certificate(s) of the system store",
            self.system_roots
        );
        if self.extra_roots > 0 {
            s += &format!(" and {} from upload.tls.ca_file", self.extra_roots);
        }
        if let Some(c) = &self.client {
            s += &format!("; client certificate {}", c.summary());
        }
        s
    }

    /// The configuration to hand to a request (`RequestBuilder::tls_config`).
    pub fn rustls(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// The key was read but rustls refuses it with that certificate.
fn key_problem(e: rustls::Error, id: &config::ClientIdentity) -> LoadError {
    let why = match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
            "does not belong to the certificate in upload.tls.client_cert ({})",
            id.cert.shown()
        ),
        e => format!("cannot be used: {e}"),
    };
    LoadError {
        key: "upload.tls.client_key",
        path: id.key.clone(),
        why,
    }
}

/// The system trust store as OpenSSL finds it: the bundle `SSL_CERT_FILE` names, else the
/// distribution's; and the directories `SSL_CERT_DIR` lists (`:`-separated), else the
/// distribution's. Either variable replaces only its own default, as in OpenSSL.
struct SystemStore {
    certs: Vec<CertificateDer<'static>>,
    from: Vec<PathBuf>,
    problems: Vec<String>,
}

fn system_store() -> SystemStore {
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let file = match env("SSL_CERT_FILE") {
        Some(f) => Some(PathBuf::from(f)),
        None => DEFAULT_FILES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file()),
    };
    let dirs: Vec<PathBuf> = match env("SSL_CERT_DIR") {
        Some(d) => std::env::split_paths(&d)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        None => DEFAULT_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .collect(),
    };
    let mut store = SystemStore {
        certs: Vec::new(),
        from: file.iter().chain(&dirs).cloned().collect(),
        problems: Vec::new(),
    };
    let mut load = |file: Option<&Path>, dir: Option<&Path>| {
        let r = rustls_native_certs::load_certs_from_paths(file, dir);
        store.certs.extend(r.certs);
        store
            .problems
            .extend(r.errors.iter().map(ToString::to_string));
    };
    if file.is_some() {
        load(file.as_deref(), None);
    }
    for dir in &dirs {
        load(None, Some(dir));
    }
    // The bundle and the hashed directory usually hold the same certificates.
    store
        .certs
        .sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
    store.certs.dedup();
    store
}

/// Every `CERTIFICATE` of a PEM file, in order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| cannot_read(&e))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The first private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| cannot_read(&e))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound if contains(&text, b"ENCRYPTED PRIVATE KEY") => {
            "holds an encrypted private key: sega-uploader needs it unencrypted \
             (openssl pkey -in KEY -out KEY.plain), readable by the sega user only"
                .into()
        }
        pem::Error::NoItemsFound => "holds no PEM private key (-----BEGIN PRIVATE KEY-----, \
                                     RSA PRIVATE KEY or EC PRIVATE KEY)"
            .into(),
        e => format!("not valid PEM: {e}"),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn cannot_read(e: &std::io::Error) -> String {
    format!("cannot read: {}", crate::error::describe_io(e))
}

#[cfg(test)]
mod tests;
