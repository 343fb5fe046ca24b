//! The end of an attempt and of a row: `complete` records each attempt's result and, where
//! this process still holds the claim, the row's new status, a whole batch in one statement;
//! each file keeps its latest results (`trim_results`); `prune` deletes finished rows of old
//! date folders.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};

use super::conn::{Fail, Prepare};
use super::{jsonb_text, pg_opt, Ctx, Id, OptText, PgStore};
use crate::error::Result;
use crate::store::{Completion, Disposition, RESULTS_KEPT_PER_FILE, UPLOADED_TOTAL};
use crate::timestamp::Timestamp;

/// Keeps each file's latest `RESULTS_KEPT_PER_FILE` results.
pub(super) fn trim_results(c: &mut PgConnection, file_ids: &[i64]) -> QueryResult<usize> {
    if file_ids.is_empty() {
        return Ok(0);
    }
    sql_query(
        "DELETE FROM upload_results WHERE id IN (
             SELECT id FROM (
                 SELECT id, row_number() OVER (PARTITION BY file_id ORDER BY id DESC) AS rn
                 FROM upload_results WHERE file_id = ANY($1)) ranked
             WHERE rn > $2)",
    )
    .bind::<Array<BigInt>, _>(file_ids)
    .bind::<BigInt, _>(RESULTS_KEPT_PER_FILE)
    .execute(c)
}

/// A batch of completions of distinct files, in one statement (`$1` scope, `$2` host, `$3`
/// pid, `$4` now, `$5` the results a file keeps; the rest one array per column, a row per
/// completion, in file id order):
///
/// - `mine`: the rows this process still holds in `uploading`, locked in id order before
///   anything is written (`ARRAY(…)` runs first, once), as every multi-row writer here
///   takes its rows: no lock cycle with another host. A row another host took over, or a
///   newer version recorded since, is not locked and not changed.
/// - `results`: each attempt's result row, whether or not the claim still held, unless the
///   file is gone (pruned by any host since the claim).
/// - `trimmed`: the results beyond the latest `$5 - 1` of the files that got one (this
///   statement does not see the row it inserts: that one is the `$5`th), file by file down
///   the `(file_id, id)` index.
/// - the row update, guarded by the version claimed: what each disposition sets, the other
///   columns kept (`kind` says which). Each completion finds its row by id: the rows are
///   those `mine` locked, so their scope and status are not named again. Named, they let
///   the plan (made once, for a guessed batch of 10 and one row `uploading`) read the
///   rows through `files_claimed` and pair each with every completion of the batch, or
///   through an index over the whole scope: quadratic in the batch, 5 ms of a 54-row
///   completion, where a catch-up's batch holds up to 256.
///
/// Whether a file is there (for its result, and to answer with the gone ones) is its row's
/// scope looked up by id, one row at a time: as an `EXISTS` naming the scope, a plan made
/// before the table had statistics read every row of the scope (through an index by scope
/// and date, into a hash) twice for each completion. A row moved to another scope by hand
/// is gone to this one: no result is written on another scope's row.
/// - `counted`: the rows this statement marked uploaded, added to this host's
///   `UPLOADED_TOTAL` state row (`$26`) in the same transaction. A value edited by hand
///   into something that is not a number counts as 0, rather than failing every completion
///   after it.
///
/// It answers with the ids of files that are gone.
const COMPLETE: &str = "
    WITH u AS (
        SELECT * FROM unnest($6::bigint[], $7::integer[], $8::bigint[], $9::bigint[],
            $10::text[], $11::bigint[], $12::integer[], $13::text[], $14::text[], $15::text[],
            $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::integer[],
            $22::text[], $23::boolean[], $24::bigint[], $25::bigint[])
            AS u(id, attempt, size, mtime_ns, started_at, duration_ms, http_status,
                 response_body, response_json, error, outcome, kind, status, next_at,
                 last_error, spent, since, absent, new_size, new_mtime_ns)
    ), results AS (
        INSERT INTO upload_results(file_id, host, attempt, started_at, duration_ms,
            http_status, response_body, response_json, error, outcome)
        SELECT u.id, $2, u.attempt, u.started_at::timestamptz, u.duration_ms, u.http_status,
            u.response_body, sega_try_jsonb(u.response_json), u.error, u.outcome
        FROM u
        WHERE u.outcome IS NOT NULL
          AND (SELECT f.scope FROM files f WHERE f.id = u.id) = $1
        ORDER BY u.id
        RETURNING file_id
    ), trimmed AS (
        DELETE FROM upload_results WHERE id IN (
            SELECT old.id FROM results, LATERAL (
                SELECT r.id FROM upload_results r WHERE r.file_id = results.file_id
                ORDER BY r.id DESC OFFSET $5 - 1) old)
    ), changed AS (
        UPDATE files f SET
            status = u.status,
            next_attempt_at = u.next_at::timestamptz,
            last_error = u.last_error,
            attempts = CASE WHEN u.kind = 'changed' THEN 0 ELSE f.attempts - u.spent END,
            uploaded_at = CASE u.kind WHEN 'uploaded' THEN $4::timestamptz
                                      WHEN 'changed' THEN NULL ELSE f.uploaded_at END,
            incomplete_since = CASE u.kind WHEN 'not_ready' THEN u.since::timestamptz
                                           WHEN 'uploaded' THEN NULL WHEN 'changed' THEN NULL
                                           ELSE f.incomplete_since END,
            absent = coalesce(u.absent, f.absent),
            size = coalesce(u.new_size, f.size),
            mtime_ns = coalesce(u.new_mtime_ns, f.mtime_ns),
            updated_at = $4::timestamptz
        FROM u
        WHERE u.id = ANY(ARRAY(
                  SELECT id FROM files
                  WHERE id = ANY($6) AND scope = $1 AND status = 'uploading'
                    AND claimed_host = $2 AND claimed_pid = $3
                  ORDER BY id FOR NO KEY UPDATE))
          AND f.id = u.id AND f.size = u.size AND f.mtime_ns = u.mtime_ns
          AND f.claimed_host = $2 AND f.claimed_pid = $3
        RETURNING u.kind
    ), counted AS (
        INSERT INTO state(scope, host, key, value, updated_at)
        SELECT $1, $2, $26, k.n::text, now()
        FROM (SELECT count(*) AS n FROM changed WHERE kind = 'uploaded') k WHERE k.n > 0
        ON CONFLICT (scope, host, key) DO UPDATE
            SET value = (CASE WHEN state.value ~ '^[0-9]{1,18}$'
                              THEN state.value::bigint ELSE 0 END
                         + excluded.value::bigint)::text,
                updated_at = now()
    )
    SELECT u.id FROM u WHERE (SELECT f.scope FROM files f WHERE f.id = u.id) IS DISTINCT FROM $1";

