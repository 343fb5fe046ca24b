//! The shared-ledger scenario's PostgreSQL: the preflight that names what is missing
//! ([`Skip`]), the throwaway clusters of the harness ([`sega_testsrv::pg`]; fast, and in a
//! full run durable too), and the queries the scenario makes on them (psql, the schema, the
//! host split, the server's CPU time, the statements the daemons sent).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sega_testsrv::pg as harness;
use serde_json::json;

use super::{skip, Split};
use crate::ctx::{Ctx, Scene, FOLDERS};

/// The newest PostgreSQL's server binaries, root, the postgres user, runuser, and a daemon
/// that can use `database.url`: or a [`Skip`] naming what is missing.
pub(crate) fn preflight(ctx: &Ctx, scene: &Scene) -> io::Result<()> {
    // The daemon first: a build without the feature refuses database.url in its config check.
    let probe = scene.dir.join("probe.json");
    let cfg = json!({
        "watch": {"root": scene.root, "folders": FOLDERS},
        "upload": {"url": ctx.url()},
        "database": {"path": scene.dir.join("probe.db"), "url": "host=/nonexistent dbname=probe"},
    });
    fs::write(&probe, format!("{cfg:#}\n"))?;
    let out = Command::new(&ctx.daemon)
        .arg("-c")
        .arg(&probe)
        .args(["check-config", "--offline"])
        .env_remove("SEGA_CONFIG")
        .stdin(Stdio::null())
        .output()?;
    let text = output_text(&out);
    if text.contains("no PostgreSQL support") {
        return Err(skip(format!(
            "{} has no PostgreSQL support: build it with --features postgres \
             (make bench does)",
            ctx.daemon.display()
        )));
    }
    if !text.contains("PostgreSQL") {
        return Err(io::Error::other(format!(
            "`{} check-config --offline` with database.url set did not mention PostgreSQL \
             (exit {:?}): {}",
            ctx.daemon.display(),
            out.status.code(),
            text.trim()
        )));
    }
    if harness::server_bin().is_none() {
        return Err(skip(
            "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl, \
             postgres, psql): apt-get install postgresql",
        ));
    }
    if !harness::is_root() {
        return Err(skip(
            "starting a throwaway PostgreSQL cluster needs root (runuser -u postgres)",
        ));
    }
    let has_user = Command::new("id")
        .args(["-u", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_user {
        return Err(skip(
            "no `postgres` user (the postgresql package creates it)",
        ));
    }
    if crate::sys::which("runuser").is_none() {
        return Err(skip("runuser not found (util-linux)"));
    }
    Ok(())
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum ClusterKind {
    /// fsync=off, synchronous_commit=off, full_page_writes=off.
    Fast,
    /// The server's defaults.
    Durable,
}

/// One throwaway cluster of the harness, and the scenario's queries on it.
pub(crate) struct Cluster {
    pub(super) kind: ClusterKind,
    /// Its socket directory (`dir`), with `data/` and `log` inside.
    pub(super) pg: harness::Cluster,
    /// `pg_stat_statements` is loaded: the statements of a run can be counted.
    statements: bool,
}

/// What the daemons sent to one database during a run, from `pg_stat_statements`.
pub(super) struct Statements {
    /// Statements executed (each a round trip, except the few sent together in one
    /// `batch_execute`: the session's `SET`s at connect).
    pub(super) calls: i64,
    /// The costliest, by the server's execution time: (calls, total ms, the statement's
    /// start).
    pub(super) top: Vec<(i64, f64, String)>,
}

/// The throwaway clusters (short directories under /tmp: a unix socket path must stay under
/// 108 bytes). Dropping it stops every cluster, copies the server logs to the scenario
/// directory, and deletes the clusters.
pub(crate) struct Pg {
    pub(crate) clusters: Vec<Cluster>,
    logs_to: PathBuf,
}

impl Pg {
    pub(crate) fn start(kinds: &[ClusterKind], logs_to: &Path) -> io::Result<Pg> {
        let mut pg = Pg {
            clusters: Vec::new(),
            logs_to: logs_to.to_path_buf(),
        };
        for kind in kinds {
            // A cluster that fails to start removes itself; the ones before it go with `pg`.
            let c = harness::Cluster::builder()
                .durable(*kind == ClusterKind::Durable)
                .start()
                .map_err(io::Error::other)?;
            let mut c = Cluster {
                kind: *kind,
                pg: c,
                statements: false,
            };
            c.statements = c.load_pg_stat_statements()?;
            pg.clusters.push(c);
        }
        Ok(pg)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        for (i, c) in self.clusters.iter().enumerate() {
            c.pg.stop_now();
            let _ = fs::copy(
                c.pg.dir.join("log"),
                self.logs_to.join(format!("postgres-{i}.log")),
            );
        }
        // Then each harness::Cluster deletes its directory.
    }
}

impl Cluster {
    pub(crate) fn conninfo(&self, db: &str) -> String {
        self.pg.conninfo(db)
    }

    /// `psql -At` as the postgres role over the socket: the output, trimmed.
    pub(crate) fn psql(&self, db: &str, sql: &str) -> io::Result<String> {
        self.pg
            .try_psql(db, sql)
            .map(|s| s.trim().to_string())
            .map_err(|e| io::Error::other(format!("psql {sql:?}: {}", e.trim())))
    }

    /// `SELECT text, count` rows.
    pub(crate) fn pairs(&self, db: &str, sql: &str) -> io::Result<Vec<(String, i64)>> {
        let out = self.psql(db, sql)?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (a, b) = l.rsplit_once('|')?;
                Some((a.to_string(), b.trim().parse().ok()?))
            })
            .collect())
    }

    /// The schema holding `table` (the daemon may not use `public`), quoted.
    pub(crate) fn table_schema(&self, db: &str, table: &str) -> io::Result<Option<String>> {
        let s = self.psql(
            db,
            &format!(
                "SELECT quote_ident(table_schema) FROM information_schema.tables \
                 WHERE table_name = '{table}' \
                 AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 LIMIT 1"
            ),
        )?;
        Ok((!s.is_empty()).then_some(s))
    }

    fn has_column(&self, db: &str, schema: &str, table: &str, column: &str) -> io::Result<bool> {
        let s = self.psql(
            db,
            &format!(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = '{table}' \
                 AND column_name = '{column}' AND quote_ident(table_schema) = '{}'",
                schema.replace('\'', "''")
            ),
        )?;
        Ok(s != "0")
    }

    /// Files per host: `files.claimed_host` (who held the claim that uploaded each row), or
    /// the hosts of the successful `upload_results`. When both are there they must agree.
    pub(super) fn host_split(&self, db: &str, schema: &str) -> io::Result<Option<(String, Split)>> {
        let results = self.results_split(db, schema)?;
        if self.has_column(db, schema, "files", "claimed_host")? {
            let rows = self.pairs(
                db,
                &format!(
                    "SELECT coalesce(claimed_host, '(none)'), count(*) FROM {schema}.files \
                     GROUP BY 1 ORDER BY 1"
                ),
            )?;
            if let Some(r) = results.filter(|r| *r != rows) {
                return Err(io::Error::other(format!(
                    "host split: files.claimed_host says {rows:?}, upload_results.host {r:?}"
                )));
            }
            return Ok(Some(("files.claimed_host".into(), rows)));
        }
        Ok(results.map(|r| ("upload_results.host".into(), r)))
    }

    /// Files per host among the successful `upload_results`.
    fn results_split(&self, db: &str, schema: &str) -> io::Result<Option<Split>> {
        if self.has_column(db, schema, "upload_results", "host")? {
            let success = if self.has_column(db, schema, "upload_results", "outcome")? {
                "WHERE outcome = 'success'"
            } else {
                ""
            };
            let rows = self.pairs(
                db,
                &format!(
                    "SELECT coalesce(host, '(none)'), count(DISTINCT file_id) \
                     FROM {schema}.upload_results {success} GROUP BY 1 ORDER BY 1"
                ),
            )?;
            return Ok(Some(rows));
        }
        Ok(None)
    }

    /// Loads `pg_stat_statements` (a restart: it must be preloaded) when the server has it
    /// (the postgresql package ships it); false when it does not, and the statements are
    /// not counted.
    fn load_pg_stat_statements(&self) -> io::Result<bool> {
        let available = self.psql(
            "postgres",
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'",
        )?;
        if available != "1" {
            return Ok(false);
        }
        self.psql(
            "postgres",
            "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
        )?;
        self.pg.stop();
        self.pg.try_start().map_err(io::Error::other)?;
        self.psql(
            "postgres",
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        )?;
        Ok(true)
    }

    /// Forgets the statements counted so far (every database's).
    pub(super) fn reset_statements(&self) -> io::Result<()> {
        if self.statements {
            self.psql("postgres", "SELECT pg_stat_statements_reset()")?;
        }
        Ok(())
    }

    /// The statements run in database `db` since [`Cluster::reset_statements`]: how many,
    /// and the costliest.
    pub(super) fn statements(&self, db: &str) -> io::Result<Option<Statements>> {
        if !self.statements {
            return Ok(None);
        }
        let of_db = format!(
            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = '{}'",
            db.replace('\'', "''")
        );
        let calls = self
            .psql(
                "postgres",
                &format!("SELECT coalesce(sum(calls), 0) {of_db}"),
            )?
            .parse()
            .map_err(|e| io::Error::other(format!("pg_stat_statements: {e}")))?;
        let rows = self.psql(
            "postgres",
            &format!(
                "SELECT calls, round(total_exec_time::numeric, 1), \
                 regexp_replace(left(query, 90), '\\s+', ' ', 'g') {of_db} \
                 ORDER BY total_exec_time DESC LIMIT 8"
            ),
        )?;
        let top = rows
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, '|');
                Some((
                    f.next()?.parse().ok()?,
                    f.next()?.parse().ok()?,
                    f.next()?.to_string(),
                ))
            })
            .collect();
        Ok(Some(Statements { calls, top }))
    }

    /// CPU time of the whole cluster so far, ns: the postmaster, its live children, and
    /// the children it has reaped (backends that ended).
    pub(crate) fn cpu_ns(&self) -> u64 {
        self.cpu_by_process().iter().map(|(_, _, ns)| ns).sum()
    }

    /// CPU time so far per process of the cluster, ns, keyed by pid with its title
    /// (`postgres: checkpointer`, a backend's `postgres: user db [local] idle`…): the
    /// postmaster's entry holds its own time and that of the children it has reaped.
    pub(crate) fn cpu_by_process(&self) -> Vec<(i32, String, u64)> {
        let pid_file =
            fs::read_to_string(self.pg.dir.join("data/postmaster.pid")).unwrap_or_default();
        let Some(pm) = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return Vec::new();
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let ns = |ticks: u64| ticks * 1_000_000_000 / hz;
        let mut out = vec![(
            pm,
            "postmaster, and its children that ended".to_string(),
            ns(proc_ticks(pm, true).map_or(0, |(own, _)| own)),
        )];
        if let Ok(entries) = fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if let Some((own, ppid)) = proc_ticks(pid, false) {
                    if ppid == pm {
                        let title = fs::read(format!("/proc/{pid}/cmdline"))
                            .map(|b| {
                                String::from_utf8_lossy(&b)
                                    .trim_end_matches('\0')
                                    .to_string()
                            })
                            .unwrap_or_default();
                        out.push((pid, title, ns(own)));
                    }
                }
            }
        }
        out
    }
}

