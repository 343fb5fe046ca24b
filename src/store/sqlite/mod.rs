//! The SQLite ledger, the embedded default: its schema and migrations, and the named
//! operations of [`Ledger`] in SQLite's dialect.
//!
//! One `Store` is one connection. The daemon's DB-owner thread holds the only writing
//! connection; operator commands open their own (read-only where they only read) and rely
//! on WAL to read while the daemon writes.
//!
//! Paths and file names are bytes on Linux. A name that is valid UTF-8 is stored as TEXT;
//! one that is not (CP949 from an old Samba share) is stored as a BLOB of its raw bytes, so
//! it round-trips losslessly and still has exactly one representation for the UNIQUE index.
//! A [`Timestamp`] is stored as its `format_ts` TEXT, which sorts as time; a status or an
//! outcome as its word.
//!
//! Files: `open.rs` opening the database (writable, read-only, as the lock holder) and the
//! watch over its files; `schema.rs` the tables and their migrations; `record.rs`,
//! `claim.rs`, `requeue.rs` and `complete.rs` the statements that move a row through its
//! life; `summary.rs` the state rows and what the operator commands read; `transfer.rs`
//! `migrate-db`'s export and import. This file holds what they share and routes [`Ledger`]
//! to them.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ToSql, Transaction};

use super::{
    Attempted, ClaimOrder, Claimed, Completion, Exported, FileRow, Ledger, ListFilter, Observation,
    RecordStats, ResultRow, Status, Summary, Turn, Turned,
};
use crate::error::{Error, Result};
use crate::layout::Show;
use crate::layout::Version;
use crate::timestamp::Timestamp;

mod claim;
mod complete;
mod open;
mod record;
mod requeue;
mod schema;
mod summary;
mod transfer;

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The database file and its `-wal` as first seen, for `watch_files`.
    files: Option<(FileId, Option<FileId>)>,
    /// The schema has `file_counts` and the summary's indexes (3 and later): false only on a
    /// read-only look at an older database not yet migrated, which counts rows instead.
    counters: bool,
}

/// A file's (device, inode).
type FileId = (u64, u64);

/// A path's or name's bytes as the SQL value that stores them losslessly.
fn bytes_value(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::Text(s.to_owned()),
        Err(_) => Value::Blob(b.to_vec()),
    }
}

fn os_value(s: &OsStr) -> Value {
    bytes_value(s.as_bytes())
}

fn value_bytes(v: ValueRef<'_>) -> Vec<u8> {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
        ValueRef::Integer(i) => i.to_string().into_bytes(),
        ValueRef::Real(f) => f.to_string().into_bytes(),
        ValueRef::Null => Vec::new(),
    }
}

/// A time as the column stores it.
fn ts_value(t: Timestamp) -> Value {
    Value::Text(t.to_string())
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(ts_value(*self)))
    }
}

/// A time column that does not hold a time (a row written by hand) fails the read.
impl FromSql for Timestamp {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Timestamp> {
        let s = v.as_str()?;
        Timestamp::parse(s).ok_or_else(|| FromSqlError::Other(format!("not a time: {s:?}").into()))
    }
}

/// A time read from a row (a claim's `incomplete_since`, the next due time, the oldest
/// detection; every time an operator's command shows): text that is not a time (a row
/// written by hand) reads as none rather than failing every claim, `status` or `list`.
fn lenient_ts(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row
        .get::<_, Option<String>>(idx)?
        .as_deref()
        .and_then(Timestamp::parse))
}

impl ToSql for Status {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(
            self.as_str().as_bytes(),
        )))
    }
}

/// Never fails on what a hand-edited row holds: a word this build does not know reads as
/// `Status::Unknown` (text that is not UTF-8, lossily). The STRICT table keeps anything but
/// TEXT out of the column.
impl FromSql for Status {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Status> {
        match v {
            ValueRef::Text(b) => Ok(Status::stored(&String::from_utf8_lossy(b))),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

impl ToSql for Attempted {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(
            self.as_str().as_bytes(),
        )))
    }
}

impl FromSql for Attempted {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Attempted> {
        let s = v.as_str()?;
        Attempted::parse(s)
            .ok_or_else(|| FromSqlError::Other(format!("not an outcome: {s:?}").into()))
    }
}

