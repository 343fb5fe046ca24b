//! Throwaway PostgreSQL servers for the PostgreSQL half of the suite.
//!
//! One shared cluster per test process (started on first use, stopped by a detached
//! watcher once the test process is gone) with a fresh database per test, plus private
//! clusters that a test may stop and start. Each cluster lives in a short directory under
//! /tmp (the Unix socket's path must stay under ~100 bytes), listens on its Unix socket only
//! (never TCP), trusts every local user, and runs with fsync off: the tests need speed, not
//! durability. The directory is world-traversable so a daemon run as `nobody` can connect.
//!
//! Without the server binaries the PostgreSQL variants skip themselves with a note, except
//! under `CI=true`, where that is a failure.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use serde_json::Value;

/// The newest /usr/lib/postgresql/<version>/bin that has the server binaries.
pub fn server_bin() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                ["initdb", "pg_ctl", "postgres", "psql"]
                    .iter()
                    .all(|b| bin.join(b).exists())
                    .then_some((v, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, b)| b)
    })
    .clone()
}

/// Whether the PostgreSQL variants can run here. Under `CI=true` a missing server is a
/// failure (the suite must not pass by skipping); elsewhere the caller skips with a note.
pub fn available() -> bool {
    if server_bin().is_some() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
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

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A server binary, run as `postgres` when we are root (the server refuses to run as root).
fn server_cmd(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run_ok(mut c: Command, what: &str) {
    let o = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A handle on one cluster: where it is and how to talk to it (cheap to clone; an `Env`
/// keeps one).
#[derive(Clone, Debug)]
pub struct Pg {
    /// The cluster's directory: also its socket directory (the `host=` of a conninfo).
    pub dir: PathBuf,
    bin: PathBuf,
}

/// One throwaway cluster.
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
    fn create(private: bool) -> Cluster {
        let bin = server_bin().expect("PostgreSQL server binaries (check available() first)");
        let dir = PathBuf::from(format!(
            "/tmp/sgpg-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if is_root() {
            let o = Command::new("chown")
                .arg("postgres:")
                .arg(&dir)
                .status()
                .unwrap();
            assert!(o.success(), "chown postgres {}", dir.display());
        }
        let cluster = Cluster {
            pg: Pg { dir, bin },
            private,
        };
        // The watcher first: whatever happens next, the server and its directory go away
        // with the test process.
        cluster.spawn_watcher();
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
        run_ok(c, "initdb");
        cluster.start();
        cluster
    }

    fn spawn_watcher(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if is_root() {
            format!(
                "runuser -u postgres -- {} -D {}/data -m immediate stop",
                pg_ctl.display(),
                self.dir.display()
            )
        } else {
            format!(
                "{} -D {}/data -m immediate stop",
                pg_ctl.display(),
                self.dir.display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
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
            .expect("the cluster's watcher");
    }

    /// A new cluster for one test, which may stop and start it. Stopped and removed on drop.
    pub fn private() -> Cluster {
        Cluster::create(true)
    }

    /// The process's shared cluster (started on first use).
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| Cluster::create(false))
    }

    pub fn handle(&self) -> Pg {
        self.pg.clone()
    }
}

impl Pg {
    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        let mut c = server_cmd(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "30", "-o"])
            .arg(format!(
                "-k {} -c listen_addresses= -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=200",
                self.dir.display()
            ))
            .arg("start");
        // pg_ctl's server inherits our stdout otherwise, and cargo would wait for it.
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let st = c.status().expect("pg_ctl start");
        assert!(
            st.success(),
            "pg_ctl start failed: {st}; server log:\n{}",
            self.log_tail(40)
        );
    }

    /// Stops the server (`-m fast`: sessions are disconnected, as in a real restart).
    pub fn stop(&self) {
        let mut c = server_cmd(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "30", "-m", "fast", "stop"]);
        run_ok(c, "pg_ctl stop");
    }

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

    fn psql_cmd(&self, db: &str, sql: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null());
        c
    }

    /// Runs SQL; its unaligned, tuples-only output. Panics on any error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        match self.try_psql(db, sql) {
            Ok(s) => s,
            Err(e) => panic!("psql -d {db} -c {sql:?}: {e}"),
        }
    }

    /// Runs SQL; its output, or psql's error text.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let o = self
            .psql_cmd(db, sql)
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            ))
        }
    }

    /// Each row of `select` as a JSON object (`row_to_json`): NULLs are nulls, bytea is
    /// "\\x<hex>" (see [`bytea`]), jsonb is a JSON value, text keeps every byte.
    pub fn query(&self, db: &str, select: &str) -> Vec<Value> {
        self.try_query(db, select)
            .unwrap_or_else(|e| panic!("psql -d {db}: {select}: {e}"))
    }

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
        let mut c = server_cmd(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.status();
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
