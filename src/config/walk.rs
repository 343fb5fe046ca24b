//! The walk over the config's JSON, one function per section in DESIGN §6 order: each reads
//! its keys through the [`Checker`], applies its section's rules (folder entries, header
//! names, the database URL, …) and returns typed values, recording every problem on the way.

use std::path::Path;

use log::LevelFilter;
use serde_json::Value;

use super::checker::{absolute, join, kind, Checker};
use super::template::{Piece, Template};
use super::url::Endpoint;
use super::{
    parse_level, Alerts, ClientIdentity, Database, Folder, Log, Metrics, OnMismatch, Order, Retry,
    SuccessRule, Tls, Upload, Watch,
};
use crate::secret::Secret;

/// Upper bound for day counts (a century), keeping date arithmetic far from its limits.
const MAX_DAYS: u64 = 36_500;
const MAX_WORKERS: u64 = 64;
/// KiB/s rates are multiplied by 1024 downstream; this bound keeps that far from overflow.
const MAX_KIB_S: u64 = u32::MAX as u64;

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

pub(super) fn watch(ck: &mut Checker, v: Option<&Value>) -> Watch {
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

pub(super) fn upload(ck: &mut Checker, v: Option<&Value>) -> Option<Upload> {
    let o = ck.object(
        "upload",
        v,
        "url file_field fields headers workers connect_timeout_secs timeout_secs min_rate_kib_s \
         order max_kib_s retry tls proxy success keep_alive",
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
            .and_then(|s| ck.check("upload.url", Endpoint::parse(s))),
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
    let tls = tls(ck, o.get("tls"));
    let proxy = match o.get("proxy") {
        None | Some(Value::Null) => None,
        Some(v) => ck
            .str_value("upload.proxy", v)
            .and_then(|s| ck.check("upload.proxy", Endpoint::parse(s).and_then(proxy))),
    };
    let success = success(ck, o.get("success"));
    let keep_alive = match o.get("keep_alive") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            ck.report(
                "upload.keep_alive",
                format!(
                    "expected true or false, got {}",
                    super::checker::describe(v)
                ),
            );
            true
        }
    };
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
        tls,
        success,
        proxy,
        keep_alive,
    })
}

/// `upload.proxy`: an http forward proxy, `http://[user:password@]host:port`, nothing after
/// the port. Messages never quote it: it may hold a password.
fn proxy(e: Endpoint) -> Result<Endpoint, String> {
    if e.is_https() {
        return Err(
            "must be an http:// proxy (https:// uploads go through it with CONNECT)".into(),
        );
    }
    let url = e.url.expose();
    let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
    if rest.find(['/', '?']).is_some_and(|i| rest[i..] != *"/") {
        return Err("must be http://[user:password@]host:port, with no path or query".into());
    }
    Ok(e)
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

/// `upload.tls`: absolute paths or null; a client certificate needs its key and the other
/// way round. Whether the files can be read and belong together is checked when they are
/// loaded (`tls::ClientTls::load`, `check-config`), not here: this walk does no I/O.
fn tls(ck: &mut Checker, v: Option<&Value>) -> Tls {
    let o = ck.object("upload.tls", v, "ca_file client_cert client_key");
    let ca_file = ck.opt_path(&o, "ca_file");
    let given = |key: &str| !matches!(o.get(key), None | Some(Value::Null));
    let (cert_given, key_given) = (given("client_cert"), given("client_key"));
    let cert = ck.opt_path(&o, "client_cert");
    let key = ck.opt_path(&o, "client_key");
    if cert_given && !key_given {
        ck.report(
            "upload.tls.client_key",
            "required when upload.tls.client_cert is set (the certificate's private key, PEM)",
        );
    }
    if key_given && !cert_given {
        ck.report(
            "upload.tls.client_cert",
            "required when upload.tls.client_key is set (the certificate that goes with it, PEM)",
        );
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some(ClientIdentity { cert, key }),
        _ => None,
    };
    Tls { ca_file, client }
}

/// `upload.success`: null, or which value at which JSON pointer makes a 2xx a success.
fn success(ck: &mut Checker, v: Option<&Value>) -> Option<SuccessRule> {
    if matches!(v, None | Some(Value::Null)) {
        return None;
    }
    let o = ck.object("upload.success", v, "json_pointer equals on_mismatch");
    let before = ck.problems.len();
    let json_pointer = match o.get("json_pointer") {
        None => {
            if ck.ok("upload.success") {
                ck.report(
                    "upload.success.json_pointer",
                    "required (for example \"/success\")",
                );
            }
            None
        }
        Some(v) => ck
            .str_value("upload.success.json_pointer", v)
            .and_then(|p| ck.check("upload.success.json_pointer", json_pointer(p))),
    };
    let equals = o.get("equals").cloned();
    if equals.is_none() && ck.ok("upload.success") {
        ck.report(
            "upload.success.equals",
            "required: the JSON value the answer must hold there (for example true)",
        );
    }
    let on_mismatch = match ck.string(&o, "on_mismatch", "retry") {
        Some("retry") | None => OnMismatch::Retry,
        Some("fail") => OnMismatch::Fail,
        Some(other) => {
            ck.report(
                "upload.success.on_mismatch",
                format!("expected \"retry\" or \"fail\", got {other:?}"),
            );
            OnMismatch::Retry
        }
    };
    if ck.problems.len() > before {
        return None;
    }
    Some(SuccessRule {
        json_pointer: json_pointer?.to_string(),
        equals: equals?,
        on_mismatch,
    })
}

/// An RFC 6901 JSON pointer: empty (the whole document) or `/`-separated reference tokens
/// in which `~` is only ever `~0` or `~1`.
fn json_pointer(p: &str) -> Result<&str, String> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(format!(
            "must be a JSON pointer starting with `/` (\"/{p}\"), or \"\" for the whole answer"
        ));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("has a `~` that is not `~0` (for ~) or `~1` (for /)".into());
        }
    }
    Ok(p)
}

pub(super) fn database(ck: &mut Checker, v: Option<&Value>) -> Database {
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

pub(super) fn log(ck: &mut Checker, v: Option<&Value>) -> Log {
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

pub(super) fn metrics(ck: &mut Checker, v: Option<&Value>) -> Metrics {
    let o = ck.object("metrics", v, "textfile");
    Metrics {
        textfile: ck.opt_path(&o, "textfile"),
    }
}

pub(super) fn alerts(ck: &mut Checker, v: Option<&Value>) -> Alerts {
    let o = ck.object("alerts", v, "webhook_url after_secs backlog_secs");
    // The whole webhook URL is a secret (it usually embeds a token): no message echoes it.
    let webhook_url = match o.get("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => ck.check(
            "alerts.webhook_url",
            Endpoint::parse(s).map(|_| Secret::new(s.clone())),
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

/// Day counts are bounded by `MAX_DAYS` before this, so the fallback is never taken.
fn days(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
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
