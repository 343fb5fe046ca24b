//! sega-uploader under the bench: its config file, a `NOTIFY_SOCKET` we bind (READY=1, and
//! the STATUS/WATCHDOG messages drained so the daemon never waits on a full socket), its
//! stderr (to a file, or through a reader thread that timestamps every line), signals, and
//! its exit with resource usage. Dropping a `Daemon` stops it.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::sys::{self, Exit, ProcStats};

/// The config keys the benches set; everything else keeps the daemon's defaults.
pub struct Settings<'a> {
    pub root: &'a Path,
    pub folders: &'a [&'a str],
    pub db: &'a Path,
    pub url: &'a str,
    pub workers: usize,
    pub settle_secs: u64,
    pub scan_interval_secs: u64,
    pub log_level: &'a str,
}

pub fn write_config(path: &Path, s: &Settings<'_>) -> io::Result<()> {
    let text = |p: &Path| p.to_string_lossy().into_owned();
    let cfg = json!({
        "watch": {
            "root": text(s.root),
            "folders": s.folders,
            "settle_secs": s.settle_secs,
            "scan_interval_secs": s.scan_interval_secs,
        },
        "upload": { "url": s.url, "workers": s.workers },
        "database": { "path": text(s.db) },
        "log": { "level": s.log_level },
    });
    fs::write(path, format!("{cfg:#}\n"))
}

/// A timestamped message: a notify datagram or a log line.
pub type Stamped = (Instant, String);

pub struct Daemon {
    pub pid: i32,
    /// Just before fork/exec.
    pub spawned: Instant,
    notify: Receiver<Stamped>,
    lines: Option<Receiver<Stamped>>,
    log_path: PathBuf,
    sock_path: PathBuf,
    stop_notify: Arc<AtomicBool>,
    exit: Option<Exit>,
}

impl Daemon {
    /// Starts `bin -c config run` with its notify socket and log in `dir`. With `pipe_lines`,
    /// stderr goes through a reader thread (for `wait_line`), else straight to the log file.
    pub fn start(
        bin: &Path,
        config: &Path,
        dir: &Path,
        pipe_lines: bool,
        env: &[(&str, &str)],
    ) -> io::Result<Daemon> {
        let sock_path = dir.join("notify.sock");
        let _ = fs::remove_file(&sock_path);
        let sock = UnixDatagram::bind(&sock_path)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop_notify = Arc::new(AtomicBool::new(false));
        let (ntx, notify) = mpsc::channel();
        let stop = stop_notify.clone();
        thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                let mut buf = vec![0u8; 8192];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let _ = ntx.send((Instant::now(), msg));
                    }
                }
            })?;

        let log_path = dir.join("daemon.log");
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(config)
            .arg("run")
            .env_remove("SEGA_LOG")
            .env_remove("SEGA_CONFIG")
            .env_remove("SEGA_TEST_NOW")
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_PID")
            .env("NOTIFY_SOCKET", &sock_path)
            // As under the unit's WatchdogSec=30: the daemon pings every 5 s.
            .env("WATCHDOG_USEC", "30000000")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if pipe_lines {
            cmd.stderr(Stdio::piped());
        } else {
            cmd.stderr(File::create(&log_path)?);
        }
        let spawned = Instant::now();
        let mut child = cmd.spawn()?;
        let pid = child.id() as i32;
        let lines = match child.stderr.take() {
            Some(stderr) => {
                let (ltx, lrx) = mpsc::channel();
                let mut log = File::create(&log_path)?;
                thread::Builder::new()
                    .name("daemon-log".into())
                    .spawn(move || {
                        for line in BufReader::new(stderr).lines() {
                            let Ok(line) = line else { break };
                            let now = Instant::now();
                            let _ = writeln!(log, "{line}");
                            let _ = ltx.send((now, line));
                        }
                    })?;
                Some(lrx)
            }
            None => None,
        };
        // The child is reaped with wait4 (for its rusage), not through `Child`.
        drop(child);
        Ok(Daemon {
            pid,
            spawned,
            notify,
            lines,
            log_path,
            sock_path,
            stop_notify,
            exit: None,
        })
    }

    /// Start-up to READY=1.
    pub fn wait_ready(&self, timeout: Duration) -> io::Result<Duration> {
        let deadline = Instant::now() + timeout;
        let mut other = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.notify.recv_timeout(left) {
                Ok((t, msg)) if msg.contains("READY=1") => return Ok(t - self.spawned),
                Ok((_, msg)) => other.push(msg.replace('\n', " ")),
                Err(e) => {
                    let why = format!(
                        "no READY=1 within {} s ({e:?}; other notify messages: {other:?})",
                        timeout.as_secs()
                    );
                    return Err(self.failure(&why));
                }
            }
        }
    }

    /// The next stderr line containing `needle` (needs `pipe_lines`).
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> Option<Stamped> {
        wait_for(self.lines.as_ref()?, needle, timeout)
    }

    /// An error naming what did not happen, with the end of the daemon's log.
    pub fn failure(&self, what: &str) -> io::Error {
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::other(format!(
            "{what} (daemon pid {}, log {}):\n  {}",
            self.pid,
            self.log_path.display(),
            tail.join("\n  ")
        ))
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn stats(&self) -> ProcStats {
        sys::proc_stats(self.pid).unwrap_or_default()
    }

    /// SIGTERM, then the exit (SIGKILL if it has not ended within 30 s).
    pub fn stop(&mut self) -> Option<Exit> {
        if self.exit.is_none() {
            sys::signal(self.pid, libc::SIGTERM, false);
            self.exit = sys::wait_child(self.pid, Duration::from_secs(30)).or_else(|| {
                sys::signal(self.pid, libc::SIGKILL, false);
                sys::wait_child(self.pid, Duration::from_secs(5))
            });
            self.stop_notify.store(true, Ordering::Relaxed);
            let _ = fs::remove_file(&self.sock_path);
        }
        self.exit
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for(rx: &Receiver<Stamped>, needle: &str, timeout: Duration) -> Option<Stamped> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((t, msg)) if msg.contains(needle) => return Some((t, msg)),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
        }
    }
}
