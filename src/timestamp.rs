//! `Timestamp`: an instant as the ledger keeps it, UTC to the millisecond. The owner, the
//! upload workers and the operator commands hand the ledger these, never text; each backend
//! turns them into what it stores at its own edge (SQLite: the `format_ts` text, which sorts
//! as time; PostgreSQL: `timestamptz`). `Display` is that text, for JSON and messages;
//! [`Timestamp::local`] is what human output shows (`2026-12-02 02:10:05 +09:00`).
//!
//! The local offset comes from the C library (`localtime_r` through the `time` crate's
//! `local-offset`, as the daemon's date window does): `TZ` if set, else `/etc/localtime`,
//! read by glibc from the system's zoneinfo. Since time 0.3.37 this works in a
//! multi-threaded process too; what stays unsound is another thread changing the
//! environment meanwhile, and nothing in this program calls `setenv`.

use std::fmt;
use std::ops::Sub;
use std::time::Duration;

use time::{OffsetDateTime, UtcOffset};

use crate::clock::{format_ts, parse_ts};

/// Cut to the millisecond when made, so that two timestamps compare as their stored text
/// does, and what is read back equals what was written.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// `t` in UTC, to the millisecond (as `format_ts` writes it).
    pub const fn new(t: OffsetDateTime) -> Timestamp {
        Timestamp(t.to_offset(UtcOffset::UTC).truncate_to_millisecond())
    }

    /// Reads what `Display` (`format_ts`) wrote; None for anything else, and for RFC 3339
    /// text (a ledger row edited by hand) whose instant lies outside the years 1–9999 in
    /// UTC: `9999-12-31T23:59:59-01:00` would make `new` panic, and PostgreSQL refuses
    /// year 0.
    pub fn parse(s: &str) -> Option<Timestamp> {
        parse_ts(s)
            .and_then(|t| t.checked_to_offset(UtcOffset::UTC))
            .filter(|t| t.year() >= 1)
            .map(Timestamp::new)
    }

    /// The instant, in UTC.
    pub const fn utc(self) -> OffsetDateTime {
        self.0
    }

    /// The instant in the host's time zone with its offset, to the second, for human output:
    /// `2026-12-02 02:10:05 +09:00`. The offset is the one in force at that instant (a time
    /// before a DST change shows the offset it had then); a zone that cannot be read is UTC,
    /// shown as `+00:00`, as the C library falls back. JSON and the ledger stay UTC. An
    /// instant the zone would carry past year 9999 (a damaged or hostile ledger row says
    /// `9999-12-31T23:59:59Z`) is shown in UTC: `to_offset` would panic.
    pub fn local(self) -> Local {
        let offset = UtcOffset::local_offset_at(self.0).unwrap_or(UtcOffset::UTC);
        Local::at(self, offset)
    }
}

/// A [`Timestamp`] as human output shows it (see [`Timestamp::local`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Local(OffsetDateTime);

impl Local {
    /// In a given offset, or in UTC when the offset would carry it out of the years `time`
    /// can hold (see [`Timestamp::local`]).
    fn at(t: Timestamp, offset: UtcOffset) -> Local {
        Local(t.0.checked_to_offset(offset).unwrap_or(t.0))
    }
}

impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        let (h, m, s) = t.offset().as_hms();
        let sign = if t.offset().is_negative() { '-' } else { '+' };
        // A zone's historical offsets may have seconds (LMT +08:27:52): shown when present.
        let secs = if s == 0 {
            String::new()
        } else {
            format!(":{:02}", s.unsigned_abs())
        };
        f.pad(&format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {sign}{:02}:{:02}{secs}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            h.unsigned_abs(),
            m.unsigned_abs(),
        ))
    }
}

/// How human output shows a time the ledger must hold (detected, last change, an attempt's
/// start): local, or `(not a time)` where a row edited by hand holds other text (see
/// `store::FileRow::detected_at`).
pub fn local_or_unreadable(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "(not a time)".to_owned(), |t| t.local().to_string())
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format_ts(self.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, d: Duration) -> Timestamp {
        Timestamp::new(self.0 - d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset};

    /// Text a hand-edited ledger may hold: an instant beyond what UTC can carry, or year 0,
    /// is not a time (it panicked the daemon's loop and every operator command).
    #[test]
    fn parse_refuses_instants_outside_years_1_to_9999_in_utc() {
        assert_eq!(Timestamp::parse("9999-12-31T23:59:59-01:00"), None);
        assert_eq!(Timestamp::parse("0000-06-01T00:00:00+01:00"), None);
        assert_eq!(Timestamp::parse("0000-01-01T00:00:00Z"), None);
        assert_eq!(
            Timestamp::parse("9999-12-31T22:59:59-01:00"),
            Some(Timestamp::new(datetime!(9999-12-31 23:59:59 UTC)))
        );
        assert_eq!(
            Timestamp::parse("0001-01-01T00:00:00Z"),
            Some(Timestamp::new(datetime!(0001-01-01 00:00:00 UTC)))
        );
    }

    #[test]
    fn a_timestamp_is_the_ledgers_text_and_its_order() {
        let t = Timestamp::new(datetime!(2026-11-26 23:59:58.123456 +09:00));
        assert_eq!(t.to_string(), "2026-11-26T14:59:58.123Z");
        assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
        assert_eq!(t.utc(), datetime!(2026-11-26 14:59:58.123 UTC));
        assert_eq!(Timestamp::parse("soon"), None);
        let earlier = t - Duration::from_millis(1);
        assert!(earlier < t && earlier.to_string() < t.to_string());
        assert_eq!(
            t - Duration::from_micros(1),
            earlier,
            "cut to the millisecond"
        );
    }

    /// Review finding: `list` and `show` panicked on a row at the end of time in any zone
    /// east of UTC.
    #[test]
    fn the_end_of_time_is_shown_in_utc_rather_than_panic() {
        let t = Timestamp::parse("9999-12-31T23:59:59.999Z").unwrap();
        assert_eq!(
            Local::at(t, offset!(+9)).to_string(),
            "9999-12-31 23:59:59 +00:00"
        );
        assert_eq!(
            Local::at(t, offset!(-5)).to_string(),
            "9999-12-31 18:59:59 -05:00"
        );
    }

    #[test]
    fn local_time_shows_its_offset() {
        let t = Timestamp::new(datetime!(2026-12-01 17:10:05.999 UTC));
        assert_eq!(
            Local::at(t, offset!(+9)).to_string(),
            "2026-12-02 02:10:05 +09:00"
        );
        assert_eq!(
            Local::at(t, UtcOffset::UTC).to_string(),
            "2026-12-01 17:10:05 +00:00"
        );
        assert_eq!(
            Local::at(t, offset!(-3:30)).to_string(),
            "2026-12-01 13:40:05 -03:30"
        );
        assert_eq!(
            Local::at(t, offset!(+8:27:52)).to_string(),
            "2026-12-02 01:37:57 +08:27:52"
        );
        assert_eq!(
            format!("{:<28}|", Local::at(t, offset!(+9))),
            "2026-12-02 02:10:05 +09:00  |"
        );
    }
}
