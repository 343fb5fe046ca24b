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

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use super::{
    log_new_version, ClaimOrder, Claimed, Completion, Disposition, ErrorCause, Exported, FileRow,
    Ledger, ListFilter, Observation, PathAt, RecordStats, ResultRow, Status, Summary,
    RESULTS_KEPT_PER_FILE,
};
use crate::error::{Error, Result};
use crate::layout::Show;
use crate::layout::Version;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// Listings up to this long are compared with the database path by path (about 2 µs each);
/// longer ones by streaming the date folder's rows past them (about 0.2 µs a row).
const LOOKUP_MAX: usize = 256;

const MIGRATIONS: &[&str] = &[
    // 1: the tables fixed by DESIGN §4, plus `incomplete_since` (when a JPEG/PNG without its
    // end marker was first seen unchanged) and the small key/value `state` table the daemon
    // writes its heartbeat and endpoint state to.
    "CREATE TABLE files(
        id INTEGER PRIMARY KEY,
        path TEXT UNIQUE NOT NULL,
        folder TEXT NOT NULL,
        date TEXT NOT NULL,
        filename TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at TEXT,
        last_error TEXT,
        detected_at TEXT NOT NULL,
        uploaded_at TEXT,
        updated_at TEXT NOT NULL,
        incomplete_since TEXT
    );
    CREATE INDEX files_date_folder ON files(date, folder);
    CREATE INDEX files_pending_age ON files(mtime_ns, id) WHERE status = 'pending';
    CREATE INDEX files_pending_due ON files(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX files_status ON files(status);
    CREATE INDEX files_uploaded ON files(uploaded_at) WHERE status = 'uploaded';
    CREATE TABLE upload_results(
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        http_status INTEGER,
        response_body TEXT,
        response_json TEXT,
        error TEXT,
        outcome TEXT NOT NULL
    );
    CREATE INDEX upload_results_file ON upload_results(file_id, id);
    CREATE INDEX upload_results_started ON upload_results(started_at);
    CREATE TABLE state(key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);",
    // 2: ids are never reused (AUTOINCREMENT: a pruned row's id must never come back and
    // attach a late result to another file), and `absent`: a skipped row whose file was not
    // there as a candidate (vanished, a symlink, out of the config) is sent after all when
    // it is seen again. STRICT: a row written by hand with a value of the wrong type (a
    // REAL mtime) is refused at its INSERT, instead of failing every read that meets it.
    // Paths and names are ANY: TEXT, or a BLOB for a name that is not UTF-8. SQLite's way
    // to change a table: a new one, copied; run with foreign keys off (see `migrate`), so
    // dropping the old table deletes no results.
    "CREATE TABLE files_v2(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        path ANY UNIQUE NOT NULL,
        folder TEXT NOT NULL,
        date TEXT NOT NULL,
        filename ANY NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at TEXT,
        last_error TEXT,
        detected_at TEXT NOT NULL,
        uploaded_at TEXT,
        updated_at TEXT NOT NULL,
        incomplete_since TEXT,
        absent INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    INSERT INTO files_v2(id, path, folder, date, filename, size, mtime_ns, status, attempts,
        next_attempt_at, last_error, detected_at, uploaded_at, updated_at, incomplete_since)
    SELECT id, path, folder, date, filename, size, mtime_ns, status, attempts,
        next_attempt_at, last_error, detected_at, uploaded_at, updated_at, incomplete_since
    FROM files;
    DROP TABLE files;
    ALTER TABLE files_v2 RENAME TO files;
    CREATE INDEX files_date_folder ON files(date, folder);
    CREATE INDEX files_pending_age ON files(mtime_ns, id) WHERE status = 'pending';
    CREATE INDEX files_pending_due ON files(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX files_status ON files(status);
    CREATE INDEX files_uploaded ON files(uploaded_at) WHERE status = 'uploaded';
    UPDATE files SET absent = 1
     WHERE status = 'skipped'
       AND (last_error LIKE 'vanished%' OR last_error LIKE 'not a regular file%');",
];

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The database file and its `-wal` as first seen, for `watch_files`.
    files: Option<(FileId, Option<FileId>)>,
}

/// A file's (device, inode).
type FileId = (u64, u64);

/// `<database>-wal`.
fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

fn file_id(p: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

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
        next_attempt_at: row.get(9)?,
        last_error: row.get(10)?,
        detected_at: row.get(11)?,
        uploaded_at: row.get(12)?,
        updated_at: row.get(13)?,
        host: None,
    })
}

const CLAIM_RETURNING: &str =
    "RETURNING id, path, folder, date, filename, size, mtime_ns, attempts, incomplete_since";

fn claimed_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Claimed> {
    Ok(Claimed {
        id: row.get(0)?,
        path: PathBuf::from(row_os(row, 1)?),
        folder: row.get(2)?,
        date: row.get(3)?,
        filename: row_os(row, 4)?,
        version: version_of(row, 5, 6)?,
        attempt: row.get(7)?,
        incomplete_since: row.get(8)?,
    })
}

