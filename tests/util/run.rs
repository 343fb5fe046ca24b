//! The binary's commands and daemons for a test: the command with the env's config and
//! clock, its output kept for the secrets check, the daemon started through the harness
//! ([`sega_testsrv::daemon`]) with its log in the env's directory, and a notify socket.
//! The waits fail the test after their timeout.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sega_testsrv::daemon::{self as harness, out, Out, Start};

use super::{wait_until, Env, BIN, DEADLINE};

impl Env {
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_with_config(&self.config_path, args)
    }

    pub fn cmd_with_config(&self, config: &Path, args: &[&str]) -> Command {
        self.cmd_of(Path::new(BIN), config, args)
    }

    pub(super) fn cmd_of(&self, bin: &Path, config: &Path, args: &[&str]) -> Command {
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

    /// A daemon whose `database.host` is `host` (see `host_config`).
    pub fn start_daemon_as(&self, host: &str) -> Daemon {
        let config = self.host_config(host);
        self.spawn_daemon(&config, |_| {})
    }

    fn spawn_daemon(&self, config: &Path, tweak: impl FnOnce(&mut Command)) -> Daemon {
        self.spawn(self.cmd_with_config(config, &["run"]), tweak)
    }

    pub fn spawn(&self, mut c: Command, tweak: impl FnOnce(&mut Command)) -> Daemon {
        let n = self.logs.lock().unwrap().len();
        let log = self.dir.join(format!("daemon-{n}.log"));
        tweak(&mut c);
        let d = Start::new(c, &log).spawn().unwrap();
        self.logs.lock().unwrap().push(log);
        Daemon(d)
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
