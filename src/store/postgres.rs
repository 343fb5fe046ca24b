//! The PostgreSQL ledger (`postgres` feature): one database shared by many hosts. Its schema
//! and migrations, the named operations of [`Ledger`] in PostgreSQL's dialect, the daemon's
//! advisory lock, and the connection's life (keepalives, reconnecting after an outage).
//!
//! Identity: a file is (scope, folder label, date, file name bytes). Hosts of one scope share
//! rows; every query filters by scope, so other scopes are invisible. `path` holds the path
//! as the recording host saw it; a claim hands out *this* host's path for the file, built
//! from its own folder roots, and a host only claims files of folders it watches.
//!
//! Time: the trait's times are bound as `$n::timestamptz` and read back in exactly the
//! SQLite format, so the daemon's (injectable) clock decides due times. Liveness is judged
//! by the server's clock only (`state.updated_at`, `claimed_at`): hosts' clocks may disagree.
//!
//! Connection: one `PgStore` is one libpq session, used by one thread, no runtime. An
//! operation on a lost connection fails; the next one reconnects by itself (at most one
//! attempt a second, backing off to 5 s, failing at once in between) and takes the daemon's
//! advisory lock again if it held it. The caller (the DB owner) holds its results meanwhile.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Bool, Bytea, Double, Integer, Nullable, Text};
use sha2::{Digest, Sha256};

use super::{
    identity_of, local_path, log_new_version, ClaimOrder, Claimed, Completion, Disposition,
    ErrorCause, Exported, FileRow, HostState, Identity, Ledger, ListFilter, Observation, PathAt,
    RecordStats, ResultRow, Status, Summary, RESULTS_KEPT_PER_FILE,
};
use crate::dburl;
use crate::error::{Error, Result};
use crate::layout::Version;

/// The schema version this build writes (`schema_version.version`).
pub const SCHEMA_VERSION: i64 = 2;

/// `pg_advisory_xact_lock` key that serialises migrations: two hosts starting together
/// against a fresh database must not both create the tables.
const MIGRATION_LOCK: i64 = 0x5365_6761_4d69_6772; // "SegaMigr"

/// Reconnect attempts: the first at once, then after this, doubling up to `RECONNECT_MAX`.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Listings are looked up this many names a statement (a bound array each).
const KNOWN_CHUNK: usize = 10_000;

const MIGRATIONS: &[&str] = &[
    // 1: DESIGN §4's tables keyed by (scope, folder, date, filename) instead of the path, plus
    // who recorded and who claims a row, per-host state, and a jsonb cast that yields NULL
    // instead of failing a whole batch on a body the server refuses.
    r#"
    CREATE TABLE schema_version(version integer NOT NULL);
    CREATE TABLE files(
        id bigserial PRIMARY KEY,
        scope text NOT NULL,
        folder text NOT NULL,
        date text NOT NULL,
        filename bytea NOT NULL,
        path bytea NOT NULL,
        size bigint NOT NULL,
        mtime_ns bigint NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz,
        last_error text,
        detected_at timestamptz NOT NULL,
        uploaded_at timestamptz,
        updated_at timestamptz NOT NULL,
        incomplete_since timestamptz,
        recorded_by text NOT NULL,
        claimed_host text,
        claimed_pid integer,
        claimed_at timestamptz,
        UNIQUE (scope, folder, date, filename)
    );
    CREATE INDEX files_pending_age ON files(scope, mtime_ns, id) WHERE status = 'pending';
    CREATE INDEX files_pending_due ON files(scope, next_attempt_at) WHERE status = 'pending';
    CREATE INDEX files_claimed ON files(scope, claimed_host) WHERE status = 'uploading';
    CREATE INDEX files_uploaded ON files(scope, uploaded_at) WHERE status = 'uploaded';
    CREATE INDEX files_status ON files(scope, status);
    CREATE INDEX files_date_folder ON files(scope, date, folder);
    CREATE TABLE upload_results(
        id bigserial PRIMARY KEY,
        file_id bigint NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        host text,
        attempt integer NOT NULL,
        started_at timestamptz NOT NULL,
        duration_ms bigint NOT NULL,
        http_status integer,
        response_body text,
        response_json jsonb,
        error text,
        outcome text NOT NULL
    );
    CREATE INDEX upload_results_file ON upload_results(file_id, id);
    CREATE INDEX upload_results_started ON upload_results(started_at);
    CREATE TABLE state(
        scope text NOT NULL,
        host text NOT NULL,
        key text NOT NULL,
        value text NOT NULL,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (scope, host, key)
    );
    CREATE FUNCTION sega_try_jsonb(t text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN
        RETURN t::jsonb;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END
    $$;
    "#,
    // 2: `absent`: a skipped row whose file was not there as a candidate (vanished, a
    // symlink, out of the config) is sent after all when it is seen again. (Ids come from a
    // sequence, which never hands one out twice.)
    r#"
    ALTER TABLE files ADD COLUMN absent boolean NOT NULL DEFAULT false;
    UPDATE files SET absent = true
     WHERE status = 'skipped'
       AND (last_error LIKE 'vanished%' OR last_error LIKE 'not a regular file%');
    "#,
];

/// A `timestamptz` column read back in the trait's format (`format_ts`).
fn ts(col: &str) -> String {
    format!(r#"to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#)
}

/// Why a closure run on the connection failed: the database, or something of ours (a
/// refusal, an `export` callback) that must not be mistaken for a lost connection.
enum Fail {
    Db(DieselError),
    Other(Error),
}

impl From<DieselError> for Fail {
    fn from(e: DieselError) -> Fail {
        Fail::Db(e)
    }
}

type Q<T> = std::result::Result<T, Fail>;

/// The server's or libpq's message on one line (libpq's own span several, indented, and a
/// log line must stay one line under journald).
fn message(e: &DieselError) -> String {
    match e {
        DieselError::DatabaseError(_, info) => {
            let mut m = one_line(info.message());
            if let Some(d) = info.details() {
                m = format!("{m} ({})", one_line(d));
            }
            m
        }
        other => one_line(&other.to_string()),
    }
}

/// The elements of `v` at these indexes, for one column of an `unnest` batch.
fn pick<T: Copy>(v: &[T], at: impl Iterator<Item = usize>) -> Vec<T> {
    at.map(|i| v[i]).collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Errors that mean the session is gone, whatever the statement was.
fn is_lost(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _
        ) | DieselError::BrokenTransactionManager
    )
}

/// Text for a PostgreSQL `text` column: NUL is the one character it cannot hold.
fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn pg_opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(|s| pg_text(s).into_owned())
}

/// The body to offer the jsonb column: jsonb refuses `\u0000` (and text a raw NUL). What
/// still fails the cast becomes NULL in SQL (`sega_try_jsonb`).
fn jsonb_text(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .filter(|s| !s.contains("\\u0000") && !s.contains('\0'))
        .map(str::to_owned)
}

/// The advisory lock key of one host's daemon: the first 8 bytes of a SHA-256, so that
/// (scope, host) pairs do not collide in practice and no registry of keys is needed.
pub fn lock_key(scope: &str, host: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(b"sega-uploader daemon\0");
    h.update(scope.as_bytes());
    h.update(b"\0");
    h.update(host.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What a URL or conninfo says about where the server is: (host, port, dbname), each None
/// when libpq's default applies. Never the user or password.
fn server_of(url: &str) -> (Option<String>, Option<String>, Option<String>) {
    let (mut host, mut port, mut db) = (None, None, None);
    let params: Vec<(String, String)> = if let Some(u) = dburl::url(url) {
        let (hostport, path) = u.hostpath.split_once('/').unwrap_or((u.hostpath, ""));
        if !hostport.is_empty() {
            // `[::1]:5432`, `db.example:5432`, `h1:5432,h2:5433`
            match hostport.rsplit_once(':') {
                Some((h, p)) if !p.contains(']') && !p.contains(',') && !h.is_empty() => {
                    host = Some(percent_decode(h));
                    port = Some(p.to_owned());
                }
                _ => host = Some(percent_decode(hostport)),
            }
        }
        if !path.is_empty() {
            db = Some(percent_decode(path));
        }
        u.query
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect()
    } else {
        dburl::conninfo_pairs(url).0
    };
    for (k, v) in params {
        match k.as_str() {
            "host" | "hostaddr" => host = Some(v),
            "port" => port = Some(v),
            "dbname" => db = Some(v),
            _ => {}
        }
    }
    (host, port, db)
}

/// The URL or conninfo with the session settings the daemon needs added: keepalives so a
/// dead peer is noticed in seconds (the watchdog is 30 s), not after the kernel's two hours;
/// a connect timeout; a name in `pg_stat_activity`. What the operator set wins.
fn session_conninfo(url: &str, host: &str) -> String {
    let mut wanted: Vec<(&str, String)> = vec![
        ("connect_timeout", "5".into()),
        ("keepalives", "1".into()),
        ("keepalives_idle", "5".into()),
        ("keepalives_interval", "2".into()),
        ("keepalives_count", "3".into()),
    ];
    // tcp_user_timeout (unacknowledged data, e.g. a link down mid-query) is libpq 12+; an
    // older libpq (Ubuntu 18.04 has 10) refuses the whole conninfo over an unknown key.
    if crate::libpq::version() >= 120000 {
        wanted.push(("tcp_user_timeout", "10000".into()));
    }
    wanted.push(("application_name", format!("sega-uploader/{host}")));
    let parsed = dburl::url(url);
    let given: HashSet<String> = match parsed {
        Some(u) => u
            .query
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
            .collect(),
        None => dburl::conninfo_pairs(url)
            .0
            .into_iter()
            .map(|(k, _)| k)
            .collect(),
    };
    let mut out = url.to_owned();
    // The query begins at the first `?` after the userinfo (a password may hold one).
    let mut has_query = parsed.is_some_and(|u| u.query.is_some());
    for (k, v) in wanted {
        if given.contains(k) {
            continue;
        }
        if parsed.is_some() {
            out.push(if has_query { '&' } else { '?' });
            has_query = true;
            out.push_str(&format!("{k}={}", percent_encode(&v)));
        } else {
            let v = v.replace('\\', "\\\\").replace('\'', "\\'");
            out.push_str(&format!(" {k}='{v}'"));
        }
    }
    out
}

/// Opens a session and applies the server-side limits: a statement that runs 20 s or waits
/// 5 s for a lock fails, so the DB owner (and the watchdog it feeds) is never stuck on one.
fn connect(conninfo: &str) -> std::result::Result<PgConnection, String> {
    let mut c = PgConnection::establish(conninfo).map_err(|e| one_line(&e.to_string()))?;
    // The server's side of the keepalives (no-ops over a unix socket): it drops a dead host's
    // session, and with it the host's daemon lock, in seconds rather than two hours.
    c.batch_execute(
        "SET statement_timeout = '20s'; SET lock_timeout = '5s';
         SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3",
    )
    .map_err(|e| message(&e))?;
    Ok(c)
}

/// The session and what it takes to get it back.
struct Link {
    conninfo: String,
    /// Where the server is, for messages (no password).
    place: String,
    conn: Option<PgConnection>,
    /// The daemon lock this session holds, taken again after a reconnect.
    lock_key: Option<i64>,
    /// After a reconnect the lock may still be held by our own lost session until the
    /// server notices it is dead: try again at this time.
    lock_retry_at: Option<Instant>,
    /// No reconnect attempt before this (None: at the next call).
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: String,
}

impl Link {
    /// Runs `f` on the session, reconnecting first if it was lost. A failure that left the
    /// session unusable drops it, so the next call reconnects.
    fn with<T>(&mut self, what: &str, f: impl FnOnce(&mut PgConnection) -> Q<T>) -> Result<T> {
        self.ensure(what)?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(self.not_connected(what));
        };
        match f(conn) {
            Ok(v) => Ok(v),
            Err(Fail::Other(e)) => Err(e),
            Err(Fail::Db(e)) => {
                // Server errors leave the session usable; libpq's own (a reset connection, a
                // keepalive timeout) may come with any kind, so a failed ping decides.
                let lost = is_lost(&e)
                    || AnsiTransactionManager::is_broken_transaction_manager(conn)
                    || conn.batch_execute("SELECT 1").is_err();
                if lost {
                    log::debug!("PostgreSQL session lost ({what}): {}", message(&e));
                    self.conn = None;
                    self.retry_at = None;
                    self.backoff = RECONNECT_FIRST;
                    self.last_error = message(&e);
                }
                // A constraint this statement broke is about the rows it carried, not the
                // session or the server: the caller may retry the others without it.
                let refused = matches!(
                    e,
                    DieselError::DatabaseError(
                        DatabaseErrorKind::UniqueViolation
                            | DatabaseErrorKind::ForeignKeyViolation
                            | DatabaseErrorKind::NotNullViolation
                            | DatabaseErrorKind::CheckViolation,
                        _
                    )
                );
                if refused {
                    return Err(Error::PgRefused {
                        what: what.to_owned(),
                        msg: message(&e),
                    });
                }
                Err(Error::Pg {
                    what: what.to_owned(),
                    msg: message(&e),
                })
            }
        }
    }

    fn not_connected(&self, what: &str) -> Error {
        Error::Pg {
            what: what.to_owned(),
            msg: format!(
                "not connected to PostgreSQL ({}); reconnecting",
                self.last_error
            ),
        }
    }

    /// Reconnects if the session was lost, at most once per backoff interval.
    fn ensure(&mut self, what: &str) -> Result<()> {
        if let Some(conn) = self.conn.as_mut() {
            if let (Some(key), Some(at)) = (self.lock_key, self.lock_retry_at) {
                if Instant::now() >= at {
                    match try_lock(conn, key) {
                        Ok(true) => {
                            log::info!("took this host's daemon lock again on {}", self.place);
                            self.lock_retry_at = None;
                        }
                        _ => self.lock_retry_at = Some(Instant::now() + RECONNECT_MAX),
                    }
                }
            }
            return Ok(());
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return Err(self.not_connected(what));
        }
        match connect(&self.conninfo) {
            Ok(mut c) => {
                if let Some(key) = self.lock_key {
                    match try_lock(&mut c, key) {
                        Ok(true) => self.lock_retry_at = None,
                        // Usually our own lost session, not yet noticed dead by the server
                        // (its keepalives end it in seconds); else a second daemon.
                        Ok(false) => {
                            log::warn!(
                                "reconnected to {}, but this host's daemon lock is still held by \
                                 another session (our lost one, or a second daemon for this scope \
                                 and host): trying again",
                                self.place
                            );
                            self.lock_retry_at = Some(Instant::now() + RECONNECT_MAX);
                        }
                        Err(e) => {
                            log::warn!(
                                "reconnected to {}, but taking the daemon lock again failed: {}",
                                self.place,
                                message(&e)
                            );
                            self.lock_retry_at = Some(Instant::now() + RECONNECT_MAX);
                        }
                    }
                }
                log::info!("reconnected to PostgreSQL {}", self.place);
                self.conn = Some(c);
                self.retry_at = None;
                self.backoff = RECONNECT_FIRST;
                Ok(())
            }
            Err(msg) => {
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
                self.last_error = msg.clone();
                Err(Error::Pg {
                    what: what.to_owned(),
                    msg: format!("cannot connect to {}: {msg}", self.place),
                })
            }
        }
    }
}

fn try_lock(c: &mut PgConnection, key: i64) -> QueryResult<bool> {
    sql_query("SELECT pg_try_advisory_lock($1) AS b")
        .bind::<BigInt, _>(key)
        .get_result::<Flag>(c)
        .map(|f| f.b)
}

/// Who this store is and what it may claim.
struct Ctx {
    scope: String,
    host: String,
    pid: i32,
    /// Labels of the folders this host watches: the only rows it claims.
    labels: Vec<String>,
    roots: HashMap<String, PathBuf>,
    lease_ms: i64,
    lock_key: i64,
}

impl Ctx {
    /// This host's path for a file, or the recording host's when the folder is not ours.
    fn path(&self, folder: &str, date: &str, filename: &[u8], stored: &[u8]) -> PathBuf {
        local_path(
            &self.roots,
            folder,
            date,
            &OsString::from_vec(filename.to_vec()),
        )
        .unwrap_or_else(|| PathBuf::from(OsString::from_vec(stored.to_vec())))
    }
}

pub struct PgStore {
    link: Link,
    ctx: Ctx,
    /// "PostgreSQL database sega on db.example:5432 (scope …, host …)".
    description: String,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    b: bool,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct OptText {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct ClaimRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    folder: String,
    #[diesel(sql_type = Text)]
    date: String,
    #[diesel(sql_type = Bytea)]
    filename: Vec<u8>,
    #[diesel(sql_type = Bytea)]
    path: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    size: i64,
    #[diesel(sql_type = BigInt)]
    mtime_ns: i64,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    incomplete_since: Option<String>,
}

fn claim_returning() -> String {
    format!(
        "RETURNING id, folder, date, filename, path, size, mtime_ns, attempts::bigint AS attempts, \
         {} AS incomplete_since",
        ts("incomplete_since")
    )
}

#[derive(QueryableByName)]
struct FileRec {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Bytea)]
    path: Vec<u8>,
    #[diesel(sql_type = Text)]
    folder: String,
    #[diesel(sql_type = Text)]
    date: String,
    #[diesel(sql_type = Bytea)]
    filename: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    size: i64,
    #[diesel(sql_type = BigInt)]
    mtime_ns: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    next_attempt_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Text)]
    detected_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    uploaded_at: Option<String>,
    #[diesel(sql_type = Text)]
    updated_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    host: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    incomplete_since: Option<String>,
    #[diesel(sql_type = Bool)]
    absent: bool,
}

