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
pub const SCHEMA_VERSION: i64 = 5;

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
    // 3: what the periodic work and `status` read costs what changed, not what waits (a
    // backlog of a million rows was counted every 10 s). Rows per (scope, folder, status)
    // are `file_counts` plus the `file_count_changes` not yet folded into it (see
    // `summary.rs`). Triggers append change rows in the transaction of each change,
    // whoever writes (a daemon, `retry`, `scan`, `migrate-db`, a hand edit): an append never
    // waits on another host, where a shared total row would serialise every host's writes
    // behind one row lock. The functions name their tables in the schema they are created
    // in, whatever the writing session's search_path. The triggers and the first count
    // follow this step (`STATEMENT_TRIGGERS`, `count_files`). `files_waiting`: the oldest
    // waiting row without a walk over the backlog. `files_pending_due` gains `id`, the
    // claim's tie-break: a probe's claim (longest waiting first) sorted every pending row
    // when many were due at the same time (a catch-up scan records them so), 1.4 s a probe
    // with a million. `upload_results_trouble`: the last error and the day's errors among
    // the failed attempts alone, however many succeeded.
    r#"
    CREATE TABLE file_counts(
        scope text NOT NULL,
        folder text NOT NULL,
        status text NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (scope, folder, status)
    );
    CREATE TABLE file_count_changes(
        scope text NOT NULL,
        folder text NOT NULL,
        status text NOT NULL,
        n bigint NOT NULL
    );
    CREATE INDEX file_count_changes_scope ON file_count_changes(scope);
    CREATE FUNCTION sega_count_files() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO file_count_changes(scope, folder, status, n)
            SELECT scope, folder, status, count(*) FROM new_rows GROUP BY scope, folder, status;
        ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO file_count_changes(scope, folder, status, n)
            SELECT scope, folder, status, -count(*) FROM old_rows GROUP BY scope, folder, status;
        ELSIF TG_OP = 'UPDATE' THEN
            INSERT INTO file_count_changes(scope, folder, status, n)
            SELECT scope, folder, status, sum(n) FROM (
                SELECT scope, folder, status, 1 AS n FROM new_rows
                UNION ALL
                SELECT scope, folder, status, -1 AS n FROM old_rows
            ) AS c
            GROUP BY scope, folder, status HAVING sum(n) <> 0;
        ELSE
            -- TRUNCATE: every scope's rows are gone.
            DELETE FROM file_counts;
            DELETE FROM file_count_changes;
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE FUNCTION sega_count_file_row() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO file_count_changes(scope, folder, status, n)
            VALUES (OLD.scope, OLD.folder, OLD.status, -1);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO file_count_changes(scope, folder, status, n)
            VALUES (NEW.scope, NEW.folder, NEW.status, 1);
        END IF;
        RETURN NULL;
    END
    $$;
    DO $$
    BEGIN
        EXECUTE format('ALTER FUNCTION sega_count_files() SET search_path = %I, pg_temp',
                       current_schema());
        EXECUTE format('ALTER FUNCTION sega_count_file_row() SET search_path = %I, pg_temp',
                       current_schema());
    END
    $$;
    CREATE INDEX files_waiting ON files(scope, detected_at, id)
        WHERE status IN ('pending', 'uploading');
    DROP INDEX files_pending_due;
    CREATE INDEX files_pending_due ON files(scope, next_attempt_at, id) WHERE status = 'pending';
    CREATE INDEX upload_results_trouble ON upload_results(started_at, id)
        WHERE outcome <> 'success';
    "#,
    // 4: `files_status` goes. A claim, a completion and a record each wrote an entry in it
    // (every status change is a new row version in every index), and nothing on the
    // daemon's path needs it: its reads have partial indexes and its counts `file_counts`.
    // Worse, where the statistics say few rows are pending (a new ledger before its first
    // ANALYZE, or one analyzed in its steady state before a backlog) the claim's generic
    // plan took it over `files_pending_age`, whose order the claim wants: every pending row
    // read and sorted for each claim, 7 ms a claim at 10,000 pending and 40 ms at 20,000,
    // a catch-up quadratic in its backlog. `files_failed`: `retry --failed` without a walk
    // over every row (rows enter it only when they fail). `upload_results_started` goes
    // too: every result wrote it, and every read by time is of failed attempts, which
    // `upload_results_trouble` holds. (IF EXISTS: a ledger where one was dropped by hand
    // still migrates.)
    r#"
    DROP INDEX IF EXISTS files_status;
    DROP INDEX IF EXISTS upload_results_started;
    CREATE INDEX files_failed ON files(scope, id) WHERE status = 'failed';
    "#,
    // 5: the unique key becomes `(scope, date, folder, filename)` and `files_date_folder`
    // goes: the key's first three columns are now that index's, so every read by date
    // (pruning, the newest date, a backfill's window, `list`) uses the key, and every new
    // row version (a record, a claim, a completion) writes one index entry fewer, three a
    // file (BENCHMARKS.md, "Claims of 16 rows"). Each lookup by a file's name names all
    // four columns, which either order serves, as it serves `ON CONFLICT` on them. The
    // new key is built before the old is dropped, in this transaction; the old one is
    // found by its columns, whatever its name. Building the key holds `files` against
    // every other session (about 3 s a million rows): a unique index on the new columns
    // built ahead (`CREATE UNIQUE INDEX CONCURRENTLY`, NEWS.Debian) becomes the key
    // instead, whatever its name.
    r#"
    DO $$
    DECLARE
        new_columns text;
        ready name;
        old name;
    BEGIN
        -- The columns' numbers as `pg_index.indkey` prints them.
        SELECT string_agg(a.attnum::text, ' ' ORDER BY c.i) INTO new_columns
        FROM unnest(ARRAY['scope', 'date', 'folder', 'filename']) WITH ORDINALITY AS c(n, i)
        JOIN pg_attribute a ON a.attrelid = 'files'::regclass AND a.attname = c.n;
        SELECT i.relname INTO ready
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        WHERE x.indrelid = 'files'::regclass AND x.indisunique AND x.indisvalid
          AND x.indpred IS NULL AND x.indexprs IS NULL AND x.indkey::text = new_columns
        ORDER BY i.relname LIMIT 1;
        IF ready IS NULL THEN
            ALTER TABLE files ADD CONSTRAINT files_scope_date_folder_filename_key
                UNIQUE (scope, date, folder, filename);
        ELSIF NOT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_class i ON i.oid = c.conindid
                          WHERE c.conrelid = 'files'::regclass AND i.relname = ready) THEN
            EXECUTE format('ALTER TABLE files ADD CONSTRAINT files_scope_date_folder_filename_key
                                UNIQUE USING INDEX %I', ready);
        END IF;
        FOR old IN
            SELECT conname FROM pg_constraint
            WHERE conrelid = 'files'::regclass AND contype = 'u'
              AND conkey = (SELECT array_agg(a.attnum ORDER BY c.i)
                            FROM unnest(ARRAY['scope', 'folder', 'date', 'filename'])
                                 WITH ORDINALITY AS c(n, i)
                            JOIN pg_attribute a
                              ON a.attrelid = 'files'::regclass AND a.attname = c.n)
        LOOP
            EXECUTE format('ALTER TABLE files DROP CONSTRAINT %I', old);
        END LOOP;
    END
    $$;
    DROP INDEX IF EXISTS files_date_folder;
    "#,
];

