//! The per-test tree: its directories, the loopback endpoint, the config (built with the
//! seeded secrets, set by JSON pointer, copied per host), the clock step file, and on drop
//! either the report of a failed test (logs, rows, requests) or the check that no secret
//! was printed.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use sega_testsrv::daemon::Captured;
use serde_json::{json, Value};

use super::{utc_date, Backend, PgLedger, Server, SECRETS};
use crate::pg::{self, Pg};

pub struct Env {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub db: PathBuf,
    pub config_path: PathBuf,
    pub server: Server,
    pub today: String,
    /// The PostgreSQL ledger, when the backend is PostgreSQL.
    pub pg: Option<PgLedger>,
    pub(super) config: Mutex<Value>,
    /// Every daemon's log file.
    pub(super) logs: Mutex<Vec<PathBuf>>,
    /// What commands printed (`run`, `run_as`), for the secrets check.
    pub(super) captured: Captured,
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
            pg,
            config: Mutex::new(config),
            logs: Mutex::new(Vec::new()),
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
