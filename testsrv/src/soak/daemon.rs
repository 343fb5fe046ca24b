//! sega-uploader under the engine: its config (with seeded secrets, and narrowed on demand),
//! starting it (and waiting for "ready:"), signals, reaping it, a sampler thread that reads
//! VmHWM and VmRSS from /proc every second, and its commands (`status --json`, `show`),
//! whose output is kept for the secrets check.
//!
//! The daemon is our child: it is only ever signalled by its pid, and `Drop` kills and reaps
//! it (continuing it first, in case it is stopped). If the engine's process ends (killed, or
//! a panic), the kernel kills the daemon (PR_SET_PDEATHSIG): an orphan would run on, stopped
//! or not. That signal follows the *thread* that forked, so every daemon is spawned by one
//! `launcher` thread that lives as long as the `Daemon`, not by whichever injector restarts
//! it.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::clock::ModelClock;
use super::tree::FOLDERS;

/// Secrets every config carries (DESIGN §6): the upload URL's password, a header value, the
/// webhook URL's token and, on PostgreSQL, the database password. None may appear in any
/// log line or command output.
pub const SECRETS: [&str; 4] = [
    "soak-url-pw-4f1c2a",
    "soak-hdr-val-8d03be",
    "soak-hook-tok-62a9d7",
    "soak-db-pw-1e77c5",
];

pub const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];
/// The daemon's settle time and lookback, as configured.
pub const SETTLE_SECS: f64 = 1.0;
pub const LOOKBACK_DAYS: i64 = 1;
pub const SCAN_SECS: f64 = 10.0;
/// `upload.timeout_secs`.
pub const TIMEOUT_SECS: u64 = 5;

/// What a config names: everything but what a narrowing removes.
pub struct ConfigSpec {
    pub root: PathBuf,
    pub db: PathBuf,
    /// A PostgreSQL conninfo (without the password), when the ledger is PostgreSQL.
    pub pg: Option<String>,
    pub url: String,
    pub workers: usize,
    pub log: PathBuf,
    pub scope: String,
}

impl ConfigSpec {
    /// Writes the config, without folder or extension `removed` if given (written aside and
    /// renamed: the daemon never reads half a file). Short settle, scans and retries, so
    /// faults play out in seconds; an alert webhook on a port where nothing listens.
    pub fn write(&self, path: &Path, removed: Option<&str>) -> io::Result<()> {
        let keep = |x: &&str| Some(*x) != removed;
        let folders: Vec<&str> = FOLDERS.into_iter().filter(keep).collect();
        let extensions: Vec<&str> = EXTENSIONS.into_iter().filter(keep).collect();
        let url = self
            .url
            .replacen("http://", &format!("http://soak:{}@", SECRETS[0]), 1);
        let mut cfg = json!({
            "watch": {
                "root": self.root,
                "folders": folders,
                "extensions": extensions,
                "settle_secs": SETTLE_SECS as u64,
                "scan_interval_secs": SCAN_SECS as u64,
                "lookback_days": LOOKBACK_DAYS,
            },
            "upload": {
                "url": url,
                "headers": { "X-Api-Key": SECRETS[1] },
                "workers": self.workers,
                "connect_timeout_secs": 2,
                "timeout_secs": TIMEOUT_SECS,
                "retry": { "initial_secs": 1, "max_secs": 10 },
            },
            "database": { "path": self.db, "scope": self.scope },
            "log": { "level": "info", "file": self.log },
            "alerts": {
                "webhook_url": format!("http://127.0.0.1:9/hook/{}", SECRETS[2]),
                "after_secs": 20,
            },
            "shutdown_grace_secs": 5,
        });
        if let Some(pg) = &self.pg {
            // The cluster trusts local users: the password is never checked, only never shown.
            cfg["database"]["url"] = json!(format!("{pg} password={}", SECRETS[3]));
        }
        let tmp = path.with_extension("new");
        fs::write(&tmp, format!("{cfg:#}\n"))?;
        fs::rename(&tmp, path)
    }
}

/// Memory figures shared with the sampler thread.
#[derive(Default)]
pub struct Mem {
    /// The running daemon's pid, 0 while there is none.
    pid: AtomicI32,
    /// The largest VmHWM over every daemon process, KiB.
    pub max_hwm_kib: AtomicU64,
    /// The running process's VmHWM at the last sample, KiB.
    hwm_kib: AtomicU64,
    /// The running daemon's VmRSS at the last sample, KiB.
    pub rss_kib: AtomicU64,
}

