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
//! Secrets (DESIGN §6) are every `upload.headers` value, credentials in any URL and the
//! whole `alerts.webhook_url`. Neither `redacted_json` nor any error message echoes them.
//! Not handled: a key given twice in one object (serde_json keeps the last one silently).

use std::ffi::OsString;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use serde_json::{json, Map, Value};

/// Where the config lives unless `$SEGA_CONFIG` or `-c` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/sega/config.json";

use crate::layout::Show;
use crate::secret::{Secret, REDACTED};
/// Upper bound for every `*_secs` value (ten years): `Instant + Duration` panics on overflow,
/// so a typo such as 1e15 must be refused here rather than crash a timer later.
const MAX_SECS: u64 = 10 * 365 * 86_400;
/// Upper bound for day counts (a century), keeping date arithmetic far from its limits.
const MAX_DAYS: u64 = 36_500;
const MAX_WORKERS: u64 = 64;
/// KiB/s rates are multiplied by 1024 downstream; this bound keeps that far from overflow.
const MAX_KIB_S: u64 = u32::MAX as u64;
const ABSOLUTE: &str = "must be an absolute path (a relative one would depend on the working \
                        directory, which under systemd is `/`)";

/// Headers we set ourselves; a config value would clash with ours or defeat its purpose.
#[rustfmt::skip]
const RESERVED_HEADERS: &[(&str, &str)] = &[
    ("content-type", "sega-uploader sets it (multipart/form-data with its boundary)"),
    ("content-length", "sega-uploader sets it from the body it sends"),
    ("host", "sega-uploader sets it from upload.url"),
    ("transfer-encoding", "sega-uploader always sends a Content-Length, never chunked"),
    ("connection", "connection handling belongs to sega-uploader's HTTP client"),
    ("user-agent", "sega-uploader sends `sega-uploader/<version>` so servers tell versions apart"),
    ("idempotency-key", "sega-uploader computes it per file version so a re-send is recognised"),
];

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
}

/// An http(s) URL split into the parts the uploader and `check-config` need.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// As configured: it may hold credentials. [`Endpoint::redacted`] is what to print.
    pub url: Secret<String>,
    /// The URL with any `user:password@` replaced by `<redacted>@`.
    shown: String,
    pub scheme: Scheme,
    /// Lowercase; an IPv6 literal without its brackets, ready for `(host, port)` lookups.
    pub host: String,
    /// The explicit port, else 80 or 443.
    pub port: u16,
    pub has_credentials: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A text-part value with `{folder}`-style placeholders, parsed once at load.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub raw: String,
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Folder,
    Date,
    Filename,
    Path,
    Size,
}

/// The values a [`Template`] is rendered with, for one file.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    pub folder: &'a str,
    pub date: &'a str,
    pub filename: &'a str,
    pub path: &'a str,
    pub size: u64,
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
        std::fs::read(path).map_err(|e| fail(Problem::new("", format!("cannot read: {e}"))))?;
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

impl Endpoint {
    /// Parses `http[s]://[userinfo@]host[:port][/path][?query]`. Error messages never quote
    /// the URL: it may hold credentials, or be a secret webhook as a whole.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        if s.contains('#') {
            return Err("must not contain a fragment (`#…`)".into());
        }
        let (scheme, rest) = match s.split_once("://") {
            Some((name, rest)) if name.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((name, rest)) if name.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            _ => return Err("must start with http:// or https://".into()),
        };
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        // The userinfo ends at the *last* `@`: a password may contain an unencoded one.
        let (has_credentials, host_port) = match authority.rfind('@') {
            Some(at) => (true, &authority[at + 1..]),
            None => (false, authority),
        };
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (addr, after) = bracketed
                .split_once(']')
                .ok_or("has an IPv6 address without its closing `]`")?;
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err("has an invalid IPv6 address in `[…]`".into());
            }
            if !after.is_empty() && !after.starts_with(':') {
                return Err("has unexpected text after the IPv6 address".into());
            }
            (addr, after)
        } else {
            let colon = host_port.rfind(':').unwrap_or(host_port.len());
            let host = &host_port[..colon];
            if host.is_empty() {
                return Err("has no host".into());
            }
            if !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~%".contains(c))
            {
                return Err(
                    "has a host with characters other than ASCII letters, digits, \
                            `-`, `.` and `_` (write an international name as xn--…)"
                        .into(),
                );
            }
            (host, &host_port[colon..])
        };
        let port = match port.strip_prefix(':') {
            None => match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            },
            // Checked for digits first: `str::parse` would also accept a leading `+`.
            Some(digits) => match digits.parse::<u16>() {
                Ok(port) if port > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return Err("has a port that is not a number from 1 to 65535".into()),
            },
        };
        Ok(Endpoint {
            url: Secret::new(s.to_string()),
            shown: redact_userinfo(s),
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            has_credentials,
        })
    }

    /// The URL with any `user:password@` replaced by `<redacted>@`: safe to print or log.
    pub fn redacted(&self) -> &str {
        &self.shown
    }
}

/// `scheme://user:password@host…` with the userinfo replaced by `<redacted>`.
fn redact_userinfo(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &url[..start], &rest[at..]),
        None => url.to_owned(),
    }
}

impl Template {
    /// Placeholders are `{folder}`, `{date}`, `{filename}`, `{path}` and `{size}`; `{{` and
    /// `}}` are literal braces; any other `{name}` is an error naming it.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' | '}' if chars.peek() == Some(&c) => {
                    chars.next();
                    text.push(c);
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(
                                    "has an unclosed `{` (write `{{` for a literal brace)".into()
                                )
                            }
                            Some(c) => name.push(c),
                        }
                    }
                    let piece = match name.as_str() {
                        "folder" => Piece::Folder,
                        "date" => Piece::Date,
                        "filename" => Piece::Filename,
                        "path" => Piece::Path,
                        "size" => Piece::Size,
                        _ => {
                            return Err(format!(
                                "has an unknown placeholder `{{{name}}}` (known: {{folder}}, \
                                 {{date}}, {{filename}}, {{path}}, {{size}})"
                            ))
                        }
                    };
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(piece);
                }
                '}' => return Err("has an unmatched `}` (write `}}` for a literal brace)".into()),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template {
            raw: s.to_string(),
            pieces,
        })
    }

    pub fn render(&self, v: &TemplateVars) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Folder => out.push_str(v.folder),
                Piece::Date => out.push_str(v.date),
                Piece::Filename => out.push_str(v.filename),
                Piece::Path => out.push_str(v.path),
                Piece::Size => out.push_str(&v.size.to_string()),
            }
        }
        out
    }

    /// A template with exactly one placeholder and no text: the defaults.
    fn placeholder(raw: &str, piece: Piece) -> Template {
        Template {
            raw: raw.into(),
            pieces: vec![piece],
        }
    }
}

