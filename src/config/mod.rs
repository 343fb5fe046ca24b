//! The configuration file (DESIGN §6): JSON text in, a validated, typed [`Config`] out, and
//! the effective configuration rendered back with every secret redacted.
//!
//! [`parse`] does no I/O and is what the unit tests call; [`load`] adds reading the file and
//! [`resolve_path`] picks which file (`-c` > `$SEGA_CONFIG` > [`DEFAULT_PATH`]). `main`/`cli`
//! load it at start-up (exit 78 on a [`ConfigError`]), `check-config` prints
//! [`Config::redacted_json`], and the daemon loads it again on SIGHUP, refusing an invalid
//! file and using [`Config::restart_needed`] to say what a reload cannot apply.
//! After this module nothing re-parses a config string: durations are `Duration`s, the URL is
//! an [`Endpoint`], field values are parsed [`Template`]s, folders are absolute paths.
//!
//! Validation walks the `serde_json::Value` by hand instead of deriving `Deserialize`, so
//! that every problem (unknown key, wrong type, broken rule) is reported in one go, each
//! named by its dotted key (`watch.folders[1]`); bad JSON is named by line and column.
//! `preserve_order` keeps object order, which `upload.fields` and `upload.headers` rely on.
//!
//! Secrets (DESIGN §6) are every `upload.headers` value, credentials in any URL (the
//! proxy's included) and the
//! whole `alerts.webhook_url`. (`upload.tls.client_key` is a path, not a secret: the key
//! stays in its file.) Neither `redacted_json` nor any error message echoes them.
//! Not handled: a key given twice in one object (serde_json keeps the last one silently).
//!
//! This file holds the types, [`load`], [`parse`] and the rendering back; `walk` goes
//! through the sections in §6 order, `checker` holds the typed getters that record a problem
//! instead of stopping, `url` parses the endpoint and webhook URLs, `template` the
//! `upload.fields` values.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use serde_json::{json, Map, Value};

use crate::layout::Show;
use crate::secret::{Secret, REDACTED};

mod access;
mod checker;
mod template;
mod url;
mod walk;

pub use template::{Template, TemplateVars};
pub use url::Endpoint;

use checker::{json_problem, kind, Checker};
use walk::{alerts, database, log, metrics, upload, watch};

/// Where the config lives unless `$SEGA_CONFIG` or `-c` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/sega/config.json";

/// The validated configuration; every key has its DESIGN §6 default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub watch: Watch,
    pub upload: Upload,
    pub database: Database,
    pub log: Log,
    pub metrics: Metrics,
    pub alerts: Alerts,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub root: PathBuf,
    pub folders: Vec<Folder>,
    /// Lowercase, without the leading dot.
    pub extensions: Vec<String>,
    pub scan_interval: Duration,
    pub settle: Duration,
    pub lookback_days: u32,
    pub incomplete_max_wait: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    /// The last path component: the `folder` column and the `{folder}` placeholder.
    pub label: String,
    /// Absolute and normalised (no `.`, no trailing `/`): `root.join(name)` or the entry itself.
    pub path: PathBuf,
    /// The directory the operator configured, which may be reached through symbolic links:
    /// `watch.root` for a folder named under it, the entry itself for an absolute one.
    /// Nothing below it is ever followed through a link (DESIGN §10).
    pub anchor: PathBuf,
    /// The folder's name under `anchor` (a named entry); None for an absolute entry.
    pub below: Option<OsString>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub url: Endpoint,
    pub file_field: String,
    /// Text parts, in config order (DESIGN §5 sends them in that order).
    pub fields: Vec<(String, Template)>,
    /// In config order.
    pub headers: Vec<(String, Secret<String>)>,
    pub workers: usize,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub min_rate_kib_s: u64,
    pub order: Order,
    /// `None`: unlimited.
    pub max_kib_s: Option<u64>,
    pub retry: Retry,
    pub tls: Tls,
    /// `None`: any 2xx is a success.
    pub success: Option<SuccessRule>,
    /// `upload.proxy`, an `http://[user:password@]host:port` forward proxy every request
    /// goes through (its credentials are a secret); `None`: direct. Proxy environment
    /// variables are never read.
    pub proxy: Option<Endpoint>,
    /// `upload.keep_alive`: each worker keeps its connection for its next upload (default);
    /// `false`: a connection per upload, closed after it (`Connection: close`).
    pub keep_alive: bool,
}

/// `upload.success`: what a 2xx answer must say for the file to count as uploaded.
#[derive(Debug, Clone, PartialEq)]
pub struct SuccessRule {
    /// An RFC 6901 pointer into the answer's JSON (`/success`, `/result/ok`; empty: all of it).
    pub json_pointer: String,
    /// The value it must have there, compared as JSON (`true`, `"ok"`, `0`).
    pub equals: Value,
    pub on_mismatch: OnMismatch,
}

/// What a 2xx answer that does not match `upload.success` does to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMismatch {
    /// Retried with backoff, like a 5xx, without counting toward the outage.
    Retry,
    /// Failed, like a 4xx.
    Fail,
}