fn row_os(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<OsString> {
    Ok(OsString::from_vec(value_bytes(row.get_ref(idx)?)))
}

fn version_of(row: &rusqlite::Row<'_>, size: usize, mtime: usize) -> rusqlite::Result<Version> {
    let size: i64 = row.get(size)?;
    Ok(Version {
        size: size.max(0) as u64,
        mtime_ns: row.get(mtime)?,
    })
}

const FILE_COLUMNS: &str = "id, path, folder, date, filename, size, mtime_ns, status, attempts, \
     next_attempt_at, last_error, detected_at, uploaded_at, updated_at";

fn file_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: row.get(0)?,
        path: PathBuf::from(row_os(row, 1)?),
        folder: row.get(2)?,
        date: row.get(3)?,
        filename: row_os(row, 4)?,
        size: row.get(5)?,
        mtime_ns: row.get(6)?,
        status: row.get(7)?,
        attempts: row.get(8)?,
        next_attempt_at: lenient_ts(row, 9)?,
        last_error: row.get(10)?,
        detected_at: lenient_ts(row, 11)?,
        uploaded_at: lenient_ts(row, 12)?,
        updated_at: lenient_ts(row, 13)?,
        host: None,
    })
}

const RESULT_COLUMNS: &str = "id, attempt, started_at, duration_ms, http_status, response_body, \
     response_json, error, outcome";

fn result_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ResultRow> {
    Ok(ResultRow {
        id: row.get(0)?,
        attempt: row.get(1)?,
        started_at: lenient_ts(row, 2)?,
        duration_ms: row.get(3)?,
        http_status: row.get(4)?,
        response_body: row.get(5)?,
        response_json: row.get(6)?,
        error: row.get(7)?,
        outcome: row.get(8)?,
        host: None,
    })
}

impl Store {
    fn tx(&mut self, what: &str) -> Result<Transaction<'_>> {
        self.conn
            .transaction()
            .map_err(|e| Error::db(what.to_owned(), e))
    }

    /// `Ledger::write_turn`: each part's statements in one transaction, each part's errors
    /// with its own context.
    fn write_turn(&mut self, turn: Turn<'_>, now: Timestamp, far: Timestamp) -> Result<Turned> {
        let tx = self.tx("saving files, results and a claim")?;
        let mut turned = Turned::default();
        if !turn.record.is_empty() {
            (turned.recorded, turned.claimed_new) =
                record::record_in(&tx, turn.record, now, far, turn.record_claiming, turn.order)?;
        }
        if !turn.complete.is_empty() {
            turned.gone = complete::complete_in(&tx, turn.complete, now)?;
        }
        if turn.claim > 0 {
            turned.claimed = claim::claim_in(&tx, now, far, turn.claim, turn.order)?;
        }
        tx.commit()
            .map_err(|e| Error::db("committing files, results and a claim", e))?;
        Ok(turned)
    }
}

/// How much of one statement's undo record (its sub-journal) SQLite keeps in memory before
/// it moves it to a temporary file. SQLite's default, 64 KiB, is less than one INSERT or
/// claim on `files` can need (the row, six index entries, the counter row and the pages a
/// split rewrites): past it the rest of the transaction wrote every undo page to a file,
/// half of the daemon's write calls in the `present` benchmark. 256 KiB (64 pages) holds
/// every statement of the daemon's hot path (a claim of 8 scattered rows touches about 20
/// pages). SQLite allocates the in-memory journal as one block of this size and the daemon
/// keeps reusing it, so it is also what this costs in memory at most; a statement over many
/// rows (the daily prune, the release after an outage) spills to a file, as before.
const STATEMENT_JOURNAL_IN_MEMORY: std::ffi::c_int = 256 << 10;

/// Process-wide SQLite settings. Call once, first thing in `main`: SQLite takes them only
/// before its first use in the process, and no other thread may use SQLite meanwhile.
pub fn configure_process() {
    // SAFETY: SQLITE_CONFIG_STMTJRNL_SPILL takes one int argument. The caller runs this
    // before any thread exists and before any connection is opened.
    let _refused = unsafe {
        rusqlite::ffi::sqlite3_config(
            rusqlite::ffi::SQLITE_CONFIG_STMTJRNL_SPILL,
            STATEMENT_JOURNAL_IN_MEMORY,
        )
    };
    // A refusal is not reported: no logger exists yet, and only the speed of writes
    // depends on it (SQLite's default stays: statement journals spilled past 64 KiB).
}