impl Store {
    /// Opens (creating if needed) the database for writing: WAL, synchronous=NORMAL, a 5 s
    /// busy timeout, migrations applied.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_checked(path, |_| Ok(()))
    }

    /// `open`, with `check` run on the connection before any migration.
    fn open_checked(path: &Path, check: impl FnOnce(&Connection) -> Result<()>) -> Result<Store> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
        // SQLite quietly opens a write-protected file read-only; the daemon would then fail
        // at its first write. Say so now, naming the file.
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(Error::DbState {
                path: path.to_path_buf(),
                msg: "is not writable by this user (check its owner and mode, and its directory's)"
                    .into(),
            });
        }
        // Every write transaction takes the write lock at BEGIN: a deferred one that reads
        // first and upgrades later gets SQLITE_BUSY at once (no busy wait) when another
        // process (a `scan`, a `retry`) committed in between.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            files: None,
        };
        store.configure(false)?;
        check(&store.conn)?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens the database as the holder of its lock (`run`, `scan`). `initialised`: when the
    /// lock file says a ledger was first set up here. A database file that exists without
    /// a schema then lost its content (a `-wal` deleted before a checkpoint, a truncated
    /// copy): it is refused, never silently started afresh (DESIGN §4). A database file
    /// that is gone altogether is started afresh, said loudly.
    pub fn open_as_holder(path: &Path, initialised: Option<&str>) -> Result<Store> {
        let existed = path.exists();
        let lock = crate::lock::lock_path(path);
        if let (Some(since), false) = (initialised, existed) {
            log::warn!(
                "database {} is gone, though {} shows a ledger was set up here on {since}: starting a new one; every image in the window is uploaded again (with the same Idempotency-Key)",
                path.shown(),
                lock.shown()
            );
        }
        let lost = |conn: &Connection| -> Result<()> {
            let Some(since) = initialised.filter(|_| existed) else {
                return Ok(());
            };
            let tables: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| open_error(path, e))?;
            if tables == 0 {
                return Err(Error::DbState {
                    path: path.to_path_buf(),
                    msg: format!(
                        "has no tables, but {} shows a ledger was set up here on {since}: its \
                         content is lost (a deleted -wal file?). Not starting afresh: restore a \
                         backup, or remove {} to start a new ledger (every image in the window \
                         is then uploaded again, with the same Idempotency-Key)",
                        lock.shown(),
                        lock.shown()
                    ),
                });
            }
            Ok(())
        };
        let mut store = Store::open_checked(path, lost)?;
        store.files = file_id(path).map(|db| (db, file_id(&wal_path(path))));
        Ok(store)
    }

    /// Opens an existing database for reading only (operator commands). Works while the
    /// daemon runs; says clearly when there is no database yet.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        if !path.exists() {
            return Err(Error::DbState {
                path: path.to_path_buf(),
                msg: "does not exist yet (has the daemon or a scan run with this config?)".into(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
            files: None,
        };
        store.configure(true)?;
        let version = store.user_version()?;
        if version == 0 {
            return Err(Error::DbState {
                path: path.to_path_buf(),
                msg: "is empty: not yet initialised by sega-uploader".into(),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(newer_schema(path, version));
        }
        Ok(store)
    }

    fn configure(&self, read_only: bool) -> Result<()> {
        let what = format!("configuring database {}", self.path.shown());
        self.conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| Error::db(what.clone(), e))?;
        // One plan per statement, whatever the bound values. Without this, SQLite re-plans
        // statements whose plan could depend on a parameter (`LIMIT ?2`, `file_id = ?1 ...
        // ORDER BY id DESC LIMIT 1`) on every new binding: the claim and the results trim were
        // re-prepared at each use, a fifth of the owner's CPU during a burst.
        self.conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(|e| Error::db(what.clone(), e))?;
        if !read_only {
            // journal_mode=WAL persists in the file; synchronous is per connection. The
            // first statement is also where SQLite notices a file that is not a database.
            let mode: String = self
                .conn
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                .map_err(|e| open_error(&self.path, e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                log::warn!(
                    "database {}: journal_mode is {mode}, not WAL",
                    self.path.shown()
                );
            }
            self.conn
                .execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
                .map_err(|e| Error::db(what, e))?;
        }
        Ok(())
    }

    fn user_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| open_error(&self.path, e))
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        // Step 2 rebuilds `files`: with foreign keys on, dropping the old table would delete
        // every result through the cascade. The pragma is a no-op inside a transaction, so
        // it goes before; the check after proves the copy kept every reference.
        self.conn
            .execute_batch("PRAGMA foreign_keys=OFF")
            .map_err(|e| open_error(&path, e))?;
        let from = self.migrate_steps()?;
        if (1..2).contains(&from) {
            let dangling: i64 = self
                .conn
                .query_row(
                    "SELECT count(*) FROM pragma_foreign_key_check('upload_results')",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| open_error(&path, e))?;
            if dangling > 0 {
                return Err(Error::DbState {
                    path,
                    msg: format!(
                        "has {dangling} upload result(s) of missing files after migrating"
                    ),
                });
            }
        }
        self.conn
            .execute_batch("PRAGMA foreign_keys=ON")
            .map_err(|e| open_error(&path, e))
    }

    /// Applies the missing steps in one transaction; the version it found.
    fn migrate_steps(&mut self) -> Result<i64> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| open_error(&path, e))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| open_error(&path, e))?;
        if version > SCHEMA_VERSION {
            return Err(newer_schema(&path, version));
        }
        if version == 0 {
            // An empty file is ours to initialise; a file with someone else's tables is not:
            // refusing beats silently mixing two programs' data.
            let tables: i64 = tx
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type='table'",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| open_error(&path, e))?;
            if tables > 0 {
                return Err(Error::DbState {
                    path,
                    msg: "has tables but no sega-uploader schema version: not our database".into(),
                });
            }
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(step).map_err(|e| {
                Error::db(format!("migrating {} to schema {}", path.shown(), i + 1), e)
            })?;
        }
        if version != SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(|e| Error::db("setting user_version", e))?;
        }
        tx.commit()
            .map_err(|e| Error::db(format!("migrating {}", path.shown()), e))?;
        Ok(version)
    }

    fn tx(&mut self, what: &str) -> Result<Transaction<'_>> {
        self.conn
            .transaction()
            .map_err(|e| Error::db(what.to_owned(), e))
    }
}

impl Ledger for Store {
    fn describe(&self) -> String {
        format!("database {}", self.path.shown())
    }

