//! The tables and their migrations, applied at open under a transaction-level advisory
//! lock; a database with another program's tables, or a newer schema, is refused.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Integer};

use super::conn::{Fail, Q};
use super::{Count, Flag};
use crate::error::LedgerState;

/// The schema version this build writes (`schema_version.version`).
pub const SCHEMA_VERSION: i64 = 2;

/// `pg_advisory_xact_lock` key that serialises migrations: two hosts starting together
/// against a fresh database must not both create the tables.
const MIGRATION_LOCK: i64 = 0x5365_6761_4d69_6772; // "SegaMigr"

const MIGRATIONS: &[&str] = &[
    // 1: DESIGN §4's tables keyed by (scope, folder, date, filename) instead of the path, plus
    // who recorded and who claims a row, per-host state, and a jsonb cast that yields NULL
    // instead of failing a whole batch on a body the server refuses.
    r#"
    CREATE TABLE schema_version(version integer NOT NULL);
    CREATE TABLE files(
        id bigserial PRIMARY KEY,
        scope text NOT NULL,
        folder text NOT NULL,
        date text NOT NULL,
        filename bytea NOT NULL,
        path bytea NOT NULL,
        size bigint NOT NULL,
        mtime_ns bigint NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz,
        last_error text,
        detected_at timestamptz NOT NULL,
        uploaded_at timestamptz,
        updated_at timestamptz NOT NULL,
        incomplete_since timestamptz,
        recorded_by text NOT NULL,
        claimed_host text,
        claimed_pid integer,
        claimed_at timestamptz,
        UNIQUE (scope, folder, date, filename)
    );
    CREATE INDEX files_pending_age ON files(scope, mtime_ns, id) WHERE status = 'pending';
    CREATE INDEX files_pending_due ON files(scope, next_attempt_at) WHERE status = 'pending';
    CREATE INDEX files_claimed ON files(scope, claimed_host) WHERE status = 'uploading';
    CREATE INDEX files_uploaded ON files(scope, uploaded_at) WHERE status = 'uploaded';
    CREATE INDEX files_status ON files(scope, status);
    CREATE INDEX files_date_folder ON files(scope, date, folder);
    CREATE TABLE upload_results(
        id bigserial PRIMARY KEY,
        file_id bigint NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        host text,
        attempt integer NOT NULL,
        started_at timestamptz NOT NULL,
        duration_ms bigint NOT NULL,
        http_status integer,
        response_body text,
        response_json jsonb,
        error text,
        outcome text NOT NULL
    );
    CREATE INDEX upload_results_file ON upload_results(file_id, id);
    CREATE INDEX upload_results_started ON upload_results(started_at);
    CREATE TABLE state(
        scope text NOT NULL,
        host text NOT NULL,
        key text NOT NULL,
        value text NOT NULL,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (scope, host, key)
    );
    CREATE FUNCTION sega_try_jsonb(t text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN
        RETURN t::jsonb;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END
    $$;
    "#,
    // 2: `absent`: a skipped row whose file was not there as a candidate (vanished, a
    // symlink, out of the config) is sent after all when it is seen again. (Ids come from a
    // sequence, which never hands one out twice.)
    r#"
    ALTER TABLE files ADD COLUMN absent boolean NOT NULL DEFAULT false;
    UPDATE files SET absent = true
     WHERE status = 'skipped'
       AND (last_error LIKE 'vanished%' OR last_error LIKE 'not a regular file%');
    "#,
];

pub(super) fn migrate(c: &mut PgConnection) -> Q<()> {
    c.transaction::<_, Fail, _>(|c| {
        sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<BigInt, _>(MIGRATION_LOCK)
            .execute(c)?;
        let ours = sql_query("SELECT to_regclass('schema_version') IS NOT NULL AS b")
            .get_result::<Flag>(c)?
            .b;
        let version = if ours {
            sql_query("SELECT coalesce(max(version), 0)::bigint AS n FROM schema_version")
                .get_result::<Count>(c)?
                .n
        } else {
            // An empty database is ours to initialise; one with someone else's `files` is
            // not: refusing beats mixing two programs' data.
            let foreign = sql_query("SELECT to_regclass('files') IS NOT NULL AS b")
                .get_result::<Flag>(c)?
                .b;
            if foreign {
                return Err(Fail::Refused(
                    LedgerState::Foreign,
                    "has a `files` table but no sega-uploader schema version: not our database"
                        .into(),
                ));
            }
            0
        };
        if version > SCHEMA_VERSION {
            return Err(Fail::Refused(
                LedgerState::Newer,
                format!(
                    "has schema version {version}, newer than this sega-uploader understands \
                 ({SCHEMA_VERSION}): upgrade sega-uploader on this host instead of downgrading \
                 the database"
                ),
            ));
        }
        for step in MIGRATIONS.iter().skip(version as usize) {
            c.batch_execute(step)?;
        }
        if version != SCHEMA_VERSION {
            sql_query("DELETE FROM schema_version").execute(c)?;
            sql_query("INSERT INTO schema_version(version) VALUES ($1)")
                .bind::<Integer, _>(SCHEMA_VERSION as i32)
                .execute(c)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use crate::store::postgres::tests::{open_error, t, LEASE};
    use crate::store::tests::{pg_open, pg_try_open, roots};

    #[test]
    fn opening_migrates_once_and_refuses_foreign_or_newer_schemas() {
        let Some(url) = t() else { return };
        let opened: Vec<_> = (0..3)
            .map(|i| {
                let url = url.clone();
                std::thread::spawn(move || {
                    pg_try_open(&url, "s", &format!("h{i}"), roots(), LEASE).map(|_| ())
                })
            })
            .collect();
        for o in opened {
            o.join().unwrap().unwrap();
        }
        let mut s = pg_open(&url, "s", "h", roots());
        s.exec_for_test("UPDATE schema_version SET version = 99")
            .unwrap();
        let e = open_error(&url);
        assert!(e.contains("newer than this sega-uploader"), "{e}");

        let Some(url) = t() else { return };
        let mut other = pg_open(&url, "s", "h", roots());
        other
            .exec_for_test("DROP TABLE schema_version CASCADE")
            .unwrap();
        let e = open_error(&url);
        assert!(e.contains("not our database"), "{e}");
    }
}