fn file_columns() -> String {
    format!(
        "id, path, folder, date, filename, size, mtime_ns, status, attempts::bigint AS attempts, \
         {} AS next_attempt_at, last_error, {} AS detected_at, {} AS uploaded_at, \
         {} AS updated_at, coalesce(claimed_host, recorded_by) AS host, {} AS incomplete_since, \
         absent",
        ts("next_attempt_at"),
        ts("detected_at"),
        ts("uploaded_at"),
        ts("updated_at"),
        ts("incomplete_since"),
    )
}

impl FileRec {
    /// The row, its `incomplete_since` and its `absent`.
    fn into_row(self, ctx: &Ctx) -> (FileRow, Option<String>, bool) {
        let path = ctx.path(&self.folder, &self.date, &self.filename, &self.path);
        (
            FileRow {
                id: self.id,
                path,
                folder: self.folder,
                date: self.date,
                filename: OsString::from_vec(self.filename),
                size: self.size,
                mtime_ns: self.mtime_ns,
                status: self.status,
                attempts: self.attempts,
                next_attempt_at: self.next_attempt_at,
                last_error: self.last_error,
                detected_at: self.detected_at,
                uploaded_at: self.uploaded_at,
                updated_at: self.updated_at,
                host: self.host,
            },
            self.incomplete_since,
            self.absent,
        )
    }
}

#[derive(QueryableByName)]
struct ResultRec {
    #[diesel(sql_type = BigInt)]
    file_id: i64,
    #[diesel(sql_type = BigInt)]
    attempt: i64,
    #[diesel(sql_type = Text)]
    started_at: String,
    #[diesel(sql_type = BigInt)]
    duration_ms: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    http_status: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    response_body: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    response_json: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = Text)]
    outcome: String,
}

#[derive(QueryableByName)]
struct Existing {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    folder: String,
    #[diesel(sql_type = Text)]
    date: String,
    #[diesel(sql_type = Bytea)]
    filename: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    size: i64,
    #[diesel(sql_type = BigInt)]
    mtime_ns: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Bool)]
    absent: bool,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    next_attempt_at: Option<String>,
}

#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = Text)]
    #[allow(dead_code)] // returned for the count; the names are not needed
    folder: String,
}

#[derive(QueryableByName)]
struct PathAtRec {
    #[diesel(sql_type = Text)]
    folder: String,
    #[diesel(sql_type = Text)]
    date: String,
    #[diesel(sql_type = Bytea)]
    filename: Vec<u8>,
    #[diesel(sql_type = Bytea)]
    path: Vec<u8>,
    #[diesel(sql_type = Text)]
    at: String,
    #[diesel(sql_type = Nullable<Text>)]
    detail: Option<String>,
}

impl PathAtRec {
    fn into_path_at(self, ctx: &Ctx) -> PathAt {
        PathAt {
            path: ctx.path(&self.folder, &self.date, &self.filename, &self.path),
            at: self.at,
            detail: self.detail,
        }
    }
}

#[derive(QueryableByName)]
struct CountRec {
    #[diesel(sql_type = Text)]
    folder: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct CauseRec {
    #[diesel(sql_type = Text)]
    cause: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Bytea)]
    example: Vec<u8>,
}

#[derive(QueryableByName)]
struct StateRec {
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    value: String,
    #[diesel(sql_type = Text)]
    updated_at: String,
    #[diesel(sql_type = Double)]
    age: f64,
}

#[derive(QueryableByName)]
struct HostCount {
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct LockRec {
    #[diesel(sql_type = BigInt)]
    hi: i64,
    #[diesel(sql_type = BigInt)]
    lo: i64,
}

#[derive(QueryableByName)]
struct Holder {
    #[diesel(sql_type = Nullable<Integer>)]
    backend: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    addr: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    daemon_pid: Option<String>,
}

#[derive(QueryableByName)]
struct TakenOver {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    from_host: Option<String>,
}

/// Keeps each file's latest `RESULTS_KEPT_PER_FILE` results.
fn trim_results(c: &mut PgConnection, file_ids: &[i64]) -> QueryResult<usize> {
    if file_ids.is_empty() {
        return Ok(0);
    }
    sql_query(
        "DELETE FROM upload_results WHERE id IN (
             SELECT id FROM (
                 SELECT id, row_number() OVER (PARTITION BY file_id ORDER BY id DESC) AS rn
                 FROM upload_results WHERE file_id = ANY($1)) ranked
             WHERE rn > $2)",
    )
    .bind::<Array<BigInt>, _>(file_ids)
    .bind::<BigInt, _>(RESULTS_KEPT_PER_FILE)
    .execute(c)
}

fn migrate(c: &mut PgConnection) -> Q<()> {
    c.transaction::<_, Fail, _>(|c| {
        sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<BigInt, _>(MIGRATION_LOCK)
            .execute(c)?;
        let ours = sql_query("SELECT to_regclass('schema_version') IS NOT NULL AS b")
            .get_result::<Flag>(c)?
            .b;
        let version = if ours {
            sql_query("SELECT coalesce(max(version), 0)::bigint AS n FROM schema_version")
                .get_result::<Count>(c)?
                .n
        } else {
            // An empty database is ours to initialise; one with someone else's `files` is
            // not: refusing beats mixing two programs' data.
            let foreign = sql_query("SELECT to_regclass('files') IS NOT NULL AS b")
                .get_result::<Flag>(c)?
                .b;
            if foreign {
                return Err(Fail::Other(Error::Other(
                    "has a `files` table but no sega-uploader schema version: not our database"
                        .into(),
                )));
            }
            0
        };
        if version > SCHEMA_VERSION {
            return Err(Fail::Other(Error::Other(format!(
                "has schema version {version}, newer than this sega-uploader understands \
                 ({SCHEMA_VERSION}): upgrade sega-uploader on this host instead of downgrading \
                 the database"
            ))));
        }
        for step in MIGRATIONS.iter().skip(version as usize) {
            c.batch_execute(step)?;
        }
        if version != SCHEMA_VERSION {
            sql_query("DELETE FROM schema_version").execute(c)?;
            sql_query("INSERT INTO schema_version(version) VALUES ($1)")
                .bind::<Integer, _>(SCHEMA_VERSION as i32)
                .execute(c)?;
        }
        Ok(())
    })
}

impl PgStore {
    /// Connects (an unreachable server is an error: the daemon exits and systemd retries),
    /// applies migrations, and returns the store. `roots`: this host's folder label → root.
    pub fn open(
        url: &str,
        identity: Identity,
        roots: HashMap<String, PathBuf>,
        lease: Duration,
    ) -> Result<PgStore> {
        let (host, port, db) = server_of(url);
        let place_host = match host.as_deref() {
            None | Some("") => "the local socket".to_owned(),
            Some(h) => h.to_owned(),
        };
        let place_port = port.unwrap_or_else(|| "5432".into());
        let place = format!("{place_host}:{place_port}");
        let conninfo = session_conninfo(url, &identity.host);
        let mut conn = connect(&conninfo).map_err(|msg| Error::Pg {
            what: format!(
                "connecting to PostgreSQL at {place} ({})",
                crate::config::redact_db_url(url)
            ),
            msg,
        })?;
        let what = format!("preparing the PostgreSQL database at {place}");
        let db = match sql_query("SELECT current_database() AS v").get_result::<OptText>(&mut conn)
        {
            Ok(r) => r.v.or(db).unwrap_or_default(),
            Err(e) => {
                return Err(Error::Pg {
                    what,
                    msg: message(&e),
                })
            }
        };
        match migrate(&mut conn) {
            Ok(()) => {}
            Err(Fail::Db(e)) => {
                return Err(Error::Pg {
                    what,
                    msg: message(&e),
                })
            }
            Err(Fail::Other(e)) => {
                return Err(Error::Pg {
                    what: format!("PostgreSQL database {db} on {place}"),
                    msg: e.to_string(),
                })
            }
        }
        let mut labels: Vec<String> = roots.keys().cloned().collect();
        labels.sort();
        let description = format!(
            "PostgreSQL database {db} on {place} (scope {}, host {})",
            identity.scope, identity.host
        );
        Ok(PgStore {
            link: Link {
                conninfo,
                place: format!("database {db} on {place}"),
                conn: Some(conn),
                lock_key: None,
                lock_retry_at: None,
                retry_at: None,
                backoff: RECONNECT_FIRST,
                last_error: String::new(),
            },
            ctx: Ctx {
                lock_key: lock_key(&identity.scope, &identity.host),
                scope: identity.scope,
                host: identity.host,
                pid: std::process::id() as i32,
                labels,
                roots,
                lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
            },
            description,
        })
    }

