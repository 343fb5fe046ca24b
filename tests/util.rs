//! Shared helpers for the integration tests: a per-test temp tree with a config, the real
//! binary, the loopback test endpoint, a database reader, and waits that poll with a
//! deadline and fail with "timeout waiting for …" (never sleep-and-hope).
//!
//! When a test fails, the `Env` prints the daemon logs and the database rows on drop, and
//! keeps the temp directory for a look.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::pg::{self, Pg};
use sega_testsrv::daemon::{self as harness, Captured, Start};
pub use sega_testsrv::daemon::{out, vm_hwm_kib, Out};
pub use sega_testsrv::images;
/// The one seeded RNG (seed from `SEGA_TEST_SEED` or the clock, always logged).
pub use sega_testsrv::rng::Rng;
pub use sega_testsrv::{Mode, Request, Server};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_sega-uploader");

/// Secrets every test's config carries (DESIGN §6): the upload URL's password, a header
/// value, the webhook URL's token and, on PostgreSQL, the database password. When a test
/// passes, its `Env` looks for each of them in every daemon log and command output it
/// captured, and fails the test if one shows (DESIGN §10, "nothing secret printed").
pub const SECRETS: [&str; 4] = [
    "url-pw-5e3d9c",
    "hdr-val-77c1ab",
    "hook-tok-91ee0f",
    "db-pw-0b2f4d",
];

/// Generous: CI machines are shared and slow; the waits return as soon as the condition
/// holds, so a long limit costs nothing when things work.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    while !cond() {
        if Instant::now() > end {
            panic!("timeout waiting for {what} (after {timeout:?})");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

pub fn utc_date(offset_days: i64) -> String {
    let d = time::OffsetDateTime::now_utc().date() + time::Duration::days(offset_days);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Which ledger a test's daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file (`database.path`).
    Sqlite,
    /// A PostgreSQL database (`database.url`) on a throwaway cluster.
    Postgres,
}

/// Instantiates each named test `fn name(backend: Backend)` once per backend, as
/// `name::sqlite` and `name::postgres` (`cargo test postgres` runs the PostgreSQL half). The
/// PostgreSQL variant skips itself with a note when the server binaries are missing (and
/// fails under CI=true).
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(crate::util::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                if crate::pg::available() {
                    super::$name(crate::util::Backend::Postgres)
                }
            }
        }
    )+};
}

/// A PostgreSQL ledger as one `Env` sees it: a database on a cluster and this env's scope.
#[derive(Clone, Debug)]
pub struct PgLedger {
    pub pg: Pg,
    pub db: String,
    pub scope: String,
    /// The env that created the database drops it (after a passing test).
    owner: bool,
}

impl PgLedger {
    pub fn conninfo(&self) -> String {
        self.pg.conninfo(&self.db)
    }

    /// Rows of `select` as JSON objects; an empty list while the schema is not there yet
    /// (nobody has opened the ledger), as a missing SQLite file reads as no rows.
    pub fn query(&self, select: &str) -> Vec<Value> {
        match self.pg.try_query(&self.db, select) {
            Ok(v) => v,
            Err(e) if e.contains("does not exist") && e.contains("relation") => Vec::new(),
            Err(e) => panic!("psql -d {}: {select}: {e}", self.db),
        }
    }

    fn rows_of(&self, scope: &str) -> Vec<Row> {
        self.try_rows_of(scope)
            .unwrap_or_else(|e| panic!("reading rows of {}: {e}", self.db))
    }

