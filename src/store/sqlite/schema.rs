//! The tables and their migrations (`PRAGMA user_version`), applied in one transaction at
//! open; a file with another program's tables, or a newer schema, is refused.

use std::path::Path;

use super::open::open_error;
use super::Store;
use crate::error::{Error, LedgerState, Result};
use crate::layout::Show;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 4;

/// The first schema with `file_counts` and the summary's indexes.
pub const COUNTERS_SINCE: i64 = 3;

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
    // 3: what the periodic work and `status` read costs what changed, not what waits (a
    // backlog of a million rows was counted every 10 s). `file_counts` holds the rows per
    // (folder, status), kept by triggers in the transaction of every change, whoever writes
    // (the daemon, `retry`, `scan`, `migrate-db`, a hand edit), and filled once here; a row
    // that reaches 0 stays (readers skip it). `files_waiting`: the oldest waiting row
    // without a walk over the backlog. `upload_results_trouble`: the last error and the
    // day's errors among the failed attempts alone, however many succeeded.
    "CREATE TABLE file_counts(
        folder TEXT NOT NULL,
        status TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (folder, status)
    ) WITHOUT ROWID, STRICT;
    INSERT INTO file_counts(folder, status, n)
    SELECT folder, status, count(*) FROM files GROUP BY folder, status;
    CREATE TRIGGER files_count_insert AFTER INSERT ON files BEGIN
        INSERT INTO file_counts(folder, status, n) VALUES (new.folder, new.status, 1)
            ON CONFLICT (folder, status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER files_count_delete AFTER DELETE ON files BEGIN
        UPDATE file_counts SET n = n - 1 WHERE folder = old.folder AND status = old.status;
    END;
    CREATE TRIGGER files_count_update AFTER UPDATE OF folder, status ON files
        WHEN old.folder IS NOT new.folder OR old.status IS NOT new.status BEGIN
        UPDATE file_counts SET n = n - 1 WHERE folder = old.folder AND status = old.status;
        INSERT INTO file_counts(folder, status, n) VALUES (new.folder, new.status, 1)
            ON CONFLICT (folder, status) DO UPDATE SET n = n + 1;
    END;
    CREATE INDEX files_waiting ON files(detected_at, id) WHERE status IN ('pending', 'uploading');
    CREATE INDEX upload_results_trouble ON upload_results(started_at) WHERE outcome <> 'success';",
    // 4: `files_status` goes: a row's life wrote it five times (an entry at its record, one
    // removed and one added at its claim and again at its completion), and every read by
    // status on the daemon's path has a partial index (the claim names its own, `INDEXED
    // BY`) or reads the counters. What needed it instead gets an index of the few rows in
    // that status: `files_claimed` for the start-up requeue of `uploading` rows (written at
    // the claim and the completion), `files_failed` for `retry --failed`.
    // `upload_results_started` goes too: every result wrote it, and every read by time is
    // of failed attempts, which `upload_results_trouble` holds. (IF EXISTS: a ledger where
    // one was dropped by hand still migrates.)
    "DROP INDEX IF EXISTS files_status;
    DROP INDEX IF EXISTS upload_results_started;
    CREATE INDEX files_claimed ON files(id) WHERE status = 'uploading';
    CREATE INDEX files_failed ON files(id) WHERE status = 'failed';",
];

