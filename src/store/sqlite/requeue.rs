//! Rows going back to `pending`: claims no worker started (`unclaim`; `claimed_here` lists
//! the claims, for the owner's look after database trouble), interrupted uploads
//! (`reset_uploading`), backoffs after an outage (`release_backoff`), and the operator's
//! `retry`.

use std::path::Path;

use rusqlite::{params, OptionalExtension};

use super::{os_value, Store};
use crate::error::{Error, Result};
use crate::store::{Status, RESULTS_KEPT_PER_FILE};
use crate::timestamp::Timestamp;

impl Store {
    /// Gives claimed rows that no worker started back to `pending`, as if never claimed.
    pub(super) fn unclaim(&mut self, ids: &[i64], now: Timestamp) -> Result<()> {
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

    /// Every row `uploading` (the `files_claimed` index): this process is the only writer.
    pub(super) fn claimed_here(&mut self) -> Result<Vec<i64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM files WHERE status = 'uploading'")
            .map_err(|e| Error::db("listing claimed files", e))?;
        let ids = stmt
            .query_map([], |r| r.get(0))
            .map_err(|e| Error::db("listing claimed files", e))?;
        ids.collect::<rusqlite::Result<Vec<i64>>>()
            .map_err(|e| Error::db("listing claimed files", e))
    }

    /// Start-up (lock holder only) and shutdown past the grace: rows left `uploading` go back
    /// to `pending`, due now, each with an `interrupted` result row. Only `ids` when given.
    pub(super) fn reset_uploading(
        &mut self,
        ids: Option<&[i64]>,
        now: Timestamp,
        error: &str,
    ) -> Result<usize> {
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
    pub(super) fn release_backoff(&mut self, now: Timestamp) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE files SET next_attempt_at = ?1, updated_at = ?1
                 WHERE status = 'pending' AND attempts > 0 AND next_attempt_at > ?1",
                [now],
            )
            .map_err(|e| Error::db("releasing backoff after an outage", e))
    }

    /// Re-queues `failed` rows (`retry --failed`).
    pub(super) fn retry_failed(&mut self, now: Timestamp) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE files SET status = 'pending', attempts = 0, next_attempt_at = ?1,
                    last_error = NULL, absent = 0, updated_at = ?1
                 WHERE status = 'failed'",
                [now],
            )
            .map_err(|e| Error::db("re-queueing failed files", e))
    }

    /// Re-queues one path; uploaded (or skipped) rows only with `force`, a row being
    /// uploaded or with a status this build does not know never. Returns the status it had,
    /// or None when the path is not recorded.
    pub(super) fn retry_path(
        &mut self,
        path: &Path,
        force: bool,
        now: Timestamp,
    ) -> Result<Option<Status>> {
        let key = os_value(path.as_os_str());
        let status: Option<Status> = self
            .conn
            .query_row("SELECT status FROM files WHERE path = ?1", [&key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| Error::db("re-queueing a file", e))?;
        let Some(status) = status else {
            return Ok(None);
        };
        let allowed = match status {
            Status::Failed | Status::Pending => true,
            Status::Uploaded | Status::Skipped => force,
            Status::Uploading => false,
            // Written by hand: what it means is the operator's, not this build's.
            Status::Unknown(_) => false,
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
}