    /// Never panics on a server error (the drop-time dump runs while a test panics).
    fn try_rows_of(&self, scope: &str) -> Result<Vec<Row>, String> {
        let rows = match self.pg.try_query(&self.db, &format!(
            "SELECT id, path, folder, date, filename, size, status, attempts, last_error, \
             to_char(uploaded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS uploaded_at, \
             claimed_host FROM files WHERE scope = {} ORDER BY id",
            pg::lit(scope)
        )) {
            Ok(rows) => rows,
            Err(e) if e.contains("does not exist") && e.contains("relation") => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(rows
            .iter()
            .map(|v| Row {
                id: v["id"].as_i64().unwrap(),
                path: pg::bytea(&v["path"]),
                folder: v["folder"].as_str().unwrap().to_string(),
                date: v["date"].as_str().unwrap().to_string(),
                filename: pg::bytea(&v["filename"]),
                size: v["size"].as_i64().unwrap(),
                status: v["status"].as_str().unwrap().to_string(),
                attempts: v["attempts"].as_i64().unwrap(),
                last_error: v["last_error"].as_str().map(str::to_string),
                uploaded_at: v["uploaded_at"].as_str().map(str::to_string),
                claimed_host: v["claimed_host"].as_str().map(str::to_string),
            })
            .collect())
    }

    fn results_of(&self, scope: &str) -> Vec<ResultRow> {
        self.query(&format!(
            "SELECT r.file_id, r.attempt, r.http_status, r.response_json, r.error, r.outcome, \
             r.host FROM upload_results r JOIN files f ON f.id = r.file_id \
             WHERE f.scope = {} ORDER BY r.id",
            pg::lit(scope)
        ))
        .iter()
        .map(|v| ResultRow {
            file_id: v["file_id"].as_i64().unwrap(),
            attempt: v["attempt"].as_i64().unwrap(),
            http_status: v["http_status"].as_i64(),
            // jsonb comes back as a value: written out compactly, as SQLite stores it.
            response_json: (!v["response_json"].is_null())
                .then(|| serde_json::to_string(&v["response_json"]).unwrap()),
            error: v["error"].as_str().map(str::to_string),
            outcome: v["outcome"].as_str().unwrap().to_string(),
            host: v["host"].as_str().map(str::to_string),
        })
        .collect()
    }
}

/// A row of `files`, as tests look at it.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub path: Vec<u8>,
    pub folder: String,
    pub date: String,
    pub filename: Vec<u8>,
    pub size: i64,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub uploaded_at: Option<String>,
    /// PostgreSQL: the host holding (or that last held) the row's claim.
    pub claimed_host: Option<String>,
}

impl Row {
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.filename).into_owned()
    }
}

#[derive(Debug, Clone)]
pub struct ResultRow {
    pub file_id: i64,
    pub attempt: i64,
    pub http_status: Option<i64>,
    pub response_json: Option<String>,
    pub error: Option<String>,
    pub outcome: String,
    /// PostgreSQL: the host that made the attempt.
    pub host: Option<String>,
}

pub struct Env {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub db: PathBuf,
    pub config_path: PathBuf,
    pub server: Server,
    pub today: String,
    pub backend: Backend,
    /// The PostgreSQL ledger, when `backend` is `Postgres`.
    pub pg: Option<PgLedger>,
    config: std::sync::Mutex<Value>,
    logs: std::sync::Mutex<Vec<PathBuf>>,
    /// What commands printed (`run`, `run_as`), for the secrets check.
    captured: Captured,
}

impl Env {
    /// A test tree whose daemon uses an SQLite file.
    pub fn new(name: &str) -> Env {
        Env::build(name, None)
    }

    /// A test tree on either backend: PostgreSQL is a fresh database on the process's
    /// shared cluster.
    pub fn with_backend(name: &str, backend: Backend) -> Env {
        match backend {
            Backend::Sqlite => Env::new(name),
            Backend::Postgres => {
                let pg = pg::Cluster::shared().handle();
                let db = pg.create_database();
                Env::build(
                    name,
                    Some(PgLedger {
                        pg,
                        db,
                        scope: "test-scope".into(),
                        owner: true,
                    }),
                )
            }
        }
    }

    /// A test tree whose ledger is a fresh database on the given (private) cluster.
    pub fn on_cluster(name: &str, pg: &Pg) -> Env {
        let db = pg.create_database();
        Env::build(
            name,
            Some(PgLedger {
                pg: pg.clone(),
                db,
                scope: "test-scope".into(),
                owner: true,
            }),
        )
    }

    /// A test tree of its own (own root, own endpoint) sharing `other`'s PostgreSQL
    /// database under another scope.
    pub fn sharing_ledger(name: &str, other: &Env, scope: &str) -> Env {
        let mut l = other.pg().clone();
        l.scope = scope.into();
        l.owner = false;
        Env::build(name, Some(l))
    }

