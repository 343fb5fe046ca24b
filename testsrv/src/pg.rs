//! Throwaway PostgreSQL clusters for sega-uploader's tests and benchmarks: the store's unit
//! tests, the integration tests and `sega-bench`'s shared-ledger scenario.
//!
//! One shared cluster per process ([`Cluster::shared`], started on first use, stopped by a
//! detached watcher once the process is gone) with a fresh database per test
//! ([`Pg::create_database`], [`database`]), plus private clusters ([`Cluster::private`],
//! [`Cluster::builder`]) that a test may stop and start, stopped and removed on drop. Each
//! cluster lives in a short directory under /tmp (the Unix socket's path must fit in
//! `sun_path`), listens on its Unix socket only (never TCP) and trusts every local user. The
//! directory is world-traversable (0755) so a daemon run as `nobody` can reach the socket.
//! By default a cluster runs with fsync, synchronous_commit and full_page_writes off (tests
//! need speed, not durability); [`Builder::durable`] keeps the server's defaults.
//!
//! As root, `initdb`/`pg_ctl` run through `runuser -u postgres` (the server refuses to run
//! as root); as anyone else, directly, as that user.
//!
//! Without the server binaries the PostgreSQL tests skip themselves with a note
//! ([`available`], [`database`]), except under `CI=true`, where that is a failure.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use serde_json::Value;

/// The newest `/usr/lib/postgresql/<version>/bin` that has the server binaries (initdb,
/// pg_ctl, postgres, psql).
pub fn server_bin() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| {
                // "16", or "9.6" for the old ones.
                let version: Vec<u32> = e
                    .file_name()
                    .to_str()?
                    .split('.')
                    .map(|p| p.parse().ok())
                    .collect::<Option<_>>()?;
                let bin = e.path().join("bin");
                ["initdb", "pg_ctl", "postgres", "psql"]
                    .iter()
                    .all(|b| bin.join(b).is_file())
                    .then_some((version, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, b)| b)
    })
    .clone()
}

/// Whether this is a CI run (`CI=true`), where a PostgreSQL test must never skip itself.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether the PostgreSQL tests can run here. Under `CI=true` a missing server is a failure
/// (a panic: the suite must not pass by skipping); elsewhere the caller skips, and this says
/// so on stderr.
pub fn available() -> bool {
    if server_bin().is_some() {
        return true;
    }
    if ci() {
        panic!(
            "CI=true but no PostgreSQL server binaries under /usr/lib/postgresql/*/bin \
             (initdb, pg_ctl, postgres, psql): install them (apt-get install -y postgresql)"
        );
    }
    eprintln!(
        "skipping PostgreSQL variant: no server binaries under /usr/lib/postgresql/*/bin \
         (apt-get install -y postgresql)"
    );
    false
}

/// A conninfo for a new, empty database on the process's shared cluster, or None when
/// PostgreSQL cannot run here (a note on stderr; under `CI=true` a panic instead).
pub fn database() -> Option<String> {
    if !available() {
        return None;
    }
    let cluster = match Cluster::try_shared() {
        Ok(c) => c,
        Err(why) if ci() => panic!("PostgreSQL tests cannot run in CI: {why}"),
        Err(why) => {
            eprintln!("skipping PostgreSQL variant: {why}");
            return None;
        }
    };
    Some(cluster.conninfo(&cluster.create_database()))
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A server binary, run as `postgres` when we are root (the server refuses to run as root).
fn server_cmd(bin: &Path, tool: &str) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    c.stdin(Stdio::null());
    c
}