impl Mem {
    /// Reads the running daemon's VmHWM and VmRSS from /proc (wait4's ru_maxrss would count
    /// the forked copy of the engine before exec).
    fn sample(&self) {
        let pid = self.pid.load(Ordering::Relaxed);
        if pid <= 0 {
            return;
        }
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            return;
        };
        let field = |name: &str| -> Option<u64> {
            let line = text.lines().find_map(|l| l.strip_prefix(name))?;
            line.trim().trim_end_matches("kB").trim().parse().ok()
        };
        if let Some(hwm) = field("VmHWM:") {
            self.hwm_kib.fetch_max(hwm, Ordering::Relaxed);
            self.max_hwm_kib.fetch_max(hwm, Ordering::Relaxed);
        }
        if let Some(rss) = field("VmRSS:") {
            self.rss_kib.store(rss, Ordering::Relaxed);
        }
    }
}

/// Samples the running daemon's memory every second until `stop`.
pub fn spawn_sampler(mem: Arc<Mem>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    thread::Builder::new()
        .name("rss-sampler".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                mem.sample();
                thread::sleep(Duration::from_secs(1));
            }
        })
        .expect("spawning the sampler thread")
}

/// How a daemon process ended: "exit 0", "signal 9".
fn describe(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status:#x}")
    }
}

/// A command to spawn, and where to send the child's pid.
type Spawn = (Command, Sender<io::Result<u32>>);

/// The thread that spawns every daemon; it ends when the sender is dropped.
fn launcher() -> Sender<Spawn> {
    let (tx, rx) = mpsc::channel::<Spawn>();
    thread::Builder::new()
        .name("launcher".into())
        .spawn(move || {
            for (mut cmd, reply) in rx {
                // The `Child` is dropped here: the daemon is reaped with waitpid, by pid.
                let _ = reply.send(cmd.spawn().map(|c| c.id()));
            }
        })
        .expect("spawning the launcher thread");
    tx
}

/// One daemon process, once reaped: for the summary's "which one peaked".
#[derive(Clone)]
pub struct Life {
    pub pid: i32,
    /// Started and ended, seconds into the episode.
    pub from: f64,
    pub to: f64,
    /// "exit 0", "signal 9".
    pub end: String,
    /// Its VmHWM at the last sample before it ended, KiB.
    pub peak_kib: u64,
}

pub struct Daemon {
    launcher: Sender<Spawn>,
    started: Instant,
    /// When the running process was started.
    since: Instant,
    /// Every reaped process.
    pub lives: Vec<Life>,
    bin: PathBuf,
    config: PathBuf,
    pub stderr: PathBuf,
    clock: Arc<ModelClock>,
    pid: i32,
    pub mem: Arc<Mem>,
    /// Processes started.
    pub starts: u32,
    /// What the daemon's commands printed, for the secrets check.
    pub captured: Arc<Mutex<Vec<String>>>,
    /// Where the running process's lines begin in `stderr`.
    pub log_offset: u64,
}

impl Daemon {
    pub fn new(
        bin: &Path,
        config: &Path,
        stderr: &Path,
        clock: Arc<ModelClock>,
        started: Instant,
    ) -> Daemon {
        Daemon {
            launcher: launcher(),
            started,
            since: started,
            lives: Vec::new(),
            bin: bin.to_path_buf(),
            config: config.to_path_buf(),
            stderr: stderr.to_path_buf(),
            clock,
            pid: 0,
            mem: Arc::new(Mem::default()),
            starts: 0,
            captured: Arc::new(Mutex::new(Vec::new())),
            log_offset: 0,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// "pid 123 (12.0–40.5 s, signal 9): peak RSS 20.1 MiB" for the last reaped process.
    pub fn last_life(&self) -> String {
        self.lives.last().map_or_else(String::new, |l| {
            format!(
                "pid {} ({:.1}–{:.1} s, {}): peak RSS {}",
                l.pid,
                l.from,
                l.to,
                l.end,
                super::report::mib(l.peak_kib)
            )
        })
    }

    fn base_command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c")
            .arg(&self.config)
            .env("TZ", "UTC")
            .env("SEGA_TEST_CLOCK_STEP", self.clock.step_file().as_os_str())
            .env_remove("SEGA_LOG")
            .env_remove("SEGA_CONFIG")
            .env_remove("SEGA_TEST_NOW")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null());
        // Commands see the daemon's clock too: their "today" is the daemon's.
        if let Some(now) = self.clock.test_now() {
            cmd.env("SEGA_TEST_NOW", now);
        }
        cmd
    }