    fn build(name: &str, pg: Option<PgLedger>) -> Env {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sega-it-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("data");
        let today = utc_date(0);
        for f in ["Sega_1", "Sega_2", "Sega_3"] {
            fs::create_dir_all(root.join(f).join(&today)).unwrap();
        }
        let server = Server::start("127.0.0.1:0").unwrap();
        let db = dir.join("state").join("sega.db");
        fs::create_dir_all(db.parent().unwrap()).unwrap();
        let url = server
            .url()
            .replacen("http://", &format!("http://sega:{}@", SECRETS[0]), 1);
        let config = json!({
            "watch": { "root": root, "settle_secs": 0, "scan_interval_secs": 60 },
            "upload": {
                "url": url,
                "headers": { "X-Api-Key": SECRETS[1] },
                "workers": 2,
                "connect_timeout_secs": 2,
                "timeout_secs": 3,
                "retry": { "initial_secs": 1, "max_secs": 2 }
            },
            "database": { "path": db, "scope": "test-scope" },
            "log": { "level": "debug" },
            // Nothing listens on the discard port: an alert is refused at once.
            "alerts": { "webhook_url": format!("http://127.0.0.1:9/hook/{}", SECRETS[2]) },
            "shutdown_grace_secs": 5
        });
        let mut config = config;
        if let Some(l) = &pg {
            // The cluster trusts local users: the password is never checked, only never shown.
            config["database"]["url"] = json!(format!("{} password={}", l.conninfo(), SECRETS[3]));
            config["database"]["scope"] = json!(l.scope);
        }
        let env = Env {
            config_path: dir.join("config.json"),
            dir,
            root,
            db,
            server,
            today,
            backend: if pg.is_some() {
                Backend::Postgres
            } else {
                Backend::Sqlite
            },
            pg,
            config: std::sync::Mutex::new(config),
            logs: std::sync::Mutex::new(Vec::new()),
            captured: Captured::default(),
        };
        env.write_config();
        env
    }

    /// Sets one config value by JSON pointer ("/upload/workers") and rewrites the file.
    pub fn set(&self, pointer: &str, value: Value) {
        {
            let mut c = self.config.lock().unwrap();
            let mut parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
            let last = parts.pop().unwrap();
            let mut node = &mut *c;
            for p in parts {
                if node.get(p).is_none() {
                    node[p] = json!({});
                }
                node = node.get_mut(p).unwrap();
            }
            node[last] = value;
        }
        self.write_config();
    }

    fn write_config(&self) {
        let text = serde_json::to_string_pretty(&*self.config.lock().unwrap()).unwrap();
        fs::write(&self.config_path, text).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_with_config(&self.config_path, args)
    }

    /// The file `SEGA_TEST_CLOCK_STEP` names for this env's daemons and commands: the step
    /// in seconds added to their wall clock (see src/clock.rs).
    pub fn clock_step_file(&self) -> PathBuf {
        self.dir.join("clock-step")
    }

    /// Steps the wall clock of this env's processes by `secs` from the true time (replaced
    /// atomically; they read it again within ~20 ms).
    pub fn step_clock(&self, secs: i64) {
        let tmp = self.dir.join("clock-step.tmp");
        fs::write(&tmp, secs.to_string()).unwrap();
        fs::rename(&tmp, self.clock_step_file()).unwrap();
    }

    /// A writable connection to the SQLite ledger (for a test that plays another process:
    /// a lock held, a row deleted by hand).
    pub fn sqlite_writer(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(&self.db).unwrap();
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        c
    }

    pub fn cmd_with_config(&self, config: &Path, args: &[&str]) -> Command {
        self.cmd_of(Path::new(BIN), config, args)
    }

    fn cmd_of(&self, bin: &Path, config: &Path, args: &[&str]) -> Command {
        let mut c = harness::command(bin, config);
        c.args(args).env("TZ", "UTC");
        c.env("SEGA_TEST_CLOCK_STEP", self.clock_step_file());
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.capture(out(self.cmd(args).output().unwrap()))
    }

    /// Keeps a command's output for the secrets check.
    pub fn capture(&self, o: Out) -> Out {
        self.captured.keep(o)
    }