/// `upload.tls`: what https connections (the endpoint, the webhook) trust beside the system
/// trust store, and the certificate they present. Only the paths: the files are read by
/// `tls::ClientTls::load` when something is about to be sent, and again at each reload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tls {
    /// A PEM bundle of CA certificates trusted beside the system store (a private CA).
    pub ca_file: Option<PathBuf>,
    /// The client certificate and its key, presented when the server asks for one.
    pub client: Option<ClientIdentity>,
}

/// `upload.tls.client_cert` and `upload.tls.client_key`: always both or neither.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientIdentity {
    /// PEM: the certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1), unencrypted.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    OldestFirst,
    NewestFirst,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
    /// 0 = retry transient failures forever.
    pub max_attempts: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    pub path: PathBuf,
    pub keep_days: u32,
    /// `None`: the caller uses /etc/machine-id.
    pub scope: Option<String>,
    /// A PostgreSQL URL or conninfo (a secret: it may hold a password). When set, the ledger
    /// lives there and `path` is not used.
    pub url: Option<Secret<String>>,
    /// This daemon's name in a shared ledger; `None`: the host name.
    pub host: Option<String>,
    /// How long a host may miss heart-beating before another host of its scope takes its
    /// claims over (PostgreSQL only).
    pub lease: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// Before `$SEGA_LOG`, which the caller applies (see [`parse_level`]).
    pub level: LevelFilter,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alerts {
    /// A secret as a whole: it usually embeds a token.
    pub webhook_url: Option<Secret<String>>,
    pub after: Duration,
    /// Alert when the oldest pending file is older than this (an extension of DESIGN §6).
    pub backlog: Duration,
}

/// Why a config was refused: every problem found, for one source (a path or `<config>`).
#[derive(Debug)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// A dotted key (`upload.retry.max_secs`, `watch.folders[1]`), `line L, column C` for
    /// bad JSON, or empty when the whole source is meant (it could not be read).
    pub location: String,
    pub message: String,
}

impl Problem {
    fn new(location: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            location: location.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    /// One problem per line: `/etc/sega/config.json: upload.workers: must be at least 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: ", self.source_name)?;
            if !p.location.is_empty() {
                write!(f, "{}: ", p.location)?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The file could not be read at all (its one problem is about the whole source), as
    /// opposed to read and found wrong.
    pub fn unreadable(&self) -> bool {
        self.problems.iter().any(|p| p.location.is_empty())
    }
}

/// The config file to use: the `-c` flag, else `$SEGA_CONFIG`, else [`DEFAULT_PATH`].
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    resolve_path_from(cli, std::env::var_os("SEGA_CONFIG"))
}

/// [`resolve_path`] with the environment passed in, so tests need not mutate it.
/// An empty `SEGA_CONFIG` counts as unset (a unit file's `Environment=SEGA_CONFIG=`).
fn resolve_path_from(cli: Option<&Path>, env: Option<OsString>) -> PathBuf {
    match (cli, env) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// Reads `path` and [`parse`]s it; every error names the path.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let name = path.shown().to_string();
    let fail = |problem| ConfigError {
        source_name: name.clone(),
        problems: vec![problem],
    };
    let bytes =
        std::fs::read(path).map_err(|e| fail(Problem::new("", access::cannot_read(path, &e))))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = valid.len() - valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        fail(Problem::new(
            format!("line {line}, column {column}"),
            "invalid UTF-8",
        ))
    })?;
    parse(&text).map_err(|mut e| {
        e.source_name = name.clone();
        e
    })
}

/// Parses and validates config text, reporting every problem found.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError {
        source_name: "<config>".into(),
        problems,
    };
    let root: Value = serde_json::from_str(text).map_err(|e| fail(vec![json_problem(&e)]))?;
    if !root.is_object() {
        let message = format!("expected a JSON object {{…}}, got {}", kind(&root));
        return Err(fail(vec![Problem::new("(top level)", message)]));
    }
    let mut ck = Checker::default();
    let top = ck.object(
        "",
        Some(&root),
        "watch upload database log metrics alerts shutdown_grace_secs",
    );
    let watch = watch(&mut ck, top.get("watch"));
    let upload = upload(&mut ck, top.get("upload"));
    let database = database(&mut ck, top.get("database"));
    let log = log(&mut ck, top.get("log"));
    let metrics = metrics(&mut ck, top.get("metrics"));
    let alerts = alerts(&mut ck, top.get("alerts"));
    // 0 is a legitimate choice: stop at once and let the Idempotency-Key cover the re-send.
    let shutdown_grace = ck.secs(&top, "shutdown_grace_secs", 10, 0);

    let lookback = u64::from(watch.lookback_days);
    if ck.ok("watch.lookback_days")
        && ck.ok("database.keep_days")
        && u64::from(database.keep_days) <= lookback + 2
    {
        let message = format!(
            "must be greater than watch.lookback_days + 2 (= {}): pruning rows of dates still \
             in the watch window would make their files look new and upload them again",
            lookback + 2
        );
        ck.report("database.keep_days", message);
    }
    match upload {
        Some(upload) if ck.problems.is_empty() => Ok(Config {
            watch,
            upload,
            database,
            log,
            metrics,
            alerts,
            shutdown_grace,
        }),
        _ => Err(fail(ck.problems)),
    }
}