    /// Takes this (scope, host)'s daemon lock, a session-level advisory lock: Ok(None) when
    /// taken, Ok(Some(holder)) when another session holds it. It dies with the session (a
    /// crashed or partitioned daemon frees it) and is taken again after a reconnect.
    pub fn lock_daemon(&mut self) -> Result<Option<String>> {
        let key = self.ctx.lock_key;
        if self.link.lock_key == Some(key) {
            return Ok(None);
        }
        let got = self
            .link
            .with("taking the daemon lock", |c| Ok(try_lock(c, key)?))?;
        if got {
            self.link.lock_key = Some(key);
            return Ok(None);
        }
        let ctx = &self.ctx;
        let holder = self.link.with("finding the daemon lock's holder", |c| {
            Ok(sql_query(
                "SELECT l.pid AS backend, a.client_addr::text AS addr,
                    (SELECT value FROM state WHERE scope = $2 AND host = $3 AND key = 'pid') AS daemon_pid
                 FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND l.classid::bigint = (($1 >> 32) & 4294967295)
                   AND l.objid::bigint = ($1 & 4294967295)
                 LIMIT 1",
            )
            .bind::<BigInt, _>(key)
            .bind::<Text, _>(&ctx.scope)
            .bind::<Text, _>(&ctx.host)
            .get_result::<Holder>(c)
            .optional()?)
        })?;
        let mut who = match holder.as_ref().and_then(|h| h.daemon_pid.as_deref()) {
            Some(pid) if !pid.is_empty() => format!("pid {pid} on host {}", self.ctx.host),
            _ => format!("a daemon for host {}", self.ctx.host),
        };
        if let Some(h) = &holder {
            if let Some(backend) = h.backend {
                who += &format!(", database session {backend}");
            }
            if let Some(addr) = &h.addr {
                who += &format!(" from {addr}");
            }
        }
        Ok(Some(who))
    }

    /// Test access to the raw session (stale heartbeats, terminated backends).
    #[cfg(test)]
    pub(crate) fn exec_for_test(&mut self, sql: &str) -> Result<()> {
        self.link
            .with("test statement", |c| Ok(c.batch_execute(sql)?))
    }

    #[cfg(test)]
    pub(crate) fn backend_pid_for_test(&mut self) -> Result<i64> {
        self.link.with("test statement", |c| {
            Ok(sql_query("SELECT pg_backend_pid()::bigint AS n")
                .get_result::<Count>(c)?
                .n)
        })
    }

    /// Claimed rows as the trait hands them out: this host's path, upload order.
    fn claimed(&self, rows: Vec<ClaimRow>) -> Vec<Claimed> {
        rows.into_iter()
            .map(|r| Claimed {
                id: r.id,
                path: self.ctx.path(&r.folder, &r.date, &r.filename, &r.path),
                folder: r.folder,
                date: r.date,
                filename: OsString::from_vec(r.filename),
                version: Version {
                    size: r.size.max(0) as u64,
                    mtime_ns: r.mtime_ns,
                },
                attempt: r.attempts,
                incomplete_since: r.incomplete_since,
            })
            .collect()
    }
}

