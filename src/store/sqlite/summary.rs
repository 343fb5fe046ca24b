//! The daemon's state rows and what the operator commands read: counts, `list` (and the
//! latest result of each row for `list -v`), one file's row and its results (`show`), and
//! the summary `status` and `check` show.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    file_row, lenient_ts, os_value, result_row, row_os, Store, FILE_COLUMNS, RESULT_COLUMNS,
};
use crate::error::{Error, Result};
use crate::store::{ErrorCause, FileRow, ListFilter, PathAt, ResultRow, Status, Summary};
use crate::timestamp::Timestamp;

impl Store {
    pub(super) fn set_state(&mut self, pairs: &[(&str, String)], now: Timestamp) -> Result<()> {
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
    pub(super) fn state(&mut self) -> Result<HashMap<String, (String, Option<Timestamp>)>> {
        state_rows(&self.conn).map_err(|e| Error::db("reading daemon state", e))
    }

    /// How many rows wait (pending or uploading), and when the oldest was detected: the
    /// counters and the first entry of `files_waiting`, whatever the backlog.
    pub(super) fn queue_overview(&mut self) -> Result<(i64, Option<Timestamp>)> {
        let q = |e| Error::db("counting pending files", e);
        let sql = if self.counters {
            "SELECT (SELECT coalesce(sum(n), 0) FROM file_counts
                     WHERE status IN ('pending', 'uploading')),
                    (SELECT detected_at FROM files INDEXED BY files_waiting
                     WHERE status IN ('pending', 'uploading') ORDER BY detected_at, id LIMIT 1)"
        } else {
            "SELECT count(*), min(detected_at) FROM files WHERE status IN ('pending', 'uploading')"
        };
        self.conn
            .query_row(sql, [], |r| Ok((r.get(0)?, lenient_ts(r, 1)?)))
            .map_err(q)
    }