// ---- the walk, one function per section, in DESIGN §6 order ----

fn watch(ck: &mut Checker, v: Option<&Value>) -> Watch {
    let o = ck.object(
        "watch",
        v,
        "root folders extensions scan_interval_secs settle_secs lookback_days \
         incomplete_max_wait_secs",
    );
    let root = ck.path(&o, "root", "/data");
    let folders = match o.get("folders") {
        None => ["Sega_1", "Sega_2", "Sega_3"]
            .into_iter()
            .map(|name| Folder {
                label: name.into(),
                path: root.join(name),
                anchor: root.clone(),
                below: Some(name.into()),
            })
            .collect(),
        Some(v) => folders(ck, &o.loc("folders"), v, &root),
    };
    let extensions = match o.get("extensions") {
        None => vec!["jpg".into(), "jpeg".into(), "png".into()],
        Some(v) => extensions(ck, &o.loc("extensions"), v),
    };
    Watch {
        root,
        folders,
        extensions,
        scan_interval: ck.secs(&o, "scan_interval_secs", 60, 1),
        // 0 is meaningful: trust a scan-found file's mtime at once.
        settle: ck.secs(&o, "settle_secs", 5, 0),
        // 0 is meaningful: today (and tomorrow) only.
        lookback_days: days(ck.number(&o, "lookback_days", 1, 0, MAX_DAYS)),
        incomplete_max_wait: ck.secs(&o, "incomplete_max_wait_secs", 600, 1),
    }
}

fn folders(ck: &mut Checker, loc: &str, v: &Value, root: &Path) -> Vec<Folder> {
    let Some(items) = ck.array(loc, v) else {
        return Vec::new();
    };
    if items.is_empty() {
        ck.report(loc, "must list at least one folder");
    }
    let mut out: Vec<Folder> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{loc}[{i}]");
        let Some(entry) = ck.str_value(&at, item) else {
            continue;
        };
        let Some(folder) = ck.check(&at, folder_entry(entry, root)) else {
            continue;
        };
        // The label is the `folder` column and the `{folder}` placeholder: it must say which.
        if out.iter().any(|f| f.label == folder.label) {
            ck.report(&at, format!("label `{}` is used twice", folder.label));
        }
        out.push(folder);
    }
    out
}

fn folder_entry(entry: &str, root: &Path) -> Result<Folder, String> {
    let (path, anchor, below) = if entry.is_empty() {
        return Err("must not be empty".into());
    } else if entry.starts_with('/') {
        let path = absolute(entry)?;
        (path.clone(), path, None)
    } else if entry.contains('/') || entry.contains('\0') || entry == "." || entry == ".." {
        return Err(
            "must be a plain folder name under watch.root (not `.`, `..` or with a `/`) \
                    or an absolute path"
                .into(),
        );
    } else {
        (root.join(entry), root.to_path_buf(), Some(entry.into()))
    };
    let label = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("has no last component to use as its label")?;
    Ok(Folder {
        label: label.to_string(),
        path,
        anchor,
        below,
    })
}

fn extensions(ck: &mut Checker, loc: &str, v: &Value) -> Vec<String> {
    let Some(items) = ck.array(loc, v) else {
        return Vec::new();
    };
    if items.is_empty() {
        ck.report(loc, "must list at least one extension");
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{loc}[{i}]");
        let Some(s) = ck.str_value(&at, item) else {
            continue;
        };
        // "JPG" and ".jpg" both mean what a user expects; matching is case-insensitive.
        let ext = s.strip_prefix('.').unwrap_or(s).to_lowercase();
        if ext.is_empty() {
            ck.report(&at, "must not be empty");
        } else if ext.contains(['/', '\0']) {
            ck.report(&at, "must not contain `/`");
        } else if !out.contains(&ext) {
            out.push(ext);
        }
    }
    out
}

fn upload(ck: &mut Checker, v: Option<&Value>) -> Option<Upload> {
    let o = ck.object(
        "upload",
        v,
        "url file_field fields headers workers connect_timeout_secs timeout_secs min_rate_kib_s \
         order max_kib_s retry",
    );
    let url = match o.get("url") {
        None => {
            // Not when `upload` itself is the wrong type: that was reported already.
            if ck.ok("upload") {
                let example = "for example \"http://211.231.137.111:18000/upload\"";
                ck.report("upload.url", format!("required ({example})"));
            }
            None
        }
        Some(v) => ck
            .str_value("upload.url", v)
            .and_then(|s| ck.check("upload.url", Endpoint::parse(s).and_then(plain_http))),
    };
    let file_field = ck.string(&o, "file_field", "file").unwrap_or("file");
    ck.check("upload.file_field", part_name(file_field));
    let fields = match o.get("fields") {
        None => vec![
            (
                "folder".into(),
                Template::placeholder("{folder}", Piece::Folder),
            ),
            ("date".into(), Template::placeholder("{date}", Piece::Date)),
        ],
        Some(v) => fields(ck, v, file_field),
    };
    let headers = match o.get("headers") {
        None => Vec::new(),
        Some(v) => headers(ck, v),
    };
    let workers = ck.number(&o, "workers", 4, 1, MAX_WORKERS);
    let connect_timeout = ck.secs(&o, "connect_timeout_secs", 5, 1);
    let timeout = ck.secs(&o, "timeout_secs", 60, 1);
    let min_rate_kib_s = ck.number(&o, "min_rate_kib_s", 64, 1, MAX_KIB_S);
    let order = match ck.string(&o, "order", "oldest_first") {
        Some("newest_first") => Order::NewestFirst,
        Some("oldest_first") | None => Order::OldestFirst,
        Some(other) => {
            ck.report(
                "upload.order",
                format!("expected \"oldest_first\" or \"newest_first\", got {other:?}"),
            );
            Order::OldestFirst
        }
    };
    let max_kib_s = ck.opt_number(&o, "max_kib_s", 1, MAX_KIB_S);
    let retry = retry(ck, o.get("retry"));
    Some(Upload {
        url: url?,
        file_field: file_field.to_string(),
        fields,
        headers,
        workers: usize::try_from(workers).unwrap_or(1),
        connect_timeout,
        timeout,
        min_rate_kib_s,
        order,
        max_kib_s,
        retry,
    })
}

fn fields(ck: &mut Checker, v: &Value, file_field: &str) -> Vec<(String, Template)> {
    let Some(map) = ck.map("upload.fields", v) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in map {
        let loc = join("upload.fields", name);
        ck.check(&loc, part_name(name).map_err(|m| format!("field name {m}")));
        if name == file_field {
            ck.report(
                &loc,
                "has the same name as upload.file_field: the server could not tell the parts apart",
            );
        }
        let Some(raw) = ck.str_value(&loc, value) else {
            continue;
        };
        if let Some(template) = ck.check(&loc, Template::parse(raw)) {
            out.push((name.clone(), template));
        }
    }
    out
}