impl Ledger for PgStore {
    fn set_folders(&mut self, roots: HashMap<String, PathBuf>) {
        let mut labels: Vec<String> = roots.keys().cloned().collect();
        labels.sort();
        self.ctx.labels = labels;
        self.ctx.roots = roots;
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    /// Records a batch in one transaction: one upsert over the whole batch (new rows, new
    /// versions), then one update making unchanged settling rows due (inotify said done).
    fn record(&mut self, batch: &[Observation], now: &str) -> Result<RecordStats> {
        let mut stats = RecordStats::default();
        if batch.is_empty() {
            return Ok(stats);
        }
        // One observation per file, the last one seen (an earlier duplicate counts as
        // unchanged), in identity order: hosts recording the same files at once then wait on
        // each other's new rows in one order, never in a cycle (a deadlock).
        let mut last: BTreeMap<(&str, &str, &[u8]), (&Observation, bool)> = BTreeMap::new();
        for obs in batch {
            let key = (
                obs.folder.as_str(),
                obs.date.as_str(),
                obs.filename.as_bytes(),
            );
            match last.get_mut(&key) {
                Some(e) => {
                    *e = (obs, e.1 || obs.via_event);
                    stats.unchanged += 1;
                }
                None => {
                    last.insert(key, (obs, obs.via_event));
                }
            }
        }
        let dedup: Vec<(&Observation, bool)> = last.into_values().collect();
        let folders: Vec<&str> = dedup.iter().map(|(o, _)| o.folder.as_str()).collect();
        let dates: Vec<&str> = dedup.iter().map(|(o, _)| o.date.as_str()).collect();
        let names: Vec<&[u8]> = dedup.iter().map(|(o, _)| o.filename.as_bytes()).collect();
        let paths: Vec<&[u8]> = dedup
            .iter()
            .map(|(o, _)| o.path.as_os_str().as_bytes())
            .collect();
        let sizes: Vec<i64> = dedup.iter().map(|(o, _)| o.version.size as i64).collect();
        let mtimes: Vec<i64> = dedup.iter().map(|(o, _)| o.version.mtime_ns).collect();
        let ready: Vec<&str> = dedup.iter().map(|(o, _)| o.ready_at.as_str()).collect();
        let ctx = &self.ctx;
        let (inserted, changed, made_due) = self.link.with("recording files", |c| {
            c.transaction::<_, Fail, _>(|c| {
                // What is recorded already, read without locking anything: another host
                // claiming and completing these rows is never waited for (an upsert's DO
                // UPDATE locks every conflicting row, even when its WHERE is false).
                let existing: Vec<Existing> = sql_query(
                    "SELECT f.id, f.folder, f.date, f.filename, f.size, f.mtime_ns, f.status,
                         f.absent, f.attempts, to_char(f.next_attempt_at AT TIME ZONE 'UTC',
                             'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS next_attempt_at
                     FROM files f
                     JOIN unnest($2::text[], $3::text[], $4::bytea[]) AS u(folder, date, filename)
                       ON f.scope = $1 AND f.folder = u.folder AND f.date = u.date
                      AND f.filename = u.filename",
                )
                .bind::<Text, _>(&ctx.scope)
                .bind::<Array<Text>, _>(&folders)
                .bind::<Array<Text>, _>(&dates)
                .bind::<Array<Bytea>, _>(&names)
                .load(c)?;
                let known: HashMap<(&str, &str, &[u8]), &Existing> = existing
                    .iter()
                    .map(|e| ((e.folder.as_str(), e.date.as_str(), e.filename.as_slice()), e))
                    .collect();
                // New files. A row another host inserts meanwhile is left to it.
                let fresh: Vec<usize> = (0..dedup.len())
                    .filter(|&i| !known.contains_key(&(folders[i], dates[i], names[i])))
                    .collect();
                let inserted: Vec<Key> = if fresh.is_empty() {
                    Vec::new()
                } else {
                    let at = || fresh.iter().copied();
                    sql_query(
                        "INSERT INTO files (scope, folder, date, filename, path, size, mtime_ns,
                             status, attempts, next_attempt_at, detected_at, updated_at, recorded_by)
                         SELECT $1, folder, date, filename, path, size, mtime_ns, 'pending', 0,
                             ready_at::timestamptz, $9::timestamptz, $9::timestamptz, $10
                         FROM unnest($2::text[], $3::text[], $4::bytea[], $5::bytea[],
                             $6::bigint[], $7::bigint[], $8::text[]) WITH ORDINALITY
                             AS u(folder, date, filename, path, size, mtime_ns, ready_at, n)
                         ORDER BY n
                         ON CONFLICT (scope, folder, date, filename) DO NOTHING
                         RETURNING folder, date, filename",
                    )
                    .bind::<Text, _>(&ctx.scope)
                    .bind::<Array<Text>, _>(pick(&folders, at()))
                    .bind::<Array<Text>, _>(pick(&dates, at()))
                    .bind::<Array<Bytea>, _>(pick(&names, at()))
                    .bind::<Array<Bytea>, _>(pick(&paths, at()))
                    .bind::<Array<BigInt>, _>(pick(&sizes, at()))
                    .bind::<Array<BigInt>, _>(pick(&mtimes, at()))
                    .bind::<Array<Text>, _>(pick(&ready, at()))
                    .bind::<Text, _>(now)
                    .bind::<Text, _>(&ctx.host)
                    .load(c)?
                };
                // New versions of known files (rare), and known files reported complete by
                // inotify while they settle (made due now). Both lock their rows first, in id
                // order, as every multi-row writer here does.
                let mut versions: Vec<(i64, usize)> = Vec::new();
                let mut due: Vec<i64> = Vec::new();
                for (i, (_, via_event)) in dedup.iter().enumerate() {
                    let Some(e) = known.get(&(folders[i], dates[i], names[i])) else {
                        continue;
                    };
                    if (e.size, e.mtime_ns) != (sizes[i], mtimes[i]) || e.absent {
                        versions.push((e.id, i));
                    } else if *via_event
                        && e.status == "pending"
                        && e.attempts == 0
                        && e.next_attempt_at.as_deref().is_some_and(|t| t > now)
                    {
                        due.push(e.id);
                    }
                }
                versions.sort_unstable();
                due.sort_unstable();
                let mut changed = Vec::new();
                if !versions.is_empty() {
                    let ids: Vec<i64> = versions.iter().map(|v| v.0).collect();
                    let at = || versions.iter().map(|&(_, i)| i);
                    let updated: Vec<Id> = sql_query(
                        "WITH locked AS (
                             SELECT id FROM files WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE
                         )
                         UPDATE files f SET path = u.path, size = u.size, mtime_ns = u.mtime_ns,
                             status = 'pending', attempts = 0,
                             next_attempt_at = u.ready_at::timestamptz, last_error = NULL,
                             uploaded_at = NULL, incomplete_since = NULL, absent = false,
                             updated_at = $6::timestamptz, recorded_by = $7,
                             claimed_host = NULL, claimed_pid = NULL, claimed_at = NULL
                         FROM unnest($1::bigint[], $2::bytea[], $3::bigint[], $4::bigint[],
                                 $5::text[]) AS u(id, path, size, mtime_ns, ready_at)
                         WHERE f.id = u.id AND f.id IN (SELECT id FROM locked)
                           AND ((f.size, f.mtime_ns) IS DISTINCT FROM (u.size, u.mtime_ns)
                                OR f.absent)
                         RETURNING f.id",
                    )
                    .bind::<Array<BigInt>, _>(&ids)
                    .bind::<Array<Bytea>, _>(pick(&paths, at()))
                    .bind::<Array<BigInt>, _>(pick(&sizes, at()))
                    .bind::<Array<BigInt>, _>(pick(&mtimes, at()))
                    .bind::<Array<Text>, _>(pick(&ready, at()))
                    .bind::<Text, _>(now)
                    .bind::<Text, _>(&ctx.host)
                    .load(c)?;
                    let updated: HashSet<i64> = updated.into_iter().map(|r| r.id).collect();
                    for (id, i) in &versions {
                        if let (true, Some(e)) = (
                            updated.contains(id),
                            known.get(&(folders[*i], dates[*i], names[*i])),
                        ) {
                            changed.push((*i, e.size, e.mtime_ns, e.status.clone(), e.absent));
                        }
                    }
                }
                let made_due = if due.is_empty() {
                    0
                } else {
                    sql_query(
                        "WITH locked AS (
                             SELECT id FROM files WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE
                         )
                         UPDATE files SET next_attempt_at = $2::timestamptz,
                             updated_at = $2::timestamptz
                         WHERE id IN (SELECT id FROM locked) AND status = 'pending'
                           AND attempts = 0 AND next_attempt_at > $2::timestamptz",
                    )
                    .bind::<Array<BigInt>, _>(&due)
                    .bind::<Text, _>(now)
                    .execute(c)?
                };
                Ok((inserted.len(), changed, made_due))
            })
        })?;
        stats.new = inserted;
        for (i, size, mtime_ns, old_status, absent) in &changed {
            let o = dedup[*i].0;
            let old = Version {
                size: *size as u64,
                mtime_ns: *mtime_ns,
            };
            log_new_version(&o.path, old, old_status, *absent, o.version);
        }
        stats.new_versions = changed.len();
        stats.made_due = made_due;
        stats.unchanged += dedup
            .len()
            .saturating_sub(inserted + changed.len() + made_due);
        Ok(stats)
    }

    /// Which listed files of one date folder are recorded with the version they have now,
    /// by file name (the identity; this host's path may differ from the recording host's).
    fn known_among(
        &mut self,
        folder: &str,
        date: &str,
        listed: &[(&[u8], Version)],
    ) -> Result<Vec<bool>> {
        let mut known = vec![false; listed.len()];
        let ctx = &self.ctx;
        for (chunk_no, chunk) in listed.chunks(KNOWN_CHUNK).enumerate() {
            let names: Vec<&[u8]> = chunk
                .iter()
                .map(|(p, _)| Path::new(std::ffi::OsStr::from_bytes(p)))
                .map(|p| p.file_name().map_or(&[][..], |n| n.as_bytes()))
                .collect();
            let sizes: Vec<i64> = chunk.iter().map(|(_, v)| v.size as i64).collect();
            let mtimes: Vec<i64> = chunk.iter().map(|(_, v)| v.mtime_ns).collect();
            let hits: Vec<Id> = self.link.with("reading known files", |c| {
                Ok(sql_query(
                    "SELECT (u.i - 1) AS id
                     FROM unnest($4::bytea[], $5::bigint[], $6::bigint[]) WITH ORDINALITY
                         AS u(filename, size, mtime_ns, i)
                     JOIN files f ON f.scope = $1 AND f.folder = $2 AND f.date = $3
                         AND f.filename = u.filename
                     WHERE f.size = u.size AND f.mtime_ns = u.mtime_ns AND NOT f.absent",
                )
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(folder)
                .bind::<Text, _>(date)
                .bind::<Array<Bytea>, _>(&names)
                .bind::<Array<BigInt>, _>(&sizes)
                .bind::<Array<BigInt>, _>(&mtimes)
                .load(c)?)
            })?;
            for h in hits {
                if let Some(k) = usize::try_from(h.id)
                    .ok()
                    .and_then(|i| known.get_mut(chunk_no * KNOWN_CHUNK + i))
                {
                    *k = true;
                }
            }
        }
        Ok(known)
    }

    fn recheck(&mut self, path: &Path, now: &str) -> Result<bool> {
        let Some((folder, date, name)) = identity_of(path) else {
            return Ok(false);
        };
        let scope = &self.ctx.scope;
        let n = self.link.with("re-checking a file", |c| {
            Ok(sql_query(
                "UPDATE files SET next_attempt_at = $5::timestamptz, updated_at = $5::timestamptz
                 WHERE scope = $1 AND folder = $2 AND date = $3 AND filename = $4
                   AND status = 'pending' AND attempts > 0 AND next_attempt_at > $5::timestamptz",
            )
            .bind::<Text, _>(scope)
            .bind::<Text, _>(&folder)
            .bind::<Text, _>(&date)
            .bind::<Bytea, _>(name.as_bytes())
            .bind::<Text, _>(now)
            .execute(c)?)
        })?;
        Ok(n > 0)
    }

    /// Claims up to `limit` due rows of this host's folders. `FOR UPDATE SKIP LOCKED`: two
    /// hosts claiming at once each get rows the other did not, without waiting on each
    /// other; `ARRAY(…)` evaluates the pick once.
    fn claim_due(
        &mut self,
        now: &str,
        far: &str,
        limit: usize,
        order: ClaimOrder,
    ) -> Result<Vec<Claimed>> {
        let by = match order {
            ClaimOrder::OldestFile => "mtime_ns ASC, id ASC",
            ClaimOrder::NewestFile => "mtime_ns DESC, id DESC",
            ClaimOrder::LongestWaiting => "next_attempt_at ASC, id ASC",
        };
        let sql = format!(
            "UPDATE files SET status = 'uploading', attempts = attempts + 1, claimed_host = $4,
                 claimed_pid = $5, claimed_at = now(), updated_at = $2::timestamptz
             WHERE id = ANY(ARRAY(
                 SELECT id FROM files
                 WHERE scope = $1 AND status = 'pending'
                   AND (next_attempt_at <= $2::timestamptz OR next_attempt_at > $7::timestamptz)
                   AND folder = ANY($3)
                 ORDER BY {by} LIMIT $6
                 FOR UPDATE SKIP LOCKED))
             {}",
            claim_returning()
        );
        let ctx = &self.ctx;
        let rows: Vec<ClaimRow> = self.link.with("claiming files", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(now)
                .bind::<Array<Text>, _>(&ctx.labels)
                .bind::<Text, _>(&ctx.host)
                .bind::<Integer, _>(ctx.pid)
                .bind::<BigInt, _>(limit as i64)
                .bind::<Text, _>(far)
                .load(c)?)
        })?;
        let mut claimed = self.claimed(rows);
        // RETURNING gives no order guarantee.
        claimed.sort_by_key(|c| (c.version.mtime_ns, c.id));
        if order == ClaimOrder::NewestFile {
            claimed.reverse();
        }
        Ok(claimed)
    }

    fn claim_ids(&mut self, ids: &[i64], now: &str) -> Result<Vec<Claimed>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE files SET status = 'uploading', attempts = attempts + 1, claimed_host = $4,
                 claimed_pid = $5, claimed_at = now(), updated_at = $2::timestamptz
             WHERE id = ANY($6) AND scope = $1 AND status = 'pending' AND folder = ANY($3)
             {}",
            claim_returning()
        );
        let ctx = &self.ctx;
        let rows: Vec<ClaimRow> = self.link.with("claiming files", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(now)
                .bind::<Array<Text>, _>(&ctx.labels)
                .bind::<Text, _>(&ctx.host)
                .bind::<Integer, _>(ctx.pid)
                .bind::<Array<BigInt>, _>(ids)
                .load(c)?)
        })?;
        // In the order asked for, as SQLite's one-by-one claims return them.
        let pos: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut claimed = self.claimed(rows);
        claimed.sort_by_key(|c| pos.get(&c.id).copied().unwrap_or(usize::MAX));
        Ok(claimed)
    }

    fn due_ids(
        &mut self,
        now: &str,
        far: &str,
        dates: &[String],
        newest_first: bool,
    ) -> Result<Vec<i64>> {
        let order = if newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT id FROM files
             WHERE scope = $1 AND status = 'pending'
               AND (next_attempt_at <= $2::timestamptz OR next_attempt_at > $5::timestamptz)
               AND folder = ANY($3) AND (cardinality($4::text[]) = 0 OR date = ANY($4))
             ORDER BY mtime_ns {order}, id {order}"
        );
        let ctx = &self.ctx;
        let rows: Vec<Id> = self.link.with("listing due files", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(now)
                .bind::<Array<Text>, _>(&ctx.labels)
                .bind::<Array<Text>, _>(dates)
                .bind::<Text, _>(far)
                .load(c)?)
        })?;
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// When the next pending row of this host's folders becomes due (rows it cannot claim
    /// must not keep waking it).
    fn next_due(&mut self) -> Result<Option<String>> {
        let ctx = &self.ctx;
        let sql = format!(
            "SELECT {} AS v FROM files WHERE scope = $1 AND status = 'pending' AND folder = ANY($2)",
            ts("min(next_attempt_at)")
        );
        let r: OptText = self.link.with("finding the next due file", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Array<Text>, _>(&ctx.labels)
                .get_result(c)?)
        })?;
        Ok(r.v)
    }

    /// Applies a batch of completions in one transaction, as SQLite does, and only where
    /// this process still holds the claim: a host whose claims were taken over (its lease
    /// ran out) must not overwrite the new owner's state. The attempt is recorded either way.
    fn complete(&mut self, batch: &[Completion], now: &str) -> Result<Vec<i64>> {
        let ctx = &self.ctx;
        self.link.with("saving upload results", |c| {
            c.transaction::<_, Fail, _>(|c| {
                let mut trimmed = Vec::new();
                // Rows in id order, as every multi-row writer takes them: no lock cycle with
                // another host's transaction (stable: one file's completions keep their order).
                let mut ordered: Vec<&Completion> = batch.iter().collect();
                ordered.sort_by_key(|done| done.file_id);
                for done in ordered {
                    if let Some(outcome) = done.result.map(|r| r.as_str()) {
                        // A row pruned by another host since the claim has nowhere to go.
                        let n = sql_query(
                            "INSERT INTO upload_results(file_id, host, attempt, started_at,
                                 duration_ms, http_status, response_body, response_json, error, outcome)
                             SELECT $1, $2, $3, $4::timestamptz, $5, $6, $7, sega_try_jsonb($8), $9, $10
                             WHERE EXISTS (SELECT 1 FROM files WHERE id = $1 AND scope = $11)",
                        )
                        .bind::<BigInt, _>(done.file_id)
                        .bind::<Text, _>(&ctx.host)
                        .bind::<Integer, _>(i32::try_from(done.attempt).unwrap_or(i32::MAX))
                        .bind::<Text, _>(&done.started_at)
                        .bind::<BigInt, _>(done.duration_ms)
                        .bind::<Nullable<Integer>, _>(done.http_status.map(i32::from))
                        .bind::<Nullable<Text>, _>(pg_opt(&done.response_body))
                        .bind::<Nullable<Text>, _>(jsonb_text(&done.response_json))
                        .bind::<Nullable<Text>, _>(pg_opt(&done.error))
                        .bind::<Text, _>(outcome)
                        .bind::<Text, _>(&ctx.scope)
                        .execute(c)?;
                        if n > 0 {
                            trimmed.push(done.file_id);
                        }
                    }
                    update_for(done, now, ctx).execute(c)?;
                }
                trimmed.sort_unstable();
                trimmed.dedup();
                trim_results(c, &trimmed)?;
                // Rows pruned (by any host) since their claim: nothing above touched them.
                let ids: Vec<i64> = batch.iter().map(|d| d.file_id).collect();
                let present: HashSet<i64> =
                    sql_query("SELECT id FROM files WHERE id = ANY($1) AND scope = $2")
                        .bind::<Array<BigInt>, _>(&ids)
                        .bind::<Text, _>(&ctx.scope)
                        .load::<Id>(c)?
                        .into_iter()
                        .map(|r| r.id)
                        .collect();
                Ok(ids.into_iter().filter(|id| !present.contains(id)).collect())
            })
        })
    }

    /// Gives claimed rows that no worker started back to `pending`, as if never claimed.
    fn unclaim(&mut self, ids: &[i64], now: &str) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ctx = &self.ctx;
        self.link.with("returning unstarted work", |c| {
            sql_query(
                "UPDATE files SET status = 'pending', attempts = greatest(attempts - 1, 0),
                     updated_at = $3::timestamptz, claimed_host = NULL, claimed_pid = NULL,
                     claimed_at = NULL
                 WHERE id = ANY($1) AND scope = $2 AND status = 'uploading' AND claimed_host = $4",
            )
            .bind::<Array<BigInt>, _>(ids)
            .bind::<Text, _>(&ctx.scope)
            .bind::<Text, _>(now)
            .bind::<Text, _>(&ctx.host)
            .execute(c)?;
            Ok(())
        })
    }

    /// This host's rows left `uploading` (any of its processes: a crashed daemon's too) go
    /// back to `pending`, due now, each with an `interrupted` result row. Other hosts' claims
    /// are theirs (or `take_over_stale`'s).
    fn reset_uploading(&mut self, ids: Option<&[i64]>, now: &str, error: &str) -> Result<usize> {
        let ctx = &self.ctx;
        let error = pg_text(error);
        self.link.with("resetting interrupted uploads", |c| {
            c.transaction::<_, Fail, _>(|c| {
                let reset: Vec<Id> = sql_query(
                    "WITH reset AS (
                         UPDATE files SET status = 'pending', next_attempt_at = $4::timestamptz,
                             last_error = $5, updated_at = $4::timestamptz
                         WHERE scope = $1 AND status = 'uploading' AND claimed_host = $2
                           AND ($3::bigint[] IS NULL OR id = ANY($3))
                         RETURNING id, attempts)
                     INSERT INTO upload_results(file_id, host, attempt, started_at, duration_ms,
                         error, outcome)
                     SELECT id, $2, attempts, $4::timestamptz, 0, $5, 'retry' FROM reset
                     RETURNING file_id AS id",
                )
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(&ctx.host)
                .bind::<Nullable<Array<BigInt>>, _>(ids)
                .bind::<Text, _>(now)
                .bind::<Text, _>(&*error)
                .load(c)?;
                let ids: Vec<i64> = reset.iter().map(|r| r.id).collect();
                trim_results(c, &ids)?;
                Ok(ids.len())
            })
        })
    }

    /// Claims of other hosts of this scope whose heartbeat (by the server's clock) is older
    /// than the lease, or that never wrote one and claimed longer ago than the lease, go back
    /// to `pending`, due now, each with a `retry` result row saying so.
    fn take_over_stale(&mut self, now: &str) -> Result<usize> {
        let ctx = &self.ctx;
        let taken: Vec<TakenOver> = self.link.with("taking over stale claims", |c| {
            c.transaction::<_, Fail, _>(|c| {
                let taken: Vec<TakenOver> = sql_query(
                    "WITH stale AS (
                         SELECT f.id, f.claimed_host FROM files f
                         LEFT JOIN state s ON s.scope = f.scope AND s.host = f.claimed_host
                             AND s.key = 'heartbeat'
                         WHERE f.scope = $1 AND f.status = 'uploading'
                           AND f.claimed_host IS DISTINCT FROM $2
                           AND CASE WHEN s.updated_at IS NOT NULL
                                    THEN s.updated_at < now() - $3 * interval '1 millisecond'
                                    ELSE coalesce(f.claimed_at, '-infinity')
                                         < now() - $3 * interval '1 millisecond' END
                         FOR UPDATE OF f SKIP LOCKED
                     ), upd AS (
                         UPDATE files f SET status = 'pending', next_attempt_at = $4::timestamptz,
                             last_error = 'taken over from host ' || coalesce(stale.claimed_host, '?')
                                 || ': its heartbeat stopped',
                             updated_at = $4::timestamptz, claimed_host = NULL, claimed_pid = NULL,
                             claimed_at = NULL
                         FROM stale WHERE f.id = stale.id
                         RETURNING f.id, f.attempts, stale.claimed_host AS from_host, f.last_error
                     ), res AS (
                         INSERT INTO upload_results(file_id, host, attempt, started_at, duration_ms,
                             error, outcome)
                         SELECT id, $2, attempts, $4::timestamptz, 0, last_error, 'retry' FROM upd
                     )
                     SELECT id, from_host FROM upd",
                )
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(&ctx.host)
                .bind::<BigInt, _>(ctx.lease_ms)
                .bind::<Text, _>(now)
                .load(c)?;
                let ids: Vec<i64> = taken.iter().map(|t| t.id).collect();
                trim_results(c, &ids)?;
                Ok(taken)
            })
        })?;
        let mut per_host: Vec<(String, usize)> = Vec::new();
        for t in &taken {
            let h = t.from_host.clone().unwrap_or_else(|| "?".into());
            match per_host.iter_mut().find(|(name, _)| *name == h) {
                Some((_, n)) => *n += 1,
                None => per_host.push((h, 1)),
            }
        }
        for (h, n) in per_host {
            log::warn!(
                "host {h} stopped its heartbeat (lease {} s) holding {n} claimed file(s): they are pending again",
                self.ctx.lease_ms / 1000
            );
        }
        Ok(taken.len())
    }

    fn release_backoff(&mut self, now: &str) -> Result<usize> {
        let scope = &self.ctx.scope;
        self.link.with("releasing backoff after an outage", |c| {
            Ok(sql_query(
                "UPDATE files SET next_attempt_at = $2::timestamptz, updated_at = $2::timestamptz
                 WHERE scope = $1 AND status = 'pending' AND attempts > 0
                   AND next_attempt_at > $2::timestamptz",
            )
            .bind::<Text, _>(scope)
            .bind::<Text, _>(now)
            .execute(c)?)
        })
    }

    fn retry_failed(&mut self, now: &str) -> Result<usize> {
        let scope = &self.ctx.scope;
        self.link.with("re-queueing failed files", |c| {
            Ok(sql_query(
                "UPDATE files SET status = 'pending', attempts = 0, next_attempt_at = $2::timestamptz,
                     last_error = NULL, absent = false, updated_at = $2::timestamptz
                 WHERE scope = $1 AND status = 'failed'",
            )
            .bind::<Text, _>(scope)
            .bind::<Text, _>(now)
            .execute(c)?)
        })
    }

    fn retry_path(&mut self, path: &Path, force: bool, now: &str) -> Result<Option<String>> {
        let Some((folder, date, name)) = identity_of(path) else {
            return Ok(None);
        };
        let scope = &self.ctx.scope;
        self.link.with("re-queueing a file", |c| {
            c.transaction::<_, Fail, _>(|c| {
                let status = sql_query(
                    "SELECT status AS v FROM files
                     WHERE scope = $1 AND folder = $2 AND date = $3 AND filename = $4 FOR UPDATE",
                )
                .bind::<Text, _>(scope)
                .bind::<Text, _>(&folder)
                .bind::<Text, _>(&date)
                .bind::<Bytea, _>(name.as_bytes())
                .get_result::<OptText>(c)
                .optional()?
                .and_then(|r| r.v);
                let Some(status) = status else {
                    return Ok(None);
                };
                let allowed = match status.as_str() {
                    "failed" | "pending" => true,
                    "uploaded" | "skipped" => force,
                    _ => false,
                };
                if allowed {
                    sql_query(
                        "UPDATE files SET status = 'pending', attempts = 0,
                             next_attempt_at = $5::timestamptz, last_error = NULL, uploaded_at = NULL,
                             incomplete_since = NULL, absent = false, updated_at = $5::timestamptz
                         WHERE scope = $1 AND folder = $2 AND date = $3 AND filename = $4",
                    )
                    .bind::<Text, _>(scope)
                    .bind::<Text, _>(&folder)
                    .bind::<Text, _>(&date)
                    .bind::<Bytea, _>(name.as_bytes())
                    .bind::<Text, _>(now)
                    .execute(c)?;
                }
                Ok(Some(status))
            })
        })
    }

    /// Deletes this scope's finished rows whose date folder is before `before_date`; their
    /// results go with them (ON DELETE CASCADE). A pending or claimed row stays.
    fn prune(&mut self, before_date: &str) -> Result<usize> {
        let scope = &self.ctx.scope;
        self.link.with("pruning old rows", |c| {
            Ok(sql_query(
                "DELETE FROM files WHERE scope = $1 AND date < $2
                   AND status IN ('uploaded', 'failed', 'skipped')",
            )
            .bind::<Text, _>(scope)
            .bind::<Text, _>(before_date)
            .execute(c)?)
        })
    }

    /// The scope's greatest `date`, from the `files_date_folder` index.
    fn newest_date(&mut self) -> Result<Option<String>> {
        let scope = &self.ctx.scope;
        let r: OptText = self.link.with("finding the newest date folder", |c| {
            Ok(
                sql_query("SELECT max(date) AS v FROM files WHERE scope = $1")
                    .bind::<Text, _>(scope)
                    .get_result(c)?,
            )
        })?;
        Ok(r.v)
    }

    /// Writes this host's state rows. `updated_at` is the server's clock, whatever `now`
    /// says: heartbeat ages are compared with the server's `now()`, never across hosts.
    fn set_state(&mut self, pairs: &[(&str, String)], _now: &str) -> Result<()> {
        let mut keys: Vec<&str> = Vec::new();
        let mut values: Vec<String> = Vec::new();
        for (k, v) in pairs {
            let v = pg_text(v).into_owned();
            match keys.iter().position(|x| x == k) {
                Some(i) => values[i] = v,
                None => {
                    keys.push(k);
                    values.push(v);
                }
            }
        }
        let ctx = &self.ctx;
        self.link.with("writing daemon state", |c| {
            sql_query(
                "INSERT INTO state(scope, host, key, value, updated_at)
                 SELECT $1, $2, k, v, now() FROM unnest($3::text[], $4::text[]) AS u(k, v)
                 ON CONFLICT (scope, host, key) DO UPDATE
                     SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind::<Text, _>(&ctx.scope)
            .bind::<Text, _>(&ctx.host)
            .bind::<Array<Text>, _>(&keys)
            .bind::<Array<Text>, _>(&values)
            .execute(c)?;
            Ok(())
        })
    }

    fn state(&mut self) -> Result<HashMap<String, (String, String)>> {
        let ctx = &self.ctx;
        let rows = self.link.with("reading daemon state", |c| {
            Ok(state_rows(c, &ctx.scope, Some(&ctx.host))?)
        })?;
        Ok(rows
            .into_iter()
            .map(|r| (r.key, (r.value, r.updated_at)))
            .collect())
    }

    fn queue_overview(&mut self) -> Result<(i64, Option<String>)> {
        let scope = &self.ctx.scope;
        #[derive(QueryableByName)]
        struct Overview {
            #[diesel(sql_type = BigInt)]
            n: i64,
            #[diesel(sql_type = Nullable<Text>)]
            v: Option<String>,
        }
        let sql = format!(
            "SELECT count(*) AS n, {} AS v FROM files
             WHERE scope = $1 AND status IN ('pending', 'uploading')",
            ts("min(detected_at)")
        );
        let r: Overview = self.link.with("counting pending files", |c| {
            Ok(sql_query(&sql).bind::<Text, _>(scope).get_result(c)?)
        })?;
        Ok((r.n, r.v))
    }

    fn uploaded_since(&mut self, since: &str) -> Result<i64> {
        let scope = &self.ctx.scope;
        self.link.with("counting uploaded files", |c| {
            Ok(sql_query(
                "SELECT count(*) AS n FROM files
                 WHERE scope = $1 AND status = 'uploaded' AND uploaded_at >= $2::timestamptz",
            )
            .bind::<Text, _>(scope)
            .bind::<Text, _>(since)
            .get_result::<Count>(c)?
            .n)
        })
    }

    fn counts(&mut self) -> Result<Vec<(String, String, i64)>> {
        let scope = &self.ctx.scope;
        self.link.with("counting files", |c| Ok(counts(c, scope)?))
    }

    fn count_status_in_dates(&mut self, statuses: &[Status], dates: &[String]) -> Result<i64> {
        let scope = &self.ctx.scope;
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        self.link.with("counting files", |c| {
            Ok(sql_query(
                "SELECT count(*) AS n FROM files
                 WHERE scope = $1 AND date = ANY($2) AND status = ANY($3)",
            )
            .bind::<Text, _>(scope)
            .bind::<Array<Text>, _>(dates)
            .bind::<Array<Text>, _>(&statuses)
            .get_result::<Count>(c)?
            .n)
        })
    }

    fn list(&mut self, filter: &ListFilter) -> Result<Vec<FileRow>> {
        let sql = format!(
            "SELECT {} FROM files
             WHERE scope = $1 AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR folder = $3) AND ($4::text IS NULL OR date = $4)
             ORDER BY date DESC, folder, mtime_ns DESC, id DESC
             LIMIT $5",
            file_columns()
        );
        let ctx = &self.ctx;
        let rows: Vec<FileRec> = self.link.with("listing files", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Nullable<Text>, _>(filter.status.map(|s| s.as_str()))
                .bind::<Nullable<Text>, _>(filter.folder.as_deref())
                .bind::<Nullable<Text>, _>(filter.date.as_deref())
                .bind::<Nullable<BigInt>, _>(filter.limit)
                .load(c)?)
        })?;
        Ok(rows.into_iter().map(|r| r.into_row(ctx).0).collect())
    }

    fn file_by_path(&mut self, path: &Path) -> Result<Option<FileRow>> {
        let Some((folder, date, name)) = identity_of(path) else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {} FROM files WHERE scope = $1 AND folder = $2 AND date = $3 AND filename = $4",
            file_columns()
        );
        let ctx = &self.ctx;
        let row: Option<FileRec> = self.link.with("reading a file row", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(&folder)
                .bind::<Text, _>(&date)
                .bind::<Bytea, _>(name.as_bytes())
                .get_result(c)
                .optional()?)
        })?;
        Ok(row.map(|r| r.into_row(ctx).0))
    }

    /// Everything `status` and `check` show, in one repeatable-read transaction so the
    /// numbers agree; plus, as the server sees them, every host of the scope that has
    /// state rows or holds claims (one that claims without a heartbeat is worth seeing).
    fn summary(&mut self, today_start: &str, day_ago: &str, hour_ago: &str) -> Result<Summary> {
        let ctx = &self.ctx;
        self.link.with("reading status", |c| {
            c.build_transaction()
                .repeatable_read()
                .read_only()
                .run::<_, Fail, _>(|c| summary(c, ctx, today_start, day_ago, hour_ago))
        })
    }

    /// Every row of this scope with its results, in pages of 1000 rows read in one
    /// repeatable-read transaction (one consistent picture, bounded memory).
    fn export(&mut self, each: &mut dyn FnMut(Exported) -> Result<()>) -> Result<usize> {
        let ctx = &self.ctx;
        let files_sql = format!(
            "SELECT {} FROM files WHERE scope = $1 AND id > $2 ORDER BY id LIMIT 1000",
            file_columns()
        );
        let results_sql = format!(
            "SELECT file_id, attempt::bigint AS attempt, {} AS started_at, duration_ms,
                 http_status::bigint AS http_status, response_body,
                 response_json::text AS response_json, error, outcome
             FROM upload_results WHERE file_id = ANY($1) ORDER BY file_id, id",
            ts("started_at")
        );
        self.link.with("exporting rows", |c| {
            c.build_transaction()
                .repeatable_read()
                .read_only()
                .run::<_, Fail, _>(|c| {
                    let mut last = 0i64;
                    let mut n = 0;
                    loop {
                        let page: Vec<FileRec> = sql_query(&files_sql)
                            .bind::<Text, _>(&ctx.scope)
                            .bind::<BigInt, _>(last)
                            .load(c)?;
                        let Some(tail) = page.last() else {
                            return Ok(n);
                        };
                        last = tail.id;
                        let ids: Vec<i64> = page.iter().map(|f| f.id).collect();
                        let results: Vec<ResultRec> = sql_query(&results_sql)
                            .bind::<Array<BigInt>, _>(&ids)
                            .load(c)?;
                        let mut by_file: HashMap<i64, Vec<ResultRow>> = HashMap::new();
                        for r in results {
                            by_file.entry(r.file_id).or_default().push(ResultRow {
                                attempt: r.attempt,
                                started_at: r.started_at,
                                duration_ms: r.duration_ms,
                                http_status: r.http_status,
                                response_body: r.response_body,
                                response_json: r.response_json,
                                error: r.error,
                                outcome: r.outcome,
                            });
                        }
                        for f in page {
                            let results = by_file.remove(&f.id).unwrap_or_default();
                            let (file, incomplete_since, absent) = f.into_row(ctx);
                            each(Exported {
                                file,
                                incomplete_since,
                                absent,
                                results,
                            })
                            .map_err(Fail::Other)?;
                            n += 1;
                        }
                    }
                })
        })
    }

    /// Adds exported rows under this scope, recorded by this host, in two statements per
    /// call (the rows, then their results); a file already recorded is left alone. As in
    /// SQLite, a claim does not travel: an `uploading` row arrives `pending`.
    fn import(&mut self, rows: &[Exported]) -> Result<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        let folders: Vec<&str> = rows.iter().map(|e| e.file.folder.as_str()).collect();
        let dates: Vec<&str> = rows.iter().map(|e| e.file.date.as_str()).collect();
        let names: Vec<&[u8]> = rows.iter().map(|e| e.file.filename.as_bytes()).collect();
        let paths: Vec<&[u8]> = rows
            .iter()
            .map(|e| e.file.path.as_os_str().as_bytes())
            .collect();
        let sizes: Vec<i64> = rows.iter().map(|e| e.file.size).collect();
        let mtimes: Vec<i64> = rows.iter().map(|e| e.file.mtime_ns).collect();
        let mut statuses = Vec::with_capacity(rows.len());
        let mut nexts = Vec::with_capacity(rows.len());
        for e in rows {
            let f = &e.file;
            if f.status == "uploading" {
                statuses.push("pending");
                nexts.push(Some(f.updated_at.clone()));
            } else {
                statuses.push(f.status.as_str());
                nexts.push(f.next_attempt_at.clone());
            }
        }
        let attempts: Vec<i64> = rows.iter().map(|e| e.file.attempts).collect();
        let errors: Vec<Option<String>> = rows.iter().map(|e| pg_opt(&e.file.last_error)).collect();
        let detected: Vec<&str> = rows.iter().map(|e| e.file.detected_at.as_str()).collect();
        let uploaded: Vec<Option<&str>> =
            rows.iter().map(|e| e.file.uploaded_at.as_deref()).collect();
        let updated: Vec<&str> = rows.iter().map(|e| e.file.updated_at.as_str()).collect();
        let incomplete: Vec<Option<&str>> =
            rows.iter().map(|e| e.incomplete_since.as_deref()).collect();
        let absent: Vec<bool> = rows.iter().map(|e| e.absent).collect();
        let ctx = &self.ctx;
        self.link.with("importing rows", |c| {
            c.transaction::<_, Fail, _>(|c| {
                let added: Vec<ImportedRec> = sql_query(
                    "INSERT INTO files(scope, folder, date, filename, path, size, mtime_ns, status,
                         attempts, next_attempt_at, last_error, detected_at, uploaded_at, updated_at,
                         incomplete_since, absent, recorded_by)
                     SELECT $1, folder, date, filename, path, size, mtime_ns, status, attempts::int,
                         next_at::timestamptz, last_error, detected_at::timestamptz,
                         uploaded_at::timestamptz, updated_at::timestamptz,
                         incomplete_since::timestamptz, absent, $2
                     FROM unnest($3::text[], $4::text[], $5::bytea[], $6::bytea[], $7::bigint[],
                         $8::bigint[], $9::text[], $10::bigint[], $11::text[], $12::text[],
                         $13::text[], $14::text[], $15::text[], $16::text[], $17::bool[])
                         WITH ORDINALITY
                         AS u(folder, date, filename, path, size, mtime_ns, status, attempts,
                              next_at, last_error, detected_at, uploaded_at, updated_at,
                              incomplete_since, absent, i)
                     ORDER BY i
                     ON CONFLICT (scope, folder, date, filename) DO NOTHING
                     RETURNING id, folder, date, filename",
                )
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(&ctx.host)
                .bind::<Array<Text>, _>(&folders)
                .bind::<Array<Text>, _>(&dates)
                .bind::<Array<Bytea>, _>(&names)
                .bind::<Array<Bytea>, _>(&paths)
                .bind::<Array<BigInt>, _>(&sizes)
                .bind::<Array<BigInt>, _>(&mtimes)
                .bind::<Array<Text>, _>(&statuses)
                .bind::<Array<BigInt>, _>(&attempts)
                .bind::<Array<Nullable<Text>>, _>(&nexts)
                .bind::<Array<Nullable<Text>>, _>(&errors)
                .bind::<Array<Text>, _>(&detected)
                .bind::<Array<Nullable<Text>>, _>(&uploaded)
                .bind::<Array<Text>, _>(&updated)
                .bind::<Array<Nullable<Text>>, _>(&incomplete)
                .bind::<Array<Bool>, _>(&absent)
                .load(c)?;
                // Results of the rows that were added, matched back by identity.
                let index: HashMap<(&str, &str, &[u8]), usize> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        (
                            (
                                e.file.folder.as_str(),
                                e.file.date.as_str(),
                                e.file.filename.as_bytes(),
                            ),
                            i,
                        )
                    })
                    .collect();
                let mut r = ResultColumns::default();
                for a in &added {
                    let Some(&i) =
                        index.get(&(a.folder.as_str(), a.date.as_str(), a.filename.as_slice()))
                    else {
                        continue;
                    };
                    for res in &rows[i].results {
                        r.push(a.id, res);
                    }
                }
                if !r.file_id.is_empty() {
                    sql_query(
                        "INSERT INTO upload_results(file_id, host, attempt, started_at, duration_ms,
                             http_status, response_body, response_json, error, outcome)
                         SELECT file_id, $1, attempt::int, started_at::timestamptz, duration_ms,
                             http_status::int, response_body, sega_try_jsonb(response_json), error,
                             outcome
                         FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bigint[],
                             $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[])
                             WITH ORDINALITY
                             AS u(file_id, attempt, started_at, duration_ms, http_status,
                                  response_body, response_json, error, outcome, i)
                         ORDER BY i",
                    )
                    .bind::<Text, _>(&ctx.host)
                    .bind::<Array<BigInt>, _>(&r.file_id)
                    .bind::<Array<BigInt>, _>(&r.attempt)
                    .bind::<Array<Text>, _>(&r.started_at)
                    .bind::<Array<BigInt>, _>(&r.duration_ms)
                    .bind::<Array<Nullable<BigInt>>, _>(&r.http_status)
                    .bind::<Array<Nullable<Text>>, _>(&r.response_body)
                    .bind::<Array<Nullable<Text>>, _>(&r.response_json)
                    .bind::<Array<Nullable<Text>>, _>(&r.error)
                    .bind::<Array<Text>, _>(&r.outcome)
                    .execute(c)?;
                    let mut ids = r.file_id.clone();
                    ids.dedup();
                    trim_results(c, &ids)?;
                }
                Ok(added.len())
            })
        })
    }
}

