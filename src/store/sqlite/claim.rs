//! Handing out work: `claim_due` and `claim_ids` take due rows, each claim in one
//! transaction; `due_ids` and `next_due` say what is due and when.

use std::path::PathBuf;

use rusqlite::{params, OptionalExtension, Transaction};

use super::{lenient_ts, row_os, version_of, Store};
use crate::error::{Error, Result};
use crate::store::{ClaimOrder, Claimed};
use crate::timestamp::Timestamp;

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
        incomplete_since: lenient_ts(row, 8)?,
    })
}

impl Store {
    /// Atomically claims up to `limit` due rows in `order`. `INDEXED BY`: left to itself
    /// SQLite picks `files_status`, reads every pending row and sorts them, 157 ms a claim
    /// with a million pending rows; a partial index in the claim's order makes a claim cost
    /// the rows it returns.
    pub(super) fn claim_due(
        &mut self,
        now: Timestamp,
        far: Timestamp,
        limit: usize,
        order: ClaimOrder,
    ) -> Result<Vec<Claimed>> {
        // In a transaction: a row that cannot be read back rolls the whole claim back
        // instead of leaving rows `uploading` with no job behind them.
        let tx = self.tx("claiming files")?;
        let claimed = claim_in(&tx, now, far, limit, order)?;
        tx.commit().map_err(|e| Error::db("claiming files", e))?;
        Ok(claimed)
    }

    /// Claims these rows if they are still pending (the one-shot scan works through the
    /// list of rows that were due when it started).
    pub(super) fn claim_ids(&mut self, ids: &[i64], now: Timestamp) -> Result<Vec<Claimed>> {
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
    pub(super) fn due_ids(
        &mut self,
        now: Timestamp,
        far: Timestamp,
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
    pub(super) fn next_due(&mut self) -> Result<Option<Timestamp>> {
        self.conn
            .query_row(
                "SELECT min(next_attempt_at) FROM files INDEXED BY files_pending_due
                 WHERE status = 'pending'",
                [],
                |r| lenient_ts(r, 0),
            )
            .map_err(|e| Error::db("finding the next due file", e))
    }
}

/// `Store::claim_due`'s work, in the caller's transaction (alone, or in a turn's:
/// `Store::write_turn`); the rows in upload order.
pub(super) fn claim_in(
    tx: &Transaction<'_>,
    now: Timestamp,
    far: Timestamp,
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
    crate::store::in_upload_order(&mut claimed, order);
    Ok(claimed)
}
