//! Handing out work: `claim_due` and `claim_ids` take due rows of this host's folders for
//! this process and hand them out with this host's paths; `due_ids` and `next_due` say what
//! is due and when.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Bytea, Integer, Nullable, Text};

use super::conn::Prepare;
use super::{ts, AnyTime, Id, PgStore};
use crate::error::Result;
use crate::layout::Version;
use crate::store::{ClaimOrder, Claimed};
use crate::timestamp::Timestamp;

#[derive(QueryableByName)]
struct ClaimRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    folder: String,
    #[diesel(sql_type = Text)]
    date: String,
    #[diesel(sql_type = Bytea)]
    filename: Vec<u8>,
    #[diesel(sql_type = Bytea)]
    path: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    size: i64,
    #[diesel(sql_type = BigInt)]
    mtime_ns: i64,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    incomplete_since: AnyTime,
}

fn claim_returning() -> String {
    format!(
        "RETURNING id, folder, date, filename, path, size, mtime_ns, attempts::bigint AS attempts, \
         {} AS incomplete_since",
        ts("incomplete_since")
    )
}

impl PgStore {
    /// Claimed rows as the trait hands them out: this host's path, upload order.
    fn claimed(&self, rows: Vec<ClaimRow>) -> Vec<Claimed> {
        rows.into_iter()
            .map(|r| Claimed {
                id: r.id,
                path: self.ctx.path(&r.folder, &r.date, &r.filename, &r.path),
                folder: r.folder,
                date: r.date,
                filename: OsString::from_vec(r.filename),
                version: Version {
                    size: r.size.max(0) as u64,
                    mtime_ns: r.mtime_ns,
                },
                attempt: r.attempts,
                incomplete_since: r.incomplete_since.0,
            })
            .collect()
    }

