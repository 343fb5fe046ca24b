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
}