/// One completion's row of the `COMPLETE` arrays: what its disposition sets.
struct Set {
    /// Which columns change beyond status, next_attempt_at and last_error.
    kind: &'static str,
    status: &'static str,
    next_at: Option<Timestamp>,
    last_error: Option<String>,
    /// Attempts given back.
    spent: i32,
    since: Option<Timestamp>,
    absent: Option<bool>,
    new_size: Option<i64>,
    new_mtime_ns: Option<i64>,
}

impl Set {
    fn of(done: &Completion) -> Set {
        let error = pg_opt(&done.error);
        let set = |kind, status, next_at, last_error| Set {
            kind,
            status,
            next_at,
            last_error,
            spent: 0,
            since: None,
            absent: None,
            new_size: None,
            new_mtime_ns: None,
        };
        match &done.disposition {
            Disposition::Uploaded => set("uploaded", "uploaded", None, None),
            Disposition::Retry { at, counted } => Set {
                spent: if *counted { 0 } else { 1 },
                ..set("retry", "pending", Some(*at), error)
            },
            Disposition::Failed => set("failed", "failed", None, error),
            Disposition::Skipped { absent } => Set {
                absent: Some(*absent),
                ..set("skipped", "skipped", None, error)
            },
            Disposition::NotReady {
                at,
                incomplete_since,
            } => Set {
                spent: 1,
                since: *incomplete_since,
                ..set("not_ready", "pending", Some(*at), error)
            },
            Disposition::Changed { version, at } => Set {
                new_size: Some(version.size as i64),
                new_mtime_ns: Some(version.mtime_ns),
                ..set("changed", "pending", Some(*at), None)
            },
        }
    }
}