    /// Rows uploaded at or after `since`.
    pub(super) fn uploaded_since(&mut self, since: Timestamp) -> Result<i64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM files WHERE status = 'uploaded' AND uploaded_at >= ?1",
                [since],
                |r| r.get(0),
            )
            .map_err(|e| Error::db("counting uploaded files", e))
    }

    /// Row counts per (folder, status).
    pub(super) fn counts(&mut self) -> Result<Vec<(String, Status, i64)>> {
        folder_counts(&self.conn, self.counters).map_err(|e| Error::db("counting files", e))
    }

    /// Counts of rows in `status` among the given dates (the one-shot scan's exit code).
    pub(super) fn count_status_in_dates(
        &mut self,
        statuses: &[Status],
        dates: &[String],
    ) -> Result<i64> {
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

    pub(super) fn list(&mut self, filter: &ListFilter) -> Result<Vec<FileRow>> {
        let mut sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE 1 = 1");
        let mut values: Vec<Value> = Vec::new();
        if let Some(st) = &filter.status {
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

    pub(super) fn file_by_path(&mut self, path: &Path) -> Result<Option<FileRow>> {
        self.conn
            .query_row(
                &format!("SELECT {FILE_COLUMNS} FROM files WHERE path = ?1"),
                [os_value(path.as_os_str())],
                file_row,
            )
            .optional()
            .map_err(|e| Error::db("reading a file row", e))
    }

    pub(super) fn file_by_id(&mut self, id: i64) -> Result<Option<FileRow>> {
        self.conn
            .query_row(
                &format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"),
                [id],
                file_row,
            )
            .optional()
            .map_err(|e| Error::db("reading a file row", e))
    }

    /// One file's results, oldest first.
    pub(super) fn results(&mut self, file_id: i64) -> Result<Vec<ResultRow>> {
        let q = |e| Error::db("reading upload results", e);
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {RESULT_COLUMNS} FROM upload_results WHERE file_id = ?1 ORDER BY id"
            ))
            .map_err(q)?;
        let rows = stmt.query_map([file_id], result_row).map_err(q)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(q)
    }

    /// The latest result of each file: one indexed lookup per id (`upload_results_file` is
    /// on (file_id, id)), in one read transaction.
    pub(super) fn latest_results(&mut self, file_ids: &[i64]) -> Result<HashMap<i64, ResultRow>> {
        let q = |e| Error::db("reading upload results", e);
        let tx = self.conn.transaction().map_err(q)?;
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT {RESULT_COLUMNS} FROM upload_results WHERE file_id = ?1
                 ORDER BY id DESC LIMIT 1"
            ))
            .map_err(q)?;
        let mut out = HashMap::new();
        for &id in file_ids {
            if let Some(r) = stmt.query_row([id], result_row).optional().map_err(q)? {
                out.insert(id, r);
            }
        }
        Ok(out)
    }

    /// Everything `status` and `check` show, in one read transaction so the numbers agree.
    pub(super) fn summary(
        &mut self,
        today_start: Timestamp,
        day_ago: Timestamp,
        hour_ago: Timestamp,
    ) -> Result<Summary> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| Error::db("reading status", e))?;
        let q = |e| Error::db("reading status", e);
        let counters = self.counters;
        let counts = folder_counts(&tx, counters).map_err(q)?;
        let uploaded_today: i64 = tx
            .query_row(
                "SELECT count(*) FROM files WHERE status = 'uploaded' AND uploaded_at >= ?1",
                [today_start],
                |r| r.get(0),
            )
            .map_err(q)?;
        let oldest_pending = tx
            .query_row(
                if counters {
                    "SELECT path, detected_at, last_error FROM files INDEXED BY files_waiting
                     WHERE status IN ('pending', 'uploading') ORDER BY detected_at, id LIMIT 1"
                } else {
                    "SELECT path, detected_at, last_error FROM files
                     WHERE status IN ('pending', 'uploading') ORDER BY detected_at, id LIMIT 1"
                },
                [],
                |r| {
                    Ok(PathAt {
                        path: PathBuf::from(row_os(r, 0)?),
                        at: lenient_ts(r, 1)?,
                        detail: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(q)?;
        let last_success = tx
            .query_row(
                // A row set to `uploaded` by hand may have no time: not the last success.
                "SELECT path, uploaded_at, NULL FROM files
                 WHERE status = 'uploaded' AND uploaded_at IS NOT NULL
                 ORDER BY uploaded_at DESC LIMIT 1",
                [],
                |r| {
                    Ok(PathAt {
                        path: PathBuf::from(row_os(r, 0)?),
                        at: lenient_ts(r, 1)?,
                        detail: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(q)?;
        // The failed attempts alone (`upload_results_trouble`), however many succeeded; the
        // last error is the one that started last.
        let trouble = if counters {
            "upload_results r INDEXED BY upload_results_trouble"
        } else {
            "upload_results r"
        };
        let last_error = tx
            .query_row(
                &format!(
                    "SELECT f.path, r.started_at, coalesce(r.error, 'HTTP ' || r.http_status)
                     FROM {trouble} JOIN files f ON f.id = r.file_id
                     WHERE r.outcome <> 'success' ORDER BY r.started_at DESC, r.id DESC LIMIT 1"
                ),
                [],
                |r| {
                    Ok(PathAt {
                        path: PathBuf::from(row_os(r, 0)?),
                        at: lenient_ts(r, 1)?,
                        detail: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(q)?;
        let mut errors_24h = Vec::new();
        {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT coalesce(r.error, 'HTTP ' || r.http_status) AS cause, count(*), max(f.path)
                     FROM {trouble} JOIN files f ON f.id = r.file_id
                     WHERE r.started_at >= ?1 AND r.outcome <> 'success'
                     GROUP BY cause ORDER BY count(*) DESC, cause LIMIT 10"
                ))
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
                &format!(
                    "SELECT count(*) FROM {trouble}
                     WHERE r.started_at >= ?1 AND r.outcome <> 'success' AND r.outcome = 'failed'"
                ),
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
/// A status this build does not know (a row written by hand) is counted under its own word.
/// From the counters the triggers keep (`counters`), else from the rows themselves.
fn folder_counts(
    conn: &Connection,
    counters: bool,
) -> rusqlite::Result<Vec<(String, Status, i64)>> {
    let mut stmt = conn.prepare_cached(if counters {
        "SELECT folder, status, n FROM file_counts WHERE n <> 0 ORDER BY folder, status"
    } else {
        "SELECT folder, status, count(*) FROM files GROUP BY folder, status ORDER BY folder, status"
    })?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// The `state` rows: key → (value, updated_at).
fn state_rows(conn: &Connection) -> rusqlite::Result<HashMap<String, (String, Option<Timestamp>)>> {
    let mut stmt = conn.prepare("SELECT key, value, updated_at FROM state")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, lenient_ts(r, 2)?))))?;
    rows.collect()
}
