//! What the daemon's threads publish about themselves for the STATUS line, the metrics file
//! and the alerts: the watcher's watches, the DB owner's view of the queue and the endpoint,
//! the ticker's rescans. Written by each owner thread, read by the supervisor and the DB
//! owner; small and behind short-lived locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::human_duration;

/// The watcher's part.
#[derive(Debug, Default, Clone)]
pub struct WatchState {
    pub watched_dirs: usize,
    pub missing: Vec<std::path::PathBuf>,
    pub scan_only: Vec<String>,
    /// Directories left unwatched by the inotify watch limit (the rescan covers them).
    pub unwatched: usize,
    pub overflows: u64,
}

/// The DB owner's part.
#[derive(Debug, Default, Clone)]
pub struct QueueState {
    pub pending: i64,
    pub uploaded_today: i64,
    /// Set while the endpoint is down: for how long, and the last error.
    pub endpoint_down: Option<(Duration, String)>,
    pub db_trouble: Option<String>,
}

#[derive(Debug, Default)]
pub struct Live {
    watch: Mutex<WatchState>,
    queue: Mutex<QueueState>,
    pub rescans: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Live {
    pub fn watch(&self) -> MutexGuard<'_, WatchState> {
        lock(&self.watch)
    }

    pub fn queue(&self) -> MutexGuard<'_, QueueState> {
        lock(&self.queue)
    }

    pub fn rescan_done(&self) {
        self.rescans.fetch_add(1, Ordering::Relaxed);
    }

    /// The one-line STATUS= summary `systemctl status` shows.
    pub fn status_line(&self, folders: usize) -> String {
        let w = self.watch().clone();
        let q = self.queue().clone();
        let mut s = format!(
            "{folders} folder(s) watched; {} pending; {} uploaded today; ",
            q.pending, q.uploaded_today
        );
        match &q.endpoint_down {
            Some((d, e)) => s += &format!("endpoint DOWN for {} ({e})", human_duration(*d)),
            None => s += "endpoint up",
        }
        if !w.scan_only.is_empty() {
            s += &format!("; scan-only: {}", w.scan_only.join(","));
        }
        if w.unwatched > 0 {
            s += &format!(
                "; {} director(ies) scan-only: inotify watch limit",
                w.unwatched
            );
        }
        if !w.missing.is_empty() {
            s += &format!("; {} folder(s) missing", w.missing.len());
        }
        if let Some(e) = &q.db_trouble {
            s += &format!("; DATABASE TROUBLE: {e}");
        }
        // Until the first rescan ends, the count is what the ledger held at start: files
        // that arrived while the daemon was down are not in it yet.
        if self.rescans.load(Ordering::Relaxed) == 0 {
            s += "; catch-up scan running";
        }
        s
    }
}