fn headers(ck: &mut Checker, v: &Value) -> Vec<(String, Secret<String>)> {
    let Some(map) = ck.map("upload.headers", v) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Secret<String>)> = Vec::new();
    for (name, value) in map {
        let loc = join("upload.headers", name);
        if !is_token(name) {
            ck.report(
                &loc,
                "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
            );
        } else if let Some((_, why)) = RESERVED_HEADERS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            ck.report(&loc, format!("cannot be set here: {why}"));
        } else if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            ck.report(&loc, "is given twice (header names are case-insensitive)");
        }
        // Header values are secrets: say what is wrong, never what the value is.
        match value {
            Value::String(s) if s.chars().any(|c| c.is_control() && c != '\t') => ck.report(
                &loc,
                "has a value with CR, LF, NUL or another control character",
            ),
            Value::String(s) => out.push((name.clone(), Secret::new(s.clone()))),
            other => ck.report(
                &loc,
                format!("expected a string value, got {}", kind(other)),
            ),
        }
    }
    out
}

fn retry(ck: &mut Checker, v: Option<&Value>) -> Retry {
    let o = ck.object("upload.retry", v, "initial_secs max_secs max_attempts");
    let initial = ck.secs(&o, "initial_secs", 5, 1);
    let max = ck.secs(&o, "max_secs", 600, 1);
    // 0 means "forever" (DESIGN §5): a day-long outage needs no human.
    let max_attempts = ck.number(&o, "max_attempts", 0, 0, u32::MAX.into());
    if initial > max && ck.ok("upload.retry.initial_secs") && ck.ok("upload.retry.max_secs") {
        let message = format!(
            "must not exceed upload.retry.max_secs ({}): backoff grows from one to the other",
            max.as_secs()
        );
        ck.report("upload.retry.initial_secs", message);
    }
    Retry {
        initial,
        max,
        max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
    }
}

fn database(ck: &mut Checker, v: Option<&Value>) -> Database {
    let o = ck.object("database", v, "path keep_days scope url host lease_secs");
    let path = ck.path(&o, "path", "/var/lib/sega/sega-uploader.db");
    let keep_days = days(ck.number(&o, "keep_days", 90, 1, MAX_DAYS));
    let scope = ck.opt_string(&o, "scope");
    if scope.is_some_and(|s| s.trim().is_empty()) {
        ck.report(
            "database.scope",
            "must be null (use /etc/machine-id) or a non-empty string",
        );
    }
    let url = ck.opt_string(&o, "url");
    if let Some(u) = url {
        if let Err(e) = check_db_url(u) {
            ck.report("database.url", e);
        }
    }
    let host = ck.opt_string(&o, "host");
    if host.is_some_and(|s| s.trim().is_empty() || s.chars().any(char::is_control)) {
        ck.report(
            "database.host",
            "must be null (use the host name) or a non-empty string without control characters",
        );
    }
    // A lease shorter than a few heartbeats would take claims from a host that is merely busy.
    let lease = ck.secs(&o, "lease_secs", 60, 5);
    Database {
        path,
        keep_days,
        scope: scope.map(str::to_string),
        url: url.map(|u| Secret::new(u.to_string())),
        host: host.map(str::to_string),
        lease,
    }
}

fn log(ck: &mut Checker, v: Option<&Value>) -> Log {
    let o = ck.object("log", v, "level file");
    let level = ck
        .string(&o, "level", "info")
        .map_or(LevelFilter::Info, |s| {
            parse_level(s).unwrap_or_else(|| {
                ck.report(
                    "log.level",
                    format!("expected one of off, error, warn, info, debug, trace; got {s:?}"),
                );
                LevelFilter::Info
            })
        });
    Log {
        level,
        file: ck.opt_path(&o, "file"),
    }
}

/// This build sends plain http only (no TLS library: the package must run on old Ubuntu
/// without libssl); an https URL would fail at every upload, so it is refused here.
fn plain_http(e: Endpoint) -> Result<Endpoint, String> {
    match e.scheme {
        Scheme::Http => Ok(e),
        Scheme::Https => {
            Err("https is not supported by this build (no TLS); use an http:// URL".into())
        }
    }
}

fn metrics(ck: &mut Checker, v: Option<&Value>) -> Metrics {
    let o = ck.object("metrics", v, "textfile");
    Metrics {
        textfile: ck.opt_path(&o, "textfile"),
    }
}

fn alerts(ck: &mut Checker, v: Option<&Value>) -> Alerts {
    let o = ck.object("alerts", v, "webhook_url after_secs backlog_secs");
    // The whole webhook URL is a secret (it usually embeds a token): no message echoes it.
    let webhook_url = match o.get("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => ck.check(
            "alerts.webhook_url",
            Endpoint::parse(s)
                .and_then(plain_http)
                .map(|_| Secret::new(s.clone())),
        ),
        Some(other) => {
            ck.report(
                "alerts.webhook_url",
                format!("expected a URL string or null, got {}", kind(other)),
            );
            None
        }
    };
    Alerts {
        webhook_url,
        after: ck.secs(&o, "after_secs", 300, 1),
        backlog: ck.secs(&o, "backlog_secs", 3600, 1),
    }
}

// ---- the checker: typed getters that record a problem instead of stopping ----

/// Collects problems while the walk goes on. Getters return the default (or `None`) when a
/// value is wrong; the config is only built when no problem was recorded.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

/// One JSON object of the config and its dotted location (`None`: absent or not an object).
struct Obj<'a> {
    loc: String,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Obj<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key))
    }

    fn loc(&self, key: &str) -> String {
        join(&self.loc, key)
    }
}

