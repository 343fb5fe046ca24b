//! The daemon's state rows and what the operator commands read: counts, `list` (and the
//! latest result of each row for `list -v`), one file's row and its results (`show`), and
//! the summary `status` and `check` show, with every host of the scope as the
//! server sees it (heartbeat age, daemon lock, claims).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Bytea, Double, Integer, Nullable, Text};

use super::conn::{lock_key, Fail, Q};
use super::{
    file_columns, pg_text, result_columns, ts, AnyTime, Count, Ctx, FileRec, PgStore, ResultRec,
};
use crate::error::Result;
use crate::store::{
    identity_of, ErrorCause, FileRow, HostState, ListFilter, PathAt, ResultRow, Status, Summary,
};
use crate::timestamp::Timestamp;

#[derive(QueryableByName)]
struct PathAtRec {
    #[diesel(sql_type = Text)]
    folder: String,
    #[diesel(sql_type = Text)]
    date: String,
    #[diesel(sql_type = Bytea)]
    filename: Vec<u8>,
    #[diesel(sql_type = Bytea)]
    path: Vec<u8>,
    #[diesel(sql_type = Nullable<Text>)]
    at: AnyTime,
    #[diesel(sql_type = Nullable<Text>)]
    detail: Option<String>,
}

impl PathAtRec {
    fn into_path_at(self, ctx: &Ctx) -> PathAt {
        PathAt {
            path: ctx.path(&self.folder, &self.date, &self.filename, &self.path),
            at: self.at.0,
            detail: self.detail,
        }
    }
}

#[derive(QueryableByName)]
struct CountRec {
    #[diesel(sql_type = Text)]
    folder: String,
    #[diesel(sql_type = Text)]
    status: Status,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct CauseRec {
    #[diesel(sql_type = Text)]
    cause: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Bytea)]
    example: Vec<u8>,
}

#[derive(QueryableByName)]
struct StateRec {
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    value: String,
    #[diesel(sql_type = Nullable<Text>)]
    updated_at: AnyTime,
    /// None where `updated_at` is `infinity` (set by hand).
    #[diesel(sql_type = Nullable<Double>)]
    age: Option<f64>,
}

#[derive(QueryableByName)]
struct HostCount {
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct LockRec {
    #[diesel(sql_type = BigInt)]
    hi: i64,
    #[diesel(sql_type = BigInt)]
    lo: i64,
}

impl PgStore {
    /// Writes this host's state rows. `updated_at` is the server's clock, whatever `now`
    /// says: heartbeat ages are compared with the server's `now()`, never across hosts.
    pub(super) fn set_state(&mut self, pairs: &[(&str, String)], _now: Timestamp) -> Result<()> {
        let mut keys: Vec<&str> = Vec::new();
        let mut values: Vec<String> = Vec::new();
        for (k, v) in pairs {
            let v = pg_text(v).into_owned();
            match keys.iter().position(|x| x == k) {
                Some(i) => values[i] = v,
                None => {
                    keys.push(k);
                    values.push(v);
                }
            }
        }
        let ctx = &self.ctx;
        self.link.with("writing daemon state", |c| {
            sql_query(
                "INSERT INTO state(scope, host, key, value, updated_at)
                 SELECT $1, $2, k, v, now() FROM unnest($3::text[], $4::text[]) AS u(k, v)
                 ON CONFLICT (scope, host, key) DO UPDATE
                     SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind::<Text, _>(&ctx.scope)
            .bind::<Text, _>(&ctx.host)
            .bind::<Array<Text>, _>(&keys)
            .bind::<Array<Text>, _>(&values)
            .execute(c)?;
            Ok(())
        })
    }

    pub(super) fn state(&mut self) -> Result<HashMap<String, (String, Option<Timestamp>)>> {
        let ctx = &self.ctx;
        let rows = self.link.with("reading daemon state", |c| {
            Ok(state_rows(c, &ctx.scope, Some(&ctx.host))?)
        })?;
        Ok(rows
            .into_iter()
            .map(|r| (r.key, (r.value, r.updated_at.0)))
            .collect())
    }

    /// How many rows wait (pending or uploading), from the counts, and when the oldest was
    /// detected: the first entry of `files_waiting`, whatever the backlog.
    pub(super) fn queue_overview(&mut self) -> Result<(i64, Option<Timestamp>)> {
        let scope = &self.ctx.scope;
        #[derive(QueryableByName)]
        struct Overview {
            #[diesel(sql_type = BigInt)]
            n: i64,
            #[diesel(sql_type = Nullable<Text>)]
            v: AnyTime,
        }
        let sql = format!(
            "SELECT (SELECT coalesce(sum(n), 0)::bigint FROM (
                         SELECT n FROM file_counts
                         WHERE scope = $1 AND status IN ('pending', 'uploading')
                         UNION ALL
                         SELECT n FROM file_count_changes
                         WHERE scope = $1 AND status IN ('pending', 'uploading')
                     ) AS c) AS n,
                    (SELECT {} FROM files
                     WHERE scope = $1 AND status IN ('pending', 'uploading')
                     ORDER BY detected_at, id LIMIT 1) AS v",
            ts("detected_at")
        );
        let r: Overview = self.link.with("counting pending files", |c| {
            Ok(sql_query(&sql).bind::<Text, _>(scope).get_result(c)?)
        })?;
        Ok((r.n, r.v.0))
    }

