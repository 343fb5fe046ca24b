//! Shared helpers for the integration tests: a per-test temp tree with a config, the real
//! binary, the loopback test endpoint, a database reader, and waits that poll with a
//! deadline and fail with "timeout waiting for …" (never sleep-and-hope).
//!
//! When a test fails, the `Env` prints the daemon logs and the database rows on drop, and
//! keeps the temp directory for a look.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use sega_testsrv::images;
pub use sega_testsrv::{Mode, Request, Server};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_sega-uploader");

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
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub struct Env {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub db: PathBuf,
    pub config_path: PathBuf,
    pub server: Server,
    pub today: String,
    config: std::sync::Mutex<Value>,
    logs: std::sync::Mutex<Vec<PathBuf>>,
}

impl Env {
    pub fn new(name: &str) -> Env {
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
        let config = json!({
            "watch": { "root": root, "settle_secs": 0, "scan_interval_secs": 60 },
            "upload": {
                "url": server.url(),
                "workers": 2,
                "connect_timeout_secs": 2,
                "timeout_secs": 3,
                "retry": { "initial_secs": 1, "max_secs": 2 }
            },
            "database": { "path": db, "scope": "test-scope" },
            "log": { "level": "debug" },
            "shutdown_grace_secs": 5
        });
        let env = Env {
            config_path: dir.join("config.json"),
            dir,
            root,
            db,
            server,
            today,
            config: std::sync::Mutex::new(config),
            logs: std::sync::Mutex::new(Vec::new()),
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
        let mut c = Command::new(BIN);
        c.arg("-c").arg(&self.config_path).args(args);
        c.env("TZ", "UTC")
            .env_remove("SEGA_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM");
        c.env_remove("SEGA_TEST_NOW").env_remove("SEGA_CONFIG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        out(self.cmd(args).output().unwrap())
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

    pub fn rows(&self) -> Vec<Row> {
        if !self.db.exists() {
            return Vec::new();
        }
        let c = self.conn();
        let mut stmt = c
            .prepare(
                "SELECT id, path, folder, date, filename, size, status, attempts, last_error, uploaded_at FROM files ORDER BY id",
            )
            .unwrap();
        let bytes = |v: rusqlite::types::ValueRef<'_>| match v {
            rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
            _ => Vec::new(),
        };
        stmt.query_map([], |r| {
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
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    pub fn row(&self, name: &str) -> Row {
        self.rows()
            .into_iter()
            .find(|r| r.filename == name.as_bytes())
            .unwrap_or_else(|| panic!("no row for {name}"))
    }

    pub fn results(&self) -> Vec<ResultRow> {
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
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    pub fn count_status(&self, status: &str) -> usize {
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

    pub fn start_daemon(&self) -> Daemon {
        self.start_daemon_with(|_| {})
    }

    pub fn start_daemon_with(&self, tweak: impl FnOnce(&mut Command)) -> Daemon {
        let n = self.logs.lock().unwrap().len();
        let log = self.dir.join(format!("daemon-{n}.log"));
        let mut c = self.cmd(&["run"]);
        tweak(&mut c);
        c.stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let child = c.spawn().unwrap();
        self.logs.lock().unwrap().push(log.clone());
        Daemon {
            child: Some(child),
            log,
        }
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
            if self.db.exists() {
                eprintln!("---- files:");
                for r in self.rows().iter().take(60) {
                    eprintln!(
                        "{} {} {} attempts={} err={:?}",
                        r.status,
                        r.folder,
                        r.name(),
                        r.attempts,
                        r.last_error
                    );
                }
            }
            eprintln!("---- server saw {} request(s)", self.server.request_count());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn out(o: std::process::Output) -> Out {
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The running daemon. Killed on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str) {
        wait_until(&format!("log line containing {needle:?}"), DEADLINE, || {
            self.log_text().contains(needle)
        });
    }

    /// Waits for the exit; the exit code (or 128 + signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let child = self.child.as_mut().expect("daemon already reaped");
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                use std::os::unix::process::ExitStatusExt;
                return st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
            }
            if Instant::now() > end {
                panic!("timeout waiting for the daemon to exit (after {timeout:?})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait_exit(DEADLINE);
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a command as the unprivileged `nobody` user (CI runs as root; permission tests need
/// a user the kernel actually checks).
pub fn as_nobody(c: &mut Command) {
    c.uid(65534).gid(65534);
}

/// A process's peak RSS (VmHWM) in KiB, 0 once it is gone.
pub fn vm_hwm_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn name_bytes(p: &Path) -> Vec<u8> {
    p.file_name().unwrap().as_bytes().to_vec()
}
