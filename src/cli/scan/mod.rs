//! `sega-uploader scan`: one pass for cron or a backfill. The date folders' listings go
//! through the same comparison as the daemon's rescan, then the owner makes one attempt per
//! due file on the same pipeline as the daemon, and the command exits. `--dry-run`
//! (`dry_run`) only says what it would do, by the same rules.
//!
//! What it says (`super::progress`): on a terminal a live line with the counts and the
//! rate; the INFO line per file that the daemon logs only with `-v` (at DEBUG otherwise), so
//! a backfill of thousands of files ends in one summary line, not thousands of lines.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::unbounded;
use time::Date;

use super::dates::{self, ScanDates};
use super::progress::{eta, rate, Progress, Verbosity};
use super::setup;
use crate::cli::out::outln;
use crate::config::{self, Config};
use crate::daemon::{self, Pipeline};
use crate::error::{Error, Result, EXIT_FAILURE, EXIT_OK};
use crate::identity::Identity;
use crate::layout::{self, Window};
use crate::logging;
use crate::owner::{Input, Outlets, Owner, Policy, Stats};
use crate::scanner;
use crate::store::{self, Role, Status};
use crate::timestamp::Timestamp;
use crate::upload::RequestSettings;

mod dry_run;

pub(super) fn scan(
    path: &Path,
    which: &ScanDates,
    dry_run: bool,
    verbosity: Verbosity,
) -> Result<i32> {
    let (config, clock) = setup(path, false)?;
    match verbosity {
        Verbosity::Quiet => logging::set_level(log::max_level().min(log::LevelFilter::Error)),
        Verbosity::Verbose => logging::set_level(log::max_level().max(log::LevelFilter::Info)),
        Verbosity::Normal => {}
    }
    let today = clock.today_local();
    let dates: Vec<Date> = match which {
        ScanDates::Window => Window::new(today, config.watch.lookback_days).dates(),
        ScanDates::Listed(given) => {
            let mut d: Vec<Date> = given.iter().map(|a| a.on(today)).collect();
            d.sort();
            d.dedup();
            d
        }
        ScanDates::Range { since, until } => {
            let (first, last) = dates::range(*since, *until, today)?;
            let present = scanner::dates_present(&config.watch.folders, &Window { first, last });
            if present.is_empty() {
                // Said and done here: an empty list of dates means "every date" to the
                // ledger's due_ids, and the scan would send what is pending elsewhere.
                if verbosity != Verbosity::Quiet {
                    outln!(
                        "scan: no date folder from {} to {} in the watched folders: nothing to do{}",
                        layout::format_date(first),
                        layout::format_date(last),
                        if dry_run { " (dry run)" } else { "" }
                    );
                }
                return Ok(EXIT_OK);
            }
            present
        }
    };
    if dry_run {
        return dry_run::dry_run(&config, &clock, &dates, verbosity);
    }
    let date_names: Vec<String> = dates.iter().map(|d| layout::format_date(*d)).collect();
    let opened = store::open(&config, Role::Scan)?;
    let (store, held_by, _lock) = (opened.ledger, opened.held_by, opened.lock);
    let settings = Arc::new(
        RequestSettings::new(&config, Identity::from_config(&config).scope)
            .map_err(|e| e.in_config(path))?,
    );
    let Pipeline {
        mut owner,
        reports,
        workers,
        ..
    } = daemon::pipeline(&config, &clock, store, settings, Outlets::none())?;
    owner.file_lines_at(if verbosity == Verbosity::Verbose {
        log::Level::Info
    } else {
        log::Level::Debug
    });
    let mut progress = Progress::new(verbosity);

    // Record: the listing goes through the same comparison as the daemon's rescan.
    let found = record(&config, &dates, &mut owner, &mut progress)?;
    let recorded = owner.stats.recorded;
    let quiet = verbosity == Verbosity::Quiet;
    if let Some(holder) = held_by {
        progress.finish();
        if !quiet {
            outln!(
                "scan: {found} candidate(s) in {} date folder(s), {recorded} newly recorded; the daemon ({holder}) holds the lock and uploads them",
                date_names.len()
            );
        }
        return Ok(EXIT_OK);
    }

    let now_t = clock.now_utc();
    let now = Timestamp::new(now_t);
    let far = Timestamp::new(now_t + Policy::new(&config).horizon());
    let newest_first = config.upload.order == config::Order::NewestFirst;
    let reset = owner.store().reset_uploading(None, now, "interrupted")?;
    if reset > 0 {
        log::warn!("{reset} upload(s) were interrupted by an earlier crash; sending them again");
    }
    let ids = owner.store().due_ids(now, far, &date_names, newest_first)?;
    let total = ids.len();
    let sending = Instant::now();
    // Short enough for an 80-column terminal: the counts that are not zero only.
    let line = |st: &Stats| {
        let done = attempted(st);
        let mut s = format!("scan: {done}/{total} done · {} uploaded", st.uploaded);
        for (n, what) in [
            (st.skipped, "skipped"),
            (st.retry, "to retry"),
            (st.failed, "failed"),
            (st.not_ready, "not ready"),
        ] {
            if n > 0 {
                s += &format!(", {n} {what}");
            }
        }
        s += &format!(" · {}", rate(done, sending.elapsed(), "files"));
        if let Some(left) = eta(done, total, sending.elapsed()) {
            s += &format!(" · about {left} left");
        }
        s
    };
    let stats = owner.run_oneshot(ids, &reports, &mut |st| progress.update(false, || line(st)))?;
    progress.update(true, || line(&stats));
    for h in workers {
        let _ = h.join();
    }
    let mut check = store::open(&config, Role::Read)?.ledger;
    let left = check.count_status_in_dates(&[Status::Pending, Status::Uploading], &date_names)?;
    let failed = check.count_status_in_dates(&[Status::Failed], &date_names)?;
    progress.finish();
    if !quiet {
        let took = progress.elapsed();
        outln!(
            "scan: {found} candidate(s) in {} date folder(s){}: {recorded} newly recorded, {} uploaded, {} to retry, {} failed, {} skipped in {} ({}); {left} pending, {failed} failed in these dates",
            date_names.len(),
            span(&dates),
            stats.uploaded,
            stats.retry,
            stats.failed,
            stats.skipped,
            crate::clock::human_duration(took),
            rate(attempted(&stats), sending.elapsed(), "files"),
        );
    }
    Ok(if left + failed > 0 || stats.unsaved > 0 {
        EXIT_FAILURE
    } else {
        EXIT_OK
    })
}