    /// Folds the scope's count changes into its totals, so that reading the counts costs
    /// the changes since the last fold. One host of a scope at a time: another one folding
    /// now holds the lock, and this one leaves it to them. A change row is folded by the
    /// one transaction that deletes it, so none is counted twice or lost, whoever folds.
    /// One statement, its own transaction (the lock is taken before the first row is
    /// deleted, and released at its end): one round trip a heartbeat.
    pub(super) fn fold_counts(&mut self) -> Result<()> {
        let scope = &self.ctx.scope;
        let key = fold_key(scope);
        self.link.with("folding file counts", |c| {
            sql_query(
                "WITH gone AS (
                     DELETE FROM file_count_changes
                     WHERE scope = $1 AND (SELECT pg_try_advisory_xact_lock($2, $3))
                     RETURNING folder, status, n
                 )
                 INSERT INTO file_counts(scope, folder, status, n)
                 SELECT $1, folder, status, sum(n) FROM gone
                 GROUP BY folder, status ORDER BY folder, status
                 ON CONFLICT (scope, folder, status) DO UPDATE SET n = file_counts.n + excluded.n",
            )
            .bind::<Text, _>(scope)
            .bind::<Integer, _>(FOLD_LOCK)
            .bind::<Integer, _>(key)
            .execute(c)?;
            Ok(())
        })
    }

    pub(super) fn uploaded_since(&mut self, since: Timestamp) -> Result<i64> {
        let scope = &self.ctx.scope;
        self.link.with("counting uploaded files", |c| {
            Ok(sql_query(
                "SELECT count(*) AS n FROM files
                 WHERE scope = $1 AND status = 'uploaded' AND uploaded_at >= $2::timestamptz",
            )
            .bind::<Text, _>(scope)
            .bind::<Text, _>(since)
            .get_result::<Count>(c)?
            .n)
        })
    }

    pub(super) fn counts(&mut self) -> Result<Vec<(String, Status, i64)>> {
        let scope = &self.ctx.scope;
        self.link.with("counting files", |c| Ok(counts(c, scope)?))
    }

    pub(super) fn count_status_in_dates(
        &mut self,
        statuses: &[Status],
        dates: &[String],
    ) -> Result<i64> {
        let scope = &self.ctx.scope;
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        self.link.with("counting files", |c| {
            Ok(sql_query(
                "SELECT count(*) AS n FROM files
                 WHERE scope = $1 AND date = ANY($2) AND status = ANY($3)",
            )
            .bind::<Text, _>(scope)
            .bind::<Array<Text>, _>(dates)
            .bind::<Array<Text>, _>(&statuses)
            .get_result::<Count>(c)?
            .n)
        })
    }

    /// The rows `list` shows, newest date first. A folder without a date reads the folder
    /// in each of the scope's dates, found one index probe each down the key: the key is
    /// `(scope, date, folder, …)` (schema 5), and without the dates a folder would be
    /// looked for in every row of the scope (a review: a folder with no rows read all of
    /// them).
    pub(super) fn list(&mut self, filter: &ListFilter) -> Result<Vec<FileRow>> {
        let dates = if filter.folder.is_some() && filter.date.is_none() {
            "AND date = ANY(ARRAY(
                 WITH RECURSIVE d(date) AS (
                     SELECT max(date) FROM files WHERE scope = $1
                     UNION ALL
                     SELECT (SELECT max(f.date) FROM files f WHERE f.scope = $1 AND f.date < d.date)
                     FROM d WHERE d.date IS NOT NULL)
                 SELECT date FROM d WHERE date IS NOT NULL))"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {} FROM files
             WHERE scope = $1 AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR folder = $3) AND ($4::text IS NULL OR date = $4)
               {dates}
             ORDER BY date DESC, folder, mtime_ns DESC, id DESC
             LIMIT $5",
            file_columns()
        );
        let ctx = &self.ctx;
        let rows: Vec<FileRec> = self.link.with("listing files", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Nullable<Text>, _>(filter.status.as_ref().map(Status::as_str))
                .bind::<Nullable<Text>, _>(filter.folder.as_deref())
                .bind::<Nullable<Text>, _>(filter.date.as_deref())
                .bind::<Nullable<BigInt>, _>(filter.limit)
                .load(c)?)
        })?;
        Ok(rows.into_iter().map(|r| r.into_row(ctx).0).collect())
    }

    pub(super) fn file_by_path(&mut self, path: &Path) -> Result<Option<FileRow>> {
        let Some((folder, date, name)) = identity_of(path) else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {} FROM files WHERE scope = $1 AND folder = $2 AND date = $3 AND filename = $4",
            file_columns()
        );
        let ctx = &self.ctx;
        let row: Option<FileRec> = self.link.with("reading a file row", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<Text, _>(&folder)
                .bind::<Text, _>(&date)
                .bind::<Bytea, _>(name.as_bytes())
                .get_result(c)
                .optional()?)
        })?;
        Ok(row.map(|r| r.into_row(ctx).0))
    }

    pub(super) fn file_by_id(&mut self, id: i64) -> Result<Option<FileRow>> {
        let sql = format!(
            "SELECT {} FROM files WHERE scope = $1 AND id = $2",
            file_columns()
        );
        let ctx = &self.ctx;
        let row: Option<FileRec> = self.link.with("reading a file row", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(&ctx.scope)
                .bind::<BigInt, _>(id)
                .get_result(c)
                .optional()?)
        })?;
        Ok(row.map(|r| r.into_row(ctx).0))
    }

    /// One file's results, oldest first; only a file of this scope has any.
    pub(super) fn results(&mut self, file_id: i64) -> Result<Vec<ResultRow>> {
        let sql = format!(
            "SELECT {} FROM upload_results
             WHERE file_id = $2 AND EXISTS (SELECT 1 FROM files f WHERE f.id = $2 AND f.scope = $1)
             ORDER BY id",
            result_columns()
        );
        let scope = &self.ctx.scope;
        let rows: Vec<ResultRec> = self.link.with("reading upload results", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(scope)
                .bind::<BigInt, _>(file_id)
                .load(c)?)
        })?;
        Ok(rows.into_iter().map(|r| r.into_row().1).collect())
    }

    /// The latest result of each of these files of this scope, in one statement.
    pub(super) fn latest_results(&mut self, file_ids: &[i64]) -> Result<HashMap<i64, ResultRow>> {
        let sql = format!(
            "SELECT DISTINCT ON (file_id) {} FROM upload_results
             WHERE file_id = ANY($2)
               AND file_id IN (SELECT id FROM files WHERE scope = $1 AND id = ANY($2))
             ORDER BY file_id, id DESC",
            result_columns()
        );
        let scope = &self.ctx.scope;
        let rows: Vec<ResultRec> = self.link.with("reading upload results", |c| {
            Ok(sql_query(&sql)
                .bind::<Text, _>(scope)
                .bind::<Array<BigInt>, _>(file_ids)
                .load(c)?)
        })?;
        Ok(rows.into_iter().map(ResultRec::into_row).collect())
    }

    /// Everything `status` and `check` show, in one repeatable-read transaction so the
    /// numbers agree; plus, as the server sees them, every host of the scope that has
    /// state rows or holds claims (one that claims without a heartbeat is worth seeing).
    pub(super) fn summary(
        &mut self,
        today_start: Timestamp,
        day_ago: Timestamp,
        hour_ago: Timestamp,
    ) -> Result<Summary> {
        let ctx = &self.ctx;
        self.link.with("reading status", |c| {
            c.build_transaction()
                .repeatable_read()
                .read_only()
                .run::<_, Fail, _>(|c| summary(c, ctx, today_start, day_ago, hour_ago))
        })
    }
}

