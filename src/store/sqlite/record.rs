//! What scans and inotify bring in: `record` (new paths, new versions, settling files made
//! due), `known_among` (which listed files are recorded as they are now), and `recheck`.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{params, OptionalExtension};

use super::{bytes_value, os_value, version_of, Store};
use crate::error::{Error, Result};
use crate::layout::Version;
use crate::store::{log_new_version, Observation, RecordStats};
use crate::timestamp::Timestamp;

/// Listings up to this long are compared with the database path by path (about 2 µs each);
/// longer ones by streaming the date folder's rows past them (about 0.2 µs a row).
const LOOKUP_MAX: usize = 256;

impl Store {
    /// Records a batch of observations in one transaction: new paths get a `pending` row;
    /// a known path with another size or mtime is a new version (attempts restart from 0,
    /// whatever its status); a known, unchanged path reported complete by inotify while it
    /// waits to settle is made due now.
    pub(super) fn record(&mut self, batch: &[Observation], now: Timestamp) -> Result<RecordStats> {
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
    pub(super) fn known_among(
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
    pub(super) fn recheck(&mut self, path: &Path, now: Timestamp) -> Result<bool> {
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
}
