//! What scans and inotify bring in: `record` (new paths, new versions, settling files made
//! due), `known_among` (which listed files are recorded as they are now), and `recheck`.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{params, OptionalExtension, Transaction};

use super::{bytes_value, os_value, version_of, Store};
use crate::error::{Error, Result};
use crate::layout::Version;
use crate::store::{log_new_version, ClaimOrder, Claimed, Observation, RecordStats};
use crate::timestamp::Timestamp;

/// Listings up to this long are compared with the database path by path (about 2 µs each);
/// longer ones by streaming the date folder's rows past them (about 0.2 µs a row).
const LOOKUP_MAX: usize = 256;

impl Store {
    pub(super) fn record(&mut self, batch: &[Observation], now: Timestamp) -> Result<RecordStats> {
        Ok(self
            .record_claiming(batch, now, now, 0, ClaimOrder::OldestFile)?
            .0)
    }

    /// Records a batch of observations in one transaction: new paths get a `pending` row;
    /// a known path with another size or mtime is a new version (attempts restart from 0,
    /// whatever its status); a known, unchanged path reported complete by inotify while it
    /// waits to settle is made due now. Up to `claim` of the new rows due now are written
    /// `uploading` instead, claimed as `claim_due` claims (`Ledger::record_claiming`).
    pub(super) fn record_claiming(
        &mut self,
        batch: &[Observation],
        now: Timestamp,
        far: Timestamp,
        claim: usize,
        order: ClaimOrder,
    ) -> Result<(RecordStats, Vec<Claimed>)> {
        let tx = self.tx("recording files")?;
        let recorded = record_in(&tx, batch, now, far, claim, order)?;
        tx.commit()
            .map_err(|e| Error::db("committing recorded files", e))?;
        Ok(recorded)
    }