    /// The database file and its `-wal` must still be the ones this connection writes: a
    /// `-wal` deleted (a clean-up script) leaves the connection writing into an unlinked
    /// file whose content no later process would see. Then what it holds is checkpointed
    /// into the database, and the error stops the daemon, so that the next start opens the
    /// database afresh with a new `-wal`.
    fn watch_files(&mut self) -> Result<()> {
        let Some((db, wal)) = self.files else {
            return Ok(());
        };
        let wal_now = file_id(&wal_path(&self.path));
        let problem = if file_id(&self.path) != Some(db) {
            Some(format!("{} was deleted or replaced", self.path.shown()))
        } else {
            match (wal, wal_now) {
                (Some(a), Some(b)) if a != b => Some(format!(
                    "{} was deleted and made anew by someone else",
                    wal_path(&self.path).shown()
                )),
                (Some(_), None) => Some(format!("{} was deleted", wal_path(&self.path).shown())),
                (None, now) => {
                    self.files = Some((db, now));
                    None
                }
                _ => None,
            }
        };
        let Some(problem) = problem else {
            return Ok(());
        };
        let saved = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|busy| busy == 0)
            .unwrap_or(false);
        Err(Error::LedgerFilesLost {
            path: self.path.clone(),
            msg: if saved {
                format!("{problem} while the daemon ran: what it held was saved into the database (checkpoint); stopping, so that the next start opens a new write-ahead log")
            } else {
                format!("{problem} while the daemon ran, and what it held could not be saved into the database: stopping; the next start refuses a database that lost its schema rather than start afresh")
            },
        })
    }

    fn export(&mut self, each: &mut dyn FnMut(Exported) -> Result<()>) -> Result<usize> {
        let q = |e| Error::db("exporting rows", e);
        let tx = self.conn.transaction().map_err(q)?;
        let mut files = tx
            .prepare(&format!(
                "SELECT {FILE_COLUMNS}, incomplete_since, absent FROM files ORDER BY id"
            ))
            .map_err(q)?;
        let mut results = tx
            .prepare(
                "SELECT attempt, started_at, duration_ms, http_status, response_body, response_json,
                    error, outcome FROM upload_results WHERE file_id = ?1 ORDER BY id",
            )
            .map_err(q)?;
        let mut rows = files.query([]).map_err(q)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(q)? {
            let file = file_row(r).map_err(q)?;
            let incomplete_since = r.get(14).map_err(q)?;
            let absent = r.get(15).map_err(q)?;
            let results = results
                .query_map([file.id], |r| {
                    Ok(ResultRow {
                        attempt: r.get(0)?,
                        started_at: r.get(1)?,
                        duration_ms: r.get(2)?,
                        http_status: r.get(3)?,
                        response_body: r.get(4)?,
                        response_json: r.get(5)?,
                        error: r.get(6)?,
                        outcome: r.get(7)?,
                    })
                })
                .map_err(q)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(q)?;
            each(Exported {
                file,
                incomplete_since,
                absent,
                results,
            })?;
            n += 1;
        }
        Ok(n)
    }

    fn import(&mut self, rows: &[Exported]) -> Result<usize> {
        let q = |e| Error::db("importing rows", e);
        let tx = self.tx("importing rows")?;
        let mut added = 0;
        {
            let mut file = tx
                .prepare_cached(
                    "INSERT INTO files(path, folder, date, filename, size, mtime_ns, status, attempts,
                        next_attempt_at, last_error, detected_at, uploaded_at, updated_at,
                        incomplete_since, absent)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                     ON CONFLICT(path) DO NOTHING",
                )
                .map_err(q)?;
            let mut result = tx
                .prepare_cached(
                    "INSERT INTO upload_results(file_id, attempt, started_at, duration_ms,
                        http_status, response_body, response_json, error, outcome)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(q)?;
            for e in rows {
                let f = &e.file;
                // A claim belongs to the ledger it was made in: imported, it is pending.
                let (status, next) = if f.status == "uploading" {
                    ("pending", Some(f.updated_at.clone()))
                } else {
                    (f.status.as_str(), f.next_attempt_at.clone())
                };
                let n = file
                    .execute(params![
                        os_value(f.path.as_os_str()),
                        f.folder,
                        f.date,
                        os_value(&f.filename),
                        f.size,
                        f.mtime_ns,
                        status,
                        f.attempts,
                        next,
                        f.last_error,
                        f.detected_at,
                        f.uploaded_at,
                        f.updated_at,
                        e.incomplete_since,
                        e.absent
                    ])
                    .map_err(q)?;
                if n == 0 {
                    continue;
                }
                added += 1;
                let id = tx.last_insert_rowid();
                for r in &e.results {
                    result
                        .execute(params![
                            id,
                            r.attempt,
                            r.started_at,
                            r.duration_ms,
                            r.http_status,
                            r.response_body,
                            r.response_json,
                            r.error,
                            r.outcome
                        ])
                        .map_err(q)?;
                }
            }
        }
        tx.commit().map_err(q)?;
        Ok(added)
    }

    /// Records a batch of observations in one transaction: new paths get a `pending` row;
    /// a known path with another size or mtime is a new version (attempts restart from 0,
    /// whatever its status); a known, unchanged path reported complete by inotify while it
    /// waits to settle is made due now.
    fn record(&mut self, batch: &[Observation], now: &str) -> Result<RecordStats> {
        let mut stats = RecordStats::default();
        let tx = self.tx("recording files")?;
        {
            let mut find = tx
                .prepare_cached(
                    "SELECT id, size, mtime_ns, status, absent FROM files WHERE path = ?1",
                )
                .map_err(|e| Error::db("recording files", e))?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO files(path, folder, date, filename, size, mtime_ns, status, attempts,
                        next_attempt_at, detected_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?8, ?8)",
                )
                .map_err(|e| Error::db("recording files", e))?;
            let mut new_version = tx
                .prepare_cached(
                    "UPDATE files SET size = ?2, mtime_ns = ?3, status = 'pending', attempts = 0,
                        next_attempt_at = ?4, last_error = NULL, uploaded_at = NULL,
                        incomplete_since = NULL, absent = 0, updated_at = ?5
                     WHERE id = ?1",
                )
                .map_err(|e| Error::db("recording files", e))?;
            let mut make_due = tx
                .prepare_cached(
                    "UPDATE files SET next_attempt_at = ?2, updated_at = ?2
                     WHERE id = ?1 AND status = 'pending' AND attempts = 0 AND next_attempt_at > ?2",
                )
                .map_err(|e| Error::db("recording files", e))?;
            for obs in batch {
                let path = os_value(obs.path.as_os_str());
                let known = find
                    .query_row([&path], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            version_of(r, 1, 2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, bool>(4)?,
                        ))
                    })
                    .optional()
                    .map_err(|e| Error::db("recording files", e))?;
                match known {
                    None => {
                        insert
                            .execute(params![
                                path,
                                obs.folder,
                                obs.date,
                                os_value(&obs.filename),
                                obs.version.size as i64,
                                obs.version.mtime_ns,
                                obs.ready_at,
                                now
                            ])
                            .map_err(|e| Error::db("recording a new file", e))?;
                        stats.new += 1;
                    }
                    Some((id, version, status, absent)) if version != obs.version || absent => {
                        new_version
                            .execute(params![
                                id,
                                obs.version.size as i64,
                                obs.version.mtime_ns,
                                obs.ready_at,
                                now
                            ])
                            .map_err(|e| Error::db("recording a new version", e))?;
                        log_new_version(&obs.path, version, &status, absent, obs.version);
                        stats.new_versions += 1;
                    }
                    Some((id, ..)) => {
                        if obs.via_event
                            && make_due
                                .execute(params![id, now])
                                .map_err(|e| Error::db("recording files", e))?
                                > 0
                        {
                            stats.made_due += 1;
                        } else {
                            stats.unchanged += 1;
                        }
                    }
                }
            }
        }
        tx.commit()
            .map_err(|e| Error::db("committing recorded files", e))?;
        Ok(stats)
    }

    /// Which listed files are recorded with the version they have on disk now: `known[i]`
    /// is true when `listed[i]` (path bytes, version) has a row with that size and mtime.
    /// A rescan asks this for every date folder every minute, so memory follows the listing,
    /// never the database (a folder holding a backlog of a million rows must not become a
    /// million-entry map): a short listing is looked up path by path on the UNIQUE index,
    /// a long one is compared with the folder's rows as they stream past.
    fn known_among(
        &mut self,
        folder: &str,
        date: &str,
        listed: &[(&[u8], Version)],
    ) -> Result<Vec<bool>> {
        let err = |e| Error::db("reading known files", e);
        let mut known = vec![false; listed.len()];
        if listed.len() <= LOOKUP_MAX {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT size, mtime_ns FROM files WHERE path = ?1 AND absent = 0")
                .map_err(err)?;
            for (k, (path, version)) in known.iter_mut().zip(listed) {
                let row = stmt
                    .query_row([&bytes_value(path)], |r| version_of(r, 0, 1))
                    .optional()
                    .map_err(err)?;
                *k = row == Some(*version);
            }
            return Ok(known);
        }
        let index: HashMap<&[u8], usize> = listed
            .iter()
            .enumerate()
            .map(|(i, (path, _))| (*path, i))
            .collect();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT path, size, mtime_ns FROM files WHERE date = ?1 AND folder = ?2 AND absent = 0",
            )
            .map_err(err)?;
        let mut rows = stmt.query([date, folder]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let (ValueRef::Text(path) | ValueRef::Blob(path)) = r.get_ref(0).map_err(err)? else {
                continue;
            };
            if let Some(&i) = index.get(path) {
                known[i] = version_of(r, 1, 2).map_err(err)? == listed[i].1;
            }
        }
        Ok(known)
    }

    /// A permission change (IN_ATTRIB) on a pending file: look at it again now rather than
    /// at its next backoff.
    fn recheck(&mut self, path: &Path, now: &str) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE files SET next_attempt_at = ?2, updated_at = ?2
                 WHERE path = ?1 AND status = 'pending' AND attempts > 0 AND next_attempt_at > ?2",
                params![os_value(path.as_os_str()), now],
            )
            .map_err(|e| Error::db("re-checking a file", e))?;
        Ok(n > 0)
    }

    /// Atomically claims up to `limit` due rows in `order`. `INDEXED BY`: left to itself
    /// SQLite picks `files_status`, reads every pending row and sorts them, 157 ms a claim
    /// with a million pending rows; a partial index in the claim's order makes a claim cost
    /// the rows it returns.
    fn claim_due(
        &mut self,
        now: &str,
        far: &str,
        limit: usize,
        order: ClaimOrder,
    ) -> Result<Vec<Claimed>> {
        let (index, by) = match order {
            ClaimOrder::OldestFile => ("files_pending_age", "mtime_ns ASC, id ASC"),
            ClaimOrder::NewestFile => ("files_pending_age", "mtime_ns DESC, id DESC"),
            ClaimOrder::LongestWaiting => ("files_pending_due", "next_attempt_at ASC, id ASC"),
        };
        let sql = format!(
            "UPDATE files SET status = 'uploading', attempts = attempts + 1, updated_at = ?1
             WHERE id IN (SELECT id FROM files INDEXED BY {index}
                          WHERE status = 'pending' AND (next_attempt_at <= ?1 OR next_attempt_at > ?3)
                          ORDER BY {by} LIMIT ?2)
             {CLAIM_RETURNING}"
        );
        // In a transaction: a row that cannot be read back rolls the whole claim back
        // instead of leaving rows `uploading` with no job behind them.
        let tx = self.tx("claiming files")?;
        let mut claimed = {
            let mut stmt = tx
                .prepare_cached(&sql)
                .map_err(|e| Error::db("claiming files", e))?;
            let rows = stmt
                .query_map(params![now, limit as i64, far], claimed_row)
                .map_err(|e| Error::db("claiming files", e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| Error::db("claiming files", e))?
        };
        tx.commit().map_err(|e| Error::db("claiming files", e))?;
        // RETURNING gives no order guarantee.
        claimed.sort_by_key(|c| (c.version.mtime_ns, c.id));
        if order == ClaimOrder::NewestFile {
            claimed.reverse();
        }
        Ok(claimed)
    }

    /// Claims these rows if they are still pending (the one-shot scan works through the
    /// list of rows that were due when it started).
    fn claim_ids(&mut self, ids: &[i64], now: &str) -> Result<Vec<Claimed>> {
        let tx = self.tx("claiming files")?;
        let mut out = Vec::with_capacity(ids.len());
        {
            let sql = format!(
                "UPDATE files SET status = 'uploading', attempts = attempts + 1, updated_at = ?2
                 WHERE id = ?1 AND status = 'pending' {CLAIM_RETURNING}"
            );
            let mut stmt = tx
                .prepare_cached(&sql)
                .map_err(|e| Error::db("claiming files", e))?;
            for id in ids {
                if let Some(c) = stmt
                    .query_row(params![id, now], claimed_row)
                    .optional()
                    .map_err(|e| Error::db("claiming files", e))?
                {
                    out.push(c);
                }
            }
        }
        tx.commit().map_err(|e| Error::db("claiming files", e))?;
        Ok(out)
    }

    /// Ids of pending rows due by `now` (optionally only of these dates), in upload order.
    fn due_ids(
        &mut self,
        now: &str,
        far: &str,
        dates: &[String],
        newest_first: bool,
    ) -> Result<Vec<i64>> {
        let order = if newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT id, date FROM files
             WHERE status = 'pending' AND (next_attempt_at <= ?1 OR next_attempt_at > ?2)
             ORDER BY mtime_ns {order}, id {order}"
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(|e| Error::db("listing due files", e))?;
        let rows = stmt
            .query_map([now, far], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| Error::db("listing due files", e))?;
        let mut ids = Vec::new();
        for row in rows {
            let (id, date) = row.map_err(|e| Error::db("listing due files", e))?;
            if dates.is_empty() || dates.contains(&date) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// When the next pending row becomes due, if any: the first entry of the partial index
    /// (not a walk over every pending row through `files_status`).
    fn next_due(&mut self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT min(next_attempt_at) FROM files INDEXED BY files_pending_due
                 WHERE status = 'pending'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| Error::db("finding the next due file", e))
    }

    /// Applies a batch of completions in one transaction. A completion only changes the row
    /// if it still holds the claimed version in `uploading`; a result row is written for
    /// every attempt either way, and each file keeps only its latest results. A completion
    /// whose row is gone (pruned meanwhile, deleted by hand) changes nothing and is returned.
    fn complete(&mut self, batch: &[Completion], now: &str) -> Result<Vec<i64>> {
        let tx = self.tx("saving upload results")?;
        let mut gone = Vec::new();
        {
            let mut exists = tx
                .prepare_cached("SELECT 1 FROM files WHERE id = ?1")
                .map_err(|e| Error::db("saving upload results", e))?;
            let mut result = tx
                .prepare_cached(
                    "INSERT INTO upload_results(file_id, attempt, started_at, duration_ms, http_status,
                        response_body, response_json, error, outcome)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(|e| Error::db("saving upload results", e))?;
            let mut trim = tx
                .prepare_cached(
                    "DELETE FROM upload_results WHERE file_id = ?1 AND id <=
                        (SELECT id FROM upload_results WHERE file_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                )
                .map_err(|e| Error::db("saving upload results", e))?;
            for c in batch {
                if !exists
                    .exists([c.file_id])
                    .map_err(|e| Error::db("saving upload results", e))?
                {
                    gone.push(c.file_id);
                    continue;
                }
                if let Some(outcome) = c.result {
                    result
                        .execute(params![
                            c.file_id,
                            c.attempt,
                            c.started_at,
                            c.duration_ms,
                            c.http_status,
                            c.response_body,
                            c.response_json,
                            c.error,
                            outcome.as_str()
                        ])
                        .map_err(|e| Error::db("saving an upload result", e))?;
                    trim.execute(params![c.file_id, RESULTS_KEPT_PER_FILE])
                        .map_err(|e| Error::db("trimming upload results", e))?;
                }
                let guard =
                    "WHERE id = ?1 AND status = 'uploading' AND size = ?2 AND mtime_ns = ?3";
                let (sql, extra): (String, Vec<Value>) = match &c.disposition {
                    Disposition::Uploaded => (
                        format!(
                            "UPDATE files SET status = 'uploaded', uploaded_at = ?4, next_attempt_at = NULL,
                                last_error = NULL, incomplete_since = NULL, updated_at = ?4 {guard}"
                        ),
                        vec![Value::Text(now.into())],
                    ),
                    Disposition::Retry { at, counted } => (
                        format!(
                            "UPDATE files SET status = 'pending', next_attempt_at = ?5, last_error = ?6,
                                attempts = attempts - ?7, updated_at = ?4 {guard}"
                        ),
                        vec![
                            Value::Text(now.into()),
                            Value::Text(at.clone()),
                            opt_text(&c.error),
                            Value::Integer(if *counted { 0 } else { 1 }),
                        ],
                    ),
                    Disposition::Failed => (
                        format!(
                            "UPDATE files SET status = 'failed', next_attempt_at = NULL, last_error = ?5,
                                updated_at = ?4 {guard}"
                        ),
                        vec![Value::Text(now.into()), opt_text(&c.error)],
                    ),
                    Disposition::Skipped { absent } => (
                        format!(
                            "UPDATE files SET status = 'skipped', next_attempt_at = NULL, last_error = ?5,
                                absent = ?6, updated_at = ?4 {guard}"
                        ),
                        vec![
                            Value::Text(now.into()),
                            opt_text(&c.error),
                            Value::Integer(i64::from(*absent)),
                        ],
                    ),
                    Disposition::NotReady { at, incomplete_since } => (
                        format!(
                            "UPDATE files SET status = 'pending', next_attempt_at = ?5, attempts = attempts - 1,
                                incomplete_since = ?6, last_error = ?7, updated_at = ?4 {guard}"
                        ),
                        vec![
                            Value::Text(now.into()),
                            Value::Text(at.clone()),
                            opt_text(incomplete_since),
                            opt_text(&c.error),
                        ],
                    ),
                    Disposition::Changed { version, at } => (
                        format!(
                            "UPDATE files SET status = 'pending', size = ?5, mtime_ns = ?6, attempts = 0,
                                next_attempt_at = ?7, last_error = NULL, uploaded_at = NULL,
                                incomplete_since = NULL, updated_at = ?4 {guard}"
                        ),
                        vec![
                            Value::Text(now.into()),
                            Value::Integer(version.size as i64),
                            Value::Integer(version.mtime_ns),
                            Value::Text(at.clone()),
                        ],
                    ),
                };
                let mut values: Vec<Value> = vec![
                    Value::Integer(c.file_id),
                    Value::Integer(c.version.size as i64),
                    Value::Integer(c.version.mtime_ns),
                ];
                values.extend(extra);
                tx.prepare_cached(&sql)
                    .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
                    .map_err(|e| Error::db("updating a file's status", e))?;
            }
        }
        tx.commit()
            .map_err(|e| Error::db("committing upload results", e))?;
        Ok(gone)
    }

    /// Gives claimed rows that no worker started back to `pending`, as if never claimed.
    fn unclaim(&mut self, ids: &[i64], now: &str) -> Result<()> {
        let tx = self.tx("returning unstarted work")?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE files SET status = 'pending', attempts = max(attempts - 1, 0), updated_at = ?2
                     WHERE id = ?1 AND status = 'uploading'",
                )
                .map_err(|e| Error::db("returning unstarted work", e))?;
            for id in ids {
                stmt.execute(params![id, now])
                    .map_err(|e| Error::db("returning unstarted work", e))?;
            }
        }
        tx.commit()
            .map_err(|e| Error::db("returning unstarted work", e))
    }

    /// Start-up (lock holder only) and shutdown past the grace: rows left `uploading` go back
    /// to `pending`, due now, each with an `interrupted` result row. Only `ids` when given.
    fn reset_uploading(&mut self, ids: Option<&[i64]>, now: &str, error: &str) -> Result<usize> {
        let tx = self.tx("resetting interrupted uploads")?;
        let targets: Vec<(i64, i64)> = {
            let mut stmt = tx
                .prepare("SELECT id, attempts FROM files WHERE status = 'uploading'")
                .map_err(|e| Error::db("resetting interrupted uploads", e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| Error::db("resetting interrupted uploads", e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| Error::db("resetting interrupted uploads", e))?
                .into_iter()
                .filter(|(id, _)| ids.is_none_or(|ids| ids.contains(id)))
                .collect()
        };
        for (id, attempt) in &targets {
            tx.execute(
                "INSERT INTO upload_results(file_id, attempt, started_at, duration_ms, error, outcome)
                 VALUES (?1, ?2, ?3, 0, ?4, 'retry')",
                params![id, attempt, now, error],
            )
            .map_err(|e| Error::db("resetting interrupted uploads", e))?;
            tx.execute(
                "DELETE FROM upload_results WHERE file_id = ?1 AND id <=
                    (SELECT id FROM upload_results WHERE file_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![id, RESULTS_KEPT_PER_FILE],
            )
            .map_err(|e| Error::db("trimming upload results", e))?;
            tx.execute(
                "UPDATE files SET status = 'pending', next_attempt_at = ?2, last_error = ?3, updated_at = ?2
                 WHERE id = ?1",
                params![id, now, error],
            )
            .map_err(|e| Error::db("resetting interrupted uploads", e))?;
        }
        tx.commit()
            .map_err(|e| Error::db("resetting interrupted uploads", e))?;
        Ok(targets.len())
    }

    /// After an endpoint outage: rows that failed during it are due now instead of waiting
    /// out a backoff that only reflected the outage.
    fn release_backoff(&mut self, now: &str) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE files SET next_attempt_at = ?1, updated_at = ?1
                 WHERE status = 'pending' AND attempts > 0 AND next_attempt_at > ?1",
                [now],
            )
            .map_err(|e| Error::db("releasing backoff after an outage", e))
    }

    /// Re-queues `failed` rows (`retry --failed`).
    fn retry_failed(&mut self, now: &str) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE files SET status = 'pending', attempts = 0, next_attempt_at = ?1,
                    last_error = NULL, absent = 0, updated_at = ?1
                 WHERE status = 'failed'",
                [now],
            )
            .map_err(|e| Error::db("re-queueing failed files", e))
    }

    /// Re-queues one path; uploaded (or skipped) rows only with `force`. Returns the status
    /// it had, or None when the path is not recorded.
    fn retry_path(&mut self, path: &Path, force: bool, now: &str) -> Result<Option<String>> {
        let key = os_value(path.as_os_str());
        let status: Option<String> = self
            .conn
            .query_row("SELECT status FROM files WHERE path = ?1", [&key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| Error::db("re-queueing a file", e))?;
        let Some(status) = status else {
            return Ok(None);
        };
        let allowed = match status.as_str() {
            "failed" | "pending" => true,
            "uploaded" | "skipped" => force,
            _ => false,
        };
        if allowed {
            self.conn
                .execute(
                    "UPDATE files SET status = 'pending', attempts = 0, next_attempt_at = ?2,
                        last_error = NULL, uploaded_at = NULL, incomplete_since = NULL, absent = 0,
                        updated_at = ?2
                     WHERE path = ?1",
                    params![key, now],
                )
                .map_err(|e| Error::db("re-queueing a file", e))?;
        }
        Ok(Some(status))
    }

    /// Deletes finished rows (and their results) whose date folder is before `before_date`.
    fn prune(&mut self, before_date: &str) -> Result<usize> {
        let tx = self.tx("pruning old rows")?;
        tx.execute(
            "DELETE FROM upload_results WHERE file_id IN
                (SELECT id FROM files WHERE date < ?1 AND status IN ('uploaded', 'failed', 'skipped'))",
            [before_date],
        )
        .map_err(|e| Error::db("pruning old results", e))?;
        let n = tx
            .execute(
                "DELETE FROM files WHERE date < ?1 AND status IN ('uploaded', 'failed', 'skipped')",
                [before_date],
            )
            .map_err(|e| Error::db("pruning old rows", e))?;
        tx.commit().map_err(|e| Error::db("pruning old rows", e))?;
        Ok(n)
    }

    /// The greatest `date`, from the `files_date_folder` index.
    fn newest_date(&mut self) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT max(date) FROM files", [], |r| r.get(0))
            .map_err(|e| Error::db("finding the newest date folder", e))
    }

    fn set_state(&mut self, pairs: &[(&str, String)], now: &str) -> Result<()> {
        let tx = self.tx("writing daemon state")?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO state(key, value, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )
                .map_err(|e| Error::db("writing daemon state", e))?;
            for (k, v) in pairs {
                stmt.execute(params![k, v, now])
                    .map_err(|e| Error::db("writing daemon state", e))?;
            }
        }
        tx.commit()
            .map_err(|e| Error::db("writing daemon state", e))
    }

    /// The daemon's `state` rows: key → (value, updated_at).
    fn state(&mut self) -> Result<HashMap<String, (String, String)>> {
        state_rows(&self.conn).map_err(|e| Error::db("reading daemon state", e))
    }

    /// How many rows wait (pending or uploading), and when the oldest was detected.
    fn queue_overview(&mut self) -> Result<(i64, Option<String>)> {
        self.conn
            .query_row(
                "SELECT count(*), min(detected_at) FROM files WHERE status IN ('pending', 'uploading')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| Error::db("counting pending files", e))
    }

    /// Rows uploaded at or after `since`.
    fn uploaded_since(&mut self, since: &str) -> Result<i64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM files WHERE status = 'uploaded' AND uploaded_at >= ?1",
                [since],
                |r| r.get(0),
            )
            .map_err(|e| Error::db("counting uploaded files", e))
    }

    /// Row counts per (folder, status).
    fn counts(&mut self) -> Result<Vec<(String, String, i64)>> {
        folder_counts(&self.conn).map_err(|e| Error::db("counting files", e))
    }

    /// Counts of rows in `status` among the given dates (the one-shot scan's exit code).
    fn count_status_in_dates(&mut self, statuses: &[Status], dates: &[String]) -> Result<i64> {
        let mut total = 0;
        for date in dates {
            for st in statuses {
                let n: i64 = self
                    .conn
                    .query_row(
                        "SELECT count(*) FROM files WHERE date = ?1 AND status = ?2",
                        params![date, st.as_str()],
                        |r| r.get(0),
                    )
                    .map_err(|e| Error::db("counting files", e))?;
                total += n;
            }
        }
        Ok(total)
    }

    fn list(&mut self, filter: &ListFilter) -> Result<Vec<FileRow>> {
        let mut sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE 1 = 1");
        let mut values: Vec<Value> = Vec::new();
        if let Some(st) = filter.status {
            values.push(Value::Text(st.as_str().into()));
            sql += &format!(" AND status = ?{}", values.len());
        }
        if let Some(f) = &filter.folder {
            values.push(Value::Text(f.clone()));
            sql += &format!(" AND folder = ?{}", values.len());
        }
        if let Some(d) = &filter.date {
            values.push(Value::Text(d.clone()));
            sql += &format!(" AND date = ?{}", values.len());
        }
        sql += " ORDER BY date DESC, folder, mtime_ns DESC, id DESC";
        if let Some(limit) = filter.limit {
            values.push(Value::Integer(limit));
            sql += &format!(" LIMIT ?{}", values.len());
        }
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(|e| Error::db("listing files", e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), file_row)
            .map_err(|e| Error::db("listing files", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| Error::db("listing files", e))
    }

    fn file_by_path(&mut self, path: &Path) -> Result<Option<FileRow>> {
        self.conn
            .query_row(
                &format!("SELECT {FILE_COLUMNS} FROM files WHERE path = ?1"),
                [os_value(path.as_os_str())],
                file_row,
            )
            .optional()
            .map_err(|e| Error::db("reading a file row", e))
    }

    /// Everything `status` and `check` show, in one read transaction so the numbers agree.
    fn summary(&mut self, today_start: &str, day_ago: &str, hour_ago: &str) -> Result<Summary> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| Error::db("reading status", e))?;
        let q = |e| Error::db("reading status", e);
        let counts = folder_counts(&tx).map_err(q)?;
        let uploaded_today: i64 = tx
            .query_row(
                "SELECT count(*) FROM files WHERE status = 'uploaded' AND uploaded_at >= ?1",
                [today_start],
                |r| r.get(0),
            )
            .map_err(q)?;
        let oldest_pending = tx
            .query_row(
                "SELECT path, detected_at, last_error FROM files WHERE status IN ('pending', 'uploading')
                 ORDER BY detected_at, id LIMIT 1",
                [],
                |r| Ok(PathAt { path: PathBuf::from(row_os(r, 0)?), at: r.get(1)?, detail: r.get(2)? }),
            )
            .optional()
            .map_err(q)?;
        let last_success = tx
            .query_row(
                "SELECT path, uploaded_at, NULL FROM files WHERE status = 'uploaded' ORDER BY uploaded_at DESC LIMIT 1",
                [],
                |r| Ok(PathAt { path: PathBuf::from(row_os(r, 0)?), at: r.get(1)?, detail: r.get(2)? }),
            )
            .optional()
            .map_err(q)?;
        let last_error = tx
            .query_row(
                "SELECT f.path, r.started_at, coalesce(r.error, 'HTTP ' || r.http_status) FROM upload_results r
                 JOIN files f ON f.id = r.file_id WHERE r.outcome != 'success' ORDER BY r.id DESC LIMIT 1",
                [],
                |r| Ok(PathAt { path: PathBuf::from(row_os(r, 0)?), at: r.get(1)?, detail: r.get(2)? }),
            )
            .optional()
            .map_err(q)?;
        let mut errors_24h = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT coalesce(r.error, 'HTTP ' || r.http_status) AS cause, count(*), max(f.path)
                     FROM upload_results r JOIN files f ON f.id = r.file_id
                     WHERE r.started_at >= ?1 AND r.outcome != 'success'
                     GROUP BY cause ORDER BY count(*) DESC, cause LIMIT 10",
                )
                .map_err(q)?;
            let rows = stmt
                .query_map([day_ago], |r| {
                    Ok(ErrorCause {
                        cause: r.get(0)?,
                        count: r.get(1)?,
                        example: PathBuf::from(row_os(r, 2)?),
                    })
                })
                .map_err(q)?;
            for row in rows {
                errors_24h.push(row.map_err(q)?);
            }
        }
        let failed_last_hour: i64 = tx
            .query_row(
                "SELECT count(*) FROM upload_results WHERE started_at >= ?1 AND outcome = 'failed'",
                [hour_ago],
                |r| r.get(0),
            )
            .map_err(q)?;
        let state = state_rows(&tx).map_err(q)?;
        Ok(Summary {
            counts,
            uploaded_today,
            oldest_pending,
            last_success,
            last_error,
            errors_24h,
            failed_last_hour,
            state,
            hosts: Vec::new(),
        })
    }
}