    /// Every seeded secret that shows in a daemon log or a captured output, with where.
    fn leaked_secrets(&self) -> Vec<String> {
        let mut texts: Vec<(String, String)> = self
            .logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l.display().to_string(),
                    fs::read_to_string(l).unwrap_or_default(),
                )
            })
            .collect();
        texts.extend(
            self.captured
                .texts()
                .into_iter()
                .map(|t| ("a command's output".to_string(), t)),
        );
        let mut leaks = Vec::new();
        for (place, text) in &texts {
            for secret in SECRETS {
                if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                    leaks.push(format!("{secret} in {place}: {line}"));
                }
            }
        }
        leaks
    }

    pub fn dir_of(&self, folder: &str, date: &str) -> PathBuf {
        let d = self.root.join(folder).join(date);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes a file into today's folder of `folder` (one write + close: IN_CLOSE_WRITE).
    pub fn put(&self, folder: &str, name: impl AsRef<OsStr>, bytes: &[u8]) -> PathBuf {
        self.put_in(folder, &self.today.clone(), name, bytes)
    }

    pub fn put_in(
        &self,
        folder: &str,
        date: &str,
        name: impl AsRef<OsStr>,
        bytes: &[u8],
    ) -> PathBuf {
        let p = self.dir_of(folder, date).join(name.as_ref());
        let mut f = fs::File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    fn conn(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    /// The PostgreSQL ledger (panics for SQLite).
    pub fn pg(&self) -> &PgLedger {
        self.pg.as_ref().expect("a PostgreSQL env")
    }

    pub fn is_pg(&self) -> bool {
        self.pg.is_some()
    }

    /// This env's scope (`database.scope`).
    pub fn scope(&self) -> String {
        self.config.lock().unwrap()["database"]["scope"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Rows of `select` against the PostgreSQL ledger, as JSON objects.
    pub fn sql(&self, select: &str) -> Vec<Value> {
        self.pg().query(select)
    }

    /// Another scope's rows in the same PostgreSQL ledger.
    pub fn rows_of_scope(&self, scope: &str) -> Vec<Row> {
        self.pg().rows_of(scope)
    }

    /// The ledger is gone (a lost disk, a dropped database): the SQLite file and its
    /// directory, or the PostgreSQL database dropped and created empty again.
    pub fn lose_database(&self) {
        match &self.pg {
            None => {
                std::fs::remove_dir_all(self.db.parent().unwrap()).unwrap();
                std::fs::create_dir_all(self.db.parent().unwrap()).unwrap();
            }
            Some(l) => {
                l.pg.drop_database(&l.db);
                l.pg.psql("postgres", &format!("CREATE DATABASE {}", l.db));
            }
        }
    }

    /// Nothing was ever written to the ledger: no SQLite file; in PostgreSQL not one row
    /// in any of the ledger's tables (whether the schema exists or not).
    pub fn ledger_untouched(&self) -> bool {
        match &self.pg {
            None => !self.db.exists(),
            Some(l) => ["files", "upload_results", "state"].iter().all(|t| {
                !l.pg.has_table(&l.db, t)
                    || l.pg
                        .psql(&l.db, &format!("SELECT count(*) FROM {t}"))
                        .trim()
                        == "0"
            }),
        }
    }

    pub fn rows(&self) -> Vec<Row> {
        if let Some(l) = &self.pg {
            return l.rows_of(&l.scope);
        }
        self.try_sqlite_rows()
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.db.display()))
    }

    /// Never panics (the drop-time dump runs while a test panics).
    fn try_sqlite_rows(&self) -> rusqlite::Result<Vec<Row>> {
        if !self.db.exists() {
            return Ok(Vec::new());
        }
        let c = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        c.busy_timeout(Duration::from_secs(10))?;
        let mut stmt = c.prepare(
            "SELECT id, path, folder, date, filename, size, status, attempts, last_error, uploaded_at FROM files ORDER BY id",
        )?;
        let bytes = |v: rusqlite::types::ValueRef<'_>| match v {
            rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
            _ => Vec::new(),
        };
        let rows = stmt
            .query_map([], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    path: bytes(r.get_ref(1)?),
                    folder: r.get(2)?,
                    date: r.get(3)?,
                    filename: bytes(r.get_ref(4)?),
                    size: r.get(5)?,
                    status: r.get(6)?,
                    attempts: r.get(7)?,
                    last_error: r.get(8)?,
                    uploaded_at: r.get(9)?,
                    claimed_host: None,
                })
            })?
            .collect::<rusqlite::Result<Vec<Row>>>();
        rows
    }

    pub fn row(&self, name: &str) -> Row {
        self.rows()
            .into_iter()
            .find(|r| r.filename == name.as_bytes())
            .unwrap_or_else(|| panic!("no row for {name}"))
    }

    pub fn results(&self) -> Vec<ResultRow> {
        if let Some(l) = &self.pg {
            return l.results_of(&l.scope);
        }
        let c = self.conn();
        let mut stmt = c
            .prepare("SELECT file_id, attempt, http_status, response_json, error, outcome FROM upload_results ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| {
            Ok(ResultRow {
                file_id: r.get(0)?,
                attempt: r.get(1)?,
                http_status: r.get(2)?,
                response_json: r.get(3)?,
                error: r.get(4)?,
                outcome: r.get(5)?,
                host: None,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    pub fn count_status(&self, status: &str) -> usize {
        if let Some(l) = &self.pg {
            // Counted by the server: the big fault tests poll this often over many rows.
            return l
                .query(&format!(
                    "SELECT count(*) AS n FROM files WHERE scope = {} AND status = {}",
                    pg::lit(&l.scope),
                    pg::lit(status)
                ))
                .first()
                .map_or(0, |v| v["n"].as_u64().unwrap() as usize);
        }
        self.rows().iter().filter(|r| r.status == status).count()
    }

    /// Requests that carried a file, by decoded file name.
    pub fn uploads_of(&self, name: &[u8]) -> Vec<Request> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.file.as_ref().is_some_and(|f| f.filename == name))
            .collect()
    }

    /// The file names of every request that reached the endpoint, in arrival order.
    pub fn sent_names(&self) -> Vec<String> {
        self.server
            .requests()
            .iter()
            .filter_map(|r| r.file.as_ref())
            .map(|f| String::from_utf8_lossy(&f.filename).into_owned())
            .collect()
    }

    pub fn successful_uploads(&self) -> Vec<Request> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.status == Some(200) && r.file.is_some())
            .collect()
    }

    /// A copy of this env's config with `database.host` = `host` (a second daemon on the
    /// same tree and ledger, as another machine would run it); its path. Later `set` calls
    /// do not reach it: call again to refresh.
    pub fn host_config(&self, host: &str) -> PathBuf {
        let mut c = self.config.lock().unwrap().clone();
        c["database"]["host"] = json!(host);
        let path = self.dir.join(format!("config-{host}.json"));
        fs::write(&path, serde_json::to_string_pretty(&c).unwrap()).unwrap();
        path
    }

    /// A daemon whose `database.host` is `host` (see `host_config`).
    pub fn start_daemon_as(&self, host: &str) -> Daemon {
        let config = self.host_config(host);
        self.spawn_daemon(&config, |_| {})
    }

    /// A command run with `database.host` = `host`.
    pub fn run_as(&self, host: &str, args: &[&str]) -> Out {
        let config = self.host_config(host);
        self.capture(out(self.cmd_with_config(&config, args).output().unwrap()))
    }

    pub fn start_daemon(&self) -> Daemon {
        self.start_daemon_with(|_| {})
    }

    pub fn start_daemon_with(&self, tweak: impl FnOnce(&mut Command)) -> Daemon {
        self.spawn_daemon(&self.config_path.clone(), tweak)
    }

    fn spawn_daemon(&self, config: &Path, tweak: impl FnOnce(&mut Command)) -> Daemon {
        self.spawn(self.cmd_with_config(config, &["run"]), tweak)
    }

    fn spawn(&self, mut c: Command, tweak: impl FnOnce(&mut Command)) -> Daemon {
        let n = self.logs.lock().unwrap().len();
        let log = self.dir.join(format!("daemon-{n}.log"));
        tweak(&mut c);
        let d = Start::new(c, &log).spawn().unwrap();
        self.logs.lock().unwrap().push(log);
        Daemon(d)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- test tree kept at {}", self.dir.display());
            for log in self.logs.lock().unwrap().iter() {
                let text = fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(80).collect();
                eprintln!("---- last lines of {}:", log.display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
            if let Some(l) = &self.pg {
                eprintln!(
                    "---- PostgreSQL ledger: {} (scope {}; the cluster goes when the test process exits)",
                    l.conninfo(),
                    l.scope
                );
            }
            if self.db.exists() || self.pg.is_some() {
                eprintln!("---- files:");
                let rows = match &self.pg {
                    Some(l) => l.try_rows_of(&l.scope).unwrap_or_else(|e| {
                        eprintln!("(cannot read the rows: {e})");
                        Vec::new()
                    }),
                    None => self.try_sqlite_rows().unwrap_or_else(|e| {
                        eprintln!("(cannot read the rows: {e})");
                        Vec::new()
                    }),
                };
                for r in rows.iter().take(60) {
                    eprintln!(
                        "{} {} {} attempts={} err={:?}{}",
                        r.status,
                        r.folder,
                        r.name(),
                        r.attempts,
                        r.last_error,
                        r.claimed_host
                            .as_deref()
                            .map(|h| format!(" host={h}"))
                            .unwrap_or_default()
                    );
                }
            }
            eprintln!("---- server saw {} request(s)", self.server.request_count());
        } else {
            let leaks = self.leaked_secrets();
            if !leaks.is_empty() {
                panic!(
                    "a secret was printed (tree kept at {}):\n{}",
                    self.dir.display(),
                    leaks.join("\n")
                );
            }
            let _ = fs::remove_dir_all(&self.dir);
            if let Some(l) = self.pg.as_ref().filter(|l| l.owner) {
                l.pg.drop_database(&l.db);
            }
        }
    }
}