/// Runs `c`; its stdout, or an error with its status and output.
fn run(mut c: Command, what: &str) -> Result<String, String> {
    let o = c.output().map_err(|e| format!("{what}: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// A handle on one cluster: where it is and how to talk to it (cheap to clone, and valid
/// as long as its [`Cluster`] lives).
#[derive(Clone, Debug)]
pub struct Pg {
    /// The cluster's directory: also its socket directory (the `host=` of a conninfo).
    /// The server's data is in `data/`, its log in `log`.
    pub dir: PathBuf,
    bin: PathBuf,
    durable: bool,
}

/// How to start a cluster of one's own: [`Cluster::builder`].
#[derive(Clone, Debug, Default)]
pub struct Builder {
    durable: bool,
}

impl Builder {
    /// Keep the server's defaults (fsync, synchronous_commit, full_page_writes on; the
    /// default max_connections) instead of turning durability off for speed.
    pub fn durable(mut self, durable: bool) -> Builder {
        self.durable = durable;
        self
    }

    /// Creates and starts the cluster: a private one, stopped and removed on drop (and by
    /// a watcher when this process ends first). On failure whatever was made is removed.
    pub fn start(self) -> Result<Cluster, String> {
        Cluster::create(true, self.durable)
    }
}

/// One throwaway cluster; derefs to its [`Pg`] handle.
pub struct Cluster {
    pg: Pg,
    /// Private clusters are stopped and removed on drop; the shared one by its watcher.
    private: bool,
}

impl std::ops::Deref for Cluster {
    type Target = Pg;
    fn deref(&self) -> &Pg {
        &self.pg
    }
}

static CLUSTERS: AtomicU32 = AtomicU32::new(0);
static DATABASES: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    /// A builder for a private cluster with other settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A new cluster for one test, which may stop and start it. Stopped and removed on
    /// drop. Panics when it cannot start (check [`available`] first).
    pub fn private() -> Cluster {
        Cluster::builder()
            .start()
            .unwrap_or_else(|e| panic!("starting a PostgreSQL cluster: {e}"))
    }

    /// The process's shared cluster (started on first use). Panics when it cannot start
    /// (check [`available`] first).
    pub fn shared() -> &'static Cluster {
        Cluster::try_shared().unwrap_or_else(|e| panic!("starting a PostgreSQL cluster: {e}"))
    }

    /// The process's shared cluster (started on first use), or why it could not start.
    pub fn try_shared() -> Result<&'static Cluster, String> {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Cluster::create(false, false))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A handle on this cluster.
    pub fn handle(&self) -> Pg {
        self.pg.clone()
    }

    fn create(private: bool, durable: bool) -> Result<Cluster, String> {
        let bin = server_bin().ok_or(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin \
             (initdb, pg_ctl, postgres, psql): apt-get install -y postgresql",
        )?;
        // Short: the socket path (dir + "/.s.PGSQL.5432") must fit in sun_path (108 bytes).
        let dir = PathBuf::from(format!(
            "/tmp/sgpg-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        ));
        assert!(dir.as_os_str().len() + "/.s.PGSQL.5432".len() < 100);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // Registered now, so that whatever fails next is still stopped and removed.
        let cluster = Cluster {
            pg: Pg { dir, bin, durable },
            private,
        };
        // 0755: the server (postgres) owns it; the tests' user (or `nobody`) must reach the
        // socket.
        std::fs::set_permissions(&cluster.dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", cluster.dir.display()))?;
        if is_root() {
            let mut c = Command::new("chown");
            c.arg("postgres:").arg(&cluster.dir).stdin(Stdio::null());
            run(c, "chown postgres")?;
        }
        // The watcher first: whatever happens next, the server and its directory go away
        // with this process.
        cluster.spawn_watcher()?;
        let mut c = server_cmd(&cluster.bin, "initdb");
        c.arg("-D").arg(cluster.dir.join("data")).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        run(c, "initdb")?;
        cluster.try_start()?;
        Ok(cluster)
    }

    /// A detached shell that waits for this process to end, then stops the server and
    /// removes the directory. Its own process group, so a signal to the test run's group
    /// does not take it down before it cleans up.
    fn spawn_watcher(&self) -> Result<(), String> {
        let pg_ctl = self.bin.join("pg_ctl");
        let runuser = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {runuser}'{pg_ctl}' -D '{dir}/data' -m immediate stop >/dev/null 2>&1; \
             rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            dir = self.dir.display()
        );
        // Never waited for: it outlives this process on purpose (it waits for our exit).
        #[allow(clippy::zombie_processes)]
        let _watcher = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawning the cluster's watcher: {e}"))?;
        Ok(())
    }
}

impl Pg {
    /// Starts the server and waits until it accepts connections. Panics when it does not.
    pub fn start(&self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    /// Starts the server and waits until it accepts connections; on failure, why, with
    /// the end of the server log.
    pub fn try_start(&self) -> Result<(), String> {
        let mut opts = format!("-k {} -c listen_addresses=", self.dir.display());
        if !self.durable {
            opts.push_str(
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
                 -c max_connections=200",
            );
        }
        let mut c = server_cmd(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            // -l: the server's output goes to the log, not to our pipes.
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"]);
        run(c, "pg_ctl start")
            .map(drop)
            .map_err(|e| format!("{e}\nserver log:\n{}", self.log_tail(40)))
    }

    /// Stops the server (`-m fast`: sessions are disconnected, as in a real restart).
    pub fn stop(&self) {
        let mut c = server_cmd(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "30", "-m", "fast", "stop"]);
        if let Err(e) = run(c, "pg_ctl stop") {
            panic!("{e}");
        }
    }

    /// Stops the server at once (`-m immediate`) if it runs; errors are ignored.
    pub fn stop_now(&self) {
        if !self.dir.join("data/postmaster.pid").exists() {
            return;
        }
        let mut c = server_cmd(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "30", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.status();
    }

    /// The server log's last `n` lines.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A conninfo for database `db` on this cluster.
    pub fn conninfo(&self, db: &str) -> String {
        format!("host={} user=postgres dbname={db}", self.dir.display())
    }

    /// A fresh, empty database; its name.
    pub fn create_database(&self) -> String {
        let name = format!("t_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Drops a database, disconnecting whoever uses it.
    pub fn drop_database(&self, db: &str) {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        );
    }

    /// Runs SQL; its unaligned, tuples-only output. Panics on any error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        match self.try_psql(db, sql) {
            Ok(s) => s,
            Err(e) => panic!("psql -d {db} -c {sql:?}: {e}"),
        }
    }

    /// Runs SQL as the `postgres` role over the socket; its unaligned, tuples-only output,
    /// or an error with psql's exit status and messages.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .stdin(Stdio::null());
        for k in [
            "PGSERVICE",
            "PGOPTIONS",
            "PGPASSWORD",
            "PGSSLMODE",
            "PGPORT",
        ] {
            c.env_remove(k);
        }
        run(c, "psql")
    }

    /// Each row of `select` as a JSON object (`row_to_json`): NULLs are nulls, bytea is
    /// "\\x<hex>" (see [`bytea`]), jsonb is a JSON value, text keeps every byte.
    pub fn query(&self, db: &str, select: &str) -> Vec<Value> {
        self.try_query(db, select)
            .unwrap_or_else(|e| panic!("psql -d {db}: {select}: {e}"))
    }

    /// [`Pg::query`], with psql's error text instead of a panic.
    pub fn try_query(&self, db: &str, select: &str) -> Result<Vec<Value>, String> {
        let out = self.try_psql(db, &format!("SELECT row_to_json(q) FROM ({select}) q"))?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect())
    }

    /// Whether a table exists in `db`.
    pub fn has_table(&self, db: &str, table: &str) -> bool {
        self.psql(db, &format!("SELECT to_regclass('{table}') IS NOT NULL"))
            .trim()
            == "t"
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.private {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of the PostgreSQL log {}:",
                self.dir.join("log").display()
            );
            eprintln!("{}", self.log_tail(40));
        }
        self.stop_now();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bytea value as `row_to_json` gives it ("\\x00ff…") to its bytes.
pub fn bytea(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap_or("");
    let hex = s
        .strip_prefix("\\x")
        .unwrap_or_else(|| panic!("not a bytea: {v}"));
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// A SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_bytea() {
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(bytea(&Value::from("\\x00ff41")), vec![0, 0xff, b'A']);
    }

    /// A private cluster: a database, a query, a restart, and nothing left on drop.
    #[test]
    fn private_cluster() {
        if !available() {
            return;
        }
        let dir;
        {
            let c = Cluster::private();
            dir = c.dir.clone();
            let meta = std::fs::metadata(&dir).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o755);
            assert!(dir.join(".s.PGSQL.5432").exists());
            let db = c.create_database();
            c.psql(&db, "CREATE TABLE t (a int, b bytea, c text)");
            c.psql(&db, "INSERT INTO t VALUES (1, '\\x00ff', NULL)");
            assert!(c.has_table(&db, "t"));
            c.stop();
            assert!(c.try_psql(&db, "SELECT 1").is_err());
            c.start();
            let rows = c.query(&db, "SELECT * FROM t");
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0]["a"], 1);
            assert_eq!(bytea(&rows[0]["b"]), vec![0, 0xff]);
            assert!(rows[0]["c"].is_null());
            // Unix socket only.
            assert_eq!(c.psql("postgres", "SHOW listen_addresses").trim(), "");
            assert_eq!(c.psql("postgres", "SHOW fsync").trim(), "off");
            c.drop_database(&db);
        }
        assert!(!dir.exists());
    }

    #[test]
    fn durable_cluster_keeps_fsync() {
        if !available() {
            return;
        }
        let c = Cluster::builder().durable(true).start().unwrap();
        assert_eq!(c.psql("postgres", "SHOW fsync").trim(), "on");
        assert_eq!(c.psql("postgres", "SHOW synchronous_commit").trim(), "on");
    }

    #[test]
    fn shared_cluster_fresh_databases() {
        let Some(a) = database() else { return };
        let b = database().unwrap();
        assert_ne!(a, b);
        let c = Cluster::shared();
        assert!(a.starts_with(&format!("host={} ", c.dir.display())));
    }
}
