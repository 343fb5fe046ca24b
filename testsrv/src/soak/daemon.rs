//! sega-uploader under the engine: its config (with seeded secrets, and narrowed on demand),
//! starting it through the harness ([`crate::daemon`], waiting for "ready:"), signals, its
//! lives, a sampler thread that reads VmHWM and VmRSS from /proc every second, and its
//! commands (`status --json`, `show`), whose output is kept for the secrets check.
//!
//! The daemon is our child: it is only ever signalled by its pid, and `Drop` kills and reaps
//! it (continuing it first, in case it is stopped). If the engine's process ends (killed, or
//! a panic), the kernel kills the daemon: every daemon is spawned by one [`Launcher`] that
//! lives as long as the `Daemon`, not by whichever injector restarts it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::{self as harness, out, Captured, Launcher, Start};

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
        let Some(m) = harness::memory(pid) else {
            return;
        };
        self.hwm_kib.fetch_max(m.hwm_kib, Ordering::Relaxed);
        self.max_hwm_kib.fetch_max(m.hwm_kib, Ordering::Relaxed);
        self.rss_kib.store(m.rss_kib, Ordering::Relaxed);
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
    launcher: Launcher,
    started: Instant,
    /// When the running process was started.
    since: Instant,
    /// Every reaped process.
    pub lives: Vec<Life>,
    bin: PathBuf,
    config: PathBuf,
    pub stderr: PathBuf,
    clock: Arc<ModelClock>,
    /// The running process.
    proc: Option<harness::Daemon>,
    pub mem: Arc<Mem>,
    /// Processes started.
    pub starts: u32,
    /// What the daemon's commands printed, for the secrets check.
    pub captured: Captured,
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
    ) -> io::Result<Daemon> {
        Ok(Daemon {
            launcher: Launcher::new()?,
            started,
            since: started,
            lives: Vec::new(),
            bin: bin.to_path_buf(),
            config: config.to_path_buf(),
            stderr: stderr.to_path_buf(),
            clock,
            proc: None,
            mem: Arc::new(Mem::default()),
            starts: 0,
            captured: Captured::default(),
            log_offset: 0,
        })
    }

    pub fn pid(&self) -> i32 {
        self.proc.as_ref().map_or(0, |p| p.pid())
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
        let mut cmd = harness::command(&self.bin, &self.config);
        cmd.env("TZ", "UTC")
            .env("SEGA_TEST_CLOCK_STEP", self.clock.step_file().as_os_str());
        // Commands see the daemon's clock too: their "today" is the daemon's.
        if let Some(now) = self.clock.test_now() {
            cmd.env("SEGA_TEST_NOW", now);
        }
        cmd
    }

    /// Starts `run` and waits (60 s at most) for its "ready:" line.
    pub fn start(&mut self) -> io::Result<()> {
        assert!(self.proc.is_none(), "one daemon at a time");
        let mut cmd = self.base_command();
        cmd.arg("run");
        let mut p = Start::new(cmd, &self.stderr)
            .append()
            .via(&self.launcher)
            .spawn()?;
        self.log_offset = p.log_offset();
        self.starts += 1;
        self.since = Instant::now();
        self.mem.hwm_kib.store(0, Ordering::Relaxed);
        self.mem.pid.store(p.pid(), Ordering::Relaxed);
        let ready = p.wait_log("ready:", Duration::from_secs(60));
        self.proc = Some(p);
        if ready.is_ok() {
            return Ok(());
        }
        if let Some(how) = self.exited() {
            return Err(io::Error::other(format!(
                "the daemon ended before it was ready ({how})"
            )));
        }
        self.kill();
        Err(io::Error::other("no \"ready:\" line within 60 s: killed"))
    }

    pub fn signal(&self, sig: i32) {
        if let Some(p) = &self.proc {
            p.signal(sig);
        }
    }

    /// Reaps the daemon if it has ended; how it ended.
    pub fn exited(&mut self) -> Option<String> {
        self.reap(Duration::ZERO)
    }

    fn reap(&mut self, timeout: Duration) -> Option<String> {
        let p = self.proc.as_mut()?;
        // Every look at whether it ended reads its memory first (a zombie has no VmHWM).
        let exit = p.wait_exit(timeout)?;
        let peak = p.peak_kib().max(self.mem.hwm_kib.load(Ordering::Relaxed));
        self.mem.max_hwm_kib.fetch_max(peak, Ordering::Relaxed);
        let at = |t: Instant| t.duration_since(self.started).as_secs_f64();
        self.lives.push(Life {
            pid: p.pid(),
            from: at(self.since),
            to: at(Instant::now()),
            end: exit.describe(),
            peak_kib: peak,
        });
        self.mem.pid.store(0, Ordering::Relaxed);
        self.proc = None;
        Some(exit.describe())
    }

    /// SIGKILL, and the reaping.
    pub fn kill(&mut self) {
        if let Some(p) = &mut self.proc {
            p.kill();
        }
        let _ = self.reap(Duration::ZERO);
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
        let o = out(cmd.args(args).output().ok()?);
        Some(self.captured.keep(o).stdout)
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
        self.kill();
    }
}
