//! Liveness of the daemon's threads, for a watchdog that means something.
//!
//! Each long-running loop holds a `Beat` and calls `beat()` every time it turns (they all
//! wake at least every few seconds, idle or not). The supervisor asks the `Monitor` which
//! loops have not turned within the watchdog interval, and withholds `WATCHDOG=1` while any
//! has not: a DB owner stuck on a locked database, or a dead thread, gets us restarted.

use std::sync::atomic::{AtomicU64, Ordering};

/// How long a monitored loop may sleep: short enough that it beats several times within the
/// watchdog interval (a quarter of WATCHDOG_USEC, at most 7.5 s: every idle wake-up costs
/// CPU, and with WatchdogSec=30 a loop that turns every 7.5 s still beats four times).
static MAX_SLEEP_MS: AtomicU64 = AtomicU64::new(2000);

pub fn set_watchdog(interval: Duration) {
    let ms = (interval.as_millis() as u64 / 4).clamp(50, 7500);
    MAX_SLEEP_MS.store(ms, Ordering::Relaxed);
}

pub fn max_sleep() -> Duration {
    Duration::from_millis(MAX_SLEEP_MS.load(Ordering::Relaxed))
}
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Beat {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Beat {
    pub fn beat(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A beat as of `at`, earlier than now: progress that waits on something begun then.
    pub fn beat_at(&self, at: Instant) {
        self.last_ms.store(
            at.saturating_duration_since(self.start).as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    /// A beat nobody watches (one-shot commands).
    pub fn detached() -> Beat {
        Beat {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

#[derive(Debug)]
pub struct Monitor {
    start: Instant,
    beats: Mutex<Vec<(&'static str, Arc<AtomicU64>)>>,
}

impl Monitor {
    pub fn new() -> Monitor {
        Monitor {
            start: Instant::now(),
            beats: Mutex::new(Vec::new()),
        }
    }

    pub fn register(&self, name: &'static str) -> Beat {
        let slot = Arc::new(AtomicU64::new(self.start.elapsed().as_millis() as u64));
        self.beats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, slot.clone()));
        Beat {
            start: self.start,
            last_ms: slot,
        }
    }

    /// The loops that have not turned within `max_age`.
    pub fn stale(&self, max_age: Duration) -> Vec<&'static str> {
        let now = self.start.elapsed().as_millis() as u64;
        let max = max_age.as_millis() as u64;
        self.beats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, slot)| now.saturating_sub(slot.load(Ordering::Relaxed)) > max)
            .map(|(name, _)| *name)
            .collect()
    }
}

impl Default for Monitor {
    fn default() -> Monitor {
        Monitor::new()
    }
}

/// The upload workers, watched by the supervisor: each says when it took a job and by when
/// that job must be over. A worker stuck past its deadline (a read blocked on a hung network
/// mount, beyond any socket timeout) is logged with its file; when every worker is stuck,
/// nothing can upload and the watchdog pings stop, so systemd restarts the daemon (DESIGN
/// §8, §10: every thread that can stall is covered by the watchdog).
#[derive(Debug)]
pub struct Workers {
    start: Instant,
    slots: Vec<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    /// Milliseconds since `start` by which the job must end; 0 while idle.
    deadline_ms: AtomicU64,
    /// The job's file and when it started; `warned` once it has been reported.
    job: Mutex<Option<(PathBuf, Instant, bool)>>,
}

/// A job past its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub worker: usize,
    pub path: PathBuf,
    pub running: Duration,
}

impl Workers {
    pub fn new(n: usize) -> Workers {
        Workers {
            start: Instant::now(),
            slots: (0..n).map(|_| Slot::default()).collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Worker `i` (0-based) starts on `path`, to be done within `limit`.
    pub fn busy(&self, i: usize, path: &Path, limit: Duration) {
        if let Some(s) = self.slots.get(i) {
            *s.job.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((path.to_path_buf(), Instant::now(), false));
            let deadline = self
                .now_ms()
                .saturating_add(limit.as_millis() as u64)
                .max(1);
            s.deadline_ms.store(deadline, Ordering::Relaxed);
        }
    }

    pub fn idle(&self, i: usize) {
        if let Some(s) = self.slots.get(i) {
            s.deadline_ms.store(0, Ordering::Relaxed);
            *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Jobs past their deadline not reported yet (each is returned once).
    pub fn newly_overdue(&self) -> Vec<Overdue> {
        let now = self.now_ms();
        let mut out = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let d = s.deadline_ms.load(Ordering::Relaxed);
            if d == 0 || now <= d {
                continue;
            }
            let mut job = s.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((path, started, warned)) = job.as_mut() {
                if !*warned {
                    *warned = true;
                    out.push(Overdue {
                        worker: i + 1,
                        path: path.clone(),
                        running: started.elapsed(),
                    });
                }
            }
        }
        out
    }

    /// Every worker is past its deadline: nothing can upload.
    pub fn all_stuck(&self) -> bool {
        let now = self.now_ms();
        !self.slots.is_empty()
            && self.slots.iter().all(|s| {
                let d = s.deadline_ms.load(Ordering::Relaxed);
                d != 0 && now > d
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_goes_stale() {
        let m = Monitor::new();
        let a = m.register("a");
        let _b = m.register("b");
        a.beat();
        assert!(m.stale(Duration::from_secs(60)).is_empty());
        // Zero tolerance: anything not beaten in this very millisecond may be stale; a
        // wide bound the other way keeps the test free of timing.
        std::thread::sleep(Duration::from_millis(5));
        a.beat();
        assert_eq!(m.stale(Duration::from_millis(1)), vec!["b"]);
    }

    #[test]
    fn a_worker_past_its_deadline_is_reported_once_and_all_stuck_is_seen() {
        let w = Workers::new(2);
        assert!(!w.all_stuck());
        w.busy(0, Path::new("/data/a.jpg"), Duration::ZERO);
        w.busy(1, Path::new("/data/b.jpg"), Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(5));
        let o = w.newly_overdue();
        assert_eq!(o.len(), 1);
        assert_eq!(
            (o[0].worker, o[0].path.as_path()),
            (1, Path::new("/data/a.jpg"))
        );
        assert!(w.newly_overdue().is_empty(), "reported once");
        assert!(!w.all_stuck(), "one is still within its deadline");
        w.busy(1, Path::new("/data/c.jpg"), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert!(w.all_stuck());
        w.idle(0);
        assert!(!w.all_stuck());
    }
}