/// The trait's operations. Each is an inherent method of the same name in the file that
/// owns its job (`record.rs`, `claim.rs`, …): an inherent method is found before the
/// trait's, so these calls route, they do not recurse.
impl Ledger for Store {
    fn describe(&self) -> String {
        format!("SQLite database {}", self.path.shown())
    }

    fn watch_files(&mut self) -> Result<()> {
        Store::watch_files(self)
    }

    fn export(&mut self, each: &mut dyn FnMut(Exported) -> Result<()>) -> Result<usize> {
        Store::export(self, each)
    }

    fn import(&mut self, rows: &[Exported]) -> Result<usize> {
        Store::import(self, rows)
    }

    fn record(&mut self, batch: &[Observation], now: Timestamp) -> Result<RecordStats> {
        Store::record(self, batch, now)
    }

    fn record_claiming(
        &mut self,
        batch: &[Observation],
        now: Timestamp,
        far: Timestamp,
        limit: usize,
        order: ClaimOrder,
    ) -> Result<(RecordStats, Vec<Claimed>)> {
        Store::record_claiming(self, batch, now, far, limit, order)
    }

    fn known_among(
        &mut self,
        folder: &str,
        date: &str,
        listed: &[(&[u8], Version)],
        changed_during: Option<(Timestamp, Timestamp)>,
    ) -> Result<Vec<bool>> {
        Store::known_among(self, folder, date, listed, changed_during)
    }

    fn recheck(&mut self, path: &Path, now: Timestamp) -> Result<bool> {
        Store::recheck(self, path, now)
    }

    fn claim_due(
        &mut self,
        now: Timestamp,
        far: Timestamp,
        limit: usize,
        order: ClaimOrder,
    ) -> Result<Vec<Claimed>> {
        Store::claim_due(self, now, far, limit, order)
    }

    fn claim_ids(&mut self, ids: &[i64], now: Timestamp) -> Result<Vec<Claimed>> {
        Store::claim_ids(self, ids, now)
    }

    fn due_ids(
        &mut self,
        now: Timestamp,
        far: Timestamp,
        dates: &[String],
        newest_first: bool,
    ) -> Result<Vec<i64>> {
        Store::due_ids(self, now, far, dates, newest_first)
    }

    fn next_due(&mut self) -> Result<Option<Timestamp>> {
        Store::next_due(self)
    }

    fn complete(&mut self, batch: &[Completion], now: Timestamp) -> Result<Vec<i64>> {
        Store::complete(self, batch, now)
    }

    fn write_turn(
        &mut self,
        turn: Turn<'_>,
        now: Timestamp,
        far: Timestamp,
    ) -> Option<Result<Turned>> {
        Some(Store::write_turn(self, turn, now, far))
    }

    fn writes_turns(&self) -> bool {
        true
    }

    fn unclaim(&mut self, ids: &[i64], now: Timestamp) -> Result<()> {
        Store::unclaim(self, ids, now)
    }

    fn claimed_here(&mut self) -> Result<Option<Vec<i64>>> {
        Store::claimed_here(self).map(Some)
    }

    fn reset_uploading(
        &mut self,
        ids: Option<&[i64]>,
        now: Timestamp,
        error: &str,
    ) -> Result<usize> {
        Store::reset_uploading(self, ids, now, error)
    }

    fn release_backoff(&mut self, now: Timestamp) -> Result<usize> {
        Store::release_backoff(self, now)
    }

    fn retry_failed(&mut self, now: Timestamp) -> Result<usize> {
        Store::retry_failed(self, now)
    }

    fn retry_path(&mut self, path: &Path, force: bool, now: Timestamp) -> Result<Option<Status>> {
        Store::retry_path(self, path, force, now)
    }

    fn prune(&mut self, before_date: &str) -> Result<usize> {
        Store::prune(self, before_date)
    }

    fn newest_date(&mut self) -> Result<Option<String>> {
        Store::newest_date(self)
    }

    fn set_state(&mut self, pairs: &[(&str, String)], now: Timestamp) -> Result<()> {
        Store::set_state(self, pairs, now)
    }