    /// Which listed files are recorded with the version they have on disk now: `known[i]`
    /// is true when `listed[i]` (path bytes, version) has a row with that size and mtime,
    /// or one that changed within `changed_during` (`Ledger::known_among`).
    /// A rescan asks this for every date folder every minute, so memory follows the listing,
    /// never the database (a folder holding a backlog of a million rows must not become a
    /// million-entry map): a short listing is looked up path by path on the UNIQUE index,
    /// a long one is compared with the folder's rows as they stream past.
    pub(super) fn known_among(
        &mut self,
        folder: &str,
        date: &str,
        listed: &[(&[u8], Version)],
        changed_during: Option<(Timestamp, Timestamp)>,
    ) -> Result<Vec<bool>> {
        let err = |e| Error::db("reading known files", e);
        let (since, until) = changed_during.unzip();
        let mut known = vec![false; listed.len()];
        if listed.len() <= LOOKUP_MAX {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT size, mtime_ns, coalesce(updated_at >= ?2 AND updated_at <= ?3, 0)
                     FROM files WHERE path = ?1 AND absent = 0",
                )
                .map_err(err)?;
            for (k, (path, version)) in known.iter_mut().zip(listed) {
                let row = stmt
                    .query_row(params![bytes_value(path), since, until], |r| {
                        Ok((version_of(r, 0, 1)?, r.get::<_, bool>(2)?))
                    })
                    .optional()
                    .map_err(err)?;
                *k = row.is_some_and(|(recorded, newer)| recorded == *version || newer);
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
                "SELECT path, size, mtime_ns, coalesce(updated_at >= ?3 AND updated_at <= ?4, 0)
                 FROM files WHERE date = ?1 AND folder = ?2 AND absent = 0",
            )
            .map_err(err)?;
        let mut rows = stmt
            .query(params![date, folder, since, until])
            .map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let (ValueRef::Text(path) | ValueRef::Blob(path)) = r.get_ref(0).map_err(err)? else {
                continue;
            };
            if let Some(&i) = index.get(path) {
                known[i] = version_of(r, 1, 2).map_err(err)? == listed[i].1
                    || r.get::<_, bool>(3).map_err(err)?;
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

/// Which observations of a batch `record` may write claimed: the first `limit` of those due
/// now, in `order`, leaving out a path the batch names twice (its second observation could
/// make the claimed row a new, pending version under the claim).
fn claim_candidates(
    batch: &[Observation],
    now: Timestamp,
    limit: usize,
    order: ClaimOrder,
) -> Vec<bool> {
    let mut may = vec![false; batch.len()];
    if limit == 0 || order == ClaimOrder::LongestWaiting {
        return may;
    }
    let mut seen: HashMap<&Path, usize> = HashMap::with_capacity(batch.len());
    for obs in batch {
        *seen.entry(obs.path.as_path()).or_default() += 1;
    }
    let mut due: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].ready_at <= now && seen[batch[i].path.as_path()] == 1)
        .collect();
    due.sort_by_key(|&i| (batch[i].version.mtime_ns, i));
    if order == ClaimOrder::NewestFile {
        due.reverse();
    }
    for i in due.into_iter().take(limit) {
        may[i] = true;
    }
    may
}

/// `Store::record_claiming`'s work, in the caller's transaction (alone, or in a turn's:
/// `Store::write_turn`).
pub(super) fn record_in(
    tx: &Transaction<'_>,
    batch: &[Observation],
    now: Timestamp,
    far: Timestamp,
    claim: usize,
    order: ClaimOrder,
) -> Result<(RecordStats, Vec<Claimed>)> {
    let mut stats = RecordStats::default();
    let mut claimed = Vec::new();
    // A row already due goes first: then a claim takes it with the new ones, in order.
    // One step into the partial index of due times.
    let due_before = claim > 0
        && tx
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM files INDEXED BY files_pending_due
                 WHERE status = 'pending' AND (next_attempt_at <= ?1 OR next_attempt_at > ?2))",
            )
            .and_then(|mut q| q.query_row(params![now, far], |r| r.get::<_, bool>(0)))
            .map_err(|e| Error::db("recording files", e))?;
    let claim = if due_before { 0 } else { claim };
    let may_claim = claim_candidates(batch, now, claim, order);
    {
        let mut find = tx
            .prepare_cached("SELECT id, size, mtime_ns, status, absent FROM files WHERE path = ?1")
            .map_err(|e| Error::db("recording files", e))?;
        // A claimed row is the row `claim_due` would leave: `uploading`, attempt 1.
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO files(path, folder, date, filename, size, mtime_ns, status, attempts,
                    next_attempt_at, detected_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?9, ?10, ?7, ?8, ?8)",
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
        for (obs, may_claim) in batch.iter().zip(may_claim) {
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
                    let claiming = may_claim && claimed.len() < claim;
                    let values = params![
                        path,
                        obs.folder,
                        obs.date,
                        os_value(&obs.filename),
                        obs.version.size as i64,
                        obs.version.mtime_ns,
                        obs.ready_at,
                        now,
                        if claiming { "uploading" } else { "pending" },
                        i64::from(claiming)
                    ];
                    insert
                        .execute(values)
                        .map_err(|e| Error::db("recording a new file", e))?;
                    stats.new += 1;
                    if claiming {
                        claimed.push(Claimed {
                            id: tx.last_insert_rowid(),
                            path: obs.path.clone(),
                            folder: obs.folder.clone(),
                            date: obs.date.clone(),
                            filename: obs.filename.clone(),
                            version: obs.version,
                            attempt: 1,
                            incomplete_since: None,
                        });
                    }
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
    Ok((stats, claimed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn obs(name: &str, mtime_ns: i64, ready_at: Timestamp) -> Observation {
        Observation {
            path: PathBuf::from(format!("/d/Sega_1/2026-12-03/{name}")),
            folder: "Sega_1".into(),
            date: "2026-12-03".into(),
            filename: name.into(),
            version: Version { size: 1, mtime_ns },
            ready_at,
            via_event: true,
        }
    }

    #[test]
    fn only_due_files_named_once_are_claimed_first_in_the_claims_order() {
        let now = Timestamp::parse("2026-12-03T10:00:00Z").unwrap();
        let later = Timestamp::parse("2026-12-03T10:00:05Z").unwrap();
        let batch = [
            obs("c.jpg", 3, now),
            obs("settling.jpg", 0, later),
            obs("twice.jpg", 1, now),
            obs("a.jpg", 5, now),
            obs("twice.jpg", 2, now),
            obs("b.jpg", 4, now),
        ];
        let picked = |limit, order| -> Vec<&str> {
            claim_candidates(&batch, now, limit, order)
                .iter()
                .zip(&batch)
                .filter(|(may, _)| **may)
                .map(|(_, o)| o.filename.to_str().unwrap())
                .collect()
        };
        assert_eq!(picked(2, ClaimOrder::OldestFile), ["c.jpg", "b.jpg"]);
        assert_eq!(picked(2, ClaimOrder::NewestFile), ["a.jpg", "b.jpg"]);
        assert_eq!(
            picked(9, ClaimOrder::OldestFile),
            ["c.jpg", "a.jpg", "b.jpg"]
        );
        assert!(picked(0, ClaimOrder::OldestFile).is_empty());
        assert!(picked(9, ClaimOrder::LongestWaiting).is_empty());
    }
}