/// `pg_try_advisory_xact_lock(FOLD_LOCK, fold_key(scope))` lets one host of a scope fold at
/// a time. The two-key form: never taken for a daemon's lock (one bigint key), which
/// `summary` looks for.
const FOLD_LOCK: i32 = 0x5365_6761; // "Sega"

/// The scope's half of the fold lock: 32 bits of a hash of the scope (two scopes that share
/// them only take turns).
fn fold_key(scope: &str) -> i32 {
    lock_key(scope, "file counts") as i32
}

/// Row counts per (folder, status): the folded totals plus the changes not yet folded, read
/// in one snapshot. A status this build does not know (a row written by hand) is counted
/// under its own word.
fn counts(c: &mut PgConnection, scope: &str) -> QueryResult<Vec<(String, Status, i64)>> {
    let rows: Vec<CountRec> = sql_query(
        "SELECT folder, status, sum(n)::bigint AS n FROM (
             SELECT folder, status, n FROM file_counts WHERE scope = $1
             UNION ALL
             SELECT folder, status, n FROM file_count_changes WHERE scope = $1
         ) AS c
         GROUP BY folder, status HAVING sum(n) <> 0 ORDER BY folder, status",
    )
    .bind::<Text, _>(scope)
    .load(c)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.folder, r.status, r.n))
        .collect())
}

