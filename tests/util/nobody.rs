//! Running the binary as `nobody`, for the permission tests: the tree and config opened to
//! it, the binary linked where it can reach it, its commands and its daemon.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use super::{Daemon, Env, BIN};

/// The unprivileged user the permission tests run the binary as (CI runs as root; those
/// tests need a user the kernel actually checks).
const NOBODY: u32 = 65534;

impl Env {
    /// Readies this env for running the binary as `nobody`: the test tree traversable and
    /// the config readable by all, and the binary linked (or copied) into the tree, since
    /// the checkout's `target/` may sit below a directory `nobody` cannot enter (a 0700
    /// home or `mktemp -d`). The state directory is left as it is: tests that want it
    /// writable by `nobody` say so. False, with the reason printed, when such a test cannot
    /// run here: not root, or the temp directory itself is out of `nobody`'s reach.
    pub fn open_to_nobody(&self) -> bool {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: running the binary as another user needs root (CI runs as root)");
            return false;
        }
        if let Some(closed) = self
            .dir
            .ancestors()
            .skip(1)
            .find(|a| fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        {
            eprintln!(
                "skipped: {} is not traversable by other users, so `nobody` cannot reach the \
                 test tree (set TMPDIR to a directory it can reach)",
                closed.display()
            );
            return false;
        }
        for p in [&self.dir, &self.root] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(&self.config_path, fs::Permissions::from_mode(0o644)).unwrap();
        let bin = self.nobody_bin();
        if !bin.exists() {
            fs::create_dir_all(bin.parent().unwrap()).unwrap();
            // A hard link shares the binary's 0755 inode; across filesystems, a copy.
            if fs::hard_link(BIN, &bin).is_err() {
                fs::copy(BIN, &bin).unwrap();
            }
            fs::set_permissions(bin.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
        }
        true
    }

    /// Where `nobody` runs the binary from (see `open_to_nobody`).
    pub fn nobody_bin(&self) -> PathBuf {
        self.dir.join("bin").join("sega-uploader")
    }

    /// A command run as `nobody`, after `open_to_nobody`.
    pub fn nobody_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd_of(&self.nobody_bin(), &self.config_path, args);
        c.uid(NOBODY).gid(NOBODY);
        c
    }

    /// The daemon as `nobody`, after `open_to_nobody`.
    pub fn start_daemon_as_nobody(&self) -> Daemon {
        self.spawn(self.nobody_cmd(&["run"]), |_| {})
    }

    /// The daemon's command, as `wrap` rewrites it (a namespace, another user), the binary
    /// that `nobody` can reach in place of the checkout's.
    pub fn start_daemon_wrapped(&self, wrap: impl FnOnce(&Command) -> Command) -> Daemon {
        let c = self.cmd_of(&self.nobody_bin(), &self.config_path, &["run"]);
        self.spawn(wrap(&c), |_| {})
    }
}