    /// Starts `run` and waits (60 s at most) for its "ready:" line.
    pub fn start(&mut self) -> io::Result<()> {
        assert_eq!(self.pid, 0, "one daemon at a time");
        let offset = log_len(&self.stderr);
        self.log_offset = offset;
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)?;
        let mut cmd = self.base_command();
        cmd.arg("run").stdout(Stdio::null()).stderr(err);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The engine died between fork and prctl: no signal will come, so go now.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        self.launcher
            .send((cmd, tx))
            .map_err(|_| io::Error::other("the launcher thread is gone"))?;
        let pid = rx
            .recv()
            .map_err(|_| io::Error::other("the launcher thread is gone"))??;
        // Reaped with waitpid by `Daemon::reap`, not through `Child`.
        self.pid = pid as i32;
        self.starts += 1;
        self.since = Instant::now();
        self.mem.hwm_kib.store(0, Ordering::Relaxed);
        self.mem.pid.store(self.pid, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if log_since(&self.stderr, offset).contains("ready:") {
                return Ok(());
            }
            if let Some(how) = self.exited() {
                return Err(io::Error::other(format!(
                    "the daemon ended before it was ready ({how})"
                )));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(io::Error::other("no \"ready:\" line within 60 s: killed"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        if self.pid > 0 {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// Reaps the daemon if it has ended; how it ended.
    pub fn exited(&mut self) -> Option<String> {
        self.reap(Duration::ZERO)
    }

    fn reap(&mut self, timeout: Duration) -> Option<String> {
        if self.pid <= 0 {
            return None;
        }
        let deadline = Instant::now() + timeout;
        loop {
            // The last look at its memory before it is gone (a zombie has no VmHWM).
            self.mem.sample();
            let mut status = 0;
            // SAFETY: waitpid has no memory-safety preconditions; the pid is our child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                let at = |t: Instant| t.duration_since(self.started).as_secs_f64();
                self.lives.push(Life {
                    pid: self.pid,
                    from: at(self.since),
                    to: at(Instant::now()),
                    end: describe(status),
                    peak_kib: self.mem.hwm_kib.load(Ordering::Relaxed),
                });
                self.mem.pid.store(0, Ordering::Relaxed);
                self.pid = 0;
                return Some(describe(status));
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and the reaping.
    pub fn kill(&mut self) {
        self.mem.sample();
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGKILL);
        let _ = self.reap(Duration::from_secs(30));
    }

    /// SIGTERM and the exit: how it ended and how long it took, or an error if it did not
    /// end within `timeout` (then it is killed).
    pub fn terminate(&mut self, timeout: Duration) -> Result<(String, Duration), String> {
        self.mem.sample();
        let t0 = Instant::now();
        self.signal(libc::SIGTERM);
        match self.reap(timeout) {
            Some(how) => Ok((how, t0.elapsed())),
            None => {
                self.kill();
                Err(format!("still running {timeout:?} after SIGTERM: killed"))
            }
        }
    }

    /// Runs a command of the daemon's (`status --json`…) with the daemon's config and clock;
    /// its stdout. What it printed is kept for the secrets check.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut cmd = self.base_command();
        let out = cmd.args(args).output().ok()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut c = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        c.push(stdout.clone());
        c.push(String::from_utf8_lossy(&out.stderr).into_owned());
        Some(stdout)
    }

    /// `status --json`: (pending, uploading) rows, if it answered.
    pub fn pending(&self) -> Option<(u64, u64)> {
        let out = self.command(&["status", "--json"])?;
        let v: Value = serde_json::from_str(&out).ok()?;
        let n = |k: &str| v["totals"][k].as_u64();
        Some((n("pending")?, n("uploading")?))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.pid > 0 {
            self.kill();
        }
    }
}

/// The size of a log file (0 if missing): an offset to read new lines from.
pub fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// What a log file gained after `offset`.
pub fn log_since(path: &Path, offset: u64) -> String {
    let mut seen = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut seen);
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Waits until a log gains, after `offset`, a line holding one of `needles`; false after
/// `timeout`.
pub fn wait_log(path: &Path, offset: u64, needles: &[&str], timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        let text = log_since(path, offset);
        if needles.iter().any(|n| text.contains(n)) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
