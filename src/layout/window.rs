//! The date window (today, `lookback_days` before it, and tomorrow) and the names of date
//! directories, strictly `YYYY-MM-DD`. Callers pass "today" in; the clock is not read here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use time::{Date, Duration, Month};

/// The date window: today (host local date, supplied by the caller's clock), `lookback_days`
/// before it, and tomorrow (a camera clock running ahead). Both ends are inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub first: Date,
    pub last: Date,
}

impl Window {
    /// `first` = today − lookback, `last` = today + 1, saturating at `Date::MIN`/`Date::MAX`.
    pub fn new(today: Date, lookback_days: u32) -> Window {
        let first = today
            .checked_sub(Duration::days(i64::from(lookback_days)))
            .unwrap_or(Date::MIN);
        let last = today.next_day().unwrap_or(Date::MAX);
        Window { first, last }
    }

    pub fn contains(&self, d: Date) -> bool {
        self.first <= d && d <= self.last
    }

    /// Every date of the window, ascending.
    pub fn dates(&self) -> Vec<Date> {
        let mut out = Vec::new();
        let mut d = self.first;
        while d <= self.last {
            out.push(d);
            match d.next_day() {
                Some(next) => d = next,
                None => break,
            }
        }
        out
    }
}

/// A date directory name: strictly `YYYY-MM-DD` (exactly 10 ASCII bytes) naming a real
/// calendar date. "2026-02-30", "2026-1-05" and "2026-01-05 " are not date directories.
pub fn parse_date_dir(name: &OsStr) -> Option<Date> {
    let b = name.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    // Digits only: `str::parse` would also accept a sign.
    let number = |digits: &[u8]| -> Option<u16> {
        digits.iter().try_fold(0u16, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u16::from(c - b'0'))
        })
    };
    let year = i32::from(number(&b[0..4])?);
    let month = Month::try_from(u8::try_from(number(&b[5..7])?).ok()?).ok()?;
    let day = u8::try_from(number(&b[8..10])?).ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

/// `YYYY-MM-DD`, the form of a date directory's name and of the `date` column.
pub fn format_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}
