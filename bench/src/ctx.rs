//! What every scenario shares: the sizes (full or smoke), the embedded endpoint, the tools
//! found on PATH, scenario directories with their config and database, and the helpers that
//! wait for uploads and check that each one arrived whole.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sega_testsrv::{Request, Server};

use crate::daemon::{self, Daemon, Settings};
use crate::tree;

pub const FOLDERS: [&str; 3] = ["Sega_1", "Sega_2", "Sega_3"];
pub const KIB: usize = 1024;

/// The sizes of one bench run.
#[derive(Debug, Clone)]
pub struct Params {
    /// Files written at `latency_rate` per second, per run.
    pub latency_files: usize,
    pub latency_rate: f64,
    /// Images per throughput run, and their size.
    pub tput_files: usize,
    pub image_size: usize,
    /// Requests per endpoint-ceiling run.
    pub ceiling_requests: usize,
    pub big_size: u64,
    /// Uploaded files per folder in the idle row, and the length of one idle window.
    pub idle_files: usize,
    pub idle_window: Duration,
    pub rescan_files: usize,
    /// Rows in the start-up and pending-RSS databases.
    pub db_rows: usize,
    /// Files behind the oldest pending rows (the ones probes try), and how long the daemon
    /// runs against the dead endpoint before its memory is read.
    pub pending_real_files: usize,
    pub pending_window: Duration,
    /// Images present at start in the shared-ledger scenario, and their size (small: the
    /// row is about the ledger's per-file cost, claims and completions, not bytes).
    pub shared_files: usize,
    pub shared_image_size: usize,
    /// Files pending in the bigger outage-idle row, and how long the outage runs before the
    /// windows (the probes' backoff grows past them).
    pub outage_pending: usize,
    pub outage_settle: Duration,
}

impl Params {
    pub fn full() -> Params {
        Params {
            latency_files: 400,
            latency_rate: 40.0,
            tput_files: 5000,
            image_size: 100 * KIB,
            ceiling_requests: 5000,
            big_size: 1 << 30,
            idle_files: 1000,
            idle_window: Duration::from_secs(60),
            rescan_files: 100_000,
            db_rows: 1_000_000,
            pending_real_files: 1000,
            pending_window: Duration::from_secs(20),
            shared_files: 20_000,
            shared_image_size: 20 * KIB,
            outage_pending: 10_000,
            outage_settle: Duration::from_secs(30),
        }
    }

    /// The CI run: every scenario end to end, in seconds.
    pub fn smoke() -> Params {
        Params {
            latency_files: 12,
            latency_rate: 40.0,
            tput_files: 60,
            image_size: 20 * KIB,
            ceiling_requests: 60,
            big_size: 8 << 20,
            idle_files: 10,
            idle_window: Duration::from_secs(2),
            rescan_files: 2000,
            db_rows: 20_000,
            pending_real_files: 30,
            pending_window: Duration::from_secs(2),
            shared_files: 200,
            shared_image_size: 20 * KIB,
            outage_pending: 50,
            outage_settle: Duration::from_secs(2),
        }
    }
}

pub struct Ctx {
    pub p: Params,
    pub smoke: bool,
    pub runs: usize,
    pub workers: usize,
    pub daemon: PathBuf,
    pub work: PathBuf,
    pub server: Server,
    /// The same endpoint behind a TLS front, for the https rows.
    pub https: crate::tls::Https,
    pub curl: Option<PathBuf>,
    pub xargs: Option<PathBuf>,
    pub inotifywait: Option<PathBuf>,
    /// python3, when it can import watchdog and requests.
    pub python: Option<PathBuf>,
    /// Extra environment for every daemon run (`--daemon-env K=V`), for experiments such as
    /// `MALLOC_ARENA_MAX=2`.
    pub daemon_env: Vec<(String, String)>,
}

/// The Python competitor, next to this crate in the repository.
pub fn watchdog_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_watchdog.py")
}