/// A process's utime + stime (with `reaped`, plus cutime + cstime) in ticks, and its ppid.
fn proc_ticks(pid: i32, reaped: bool) -> Option<(u64, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3) is index 0, ppid (4) 1, utime (14) 11 … cstime (17) 14.
    let ppid = f.get(1)?.parse().ok()?;
    let last = if reaped { 14 } else { 12 };
    let mut t = 0u64;
    for i in 11..=last {
        t += f.get(i)?.parse::<u64>().ok()?;
    }
    Some((t, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts and removes a throwaway cluster, and reads a host split through psql (root and
    /// the PostgreSQL server binaries needed: `cargo test -p sega-bench -- --ignored`).
    #[test]
    #[ignore]
    fn throwaway_cluster() {
        let logs = std::env::temp_dir().join(format!("sgb-test-{}", std::process::id()));
        fs::create_dir_all(&logs).unwrap();
        let dir;
        {
            let pg = Pg::start(&[ClusterKind::Fast], &logs).unwrap();
            let c = &pg.clusters[0];
            dir = c.pg.dir.clone();
            c.psql("postgres", "CREATE DATABASE bench_t").unwrap();
            c.psql(
                "bench_t",
                "CREATE TABLE files (id int, status text, claimed_host text); \
                 INSERT INTO files VALUES (1, 'uploaded', 'bench-a'), (2, 'uploaded', 'bench-b'), \
                 (3, 'uploaded', 'bench-a')",
            )
            .unwrap();
            let schema = c.table_schema("bench_t", "files").unwrap().unwrap();
            assert_eq!(schema, "public");
            let (src, split) = c.host_split("bench_t", &schema).unwrap().unwrap();
            assert_eq!(src, "files.claimed_host");
            assert_eq!(split, vec![("bench-a".into(), 2), ("bench-b".into(), 1)]);
            assert!(c.cpu_ns() > 0);
            c.psql("postgres", "DROP DATABASE bench_t WITH (FORCE)")
                .unwrap();
        }
        assert!(!dir.exists());
        assert!(logs.join("postgres-0.log").exists());
        fs::remove_dir_all(&logs).unwrap();
    }
}
