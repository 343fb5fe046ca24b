//! sega-uploader as a child process: the one harness through which the integration tests,
//! the bench and the soak start the daemon. The base command ([`command`]: `BIN -c CONFIG`
//! with the caller's environment cleaned of what would change the daemon), starting it
//! ([`Start`]) with stderr in a log file or through a reader thread that stamps each line,
//! its own `NOTIFY_SOCKET` ([`Notify`]) and READY=1, signals, reaping with wait4, and the
//! peak memory (VmHWM) seen while it ran. What each user configures, and how it waits for
//! its own events, stays with it.
//!
//! A [`Daemon`] is our child, signalled only by its pid and reaped by it; dropping it kills
//! and reaps the process (continuing it first, in case it is stopped). With a [`Launcher`],
//! the kernel kills it too if our process ends (PR_SET_PDEATHSIG).
//!
//! Also here, for any child (a `scan`, curl): [`wait_child`], [`signal`], [`memory`]; the
//! log-file helpers ([`log_since`], [`wait_log`], [`tail`]); and what commands print
//! ([`Out`], [`Captured`]).

mod child;
mod launcher;
mod log;
mod notify;
mod output;

pub use child::{memory, signal, try_wait_child, vm_hwm_kib, wait_child, Exit, Memory};
pub use launcher::Launcher;
pub use log::{last_lines, log_len, log_since, tail, wait_log};
pub use notify::{Notify, Stamped};
pub use output::{out, Captured, Out};

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use child::poll;

/// `bin -c config`, with stdin from /dev/null and none of the variables of ours that would
/// change the daemon (a log level, another config, a fixed clock, systemd's sockets and
/// watchdog): each caller adds its own (`run` or a command, `TZ`, `NOTIFY_SOCKET`…).
pub fn command(bin: &Path, config: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("-c").arg(config).stdin(Stdio::null());
    for var in [
        "SEGA_LOG",
        "SEGA_CONFIG",
        "SEGA_TEST_NOW",
        "NOTIFY_SOCKET",
        "JOURNAL_STREAM",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
    ] {
        c.env_remove(var);
    }
    c
}

/// How to start a daemon: its command (see [`command`]) and where its stderr goes.
pub struct Start<'a> {
    cmd: Command,
    log: PathBuf,
    append: bool,
    lines: bool,
    notify: Option<Notify>,
    launcher: Option<&'a Launcher>,
}

impl<'a> Start<'a> {
    /// Stdout to /dev/null, stderr to the file `log` (created afresh).
    pub fn new(cmd: Command, log: &Path) -> Start<'a> {
        Start {
            cmd,
            log: log.to_path_buf(),
            append: false,
            lines: false,
            notify: None,
            launcher: None,
        }
    }

    /// Appends to the log instead (one file for several lives of the daemon; the process
    /// reads its own part, from where the file ended).
    pub fn append(mut self) -> Start<'a> {
        self.append = true;
        self
    }

    /// Stderr through a reader thread that writes each line to the log and stamps it, for
    /// [`Daemon::wait_line`].
    pub fn lines(mut self) -> Start<'a> {
        self.lines = true;
        self
    }

    /// Hands the daemon `notify` as its `NOTIFY_SOCKET`, for [`Daemon::wait_ready`].
    pub fn notify(mut self, notify: Notify) -> Start<'a> {
        self.cmd.env("NOTIFY_SOCKET", &notify.path);
        self.notify = Some(notify);
        self
    }

    /// Spawned by `launcher`'s thread, with PR_SET_PDEATHSIG.
    pub fn via(mut self, launcher: &'a Launcher) -> Start<'a> {
        self.launcher = Some(launcher);
        self
    }

    /// Spawns it (the clock of [`Daemon::spawned`] starts just before).
    pub fn spawn(self) -> io::Result<Daemon> {
        let Start {
            mut cmd,
            log,
            append,
            lines,
            notify,
            launcher,
        } = self;
        let log_offset = if append { log::log_len(&log) } else { 0 };
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(append)
                .write(true)
                .truncate(!append)
                .open(&log)
        };
        cmd.stdout(Stdio::null());
        let mut sink = None;
        if lines {
            cmd.stderr(Stdio::piped());
            sink = Some(open()?);
        } else {
            cmd.stderr(open()?);
        }
        let spawned = Instant::now();
        let mut child: Child = match launcher {
            Some(l) => l.spawn(cmd)?,
            None => cmd.spawn()?,
        };
        let lines = match (child.stderr.take(), sink) {
            (Some(stderr), Some(sink)) => Some(read_lines(stderr, sink)?),
            _ => None,
        };
        // The child is reaped with wait4 (for its rusage), by pid, not through `Child`.
        let pid = child.id() as i32;
        drop(child);
        Ok(Daemon {
            pid,
            spawned,
            log,
            log_offset,
            lines,
            notify,
            exit: None,
            peak_kib: 0,
        })
    }
}