/// python3 if it has watchdog and requests.
pub fn find_python() -> Option<PathBuf> {
    let py = crate::sys::which("python3")?;
    let ok = Command::new(&py)
        .args(["-c", "import watchdog, requests"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(py)
}

/// One scenario's directory: `data/` (the watch root), `sega.db`, `config.json`.
pub struct Scene {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub db: PathBuf,
    pub config: PathBuf,
}

impl Scene {
    /// A fresh, empty scenario directory.
    pub fn new(work: &Path, name: &str) -> io::Result<Scene> {
        let dir = tree::fresh_dir(&work.join(name))?;
        Scene::at(dir)
    }

    /// The scenario directory as it is (its data kept), with no database.
    pub fn reuse(work: &Path, name: &str) -> io::Result<Scene> {
        let dir = work.join(name);
        fs::create_dir_all(&dir)?;
        let s = Scene::at(dir)?;
        s.reset_db()?;
        Ok(s)
    }

    fn at(dir: PathBuf) -> io::Result<Scene> {
        let root = dir.join("data");
        fs::create_dir_all(&root)?;
        Ok(Scene {
            db: dir.join("sega.db"),
            config: dir.join("config.json"),
            root,
            dir,
        })
    }

    /// Removes the database (and its WAL, shared memory and lock files).
    pub fn reset_db(&self) -> io::Result<()> {
        for ext in ["", "-wal", "-shm", ".lock"] {
            let mut p = self.db.clone().into_os_string();
            p.push(ext);
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn configure(
        &self,
        url: &str,
        workers: usize,
        settle_secs: u64,
        scan_interval_secs: u64,
    ) -> io::Result<()> {
        daemon::write_config(
            &self.config,
            &Settings {
                root: &self.root,
                folders: &FOLDERS,
                db: &self.db,
                url,
                workers,
                settle_secs,
                scan_interval_secs,
                log_level: "info",
            },
        )
    }
}

impl Scene {
    /// Sets `upload.<key>` in the config `configure` wrote (a CA file, checksum fields).
    pub fn set_upload(&self, key: &str, value: serde_json::Value) -> io::Result<()> {
        let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&self.config)?)?;
        cfg["upload"][key] = value;
        fs::write(&self.config, format!("{cfg:#}\n"))
    }
}

impl Ctx {
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn runs_label(&self) -> String {
        format!("{} run(s)", self.runs)
    }

    /// Starts the daemon on `scene` (config already written).
    pub fn start(
        &self,
        scene: &Scene,
        pipe_lines: bool,
        env: &[(&str, &str)],
    ) -> io::Result<Daemon> {
        let mut all: Vec<(&str, &str)> = self
            .daemon_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(env);
        Daemon::start(&self.daemon, &scene.config, &scene.dir, pipe_lines, &all)
    }

    /// Runs the daemon once on an empty tree so that it creates its schema, then stops it.
    pub fn init_db(&self, scene: &Scene) -> io::Result<()> {
        let mut d = self.start(scene, false, &[])?;
        d.wait_ready(Duration::from_secs(60))?;
        let exit = d.stop();
        let version: i64 = rusqlite::Connection::open(&scene.db)
            .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .unwrap_or(0);
        if version > 0 {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "initialising {}: no schema after the daemon ran (exit {exit:?})",
                scene.db.display()
            )))
        }
    }

    /// Waits until `n` requests have been settled since the last `clear`; the instant it saw
    /// the n-th.
    pub fn wait_uploads(&self, n: usize, timeout: Duration, who: &str) -> io::Result<Instant> {
        if self.server.wait_for_requests(n, timeout) {
            Ok(Instant::now())
        } else {
            Err(io::Error::other(format!(
                "{who}: only {} of {n} uploads arrived within {} s ({:?})",
                self.server.request_count(),
                timeout.as_secs(),
                self.server.stats().by_status
            )))
        }
    }

    /// The requests since the last `clear`, checked: each a 200 with no strictness error
    /// and a file part of `size` bytes; `n` distinct file names.
    pub fn checked_uploads(&self, n: usize, size: u64, who: &str) -> io::Result<Vec<Request>> {
        let reqs = self.server.requests();
        let mut names = HashSet::new();
        for r in &reqs {
            let bad = |why: String| io::Error::other(format!("{who}: request #{}: {why}", r.seq));
            if r.status != Some(200) || r.error.is_some() {
                return Err(bad(format!("status {:?}, error {:?}", r.status, r.error)));
            }
            let f = r.file.as_ref().ok_or_else(|| bad("no file part".into()))?;
            if f.size != size {
                return Err(bad(format!("{} bytes, expected {size}", f.size)));
            }
            names.insert(f.filename.clone());
        }
        if names.len() != n {
            return Err(io::Error::other(format!(
                "{who}: {} distinct files arrived, expected {n} ({} requests)",
                names.len(),
                reqs.len()
            )));
        }
        Ok(reqs)
    }

    /// `curl -sS -o /dev/null -F folder=… -F date=…` (the file argument and URL follow).
    pub fn curl_base(&self, folder: &str, date: &str) -> Option<Vec<String>> {
        let curl = self.curl.as_ref()?;
        Some(vec![
            curl.to_string_lossy().into_owned(),
            "-sS".into(),
            "-o".into(),
            "/dev/null".into(),
            "-F".into(),
            format!("folder={folder}"),
            "-F".into(),
            format!("date={date}"),
        ])
    }

    /// `xargs -0 -P<workers> -I{} curl … -F file=@{};type=image/jpeg URL`, reading the file
    /// list from `stdin`: the usual one-liner, one curl process per file.
    pub fn xargs_curl(&self, folder: &str, date: &str, stdin: Stdio) -> Option<Command> {
        self.xargs_curl_to(&self.url(), &[], folder, date, stdin)
    }

    /// The same to `url`, with `extra` curl options (`--cacert CA` for https).
    pub fn xargs_curl_to(
        &self,
        url: &str,
        extra: &[&std::ffi::OsStr],
        folder: &str,
        date: &str,
        stdin: Stdio,
    ) -> Option<Command> {
        let xargs = self.xargs.as_ref()?;
        let mut cmd = Command::new(xargs);
        cmd.args(["-0", &format!("-P{}", self.workers), "-I{}"])
            .args(self.curl_base(folder, date)?)
            .args(extra)
            .args(["-F", "file=@{};type=image/jpeg", url])
            .stdin(stdin)
            .stdout(Stdio::null());
        Some(cmd)
    }

    /// An upload URL where nothing listens: 127.0.0.1:9 if it refuses, else a port we bound
    /// and released.
    pub fn dead_url(&self) -> String {
        let refuses = |port: u16| {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(500),
            )
            .is_err()
        };
        if refuses(9) {
            return "http://127.0.0.1:9/upload".into();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_or(9, |a| a.port());
        format!("http://127.0.0.1:{port}/upload")
    }
}