/// Row counts per (folder, status): `counts`, and `summary` inside its read transaction.
fn folder_counts(conn: &Connection) -> rusqlite::Result<Vec<(String, String, i64)>> {
    let mut stmt = conn.prepare(
        "SELECT folder, status, count(*) FROM files GROUP BY folder, status ORDER BY folder, status",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// The `state` rows: key → (value, updated_at).
fn state_rows(conn: &Connection) -> rusqlite::Result<HashMap<String, (String, String)>> {
    let mut stmt = conn.prepare("SELECT key, value, updated_at FROM state")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
    rows.collect()
}

fn opt_text(v: &Option<String>) -> Value {
    match v {
        Some(s) => Value::Text(s.clone()),
        None => Value::Null,
    }
}

fn newer_schema(path: &Path, version: i64) -> Error {
    Error::DbState {
        path: path.to_path_buf(),
        msg: format!(
            "has schema version {version}, newer than this sega-uploader understands ({SCHEMA_VERSION}): \
             upgrade sega-uploader instead of downgrading the database"
        ),
    }
}

/// Turns SQLite's terse open errors into a sentence that names the file, and refuses to
/// treat a corrupt file as a fresh start.
fn open_error(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let msg = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            "is corrupt or not an SQLite database; it was left untouched. Move it aside (the next \
             scan re-finds every image on disk) or restore a backup"
                .to_string()
        }
        Some(ErrorCode::CannotOpen) => format!(
            "cannot be opened (does its directory exist and is it writable by this user?): {e}"
        ),
        Some(ErrorCode::ReadOnly) | Some(ErrorCode::PermissionDenied) => {
            format!("is not writable by this user: {e}")
        }
        _ => return Error::db(format!("opening database {}", path.shown()), e),
    };
    Error::DbState {
        path: path.to_path_buf(),
        msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn temp_db() -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sega-store-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("t.db")
    }

    #[test]
    fn open_creates_the_schema_in_wal_mode_and_reopens() {
        let p = temp_db();
        let s = Store::open(&p).unwrap();
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(s.user_version().unwrap(), SCHEMA_VERSION);
        drop(s);
        Store::open(&p).unwrap();
        Store::open_read_only(&p).unwrap();
    }

    #[test]
    fn refuses_corrupt_foreign_and_newer_databases() {
        let p = temp_db();
        std::fs::write(&p, vec![0x42u8; 8192]).unwrap();
        let e = Store::open(&p).err().unwrap().to_string();
        assert!(e.contains("corrupt or not an SQLite database"), "{e}");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            vec![0x42u8; 8192],
            "left untouched"
        );

        let p = temp_db();
        Connection::open(&p)
            .unwrap()
            .execute_batch("CREATE TABLE other(x)")
            .unwrap();
        let e = Store::open(&p).err().unwrap().to_string();
        assert!(e.contains("not our database"), "{e}");

        let p = temp_db();
        Connection::open(&p)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let e = Store::open(&p).err().unwrap().to_string();
        assert!(e.contains("newer than this sega-uploader"), "{e}");
    }

    /// Adversarial review: a row written by hand with a REAL mtime failed every read that
    /// met it (the owner looped between trouble and recovery, a date folder was never
    /// recorded again, a claim left rows `uploading`). STRICT refuses it at the INSERT.
    #[test]
    fn a_row_of_the_wrong_type_is_refused_at_its_insert() {
        let p = temp_db();
        let s = Store::open(&p).unwrap();
        let insert = |mtime: &str| {
            s.conn.execute(
                &format!(
                    "INSERT INTO files(path, folder, date, filename, size, mtime_ns, status, attempts,
                        detected_at, updated_at)
                     VALUES ('/d/Sega_1/2026-11-26/h{mtime}.jpg', 'Sega_1', '2026-11-26', 'h.jpg', 10,
                        {mtime}, 'pending', 0, 'x', 'x')"
                ),
                [],
            )
        };
        assert!(insert("0.5").is_err(), "a REAL mtime is refused");
        assert!(insert("'soon'").is_err(), "so is text");
        insert("5").unwrap();
    }
}
