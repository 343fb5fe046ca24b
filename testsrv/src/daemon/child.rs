//! Any child process of ours (the daemon, a `scan`, curl): its exit with its resource usage
//! (wait4), signals by pid, and its memory from /proc.

use std::fs;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

/// How a child ended, and what it used (its own and its reaped descendants' resources).
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// The wait status, as `waitpid` reports it.
    pub status: i32,
    /// User CPU time.
    pub user: Duration,
    /// System CPU time.
    pub system: Duration,
    /// ru_maxrss: the largest RSS of it or any reaped descendant, KiB. It counts the forked
    /// copy of the parent before exec too; [`memory`] read while it runs does not.
    pub maxrss_kib: u64,
}

impl Exit {
    /// The exit code, or 128 + signal.
    pub fn code(&self) -> i32 {
        if libc::WIFEXITED(self.status) {
            libc::WEXITSTATUS(self.status)
        } else {
            128 + libc::WTERMSIG(self.status)
        }
    }

    /// How it ended: "exit 0", "signal 9".
    pub fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("status {:#x}", self.status)
        }
    }

    /// User + system CPU time.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// Reaps our child `pid` if it has ended: `Ok(None)` while it runs, an error if it is not
/// (or no longer) our child.
fn reap(pid: i32) -> io::Result<Option<Exit>> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 writes into both out-parameters.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r == pid).then(|| Exit {
        status,
        user: tv(ru.ru_utime),
        system: tv(ru.ru_stime),
        maxrss_kib: ru.ru_maxrss as u64,
    }))
}

/// Reaps our child `pid` if it has ended; None if it is still running (or not ours).
pub fn try_wait_child(pid: i32) -> Option<Exit> {
    reap(pid).ok().flatten()
}

/// Waits up to `timeout` for our child `pid` to end; None if it is still running (or not
/// ours).
pub fn wait_child(pid: i32, timeout: Duration) -> Option<Exit> {
    let deadline = Instant::now() + timeout;
    loop {
        match reap(pid) {
            Ok(Some(exit)) => return Some(exit),
            Ok(None) => {}
            // EINTR: retry.
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `sig` to our own child `pid` (nothing for a pid of 0 or less: that would reach a
/// whole process group).
pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill has no memory-safety preconditions; pid is a child we started.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// A running process's memory, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB. It only grows: its last value before the exit is the peak of
    /// the whole run (a zombie has none).
    pub hwm_kib: u64,
}

/// The memory of `pid`; None once it is gone (or a zombie).
pub fn memory(pid: i32) -> Option<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// A process's peak RSS (VmHWM) in KiB, 0 once it is gone.
pub fn vm_hwm_kib(pid: i32) -> u64 {
    memory(pid).map_or(0, |m| m.hwm_kib)
}

/// Polls `done` every `pause` until it holds (true) or `timeout` has passed (false).
pub(super) fn poll(timeout: Duration, pause: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_and_a_child_exit() {
        let m = memory(std::process::id() as i32).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
        let pid = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap()
            .id() as i32;
        let exit = wait_child(pid, Duration::from_secs(10)).unwrap();
        assert_eq!((exit.code(), exit.describe().as_str()), (3, "exit 3"));
        let pid = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap()
            .id() as i32;
        signal(pid, libc::SIGKILL);
        let exit = wait_child(pid, Duration::from_secs(10)).unwrap();
        assert_eq!((exit.code(), exit.describe().as_str()), (137, "signal 9"));
    }
}
