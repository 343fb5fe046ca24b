//! Rows going back to `pending`: claims no worker started (`unclaim`; `claimed_here` lists
//! this process's claims, for the owner's look after database trouble), this host's
//! interrupted uploads (`reset_uploading`), the claims of a host whose heartbeat stopped
//! (`take_over_stale`), backoffs after an outage (`release_backoff`), and the operator's
//! `retry`.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Bytea, Integer, Nullable, Text};

use super::complete::trim_results;
use super::conn::{Fail, Prepare};
use super::{pg_text, Id, PgStore};
use crate::error::Result;
use crate::store::{identity_of, Status};
use crate::timestamp::Timestamp;

#[derive(QueryableByName)]
struct TakenOver {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    from_host: Option<String>,
}

impl PgStore {
    /// Gives claimed rows that no worker started back to `pending`, as if never claimed.
    pub(super) fn unclaim(&mut self, ids: &[i64], now: Timestamp) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ctx = &self.ctx;
        self.link.with("returning unstarted work", |c| {
            sql_query(
                "UPDATE files SET status = 'pending', attempts = greatest(attempts - 1, 0),
                     updated_at = $3::timestamptz, claimed_host = NULL, claimed_pid = NULL,
                     claimed_at = NULL
                 WHERE id = ANY($1) AND scope = $2 AND status = 'uploading' AND claimed_host = $4",
            )
            .bind::<Array<BigInt>, _>(ids)
            .bind::<Text, _>(&ctx.scope)
            .bind::<Text, _>(now)
            .bind::<Text, _>(&ctx.host)
            .prepared()
            .execute(c)?;
            Ok(())
        })
    }

    /// This host's rows `uploading` under this pid's claim (`files_claimed`); `None` while
    /// the daemon lock is not ours again after a reconnect: until the server ends our lost
    /// session (which frees the lock), a claim it was running may still commit.
    pub(super) fn claimed_here(&mut self) -> Result<Option<Vec<i64>>> {
        if self.link.lock_pending() {
            return Ok(None);
        }
        let ctx = &self.ctx;
        let rows: Vec<Id> = self.link.with("listing claimed files", |c| {
            Ok(sql_query(
                "SELECT id FROM files
                 WHERE scope = $1 AND status = 'uploading' AND claimed_host = $2
                   AND claimed_pid = $3",
            )
            .bind::<Text, _>(&ctx.scope)
            .bind::<Text, _>(&ctx.host)
            .bind::<Integer, _>(ctx.pid)
            .load(c)?)
        })?;
        if self.link.lock_pending() {
            // Lost again during the query: the next look decides.
            return Ok(None);
        }
        Ok(Some(rows.into_iter().map(|r| r.id).collect()))
    }

    /// This host's rows left `uploading` (any of its processes: a crashed daemon's too) go
    /// back to `pending`, due now, each with an `interrupted` result row. Other hosts' claims
    /// are theirs (or `take_over_stale`'s).
    pub(super) fn reset_uploading(
        &mut self,
        ids: Option<&[i64]>,
        now: Timestamp,
        error: &str,
    ) -> Result<usize> {
        let ctx = &self.ctx;
        let error = pg_text(error);
        self.link.with("resetting interrupted uploads", |c| {
            c.transaction::<_, Fail, _>(|c| {
                let reset: Vec<Id> = sql_query(
                    "WITH reset AS (
                         UPDATE files SET status = 'pending', next_attempt_at = $4::timestamptz,
                             last_error = $5, updated_at = $4::timestamptz
                         WHERE scope = $1 AND status = 'uploading' AND claimed_host = $2
                           AND ($3::bigint[] IS NULL OR id = ANY($3))
                         RETURNING id, attempts)
                     INSERT INTO upload_results(file_id, host, attempt, started_at, duration_ms,
                         error, outcome)
                     SELECT id, $2, attempts, $4::timestamptz, 0, $5, 'retry' FROM reset
                     RETURNING file_id AS id",
                )
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(&ctx.host)
                .bind::<Nullable<Array<BigInt>>, _>(ids)
                .bind::<Text, _>(now)
                .bind::<Text, _>(&*error)
                .load(c)?;
                let ids: Vec<i64> = reset.iter().map(|r| r.id).collect();
                trim_results(c, &ids)?;
                Ok(ids.len())
            })
        })
    }

    /// Claims of other hosts of this scope whose heartbeat (by the server's clock) is older
    /// than the lease, or that never wrote one and claimed longer ago than the lease, go back
    /// to `pending`, due now, each with a `retry` result row saying so.
    pub(super) fn take_over_stale(&mut self, now: Timestamp) -> Result<usize> {
        let ctx = &self.ctx;
        let taken: Vec<TakenOver> = self.link.with("taking over stale claims", |c| {
            c.transaction::<_, Fail, _>(|c| {
                let taken: Vec<TakenOver> = sql_query(
                    "WITH stale AS (
                         SELECT f.id, f.claimed_host FROM files f
                         LEFT JOIN state s ON s.scope = f.scope AND s.host = f.claimed_host
                             AND s.key = 'heartbeat'
                         WHERE f.scope = $1 AND f.status = 'uploading'
                           AND f.claimed_host IS DISTINCT FROM $2
                           AND CASE WHEN s.updated_at IS NOT NULL
                                    THEN s.updated_at < now() - $3 * interval '1 millisecond'
                                    ELSE coalesce(f.claimed_at, '-infinity')
                                         < now() - $3 * interval '1 millisecond' END
                         FOR UPDATE OF f SKIP LOCKED
                     ), upd AS (
                         UPDATE files f SET status = 'pending', next_attempt_at = $4::timestamptz,
                             last_error = 'taken over from host ' || coalesce(stale.claimed_host, '?')
                                 || ': its heartbeat stopped',
                             updated_at = $4::timestamptz, claimed_host = NULL, claimed_pid = NULL,
                             claimed_at = NULL
                         FROM stale WHERE f.id = stale.id
                         RETURNING f.id, f.attempts, stale.claimed_host AS from_host, f.last_error
                     ), res AS (
                         INSERT INTO upload_results(file_id, host, attempt, started_at, duration_ms,
                             error, outcome)
                         SELECT id, $2, attempts, $4::timestamptz, 0, last_error, 'retry' FROM upd
                     )
                     SELECT id, from_host FROM upd",
                )
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(&ctx.host)
                .bind::<BigInt, _>(ctx.lease_ms)
                .bind::<Text, _>(now)
                .load(c)?;
                let ids: Vec<i64> = taken.iter().map(|t| t.id).collect();
                trim_results(c, &ids)?;
                Ok(taken)
            })
        })?;
        let mut per_host: Vec<(String, usize)> = Vec::new();
        for t in &taken {
            let h = t.from_host.clone().unwrap_or_else(|| "?".into());
            match per_host.iter_mut().find(|(name, _)| *name == h) {
                Some((_, n)) => *n += 1,
                None => per_host.push((h, 1)),
            }
        }
        for (h, n) in per_host {
            log::warn!(
                "host {h} stopped its heartbeat (lease {} s) holding {n} claimed file(s): they are pending again",
                self.ctx.lease_ms / 1000
            );
        }
        Ok(taken.len())
    }

    pub(super) fn release_backoff(&mut self, now: Timestamp) -> Result<usize> {
        let scope = &self.ctx.scope;
        self.link.with("releasing backoff after an outage", |c| {
            Ok(sql_query(
                "UPDATE files SET next_attempt_at = $2::timestamptz, updated_at = $2::timestamptz
                 WHERE scope = $1 AND status = 'pending' AND attempts > 0
                   AND next_attempt_at > $2::timestamptz",
            )
            .bind::<Text, _>(scope)
            .bind::<Text, _>(now)
            .execute(c)?)
        })
    }

    pub(super) fn retry_failed(&mut self, now: Timestamp) -> Result<usize> {
        let scope = &self.ctx.scope;
        self.link.with("re-queueing failed files", |c| {
            Ok(sql_query(
                "UPDATE files SET status = 'pending', attempts = 0, next_attempt_at = $2::timestamptz,
                     last_error = NULL, absent = false, updated_at = $2::timestamptz
                 WHERE scope = $1 AND status = 'failed'",
            )
            .bind::<Text, _>(scope)
            .bind::<Text, _>(now)
            .execute(c)?)
        })
    }

    pub(super) fn retry_path(
        &mut self,
        path: &Path,
        force: bool,
        now: Timestamp,
    ) -> Result<Option<Status>> {
        #[derive(QueryableByName)]
        struct Was {
            #[diesel(sql_type = Text)]
            status: Status,
        }
        let Some((folder, date, name)) = identity_of(path) else {
            return Ok(None);
        };
        let scope = &self.ctx.scope;
        self.link.with("re-queueing a file", |c| {
            c.transaction::<_, Fail, _>(|c| {
                let status = sql_query(
                    "SELECT status FROM files
                     WHERE scope = $1 AND folder = $2 AND date = $3 AND filename = $4 FOR UPDATE",
                )
                .bind::<Text, _>(scope)
                .bind::<Text, _>(&folder)
                .bind::<Text, _>(&date)
                .bind::<Bytea, _>(name.as_bytes())
                .get_result::<Was>(c)
                .optional()?
                .map(|r| r.status);
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
                    sql_query(
                        "UPDATE files SET status = 'pending', attempts = 0,
                             next_attempt_at = $5::timestamptz, last_error = NULL, uploaded_at = NULL,
                             incomplete_since = NULL, absent = false, updated_at = $5::timestamptz
                         WHERE scope = $1 AND folder = $2 AND date = $3 AND filename = $4",
                    )
                    .bind::<Text, _>(scope)
                    .bind::<Text, _>(&folder)
                    .bind::<Text, _>(&date)
                    .bind::<Bytea, _>(name.as_bytes())
                    .bind::<Text, _>(now)
                    .execute(c)?;
                }
                Ok(Some(status))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::postgres::tests::t;
    use crate::store::tests::{
        all_results, completion, exported, obs, pg_open, pg_try_open, roots, FAR, T0, T1, T2,
    };
    use crate::store::{ClaimOrder, Disposition};
    use std::time::Duration;

    #[test]
    fn claims_of_a_host_whose_heartbeat_stopped_are_taken_over() {
        let Some(url) = t() else { return };
        let open = |host: &str| {
            pg_try_open(&url, "site-a", host, roots(), Duration::from_secs(1)).unwrap()
        };
        let (mut a, mut b, mut c) = (open("cam-1"), open("cam-2"), open("cam-3"));
        a.record(
            &[
                obs(b"a.jpg", 1, 1),
                obs(b"b.jpg", 1, 2),
                obs(b"c.jpg", 1, 3),
            ],
            T0,
        )
        .unwrap();
        let held = a.claim_due(T0, FAR, 2, ClaimOrder::OldestFile).unwrap();
        let silent = c.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap();
        a.set_state(&[("heartbeat", T0.to_string())], T0).unwrap();
        assert_eq!(b.take_over_stale(T1).unwrap(), 0, "cam-1 is alive");
        // cam-1's heartbeat stops (by the server's clock); cam-3 never wrote one and
        // claimed long ago.
        b.exec_for_test(
            "UPDATE state SET updated_at = now() - interval '1 hour' WHERE host = 'cam-1';
             UPDATE files SET claimed_at = now() - interval '1 hour' WHERE claimed_host = 'cam-3'",
        )
        .unwrap();
        assert_eq!(
            a.take_over_stale(T1).unwrap(),
            1,
            "cam-3's claim; never its own"
        );
        assert_eq!(b.take_over_stale(T1).unwrap(), 2);
        assert_eq!(b.take_over_stale(T1).unwrap(), 0);
        let rows = exported(&mut b);
        assert!(rows.iter().all(|e| e.file.status.as_str() == "pending"));
        let a_row = rows.iter().find(|e| e.file.id == held[0].id).unwrap();
        assert_eq!(
            a_row.file.last_error.as_deref(),
            Some("taken over from host cam-1: its heartbeat stopped")
        );
        assert_eq!(a_row.results.len(), 1);
        assert_eq!(a_row.results[0].outcome.as_str(), "retry");
        assert_eq!(a_row.file.next_attempt_at, Some(T1));
        // cam-1 comes back with its old claims: its completions are recorded, not applied.
        a.complete(&[completion(&held[0], Disposition::Uploaded)], T2)
            .unwrap();
        let again = b.claim_due(T2, FAR, 10, ClaimOrder::OldestFile).unwrap();
        assert_eq!(again.len(), 3);
        assert!(again.iter().all(|c| c.attempt == 2));
        assert_eq!(all_results(&mut b).len(), 4);
        drop(silent);
    }

    #[test]
    fn reset_uploading_touches_only_this_hosts_claims() {
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        let mut b = pg_open(&url, "site-a", "cam-2", roots());
        a.record(&[obs(b"a.jpg", 1, 1), obs(b"b.jpg", 1, 2)], T0)
            .unwrap();
        let ca = a.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap();
        let cb = b.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap();
        assert_ne!(ca[0].id, cb[0].id);
        assert_eq!(b.reset_uploading(Some(&[ca[0].id]), T1, "x").unwrap(), 0);
        assert_eq!(b.reset_uploading(None, T1, "interrupted").unwrap(), 1);
        let row = a.file_by_path(&ca[0].path).unwrap().unwrap();
        assert_eq!(row.status.as_str(), "uploading");
        let sum = a.summary(T0, T0, T0).unwrap();
        assert_eq!(
            sum.hosts.len(),
            1,
            "a host without state rows but with claims"
        );
        assert_eq!(sum.hosts[0].heartbeat_age_secs, None);
        a.set_state(&[("heartbeat", T1.to_string())], T1).unwrap();
        let sum = b.summary(T0, T0, T0).unwrap();
        assert_eq!(sum.hosts.len(), 1);
        assert_eq!(
            (
                sum.hosts[0].host.as_str(),
                sum.hosts[0].claimed,
                sum.hosts[0].locked
            ),
            ("cam-1", 1, false)
        );
        assert!(sum.hosts[0].heartbeat_age_secs.is_some_and(|a| a < 60));
        assert!(sum.state.is_empty(), "cam-2 has no state of its own");
    }
}