#[derive(QueryableByName)]
struct ImportedRec {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    folder: String,
    #[diesel(sql_type = Text)]
    date: String,
    #[diesel(sql_type = Bytea)]
    filename: Vec<u8>,
}

/// `upload_results` rows as columns, to bind as arrays.
#[derive(Default)]
struct ResultColumns {
    file_id: Vec<i64>,
    attempt: Vec<i64>,
    started_at: Vec<String>,
    duration_ms: Vec<i64>,
    http_status: Vec<Option<i64>>,
    response_body: Vec<Option<String>>,
    response_json: Vec<Option<String>>,
    error: Vec<Option<String>>,
    outcome: Vec<String>,
}

impl ResultColumns {
    fn push(&mut self, file_id: i64, r: &ResultRow) {
        self.file_id.push(file_id);
        self.attempt.push(r.attempt);
        self.started_at.push(r.started_at.clone());
        self.duration_ms.push(r.duration_ms);
        self.http_status.push(r.http_status);
        self.response_body.push(pg_opt(&r.response_body));
        self.response_json.push(jsonb_text(&r.response_json));
        self.error.push(pg_opt(&r.error));
        self.outcome.push(r.outcome.clone());
    }
}

/// The row update a completion makes, guarded so it only lands on the version this
/// process claimed and still holds.
fn update_for<'a>(
    done: &'a Completion,
    now: &'a str,
    ctx: &'a Ctx,
) -> diesel::query_builder::BoxedSqlQuery<'a, Pg, diesel::query_builder::SqlQuery> {
    let guard = "WHERE id = $1 AND scope = $2 AND status = 'uploading' AND size = $3
                 AND mtime_ns = $4 AND claimed_host = $5 AND claimed_pid = $6";
    let set = match &done.disposition {
        Disposition::Uploaded => {
            "status = 'uploaded', uploaded_at = $7::timestamptz, next_attempt_at = NULL,
             last_error = NULL, incomplete_since = NULL"
        }
        Disposition::Retry { .. } => {
            "status = 'pending', next_attempt_at = $8::timestamptz, last_error = $9,
             attempts = attempts - $10"
        }
        Disposition::Failed => "status = 'failed', next_attempt_at = NULL, last_error = $8",
        Disposition::Skipped { .. } => {
            "status = 'skipped', next_attempt_at = NULL, last_error = $8, absent = $9"
        }
        Disposition::NotReady { .. } => {
            "status = 'pending', next_attempt_at = $8::timestamptz, attempts = attempts - 1,
             incomplete_since = $9::timestamptz, last_error = $10"
        }
        Disposition::Changed { .. } => {
            "status = 'pending', size = $8, mtime_ns = $9, attempts = 0,
             next_attempt_at = $10::timestamptz, last_error = NULL, uploaded_at = NULL,
             incomplete_since = NULL"
        }
    };
    let q = sql_query(format!(
        "UPDATE files SET {set}, updated_at = $7::timestamptz {guard}"
    ))
    .into_boxed::<Pg>()
    .bind::<BigInt, _>(done.file_id)
    .bind::<Text, _>(&ctx.scope)
    .bind::<BigInt, _>(done.version.size as i64)
    .bind::<BigInt, _>(done.version.mtime_ns)
    .bind::<Text, _>(&ctx.host)
    .bind::<Integer, _>(ctx.pid)
    .bind::<Text, _>(now);
    match &done.disposition {
        Disposition::Uploaded => q,
        Disposition::Retry { at, counted } => q
            .bind::<Text, _>(at.as_str())
            .bind::<Nullable<Text>, _>(pg_opt(&done.error))
            .bind::<Integer, _>(if *counted { 0 } else { 1 }),
        Disposition::Failed => q.bind::<Nullable<Text>, _>(pg_opt(&done.error)),
        Disposition::Skipped { absent } => q
            .bind::<Nullable<Text>, _>(pg_opt(&done.error))
            .bind::<Bool, _>(*absent),
        Disposition::NotReady {
            at,
            incomplete_since,
        } => q
            .bind::<Text, _>(at.as_str())
            .bind::<Nullable<Text>, _>(incomplete_since.as_deref())
            .bind::<Nullable<Text>, _>(pg_opt(&done.error)),
        Disposition::Changed { version, at } => q
            .bind::<BigInt, _>(version.size as i64)
            .bind::<BigInt, _>(version.mtime_ns)
            .bind::<Text, _>(at.as_str()),
    }
}