/// `off`, `error`, `warn`, `info`, `debug` or `trace`, any case (`log.level`, `$SEGA_LOG`).
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    // log's own `FromStr` is exactly this: the six names, ASCII case-insensitive.
    s.parse().ok()
}

impl Config {
    /// The effective config (every key, defaults filled in) in DESIGN §6 order, with every
    /// secret replaced by `"<redacted>"`: what `check-config` prints.
    pub fn redacted_json(&self) -> Value {
        let (w, u, d) = (&self.watch, &self.upload, &self.database);
        let path = |p: &Path| p.shown().to_string();
        // A folder directly under root is shown as its name, as it would usually be written.
        let folders: Vec<String> = w
            .folders
            .iter()
            .map(|f| {
                if f.path == w.root.join(&f.label) {
                    f.label.clone()
                } else {
                    path(&f.path)
                }
            })
            .collect();
        let fields: Map<String, Value> = u
            .fields
            .iter()
            .map(|(name, t)| (name.clone(), Value::from(t.raw.as_str())))
            .collect();
        let order = match u.order {
            Order::OldestFirst => "oldest_first",
            Order::NewestFirst => "newest_first",
        };
        let headers: Map<String, Value> = u
            .headers
            .iter()
            .map(|(name, _)| (name.clone(), Value::from(REDACTED)))
            .collect();
        json!({
            "watch": {
                "root": path(&w.root), "folders": folders, "extensions": w.extensions,
                "scan_interval_secs": w.scan_interval.as_secs(), "settle_secs": w.settle.as_secs(),
                "lookback_days": w.lookback_days,
                "incomplete_max_wait_secs": w.incomplete_max_wait.as_secs(),
            },
            "upload": {
                "url": u.url.redacted(), "file_field": u.file_field, "fields": fields,
                "headers": headers, "workers": u.workers,
                "connect_timeout_secs": u.connect_timeout.as_secs(),
                "timeout_secs": u.timeout.as_secs(), "min_rate_kib_s": u.min_rate_kib_s,
                "order": order,
                "max_kib_s": u.max_kib_s,
                "retry": {
                    "initial_secs": u.retry.initial.as_secs(), "max_secs": u.retry.max.as_secs(),
                    "max_attempts": u.retry.max_attempts,
                },
                "tls": {
                    "ca_file": u.tls.ca_file.as_deref().map(path),
                    "client_cert": u.tls.client.as_ref().map(|c| path(&c.cert)),
                    "client_key": u.tls.client.as_ref().map(|c| path(&c.key)),
                },
                "proxy": u.proxy.as_ref().map(Endpoint::redacted),
                "keep_alive": u.keep_alive,
                "success": u.success.as_ref().map(|s| json!({
                    "json_pointer": s.json_pointer,
                    "equals": s.equals,
                    "on_mismatch": match s.on_mismatch {
                        OnMismatch::Retry => "retry",
                        OnMismatch::Fail => "fail",
                    },
                })),
            },
            "database": {
                "path": path(&d.path), "keep_days": d.keep_days, "scope": d.scope,
                "url": d.url.as_ref().map(|u| redact_db_url(u.expose())), "host": d.host,
                "lease_secs": d.lease.as_secs(),
            },
            "log": {
                "level": self.log.level.as_str().to_ascii_lowercase(),
                "file": self.log.file.as_deref().map(path),
            },
            "metrics": { "textfile": self.metrics.textfile.as_deref().map(path) },
            "alerts": {
                "webhook_url": self.alerts.webhook_url.as_ref().map(|_| REDACTED),
                "after_secs": self.alerts.after.as_secs(),
                "backlog_secs": self.alerts.backlog.as_secs(),
            },
            "shutdown_grace_secs": self.shutdown_grace.as_secs(),
        })
    }

    /// Keys that differ in `new` but that a SIGHUP reload cannot apply, in §6 order. They are
    /// read once at start-up: the worker pool is spawned with `upload.workers` threads, the
    /// lock and the DB connection follow `database.path` (or `url`, `host`, `lease_secs`),
    /// and `database.scope` feeds every Idempotency-Key, which must not change under files
    /// already in flight.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.upload.workers != new.upload.workers {
            keys.push("upload.workers");
        }
        if self.database.path != new.database.path {
            keys.push("database.path");
        }
        if self.database.scope != new.database.scope {
            keys.push("database.scope");
        }
        if self.database.url != new.database.url {
            keys.push("database.url");
        }
        if self.database.host != new.database.host {
            keys.push("database.host");
        }
        if self.database.lease != new.database.lease {
            keys.push("database.lease_secs");
        }
        keys
    }
}

/// A database URL or conninfo with its passwords replaced, for printing and logs.
pub fn redact_db_url(s: &str) -> String {
    crate::dburl::redacted(s)
}

#[cfg(test)]
mod tests;
