//! sega-uploader under the bench: its config file, and how the bench starts it through the
//! harness ([`sega_testsrv::daemon`]): with a `NOTIFY_SOCKET` (READY=1), stderr to a file or
//! through a reader thread that timestamps every line, and the watchdog on as under the
//! unit; its memory and CPU while it runs, and its exit with resource usage. Dropping a
//! `Daemon` stops it (SIGTERM first).

use std::fs;
use std::io;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use sega_testsrv::daemon::{self as harness, Exit, Launcher, Notify, Start};
use serde_json::json;

use crate::sys::{self, ProcStats};

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

/// The daemon as the bench runs it: the harness's, stopped with SIGTERM.
pub struct Daemon(harness::Daemon);

/// Every daemon is spawned by one launcher thread that lives as long as the bench: a bench
/// killed mid-run takes its daemons with it (PR_SET_PDEATHSIG), where an orphan went on
/// running, and using CPU beside the next runs' measurements.
fn launcher() -> io::Result<&'static Launcher> {
    static LAUNCHER: OnceLock<Launcher> = OnceLock::new();
    if let Some(l) = LAUNCHER.get() {
        return Ok(l);
    }
    let l = Launcher::new()?;
    Ok(LAUNCHER.get_or_init(|| l))
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
        let notify = Notify::bind(&dir.join("notify.sock"))?;
        let mut cmd = harness::command(bin, config);
        // As under the unit's WatchdogSec=30: the daemon pings every 5 s.
        cmd.arg("run").env("WATCHDOG_USEC", "30000000");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let start = Start::new(cmd, &dir.join("daemon.log"))
            .notify(notify)
            .via(launcher()?);
        let start = if pipe_lines { start.lines() } else { start };
        Ok(Daemon(start.spawn()?))
    }

    pub fn stats(&self) -> ProcStats {
        sys::proc_stats(self.pid()).unwrap_or_default()
    }

    /// SIGTERM, then the exit (SIGKILL if it has not ended within 30 s).
    pub fn stop(&mut self) -> Option<Exit> {
        self.0
            .terminate(Duration::from_secs(30))
            .or_else(|| self.0.kill())
    }
}

impl Deref for Daemon {
    type Target = harness::Daemon;

    fn deref(&self) -> &harness::Daemon {
        &self.0
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut harness::Daemon {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