impl Store {
    pub(super) fn migrate(&mut self) -> Result<()> {
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
                return Err(Error::sqlite_state(
                    &path,
                    LedgerState::Corrupt,
                    format!("has {dangling} upload result(s) of missing files after migrating"),
                ));
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
                return Err(Error::sqlite_state(
                    &path,
                    LedgerState::Foreign,
                    "has tables but no sega-uploader schema version: not our database",
                ));
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
}

pub(super) fn newer_schema(path: &Path, version: i64) -> Error {
    Error::sqlite_state(
        path,
        LedgerState::Newer,
        format!(
            "has schema version {version}, newer than this sega-uploader understands ({SCHEMA_VERSION}): \
             upgrade sega-uploader instead of downgrading the database"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{completion, obs, temp_db, FAR, T0, T1};
    use crate::store::{ClaimOrder, Disposition, Status};
    use rusqlite::Connection;

    /// Counts per (folder, status word), sorted.
    fn words(v: Vec<(String, Status, i64)>) -> Vec<(String, String, i64)> {
        let mut v: Vec<_> = v
            .into_iter()
            .map(|(f, s, n)| (f, s.as_str().to_owned(), n))
            .collect();
        v.sort();
        v
    }

    /// What the rows of the file say, read by a connection of its own.
    fn rows_say(p: &Path) -> Vec<(String, String, i64)> {
        let c = Connection::open(p).unwrap();
        let mut stmt = c
            .prepare("SELECT folder, status, count(*) FROM files GROUP BY 1, 2 ORDER BY 1, 2")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    /// A database as schema 2 left it, with rows of every status (one written by hand).
    fn schema_2_with_rows(p: &Path) {
        let c = Connection::open(p).unwrap();
        for step in &MIGRATIONS[..2] {
            c.execute_batch(step).unwrap();
        }
        c.pragma_update(None, "user_version", 2).unwrap();
        for (i, (folder, status)) in [
            ("Sega_1", "pending"),
            ("Sega_1", "pending"),
            ("Sega_1", "uploading"),
            ("Sega_1", "uploaded"),
            ("Sega_2", "failed"),
            ("Sega_2", "skipped"),
            ("Sega_2", "held"),
        ]
        .into_iter()
        .enumerate()
        {
            c.execute(
                "INSERT INTO files(path, folder, date, filename, size, mtime_ns, status, attempts,
                    next_attempt_at, detected_at, uploaded_at, updated_at)
                 VALUES (?1, ?2, '2026-11-26', ?3, 10, ?4, ?5, 0, ?6, ?6, ?6, ?6)",
                rusqlite::params![
                    format!("/data/{folder}/2026-11-26/{i}.jpg"),
                    folder,
                    format!("{i}.jpg"),
                    i as i64,
                    status,
                    format!("2026-11-26T10:00:0{i}.000Z"),
                ],
            )
            .unwrap();
        }
    }

    /// Schema 3 counts what an existing database holds once, at its migration; a read-only
    /// look before the migration counts the rows themselves.
    #[test]
    fn a_schema_2_database_is_counted_at_its_migration() {
        let p = temp_db();
        schema_2_with_rows(&p);
        let want = rows_say(&p);
        assert_eq!(want.len(), 6, "{want:?}");
        let mut before = Store::open_read_only(&p).unwrap();
        assert!(!before.counters);
        assert_eq!(words(before.counts().unwrap()), want);
        assert_eq!(before.queue_overview().unwrap().0, 3);
        drop(before);

        let mut s = Store::open(&p).unwrap();
        assert_eq!(words(s.counts().unwrap()), want);
        let (waiting, oldest) = s.queue_overview().unwrap();
        assert_eq!(waiting, 3);
        assert_eq!(
            oldest.map(|t| t.to_string()).as_deref(),
            Some("2026-11-26T10:00:00.000Z")
        );
        let sum = s.summary(T0, T0, T0).unwrap();
        assert_eq!(words(sum.counts), want);
        // And it keeps counting.
        s.record(&[obs(b"new.jpg", 1, 1)], T0).unwrap();
        s.claim_due(T1, FAR, 10, ClaimOrder::OldestFile).unwrap();
        assert_eq!(words(s.counts().unwrap()), rows_say(&p));
        let mut after = Store::open_read_only(&p).unwrap();
        assert!(after.counters);
        assert_eq!(words(after.counts().unwrap()), rows_say(&p));
    }

    /// Whoever writes the file, and however a transaction ends, the counts follow the rows:
    /// a transaction that dies before its commit (a process killed in the middle) takes its
    /// count changes with it, and hand edits are counted like the daemon's own.
    /// A row set to `uploaded` by hand, with no upload time, does not stop `status`: the
    /// last success stays the last one the daemon recorded.
    #[test]
    fn a_row_marked_uploaded_by_hand_without_a_time_is_not_the_last_success() {
        let p = temp_db();
        let mut s = Store::open(&p).unwrap();
        s.record(&[obs(b"a.jpg", 1, 1), obs(b"b.jpg", 1, 2)], T0)
            .unwrap();
        Connection::open(&p)
            .unwrap()
            .execute_batch("UPDATE files SET status = 'uploaded' WHERE filename = 'b.jpg'")
            .unwrap();
        assert!(s.summary(T0, T0, T0).unwrap().last_success.is_none());
        let c = s.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap();
        s.complete(&[completion(&c[0], Disposition::Uploaded)], T1)
            .unwrap();
        let last = s.summary(T0, T0, T0).unwrap().last_success.unwrap();
        assert_eq!(last.path, Path::new("/data/Sega_1/2026-11-26/a.jpg"));
        assert_eq!(last.at, Some(T1));
    }

    #[test]
    fn counts_follow_hand_edits_and_transactions_that_never_commit() {
        let p = temp_db();
        let mut s = Store::open(&p).unwrap();
        let batch: Vec<_> = (0..6)
            .map(|i| obs(format!("{i}.jpg").as_bytes(), 10, i))
            .collect();
        s.record(&batch, T0).unwrap();
        s.claim_due(T0, FAR, 2, ClaimOrder::OldestFile).unwrap();
        let want = rows_say(&p);

        let mut other = Connection::open(&p).unwrap();
        let tx = other.transaction().unwrap();
        tx.execute_batch(
            "UPDATE files SET status = 'uploaded' WHERE status = 'pending';
             DELETE FROM files WHERE status = 'uploading';
             INSERT INTO files(path, folder, date, filename, size, mtime_ns, status, attempts,
                 detected_at, updated_at)
             VALUES ('/data/Sega_1/2026-11-26/z.jpg', 'Sega_1', '2026-11-26', 'z.jpg', 1, 1,
                 'pending', 0, 'x', 'x');",
        )
        .unwrap();
        drop(tx);
        assert_eq!(rows_say(&p), want, "rolled back");
        assert_eq!(words(s.counts().unwrap()), want);

        other
            .execute_batch(
                "UPDATE files SET status = 'held' WHERE filename = '5.jpg';
                 UPDATE files SET folder = 'Sega_2' WHERE filename = '4.jpg';
                 UPDATE files SET status = status WHERE filename = '3.jpg';
                 DELETE FROM files WHERE filename = '0.jpg';",
            )
            .unwrap();
        let want = rows_say(&p);
        assert!(want.iter().any(|(_, st, _)| st == "held"), "{want:?}");
        assert_eq!(words(s.counts().unwrap()), want);
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
