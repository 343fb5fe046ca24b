//! `migrate-db`'s two ends: `export` reads every row and its results in one read
//! transaction; `import` adds exported rows, a claim arriving as `pending`.

use rusqlite::params;

use super::{file_row, lenient_ts, os_value, result_row, Store, FILE_COLUMNS, RESULT_COLUMNS};
use crate::error::{Error, Result};
use crate::store::{Exported, Status};
use crate::timestamp::Timestamp;

impl Store {
    pub(super) fn export(&mut self, each: &mut dyn FnMut(Exported) -> Result<()>) -> Result<usize> {
        let q = |e| Error::db("exporting rows", e);
        let tx = self.conn.transaction().map_err(q)?;
        let mut files = tx
            .prepare(&format!(
                "SELECT {FILE_COLUMNS}, incomplete_since, absent FROM files ORDER BY id"
            ))
            .map_err(q)?;
        let mut results = tx
            .prepare(&format!(
                "SELECT {RESULT_COLUMNS} FROM upload_results WHERE file_id = ?1 ORDER BY id"
            ))
            .map_err(q)?;
        let mut rows = files.query([]).map_err(q)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(q)? {
            let file = file_row(r).map_err(q)?;
            let incomplete_since = lenient_ts(r, 14).map_err(q)?;
            let absent = r.get(15).map_err(q)?;
            let results = results
                .query_map([file.id], result_row)
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

    /// Adds exported rows; a file already recorded is left alone. A claim belongs to the
    /// ledger it was made in: an `uploading` row arrives `pending`. A time the source could
    /// not read (a PostgreSQL row set by hand to `infinity`) arrives as the migration's
    /// time where a column must hold one, and a `pending` row without a due time arrives
    /// due now, as PostgreSQL's import does.
    pub(super) fn import(&mut self, rows: &[Exported]) -> Result<usize> {
        let q = |e| Error::db("importing rows", e);
        let now = Timestamp::new(time::OffsetDateTime::now_utc());
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
                let (status, next) = if f.status == Status::Uploading {
                    (Status::Pending, f.updated_at)
                } else {
                    (f.status.clone(), f.next_attempt_at)
                };
                let next = match status {
                    Status::Pending => Some(next.unwrap_or(now)),
                    _ => next,
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
                        f.detected_at.unwrap_or(now),
                        f.uploaded_at,
                        f.updated_at.unwrap_or(now),
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
                            r.started_at.unwrap_or(now),
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
}