    fn state(&mut self) -> Result<HashMap<String, (String, Option<Timestamp>)>> {
        Store::state(self)
    }

    fn queue_overview(&mut self) -> Result<(i64, Option<Timestamp>)> {
        Store::queue_overview(self)
    }

    fn uploaded_since(&mut self, since: Timestamp) -> Result<i64> {
        Store::uploaded_since(self, since)
    }

    fn counts(&mut self) -> Result<Vec<(String, Status, i64)>> {
        Store::counts(self)
    }

    fn count_status_in_dates(&mut self, statuses: &[Status], dates: &[String]) -> Result<i64> {
        Store::count_status_in_dates(self, statuses, dates)
    }

    fn list(&mut self, filter: &ListFilter) -> Result<Vec<FileRow>> {
        Store::list(self, filter)
    }

    fn file_by_path(&mut self, path: &Path) -> Result<Option<FileRow>> {
        Store::file_by_path(self, path)
    }

    fn file_by_id(&mut self, id: i64) -> Result<Option<FileRow>> {
        Store::file_by_id(self, id)
    }

    fn results(&mut self, file_id: i64) -> Result<Vec<ResultRow>> {
        Store::results(self, file_id)
    }

    fn latest_results(&mut self, file_ids: &[i64]) -> Result<HashMap<i64, ResultRow>> {
        Store::latest_results(self, file_ids)
    }

    fn summary(
        &mut self,
        today_start: Timestamp,
        day_ago: Timestamp,
        hour_ago: Timestamp,
    ) -> Result<Summary> {
        Store::summary(self, today_start, day_ago, hour_ago)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Store;
    use crate::store::tests::{all_results, completion, obs, temp_db, FAR, T0, T1, T2};
    use crate::store::{ClaimOrder, Disposition, Ledger, Status, Turn};

    /// Issue 17: a turn's record, completions and claim in one transaction. The claim sees
    /// what the turn wrote before it (a new file, a row a result left due now), in upload
    /// order; and a turn whose last part cannot run leaves nothing of the others.
    #[test]
    fn a_turn_is_written_whole_or_not_at_all() {
        let mut s = Store::open(&temp_db()).unwrap();
        Ledger::record(&mut s, &[obs(b"a.jpg", 1, 100), obs(b"b.jpg", 1, 200)], T0).unwrap();
        let claimed = Ledger::claim_due(&mut s, T1, FAR, 10, ClaimOrder::OldestFile).unwrap();
        let done = [
            completion(&claimed[0], Disposition::Uploaded),
            completion(
                &claimed[1],
                Disposition::Retry {
                    at: T1,
                    counted: true,
                },
            ),
        ];
        let turn = Turn {
            record: &[obs(b"c.jpg", 1, 150)],
            record_claiming: 0,
            complete: &done,
            claim: 10,
            order: ClaimOrder::OldestFile,
        };
        let t = Store::write_turn(&mut s, turn, T1, FAR).unwrap();
        assert_eq!(t.recorded.new, 1);
        assert!(t.gone.is_empty());
        let names: Vec<_> = t.claimed.iter().map(|c| c.filename.clone()).collect();
        assert_eq!(
            names,
            ["c.jpg", "b.jpg"],
            "the new file and the retry, in order"
        );
        assert_eq!(all_results(&mut s).len(), 2);

        s.conn
            .execute_batch("DROP INDEX files_pending_age")
            .unwrap();
        let done = [completion(&t.claimed[0], Disposition::Uploaded)];
        let turn = Turn {
            record: &[obs(b"d.jpg", 1, 300)],
            record_claiming: 0,
            complete: &done,
            claim: 10,
            order: ClaimOrder::OldestFile,
        };
        let e = Store::write_turn(&mut s, turn, T2, FAR).unwrap_err();
        assert!(e.is_statement_problem(), "{e}");
        let row = |s: &mut Store, name: &str| {
            Ledger::file_by_path(s, &Path::new("/data/Sega_1/2026-11-26").join(name)).unwrap()
        };
        assert!(row(&mut s, "d.jpg").is_none(), "the record rolled back");
        assert_eq!(all_results(&mut s).len(), 2, "the result rolled back");
        assert_eq!(row(&mut s, "c.jpg").unwrap().status, Status::Uploading);
    }
}
