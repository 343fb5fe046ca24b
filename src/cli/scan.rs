//! `sega-uploader scan`: one pass for cron or a backfill. The date folders' listings go
//! through the same comparison as the daemon's rescan, then the owner makes one attempt per
//! due file on the same pipeline as the daemon, and the command exits. `--dry-run` only says
//! what it would do.

use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::unbounded;
use time::Date;

use super::setup;
use crate::config::{self, Config};
use crate::daemon::{self, Pipeline};
use crate::error::{Result, EXIT_FAILURE, EXIT_OK};
use crate::identity::Identity;
use crate::layout::{self, display_name, Window};
use crate::owner::{Input, Outlets, Policy};
use crate::scanner;
use crate::store::{self, Role, Status};
use crate::timestamp::Timestamp;
use crate::upload::RequestSettings;

pub(super) fn scan(path: &Path, dates: &[Date], dry_run: bool) -> Result<i32> {
    let (config, clock) = setup(path, false)?;
    let window = Window::new(clock.today_local(), config.watch.lookback_days);
    let dates: Vec<Date> = if dates.is_empty() {
        window.dates()
    } else {
        dates.to_vec()
    };
    let date_names: Vec<String> = dates.iter().map(|d| layout::format_date(*d)).collect();
    if dry_run {
        return scan_dry_run(&config, &dates);
    }
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

    // Record: the listing goes through the same comparison as the daemon's rescan.
    let (tx, rx) = unbounded::<Input>();
    let summary = scanner::scan_dates(&config.watch.folders, &dates, &config.watch.extensions, &tx);
    drop(tx);
    for input in rx {
        owner.ingest(input);
    }
    let found = summary.map(|s| s.files).unwrap_or(0);
    let recorded = owner.stats.recorded;
    if let Some(holder) = held_by {
        println!(
            "scan: {found} candidate(s) in {} date folder(s), {recorded} newly recorded; the daemon ({holder}) holds the lock and uploads them",
            date_names.len()
        );
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
    let stats = owner.run_oneshot(ids, &reports)?;
    for h in workers {
        let _ = h.join();
    }
    let mut check = store::open(&config, Role::Read)?.ledger;
    let left = check.count_status_in_dates(&[Status::Pending, Status::Uploading], &date_names)?;
    let failed = check.count_status_in_dates(&[Status::Failed], &date_names)?;
    println!(
        "scan: {found} candidate(s) in {} date folder(s): {recorded} newly recorded, {} uploaded, {} to retry, {} failed, {} skipped; {left} pending, {failed} failed in these dates",
        date_names.len(),
        stats.uploaded,
        stats.retry,
        stats.failed,
        stats.skipped
    );
    Ok(if left + failed > 0 || stats.unsaved > 0 {
        EXIT_FAILURE
    } else {
        EXIT_OK
    })
}

fn scan_dry_run(config: &Config, dates: &[Date]) -> Result<i32> {
    let mut store = if store::exists(config) {
        Some(store::open(config, Role::Read)?.ledger)
    } else {
        None
    };
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for folder in &config.watch.folders {
        for d in dates {
            let name = layout::format_date(*d);
            let Some(entries) = scanner::list_one(
                folder,
                std::ffi::OsStr::new(&name),
                &config.watch.extensions,
            ) else {
                continue;
            };
            for s in entries {
                let what = match (&s.version, &mut store) {
                    (None, _) => format!("ignore ({:?}, never opened)", s.entry),
                    (Some(_), None) => "upload (new)".to_string(),
                    (Some(v), Some(st)) => match st.file_by_path(&s.path)? {
                        None => "upload (new)".to_string(),
                        Some(row) if row.size as u64 != v.size || row.mtime_ns != v.mtime_ns => {
                            format!("upload (new version; was {})", row.status)
                        }
                        Some(row) if row.status == Status::Pending => {
                            "upload (pending)".to_string()
                        }
                        Some(row) => format!("nothing ({})", row.status),
                    },
                };
                println!("{what:<32} {}", display_name(s.path.as_os_str()));
                *counts
                    .entry(what.split(' ').next().unwrap_or("").to_owned())
                    .or_default() += 1;
            }
        }
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "dry run: {}; nothing was changed",
        if parts.is_empty() {
            "no candidates".into()
        } else {
            parts.join(", ")
        }
    );
    Ok(EXIT_OK)
}
