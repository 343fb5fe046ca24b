//! Dates on the command line (`scan --date/--since/--until`, `list --date`): `YYYY-MM-DD`,
//! `today` or `yesterday`. The relative ones are the host's local date, as the daemon's date
//! window judges it (`Clock::today_local`, DESIGN §3): they are resolved when the command
//! runs, with its clock, so a test clock (`SEGA_TEST_NOW`) moves them too.

use std::ffi::OsStr;
use std::fmt;

use time::Date;

use super::usage_err;
use crate::error::Result;
use crate::layout;

/// A date as given: resolved against "today" by [`DateArg::on`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateArg {
    Day(Date),
    Today,
    Yesterday,
}

impl DateArg {
    /// `value` of `flag` (named in the usage error).
    pub fn parse(flag: &str, value: &str) -> Result<DateArg> {
        match value {
            "today" => Ok(DateArg::Today),
            "yesterday" => Ok(DateArg::Yesterday),
            _ => layout::parse_date_dir(OsStr::new(value))
                .map(DateArg::Day)
                .ok_or_else(|| {
                    usage_err(format!(
                        "{flag} {value}: expected a date as YYYY-MM-DD, today or yesterday"
                    ))
                }),
        }
    }

    /// The date it names when the local date is `today`.
    pub fn on(self, today: Date) -> Date {
        match self {
            DateArg::Day(d) => d,
            DateArg::Today => today,
            DateArg::Yesterday => today.previous_day().unwrap_or(Date::MIN),
        }
    }
}

impl fmt::Display for DateArg {
    /// As given: `2026-11-26`, `today`, `yesterday`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DateArg::Day(d) => f.write_str(&layout::format_date(*d)),
            DateArg::Today => f.write_str("today"),
            DateArg::Yesterday => f.write_str("yesterday"),
        }
    }
}

/// Which date folders a `scan` covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanDates {
    /// The daemon's date window (no date given).
    Window,
    /// `--date D`, repeated.
    Listed(Vec<DateArg>),
    /// `--since D [--until D]`, both ends included; `until` defaults to today.
    Range {
        since: DateArg,
        until: Option<DateArg>,
    },
}

impl ScanDates {
    /// From the flags as parsed; a usage error for `--until` alone or mixed with `--date`.
    pub fn from_flags(
        dates: Vec<DateArg>,
        since: Option<DateArg>,
        until: Option<DateArg>,
    ) -> Result<ScanDates> {
        match (dates.is_empty(), since, until) {
            (true, None, None) => Ok(ScanDates::Window),
            (false, None, None) => Ok(ScanDates::Listed(dates)),
            (true, Some(since), until) => Ok(ScanDates::Range { since, until }),
            (true, None, Some(_)) => Err(usage_err(
                "scan: --until needs --since (the first date of the range)",
            )),
            (false, _, _) => Err(usage_err(
                "scan: give either --date (repeatable) or --since/--until, not both",
            )),
        }
    }
}

/// A range's two ends on `today`, first then last; a usage error naming both when the
/// first comes after the last.
pub fn range(since: DateArg, until: Option<DateArg>, today: Date) -> Result<(Date, Date)> {
    let until = until.unwrap_or(DateArg::Today);
    let (first, last) = (since.on(today), until.on(today));
    if first > last {
        let shown = |a: DateArg, d: Date| match a {
            DateArg::Day(_) => a.to_string(),
            _ => format!("{a} ({})", layout::format_date(d)),
        };
        return Err(usage_err(format!(
            "scan: --since {} is after --until {}: nothing to scan",
            shown(since, first),
            shown(until, last)
        )));
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use time::macros::date;

    #[test]
    fn relative_dates_are_resolved_against_the_local_date() {
        let today = date!(2026 - 03 - 01);
        let p = |s| DateArg::parse("--date", s).unwrap().on(today);
        assert_eq!(p("today"), today);
        assert_eq!(p("yesterday"), date!(2026 - 02 - 28));
        assert_eq!(p("2025-12-31"), date!(2025 - 12 - 31));
        let e = DateArg::parse("--since", "tomorrow").unwrap_err();
        assert!(
            matches!(&e, Error::Usage(m) if m.contains("--since tomorrow") && m.contains("yesterday")),
            "{e}"
        );
        assert!(DateArg::parse("--date", "2026-02-30").is_err());
    }

    #[test]
    fn a_range_runs_forward_and_until_defaults_to_today() {
        let today = date!(2026 - 11 - 26);
        let d = |s| DateArg::parse("--since", s).unwrap();
        assert_eq!(
            range(d("2026-11-20"), None, today).unwrap(),
            (date!(2026 - 11 - 20), today)
        );
        assert_eq!(
            range(d("yesterday"), Some(d("yesterday")), today).unwrap(),
            (date!(2026 - 11 - 25), date!(2026 - 11 - 25))
        );
        let e = range(d("2026-11-27"), Some(d("yesterday")), today).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        assert!(
            e.to_string()
                .contains("--since 2026-11-27 is after --until yesterday (2026-11-25)"),
            "{e}"
        );
    }

    #[test]
    fn until_alone_or_mixed_with_date_is_a_usage_error() {
        let d = DateArg::Today;
        assert!(ScanDates::from_flags(vec![], None, Some(d)).is_err());
        assert!(ScanDates::from_flags(vec![d], Some(d), None).is_err());
        assert_eq!(
            ScanDates::from_flags(vec![], None, None).unwrap(),
            ScanDates::Window
        );
    }
}
