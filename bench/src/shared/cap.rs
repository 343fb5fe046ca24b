//! A CPU cap for one daemon: a cgroup of its own with a CFS quota, so that each daemon has a
//! fixed share of a core, as each host of a real site has its own CPU.
//!
//! Why: on this 2-core box the daemons, the PostgreSQL server and the endpoint share the
//! same cores, and one host already keeps them busy; a second host then splits them, and
//! "two hosts over one" measures the box, not the shared ledger. Held to a share each, the
//! hosts are limited by their own CPU, and what the second host adds shows whether the
//! ledger lets them work side by side (the server and the endpoint are not held).
//!
//! cgroup v1 (`/sys/fs/cgroup/cpu/`, `cpu.cfs_quota_us`) or v2 (`cpu.max`), as root;
//! elsewhere `CpuCap::new` fails and the capped variants are skipped.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

const PERIOD_US: u64 = 100_000;

pub struct CpuCap {
    dir: PathBuf,
}

impl CpuCap {
    /// A new cgroup `name` allowed `share` of one core (0.25: a quarter), tried on a child
    /// first: a cgroup that can be made but takes no process (a v2 hierarchy not delegated
    /// to us) fails here, before any run, and the capped variants are skipped.
    pub fn new(name: &str, share: f64) -> io::Result<CpuCap> {
        let cap = Self::make_with_quota(name, share)?;
        let mut child = Command::new("sleep").arg("30").spawn()?;
        let moved = cap.add(child.id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        moved.map(|()| cap)
    }

    fn make_with_quota(name: &str, share: f64) -> io::Result<CpuCap> {
        let quota = ((share * PERIOD_US as f64) as u64).max(1_000);
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        if v1.join("cpu.cfs_quota_us").exists() {
            let dir = v1.join(name);
            make(&dir)?;
            let cap = CpuCap { dir };
            fs::write(cap.dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
            fs::write(cap.dir.join("cpu.cfs_quota_us"), quota.to_string())?;
            return Ok(cap);
        }
        let v2 = Path::new("/sys/fs/cgroup");
        let controllers = fs::read_to_string(v2.join("cgroup.subtree_control")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "cpu") {
            let dir = v2.join(name);
            make(&dir)?;
            let cap = CpuCap { dir };
            fs::write(cap.dir.join("cpu.max"), format!("{quota} {PERIOD_US}"))?;
            return Ok(cap);
        }
        Err(io::Error::other(
            "no cgroup with the cpu controller where this bench looks for one \
             (/sys/fs/cgroup/cpu/cpu.cfs_quota_us for v1, or cpu in \
             /sys/fs/cgroup/cgroup.subtree_control for v2)",
        ))
    }

    /// Moves process `pid` (all its threads, and what it starts later) into the cgroup.
    pub fn add(&self, pid: i32) -> io::Result<()> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }
}

fn make(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // Fails while a process is still in it (a daemon that would not stop): left behind,
        // empty cgroups cost nothing, and the next run reuses it.
        let _ = fs::remove_dir(&self.dir);
    }
}