fn counts(c: &mut PgConnection, scope: &str) -> QueryResult<Vec<(String, String, i64)>> {
    let rows: Vec<CountRec> = sql_query(
        "SELECT folder, status, count(*) AS n FROM files WHERE scope = $1
         GROUP BY folder, status ORDER BY folder, status",
    )
    .bind::<Text, _>(scope)
    .load(c)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.folder, r.status, r.n))
        .collect())
}

/// State rows of the scope (or of one host), with their age by the server's clock.
fn state_rows(c: &mut PgConnection, scope: &str, host: Option<&str>) -> QueryResult<Vec<StateRec>> {
    sql_query(format!(
        "SELECT host, key, value, {} AS updated_at,
             extract(epoch FROM now() - updated_at)::float8 AS age
         FROM state WHERE scope = $1 AND ($2::text IS NULL OR host = $2) ORDER BY host, key",
        ts("updated_at")
    ))
    .bind::<Text, _>(scope)
    .bind::<Nullable<Text>, _>(host)
    .load(c)
}

fn summary(
    c: &mut PgConnection,
    ctx: &Ctx,
    today_start: &str,
    day_ago: &str,
    hour_ago: &str,
) -> Q<Summary> {
    let scope = ctx.scope.as_str();
    let counts = counts(c, scope)?;
    let uploaded_today = sql_query(
        "SELECT count(*) AS n FROM files
         WHERE scope = $1 AND status = 'uploaded' AND uploaded_at >= $2::timestamptz",
    )
    .bind::<Text, _>(scope)
    .bind::<Text, _>(today_start)
    .get_result::<Count>(c)?
    .n;
    let oldest_pending = sql_query(format!(
        "SELECT folder, date, filename, path, {} AS at, last_error AS detail FROM files
         WHERE scope = $1 AND status IN ('pending', 'uploading') ORDER BY detected_at, id LIMIT 1",
        ts("detected_at")
    ))
    .bind::<Text, _>(scope)
    .get_result::<PathAtRec>(c)
    .optional()?
    .map(|r| r.into_path_at(ctx));
    let last_success = sql_query(format!(
        "SELECT folder, date, filename, path, {} AS at, NULL::text AS detail FROM files
         WHERE scope = $1 AND status = 'uploaded' ORDER BY uploaded_at DESC LIMIT 1",
        ts("uploaded_at")
    ))
    .bind::<Text, _>(scope)
    .get_result::<PathAtRec>(c)
    .optional()?
    .map(|r| r.into_path_at(ctx));
    let last_error = sql_query(format!(
        "SELECT f.folder, f.date, f.filename, f.path, {} AS at,
             coalesce(r.error, 'HTTP ' || r.http_status) AS detail
         FROM upload_results r JOIN files f ON f.id = r.file_id
         WHERE f.scope = $1 AND r.outcome <> 'success' ORDER BY r.id DESC LIMIT 1",
        ts("r.started_at")
    ))
    .bind::<Text, _>(scope)
    .get_result::<PathAtRec>(c)
    .optional()?
    .map(|r| r.into_path_at(ctx));
    let errors_24h = sql_query(
        "SELECT coalesce(r.error, 'HTTP ' || r.http_status) AS cause, count(*) AS n,
             (array_agg(f.path ORDER BY f.path DESC))[1] AS example
         FROM upload_results r JOIN files f ON f.id = r.file_id
         WHERE f.scope = $1 AND r.started_at >= $2::timestamptz AND r.outcome <> 'success'
         GROUP BY cause ORDER BY count(*) DESC, cause LIMIT 10",
    )
    .bind::<Text, _>(scope)
    .bind::<Text, _>(day_ago)
    .load::<CauseRec>(c)?
    .into_iter()
    .map(|r| ErrorCause {
        cause: r.cause,
        count: r.n,
        example: PathBuf::from(OsString::from_vec(r.example)),
    })
    .collect();
    let failed_last_hour = sql_query(
        "SELECT count(*) AS n FROM upload_results r JOIN files f ON f.id = r.file_id
         WHERE f.scope = $1 AND r.started_at >= $2::timestamptz AND r.outcome = 'failed'",
    )
    .bind::<Text, _>(scope)
    .bind::<Text, _>(hour_ago)
    .get_result::<Count>(c)?
    .n;

    // Every host of the scope: its state rows, its heartbeat's age by the server's clock,
    // whether its daemon's advisory lock is held (a live session), its claims. pg_locks
    // lists the whole server's locks: an advisory lock belongs to one database, and another
    // ledger on the same server may have a host of the same scope and name.
    let all_state = state_rows(c, scope, None)?;
    let claimed: Vec<HostCount> = sql_query(
        "SELECT claimed_host AS host, count(*) AS n FROM files
         WHERE scope = $1 AND status = 'uploading' AND claimed_host IS NOT NULL
         GROUP BY claimed_host",
    )
    .bind::<Text, _>(scope)
    .load(c)?;
    let locks: HashSet<i64> = sql_query(
        "SELECT classid::bigint AS hi, objid::bigint AS lo FROM pg_locks
         WHERE locktype = 'advisory' AND objsubid = 1 AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .load::<LockRec>(c)?
    .into_iter()
    .map(|l| (((l.hi as u64) << 32) | (l.lo as u64 & 0xffff_ffff)) as i64)
    .collect();
    let mut state = HashMap::new();
    let mut hosts: Vec<HostState> = Vec::new();
    fn host_entry<'h>(hosts: &'h mut Vec<HostState>, name: &str) -> &'h mut HostState {
        let i = match hosts.iter().position(|h| h.host == name) {
            Some(i) => i,
            None => {
                hosts.push(HostState {
                    host: name.to_owned(),
                    state: HashMap::new(),
                    heartbeat_age_secs: None,
                    locked: false,
                    claimed: 0,
                });
                hosts.len() - 1
            }
        };
        &mut hosts[i]
    }
    for r in all_state {
        let h = host_entry(&mut hosts, &r.host);
        if r.key == "heartbeat" {
            h.heartbeat_age_secs = Some(r.age.max(0.0) as u64);
        }
        h.state.insert(r.key.clone(), r.value.clone());
        if r.host == ctx.host {
            state.insert(r.key, (r.value, r.updated_at));
        }
    }
    for cl in claimed {
        host_entry(&mut hosts, &cl.host).claimed = cl.n;
    }
    for h in &mut hosts {
        h.locked = locks.contains(&lock_key(scope, &h.host));
    }
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(Summary {
        counts,
        uploaded_today,
        oldest_pending,
        last_success,
        last_error,
        errors_24h,
        failed_last_hour,
        state,
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{
        all_results, completion, exported, obs, pg_open, pg_try_open, roots, sqlite, FAR, LATER,
        T0, T1, T2,
    };
    use std::sync::Arc;

    fn t() -> Option<String> {
        sega_testsrv::pg::database()
    }

    /// Polls `f` until it holds, failing after 20 s: the server acts on some requests
    /// (terminating a backend, releasing its locks) after answering them.
    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timeout waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    const LEASE: Duration = Duration::from_secs(60);

    /// Why opening a store for scope "s", host "h" fails.
    fn open_error(url: &str) -> String {
        match pg_try_open(url, "s", "h", roots(), LEASE) {
            Ok(_) => panic!("opened"),
            Err(e) => e.to_string(),
        }
    }

    fn many(n: usize) -> Vec<Observation> {
        (0..n)
            .map(|i| obs(format!("f{i:06}.jpg").as_bytes(), 1, i as i64))
            .collect()
    }

    #[test]
    fn two_hosts_claiming_at_once_get_disjoint_rows_covering_everything() {
        let Some(url) = t() else { return };
        let rows: usize = std::env::var("SEGA_PG_CLAIM_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        for chunk in many(rows).chunks(1000) {
            assert_eq!(a.record(chunk, T0).unwrap().new, chunk.len());
        }
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let started = Instant::now();
        let workers: Vec<_> = ["cam-1", "cam-2"]
            .into_iter()
            .map(|host| {
                let url = url.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut s = pg_open(&url, "site-a", host, roots());
                    barrier.wait();
                    let mut mine = Vec::new();
                    loop {
                        let got = s.claim_due(T1, FAR, 16, ClaimOrder::OldestFile).unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        mine.extend(got.into_iter().map(|c| c.id));
                    }
                })
            })
            .collect();
        let got: Vec<Vec<i64>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        let elapsed = started.elapsed();
        eprintln!(
            "two PgStores claimed {rows} rows (16 a claim) in {elapsed:?}: {:.0} rows/s ({} + {})",
            rows as f64 / elapsed.as_secs_f64(),
            got[0].len(),
            got[1].len()
        );
        let mut all: Vec<i64> = got.concat();
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(total, rows, "no row claimed twice");
        assert_eq!(all.len(), rows, "every row claimed");
        let listed = a.list(&ListFilter::default()).unwrap();
        assert!(listed
            .iter()
            .all(|r| r.status == "uploading" && r.attempts == 1));
        let sum = a.summary(T0, T0, T0).unwrap();
        let claimed: Vec<(&str, i64)> = sum
            .hosts
            .iter()
            .map(|h| (h.host.as_str(), h.claimed))
            .collect();
        let n = |i: usize| got[i].len() as i64;
        assert_eq!(
            claimed,
            [("cam-1", n(0)), ("cam-2", n(1))],
            "hosts holding claims"
        );
        assert!(sum.hosts.iter().all(|h| h.heartbeat_age_secs.is_none()));
    }

    /// Two hosts watching one tree: each records the same files over and over (as their
    /// scans and events do) while claiming and completing. Completions lock several rows a
    /// transaction; an upsert that locked rows it did not change once deadlocked with them.
    #[test]
    fn hosts_recording_and_completing_the_same_files_never_deadlock() {
        let Some(url) = t() else { return };
        let rows = 1500;
        let files = many(rows);
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let workers: Vec<_> = ["cam-1", "cam-2"]
            .into_iter()
            .enumerate()
            .map(|(k, host)| {
                let (url, barrier) = (url.clone(), barrier.clone());
                let mut files = files.clone();
                std::thread::spawn(move || -> std::result::Result<usize, String> {
                    let mut s = pg_open(&url, "site-a", host, roots());
                    // Each host sees the files in its own order.
                    if k == 1 {
                        files.reverse();
                    }
                    barrier.wait();
                    let mut uploaded = 0;
                    loop {
                        for chunk in files.chunks(500) {
                            s.record(chunk, T1)
                                .map_err(|e| format!("{host} record: {e}"))?;
                        }
                        let got = s
                            .claim_due(
                                T1,
                                FAR,
                                32,
                                if k == 1 {
                                    ClaimOrder::NewestFile
                                } else {
                                    ClaimOrder::OldestFile
                                },
                            )
                            .map_err(|e| format!("{host} claim: {e}"))?;
                        if got.is_empty() {
                            return Ok(uploaded);
                        }
                        uploaded += got.len();
                        let mut done: Vec<Completion> = got
                            .iter()
                            .map(|c| completion(c, Disposition::Uploaded))
                            .collect();
                        done.reverse();
                        s.complete(&done, T2)
                            .map_err(|e| format!("{host} complete: {e}"))?;
                    }
                })
            })
            .collect();
        let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        let counts: Vec<usize> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(
            counts.iter().sum::<usize>(),
            rows,
            "each file sent once: {counts:?}"
        );
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        let listed = a.list(&ListFilter::default()).unwrap();
        assert_eq!(listed.len(), rows);
        assert!(listed.iter().all(|r| r.status == "uploaded"));
    }

    #[test]
    fn scopes_do_not_see_each_other() {
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        let mut b = pg_open(&url, "site-b", "cam-1", roots());
        a.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap();
        a.set_state(&[("heartbeat", T0.into())], T0).unwrap();
        let p = Path::new("/data/Sega_1/2026-11-26/a.jpg");
        assert!(b
            .claim_due(T1, FAR, 10, ClaimOrder::OldestFile)
            .unwrap()
            .is_empty());
        assert!(b.due_ids(T1, FAR, &[], false).unwrap().is_empty());
        assert!(b.counts().unwrap().is_empty());
        assert!(b.list(&ListFilter::default()).unwrap().is_empty());
        assert!(b.file_by_path(p).unwrap().is_none());
        assert!(b.state().unwrap().is_empty());
        assert!(b.summary(T0, T0, T0).unwrap().hosts.is_empty());
        assert_eq!(b.retry_path(p, true, T1).unwrap(), None);
        assert_eq!(exported(&mut b).len(), 0);
        assert_eq!(b.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap().new, 1);
        // Prune takes finished rows only: both scopes' rows uploaded, b's prune takes b's.
        for s in [&mut a, &mut b] {
            let c = s
                .claim_due(T1, FAR, 10, ClaimOrder::OldestFile)
                .unwrap()
                .remove(0);
            s.complete(&[completion(&c, Disposition::Uploaded)], T1)
                .unwrap();
        }
        assert_eq!(b.prune("2099-01-01").unwrap(), 1);
        assert_eq!(
            a.counts().unwrap(),
            [("Sega_1".into(), "uploaded".into(), 1)]
        );
    }

    #[test]
    fn hosts_claim_only_their_folders_and_get_their_own_paths() {
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        a.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap();
        let elsewhere = HashMap::from([("Other".to_owned(), PathBuf::from("/data/Other"))]);
        let mut blind = pg_open(&url, "site-a", "cam-3", elsewhere);
        assert!(blind
            .claim_due(T1, FAR, 10, ClaimOrder::OldestFile)
            .unwrap()
            .is_empty());
        assert!(blind.next_due().unwrap().is_none());
        let ids = a.due_ids(T1, FAR, &[], false).unwrap();
        assert!(blind.claim_ids(&ids, T1).unwrap().is_empty());
        let mounted = HashMap::from([("Sega_1".to_owned(), PathBuf::from("/mnt/nas/Sega_1"))]);
        let mut b = pg_open(&url, "site-a", "cam-2", mounted);
        let c = b.claim_due(T1, FAR, 10, ClaimOrder::OldestFile).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, Path::new("/mnt/nas/Sega_1/2026-11-26/a.jpg"));
        // Looked up by this host's path, shown with it, and with the claiming host.
        let row = b
            .file_by_path(Path::new("/mnt/nas/Sega_1/2026-11-26/a.jpg"))
            .unwrap()
            .unwrap();
        assert_eq!(row.path, Path::new("/mnt/nas/Sega_1/2026-11-26/a.jpg"));
        assert_eq!(row.host.as_deref(), Some("cam-2"));
        let row = a.list(&ListFilter::default()).unwrap().remove(0);
        assert_eq!(row.path, Path::new("/data/Sega_1/2026-11-26/a.jpg"));
        // Another host of the scope may not complete (or unclaim) cam-2's claim.
        a.complete(&[completion(&c[0], Disposition::Uploaded)], T2)
            .unwrap();
        a.unclaim(&[c[0].id], T2).unwrap();
        assert_eq!(
            a.list(&ListFilter::default()).unwrap()[0].status,
            "uploading"
        );
        b.complete(&[completion(&c[0], Disposition::Uploaded)], T2)
            .unwrap();
        assert_eq!(
            a.list(&ListFilter::default()).unwrap()[0].status,
            "uploaded"
        );
    }

    #[test]
    fn nul_bytes_and_odd_json_are_stored_safely() {
        let Some(url) = t() else { return };
        let mut s = pg_open(&url, "site-a", "cam-1", roots());
        let name = b"\xbb\xe7\xc1\xf8.jpg";
        s.record(
            &[obs(name, 1, 1), obs(b"b.jpg", 1, 2), obs(b"c.jpg", 1, 3)],
            T0,
        )
        .unwrap();
        let c = s.claim_due(T0, FAR, 10, ClaimOrder::OldestFile).unwrap();
        let mut nul = completion(
            &c[0],
            Disposition::Retry {
                at: T1.into(),
                counted: true,
            },
        );
        nul.response_body = Some("a\0b".into());
        nul.response_json = Some(r#"{"a":"x\u0000y"}"#.into());
        nul.error = Some("bad\0".into());
        // serde_json refuses a lone surrogate too; should one slip through, the server's
        // refusal must cost the json copy, not the batch.
        let mut odd = completion(&c[1], Disposition::Failed);
        odd.response_json = Some(r#"{"a":"\ud800"}"#.into());
        let fine = completion(&c[2], Disposition::Uploaded);
        s.complete(&[nul, odd, fine], T1).unwrap();
        let rows = exported(&mut s);
        let get = |n: &[u8]| {
            rows.iter()
                .find(|e| e.file.filename.as_bytes() == n)
                .unwrap()
        };
        let first = get(name);
        let r = &first.results[0];
        assert_eq!(r.response_body.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(r.response_json, None);
        assert_eq!(r.error.as_deref(), Some("bad\u{FFFD}"));
        assert_eq!(first.file.last_error.as_deref(), Some("bad\u{FFFD}"));
        assert_eq!(get(b"b.jpg").results[0].response_json, None);
        let ok = &get(b"c.jpg").results[0];
        assert_eq!(ok.response_json.as_deref(), Some(r#"{"ok": true}"#));
        assert_eq!(ok.response_body.as_deref(), Some(r#"{"ok":true}"#));
    }

    #[test]
    fn claims_of_a_host_whose_heartbeat_stopped_are_taken_over() {
        let Some(url) = t() else { return };
        let open = |host: &str| {
            pg_try_open(&url, "site-a", host, roots(), Duration::from_secs(1)).unwrap()
        };
        let (mut a, mut b, mut c) = (open("cam-1"), open("cam-2"), open("cam-3"));
        a.record(
            &[
                obs(b"a.jpg", 1, 1),
                obs(b"b.jpg", 1, 2),
                obs(b"c.jpg", 1, 3),
            ],
            T0,
        )
        .unwrap();
        let held = a.claim_due(T0, FAR, 2, ClaimOrder::OldestFile).unwrap();
        let silent = c.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap();
        a.set_state(&[("heartbeat", T0.into())], T0).unwrap();
        assert_eq!(b.take_over_stale(T1).unwrap(), 0, "cam-1 is alive");
        // cam-1's heartbeat stops (by the server's clock); cam-3 never wrote one and
        // claimed long ago.
        b.exec_for_test(
            "UPDATE state SET updated_at = now() - interval '1 hour' WHERE host = 'cam-1';
             UPDATE files SET claimed_at = now() - interval '1 hour' WHERE claimed_host = 'cam-3'",
        )
        .unwrap();
        assert_eq!(
            a.take_over_stale(T1).unwrap(),
            1,
            "cam-3's claim; never its own"
        );
        assert_eq!(b.take_over_stale(T1).unwrap(), 2);
        assert_eq!(b.take_over_stale(T1).unwrap(), 0);
        let rows = exported(&mut b);
        assert!(rows.iter().all(|e| e.file.status == "pending"));
        let a_row = rows.iter().find(|e| e.file.id == held[0].id).unwrap();
        assert_eq!(
            a_row.file.last_error.as_deref(),
            Some("taken over from host cam-1: its heartbeat stopped")
        );
        assert_eq!(a_row.results.len(), 1);
        assert_eq!(a_row.results[0].outcome, "retry");
        assert_eq!(a_row.file.next_attempt_at.as_deref(), Some(T1));
        // cam-1 comes back with its old claims: its completions are recorded, not applied.
        a.complete(&[completion(&held[0], Disposition::Uploaded)], T2)
            .unwrap();
        let again = b.claim_due(T2, FAR, 10, ClaimOrder::OldestFile).unwrap();
        assert_eq!(again.len(), 3);
        assert!(again.iter().all(|c| c.attempt == 2));
        assert_eq!(all_results(&mut b).len(), 4);
        drop(silent);
    }

    #[test]
    fn reset_uploading_touches_only_this_hosts_claims() {
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        let mut b = pg_open(&url, "site-a", "cam-2", roots());
        a.record(&[obs(b"a.jpg", 1, 1), obs(b"b.jpg", 1, 2)], T0)
            .unwrap();
        let ca = a.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap();
        let cb = b.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap();
        assert_ne!(ca[0].id, cb[0].id);
        assert_eq!(b.reset_uploading(Some(&[ca[0].id]), T1, "x").unwrap(), 0);
        assert_eq!(b.reset_uploading(None, T1, "interrupted").unwrap(), 1);
        let row = a.file_by_path(&ca[0].path).unwrap().unwrap();
        assert_eq!(row.status, "uploading");
        let sum = a.summary(T0, T0, T0).unwrap();
        assert_eq!(
            sum.hosts.len(),
            1,
            "a host without state rows but with claims"
        );
        assert_eq!(sum.hosts[0].heartbeat_age_secs, None);
        a.set_state(&[("heartbeat", T1.into())], T1).unwrap();
        let sum = b.summary(T0, T0, T0).unwrap();
        assert_eq!(sum.hosts.len(), 1);
        assert_eq!(
            (
                sum.hosts[0].host.as_str(),
                sum.hosts[0].claimed,
                sum.hosts[0].locked
            ),
            ("cam-1", 1, false)
        );
        assert!(sum.hosts[0].heartbeat_age_secs.is_some_and(|a| a < 60));
        assert!(sum.state.is_empty(), "cam-2 has no state of its own");
    }

    #[test]
    fn the_daemon_lock_excludes_a_second_daemon_for_the_same_host() {
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        let mut b = pg_open(&url, "site-a", "cam-1", roots());
        let mut other = pg_open(&url, "site-a", "cam-2", roots());
        a.set_state(&[("pid", "4242".into()), ("heartbeat", T0.into())], T0)
            .unwrap();
        assert_eq!(a.lock_daemon().unwrap(), None);
        assert_eq!(a.lock_daemon().unwrap(), None, "taking it twice is fine");
        let holder = b.lock_daemon().unwrap().unwrap();
        assert!(holder.starts_with("pid 4242 on host cam-1"), "{holder}");
        assert_eq!(other.lock_daemon().unwrap(), None, "another host's lock");
        let sum = other.summary(T0, T0, T0).unwrap();
        assert!(sum.hosts.iter().any(|h| h.host == "cam-1" && h.locked));
        assert!(
            a.describe().starts_with("PostgreSQL database t_"),
            "{}",
            a.describe()
        );
        assert!(a.describe().ends_with("(scope site-a, host cam-1)"));
        drop(a);
        // The server frees a session's locks when its backend has exited.
        wait_for("the first daemon's lock to be freed", || {
            b.lock_daemon().unwrap().is_none()
        });
    }

    /// Advisory locks belong to one database; pg_locks lists the whole server's. A daemon
    /// of the same (scope, host) in another ledger on the same server is not this one's.
    #[test]
    fn another_databases_daemon_lock_is_not_this_ledgers() {
        let Some(url_a) = t() else { return };
        let Some(url_b) = t() else { return };
        let mut a = pg_open(&url_a, "site-a", "cam-1", roots());
        let mut b = pg_open(&url_b, "site-a", "cam-1", roots());
        let mut b_other = pg_open(&url_b, "site-a", "cam-2", roots());
        b.set_state(&[("pid", "4242".into()), ("heartbeat", T0.into())], T0)
            .unwrap();
        assert_eq!(a.lock_daemon().unwrap(), None);
        let sum = b_other.summary(T0, T0, T0).unwrap();
        assert!(
            sum.hosts.iter().any(|h| h.host == "cam-1" && !h.locked),
            "cam-1 holds a lock in the other database only: {:?}",
            sum.hosts
        );
        assert_eq!(
            b.lock_daemon().unwrap(),
            None,
            "the same key in another database is free"
        );
        let sum = b_other.summary(T0, T0, T0).unwrap();
        assert!(sum.hosts.iter().any(|h| h.host == "cam-1" && h.locked));
    }

    #[test]
    fn a_lost_session_is_replaced_and_the_lock_taken_again() {
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        let mut admin = pg_open(&url, "site-a", "admin", roots());
        assert_eq!(a.lock_daemon().unwrap(), None);
        a.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap();
        let terminate = |admin: &mut PgStore, pid: i64| {
            admin
                .exec_for_test(&format!("SELECT pg_terminate_backend({pid})"))
                .unwrap();
            let mut gone = false;
            wait_for("the backend to exit", || {
                let mut n = 1;
                let _ = admin.link.with("test", |c| {
                    n = sql_query(format!(
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = {pid}"
                    ))
                    .get_result::<Count>(c)?
                    .n;
                    Ok(())
                });
                gone = n == 0;
                gone
            });
        };
        let pid = a.backend_pid_for_test().unwrap();
        terminate(&mut admin, pid);
        let e = a
            .claim_due(T1, FAR, 10, ClaimOrder::OldestFile)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("claiming files: "), "{e}");
        // The next call reconnects, takes the lock again, and works.
        assert_eq!(a.next_due().unwrap().as_deref(), Some(T0));
        assert_ne!(a.backend_pid_for_test().unwrap(), pid);
        let mut twin = pg_open(&url, "site-a", "cam-1", roots());
        assert!(
            twin.lock_daemon().unwrap().is_some(),
            "the lock was taken again"
        );

        // A server that cannot be reached: one attempt, then errors at once until the
        // backoff has passed.
        let real = std::mem::replace(
            &mut a.link.conninfo,
            "host=/nonexistent/sega-test dbname=x connect_timeout=1".into(),
        );
        let pid = a.backend_pid_for_test().unwrap();
        terminate(&mut admin, pid);
        assert!(a.next_due().is_err());
        let e = a.next_due().unwrap_err().to_string();
        assert!(e.contains("cannot connect to database t_"), "{e}");
        let quick = Instant::now();
        let e = a.next_due().unwrap_err().to_string();
        assert!(e.contains("not connected to PostgreSQL ("), "{e}");
        assert!(e.ends_with("); reconnecting"), "{e}");
        assert!(quick.elapsed() < Duration::from_millis(500));
        a.link.conninfo = real;
        a.link.retry_at = None;
        assert_eq!(a.next_due().unwrap().as_deref(), Some(T0));
        assert!(twin.lock_daemon().unwrap().is_some());
    }

    #[test]
    fn migrate_db_carries_rows_between_sqlite_and_postgres() {
        let Some(url) = t() else { return };
        let mut lite = sqlite();
        lite.record(
            &[
                obs(b"a.jpg", 1, 1),
                obs(b"b.jpg", 2, 2),
                obs(b"c.jpg", 3, 3),
            ],
            T0,
        )
        .unwrap();
        let c = lite.claim_due(T0, FAR, 2, ClaimOrder::OldestFile).unwrap();
        let mut done = completion(&c[0], Disposition::Uploaded);
        done.response_json = Some(r#"{"id":7}"#.into());
        lite.complete(&[done], T1).unwrap();
        let rows = exported(&mut *lite);

        let mut pg = pg_open(&url, "site-a", "cam-1", roots());
        for chunk in rows.chunks(2) {
            pg.import(chunk).unwrap();
        }
        assert_eq!(pg.import(&rows).unwrap(), 0);
        let there = exported(&mut pg);
        assert_eq!(there.len(), 3);
        let a = there.iter().find(|e| e.file.filename == "a.jpg").unwrap();
        assert_eq!(
            (
                a.file.status.as_str(),
                a.file.uploaded_at.as_deref(),
                a.file.host.as_deref()
            ),
            ("uploaded", Some(T1), Some("cam-1"))
        );
        assert_eq!(a.results[0].response_json.as_deref(), Some(r#"{"id": 7}"#));
        assert_eq!(a.results[0].started_at, T1);
        let b = there.iter().find(|e| e.file.filename == "b.jpg").unwrap();
        assert_eq!(b.file.status, "pending", "a claim does not travel");

        let mut back = sqlite();
        assert_eq!(back.import(&there).unwrap(), 3);
        let home = exported(&mut *back);
        let a = home.iter().find(|e| e.file.filename == "a.jpg").unwrap();
        assert_eq!(a.file.path, Path::new("/data/Sega_1/2026-11-26/a.jpg"));
        assert_eq!(a.results.len(), 1);
        assert_eq!(
            back.claim_due(LATER, FAR, 10, ClaimOrder::OldestFile)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn opening_migrates_once_and_refuses_foreign_or_newer_schemas() {
        let Some(url) = t() else { return };
        let opened: Vec<_> = (0..3)
            .map(|i| {
                let url = url.clone();
                std::thread::spawn(move || {
                    pg_try_open(&url, "s", &format!("h{i}"), roots(), LEASE).map(|_| ())
                })
            })
            .collect();
        for o in opened {
            o.join().unwrap().unwrap();
        }
        let mut s = pg_open(&url, "s", "h", roots());
        s.exec_for_test("UPDATE schema_version SET version = 99")
            .unwrap();
        let e = open_error(&url);
        assert!(e.contains("newer than this sega-uploader"), "{e}");

        let Some(url) = t() else { return };
        let mut other = pg_open(&url, "s", "h", roots());
        other
            .exec_for_test("DROP TABLE schema_version CASCADE")
            .unwrap();
        let e = open_error(&url);
        assert!(e.contains("not our database"), "{e}");
    }

    #[test]
    fn an_unreachable_server_is_an_error_at_open_without_the_password() {
        let e = open_error("postgresql://u:hunter2@%2Fnonexistent%2Fsega/db?connect_timeout=1");
        assert!(
            e.starts_with("connecting to PostgreSQL at /nonexistent/sega:5432"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn session_settings_are_added_unless_given() {
        let v = crate::libpq::version() >= 120000;
        let u = session_conninfo("postgres://u:pw@db.example:5432/sega", "cam 1");
        assert!(
            u.starts_with("postgres://u:pw@db.example:5432/sega?connect_timeout=5&keepalives=1"),
            "{u}"
        );
        assert!(
            u.contains("application_name=sega-uploader%2Fcam%201"),
            "{u}"
        );
        assert_eq!(u.contains("tcp_user_timeout=10000"), v);
        let u = session_conninfo(
            "postgresql://db/sega?keepalives_idle=30&sslmode=disable",
            "h",
        );
        assert!(
            u.contains("?keepalives_idle=30&sslmode=disable&connect_timeout=5"),
            "{u}"
        );
        assert_eq!(u.matches("keepalives_idle").count(), 1, "{u}");
        let c = session_conninfo("host=/tmp dbname = sega connect_timeout=2", "h");
        assert!(
            c.starts_with("host=/tmp dbname = sega connect_timeout=2 keepalives='1'"),
            "{c}"
        );
        assert_eq!(c.matches("connect_timeout").count(), 1, "{c}");
        assert!(c.contains("application_name='sega-uploader/h'"), "{c}");
    }

    #[test]
    fn server_of_never_shows_the_password() {
        assert_eq!(
            server_of("postgres://u:secret@db.example:6543/sega?sslmode=require"),
            (
                Some("db.example".into()),
                Some("6543".into()),
                Some("sega".into())
            )
        );
        assert_eq!(
            server_of("postgresql://%2Frun%2Fpg/sega"),
            (Some("/run/pg".into()), None, Some("sega".into()))
        );
        assert_eq!(
            server_of("host=db password='x y' dbname=sega"),
            (Some("db".into()), None, Some("sega".into()))
        );
        assert_eq!(server_of(""), (None, None, None));
    }

    #[test]
    fn lock_keys_differ_per_scope_and_host() {
        assert_ne!(lock_key("a", "h"), lock_key("b", "h"));
        assert_ne!(lock_key("a", "h1"), lock_key("a", "h"));
        assert_ne!(lock_key("ab", "c"), lock_key("a", "bc"));
        assert_eq!(lock_key("a", "h"), lock_key("a", "h"));
    }

    #[test]
    fn text_for_postgres_has_no_nul() {
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        assert_eq!(jsonb_text(&Some(r#"{"a":"x\u0000"}"#.into())), None);
        assert_eq!(
            jsonb_text(&Some(r#"{"a":1}"#.into())).as_deref(),
            Some(r#"{"a":1}"#)
        );
    }
}
