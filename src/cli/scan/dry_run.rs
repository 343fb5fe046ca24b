//! `scan --dry-run`: what a scan would do with each candidate, and nothing changed.

use time::Date;

use super::super::progress::Verbosity;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Result, EXIT_OK};
use crate::layout::{self, display_name};
use crate::scanner;
use crate::store::{self, Role, Status};

pub(super) fn dry_run(
    config: &Config,
    _clock: &Clock,
    dates: &[Date],
    verbosity: Verbosity,
) -> Result<i32> {
    let mut store = if store::exists(config) {
        Some(store::open(config, Role::Read)?.ledger)
    } else {
        None
    };
    let quiet = verbosity == Verbosity::Quiet;
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
                if !quiet {
                    println!("{what:<32} {}", display_name(s.path.as_os_str()));
                }
                *counts
                    .entry(what.split(' ').next().unwrap_or("").to_owned())
                    .or_default() += 1;
            }
        }
    }
    if quiet {
        return Ok(EXIT_OK);
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