/// The running daemon (the harness's). Killed on drop if still running; its waits fail the
/// test after their timeout.
pub struct Daemon(harness::Daemon);

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.0.pid()
    }

    pub fn signal(&self, sig: i32) {
        self.0.signal(sig);
    }

    pub fn log_text(&self) -> String {
        self.0.log_text()
    }

    pub fn wait_log(&self, needle: &str) {
        wait_until(&format!("log line containing {needle:?}"), DEADLINE, || {
            self.log_text().contains(needle)
        });
    }

    /// Waits for the exit; the exit code (or 128 + signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        self.0
            .wait_exit(timeout)
            .unwrap_or_else(|| panic!("timeout waiting for the daemon to exit (after {timeout:?})"))
            .code()
    }

    pub fn kill(&mut self) {
        self.0.kill();
    }

    pub fn alive(&mut self) -> bool {
        self.0.alive()
    }
}

/// A NOTIFY_SOCKET to hand to the daemon (the harness's, in the env's directory), with what
/// it received and when; `wait_for` fails the test after [`DEADLINE`].
pub struct Notify(harness::Notify);

impl Notify {
    pub fn new(env: &Env) -> Notify {
        Notify(harness::Notify::bind(&env.dir.join("notify.sock")).unwrap())
    }

    /// Waits for a message containing `needle` that arrived after index `from`; its index.
    pub fn wait_for(&mut self, needle: &str, from: usize) -> usize {
        self.0
            .wait_for(needle, from, DEADLINE)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Deref for Notify {
    type Target = harness::Notify;

    fn deref(&self) -> &harness::Notify {
        &self.0
    }
}

impl DerefMut for Notify {
    fn deref_mut(&mut self) -> &mut harness::Notify {
        &mut self.0
    }
}

/// The unprivileged user the permission tests run the binary as (CI runs as root; those
/// tests need a user the kernel actually checks).
pub const NOBODY: u32 = 65534;

impl Env {
    /// Readies this env for running the binary as `nobody`: the test tree traversable and
    /// the config readable by all, and the binary linked (or copied) into the tree, since
    /// the checkout's `target/` may sit below a directory `nobody` cannot enter (a 0700
    /// home or `mktemp -d`). The state directory is left as it is: tests that want it
    /// writable by `nobody` say so. False, with the reason printed, when such a test cannot
    /// run here: not root, or the temp directory itself is out of `nobody`'s reach.
    pub fn open_to_nobody(&self) -> bool {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: running the binary as another user needs root (CI runs as root)");
            return false;
        }
        if let Some(closed) = self
            .dir
            .ancestors()
            .skip(1)
            .find(|a| fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        {
            eprintln!(
                "skipped: {} is not traversable by other users, so `nobody` cannot reach the \
                 test tree (set TMPDIR to a directory it can reach)",
                closed.display()
            );
            return false;
        }
        for p in [&self.dir, &self.root] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(&self.config_path, fs::Permissions::from_mode(0o644)).unwrap();
        let bin = self.nobody_bin();
        if !bin.exists() {
            fs::create_dir_all(bin.parent().unwrap()).unwrap();
            // A hard link shares the binary's 0755 inode; across filesystems, a copy.
            if fs::hard_link(BIN, &bin).is_err() {
                fs::copy(BIN, &bin).unwrap();
            }
            fs::set_permissions(bin.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
        }
        true
    }

    /// Where `nobody` runs the binary from (see `open_to_nobody`).
    pub fn nobody_bin(&self) -> PathBuf {
        self.dir.join("bin").join("sega-uploader")
    }

    /// A command run as `nobody`, after `open_to_nobody`.
    pub fn nobody_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd_of(&self.nobody_bin(), &self.config_path, args);
        c.uid(NOBODY).gid(NOBODY);
        c
    }

    /// The daemon as `nobody`, after `open_to_nobody`.
    pub fn start_daemon_as_nobody(&self) -> Daemon {
        self.spawn(self.nobody_cmd(&["run"]), |_| {})
    }

    /// The daemon's command, as `wrap` rewrites it (a namespace, another user), the binary
    /// that `nobody` can reach in place of the checkout's.
    pub fn start_daemon_wrapped(&self, wrap: impl FnOnce(&Command) -> Command) -> Daemon {
        let c = self.cmd_of(&self.nobody_bin(), &self.config_path, &["run"]);
        self.spawn(wrap(&c), |_| {})
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Idempotency-Key` the daemon sends for a file version (src/upload.rs).
pub fn idempotency_key(
    scope: &str,
    folder: &str,
    date: &str,
    name: &[u8],
    size: u64,
    mtime_ns: i64,
) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [scope.as_bytes(), folder.as_bytes(), date.as_bytes(), name] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(size.to_be_bytes());
    h.update(mtime_ns.to_be_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A file outside the tree that must never be read: its atime is set back to 1970 (older
/// than its mtime, so a read moves it even under relatime). `untouched` says whether it was
/// left alone.
pub struct Sentinel {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl Sentinel {
    pub fn new(path: PathBuf, bytes: Vec<u8>) -> Sentinel {
        fs::write(&path, &bytes).unwrap();
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let times = [
            libc::timespec {
                tv_sec: 1,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
        ];
        // SAFETY: a NUL-terminated path and two timespecs, as utimensat wants.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
            0
        );
        Sentinel { path, bytes }
    }

    /// Never read (atime still 1970) and its content never reached the endpoint.
    pub fn untouched(&self, env: &Env) -> bool {
        use std::os::unix::fs::MetadataExt;
        let atime = fs::metadata(&self.path).unwrap().atime();
        let sha = sha256_hex(&self.bytes);
        let sent = env
            .server
            .requests()
            .iter()
            .any(|r| r.file.as_ref().is_some_and(|f| f.sha256 == sha));
        atime == 1 && !sent
    }
}

pub fn name_bytes(p: &Path) -> Vec<u8> {
    p.file_name().unwrap().as_bytes().to_vec()
}

/// A pid in a JSON document, written as a number or as a string.
pub fn same_pid(v: &Value, pid: i32) -> bool {
    v.as_i64() == Some(pid as i64) || v.as_str() == Some(&pid.to_string())
}

/// The kernel's host name: the default `database.host`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// name → sha256 of every file written.
pub type Written = HashMap<String, String>;

pub fn write_burst(
    env: &Env,
    prefix: &str,
    n: usize,
    pause_every: usize,
    pause: Duration,
) -> Written {
    let mut w = Written::new();
    for i in 0..n {
        let name = format!("{prefix}{i:05}.jpg");
        let b = images::jpeg(16, 16, i as u64 ^ 0x5eed);
        env.put(&format!("Sega_{}", i % 3 + 1), &name, &b);
        w.insert(name, sha256_hex(&b));
        if pause_every > 0 && i % pause_every == pause_every - 1 {
            std::thread::sleep(pause);
        }
    }
    w
}

/// Every written file arrived (right bytes) at least once; returns the duplicate count.
pub fn check_all_arrived(env: &Env, written: &Written) -> usize {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut keys: HashMap<String, HashSet<String>> = HashMap::new();
    for r in env.successful_uploads() {
        let f = r.file.as_ref().unwrap();
        let name = String::from_utf8_lossy(&f.filename).into_owned();
        if let Some(sha) = written.get(&name) {
            assert_eq!(&f.sha256, sha, "{name}: wrong bytes");
            *seen.entry(name.clone()).or_default() += 1;
            keys.entry(name)
                .or_default()
                .insert(r.header("Idempotency-Key").unwrap().to_string());
        }
    }
    let missing: Vec<_> = written
        .keys()
        .filter(|n| !seen.contains_key(*n))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "never arrived: {missing:?} ({} of {})",
        written.len() - seen.len(),
        written.len()
    );
    for (name, k) in &keys {
        assert_eq!(
            k.len(),
            1,
            "{name}: every re-send carries the same Idempotency-Key"
        );
    }
    seen.values().map(|n| n - 1).sum()
}
