//! One daemon per database: an exclusive `flock` on `<database>.lock`, held for the life of
//! `run` (and of a uploading `scan`). The holder writes its PID into the file so a second
//! process can say who has it. The kernel drops the lock when the process dies, however it
//! dies, so a crash never leaves a stale lock behind.
//!
//! The file's second line remembers that the ledger beside it was initialised, and when
//! (`ledger <timestamp>`): a database that later turns up without its schema (its `-wal`
//! deleted before a checkpoint) is then refused instead of silently started afresh.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug)]
pub struct DbLock {
    file: File,
    path: PathBuf,
    /// When the ledger beside it was first initialised, as an earlier holder recorded it.
    initialised: Option<String>,
}

const LEDGER_MARK: &str = "ledger ";

impl DbLock {
    /// When an earlier holder recorded the ledger as initialised, if one did.
    pub fn initialised(&self) -> Option<&str> {
        self.initialised.as_deref()
    }

    /// Whether the lock file at its path is still the one this lock holds (not deleted or
    /// replaced: then another process could take a lock of its own).
    pub fn still_in_place(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Records that the ledger is initialised (kept from the first time).
    pub fn mark_initialised(&mut self, now: &str) {
        let since = self
            .initialised
            .get_or_insert_with(|| now.to_owned())
            .clone();
        let _ = self.file.set_len(0);
        let _ = self.file.seek(SeekFrom::Start(0));
        let _ = write!(self.file, "{}\n{LEDGER_MARK}{since}\n", std::process::id());
    }
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
    let mut file = crate::layout::open_own_file(
        &path,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )
    .map_err(|e| Error::io("opening lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => {
            let mut before = String::new();
            let _ = file.read_to_string(&mut before);
            let initialised = before
                .lines()
                .find_map(|l| l.strip_prefix(LEDGER_MARK))
                .map(|s| s.trim().to_owned());
            // Best effort: the PID is for the operator's message, not for correctness.
            let _ = file.set_len(0);
            let _ = file.seek(SeekFrom::Start(0));
            let _ = writeln!(file, "{}", std::process::id());
            if let Some(since) = &initialised {
                let _ = writeln!(file, "{LEDGER_MARK}{since}");
            }
            Ok(Attempt::Acquired(DbLock {
                file,
                path,
                initialised,
            }))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut content = String::new();
            let _ = file.read_to_string(&mut content);
            let pid = content.lines().next().unwrap_or("").trim();
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
    let mut file = crate::layout::open_own_file(&path, OpenOptions::new().read(true)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut content = String::new();
            let _ = file.read_to_string(&mut content);
            Some(content.lines().next().unwrap_or("").trim().to_owned())
        }
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}