    /// Claims up to `limit` due rows of this host's folders. `FOR UPDATE SKIP LOCKED`: two
    /// hosts claiming at once each get rows the other did not, without waiting on each
    /// other; `ARRAY(…)` evaluates the pick once.
    ///
    /// Prepared, and planned once per session (generic plans, see `conn.rs`): the limit is
    /// written into the text, one statement per limit (the owner asks for whole quarters
    /// of the job channel: three limits, and a probe's 1), because a plan made for an
    /// unknown limit expects a tenth of the table and, with it, prefers reading and
    /// sorting every pending row to the index already in upload order (above all on a
    /// new, still empty ledger, where the plan is first made).
    pub(super) fn claim_due(
        &mut self,
        now: Timestamp,
        far: Timestamp,
        limit: usize,
        order: ClaimOrder,
    ) -> Result<Vec<Claimed>> {
        let by = match order {
            ClaimOrder::OldestFile => "mtime_ns ASC, id ASC",
            ClaimOrder::NewestFile => "mtime_ns DESC, id DESC",
            ClaimOrder::LongestWaiting => "next_attempt_at ASC, id ASC",
        };
        let sql = format!(
            "UPDATE files SET status = 'uploading', attempts = attempts + 1, claimed_host = $4,
                 claimed_pid = $5, claimed_at = now(), updated_at = $2::timestamptz
             WHERE id = ANY(ARRAY(
                 SELECT id FROM files
                 WHERE scope = $1 AND status = 'pending'
                   AND (next_attempt_at <= $2::timestamptz OR next_attempt_at > $6::timestamptz)
                   AND folder = ANY($3)
                 ORDER BY {by} LIMIT {limit}
                 FOR UPDATE SKIP LOCKED))
             {}",
            claim_returning()
        );
        let ctx = &self.ctx;
        let rows: Vec<ClaimRow> = self.link.with("claiming files", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(now)
                .bind::<Array<Text>, _>(&ctx.labels)
                .bind::<Text, _>(&ctx.host)
                .bind::<Integer, _>(ctx.pid)
                .bind::<Text, _>(far)
                .prepared()
                .load(c)?)
        })?;
        let mut claimed = self.claimed(rows);
        crate::store::in_upload_order(&mut claimed, order);
        Ok(claimed)
    }

    pub(super) fn claim_ids(&mut self, ids: &[i64], now: Timestamp) -> Result<Vec<Claimed>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE files SET status = 'uploading', attempts = attempts + 1, claimed_host = $4,
                 claimed_pid = $5, claimed_at = now(), updated_at = $2::timestamptz
             WHERE id = ANY($6) AND scope = $1 AND status = 'pending' AND folder = ANY($3)
             {}",
            claim_returning()
        );
        let ctx = &self.ctx;
        let rows: Vec<ClaimRow> = self.link.with("claiming files", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(now)
                .bind::<Array<Text>, _>(&ctx.labels)
                .bind::<Text, _>(&ctx.host)
                .bind::<Integer, _>(ctx.pid)
                .bind::<Array<BigInt>, _>(ids)
                .prepared()
                .load(c)?)
        })?;
        // In the order asked for, as SQLite's one-by-one claims return them.
        let pos: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut claimed = self.claimed(rows);
        claimed.sort_by_key(|c| pos.get(&c.id).copied().unwrap_or(usize::MAX));
        Ok(claimed)
    }

    pub(super) fn due_ids(
        &mut self,
        now: Timestamp,
        far: Timestamp,
        dates: &[String],
        newest_first: bool,
    ) -> Result<Vec<i64>> {
        let order = if newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT id FROM files
             WHERE scope = $1 AND status = 'pending'
               AND (next_attempt_at <= $2::timestamptz OR next_attempt_at > $5::timestamptz)
               AND folder = ANY($3) AND (cardinality($4::text[]) = 0 OR date = ANY($4))
             ORDER BY mtime_ns {order}, id {order}"
        );
        let ctx = &self.ctx;
        let rows: Vec<Id> = self.link.with("listing due files", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(now)
                .bind::<Array<Text>, _>(&ctx.labels)
                .bind::<Array<Text>, _>(dates)
                .bind::<Text, _>(far)
                .load(c)?)
        })?;
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// When the next pending row of this host's folders becomes due (rows it cannot claim
    /// must not keep waking it).
    pub(super) fn next_due(&mut self) -> Result<Option<Timestamp>> {
        #[derive(QueryableByName)]
        struct NextDue {
            #[diesel(sql_type = Nullable<Text>)]
            v: AnyTime,
        }
        let ctx = &self.ctx;
        let sql = format!(
            "SELECT {} AS v FROM files WHERE scope = $1 AND status = 'pending' AND folder = ANY($2)",
            ts("min(next_attempt_at)")
        );
        let r: NextDue = self.link.with("finding the next due file", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Array<Text>, _>(&ctx.labels)
                .get_result(c)?)
        })?;
        Ok(r.v.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::tests::{daemon_session, many, t};
    use crate::store::tests::{completion, obs, pg_open, roots, FAR, T0, T1, T2};
    use crate::store::{Disposition, ListFilter};
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn two_hosts_claiming_at_once_get_disjoint_rows_covering_everything() {
        let Some(url) = t() else { return };
        let rows: usize = std::env::var("SEGA_PG_CLAIM_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        for chunk in many(rows).chunks(1000) {
            assert_eq!(a.record(chunk, T0).unwrap().new, chunk.len());
        }
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let started = Instant::now();
        let workers: Vec<_> = ["cam-1", "cam-2"]
            .into_iter()
            .map(|host| {
                let url = url.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut s = pg_open(&url, "site-a", host, roots());
                    barrier.wait();
                    let mut mine = Vec::new();
                    loop {
                        let got = s.claim_due(T1, FAR, 16, ClaimOrder::OldestFile).unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        mine.extend(got.into_iter().map(|c| c.id));
                    }
                })
            })
            .collect();
        let got: Vec<Vec<i64>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        let elapsed = started.elapsed();
        eprintln!(
            "two PgStores claimed {rows} rows (16 a claim) in {elapsed:?}: {:.0} rows/s ({} + {})",
            rows as f64 / elapsed.as_secs_f64(),
            got[0].len(),
            got[1].len()
        );
        let mut all: Vec<i64> = got.concat();
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(total, rows, "no row claimed twice");
        assert_eq!(all.len(), rows, "every row claimed");
        let listed = a.list(&ListFilter::default()).unwrap();
        assert!(listed
            .iter()
            .all(|r| r.status.as_str() == "uploading" && r.attempts == 1));
        let sum = a.summary(T0, T0, T0).unwrap();
        let claimed: Vec<(&str, i64)> = sum
            .hosts
            .iter()
            .map(|h| (h.host.as_str(), h.claimed))
            .collect();
        let n = |i: usize| got[i].len() as i64;
        assert_eq!(
            claimed,
            [("cam-1", n(0)), ("cam-2", n(1))],
            "hosts holding claims"
        );
        assert!(sum.hosts.iter().all(|h| h.heartbeat_age_secs.is_none()));
    }

    /// A plan the daemon's session made for the empty table of a new ledger does not stay
    /// as the ledger grows, even where autovacuum never analyzes the table.
    #[test]
    fn the_daemons_plans_follow_the_ledger_as_it_grows() {
        let Some(url) = t() else { return };
        let mut s = daemon_session(&url);
        assert!(s
            .claim_due(T1, FAR, 8, ClaimOrder::OldestFile)
            .unwrap()
            .is_empty());
        for chunk in many(20_000).chunks(5_000) {
            s.record(chunk, T0).unwrap();
        }
        let args = "'site-a', '2026-11-26T10:00:01.000Z', '{Sega_1}', 'cam-1', 1, \
                    '9999-12-31T23:59:59.999Z'";
        let like = "LIMIT 8";
        eprintln!(
            "the claim's plan, made for the empty table: {}",
            s.explain_prepared_for_test(like, args)
        );
        s.replan_for_test(true);
        assert_eq!(
            s.claim_due(T1, FAR, 8, ClaimOrder::OldestFile)
                .unwrap()
                .len(),
            8
        );
        let plan = s.explain_prepared_for_test(like, args);
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(plan.contains("files_pending_age"), "{plan}");
    }

    #[test]
    fn hosts_claim_only_their_folders_and_get_their_own_paths() {
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        a.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap();
        let elsewhere = HashMap::from([("Other".to_owned(), PathBuf::from("/data/Other"))]);
        let mut blind = pg_open(&url, "site-a", "cam-3", elsewhere);
        assert!(blind
            .claim_due(T1, FAR, 10, ClaimOrder::OldestFile)
            .unwrap()
            .is_empty());
        assert!(blind.next_due().unwrap().is_none());
        let ids = a.due_ids(T1, FAR, &[], false).unwrap();
        assert!(blind.claim_ids(&ids, T1).unwrap().is_empty());
        let mounted = HashMap::from([("Sega_1".to_owned(), PathBuf::from("/mnt/nas/Sega_1"))]);
        let mut b = pg_open(&url, "site-a", "cam-2", mounted);
        let c = b.claim_due(T1, FAR, 10, ClaimOrder::OldestFile).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, Path::new("/mnt/nas/Sega_1/2026-11-26/a.jpg"));
        // Looked up by this host's path, shown with it, and with the claiming host.
        let row = b
            .file_by_path(Path::new("/mnt/nas/Sega_1/2026-11-26/a.jpg"))
            .unwrap()
            .unwrap();
        assert_eq!(row.path, Path::new("/mnt/nas/Sega_1/2026-11-26/a.jpg"));
        assert_eq!(row.host.as_deref(), Some("cam-2"));
        let row = a.list(&ListFilter::default()).unwrap().remove(0);
        assert_eq!(row.path, Path::new("/data/Sega_1/2026-11-26/a.jpg"));
        // Another host of the scope may not complete (or unclaim) cam-2's claim.
        a.complete(&[completion(&c[0], Disposition::Uploaded)], T2)
            .unwrap();
        a.unclaim(&[c[0].id], T2).unwrap();
        assert_eq!(
            a.list(&ListFilter::default()).unwrap()[0].status.as_str(),
            "uploading"
        );
        b.complete(&[completion(&c[0], Disposition::Uploaded)], T2)
            .unwrap();
        assert_eq!(
            a.list(&ListFilter::default()).unwrap()[0].status.as_str(),
            "uploaded"
        );
    }
}
