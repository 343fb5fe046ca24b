//! The PostgreSQL ledger (`postgres` feature): one database shared by many hosts. Its schema
//! and migrations, the named operations of [`Ledger`] in PostgreSQL's dialect, the daemon's
//! advisory lock, and the connection's life (keepalives, reconnecting after an outage).
//!
//! Identity: a file is (scope, folder label, date, file name bytes). Hosts of one scope share
//! rows; every query filters by scope, so other scopes are invisible. `path` holds the path
//! as the recording host saw it; a claim hands out *this* host's path for the file, built
//! from its own folder roots, and a host only claims files of folders it watches.
//!
//! Time: a [`Timestamp`] is bound as its text cast `$n::timestamptz` and read back in
//! exactly the SQLite format (`ts`), so the daemon's (injectable) clock decides due times.
//! A status or an outcome is bound and read as its word. Liveness is judged
//! by the server's clock only (`state.updated_at`, `claimed_at`): hosts' clocks may disagree.
//!
//! Connection: one `PgStore` is one libpq session, used by one thread, no runtime. An
//! operation on a lost connection fails; the next one reconnects by itself (at most one
//! attempt a second, backing off to 5 s, failing at once in between) and takes the daemon's
//! advisory lock again if it held it. The caller (the DB owner) holds its results meanwhile.
//!
//! Round trips: the daemon's work is batches, and a batch is one statement (`unnest` of one
//! array per column), whatever its size: a claim, a batch of completions (results, trim and
//! row updates together), a record batch in one transaction. The busy statements are
//! prepared once per session (`conn::Prepared`), and the daemon's session plans them once
//! (generic plans), made again every minute so that a plan stays fit for the table's size;
//! the statements that carry listings of thousands of names are planned for their values.
//! Server time per file is then mostly the rows and index entries each step writes.
//!
//! Files: `conn.rs` the session (opening the store, reconnecting, the daemon's lock);
//! `conninfo.rs` what a URL or conninfo names and the settings the daemon adds; `schema.rs`
//! the tables and their migrations; `record.rs`, `claim.rs`, `requeue.rs` and `complete.rs`
//! the statements that move a row through its life; `summary.rs` the state rows and what the
//! operator commands read; `transfer.rs` `migrate-db`'s export and import. This file holds
//! what they share and routes [`Ledger`] to them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{BigInt, Bool, Bytea, Nullable, Text};

use super::{
    local_path, Attempted, ClaimOrder, Claimed, Completion, Exported, FileRow, Ledger, ListFilter,
    Observation, RecordStats, ResultRow, Status, Summary,
};
use crate::error::Result;
use crate::layout::Version;
use crate::timestamp::Timestamp;

mod claim;
mod complete;
mod conn;
mod conninfo;
mod record;
mod requeue;
mod schema;
mod summary;
#[cfg(test)]
mod tests;
mod transfer;

use conn::Link;

/// A `timestamptz` column read back in the trait's format (`format_ts`), as a [`Timestamp`]
/// reads it.
fn ts(col: &str) -> String {
    format!(r#"to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#)
}

/// Bound as `Text`, cast `::timestamptz` in the statement.
impl ToSql<Text, Pg> for Timestamp {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        write!(out, "{self}")?;
        Ok(IsNull::No)
    }
}

/// A time an operator's command reads from a `ts(…)` column, leniently: `None` where the
/// row holds what is not a time this program can hold (`infinity` reads as NULL through
/// `to_char`, a year past 9999 as five digits), as SQLite's reads of hand-edited text do.
/// Shown as not a time rather than failing `list`, `show`, `status` or `migrate-db`.
struct AnyTime(Option<Timestamp>);

impl FromSql<Nullable<Text>, Pg> for AnyTime {
    fn from_sql(v: PgValue<'_>) -> deserialize::Result<AnyTime> {
        Ok(AnyTime(
            std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(Timestamp::parse),
        ))
    }

    fn from_nullable_sql(v: Option<PgValue<'_>>) -> deserialize::Result<AnyTime> {
        v.map_or(Ok(AnyTime(None)), Self::from_sql)
    }
}