/// The `daemon-log` thread: every stderr line to the log file and, stamped, to the channel.
fn read_lines(
    stderr: impl io::Read + Send + 'static,
    mut log: File,
) -> io::Result<Receiver<Stamped>> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("daemon-log".into())
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let now = Instant::now();
                let _ = writeln!(log, "{line}");
                let _ = tx.send((now, line));
            }
        })?;
    Ok(rx)
}

/// A running (or reaped) daemon process.
pub struct Daemon {
    pid: i32,
    /// Just before fork/exec.
    pub spawned: Instant,
    log: PathBuf,
    /// Where this process's lines begin in `log`.
    log_offset: u64,
    lines: Option<Receiver<Stamped>>,
    notify: Option<Notify>,
    exit: Option<Exit>,
    /// The largest VmHWM read so far, KiB.
    peak_kib: u64,
}

impl Daemon {
    /// Its pid (still the same once it is reaped).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The file its stderr goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Where this process's lines begin in its log file.
    pub fn log_offset(&self) -> u64 {
        self.log_offset
    }

    /// What this process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        log::log_since(&self.log, self.log_offset)
    }

    /// The notify socket handed to it, if any.
    pub fn notify(&mut self) -> Option<&mut Notify> {
        self.notify.as_mut()
    }

    /// Sends `sig`; nothing once it is reaped.
    pub fn signal(&self, sig: i32) {
        if self.exit.is_none() {
            signal(self.pid, sig);
        }
    }

    /// Start-up to READY=1 on its notify socket, or an error (with the end of its log).
    pub fn wait_ready(&mut self, timeout: Duration) -> io::Result<Duration> {
        let Some(n) = self.notify.as_mut() else {
            return Err(self.failure("wait_ready: the daemon has no notify socket"));
        };
        match n.wait_for("READY=1", 0, timeout) {
            Ok(i) => Ok(n.got[i].0 - self.spawned),
            Err(e) => Err(self.failure(&e)),
        }
    }

    /// Waits until its log holds `needle` (polling every 20 ms); an error after `timeout`,
    /// or as soon as the process has ended without writing it.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let mut ended = None;
        let found = poll(timeout, Duration::from_millis(20), || {
            // The exit is looked at first: a line written just before it is still found.
            ended = self.try_exit();
            ended.is_some() || self.log_text().contains(needle)
        });
        match ended {
            _ if found && self.log_text().contains(needle) => Ok(()),
            Some(exit) => Err(format!(
                "the daemon ended ({}) without a log line containing {needle:?}",
                exit.describe()
            )),
            None => Err(format!(
                "timeout waiting for a log line containing {needle:?} (after {timeout:?})"
            )),
        }
    }

    /// The next stderr line containing `needle` (needs [`Start::lines`]).
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> Option<Stamped> {
        let rx = self.lines.as_ref()?;
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

    /// An error naming what did not happen, with the end of the daemon's log.
    pub fn failure(&self, what: &str) -> io::Error {
        io::Error::other(format!(
            "{what} (daemon pid {}, log {}):\n  {}",
            self.pid,
            self.log.display(),
            log::last_lines(&self.log_text(), 15).replace('\n', "\n  ")
        ))
    }

    /// Its memory now (None once it has ended); the peak is kept for [`Daemon::peak_kib`].
    pub fn memory(&mut self) -> Option<Memory> {
        if self.exit.is_some() {
            return None;
        }
        let m = memory(self.pid)?;
        self.peak_kib = self.peak_kib.max(m.hwm_kib);
        Some(m)
    }

    /// The largest VmHWM read while it ran (at every [`Daemon::memory`] and every look at
    /// whether it has ended), KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak_kib
    }

    /// How it ended, if it has been reaped.
    pub fn exit(&self) -> Option<Exit> {
        self.exit
    }

    /// Reaps it if it has ended; how it ended.
    pub fn try_exit(&mut self) -> Option<Exit> {
        if self.exit.is_none() {
            // The last look at its memory before it is gone (a zombie has no VmHWM).
            self.memory();
            self.exit = try_wait_child(self.pid);
        }
        self.exit
    }

    /// Waits up to `timeout` for it to end; how it ended, or None if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Exit> {
        poll(timeout, Duration::from_millis(10), || {
            self.try_exit().is_some()
        });
        self.exit
    }

    /// Still running (it is reaped if it has ended).
    pub fn alive(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// SIGTERM and up to `timeout` for the exit (None if it still runs: then the caller
    /// decides).
    pub fn terminate(&mut self, timeout: Duration) -> Option<Exit> {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    /// SIGCONT (a stopped process would not die before it runs again), SIGKILL, and the
    /// reaping (30 s at most: a process stuck in the kernel may take a moment).
    pub fn kill(&mut self) -> Option<Exit> {
        self.memory();
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(30))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill();
        }
        // Then the notify thread stops and its socket file goes.
    }
}
