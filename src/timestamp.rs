//! `Timestamp`: an instant as the ledger keeps it, UTC to the millisecond. The owner, the
//! upload workers and the operator commands hand the ledger these, never text; each backend
//! turns them into what it stores at its own edge (SQLite: the `format_ts` text, which sorts
//! as time; PostgreSQL: `timestamptz`). `Display` is that text, for JSON and messages.

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

    /// Reads what `Display` (`format_ts`) wrote; None for anything else.
    pub fn parse(s: &str) -> Option<Timestamp> {
        parse_ts(s).map(Timestamp::new)
    }

    /// The instant, in UTC.
    pub const fn utc(self) -> OffsetDateTime {
        self.0
    }
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
    use time::macros::datetime;

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
}