impl ToSql<Text, Pg> for Status {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(self.as_str().as_bytes())?;
        Ok(IsNull::No)
    }
}

/// Never fails on what a hand-edited row holds: a word this build does not know reads as
/// `Status::Unknown`.
impl FromSql<Text, Pg> for Status {
    fn from_sql(v: PgValue<'_>) -> deserialize::Result<Status> {
        Ok(Status::stored(&String::from_utf8_lossy(v.as_bytes())))
    }
}

impl ToSql<Text, Pg> for Attempted {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(self.as_str().as_bytes())?;
        Ok(IsNull::No)
    }
}

impl FromSql<Text, Pg> for Attempted {
    fn from_sql(v: PgValue<'_>) -> deserialize::Result<Attempted> {
        let s = std::str::from_utf8(v.as_bytes())?;
        Attempted::parse(s).ok_or_else(|| format!("not an outcome: {s:?}").into())
    }
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
    status: Status,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    next_attempt_at: AnyTime,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    detected_at: AnyTime,
    #[diesel(sql_type = Nullable<Text>)]
    uploaded_at: AnyTime,
    #[diesel(sql_type = Nullable<Text>)]
    updated_at: AnyTime,
    #[diesel(sql_type = Nullable<Text>)]
    host: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    incomplete_since: AnyTime,
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
    fn into_row(self, ctx: &Ctx) -> (FileRow, Option<Timestamp>, bool) {
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
                next_attempt_at: self.next_attempt_at.0,
                last_error: self.last_error,
                detected_at: self.detected_at.0,
                uploaded_at: self.uploaded_at.0,
                updated_at: self.updated_at.0,
                host: self.host,
            },
            self.incomplete_since.0,
            self.absent,
        )
    }
}

/// One `upload_results` row with its file's id, read with `result_columns()`.
#[derive(QueryableByName)]
struct ResultRec {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    file_id: i64,
    #[diesel(sql_type = BigInt)]
    attempt: i64,
    #[diesel(sql_type = Nullable<Text>)]
    started_at: AnyTime,
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
    outcome: Attempted,
    #[diesel(sql_type = Nullable<Text>)]
    host: Option<String>,
}

/// The columns of `ResultRec`, from `upload_results` (aliased `upload_results` or not).
fn result_columns() -> String {
    format!(
        "id, file_id, attempt::bigint AS attempt, {} AS started_at, duration_ms, \
         http_status::bigint AS http_status, response_body, response_json::text AS response_json, \
         error, outcome, host",
        ts("started_at")
    )
}

impl ResultRec {
    /// The file's id and the row.
    fn into_row(self) -> (i64, ResultRow) {
        (
            self.file_id,
            ResultRow {
                id: self.id,
                attempt: self.attempt,
                started_at: self.started_at.0,
                duration_ms: self.duration_ms,
                http_status: self.http_status,
                response_body: self.response_body,
                response_json: self.response_json,
                error: self.error,
                outcome: self.outcome,
                host: self.host,
            },
        )
    }
}