/// Lists `dates` of every folder and records what is new, the listing in a thread of its
/// own while this one records, so the live line moves from the first date folder on; the
/// number of candidates seen.
fn record(
    config: &Config,
    dates: &[Date],
    owner: &mut Owner,
    progress: &mut Progress,
) -> Result<usize> {
    let (tx, rx) = unbounded::<Input>();
    let (folders, extensions) = (&config.watch.folders, &config.watch.extensions);
    let mut seen = 0;
    progress.update(true, || "scan: listing the date folders".into());
    let listed = std::thread::scope(|s| {
        let lister = std::thread::Builder::new()
            .name("scanner".into())
            .spawn_scoped(s, move || {
                scanner::scan_dates(folders, dates, extensions, &tx)
            })
            .map_err(|e| Error::system("starting thread scanner", e))?;
        // Ends when the lister is done and drops its sender.
        for input in rx.iter() {
            if let Input::Listing { entries, .. } = &input {
                seen += entries.len();
            }
            owner.ingest(input);
            let recorded = owner.stats.recorded;
            progress.update(false, || {
                format!("scan: listing: {seen} candidate(s) seen, {recorded} newly recorded")
            });
        }
        lister
            .join()
            .map_err(|_| Error::Other("the scanner thread panicked".into()))
    })?;
    Ok(listed.map_or(seen, |s| s.files))
}

/// Files whose attempt is over, whatever it came to.
fn attempted(st: &Stats) -> usize {
    st.uploaded + st.retry + st.failed + st.skipped + st.not_ready
}

/// " (2026-11-01 to 2026-11-26)" for more than one date, " (2026-11-26)" for one.
fn span(dates: &[Date]) -> String {
    match (dates.first(), dates.last()) {
        (Some(a), Some(b)) if a == b => format!(" ({})", layout::format_date(*a)),
        (Some(a), Some(b)) => format!(
            " ({} to {})",
            layout::format_date(*a),
            layout::format_date(*b)
        ),
        _ => String::new(),
    }
}
