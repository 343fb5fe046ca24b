//! The daemon's clock as the model knows it: the real clock, plus a fixed offset when an
//! episode starts a little before midnight (`SEGA_TEST_NOW`, given again at every restart so
//! that the daemon's time runs on), plus the step in `SEGA_TEST_CLOCK_STEP`'s file, which the
//! clock injector moves. Every step is remembered with its time, so the oracle can tell when
//! a date was inside the daemon's window.
//!
//! The daemon runs with `TZ=UTC`, so its local date is the UTC date.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::span::Spans;

const DAY_NS: i128 = 86_400_000_000_000;

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
pub fn date_name(day: i64) -> String {
    let (y, m, d) = civil(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day number of a `YYYY-MM-DD` name.
pub fn day_of(name: &str) -> Option<i64> {
    let y: i64 = name.get(0..4)?.parse().ok()?;
    let m: i64 = name.get(5..7)?.parse().ok()?;
    let d: i64 = name.get(8..10)?.parse().ok()?;
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// (year, month, day) of a day number: Howard Hinnant's civil_from_days.
fn civil(day: i64) -> (i64, i64, i64) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// RFC 3339 in UTC with milliseconds: `2026-11-26T23:59:30.250Z`.
fn rfc3339(ns: i128) -> String {
    let day = ns.div_euclid(DAY_NS) as i64;
    let in_day = ns.rem_euclid(DAY_NS);
    let ms = in_day / 1_000_000;
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        date_name(day),
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn real_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

pub struct ModelClock {
    started: Instant,
    /// The real clock at `started`, ns since the epoch.
    started_ns: i128,
    /// Added to the real clock for the whole episode (a start before midnight).
    offset_ns: i128,
    step_file: PathBuf,
    /// (seconds into the episode, step in seconds), in order; the first at 0.
    steps: Mutex<Vec<(f64, i64)>>,
}

impl ModelClock {
    /// A clock whose date is the real one plus `offset_secs`, with `step_file` holding
    /// `first_step` seconds.
    pub fn new(
        started: Instant,
        offset_secs: i64,
        step_file: &Path,
        first_step: i64,
    ) -> io::Result<ModelClock> {
        let clock = ModelClock {
            started,
            started_ns: real_ns() - started.elapsed().as_nanos() as i128,
            offset_ns: i128::from(offset_secs) * 1_000_000_000,
            step_file: step_file.to_path_buf(),
            steps: Mutex::new(Vec::new()),
        };
        clock.set_step(first_step)?;
        Ok(clock)
    }

    /// Seconds until the next local (UTC) midnight on the real clock.
    pub fn secs_to_real_midnight() -> f64 {
        let ns = real_ns();
        (DAY_NS - ns.rem_euclid(DAY_NS)) as f64 / 1e9
    }

    pub fn step_file(&self) -> &Path {
        &self.step_file
    }

    /// `SEGA_TEST_NOW` for a daemon started now, if the episode moves the clock.
    pub fn test_now(&self) -> Option<String> {
        (self.offset_ns != 0).then(|| rfc3339(real_ns() + self.offset_ns))
    }

    /// The date files are written to: the real day plus the offset, `days` ahead. Steps
    /// are not followed: a camera keeps its own clock while the host's is wrong.
    pub fn day(&self, days: i64) -> i64 {
        (real_ns() + self.offset_ns).div_euclid(DAY_NS) as i64 + days
    }

    /// The step now, in seconds.
    pub fn step(&self) -> i64 {
        let g = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        g.last().map_or(0, |s| s.1)
    }

    /// Moves the daemon's clock to `secs` from true (written aside and renamed, so the
    /// daemon never reads half a number).
    pub fn set_step(&self, secs: i64) -> io::Result<()> {
        let tmp = self.step_file.with_extension("new");
        fs::write(&tmp, format!("{secs}\n"))?;
        fs::rename(&tmp, &self.step_file)?;
        let t = self.started.elapsed().as_secs_f64();
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, secs));
        Ok(())
    }

    /// When, within `[0, end)`, the daemon's window (`lookback` days back, one ahead)
    /// held `day`.
    pub fn window_spans(&self, day: i64, lookback: i64, end: f64) -> Spans {
        let steps = self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Today must be within [day - 1, day + lookback].
        let lo = i128::from(day - 1) * DAY_NS;
        let hi = i128::from(day + lookback + 1) * DAY_NS;
        let mut out = Vec::new();
        for (i, &(from, step)) in steps.iter().enumerate() {
            let to = steps.get(i + 1).map_or(end, |s| s.0);
            // The daemon's time at t: base + t seconds.
            let base = self.started_ns + self.offset_ns + i128::from(step) * 1_000_000_000;
            let t_lo = (lo - base) as f64 / 1e9;
            let t_hi = (hi - base) as f64 / 1e9;
            let (a, b) = (from.max(t_lo), to.min(t_hi));
            if b > a {
                out.push((a, b));
            }
        }
        Spans::of(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date_name(0), "1970-01-01");
        assert_eq!(date_name(20_000), "2024-10-04");
        for d in [-1000, 0, 59, 60, 11_000, 20_513, 40_000] {
            assert_eq!(day_of(&date_name(d)), Some(d));
        }
        assert_eq!(rfc3339(DAY_NS + 1_500_000_000), "1970-01-02T00:00:01.500Z");
    }

    #[test]
    fn the_window_follows_the_steps() {
        let dir = std::env::temp_dir().join(format!("soak-clock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let c = ModelClock::new(Instant::now(), 0, &dir.join("step"), 0).unwrap();
        let today = c.day(0);
        let w = c.window_spans(today, 1, 100.0);
        assert!(w.contains(50.0) || c.day(0) != today);
        c.set_step(200 * 86_400).unwrap();
        let w = c.window_spans(today, 1, 1e6);
        let moved = c.steps.lock().unwrap()[1].0;
        assert!(!w.contains(moved + 1.0));
        let _ = fs::remove_dir_all(&dir);
    }
}