/// The trait's operations. Each is an inherent method of the same name in the file that
/// owns its job (`record.rs`, `claim.rs`, …): an inherent method is found before the
/// trait's, so these calls route, they do not recurse.
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

    fn record(&mut self, batch: &[Observation], now: Timestamp) -> Result<RecordStats> {
        PgStore::record(self, batch, now)
    }

    fn known_among(
        &mut self,
        folder: &str,
        date: &str,
        listed: &[(&[u8], Version)],
        changed_during: Option<(Timestamp, Timestamp)>,
    ) -> Result<Vec<bool>> {
        PgStore::known_among(self, folder, date, listed, changed_during)
    }

    fn recheck(&mut self, path: &Path, now: Timestamp) -> Result<bool> {
        PgStore::recheck(self, path, now)
    }

    fn claim_due(
        &mut self,
        now: Timestamp,
        far: Timestamp,
        limit: usize,
        order: ClaimOrder,
    ) -> Result<Vec<Claimed>> {
        PgStore::claim_due(self, now, far, limit, order)
    }

    fn claim_ids(&mut self, ids: &[i64], now: Timestamp) -> Result<Vec<Claimed>> {
        PgStore::claim_ids(self, ids, now)
    }

    fn due_ids(
        &mut self,
        now: Timestamp,
        far: Timestamp,
        dates: &[String],
        newest_first: bool,
    ) -> Result<Vec<i64>> {
        PgStore::due_ids(self, now, far, dates, newest_first)
    }

    fn next_due(&mut self) -> Result<Option<Timestamp>> {
        PgStore::next_due(self)
    }

    fn complete(&mut self, batch: &[Completion], now: Timestamp) -> Result<Vec<i64>> {
        PgStore::complete(self, batch, now)
    }

    fn unclaim(&mut self, ids: &[i64], now: Timestamp) -> Result<()> {
        PgStore::unclaim(self, ids, now)
    }

    fn claimed_here(&mut self) -> Result<Option<Vec<i64>>> {
        PgStore::claimed_here(self)
    }

    fn reset_uploading(
        &mut self,
        ids: Option<&[i64]>,
        now: Timestamp,
        error: &str,
    ) -> Result<usize> {
        PgStore::reset_uploading(self, ids, now, error)
    }

    fn take_over_stale(&mut self, now: Timestamp) -> Result<usize> {
        PgStore::take_over_stale(self, now)
    }

    fn release_backoff(&mut self, now: Timestamp) -> Result<usize> {
        PgStore::release_backoff(self, now)
    }

    fn retry_failed(&mut self, now: Timestamp) -> Result<usize> {
        PgStore::retry_failed(self, now)
    }

    fn retry_path(&mut self, path: &Path, force: bool, now: Timestamp) -> Result<Option<Status>> {
        PgStore::retry_path(self, path, force, now)
    }

    fn prune(&mut self, before_date: &str) -> Result<usize> {
        PgStore::prune(self, before_date)
    }

    fn newest_date(&mut self) -> Result<Option<String>> {
        PgStore::newest_date(self)
    }

    fn set_state(&mut self, pairs: &[(&str, String)], now: Timestamp) -> Result<()> {
        PgStore::set_state(self, pairs, now)
    }

    fn state(&mut self) -> Result<HashMap<String, (String, Option<Timestamp>)>> {
        PgStore::state(self)
    }

    fn queue_overview(&mut self) -> Result<(i64, Option<Timestamp>)> {
        PgStore::queue_overview(self)
    }

    fn fold_counts(&mut self) -> Result<()> {
        PgStore::fold_counts(self)
    }

    fn uploaded_since(&mut self, since: Timestamp) -> Result<i64> {
        PgStore::uploaded_since(self, since)
    }

    fn counts(&mut self) -> Result<Vec<(String, Status, i64)>> {
        PgStore::counts(self)
    }

    fn count_status_in_dates(&mut self, statuses: &[Status], dates: &[String]) -> Result<i64> {
        PgStore::count_status_in_dates(self, statuses, dates)
    }

    fn list(&mut self, filter: &ListFilter) -> Result<Vec<FileRow>> {
        PgStore::list(self, filter)
    }

    fn file_by_path(&mut self, path: &Path) -> Result<Option<FileRow>> {
        PgStore::file_by_path(self, path)
    }

    fn file_by_id(&mut self, id: i64) -> Result<Option<FileRow>> {
        PgStore::file_by_id(self, id)
    }

    fn results(&mut self, file_id: i64) -> Result<Vec<ResultRow>> {
        PgStore::results(self, file_id)
    }

    fn latest_results(&mut self, file_ids: &[i64]) -> Result<HashMap<i64, ResultRow>> {
        PgStore::latest_results(self, file_ids)
    }

    fn summary(
        &mut self,
        today_start: Timestamp,
        day_ago: Timestamp,
        hour_ago: Timestamp,
    ) -> Result<Summary> {
        PgStore::summary(self, today_start, day_ago, hour_ago)
    }

    fn export(&mut self, each: &mut dyn FnMut(Exported) -> Result<()>) -> Result<usize> {
        PgStore::export(self, each)
    }

    fn import(&mut self, rows: &[Exported]) -> Result<usize> {
        PgStore::import(self, rows)
    }
}