/// State rows of the scope (or of one host), with their age by the server's clock.
fn state_rows(c: &mut PgConnection, scope: &str, host: Option<&str>) -> QueryResult<Vec<StateRec>> {
    sql_query(format!(
        "SELECT host, key, value, {} AS updated_at,
             CASE WHEN isfinite(updated_at)
                  THEN extract(epoch FROM now() - updated_at)::float8 END AS age
         FROM state WHERE scope = $1 AND ($2::text IS NULL OR host = $2) ORDER BY host, key",
        ts("updated_at")
    ))
    .bind::<Text, _>(scope)
    .bind::<Nullable<Text>, _>(host)
    .load(c)
}

fn summary(
    c: &mut PgConnection,
    ctx: &Ctx,
    today_start: Timestamp,
    day_ago: Timestamp,
    hour_ago: Timestamp,
) -> Q<Summary> {
    let scope = ctx.scope.as_str();
    let counts = counts(c, scope)?;
    let uploaded_today = sql_query(
        "SELECT count(*) AS n FROM files
         WHERE scope = $1 AND status = 'uploaded' AND uploaded_at >= $2::timestamptz",
    )
    .bind::<Text, _>(scope)
    .bind::<Text, _>(today_start)
    .get_result::<Count>(c)?
    .n;
    let oldest_pending = sql_query(format!(
        "SELECT folder, date, filename, path, {} AS at, last_error AS detail FROM files
         WHERE scope = $1 AND status IN ('pending', 'uploading') ORDER BY detected_at, id LIMIT 1",
        ts("detected_at")
    ))
    .bind::<Text, _>(scope)
    .get_result::<PathAtRec>(c)
    .optional()?
    .map(|r| r.into_path_at(ctx));
    // A row set to `uploaded` by hand may have no time (and would sort first here).
    let last_success = sql_query(format!(
        "SELECT folder, date, filename, path, {} AS at, NULL::text AS detail FROM files
         WHERE scope = $1 AND status = 'uploaded' AND uploaded_at IS NOT NULL
         ORDER BY uploaded_at DESC LIMIT 1",
        ts("uploaded_at")
    ))
    .bind::<Text, _>(scope)
    .get_result::<PathAtRec>(c)
    .optional()?
    .map(|r| r.into_path_at(ctx));
    let last_error = sql_query(format!(
        "SELECT f.folder, f.date, f.filename, f.path, {} AS at,
             coalesce(r.error, 'HTTP ' || r.http_status) AS detail
         FROM upload_results r JOIN files f ON f.id = r.file_id
         WHERE f.scope = $1 AND r.outcome <> 'success'
         ORDER BY r.started_at DESC, r.id DESC LIMIT 1",
        ts("r.started_at")
    ))
    .bind::<Text, _>(scope)
    .get_result::<PathAtRec>(c)
    .optional()?
    .map(|r| r.into_path_at(ctx));
    let errors_24h = sql_query(
        "SELECT coalesce(r.error, 'HTTP ' || r.http_status) AS cause, count(*) AS n,
             (array_agg(f.path ORDER BY f.path DESC))[1] AS example
         FROM upload_results r JOIN files f ON f.id = r.file_id
         WHERE f.scope = $1 AND r.started_at >= $2::timestamptz AND r.outcome <> 'success'
         GROUP BY cause ORDER BY count(*) DESC, cause LIMIT 10",
    )
    .bind::<Text, _>(scope)
    .bind::<Text, _>(day_ago)
    .load::<CauseRec>(c)?
    .into_iter()
    .map(|r| ErrorCause {
        cause: r.cause,
        count: r.n,
        example: PathBuf::from(OsString::from_vec(r.example)),
    })
    .collect();
    let failed_last_hour = sql_query(
        "SELECT count(*) AS n FROM upload_results r JOIN files f ON f.id = r.file_id
         WHERE f.scope = $1 AND r.started_at >= $2::timestamptz
           AND r.outcome <> 'success' AND r.outcome = 'failed'",
    )
    .bind::<Text, _>(scope)
    .bind::<Text, _>(hour_ago)
    .get_result::<Count>(c)?
    .n;

    // Every host of the scope: its state rows, its heartbeat's age by the server's clock,
    // whether its daemon's advisory lock is held (a live session), its claims. pg_locks
    // lists the whole server's locks: an advisory lock belongs to one database, and another
    // ledger on the same server may have a host of the same scope and name.
    let all_state = state_rows(c, scope, None)?;
    let claimed: Vec<HostCount> = sql_query(
        "SELECT claimed_host AS host, count(*) AS n FROM files
         WHERE scope = $1 AND status = 'uploading' AND claimed_host IS NOT NULL
         GROUP BY claimed_host",
    )
    .bind::<Text, _>(scope)
    .load(c)?;
    let locks: HashSet<i64> = sql_query(
        "SELECT classid::bigint AS hi, objid::bigint AS lo FROM pg_locks
         WHERE locktype = 'advisory' AND objsubid = 1 AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .load::<LockRec>(c)?
    .into_iter()
    .map(|l| (((l.hi as u64) << 32) | (l.lo as u64 & 0xffff_ffff)) as i64)
    .collect();
    let mut state = HashMap::new();
    let mut hosts: Vec<HostState> = Vec::new();
    fn host_entry<'h>(hosts: &'h mut Vec<HostState>, name: &str) -> &'h mut HostState {
        let i = match hosts.iter().position(|h| h.host == name) {
            Some(i) => i,
            None => {
                hosts.push(HostState {
                    host: name.to_owned(),
                    state: HashMap::new(),
                    heartbeat_age_secs: None,
                    locked: false,
                    claimed: 0,
                });
                hosts.len() - 1
            }
        };
        &mut hosts[i]
    }
    for r in all_state {
        let h = host_entry(&mut hosts, &r.host);
        if r.key == "heartbeat" {
            h.heartbeat_age_secs = r.age.map(|a| a.max(0.0) as u64);
        }
        h.state.insert(r.key.clone(), r.value.clone());
        if r.host == ctx.host {
            state.insert(r.key, (r.value, r.updated_at.0));
        }
    }
    for cl in claimed {
        host_entry(&mut hosts, &cl.host).claimed = cl.n;
    }
    for h in &mut hosts {
        h.locked = locks.contains(&lock_key(scope, &h.host));
    }
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(Summary {
        counts,
        uploaded_today,
        oldest_pending,
        last_success,
        last_error,
        errors_24h,
        failed_last_hour,
        state,
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::store::postgres::tests::{t, wait_for};
    use crate::store::tests::counts::assert_exact;
    use crate::store::tests::{completion, obs, pg_open, roots, FAR, T0, T1};
    use crate::store::{ClaimOrder, Disposition};

    /// Hosts of one scope write and fold at the same time: each change is folded once, by
    /// whoever folds it, and the counts never wait on another host.
    #[test]
    fn hosts_writing_and_folding_at_once_keep_the_counts_exact() {
        let Some(url) = t() else { return };
        let hosts: Vec<_> = (0..3)
            .map(|h| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let mut s = pg_open(&url, "site-a", &format!("cam-{h}"), roots());
                    for round in 0..20 {
                        // The same names on every host: one row per file, whoever records it.
                        let batch: Vec<_> = (0..10)
                            .map(|i| obs(format!("{round}-{i}.jpg").as_bytes(), 1, i))
                            .collect();
                        s.record(&batch, T0).unwrap();
                        let c = s.claim_due(T1, FAR, 4, ClaimOrder::OldestFile).unwrap();
                        let done: Vec<_> = c
                            .iter()
                            .enumerate()
                            .map(|(i, c)| {
                                let d = if i % 3 == 0 {
                                    Disposition::Failed
                                } else {
                                    Disposition::Uploaded
                                };
                                completion(c, d)
                            })
                            .collect();
                        s.complete(&done, T1).unwrap();
                        s.fold_counts().unwrap();
                    }
                })
            })
            .collect();
        for h in hosts {
            h.join().unwrap();
        }
        let mut s = pg_open(&url, "site-a", "reader", roots());
        assert_exact(&mut s, "three hosts at once");
        assert_eq!(
            s.counts().unwrap().iter().map(|(_, _, n)| n).sum::<i64>(),
            200
        );
    }

    /// A row set to `uploaded` by hand, with no upload time (which sorts first in a
    /// descending order here), does not stop `status`: the last success stays the last one
    /// a daemon recorded.
    #[test]
    fn a_row_marked_uploaded_by_hand_without_a_time_is_not_the_last_success() {
        let Some(url) = t() else { return };
        let mut s = pg_open(&url, "site-a", "cam-1", roots());
        s.record(&[obs(b"a.jpg", 1, 1), obs(b"b.jpg", 1, 2)], T0)
            .unwrap();
        let c = s.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap();
        s.complete(&[completion(&c[0], Disposition::Uploaded)], T1)
            .unwrap();
        s.exec_for_test("UPDATE files SET status = 'uploaded' WHERE filename = 'b.jpg'")
            .unwrap();
        let last = s.summary(T0, T0, T0).unwrap().last_success.unwrap();
        assert_eq!(last.path, Path::new("/data/Sega_1/2026-11-26/a.jpg"));
        assert_eq!(last.at, Some(T1));
    }

    /// A transaction that dies before its commit (its backend killed: a host lost in the
    /// middle) takes its count changes with it; hand edits count, from a session whose
    /// search_path does not name the ledger's schema too; TRUNCATE empties the counts.
    #[test]
    fn counts_follow_hand_edits_lost_transactions_and_truncate() {
        let Some(url) = t() else { return };
        let mut s = pg_open(&url, "site-a", "cam-1", roots());
        let batch: Vec<_> = (0..6)
            .map(|i| obs(format!("{i}.jpg").as_bytes(), 10, i))
            .collect();
        s.record(&batch, T0).unwrap();
        s.claim_due(T0, FAR, 2, ClaimOrder::OldestFile).unwrap();
        assert_exact(&mut s, "recording and claiming");

        let mut lost = PgConnection::establish(&url).unwrap();
        let pid = sql_query("SELECT pg_backend_pid()::bigint AS n")
            .get_result::<Count>(&mut lost)
            .unwrap()
            .n;
        lost.batch_execute(
            "BEGIN;
             UPDATE files SET status = 'uploaded' WHERE status = 'pending';
             DELETE FROM files WHERE status = 'uploading';",
        )
        .unwrap();
        s.exec_for_test(&format!("SELECT pg_terminate_backend({pid})"))
            .unwrap();
        wait_for("the lost session's backend to exit", || {
            s.exec_for_test(&format!(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = {pid}) \
                 THEN RAISE EXCEPTION 'still there'; END IF; END $$"
            ))
            .is_ok()
        });
        drop(lost);
        assert_exact(&mut s, "a transaction lost before its commit");

        let mut hand = PgConnection::establish(&url).unwrap();
        let schema = sql_query("SELECT current_schema() AS v")
            .get_result::<crate::store::postgres::OptText>(&mut hand)
            .unwrap()
            .v
            .unwrap();
        hand.batch_execute(&format!(
            "SET search_path = pg_catalog;
             UPDATE \"{schema}\".files SET status = 'held' WHERE filename = '5.jpg'::bytea;
             UPDATE \"{schema}\".files SET folder = 'Sega_2' WHERE filename = '4.jpg'::bytea;
             UPDATE \"{schema}\".files SET status = status WHERE filename = '3.jpg'::bytea;
             DELETE FROM \"{schema}\".files WHERE filename = '0.jpg'::bytea;"
        ))
        .unwrap();
        assert_exact(&mut s, "hand edits");
        assert!(s
            .counts()
            .unwrap()
            .iter()
            .any(|(_, st, n)| st.as_str() == "held" && *n == 1));

        s.exec_for_test("TRUNCATE files CASCADE").unwrap();
        assert_exact(&mut s, "TRUNCATE");
        assert!(s.counts().unwrap().is_empty());
        s.record(&batch, T0).unwrap();
        assert_exact(&mut s, "recording after TRUNCATE");
    }

    /// Times a row holds that this program cannot (`infinity`, a year past 9999: set by
    /// hand; the columns are typed, so nothing else gets in) read as not a time: `list`,
    /// `status`'s summary and state rows, and the daemon's claims go on.
    #[test]
    fn times_it_cannot_hold_read_as_not_a_time() {
        let Some(url) = t() else { return };
        let mut s = pg_open(&url, "site-a", "cam-1", roots());
        s.record(&[obs(b"a.jpg", 1, 1), obs(b"b.jpg", 1, 2)], T0)
            .unwrap();
        let c = s.claim_due(T1, FAR, 1, ClaimOrder::OldestFile).unwrap();
        let retry = Disposition::Retry {
            at: T1,
            counted: true,
        };
        s.complete(&[completion(&c[0], retry)], T1).unwrap();
        s.set_state(&[("heartbeat", T1.to_string())], T1).unwrap();
        s.exec_for_test(
            "UPDATE files SET detected_at = 'infinity', updated_at = '12000-01-01',
                              incomplete_since = '12000-01-01';
             UPDATE upload_results SET started_at = 'infinity';
             UPDATE state SET updated_at = 'infinity';",
        )
        .unwrap();
        let rows = s.list(&crate::store::ListFilter::default()).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows
            .iter()
            .all(|r| r.detected_at.is_none() && r.updated_at.is_none()));
        let sum = s.summary(T0, T0, T0).unwrap();
        assert_eq!(sum.oldest_pending.map(|p| p.at), Some(None));
        assert_eq!(sum.last_error.map(|p| p.at), Some(None));
        assert_eq!(s.state().unwrap()["heartbeat"].1, None);
        assert_eq!(s.results(c[0].id).unwrap()[0].started_at, None);
        let t2 = crate::store::tests::T2;
        assert_eq!(
            s.claim_due(t2, FAR, 8, ClaimOrder::OldestFile)
                .unwrap()
                .len(),
            2
        );
    }
}
