//! Files in and beside the watched tree: a date folder, a file written in one go, a burst
//! of them (with what was written), and a sentinel outside the tree that must never be
//! read.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use super::{images, Env};

impl Env {
    pub fn dir_of(&self, folder: &str, date: &str) -> PathBuf {
        let d = self.root.join(folder).join(date);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes a file into today's folder of `folder` (one write + close: IN_CLOSE_WRITE).
    pub fn put(&self, folder: &str, name: impl AsRef<OsStr>, bytes: &[u8]) -> PathBuf {
        self.put_in(folder, &self.today.clone(), name, bytes)
    }

    pub fn put_in(
        &self,
        folder: &str,
        date: &str,
        name: impl AsRef<OsStr>,
        bytes: &[u8],
    ) -> PathBuf {
        let p = self.dir_of(folder, date).join(name.as_ref());
        let mut f = fs::File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file outside the tree that must never be read: its atime is set back to 1970 (older
/// than its mtime, so a read moves it even under relatime). `untouched` says whether it was
/// left alone.
pub struct Sentinel {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl Sentinel {
    pub fn new(path: PathBuf, bytes: Vec<u8>) -> Sentinel {
        fs::write(&path, &bytes).unwrap();
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let times = [
            libc::timespec {
                tv_sec: 1,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
        ];
        // SAFETY: a NUL-terminated path and two timespecs, as utimensat wants.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
            0
        );
        Sentinel { path, bytes }
    }

    /// Never read (atime still 1970) and its content never reached the endpoint.
    pub fn untouched(&self, env: &Env) -> bool {
        use std::os::unix::fs::MetadataExt;
        let atime = fs::metadata(&self.path).unwrap().atime();
        let sha = sha256_hex(&self.bytes);
        let sent = env
            .server
            .requests()
            .iter()
            .any(|r| r.file.as_ref().is_some_and(|f| f.sha256 == sha));
        atime == 1 && !sent
    }
}

/// name → sha256 of every file written.
pub type Written = HashMap<String, String>;

pub fn write_burst(
    env: &Env,
    prefix: &str,
    n: usize,
    pause_every: usize,
    pause: Duration,
) -> Written {
    let mut w = Written::new();
    for i in 0..n {
        let name = format!("{prefix}{i:05}.jpg");
        let b = images::jpeg(16, 16, i as u64 ^ 0x5eed);
        env.put(&format!("Sega_{}", i % 3 + 1), &name, &b);
        w.insert(name, sha256_hex(&b));
        if pause_every > 0 && i % pause_every == pause_every - 1 {
            std::thread::sleep(pause);
        }
    }
    w
}
