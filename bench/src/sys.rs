//! What the bench asks the operating system: local dates, the daemon's memory and CPU time
//! from /proc, and a description of the machine for the report. (Children's exits and
//! signals: the harness, [`sega_testsrv::daemon`].)

use std::fs;
use std::io;
use std::path::Path;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

/// Broken-down time from `localtime_r` (`local`) or `gmtime_r`.
fn tm_of(secs: i64, local: bool) -> libc::tm {
    let t: libc::time_t = secs;
    // SAFETY: an all-zero tm is a valid value; both functions only write into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe {
        if local {
            libc::localtime_r(&t, &mut tm);
        } else {
            libc::gmtime_r(&t, &mut tm);
        }
    }
    tm
}

fn unix_secs(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(_) => (0, 0),
    }
}

/// The local date `days` from now as `YYYY-MM-DD`: the daemon's date folder names.
pub fn local_date(days: i64) -> String {
    let (secs, _) = unix_secs(SystemTime::now());
    let tm = tm_of(secs + days * 86_400, true);
    format!(
        "{:04}-{:02}-{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday
    )
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: the one timestamp format of the daemon's database.
pub fn db_timestamp(t: SystemTime) -> String {
    let (secs, ms) = unix_secs(t);
    let tm = tm_of(secs, false);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Memory and CPU of a running process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    pub hwm_kib: u64,
    /// CPU time of the live threads, ns (sum of /proc/PID/task/*/schedstat): precise, but
    /// threads that already ended are not counted.
    pub cpu_ns: u64,
    /// utime + stime of the whole process including ended threads, ns (10 ms resolution).
    pub cpu_ticks_ns: u64,
    /// CPU time of the daemon's DB owner (the thread named `db`), ns, from its schedstat:
    /// the part of the daemon's CPU that the ledger's work costs, without the workers' TCP.
    pub owner_cpu_ns: u64,
}

pub fn proc_stats(pid: i32) -> io::Result<ProcStats> {
    let mem = sega_testsrv::daemon::memory(pid).unwrap_or_default();
    let (mut cpu_ns, mut owner_cpu_ns) = (0, 0);
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(task) = task else { continue };
        // A thread can end between the listing and the read: skip it.
        if let Ok(s) = fs::read_to_string(task.path().join("schedstat")) {
            let ns = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            cpu_ns += ns;
            if fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim_end() == "db") {
                owner_cpu_ns += ns;
            }
        }
    }
    Ok(ProcStats {
        rss_kib: mem.rss_kib,
        hwm_kib: mem.hwm_kib,
        cpu_ns,
        cpu_ticks_ns: cpu_ticks_ns(pid).unwrap_or(0),
        owner_cpu_ns,
    })
}

fn cpu_ticks_ns(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn cpus() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn mem_total_gib() -> f64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0 / 1024.0)
}

pub fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The filesystem type name of `path` (ext4, overlay, tmpfs…), from /proc/mounts: the
/// longest mount point that is a prefix of the path.
pub fn fs_type(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((*f.get(1)?, *f.get(2)?))
        })
        .filter(|(mp, _)| path.starts_with(mp))
        .max_by_key(|(mp, _)| mp.len())
        .map(|(_, t)| t.to_string())
        .unwrap_or_default()
}

/// Where a program is on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn db_timestamp_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_737_599_123);
        assert_eq!(db_timestamp(t), "2026-11-26T23:59:59.123Z");
    }

    #[test]
    fn own_process_stats() {
        let s = proc_stats(std::process::id() as i32).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib && s.cpu_ns > 0);
    }
}
