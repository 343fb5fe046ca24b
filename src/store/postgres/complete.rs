//! The end of an attempt and of a row: `complete` records each attempt's result and, where
//! this process still holds the claim, the row's new status; each file keeps its latest
//! results (`trim_results`); `prune` deletes finished rows of old date folders.

use std::collections::HashSet;

use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};

use super::conn::Fail;
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

impl PgStore {
    /// Applies a batch of completions in one transaction, as SQLite does, and only where
    /// this process still holds the claim: a host whose claims were taken over (its lease
    /// ran out) must not overwrite the new owner's state. The attempt is recorded either way.
    /// The rows marked uploaded are added to this host's `UPLOADED_TOTAL` state row.
    pub(super) fn complete(&mut self, batch: &[Completion], now: Timestamp) -> Result<Vec<i64>> {
        let ctx = &self.ctx;
        self.link.with("saving upload results", |c| {
            c.transaction::<_, Fail, _>(|c| {
                let mut trimmed = Vec::new();
                let mut uploaded: i64 = 0;
                // Rows in id order, as every multi-row writer takes them: no lock cycle with
                // another host's transaction (stable: one file's completions keep their order).
                let mut ordered: Vec<&Completion> = batch.iter().collect();
                ordered.sort_by_key(|done| done.file_id);
                for done in ordered {
                    if let Some(outcome) = done.result.map(|r| r.as_str()) {
                        // A row pruned by another host since the claim has nowhere to go.
                        let n = sql_query(
                            "INSERT INTO upload_results(file_id, host, attempt, started_at,
                                 duration_ms, http_status, response_body, response_json, error, outcome)
                             SELECT $1, $2, $3, $4::timestamptz, $5, $6, $7, sega_try_jsonb($8), $9, $10
                             WHERE EXISTS (SELECT 1 FROM files WHERE id = $1 AND scope = $11)",
                        )
                        .bind::<BigInt, _>(done.file_id)
                        .bind::<Text, _>(&ctx.host)
                        .bind::<Integer, _>(i32::try_from(done.attempt).unwrap_or(i32::MAX))
                        .bind::<Text, _>(done.started_at)
                        .bind::<BigInt, _>(done.duration_ms)
                        .bind::<Nullable<Integer>, _>(done.http_status.map(i32::from))
                        .bind::<Nullable<Text>, _>(pg_opt(&done.response_body))
                        .bind::<Nullable<Text>, _>(jsonb_text(&done.response_json))
                        .bind::<Nullable<Text>, _>(pg_opt(&done.error))
                        .bind::<Text, _>(outcome)
                        .bind::<Text, _>(&ctx.scope)
                        .execute(c)?;
                        if n > 0 {
                            trimmed.push(done.file_id);
                        }
                    }
                    let changed = update_for(done, now, ctx).execute(c)?;
                    if done.disposition == Disposition::Uploaded {
                        uploaded += changed as i64;
                    }
                }
                if uploaded > 0 {
                    // A value edited by hand into something that is not a number counts as
                    // 0, rather than failing every completion after it.
                    sql_query(
                        "INSERT INTO state(scope, host, key, value, updated_at)
                         VALUES ($1, $2, $3, $4::text, now())
                         ON CONFLICT (scope, host, key) DO UPDATE
                             SET value = (CASE WHEN state.value ~ '^[0-9]{1,18}$'
                                               THEN state.value::bigint ELSE 0 END + $4)::text,
                                 updated_at = now()",
                    )
                    .bind::<Text, _>(&ctx.scope)
                    .bind::<Text, _>(&ctx.host)
                    .bind::<Text, _>(UPLOADED_TOTAL)
                    .bind::<BigInt, _>(uploaded)
                    .execute(c)?;
                }
                trimmed.sort_unstable();
                trimmed.dedup();
                trim_results(c, &trimmed)?;
                // Rows pruned (by any host) since their claim: nothing above touched them.
                let ids: Vec<i64> = batch.iter().map(|d| d.file_id).collect();
                let present: HashSet<i64> =
                    sql_query("SELECT id FROM files WHERE id = ANY($1) AND scope = $2")
                        .bind::<Array<BigInt>, _>(&ids)
                        .bind::<Text, _>(&ctx.scope)
                        .load::<Id>(c)?
                        .into_iter()
                        .map(|r| r.id)
                        .collect();
                Ok(ids.into_iter().filter(|id| !present.contains(id)).collect())
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

    /// The scope's greatest `date`, from the `files_date_folder` index.
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

/// The row update a completion makes, guarded so it only lands on the version this
/// process claimed and still holds.
fn update_for<'a>(
    done: &'a Completion,
    now: Timestamp,
    ctx: &'a Ctx,
) -> diesel::query_builder::BoxedSqlQuery<'a, Pg, diesel::query_builder::SqlQuery> {
    let guard = "WHERE id = $1 AND scope = $2 AND status = 'uploading' AND size = $3
                 AND mtime_ns = $4 AND claimed_host = $5 AND claimed_pid = $6";
    let set = match &done.disposition {
        Disposition::Uploaded => {
            "status = 'uploaded', uploaded_at = $7::timestamptz, next_attempt_at = NULL,
             last_error = NULL, incomplete_since = NULL"
        }
        Disposition::Retry { .. } => {
            "status = 'pending', next_attempt_at = $8::timestamptz, last_error = $9,
             attempts = attempts - $10"
        }
        Disposition::Failed => "status = 'failed', next_attempt_at = NULL, last_error = $8",
        Disposition::Skipped { .. } => {
            "status = 'skipped', next_attempt_at = NULL, last_error = $8, absent = $9"
        }
        Disposition::NotReady { .. } => {
            "status = 'pending', next_attempt_at = $8::timestamptz, attempts = attempts - 1,
             incomplete_since = $9::timestamptz, last_error = $10"
        }
        Disposition::Changed { .. } => {
            "status = 'pending', size = $8, mtime_ns = $9, attempts = 0,
             next_attempt_at = $10::timestamptz, last_error = NULL, uploaded_at = NULL,
             incomplete_since = NULL"
        }
    };
    let q = sql_query(format!(
        "UPDATE files SET {set}, updated_at = $7::timestamptz {guard}"
    ))
    .into_boxed::<Pg>()
    .bind::<BigInt, _>(done.file_id)
    .bind::<Text, _>(&ctx.scope)
    .bind::<BigInt, _>(done.version.size as i64)
    .bind::<BigInt, _>(done.version.mtime_ns)
    .bind::<Text, _>(&ctx.host)
    .bind::<Integer, _>(ctx.pid)
    .bind::<Text, _>(now);
    match &done.disposition {
        Disposition::Uploaded => q,
        Disposition::Retry { at, counted } => q
            .bind::<Text, _>(*at)
            .bind::<Nullable<Text>, _>(pg_opt(&done.error))
            .bind::<Integer, _>(if *counted { 0 } else { 1 }),
        Disposition::Failed => q.bind::<Nullable<Text>, _>(pg_opt(&done.error)),
        Disposition::Skipped { absent } => q
            .bind::<Nullable<Text>, _>(pg_opt(&done.error))
            .bind::<Bool, _>(*absent),
        Disposition::NotReady {
            at,
            incomplete_since,
        } => q
            .bind::<Text, _>(*at)
            .bind::<Nullable<Text>, _>(*incomplete_since)
            .bind::<Nullable<Text>, _>(pg_opt(&done.error)),
        Disposition::Changed { version, at } => q
            .bind::<BigInt, _>(version.size as i64)
            .bind::<BigInt, _>(version.mtime_ns)
            .bind::<Text, _>(*at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::tests::t;
    use crate::store::tests::{completion, exported, obs, pg_open, roots, FAR, T0, T1};
    use crate::store::ClaimOrder;
    use std::os::unix::ffi::OsStrExt;

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
}