impl Checker {
    fn report(&mut self, location: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(location, message));
    }

    /// No problem was recorded at `location`: cross-key rules use this to avoid piling a
    /// second, derived complaint onto a value already reported as wrong.
    fn ok(&self, location: &str) -> bool {
        !self.problems.iter().any(|p| p.location == location)
    }

    fn check<T>(&mut self, location: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| self.report(location, message))
            .ok()
    }

    /// A config section: absent means every key takes its default; unknown keys are reported.
    /// `known` lists the section's keys, separated by spaces.
    fn object<'a>(&mut self, loc: &str, v: Option<&'a Value>, known: &str) -> Obj<'a> {
        let map = v.and_then(|v| self.map(loc, v));
        for key in map.into_iter().flat_map(|m| m.keys()) {
            if !known.split_whitespace().any(|k| k == key) {
                self.report(&join(loc, key), unknown_key(key, known));
            }
        }
        Obj {
            loc: loc.to_string(),
            map,
        }
    }

    /// Type errors for objects and arrays name only the kind of value found: a secret put one
    /// level too high (`"headers": "Bearer …"`) must not be echoed.
    fn map<'a>(&mut self, loc: &str, v: &'a Value) -> Option<&'a Map<String, Value>> {
        let map = v.as_object();
        if map.is_none() {
            self.report(loc, format!("expected an object {{…}}, got {}", kind(v)));
        }
        map
    }

    fn array<'a>(&mut self, loc: &str, v: &'a Value) -> Option<&'a Vec<Value>> {
        let array = v.as_array();
        if array.is_none() {
            self.report(loc, format!("expected an array […], got {}", kind(v)));
        }
        array
    }

    fn str_value<'a>(&mut self, loc: &str, v: &'a Value) -> Option<&'a str> {
        let s = v.as_str();
        if s.is_none() {
            self.report(loc, format!("expected a string, got {}", describe(v)));
        }
        s
    }

    fn string<'a>(&mut self, o: &Obj<'a>, key: &str, default: &'a str) -> Option<&'a str> {
        match o.get(key) {
            None => Some(default),
            Some(v) => self.str_value(&o.loc(key), v),
        }
    }

    /// A string that may be `null` (absent means `null`).
    fn opt_string<'a>(&mut self, o: &Obj<'a>, key: &str) -> Option<&'a str> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(v) => {
                self.report(
                    &o.loc(key),
                    format!("expected a string or null, got {}", describe(v)),
                );
                None
            }
        }
    }

    fn path(&mut self, o: &Obj, key: &str, default: &str) -> PathBuf {
        let s = self.string(o, key, default).unwrap_or(default);
        self.check(&o.loc(key), absolute(s))
            .unwrap_or_else(|| PathBuf::from(default))
    }

    fn opt_path(&mut self, o: &Obj, key: &str) -> Option<PathBuf> {
        let s = self.opt_string(o, key)?;
        self.check(&o.loc(key), absolute(s))
    }

    fn secs(&mut self, o: &Obj, key: &str, default: u64, min: u64) -> Duration {
        let secs = match o.get(key) {
            None => default,
            Some(v) => self
                .whole(&o.loc(key), v, "a whole number of seconds", min, MAX_SECS)
                .unwrap_or(default),
        };
        Duration::from_secs(secs)
    }

    fn number(&mut self, o: &Obj, key: &str, default: u64, min: u64, max: u64) -> u64 {
        match o.get(key) {
            None => default,
            Some(v) => self
                .whole(&o.loc(key), v, "a whole number", min, max)
                .unwrap_or(default),
        }
    }

    fn opt_number(&mut self, o: &Obj, key: &str, min: u64, max: u64) -> Option<u64> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.whole(&o.loc(key), v, "a whole number or null", min, max),
        }
    }

    fn whole(&mut self, loc: &str, v: &Value, expected: &str, min: u64, max: u64) -> Option<u64> {
        let n = match v {
            Value::Number(n) if n.is_u64() => n.as_u64(),
            Value::Number(n) if n.is_i64() => {
                self.report(loc, format!("must not be negative, got {n}"));
                None
            }
            other => {
                self.report(loc, format!("expected {expected}, got {}", describe(other)));
                None
            }
        }?;
        if n < min {
            self.report(loc, format!("must be at least {min}"));
            None
        } else if n > max {
            self.report(loc, format!("must be at most {max}"));
            None
        } else {
            Some(n)
        }
    }
}

// ---- small pure helpers ----

/// `parent.key`; an empty key is shown as `""` so the location still points somewhere.
fn join(parent: &str, key: &str) -> String {
    match (parent.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => format!("{parent}.\"\""),
        (false, false) => format!("{parent}.{key}"),
    }
}

/// Day counts are bounded by `MAX_DAYS` before this, so the fallback is never taken.
/// `database.url`: a `postgres://` / `postgresql://` URL or a libpq conninfo
/// (`host=… dbname=…`), and only in a build that can use it. Messages never quote it: it may
/// hold a password.
fn check_db_url(s: &str) -> Result<(), String> {
    let url = s.starts_with("postgres://") || s.starts_with("postgresql://");
    let conninfo = !url && s.contains('=') && !s.contains("://");
    if url {
        crate::dburl::check(s)?;
    }
    if !url && !conninfo {
        return Err(
            "expected a postgres://user@host/dbname URL or a libpq conninfo such as \
             \"host=db.example dbname=sega user=sega\" (leave it null for SQLite at database.path)"
                .into(),
        );
    }
    if !cfg!(feature = "postgres") {
        return Err(
            "this build of sega-uploader has no PostgreSQL support (the `postgres` \
             cargo feature); install the .deb, or build with --features postgres"
                .into(),
        );
    }
    #[cfg(feature = "postgres")]
    if !crate::libpq::parses(s) {
        return Err(
            "libpq cannot parse it (not shown: it may hold a password); check its \
                    %-escapes (a `%` in a password is written %25) and its quoting"
                .into(),
        );
    }
    Ok(())
}

/// A database URL or conninfo with its passwords replaced, for printing and logs.
pub fn redact_db_url(s: &str) -> String {
    crate::dburl::redacted(s)
}

fn days(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// An absolute path, normalised (`//`, `.` and a trailing `/` dropped) so that identity
/// comparisons on paths built from it hold. `..` is refused: it would hide what is watched.
fn absolute(s: &str) -> Result<PathBuf, String> {
    let path = Path::new(s);
    if !path.is_absolute() {
        return Err(ABSOLUTE.into());
    }
    if s.contains('\0') {
        return Err("must not contain a NUL character".into());
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("must not contain `..`".into());
    }
    Ok(path.components().collect())
}

/// A multipart part name goes into `Content-Disposition: form-data; name="…"` unescaped.
fn part_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("must not be empty".into())
    } else if name.chars().any(|c| c == '"' || c.is_control()) {
        Err("must not contain `\"`, CR, LF or other control characters".into())
    } else {
        Ok(())
    }
}

/// An RFC 9110 token (tchar+), the grammar of a header name.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn unknown_key(key: &str, known: &str) -> String {
    let known: Vec<&str> = known.split_whitespace().collect();
    // `scan_interval` for `scan_interval_secs` is the typo a newcomer makes most.
    let hint = known
        .iter()
        .copied()
        .find(|k| k.strip_suffix("_secs") == Some(key))
        .or_else(|| {
            let mut close: Vec<(usize, &str)> =
                known.iter().map(|k| (edit_distance(key, k), *k)).collect();
            close.retain(|&(d, _)| d <= 2);
            close.into_iter().min_by_key(|&(d, _)| d).map(|(_, k)| k)
        });
    match hint {
        Some(k) => format!("unknown key (did you mean `{k}`?)"),
        None => format!("unknown key (known: {})", known.join(", ")),
    }
}

