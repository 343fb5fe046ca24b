//! The owner's scheduling knobs, taken from the config and replaced on reload: backoff and
//! its jitter, how far ahead a wait may reach (`horizon`), and the file rules a claimed row
//! is checked against before a worker may open it.

use std::time::Duration;

use time::OffsetDateTime;

use crate::config::{Config, Folder, Order};
use crate::layout::{self, Refusal, Show, Target};
use crate::store::Claimed;

/// The scheduling knobs taken from the config (replaced on reload).
#[derive(Debug, Clone)]
pub struct Policy {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: u32,
    pub newest_first: bool,
    pub settle: Duration,
    pub keep_days: u32,
    pub backlog_alert: Duration,
    /// How often the heartbeat is written: every 10 s, and at least four times a lease so a
    /// busy host is never mistaken for a dead one.
    pub heartbeat: Duration,
    /// What a claimed row is checked against before a worker may open it.
    pub folders: Vec<Folder>,
    pub extensions: Vec<String>,
}

impl Policy {
    pub fn new(c: &Config) -> Policy {
        Policy {
            initial: c.upload.retry.initial,
            max: c.upload.retry.max,
            max_attempts: c.upload.retry.max_attempts,
            newest_first: c.upload.order == Order::NewestFirst,
            settle: c.watch.settle,
            keep_days: c.database.keep_days,
            backlog_alert: c.alerts.backlog,
            heartbeat: HEARTBEAT_EVERY.min(c.database.lease / 4),
            folders: c.watch.folders.clone(),
            extensions: c.watch.extensions.clone(),
        }
    }

    /// Exponential backoff from `initial` to `max`; the jitter only lengthens (up to +25%).
    pub fn backoff(&self, attempt: i64, rng: &mut Rng) -> Duration {
        let exp = (attempt.max(1) - 1).min(30) as u32;
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        base + base.mul_f64(rng.unit() / 4.0)
    }

    /// No wait the owner sets is longer than this: backoff and Retry-After stop at
    /// `retry.max_secs` (+25 % jitter), settling at `settle_secs`. A row due later than
    /// now + this was scheduled before the wall clock was stepped back (an RTC that was
    /// hours ahead at boot, corrected by NTP), and is due now.
    pub fn horizon(&self) -> Duration {
        self.max.max(self.settle).mul_f64(1.25) + Duration::from_secs(60)
    }

    /// Where a claimed row's file is, if the rules and the config in force let it be opened.
    pub fn target(&self, c: &Claimed) -> std::result::Result<Target, Refusal> {
        let Some(folder) = self.folders.iter().find(|f| f.label == c.folder) else {
            return Err(Refusal::OutOfScope(format!(
                "folder {} is not in watch.folders",
                std::ffi::OsStr::new(&c.folder).shown()
            )));
        };
        layout::target(
            &folder.anchor,
            folder.below.as_deref(),
            &folder.path,
            &self.extensions,
            &c.date,
            &c.filename,
            &c.path,
        )
    }
}

/// A small xorshift generator for jitter: no crate needed for "not all at once".
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let t = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
        Rng(t ^ (u64::from(std::process::id()) << 32) | 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How often the heartbeat row is written (status/check read it).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(600),
            max_attempts: 0,
            newest_first: false,
            settle: Duration::from_secs(5),
            keep_days: 90,
            backlog_alert: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(10),
            folders: Vec::new(),
            extensions: vec!["jpg".into()],
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_jitter_only_lengthens() {
        let p = policy();
        let mut rng = Rng(12345);
        for (attempt, base) in [(1, 5), (2, 10), (3, 20), (4, 40), (8, 600), (60, 600)] {
            for _ in 0..100 {
                let d = p.backoff(attempt, &mut rng);
                assert!(d >= Duration::from_secs(base), "attempt {attempt}: {d:?}");
                assert!(
                    d <= Duration::from_secs(base).mul_f64(1.25),
                    "attempt {attempt}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn the_horizon_is_beyond_every_wait_the_owner_sets() {
        let p = policy();
        let mut rng = Rng(99);
        for attempt in 1..40 {
            assert!(p.backoff(attempt, &mut rng) < p.horizon());
        }
        assert!(p.settle < p.horizon());
    }
}