/// Schema 3's triggers on a server with transition tables (PostgreSQL 10 and later): one
/// change row per (scope, folder, status) that a statement touched, however many rows.
const STATEMENT_TRIGGERS: &str = "
    CREATE TRIGGER files_count_insert AFTER INSERT ON files
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE PROCEDURE sega_count_files();
    CREATE TRIGGER files_count_update AFTER UPDATE ON files
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE PROCEDURE sega_count_files();
    CREATE TRIGGER files_count_delete AFTER DELETE ON files
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE PROCEDURE sega_count_files();
    CREATE TRIGGER files_count_truncate AFTER TRUNCATE ON files
        FOR EACH STATEMENT EXECUTE PROCEDURE sega_count_files();";

/// The same on 9.5 and 9.6: a change row per row changed (more rows to fold, same counts).
const ROW_TRIGGERS: &str = "
    CREATE TRIGGER files_count_row AFTER INSERT OR DELETE ON files
        FOR EACH ROW EXECUTE PROCEDURE sega_count_file_row();
    CREATE TRIGGER files_count_row_update AFTER UPDATE OF scope, folder, status ON files
        FOR EACH ROW WHEN (OLD.scope IS DISTINCT FROM NEW.scope
                           OR OLD.folder IS DISTINCT FROM NEW.folder
                           OR OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE PROCEDURE sega_count_file_row();
    CREATE TRIGGER files_count_truncate AFTER TRUNCATE ON files
        FOR EACH STATEMENT EXECUTE PROCEDURE sega_count_files();";

/// The step after which the counters' triggers are created and the rows counted.
const COUNTED_FROM: usize = 3;

/// Schema 3's triggers, for this server, then the first count. The triggers come first:
/// creating one locks `files` against writers until the migration commits, so the count
/// misses no change made meanwhile and counts none twice.
fn count_files(c: &mut PgConnection) -> Q<()> {
    let server = sql_query("SELECT current_setting('server_version_num')::bigint AS n")
        .get_result::<Count>(c)?
        .n;
    c.batch_execute(if server >= 100_000 {
        STATEMENT_TRIGGERS
    } else {
        ROW_TRIGGERS
    })?;
    c.batch_execute(
        "INSERT INTO file_counts(scope, folder, status, n)
         SELECT scope, folder, status, count(*) FROM files GROUP BY scope, folder, status",
    )?;
    Ok(())
}

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
        if version < SCHEMA_VERSION {
            // A step reads or indexes every row once (schema 3 counts and indexes them):
            // longer than the session's statement limit on a large ledger. For this
            // transaction only; writers of other hosts wait for it (their lock limit fails
            // their statement, which they retry).
            c.batch_execute("SET LOCAL statement_timeout = 0")?;
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            c.batch_execute(step)?;
            if i + 1 == COUNTED_FROM {
                count_files(c)?;
            }
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
    use super::*;
    use crate::store::postgres::tests::{open_error, t, LEASE};
    use crate::store::tests::counts::assert_exact;
    use crate::store::tests::{obs, pg_open, pg_try_open, roots, FAR, T0, T1};
    use crate::store::ClaimOrder;

    /// A 9.5 or 9.6 server gets a change row per row changed instead of per statement: the
    /// same counts through every change (here on this server, the triggers swapped).
    #[test]
    fn row_triggers_as_on_older_servers_keep_the_counts_exact() {
        let Some(url) = t() else { return };
        let mut s = pg_open(&url, "site-a", "cam-1", roots());
        s.exec_for_test(&format!(
            "DROP TRIGGER files_count_insert ON files;
             DROP TRIGGER files_count_update ON files;
             DROP TRIGGER files_count_delete ON files;
             DROP TRIGGER files_count_truncate ON files;
             {ROW_TRIGGERS}"
        ))
        .unwrap();
        crate::store::tests::counts::counts_stay_exact_through_every_change(Box::new(s));
    }

    /// Schema 3 counts what an existing ledger holds once, at its migration, for every
    /// scope; the counts then follow every change.
    #[test]
    fn a_schema_2_ledger_is_counted_at_its_migration() {
        let Some(url) = t() else { return };
        let mut c = PgConnection::establish(&url).unwrap();
        for step in &MIGRATIONS[..2] {
            c.batch_execute(step).unwrap();
        }
        c.batch_execute(
            "INSERT INTO schema_version(version) VALUES (2);
             INSERT INTO files(scope, folder, date, filename, path, size, mtime_ns, status,
                 next_attempt_at, detected_at, uploaded_at, updated_at, recorded_by)
             SELECT CASE WHEN g % 5 = 0 THEN 'site-b' ELSE 'site-a' END,
                    CASE WHEN g % 2 = 0 THEN 'Sega_1' ELSE 'Sega_2' END, '2026-11-26',
                    convert_to(g || '.jpg', 'UTF8'),
                    convert_to('/data/Sega_1/2026-11-26/' || g || '.jpg', 'UTF8'), 10, g,
                    (ARRAY['pending', 'uploading', 'uploaded', 'failed', 'skipped', 'held'])
                        [g % 6 + 1],
                    '2026-11-26T10:00:00Z', '2026-11-26T10:00:00Z', '2026-11-26T10:00:00Z',
                    '2026-11-26T10:00:00Z', 'h'
             FROM generate_series(0, 59) AS g;",
        )
        .unwrap();
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        assert_exact(&mut a, "the migration");
        let mut b = pg_open(&url, "site-b", "cam-1", roots());
        assert_exact(&mut b, "the migration (another scope)");
        assert_eq!(
            a.counts().unwrap().iter().map(|(_, _, n)| n).sum::<i64>(),
            48
        );
        a.record(&[crate::store::tests::obs(b"new.jpg", 1, 1)], T0)
            .unwrap();
        a.claim_due(T1, FAR, 10, ClaimOrder::OldestFile).unwrap();
        assert_exact(&mut a, "a record and a claim after the migration");
        assert_exact(&mut b, "another scope's changes");
    }

    /// A schema 4 ledger holding a.jpg and b.jpg of site-a under schema 4's key and
    /// `files_date_folder`, as an older daemon left it; `then` run on it before the session
    /// is handed back (each statement on its own: no transaction around them).
    fn schema_4_ledger(url: &str, then: &[&str]) -> PgConnection {
        let mut c = PgConnection::establish(url).unwrap();
        for (i, step) in MIGRATIONS[..4].iter().enumerate() {
            c.batch_execute(step).unwrap();
            if i + 1 == COUNTED_FROM {
                assert!(count_files(&mut c).is_ok());
            }
        }
        c.batch_execute("INSERT INTO schema_version(version) VALUES (4)")
            .unwrap();
        let mut a = pg_open(url, "site-a", "cam-1", roots());
        a.record(&[obs(b"a.jpg", 1, 1), obs(b"b.jpg", 1, 2)], T0)
            .unwrap();
        drop(a);
        c.batch_execute(
            "ALTER TABLE files DROP CONSTRAINT files_scope_date_folder_filename_key;
             ALTER TABLE files ADD UNIQUE (scope, folder, date, filename);
             CREATE INDEX files_date_folder ON files(scope, date, folder);
             UPDATE schema_version SET version = 4;",
        )
        .unwrap();
        for sql in then {
            c.batch_execute(sql).unwrap();
        }
        c
    }

    /// `files`' unique indexes and `files_date_folder`, as `name: definition`.
    fn keys(c: &mut PgConnection) -> Vec<String> {
        sql_query(
            "SELECT indexname || ': ' || indexdef AS v FROM pg_indexes
             WHERE tablename = 'files'
               AND (indexdef LIKE '%UNIQUE%' OR indexname = 'files_date_folder')
             ORDER BY indexname",
        )
        .load::<crate::store::postgres::OptText>(c)
        .unwrap()
        .into_iter()
        .filter_map(|r| r.v)
        .collect()
    }

    /// Whether `files` has a constraint of that name.
    fn has_constraint(c: &mut PgConnection, name: &str) -> bool {
        sql_query(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint
                            WHERE conrelid = 'files'::regclass AND conname = $1) AS b",
        )
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<Flag>(c)
        .unwrap()
        .b
    }

    /// `files` has its primary key and the new key alone, a constraint of that name,
    /// `files_date_folder` gone.
    fn assert_keyed_by_date_first(c: &mut PgConnection, why: &str) -> Vec<String> {
        let keys = keys(c);
        assert_eq!(keys.len(), 2, "{why}: {keys:?}");
        assert!(
            keys[1].starts_with("files_scope_date_folder_filename_key: ")
                && keys[1].ends_with("(scope, date, folder, filename)"),
            "{why}: {keys:?}"
        );
        assert!(
            has_constraint(c, "files_scope_date_folder_filename_key"),
            "{why}"
        );
        keys
    }

    /// Schema 5 keys a row by `(scope, date, folder, filename)` and drops
    /// `files_date_folder`: a schema 4 ledger keeps its rows and their counts, a file
    /// recorded again is still the row it was, and the key still refuses a second row for
    /// one file.
    #[test]
    fn a_schema_4_ledger_is_keyed_by_date_first_at_its_migration() {
        let Some(url) = t() else { return };
        let mut c = schema_4_ledger(&url, &[]);
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        let keys = assert_keyed_by_date_first(&mut c, "the migration");
        assert!(keys[0].starts_with("files_pkey: "), "{keys:?}");

        assert_exact(&mut a, "the migration");
        let stats = a
            .record(&[obs(b"a.jpg", 1, 1), obs(b"c.jpg", 1, 3)], T1)
            .unwrap();
        assert_eq!(stats.new, 1, "a.jpg is the row it was: {stats:?}");
        assert_exact(&mut a, "a record after the migration");
        let twice = c.batch_execute(
            "INSERT INTO files(scope, folder, date, filename, path, size, mtime_ns, status,
                 detected_at, updated_at, recorded_by)
             SELECT scope, folder, date, filename, path, size, mtime_ns, status,
                 detected_at, updated_at, 'x' FROM files WHERE filename = 'a.jpg'::bytea",
        );
        let e = twice.expect_err("a second row for a.jpg").to_string();
        assert!(e.contains("files_scope_date_folder_filename_key"), "{e}");
    }

    /// A review found the migration failing at every start where the operator had built
    /// the new key ahead under its name (to shorten the lock): a unique index on the new
    /// columns built ahead, whatever its name, becomes the key; the old key goes whatever
    /// its name.
    #[test]
    fn a_key_built_ahead_becomes_the_new_key_and_a_renamed_old_key_goes() {
        for ahead in ["files_scope_date_folder_filename_key", "built_by_hand"] {
            let Some(url) = t() else { return };
            let build = format!(
                "CREATE UNIQUE INDEX CONCURRENTLY {ahead} ON files (scope, date, folder, filename)"
            );
            let mut c = schema_4_ledger(
                &url,
                &[
                    "ALTER TABLE files RENAME CONSTRAINT files_scope_folder_date_filename_key
                         TO old_by_hand",
                    &build,
                ],
            );
            let mut a = pg_open(&url, "site-a", "cam-1", roots());
            assert_keyed_by_date_first(&mut c, &format!("built ahead as {ahead}"));
            assert!(!has_constraint(&mut c, "old_by_hand"));
            let stats = a.record(&[obs(b"a.jpg", 1, 1)], T1).unwrap();
            assert_eq!(stats.new, 0, "built ahead as {ahead}: {stats:?}");
        }
    }

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
