//! The end of an attempt and of a row: `complete` records each attempt's result (each file
//! keeps its latest) and, where the row still holds the claimed version, its new status;
//! `prune` deletes finished rows of old date folders.

use rusqlite::types::Value;
use rusqlite::{params, Transaction};

use super::{ts_value, Store};
use crate::error::{Error, Result};
use crate::store::{Completion, Disposition, RESULTS_KEPT_PER_FILE, UPLOADED_TOTAL};
use crate::timestamp::Timestamp;

/// A completion's update: it changes the row only while it still holds the claimed version
/// in `uploading`. One string per disposition, known at compile time: no `format!` per
/// result to find its statement in the cache.
macro_rules! guarded {
    ($set:literal) => {
        concat!(
            $set,
            " WHERE id = ?1 AND status = 'uploading' AND size = ?2 AND mtime_ns = ?3"
        )
    };
}

impl Store {
    /// Applies a batch of completions in one transaction. A completion only changes the row
    /// if it still holds the claimed version in `uploading`; a result row is written for
    /// every attempt either way, and each file keeps only its latest results. A completion
    /// whose row is gone (pruned meanwhile, deleted by hand) changes nothing and is returned.
    /// The rows marked uploaded are added to the `UPLOADED_TOTAL` state row.
    pub(super) fn complete(&mut self, batch: &[Completion], now: Timestamp) -> Result<Vec<i64>> {
        let tx = self.tx("saving upload results")?;
        let gone = complete_in(&tx, batch, now)?;
        tx.commit()
            .map_err(|e| Error::db("committing upload results", e))?;
        Ok(gone)
    }

    /// Deletes finished rows (and their results) whose date folder is before `before_date`.
    pub(super) fn prune(&mut self, before_date: &str) -> Result<usize> {
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
    pub(super) fn newest_date(&mut self) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT max(date) FROM files", [], |r| r.get(0))
            .map_err(|e| Error::db("finding the newest date folder", e))
    }
}

/// `Store::complete`'s work, in the caller's transaction (alone, or in a turn's:
/// `Store::write_turn`).
pub(super) fn complete_in(
    tx: &Transaction<'_>,
    batch: &[Completion],
    now: Timestamp,
) -> Result<Vec<i64>> {
    let mut gone = Vec::new();
    let mut uploaded: i64 = 0;
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
            let (sql, extra): (&str, Vec<Value>) = match &c.disposition {
                Disposition::Uploaded => (
                    guarded!(
                        "UPDATE files SET status = 'uploaded', uploaded_at = ?4, next_attempt_at = NULL,
                            last_error = NULL, incomplete_since = NULL, updated_at = ?4"
                    ),
                    vec![ts_value(now)],
                ),
                Disposition::Retry { at, counted } => (
                    guarded!(
                        "UPDATE files SET status = 'pending', next_attempt_at = ?5, last_error = ?6,
                            attempts = attempts - ?7, updated_at = ?4"
                    ),
                    vec![
                        ts_value(now),
                        ts_value(*at),
                        opt_text(&c.error),
                        Value::Integer(if *counted { 0 } else { 1 }),
                    ],
                ),
                Disposition::Failed => (
                    guarded!(
                        "UPDATE files SET status = 'failed', next_attempt_at = NULL, last_error = ?5,
                            updated_at = ?4"
                    ),
                    vec![ts_value(now), opt_text(&c.error)],
                ),
                Disposition::Skipped { absent } => (
                    guarded!(
                        "UPDATE files SET status = 'skipped', next_attempt_at = NULL, last_error = ?5,
                            absent = ?6, updated_at = ?4"
                    ),
                    vec![
                        ts_value(now),
                        opt_text(&c.error),
                        Value::Integer(i64::from(*absent)),
                    ],
                ),
                Disposition::NotReady { at, incomplete_since } => (
                    guarded!(
                        "UPDATE files SET status = 'pending', next_attempt_at = ?5, attempts = attempts - 1,
                            incomplete_since = ?6, last_error = ?7, updated_at = ?4"
                    ),
                    vec![
                        ts_value(now),
                        ts_value(*at),
                        incomplete_since.map_or(Value::Null, ts_value),
                        opt_text(&c.error),
                    ],
                ),
                Disposition::Changed { version, at } => (
                    guarded!(
                        "UPDATE files SET status = 'pending', size = ?5, mtime_ns = ?6, attempts = 0,
                            next_attempt_at = ?7, last_error = NULL, uploaded_at = NULL,
                            incomplete_since = NULL, updated_at = ?4"
                    ),
                    vec![
                        ts_value(now),
                        Value::Integer(version.size as i64),
                        Value::Integer(version.mtime_ns),
                        ts_value(*at),
                    ],
                ),
            };
            let mut values: Vec<Value> = vec![
                Value::Integer(c.file_id),
                Value::Integer(c.version.size as i64),
                Value::Integer(c.version.mtime_ns),
            ];
            values.extend(extra);
            let changed = tx
                .prepare_cached(sql)
                .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
                .map_err(|e| Error::db("updating a file's status", e))?;
            if c.disposition == Disposition::Uploaded {
                uploaded += changed as i64;
            }
        }
        if uploaded > 0 {
            // A value edited by hand into something that is not a number counts as 0
            // (CAST), rather than failing every completion after it.
            tx.prepare_cached(
                "INSERT INTO state(key, value, updated_at) VALUES (?1, CAST(?2 AS TEXT), ?3)
                 ON CONFLICT(key) DO UPDATE
                    SET value = CAST(CAST(value AS INTEGER) + ?2 AS TEXT), updated_at = ?3",
            )
            .and_then(|mut s| s.execute(params![UPLOADED_TOTAL, uploaded, now]))
            .map_err(|e| Error::db("counting uploaded files", e))?;
        }
    }
    Ok(gone)
}

fn opt_text(v: &Option<String>) -> Value {
    match v {
        Some(s) => Value::Text(s.clone()),
        None => Value::Null,
    }
}
