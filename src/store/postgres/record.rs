//! What scans and inotify bring in: `record` (new files, new versions, settling files made
//! due), `known_among` (which listed files are recorded as they are now), and `recheck`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Bool, Bytea, Integer, Nullable, Text};

use super::conn::{custom_plans, Fail};
use super::{AnyTime, Id, PgStore};
use crate::error::Result;
use crate::layout::Version;
use crate::store::{identity_of, log_new_version, Observation, RecordStats};
use crate::timestamp::Timestamp;

/// Listings are looked up this many names a statement (a bound array each).
const KNOWN_CHUNK: usize = 10_000;

/// The elements of `v` at these indexes, for one column of an `unnest` batch.
fn pick<T: Copy>(v: &[T], at: impl Iterator<Item = usize>) -> Vec<T> {
    at.map(|i| v[i]).collect()
}

#[derive(QueryableByName)]
struct Existing {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    folder: String,
    #[diesel(sql_type = Text)]
    date: String,
    #[diesel(sql_type = Bytea)]
    filename: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    size: i64,
    #[diesel(sql_type = BigInt)]
    mtime_ns: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Bool)]
    absent: bool,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    next_attempt_at: AnyTime,
}

impl PgStore {
    /// Records a batch in one transaction: one upsert over the whole batch (new rows, new
    /// versions), then one update making unchanged settling rows due (inotify said done).
    pub(super) fn record(&mut self, batch: &[Observation], now: Timestamp) -> Result<RecordStats> {
        let mut stats = RecordStats::default();
        if batch.is_empty() {
            return Ok(stats);
        }
        // One observation per file, the last one seen (an earlier duplicate counts as
        // unchanged), in identity order: hosts recording the same files at once then wait on
        // each other's new rows in one order, never in a cycle (a deadlock).
        let mut last: BTreeMap<(&str, &str, &[u8]), (&Observation, bool)> = BTreeMap::new();
        for obs in batch {
            let key = (
                obs.folder.as_str(),
                obs.date.as_str(),
                obs.filename.as_bytes(),
            );
            match last.get_mut(&key) {
                Some(e) => {
                    *e = (obs, e.1 || obs.via_event);
                    stats.unchanged += 1;
                }
                None => {
                    last.insert(key, (obs, obs.via_event));
                }
            }
        }
        let dedup: Vec<(&Observation, bool)> = last.into_values().collect();
        let folders: Vec<&str> = dedup.iter().map(|(o, _)| o.folder.as_str()).collect();
        let dates: Vec<&str> = dedup.iter().map(|(o, _)| o.date.as_str()).collect();
        let names: Vec<&[u8]> = dedup.iter().map(|(o, _)| o.filename.as_bytes()).collect();
        let paths: Vec<&[u8]> = dedup
            .iter()
            .map(|(o, _)| o.path.as_os_str().as_bytes())
            .collect();
        let sizes: Vec<i64> = dedup.iter().map(|(o, _)| o.version.size as i64).collect();
        let mtimes: Vec<i64> = dedup.iter().map(|(o, _)| o.version.mtime_ns).collect();
        let ready: Vec<Timestamp> = dedup.iter().map(|(o, _)| o.ready_at).collect();
        let ctx = &self.ctx;
        let (inserted, changed, made_due) = self.link.with("recording files", |c| {
            c.transaction::<_, Fail, _>(|c| {
                custom_plans(c)?;
                // What is recorded already, read without locking anything: another host
                // claiming and completing these rows is never waited for (an upsert's DO
                // UPDATE locks every conflicting row, even when its WHERE is false).
                let existing: Vec<Existing> = sql_query(
                    "SELECT f.id, f.folder, f.date, f.filename, f.size, f.mtime_ns, f.status,
                         f.absent, f.attempts, to_char(f.next_attempt_at AT TIME ZONE 'UTC',
                             'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS next_attempt_at
                     FROM files f
                     JOIN unnest($2::text[], $3::text[], $4::bytea[]) AS u(folder, date, filename)
                       ON f.scope = $1 AND f.folder = u.folder AND f.date = u.date
                      AND f.filename = u.filename",
                )
                .bind::<Text, _>(&ctx.scope)
                .bind::<Array<Text>, _>(&folders)
                .bind::<Array<Text>, _>(&dates)
                .bind::<Array<Bytea>, _>(&names)
                .load(c)?;
                let known: HashMap<(&str, &str, &[u8]), &Existing> = existing
                    .iter()
                    .map(|e| ((e.folder.as_str(), e.date.as_str(), e.filename.as_slice()), e))
                    .collect();
                // New files. A row another host inserts meanwhile is left to it; the count of
                // rows inserted is all the answer needed.
                let fresh: Vec<usize> = (0..dedup.len())
                    .filter(|&i| !known.contains_key(&(folders[i], dates[i], names[i])))
                    .collect();
                let inserted = if fresh.is_empty() {
                    0
                } else {
                    let at = || fresh.iter().copied();
                    sql_query(
                        "INSERT INTO files (scope, folder, date, filename, path, size, mtime_ns,
                             status, attempts, next_attempt_at, detected_at, updated_at, recorded_by)
                         SELECT $1, folder, date, filename, path, size, mtime_ns, 'pending', 0,
                             ready_at::timestamptz, $9::timestamptz, $9::timestamptz, $10
                         FROM unnest($2::text[], $3::text[], $4::bytea[], $5::bytea[],
                             $6::bigint[], $7::bigint[], $8::text[]) WITH ORDINALITY
                             AS u(folder, date, filename, path, size, mtime_ns, ready_at, n)
                         ORDER BY n
                         ON CONFLICT (scope, folder, date, filename) DO NOTHING",
                    )
                    .bind::<Text, _>(&ctx.scope)
                    .bind::<Array<Text>, _>(pick(&folders, at()))
                    .bind::<Array<Text>, _>(pick(&dates, at()))
                    .bind::<Array<Bytea>, _>(pick(&names, at()))
                    .bind::<Array<Bytea>, _>(pick(&paths, at()))
                    .bind::<Array<BigInt>, _>(pick(&sizes, at()))
                    .bind::<Array<BigInt>, _>(pick(&mtimes, at()))
                    .bind::<Array<Text>, _>(pick(&ready, at()))
                    .bind::<Text, _>(now)
                    .bind::<Text, _>(&ctx.host)
                    .execute(c)?
                };
                // New versions of known files (rare), and known files reported complete by
                // inotify while they settle (made due now). Both lock their rows first, in id
                // order, as every multi-row writer here does.
                let mut versions: Vec<(i64, usize)> = Vec::new();
                let mut due: Vec<i64> = Vec::new();
                for (i, (_, via_event)) in dedup.iter().enumerate() {
                    let Some(e) = known.get(&(folders[i], dates[i], names[i])) else {
                        continue;
                    };
                    if (e.size, e.mtime_ns) != (sizes[i], mtimes[i]) || e.absent {
                        versions.push((e.id, i));
                    } else if *via_event
                        && e.status == "pending"
                        && e.attempts == 0
                        && e.next_attempt_at.0.is_some_and(|t| t > now)
                    {
                        due.push(e.id);
                    }
                }
                versions.sort_unstable();
                due.sort_unstable();
                let mut changed = Vec::new();
                if !versions.is_empty() {
                    let ids: Vec<i64> = versions.iter().map(|v| v.0).collect();
                    let at = || versions.iter().map(|&(_, i)| i);
                    let updated: Vec<Id> = sql_query(
                        "WITH locked AS (
                             SELECT id FROM files WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE
                         )
                         UPDATE files f SET path = u.path, size = u.size, mtime_ns = u.mtime_ns,
                             status = 'pending', attempts = 0,
                             next_attempt_at = u.ready_at::timestamptz, last_error = NULL,
                             uploaded_at = NULL, incomplete_since = NULL, absent = false,
                             updated_at = $6::timestamptz, recorded_by = $7,
                             claimed_host = NULL, claimed_pid = NULL, claimed_at = NULL
                         FROM unnest($1::bigint[], $2::bytea[], $3::bigint[], $4::bigint[],
                                 $5::text[]) AS u(id, path, size, mtime_ns, ready_at)
                         WHERE f.id = u.id AND f.id IN (SELECT id FROM locked)
                           AND ((f.size, f.mtime_ns) IS DISTINCT FROM (u.size, u.mtime_ns)
                                OR f.absent)
                         RETURNING f.id",
                    )
                    .bind::<Array<BigInt>, _>(&ids)
                    .bind::<Array<Bytea>, _>(pick(&paths, at()))
                    .bind::<Array<BigInt>, _>(pick(&sizes, at()))
                    .bind::<Array<BigInt>, _>(pick(&mtimes, at()))
                    .bind::<Array<Text>, _>(pick(&ready, at()))
                    .bind::<Text, _>(now)
                    .bind::<Text, _>(&ctx.host)
                    .load(c)?;
                    let updated: HashSet<i64> = updated.into_iter().map(|r| r.id).collect();
                    for (id, i) in &versions {
                        if let (true, Some(e)) = (
                            updated.contains(id),
                            known.get(&(folders[*i], dates[*i], names[*i])),
                        ) {
                            changed.push((*i, e.size, e.mtime_ns, e.status.clone(), e.absent));
                        }
                    }
                }
                let made_due = if due.is_empty() {
                    0
                } else {
                    sql_query(
                        "WITH locked AS (
                             SELECT id FROM files WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE
                         )
                         UPDATE files SET next_attempt_at = $2::timestamptz,
                             updated_at = $2::timestamptz
                         WHERE id IN (SELECT id FROM locked) AND status = 'pending'
                           AND attempts = 0 AND next_attempt_at > $2::timestamptz",
                    )
                    .bind::<Array<BigInt>, _>(&due)
                    .bind::<Text, _>(now)
                    .execute(c)?
                };
                Ok((inserted, changed, made_due))
            })
        })?;
        stats.new = inserted;
        for (i, size, mtime_ns, old_status, absent) in &changed {
            let o = dedup[*i].0;
            let old = Version {
                size: *size as u64,
                mtime_ns: *mtime_ns,
            };
            log_new_version(&o.path, old, old_status, *absent, o.version);
        }
        stats.new_versions = changed.len();
        stats.made_due = made_due;
        stats.unchanged += dedup
            .len()
            .saturating_sub(inserted + changed.len() + made_due);
        Ok(stats)
    }

    /// Which listed files of one date folder are recorded with the version they have now,
    /// or changed within `changed_during` (`Ledger::known_among`), by file name (the
    /// identity; this host's path may differ from the recording host's).
    pub(super) fn known_among(
        &mut self,
        folder: &str,
        date: &str,
        listed: &[(&[u8], Version)],
        changed_during: Option<(Timestamp, Timestamp)>,
    ) -> Result<Vec<bool>> {
        let mut known = vec![false; listed.len()];
        let (since, until) = changed_during.unzip();
        let ctx = &self.ctx;
        for (chunk_no, chunk) in listed.chunks(KNOWN_CHUNK).enumerate() {
            let names: Vec<&[u8]> = chunk
                .iter()
                .map(|(p, _)| Path::new(std::ffi::OsStr::from_bytes(p)))
                .map(|p| p.file_name().map_or(&[][..], |n| n.as_bytes()))
                .collect();
            let sizes: Vec<i64> = chunk.iter().map(|(_, v)| v.size as i64).collect();
            let mtimes: Vec<i64> = chunk.iter().map(|(_, v)| v.mtime_ns).collect();
            let hits: Vec<Id> = self.link.with("reading known files", |c| {
                c.transaction::<_, Fail, _>(|c| {
                    custom_plans(c)?;
                    Ok(sql_query(
                        "SELECT (u.i - 1) AS id
                         FROM unnest($4::bytea[], $5::bigint[], $6::bigint[]) WITH ORDINALITY
                             AS u(filename, size, mtime_ns, i)
                         JOIN files f ON f.scope = $1 AND f.folder = $2 AND f.date = $3
                             AND f.filename = u.filename
                         WHERE NOT f.absent AND ((f.size = u.size AND f.mtime_ns = u.mtime_ns)
                             OR (f.updated_at >= $7::timestamptz
                                 AND f.updated_at <= $8::timestamptz))",
                    )
                    .bind::<Text, _>(&ctx.scope)
                    .bind::<Text, _>(folder)
                    .bind::<Text, _>(date)
                    .bind::<Array<Bytea>, _>(&names)
                    .bind::<Array<BigInt>, _>(&sizes)
                    .bind::<Array<BigInt>, _>(&mtimes)
                    .bind::<Nullable<Text>, _>(since)
                    .bind::<Nullable<Text>, _>(until)
                    .load(c)?)
                })
            })?;
            for h in hits {
                if let Some(k) = usize::try_from(h.id)
                    .ok()
                    .and_then(|i| known.get_mut(chunk_no * KNOWN_CHUNK + i))
                {
                    *k = true;
                }
            }
        }
        Ok(known)
    }

    pub(super) fn recheck(&mut self, path: &Path, now: Timestamp) -> Result<bool> {
        let Some((folder, date, name)) = identity_of(path) else {
            return Ok(false);
        };
        let scope = &self.ctx.scope;
        let n = self.link.with("re-checking a file", |c| {
            Ok(sql_query(
                "UPDATE files SET next_attempt_at = $5::timestamptz, updated_at = $5::timestamptz
                 WHERE scope = $1 AND folder = $2 AND date = $3 AND filename = $4
                   AND status = 'pending' AND attempts > 0 AND next_attempt_at > $5::timestamptz",
            )
            .bind::<Text, _>(scope)
            .bind::<Text, _>(&folder)
            .bind::<Text, _>(&date)
            .bind::<Bytea, _>(name.as_bytes())
            .bind::<Text, _>(now)
            .execute(c)?)
        })?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::postgres::tests::{many, t};
    use crate::store::tests::{completion, pg_open, roots, FAR, T1, T2};
    use crate::store::{ClaimOrder, Completion, Disposition, ListFilter};
    use std::sync::Arc;

    /// Two hosts watching one tree: each records the same files over and over (as their
    /// scans and events do) while claiming and completing. Completions lock several rows a
    /// transaction; an upsert that locked rows it did not change once deadlocked with them.
    #[test]
    fn hosts_recording_and_completing_the_same_files_never_deadlock() {
        let Some(url) = t() else { return };
        let rows = 1500;
        let files = many(rows);
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let workers: Vec<_> = ["cam-1", "cam-2"]
            .into_iter()
            .enumerate()
            .map(|(k, host)| {
                let (url, barrier) = (url.clone(), barrier.clone());
                let mut files = files.clone();
                std::thread::spawn(move || -> std::result::Result<usize, String> {
                    let mut s = pg_open(&url, "site-a", host, roots());
                    // Each host sees the files in its own order.
                    if k == 1 {
                        files.reverse();
                    }
                    barrier.wait();
                    let mut uploaded = 0;
                    loop {
                        for chunk in files.chunks(500) {
                            s.record(chunk, T1)
                                .map_err(|e| format!("{host} record: {e}"))?;
                        }
                        let got = s
                            .claim_due(
                                T1,
                                FAR,
                                32,
                                if k == 1 {
                                    ClaimOrder::NewestFile
                                } else {
                                    ClaimOrder::OldestFile
                                },
                            )
                            .map_err(|e| format!("{host} claim: {e}"))?;
                        if got.is_empty() {
                            return Ok(uploaded);
                        }
                        uploaded += got.len();
                        let mut done: Vec<Completion> = got
                            .iter()
                            .map(|c| completion(c, Disposition::Uploaded))
                            .collect();
                        done.reverse();
                        s.complete(&done, T2)
                            .map_err(|e| format!("{host} complete: {e}"))?;
                    }
                })
            })
            .collect();
        let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        let counts: Vec<usize> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(
            counts.iter().sum::<usize>(),
            rows,
            "each file sent once: {counts:?}"
        );
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        let listed = a.list(&ListFilter::default()).unwrap();
        assert_eq!(listed.len(), rows);
        assert!(listed.iter().all(|r| r.status.as_str() == "uploaded"));
    }
}
