//! One daemon per database: an exclusive `flock` on `<database>.lock`, held for the life of
//! `run` (and of a uploading `scan`). The holder writes its PID into the file so a second
//! process can say who has it. The kernel drops the lock when the process dies, however it
//! dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug)]
pub struct DbLock {
    _file: File,
}

pub fn lock_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

pub enum Attempt {
    Acquired(DbLock),
    /// Held by another process: its PID as written in the file, when readable.
    Held(String),
}

pub fn try_lock(db: &Path) -> Result<Attempt> {
    let path = lock_path(db);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("opening lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => {
            // Best effort: the PID is for the operator's message, not for correctness.
            let _ = file.set_len(0);
            let _ = file.seek(SeekFrom::Start(0));
            let _ = writeln!(file, "{}", std::process::id());
            Ok(Attempt::Acquired(DbLock { _file: file }))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            Ok(Attempt::Held(if pid.is_empty() {
                "unknown pid".into()
            } else {
                format!("pid {pid}")
            }))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("locking", &path, e)),
    }
}

/// Takes the lock or fails naming the holder.
pub fn acquire(db: &Path) -> Result<DbLock> {
    match try_lock(db)? {
        Attempt::Acquired(l) => Ok(l),
        Attempt::Held(holder) => Err(Error::Locked {
            lock: lock_path(db),
            holder,
        }),
    }
}

/// Who holds the lock, without taking it and without writing anything (status, check):
/// None when nobody does (or there is no lock file).
pub fn holder(db: &Path) -> Option<String> {
    let path = lock_path(db);
    let mut file = File::open(&path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Some(pid.trim().to_owned())
        }
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}