/// Levenshtein distance, on chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A value as shown in a type error: short JSON, or its kind when it is long.
fn describe(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => kind(v).into(),
        Value::String(s) if s.chars().count() > 40 => kind(v).into(),
        other => other.to_string(),
    }
}

/// A value's kind only, for places where the value may be a secret.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message without its " at line L column C" tail: the location carries that.
fn json_problem(e: &serde_json::Error) -> Problem {
    let full = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&tail).unwrap_or(&full).to_string();
    Problem::new(format!("line {}, column {}", e.line(), e.column()), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DESIGN §6 verbatim: every key with its default.
    const FULL: &str = r#"{
      "watch": { "root": "/data", "folders": ["Sega_1", "Sega_2", "Sega_3"],
                 "extensions": ["jpg", "jpeg", "png"], "scan_interval_secs": 60,
                 "settle_secs": 5, "lookback_days": 1, "incomplete_max_wait_secs": 600 },
      "upload": { "url": "http://211.231.137.111:18000/upload", "file_field": "file",
                  "fields": { "folder": "{folder}", "date": "{date}" }, "headers": {},
                  "workers": 4, "connect_timeout_secs": 5, "timeout_secs": 60,
                  "min_rate_kib_s": 64, "order": "oldest_first", "max_kib_s": null,
                  "retry": { "initial_secs": 5, "max_secs": 600, "max_attempts": 0 } },
      "database": { "path": "/var/lib/sega/sega-uploader.db", "keep_days": 90,
                    "scope": null, "url": null, "host": null, "lease_secs": 60 },
      "log": { "level": "info", "file": null },
      "metrics": { "textfile": null },
      "alerts": { "webhook_url": null, "after_secs": 300, "backlog_secs": 3600 },
      "shutdown_grace_secs": 10
    }"#;
    const MINIMAL: &str = r#"{"upload": {"url": "http://211.231.137.111:18000/upload"}}"#;

    /// MINIMAL with `patch` merged in, object by object.
    fn with(patch: &str) -> String {
        fn merge(base: &mut Value, patch: Value) {
            match (base, patch) {
                (Value::Object(b), Value::Object(p)) => {
                    for (k, v) in p {
                        merge(b.entry(k).or_insert(Value::Null), v);
                    }
                }
                (b, p) => *b = p,
            }
        }
        let mut base: Value = serde_json::from_str(MINIMAL).unwrap();
        merge(&mut base, serde_json::from_str(patch).unwrap());
        base.to_string()
    }

    fn problems(text: &str) -> Vec<Problem> {
        parse(text).expect_err("config should be refused").problems
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn database_urls_are_shown_without_their_password() {
        let cases = [
            (
                "postgres://sega:s3cret@db:5432/sega",
                "postgres://sega:<redacted>@db:5432/sega",
            ),
            ("postgresql://sega@db/sega", "postgresql://sega@db/sega"),
            (
                "postgres://db/sega?password=s3cret&sslmode=disable",
                "postgres://db/sega?password=<redacted>&sslmode=disable",
            ),
            (
                "host=db user=sega password=s3cret dbname=sega",
                "host=db user=sega password=<redacted> dbname=sega",
            ),
            (
                "host=db password = 'se cr\\'et' dbname=sega",
                "host=db password=<redacted> dbname=sega",
            ),
            (
                "host=/run/postgresql dbname=sega",
                "host=/run/postgresql dbname=sega",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_db_url(url), shown, "{url}");
        }
        let c = parse(
            r#"{"upload": {"url": "http://127.0.0.1:9/u"},
            "database": {"url": "postgres://sega:s3cret@db/sega"}}"#,
        );
        if cfg!(feature = "postgres") {
            let c = c.unwrap();
            assert!(!format!("{c:?}").contains("s3cret"));
            assert!(!c.redacted_json().to_string().contains("s3cret"));
        } else {
            let e = c.unwrap_err().to_string();
            assert!(
                e.contains("no PostgreSQL support") && !e.contains("s3cret"),
                "{e}"
            );
        }
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.redacted_json(),
            serde_json::from_str::<Value>(FULL).unwrap()
        );
        let folders: Vec<_> = c
            .watch
            .folders
            .iter()
            .map(|f| (&*f.label, &*f.path))
            .collect();
        assert_eq!(
            folders,
            [
                ("Sega_1", Path::new("/data/Sega_1")),
                ("Sega_2", Path::new("/data/Sega_2")),
                ("Sega_3", Path::new("/data/Sega_3")),
            ]
        );
        assert_eq!((c.watch.scan_interval, c.watch.settle), (secs(60), secs(5)));
        assert_eq!(
            (&*c.upload.url.host, c.upload.url.port),
            ("211.231.137.111", 18000)
        );
        assert_eq!((c.upload.workers, c.upload.order), (4, Order::OldestFirst));
        let retry = Retry {
            initial: secs(5),
            max: secs(600),
            max_attempts: 0,
        };
        assert_eq!(c.upload.retry, retry);
        assert_eq!(
            (c.log.level, c.shutdown_grace),
            (LevelFilter::Info, secs(10))
        );
    }

    #[test]
    fn full_document_parses_and_round_trips() {
        let full = parse(FULL).unwrap();
        assert_eq!(full, parse(MINIMAL).unwrap());
        let shown = full.redacted_json();
        assert_eq!(shown, serde_json::from_str::<Value>(FULL).unwrap());
        // Keys come out in DESIGN §6 order, not alphabetically.
        let keys: Vec<_> = shown.as_object().unwrap().keys().collect();
        let order = "watch upload database log metrics alerts shutdown_grace_secs";
        assert_eq!(keys, order.split(' ').collect::<Vec<_>>());
        assert_eq!(parse(&shown.to_string()).unwrap(), full);
    }

    #[test]
    fn accepts_edge_values() {
        let c = parse(&with(
            r#"{"watch": {"root": "/srv//img/", "folders": ["A", "/mnt/cam/B/"],
                          "extensions": [".JPG", "jpg", "Png"], "settle_secs": 0,
                          "lookback_days": 0},
                "upload": {"retry": {"max_attempts": 0}, "order": "newest_first",
                           "max_kib_s": 512},
                "database": {"keep_days": 3, "scope": "site-a"},
                "log": {"level": "DEBUG", "file": "/var/log/sega/x.log"},
                "shutdown_grace_secs": 0}"#,
        ))
        .unwrap();
        assert_eq!(c.watch.root, Path::new("/srv/img"));
        let folders: Vec<_> = c
            .watch
            .folders
            .iter()
            .map(|f| (&*f.label, &*f.path))
            .collect();
        assert_eq!(
            folders,
            [
                ("A", Path::new("/srv/img/A")),
                ("B", Path::new("/mnt/cam/B"))
            ]
        );
        assert_eq!(c.watch.extensions, ["jpg", "png"]);
        assert_eq!((c.watch.settle, c.watch.lookback_days), (Duration::ZERO, 0));
        assert_eq!(
            (c.upload.order, c.upload.max_kib_s),
            (Order::NewestFirst, Some(512))
        );
        assert_eq!(
            (c.database.keep_days, c.database.scope.as_deref()),
            (3, Some("site-a"))
        );
        assert_eq!(
            (c.log.level, c.shutdown_grace),
            (LevelFilter::Debug, Duration::ZERO)
        );
        // An absolute folder outside root is shown in full, one under root by its name.
        assert_eq!(
            c.redacted_json()["watch"]["folders"],
            json!(["A", "/mnt/cam/B"])
        );
    }

    #[test]
    fn each_rule_is_enforced_at_its_key() {
        // (patch merged into MINIMAL, location, part of the message); exactly one problem each.
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"wacth": {}}"#, "wacth", "unknown key (did you mean `watch`?)"),
            (r#"{"watch": {"rootz": "/x"}}"#, "watch.rootz", "unknown key (did you mean `root`?)"),
            (r#"{"watch": {"scan_interval": 60}}"#, "watch.scan_interval", "did you mean `scan_interval_secs`?"),
            (r#"{"upload": {"retry": {"jitter": 1}}}"#, "upload.retry.jitter", "unknown key (known: initial_secs,"),
            (r#"{"watch": 5}"#, "watch", "expected an object {…}, got a number"),
            (r#"{"upload": {"headers": "Bearer s3cret"}}"#, "upload.headers", "expected an object {…}, got a string"),
            (r#"{"upload": []}"#, "upload", "expected an object {…}, got an array"),
            (r#"{"watch": {"root": "data"}}"#, "watch.root", "must be an absolute path"),
            (r#"{"watch": {"root": "/data/../etc"}}"#, "watch.root", "must not contain `..`"),
            (r#"{"watch": {"folders": []}}"#, "watch.folders", "at least one folder"),
            (r#"{"watch": {"folders": "Sega_1"}}"#, "watch.folders", "expected an array […], got a string"),
            (r#"{"watch": {"folders": ["A", "a/b"]}}"#, "watch.folders[1]", "plain folder name"),
            (r#"{"watch": {"folders": [".."]}}"#, "watch.folders[0]", "plain folder name"),
            (r#"{"watch": {"folders": [""]}}"#, "watch.folders[0]", "must not be empty"),
            (r#"{"watch": {"folders": [7]}}"#, "watch.folders[0]", "expected a string, got 7"),
            (r#"{"watch": {"folders": ["/"]}}"#, "watch.folders[0]", "no last component"),
            (r#"{"watch": {"folders": ["Sega_1", "B", "/mnt/x/Sega_1"]}}"#, "watch.folders[2]", "label `Sega_1` is used twice"),
            (r#"{"watch": {"extensions": []}}"#, "watch.extensions", "at least one extension"),
            (r#"{"watch": {"extensions": ["jpg", "."]}}"#, "watch.extensions[1]", "must not be empty"),
            (r#"{"watch": {"extensions": ["a/b"]}}"#, "watch.extensions[0]", "must not contain `/`"),
            (r#"{"watch": {"scan_interval_secs": 0}}"#, "watch.scan_interval_secs", "must be at least 1"),
            (r#"{"watch": {"scan_interval_secs": 1.5}}"#, "watch.scan_interval_secs", "expected a whole number of seconds, got 1.5"),
            (r#"{"watch": {"scan_interval_secs": "60"}}"#, "watch.scan_interval_secs", "got \"60\""),
            (r#"{"watch": {"settle_secs": -1}}"#, "watch.settle_secs", "must not be negative"),
            (r#"{"watch": {"incomplete_max_wait_secs": 0}}"#, "watch.incomplete_max_wait_secs", "at least 1"),
            (r#"{"watch": {"lookback_days": 99999}}"#, "watch.lookback_days", "must be at most 36500"),
            (r#"{"shutdown_grace_secs": 1e18}"#, "shutdown_grace_secs", "expected a whole number of seconds"),
            (r#"{"shutdown_grace_secs": 999999999999}"#, "shutdown_grace_secs", "must be at most"),
            (r#"{"upload": {"url": 5}}"#, "upload.url", "expected a string, got 5"),
            (r#"{"upload": {"url": "ftp://h/x"}}"#, "upload.url", "must start with http:// or https://"),
            (r#"{"upload": {"workers": 0}}"#, "upload.workers", "must be at least 1"),
            (r#"{"upload": {"workers": 65}}"#, "upload.workers", "must be at most 64"),
            (r#"{"upload": {"workers": "4"}}"#, "upload.workers", "expected a whole number, got \"4\""),
            (r#"{"upload": {"connect_timeout_secs": 0}}"#, "upload.connect_timeout_secs", "at least 1"),
            (r#"{"upload": {"timeout_secs": 0}}"#, "upload.timeout_secs", "at least 1"),
            (r#"{"upload": {"min_rate_kib_s": 0}}"#, "upload.min_rate_kib_s", "at least 1"),
            (r#"{"upload": {"max_kib_s": 0}}"#, "upload.max_kib_s", "at least 1"),
            (r#"{"upload": {"order": "random"}}"#, "upload.order", "expected \"oldest_first\" or \"newest_first\", got \"random\""),
            (r#"{"upload": {"retry": {"initial_secs": 700}}}"#, "upload.retry.initial_secs", "must not exceed upload.retry.max_secs (600)"),
            (r#"{"upload": {"retry": {"max_secs": 0}}}"#, "upload.retry.max_secs", "at least 1"),
            (r#"{"upload": {"retry": {"max_attempts": -1}}}"#, "upload.retry.max_attempts", "must not be negative"),
            (r#"{"upload": {"file_field": ""}}"#, "upload.file_field", "must not be empty"),
            (r#"{"upload": {"file_field": "a\"b"}}"#, "upload.file_field", "must not contain `\"`"),
            (r#"{"upload": {"fields": []}}"#, "upload.fields", "expected an object"),
            (r#"{"upload": {"fields": {"": "x"}}}"#, "upload.fields.\"\"", "field name must not be empty"),
            (r#"{"upload": {"fields": {"a\nb": "x"}}}"#, "upload.fields.a\nb", "field name must not contain"),
            (r#"{"upload": {"fields": {"cam": "{nope}"}}}"#, "upload.fields.cam", "unknown placeholder `{nope}`"),
            (r#"{"upload": {"fields": {"cam": 5}}}"#, "upload.fields.cam", "expected a string"),
            (r#"{"upload": {"fields": {"file": "{path}"}}}"#, "upload.fields.file", "same name as upload.file_field"),
            (r#"{"upload": {"headers": {"Bad Name": "x"}}}"#, "upload.headers.Bad Name", "not a valid header name"),
            (r#"{"upload": {"headers": {"user-agent": "x"}}}"#, "upload.headers.user-agent", "cannot be set here: sega-uploader sends"),
            (r#"{"upload": {"headers": {"Idempotency-Key": "x"}}}"#, "upload.headers.Idempotency-Key", "computes it per file version"),
            (r#"{"upload": {"headers": {"Content-Type": "x"}}}"#, "upload.headers.Content-Type", "cannot be set here"),
            (r#"{"upload": {"headers": {"Host": "x"}}}"#, "upload.headers.Host", "cannot be set here"),
            (r#"{"upload": {"headers": {"X-A": "1", "x-a": "2"}}}"#, "upload.headers.x-a", "given twice"),
            (r#"{"database": {"path": "sega.db"}}"#, "database.path", "under systemd"),
            (r#"{"database": {"keep_days": 3}}"#, "database.keep_days", "greater than watch.lookback_days + 2 (= 3)"),
            (r#"{"database": {"keep_days": 0}}"#, "database.keep_days", "at least 1"),
            (r#"{"database": {"scope": " "}}"#, "database.scope", "non-empty string"),
            (r#"{"database": {"scope": 5}}"#, "database.scope", "expected a string or null, got 5"),
            (r#"{"database": {"url": "mysql://db/sega"}}"#, "database.url", "expected a postgres://"),
            (r#"{"database": {"url": "/var/lib/x.db"}}"#, "database.url", "libpq conninfo"),
            (r#"{"database": {"host": " "}}"#, "database.host", "non-empty string"),
            (r#"{"database": {"lease_secs": 2}}"#, "database.lease_secs", "at least 5"),
            (r#"{"log": {"level": "loud"}}"#, "log.level", "expected one of off, error"),
            (r#"{"log": {"file": "sega.log"}}"#, "log.file", "absolute"),
            (r#"{"metrics": {"textfile": "x.prom"}}"#, "metrics.textfile", "absolute"),
            (r#"{"alerts": {"webhook_url": "hooks.example/T0/secret"}}"#, "alerts.webhook_url", "must start with http://"),
            (r#"{"alerts": {"webhook_url": 5}}"#, "alerts.webhook_url", "got a number"),
            (r#"{"alerts": {"after_secs": 0}}"#, "alerts.after_secs", "at least 1"),
        ];
        for (patch, location, fragment) in cases {
            let found = problems(&with(patch));
            let p = &found[0];
            assert!(
                found.len() == 1 && p.location == *location && p.message.contains(fragment),
                "{patch}\n  expected {location}: …{fragment}…\n  got {found:#?}"
            );
        }
    }

    #[test]
    fn missing_url_and_non_object_top_level() {
        let cases = [
            ("{}", "upload.url", "required"),
            (r#"{"upload": {}}"#, "upload.url", "required"),
            (
                "[1]",
                "(top level)",
                "expected a JSON object {…}, got an array",
            ),
        ];
        for (text, location, fragment) in cases {
            let found = problems(text);
            assert_eq!(found.len(), 1, "{text}: {found:?}");
            assert_eq!(found[0].location, location);
            assert!(found[0].message.starts_with(fragment), "{text}: {found:?}");
        }
    }

    #[test]
    fn every_problem_is_reported_in_order() {
        let text = r#"{"watch": {"rootz": "/x", "settle_secs": "5"},
                        "upload": {"workers": 0, "headers": {"Host": "h"}},
                        "log": {"level": "loud"}, "extra": true}"#;
        let err = parse(text).unwrap_err();
        let locations: Vec<_> = err.problems.iter().map(|p| p.location.as_str()).collect();
        let expected = "extra watch.rootz watch.settle_secs upload.url upload.headers.Host \
                        upload.workers log.level";
        assert_eq!(locations, expected.split_whitespace().collect::<Vec<_>>());
        let shown = err.to_string();
        assert_eq!(shown.lines().count(), 7);
        assert!(shown
            .lines()
            .any(|l| l == "<config>: upload.workers: must be at least 1"));
    }

    #[test]
    fn bad_json_gives_line_and_column() {
        let found = problems("{\n  \"upload\": {\n    \"url\": \"http://h/\",,\n  }\n}");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location, "line 3, column 24");
        assert!(!found[0].message.is_empty() && !found[0].message.contains("at line"));
    }

    #[test]
    fn fields_and_headers_keep_config_order() {
        let c = parse(&with(
            r#"{"upload": {"fields": {"z": "{size}", "a": "lit", "m": "{date}"},
                           "headers": {"X-B": "1", "Authorization": "Bearer t", "X-A": "3"}}}"#,
        ))
        .unwrap();
        let names: Vec<_> = c.upload.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["z", "a", "m"]);
        let names: Vec<_> = c.upload.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["X-B", "Authorization", "X-A"]);
        let shown = c.redacted_json();
        let shown: Vec<_> = shown["upload"]["fields"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(shown, ["z", "a", "m"]);
    }

    #[test]
    fn templates_parse_and_render() {
        let vars = TemplateVars {
            folder: "Sega_1",
            date: "2026-11-26",
            filename: "IMG_1.jpg",
            path: "/data/Sega_1/2026-11-26/IMG_1.jpg",
            size: 1234,
        };
        let cases = [
            ("{folder}", "Sega_1"),
            ("{folder}/{date}/{filename}", "Sega_1/2026-11-26/IMG_1.jpg"),
            (
                "{path} ({size} bytes)",
                "/data/Sega_1/2026-11-26/IMG_1.jpg (1234 bytes)",
            ),
            ("{{folder}} is {folder}", "{folder} is Sega_1"),
            ("{{{size}}}", "{1234}"),
            ("plain", "plain"),
            ("", ""),
        ];
        for (raw, rendered) in cases {
            let t = Template::parse(raw).unwrap();
            assert_eq!(t.raw, raw);
            assert_eq!(t.render(&vars), rendered, "{raw}");
        }
        let pieces = [
            Piece::Text("a".into()),
            Piece::Date,
            Piece::Text("b".into()),
        ];
        assert_eq!(Template::parse("a{date}b").unwrap().pieces, pieces);
        let errors = [
            ("{host}", "unknown placeholder `{host}`"),
            ("{date", "unclosed `{`"),
            ("{a{b}", "unclosed `{`"),
            ("a}b", "unmatched `}`"),
        ];
        for (raw, fragment) in errors {
            let err = Template::parse(raw).unwrap_err();
            assert!(err.contains(fragment), "{raw}: {err}");
        }
    }

    #[test]
    fn urls_parse() {
        use Scheme::*;
        #[rustfmt::skip]
        let cases = [
            ("http://211.231.137.111:18000/upload", Http, "211.231.137.111", 18000, false),
            ("https://Upload.Example.COM/u?x=1", Https, "upload.example.com", 443, false),
            ("HTTP://host", Http, "host", 80, false),
            ("http://host:65535?q", Http, "host", 65535, false),
            ("http://[::1]:8080/up", Http, "::1", 8080, false),
            ("https://[2001:db8::7]", Https, "2001:db8::7", 443, false),
            ("https://user:p@ss@host:8443/x", Https, "host", 8443, true),
            ("http://token@[::1]/", Http, "::1", 80, true),
        ];
        for (url, scheme, host, port, creds) in cases {
            let e = Endpoint::parse(url).unwrap_or_else(|m| panic!("{url}: {m}"));
            assert_eq!(e.url.expose(), url);
            assert_eq!(
                (e.scheme, &*e.host, e.port, e.has_credentials),
                (scheme, host, port, creds)
            );
        }
        #[rustfmt::skip]
        let errors = [
            ("ftp://host/", "http:// or https://"), ("host:80/upload", "http:// or https://"),
            ("http://", "no host"), ("http://:80/", "no host"), ("http://user@/x", "no host"),
            ("http://host:0/", "1 to 65535"), ("http://host:65536/", "1 to 65535"),
            ("http://host:+80/", "1 to 65535"), ("http://host:/", "1 to 65535"),
            ("http://host/a b", "spaces"), ("http://host/#top", "fragment"),
            ("http://[::1/", "closing `]`"), ("http://[nope]/", "invalid IPv6"),
            ("http://[::1]x/", "after the IPv6"), ("http://hö.st/", "xn--"),
        ];
        for (url, fragment) in errors {
            let err = Endpoint::parse(url).expect_err(url);
            assert!(err.contains(fragment), "{url}: {err}");
        }
    }

    #[test]
    fn https_is_refused_without_tls() {
        let p = problems(&with(
            r#"{"upload": {"url": "https://up.example/u"}, "alerts": {"webhook_url": "https://h.example/x"}}"#,
        ));
        let locations: Vec<&str> = p.iter().map(|p| p.location.as_str()).collect();
        assert_eq!(locations, ["upload.url", "alerts.webhook_url"], "{p:?}");
        assert!(p[0].message.contains("no TLS"), "{p:?}");
    }

    #[test]
    fn secrets_are_redacted() {
        let c = parse(&with(
            r#"{"upload": {"url": "http://bob:hunter2@up.example/u?x=1",
                           "headers": {"Authorization": "Bearer s3cret"}},
                "alerts": {"webhook_url": "http://hooks.example/T0/s3cret"}}"#,
        ))
        .unwrap();
        let url = "http://<redacted>@up.example/u?x=1";
        assert_eq!(c.upload.url.redacted(), url);
        let shown = c.redacted_json();
        assert_eq!(shown["upload"]["url"], url);
        assert_eq!(
            shown["upload"]["headers"],
            json!({"Authorization": "<redacted>"})
        );
        assert_eq!(shown["alerts"]["webhook_url"], "<redacted>");
        for text in [shown.to_string(), format!("{c:?}")] {
            assert!(
                !text.contains("hunter2") && !text.contains("s3cret"),
                "{text}"
            );
        }
        assert!(format!("{c:?}").contains("Authorization"));

        // Error messages do not echo secrets either.
        let err = parse(&with(
            r#"{"upload": {"url": "http://bob:hunter2@h:99999/",
                           "headers": {"X-Key": "s3cret\n", "X-N": 12345}},
                "alerts": {"webhook_url": "hooks.example/s3cret"}}"#,
        ))
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 4, "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(!text.contains("12345"), "{text}");
    }

    #[test]
    fn restart_needed_names_what_reload_cannot_apply() {
        let old = parse(MINIMAL).unwrap();
        #[rustfmt::skip]
        let cases: &[(&str, &[&str])] = &[
            (r#"{"upload": {"timeout_secs": 5}, "watch": {"folders": ["X"]}}"#, &[]),
            (r#"{"upload": {"workers": 8}}"#, &["upload.workers"]),
            (r#"{"database": {"path": "/tmp/x.db", "scope": "s"}, "upload": {"workers": 1}}"#,
             &["upload.workers", "database.path", "database.scope"]),
        ];
        for (patch, keys) in cases {
            assert_eq!(
                old.restart_needed(&parse(&with(patch)).unwrap()),
                *keys,
                "{patch}"
            );
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("sega-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        #[rustfmt::skip]
        let cases = [
            ("good.json", MINIMAL.as_bytes(), None),
            ("bad.json", br#"{"upload": {}}"#.as_slice(), Some("bad.json: upload.url: required")),
            ("latin1.json", b"{\n \"a\xe9\": 1}".as_slice(), Some("latin1.json: line 2, column 4: invalid UTF-8")),
        ];
        for (name, content, expected) in cases {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            match (load(&path), expected) {
                (Ok(c), None) => assert_eq!(c, parse(MINIMAL).unwrap()),
                (Err(e), Some(fragment)) => assert!(e.to_string().contains(fragment), "{e}"),
                (other, _) => panic!("{name}: {other:?}"),
            }
        }
        let missing = dir.join("missing.json");
        let err = load(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: cannot read: ", missing.shown())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_path_precedence() {
        let (cli, env) = (Path::new("/cli.json"), || Some(OsString::from("/env.json")));
        assert_eq!(resolve_path_from(Some(cli), env()), cli);
        assert_eq!(resolve_path_from(None, env()), Path::new("/env.json"));
        let default = Path::new(DEFAULT_PATH);
        assert_eq!(resolve_path_from(None, Some(OsString::new())), default);
        assert_eq!(resolve_path_from(None, None), default);
    }

    #[test]
    fn levels_parse_in_any_case() {
        #[rustfmt::skip]
        let cases = [
            ("off", Some(LevelFilter::Off)), ("WARN", Some(LevelFilter::Warn)),
            ("Trace", Some(LevelFilter::Trace)), ("verbose", None), ("", None),
        ];
        for (s, level) in cases {
            assert_eq!(parse_level(s), level, "{s}");
        }
    }

    #[test]
    fn unknown_key_hints() {
        let known = "root folders settle_secs";
        let cases = [
            ("folder", "unknown key (did you mean `folders`?)"),
            ("settle", "unknown key (did you mean `settle_secs`?)"),
            ("zzz", "unknown key (known: root, folders, settle_secs)"),
        ];
        for (key, message) in cases {
            assert_eq!(unknown_key(key, known), message);
        }
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
