//! The one source of "now" for every thread, so tests can move time.
//!
//! `SEGA_TEST_NOW=2026-11-26T23:59:50Z` (RFC 3339) starts the clock at that instant; it then
//! advances in real time. Tests use it to cross midnight without waiting a day.
//! `SEGA_TEST_CLOCK_STEP=/path/file` steps the wall clock while the daemon runs: the file
//! holds a number of seconds (e.g. `17280000`, or `-10800`) added to it, read again when the
//! file changes, as a bad NTP answer or an RTC corrected after boot would move it. The
//! monotonic clock is never moved. Production leaves both unset and gets the system clock.
//!
//! Local dates are computed on every call (never from an offset cached at start-up), so a
//! DST change is followed; a change of time zone needs a restart (the time crate caches the
//! zone data).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, UtcOffset};

pub const TEST_NOW_ENV: &str = "SEGA_TEST_NOW";
pub const TEST_STEP_ENV: &str = "SEGA_TEST_CLOCK_STEP";

#[derive(Debug, Clone)]
pub struct Clock {
    fake: Option<(OffsetDateTime, Instant)>,
    step: Option<Arc<Step>>,
}

/// `SEGA_TEST_CLOCK_STEP`: the file, and the step it held when last read.
#[derive(Debug)]
struct Step {
    path: PathBuf,
    /// (when the file was last looked at, its mtime then, the step in nanoseconds).
    seen: Mutex<(Instant, Option<SystemTime>, i128)>,
}

impl Step {
    /// The step now; the file is looked at no more than every 20 ms.
    fn nanos(&self) -> i128 {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.0.elapsed() >= Duration::from_millis(20) {
            seen.0 = Instant::now();
            let mtime = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if mtime != seen.1 {
                seen.1 = mtime;
                seen.2 = std::fs::read_to_string(&self.path)
                    .ok()
                    .and_then(|t| t.trim().parse::<f64>().ok())
                    .map_or(0, |secs| (secs * 1e9) as i128);
            }
        }
        seen.2
    }
}

impl Clock {
    pub fn system() -> Clock {
        Clock {
            fake: None,
            step: None,
        }
    }

    /// A clock that starts at `start` and runs at real speed.
    pub fn starting_at(start: OffsetDateTime) -> Clock {
        Clock {
            fake: Some((start, Instant::now())),
            step: None,
        }
    }

    /// The system clock, unless `SEGA_TEST_NOW` or `SEGA_TEST_CLOCK_STEP` say otherwise.
    pub fn from_env() -> Result<Clock, String> {
        let mut clock = match std::env::var(TEST_NOW_ENV) {
            Ok(v) if !v.is_empty() => OffsetDateTime::parse(&v, &Rfc3339)
                .map(Clock::starting_at)
                .map_err(|e| format!("{TEST_NOW_ENV}={v}: not an RFC 3339 time: {e}"))?,
            _ => Clock::system(),
        };
        if let Some(path) = std::env::var_os(TEST_STEP_ENV).filter(|p| !p.is_empty()) {
            clock.step = Some(Arc::new(Step {
                path: PathBuf::from(path),
                seen: Mutex::new((
                    Instant::now()
                        .checked_sub(Duration::from_secs(1))
                        .unwrap_or_else(Instant::now),
                    None,
                    0,
                )),
            }));
        }
        Ok(clock)
    }

    pub fn now_utc(&self) -> OffsetDateTime {
        let now = match self.fake {
            Some((start, at)) => start + at.elapsed(),
            None => OffsetDateTime::now_utc(),
        };
        match &self.step {
            Some(step) => now + time::Duration::nanoseconds_i128(step.nanos()),
            None => now,
        }
    }

    /// Today's date on the host's local clock.
    pub fn today_local(&self) -> Date {
        self.now_local().date()
    }

    pub fn now_local(&self) -> OffsetDateTime {
        let now = self.now_utc();
        // A failure to learn the offset (no /etc/localtime) falls back to UTC, which is
        // what the C library would do too.
        let offset = UtcOffset::local_offset_at(now).unwrap_or(UtcOffset::UTC);
        now.to_offset(offset)
    }

    /// How long until the local date changes (for waking at midnight).
    pub fn until_local_midnight(&self) -> Duration {
        let now = self.now_local();
        let next = now
            .date()
            .next_day()
            .map(|d| d.midnight().assume_offset(now.offset()));
        match next {
            Some(next) => (next - now).try_into().unwrap_or(Duration::ZERO),
            None => Duration::from_secs(3600),
        }
    }
}

/// The one timestamp format of the database: `YYYY-MM-DDTHH:MM:SS.mmmZ`, UTC, so that text
/// comparison orders them.
pub fn format_ts(t: OffsetDateTime) -> String {
    stamp(t.to_offset(UtcOffset::UTC), 'T', "Z")
}

/// A log line's local time: `2026-11-26 23:59:58.123`.
pub fn format_local(t: OffsetDateTime) -> String {
    stamp(t, ' ', "")
}

fn stamp(t: OffsetDateTime, sep: char, suffix: &str) -> String {
    format!(
        "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}.{:03}{suffix}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses what `format_ts` wrote.
pub fn parse_ts(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// "4m12s", "2h03m", "850ms": durations in log lines and status output.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h >= 24 {
        format!("{}d{:02}h", h / 24, h % 24)
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_have_one_sortable_format() {
        let t = datetime!(2026-11-26 23:59:58.123456 +09:00);
        assert_eq!(format_ts(t), "2026-11-26T14:59:58.123Z");
        assert_eq!(
            parse_ts("2026-11-26T14:59:58.123Z"),
            Some(datetime!(2026-11-26 14:59:58.123 UTC))
        );
        assert!(
            format_ts(datetime!(2026-11-26 9:00 UTC)) < format_ts(datetime!(2026-11-26 10:00 UTC))
        );
    }

    #[test]
    fn injected_clock_starts_where_told() {
        let c = Clock::starting_at(datetime!(2026-11-26 23:59:59 UTC));
        let now = c.now_utc();
        assert!(now >= datetime!(2026-11-26 23:59:59 UTC));
        assert!(now < datetime!(2026-11-27 00:00:59 UTC));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_secs(252)), "4m12s");
        assert_eq!(human_duration(Duration::from_secs(7380)), "2h03m");
        assert_eq!(human_duration(Duration::from_secs(90000)), "1d01h");
    }
}