/// One column of an `unnest` batch.
fn each<S, T>(rows: &[S], f: impl Fn(&S) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// Runs `COMPLETE` for completions of distinct files; the ids of files that are gone.
fn complete_distinct(
    c: &mut PgConnection,
    ctx: &Ctx,
    now: Timestamp,
    batch: &[&Completion],
) -> QueryResult<Vec<i64>> {
    let sets: Vec<Set> = batch.iter().map(|d| Set::of(d)).collect();
    let gone: Vec<Id> = sql_query(COMPLETE)
        .bind::<Text, _>(&ctx.scope)
        .bind::<Text, _>(&ctx.host)
        .bind::<Integer, _>(ctx.pid)
        .bind::<Text, _>(now)
        .bind::<BigInt, _>(RESULTS_KEPT_PER_FILE)
        .bind::<Array<BigInt>, _>(each(batch, |d| d.file_id))
        .bind::<Array<Integer>, _>(each(batch, |d| {
            i32::try_from(d.attempt).unwrap_or(i32::MAX)
        }))
        .bind::<Array<BigInt>, _>(each(batch, |d| d.version.size as i64))
        .bind::<Array<BigInt>, _>(each(batch, |d| d.version.mtime_ns))
        .bind::<Array<Text>, _>(each(batch, |d| d.started_at))
        .bind::<Array<BigInt>, _>(each(batch, |d| d.duration_ms))
        .bind::<Array<Nullable<Integer>>, _>(each(batch, |d| d.http_status.map(i32::from)))
        .bind::<Array<Nullable<Text>>, _>(each(batch, |d| pg_opt(&d.response_body)))
        .bind::<Array<Nullable<Text>>, _>(each(batch, |d| jsonb_text(&d.response_json)))
        .bind::<Array<Nullable<Text>>, _>(each(batch, |d| pg_opt(&d.error)))
        .bind::<Array<Nullable<Text>>, _>(each(batch, |d| d.result.map(|r| r.as_str())))
        .bind::<Array<Text>, _>(each(&sets, |s| s.kind))
        .bind::<Array<Text>, _>(each(&sets, |s| s.status))
        .bind::<Array<Nullable<Text>>, _>(each(&sets, |s| s.next_at))
        .bind::<Array<Nullable<Text>>, _>(each(&sets, |s| s.last_error.clone()))
        .bind::<Array<Integer>, _>(each(&sets, |s| s.spent))
        .bind::<Array<Nullable<Text>>, _>(each(&sets, |s| s.since))
        .bind::<Array<Nullable<Bool>>, _>(each(&sets, |s| s.absent))
        .bind::<Array<Nullable<BigInt>>, _>(each(&sets, |s| s.new_size))
        .bind::<Array<Nullable<BigInt>>, _>(each(&sets, |s| s.new_mtime_ns))
        .bind::<Text, _>(UPLOADED_TOTAL)
        .prepared()
        .load(c)?;
    Ok(gone.into_iter().map(|r| r.id).collect())
}

/// The batch as rounds of distinct files, each in file id order: the first completion of
/// each file, then the second of those that have two, and so on. Applied one round after
/// the other, they do what the batch applied one by one in its order does (a file's
/// completions keep their order; different files do not touch each other).
fn rounds(batch: &[Completion]) -> Vec<Vec<&Completion>> {
    let mut rounds: Vec<Vec<&Completion>> = Vec::new();
    let mut seen: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for done in batch {
        let n = seen.entry(done.file_id).or_insert(0);
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(done);
        *n += 1;
    }
    for round in &mut rounds {
        round.sort_by_key(|d| d.file_id);
    }
    rounds
}

impl PgStore {
    /// Applies a batch of completions atomically, as SQLite does, and only where this
    /// process still holds the claim: a host whose claims were taken over (its lease ran
    /// out) must not overwrite the new owner's state. The attempt is recorded either way.
    /// One statement, one round trip (a batch holding a file twice takes one more, in one
    /// transaction).
    pub(super) fn complete(&mut self, batch: &[Completion], now: Timestamp) -> Result<Vec<i64>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let ctx = &self.ctx;
        let rounds = rounds(batch);
        self.link.with("saving upload results", |c| {
            if let [round] = rounds.as_slice() {
                // One statement is atomic by itself.
                return Ok(complete_distinct(c, ctx, now, round)?);
            }
            c.transaction::<_, Fail, _>(|c| {
                let mut gone = Vec::new();
                for round in &rounds {
                    gone.extend(complete_distinct(c, ctx, now, round)?);
                }
                gone.sort_unstable();
                gone.dedup();
                Ok(gone)
            })
        })
    }

    /// Deletes this scope's finished rows whose date folder is before `before_date`; their
    /// results go with them (ON DELETE CASCADE). A pending or claimed row stays.
    pub(super) fn prune(&mut self, before_date: &str) -> Result<usize> {
        let scope = &self.ctx.scope;
        self.link.with("pruning old rows", |c| {
            Ok(sql_query(
                "DELETE FROM files WHERE scope = $1 AND date < $2
                   AND status IN ('uploaded', 'failed', 'skipped')",
            )
            .bind::<Text, _>(scope)
            .bind::<Text, _>(before_date)
            .execute(c)?)
        })
    }

    /// The scope's greatest `date`, from the unique key's `(scope, date, …)` prefix.
    pub(super) fn newest_date(&mut self) -> Result<Option<String>> {
        let scope = &self.ctx.scope;
        let r: OptText = self.link.with("finding the newest date folder", |c| {
            Ok(
                sql_query("SELECT max(date) AS v FROM files WHERE scope = $1")
                    .bind::<Text, _>(scope)
                    .get_result(c)?,
            )
        })?;
        Ok(r.v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Version;
    use crate::store::postgres::tests::{daemon_session, many, t, wait_for};
    use crate::store::tests::{completion, exported, obs, pg_open, roots, sqlite, FAR, T0, T1, T2};
    use crate::store::{ClaimOrder, Ledger};
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::Ordering::Relaxed;

    /// A batch holding one file several times (stale completions beside the live one, more
    /// results than a file keeps) ends as the same batch applied one by one does: as SQLite
    /// leaves it.
    #[test]
    fn a_batch_naming_a_file_twice_ends_as_one_by_one_does() {
        let Some(url) = t() else { return };
        let run = |s: &mut dyn Ledger| {
            s.record(&[obs(b"a.jpg", 1, 1), obs(b"b.jpg", 1, 2)], T0)
                .unwrap();
            let c = s.claim_due(T0, FAR, 10, ClaimOrder::OldestFile).unwrap();
            let (a, b) = (&c[0], &c[1]);
            let mut stale = completion(a, Disposition::Uploaded);
            stale.version = Version {
                size: 9,
                mtime_ns: 9,
            };
            let mut batch = vec![stale.clone()];
            let mut retry = completion(
                a,
                Disposition::Retry {
                    at: T2,
                    counted: true,
                },
            );
            retry.error = Some("HTTP 503".into());
            batch.push(retry);
            // Too late: the row is pending again by now.
            batch.push(completion(a, Disposition::Uploaded));
            batch.push(completion(b, Disposition::Failed));
            for i in 0..22 {
                let mut late = stale.clone();
                late.attempt = 100 + i;
                batch.push(late);
            }
            assert!(s.complete(&batch, T1).unwrap().is_empty());
            let mut rows: Vec<_> = exported(s)
                .into_iter()
                .map(|e| {
                    (
                        e.file.filename,
                        e.file.status.as_str().to_owned(),
                        e.file.attempts,
                        e.file.next_attempt_at,
                        e.file.last_error,
                        e.results
                            .iter()
                            .map(|r| (r.attempt, r.outcome))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            rows.sort_by(|x, y| x.0.cmp(&y.0));
            rows
        };
        let mut pg = pg_open(&url, "site-a", "cam-1", roots());
        let got = run(&mut pg);
        assert_eq!(got, run(&mut *sqlite()));
        assert_eq!(
            (got[0].1.as_str(), got[0].5.len() as i64),
            ("pending", RESULTS_KEPT_PER_FILE)
        );
        assert_eq!(got[1].1, "failed");
    }

    /// Claims and completions of a batch are one statement each, whatever its size, and
    /// each statement is prepared once per session.
    #[test]
    fn a_batch_is_one_round_trip() {
        let Some(url) = t() else { return };
        let mut s = pg_open(&url, "site-a", "cam-1", roots());
        s.record(&many(200), T0).unwrap();
        let n = s.count_statements_for_test();
        let sent = || n[0].load(Relaxed);
        let prepared = || n[1].load(Relaxed);
        let mut batches = 0;
        loop {
            let got = s.claim_due(T1, FAR, 100, ClaimOrder::OldestFile).unwrap();
            if got.is_empty() {
                break;
            }
            let done: Vec<Completion> = got
                .iter()
                .enumerate()
                .map(|(i, c)| match i % 3 {
                    0 => completion(c, Disposition::Uploaded),
                    1 => completion(c, Disposition::Failed),
                    _ => completion(c, Disposition::Skipped { absent: true }),
                })
                .collect();
            s.complete(&done, T2).unwrap();
            batches += 1;
        }
        assert_eq!(batches, 2);
        assert_eq!(
            sent(),
            5,
            "a claim and a completion per batch, the empty claim"
        );
        assert_eq!(prepared(), 2, "the claim and the completion, once each");
        let sum = s.counts().unwrap();
        let n_of = |st: &str| {
            sum.iter()
                .filter(|(_, s, _)| s.as_str() == st)
                .map(|(_, _, n)| *n)
                .sum::<i64>()
        };
        assert_eq!(
            (n_of("uploaded"), n_of("failed"), n_of("skipped")),
            (68, 66, 66)
        );
    }

    #[test]
    fn nul_bytes_and_odd_json_are_stored_safely() {
        let Some(url) = t() else { return };
        let mut s = pg_open(&url, "site-a", "cam-1", roots());
        let name = b"\xbb\xe7\xc1\xf8.jpg";
        s.record(
            &[obs(name, 1, 1), obs(b"b.jpg", 1, 2), obs(b"c.jpg", 1, 3)],
            T0,
        )
        .unwrap();
        let c = s.claim_due(T0, FAR, 10, ClaimOrder::OldestFile).unwrap();
        let mut nul = completion(
            &c[0],
            Disposition::Retry {
                at: T1,
                counted: true,
            },
        );
        nul.response_body = Some("a\0b".into());
        nul.response_json = Some(r#"{"a":"x\u0000y"}"#.into());
        nul.error = Some("bad\0".into());
        // serde_json refuses a lone surrogate too; should one slip through, the server's
        // refusal must cost the json copy, not the batch.
        let mut odd = completion(&c[1], Disposition::Failed);
        odd.response_json = Some(r#"{"a":"\ud800"}"#.into());
        let fine = completion(&c[2], Disposition::Uploaded);
        s.complete(&[nul, odd, fine], T1).unwrap();
        let rows = exported(&mut s);
        let get = |n: &[u8]| {
            rows.iter()
                .find(|e| e.file.filename.as_bytes() == n)
                .unwrap()
        };
        let first = get(name);
        let r = &first.results[0];
        assert_eq!(r.response_body.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(r.response_json, None);
        assert_eq!(r.error.as_deref(), Some("bad\u{FFFD}"));
        assert_eq!(first.file.last_error.as_deref(), Some("bad\u{FFFD}"));
        assert_eq!(get(b"b.jpg").results[0].response_json, None);
        let ok = &get(b"c.jpg").results[0];
        assert_eq!(ok.response_json.as_deref(), Some(r#"{"ok": true}"#));
        assert_eq!(ok.response_body.as_deref(), Some(r#"{"ok":true}"#));
    }

    /// The completion's plan, made once for a guessed batch on a ledger without statistics,
    /// finds each row by its id, so a batch costs in proportion to its rows: not each row
    /// paired with every completion (a `Join Filter` over the batch), nor every row of the
    /// scope read into a hash.
    #[test]
    fn the_completions_plan_finds_each_row_by_its_id() {
        let Some(url) = t() else { return };
        let mut s = daemon_session(&url);
        for chunk in many(20_000).chunks(5_000) {
            s.record(chunk, T0).unwrap();
        }
        let claimed = s.claim_due(T1, FAR, 256, ClaimOrder::OldestFile).unwrap();
        assert_eq!(claimed.len(), 256);
        let batch: Vec<Completion> = claimed
            .iter()
            .map(|c| completion(c, Disposition::Uploaded))
            .collect();
        assert!(s.complete(&batch, T2).unwrap().is_empty());
        let uploaded = s
            .counts()
            .unwrap()
            .into_iter()
            .find(|(_, st, _)| *st == crate::store::Status::Uploaded);
        assert_eq!(uploaded.map(|(_, _, n)| n), Some(256));
        // A generic plan does not depend on the values: NULL for each of the 26.
        let plan = s.explain_prepared_for_test("WITH u AS", &["NULL"; 26].join(", "));
        assert!(!plan.contains("Join Filter"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        // Nor through the unique key, whose `(scope, date)` prefix would read the scope.
        assert!(!plan.contains("files_scope_date_folder"), "{plan}");
    }

    /// A claimed row moved to another scope by hand is gone to this one: the row is left
    /// alone, no result is written on the other scope's row, and the id is answered as gone
    /// (a review found the result written on site-b's row when the scope was not checked).
    #[test]
    fn a_row_moved_to_another_scope_gets_no_result() {
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        a.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap();
        let c = a.claim_due(T1, FAR, 1, ClaimOrder::OldestFile).unwrap();
        a.exec_for_test("UPDATE files SET scope = 'site-b'")
            .unwrap();
        let gone = a
            .complete(&[completion(&c[0], Disposition::Uploaded)], T2)
            .unwrap();
        let mut b = pg_open(&url, "site-b", "cam-2", roots());
        let there = exported(&mut b);
        assert_eq!(there[0].file.status.as_str(), "uploading", "row untouched");
        assert_eq!((gone, there[0].results.len()), (vec![c[0].id], 0));
    }

    /// A takeover committed while a completion waits on the row's lock keeps the row the
    /// other host's: only the row still held is completed; each gets its attempt's result.
    #[test]
    fn a_takeover_racing_a_completion_keeps_the_takeover() {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        a.record(&[obs(b"a.jpg", 1, 1), obs(b"b.jpg", 1, 2)], T0)
            .unwrap();
        let c = a.claim_due(T1, FAR, 2, ClaimOrder::OldestFile).unwrap();
        let mut other = diesel::PgConnection::establish(&url).unwrap();
        other
            .batch_execute(&format!(
                "BEGIN; UPDATE files SET claimed_host = 'cam-2', claimed_pid = 2 WHERE id = {}",
                c[0].id
            ))
            .unwrap();
        let batch: Vec<Completion> = c
            .iter()
            .map(|x| completion(x, Disposition::Uploaded))
            .collect();
        let done = std::thread::spawn(move || {
            let gone = a.complete(&batch, T2).unwrap();
            (a, gone)
        });
        // The completion waits on the row's lock until the takeover commits.
        wait_for("the completion to wait on the row lock", || {
            let mut probe = diesel::PgConnection::establish(&url).unwrap();
            diesel::sql_query(
                "SELECT count(*) AS n FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%WITH u AS%'",
            )
            .get_result::<super::super::Count>(&mut probe)
            .is_ok_and(|r| r.n == 1)
        });
        other.batch_execute("COMMIT").unwrap();
        let (mut a, gone) = done.join().unwrap();
        assert!(gone.is_empty());
        let st: Vec<_> = exported(&mut a)
            .iter()
            .map(|e| (e.file.status.as_str().to_owned(), e.results.len()))
            .collect();
        assert_eq!(
            st,
            [("uploading".to_owned(), 1), ("uploaded".to_owned(), 1)],
            "the row taken over stays the other host's"
        );
    }
}
