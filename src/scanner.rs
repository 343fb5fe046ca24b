//! Directory listings: which date folders are in the window, and what candidates each one
//! holds. Used by the minute rescan (ticker), the one-shot `scan`, the watcher when a date
//! folder appears, and after an inotify queue overflow.
//!
//! It only lists and lstats (never opens a file), and sends each date folder's listing to
//! the DB owner, which compares it with the database in one query.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use time::Date;

use crate::config::Folder;
use crate::error::describe_io;
use crate::layout::Show;
use crate::layout::{self, FolderRef, Seen, Window};
use crate::owner::Input;

/// What one pass found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub date_dirs: usize,
    pub files: usize,
    pub took: Duration,
}

/// A folder named under the root must be a directory there, not a symbolic link to one:
/// nothing below the configured directories is followed through a link (DESIGN §10).
fn not_a_link(folder: &Folder) -> std::io::Result<()> {
    if folder.below.is_some()
        && std::fs::symlink_metadata(&folder.path).is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(std::io::Error::other(
            "it is a symbolic link, which is not followed (name its target as an absolute folder entry)",
        ));
    }
    Ok(())
}

/// Lists one date folder; problems are logged, not fatal (the next pass tries again).
pub fn list_one(folder: &Folder, date_dir: &OsStr, extensions: &[String]) -> Option<Vec<Seen>> {
    let fref = FolderRef {
        label: &folder.label,
        dir: &folder.path,
    };
    let listed =
        not_a_link(folder).and_then(|()| layout::list_date_dir(&fref, date_dir, extensions));
    match listed {
        Ok(v) => Some(v),
        Err(e) => {
            log::warn!(
                "cannot list {}: {}",
                folder.path.join(date_dir).shown(),
                describe_io(&e)
            );
            None
        }
    }
}

/// Sends one `Listing` per date folder in the window, for every folder. Returns false when
/// the receiver is gone (shutdown).
pub fn scan_window(
    folders: &[Folder],
    window: &Window,
    extensions: &[String],
    tx: &Sender<Input>,
) -> Option<Summary> {
    let t0 = Instant::now();
    let mut summary = Summary::default();
    for folder in folders {
        let dirs =
            not_a_link(folder).and_then(|()| layout::date_dirs_in_window(&folder.path, window));
        let dirs = match dirs {
            Ok(d) => d,
            Err(e) => {
                log::warn!("cannot list {}: {}", folder.path.shown(), describe_io(&e));
                continue;
            }
        };
        for (_, name) in dirs {
            if !send_listing(folder, &name, extensions, tx, &mut summary)? {
                continue;
            }
        }
    }
    summary.took = t0.elapsed();
    Some(summary)
}

/// Lists the given dates (a backfill with `scan --date`), in or out of the window.
pub fn scan_dates(
    folders: &[Folder],
    dates: &[Date],
    extensions: &[String],
    tx: &Sender<Input>,
) -> Option<Summary> {
    let t0 = Instant::now();
    let mut summary = Summary::default();
    for folder in folders {
        for d in dates {
            let name = layout::format_date(*d);
            send_listing(folder, OsStr::new(&name), extensions, tx, &mut summary)?;
        }
    }
    summary.took = t0.elapsed();
    Some(summary)
}

/// The dates of `window` that have a date folder in at least one folder, ascending: what a
/// backfill over a range (`scan --since`) lists, rather than every day of a range that may
/// span years. A folder that cannot be listed is logged and skipped.
pub fn dates_present(folders: &[Folder], window: &Window) -> Vec<Date> {
    let mut dates = std::collections::BTreeSet::new();
    for folder in folders {
        let dirs =
            not_a_link(folder).and_then(|()| layout::date_dirs_in_window(&folder.path, window));
        match dirs {
            Ok(d) => dates.extend(d.into_iter().map(|(date, _)| date)),
            Err(e) => log::warn!("cannot list {}: {}", folder.path.shown(), describe_io(&e)),
        }
    }
    dates.into_iter().collect()
}

/// Returns None when the receiver is gone, Some(false) when nothing was listed.
pub fn send_listing(
    folder: &Folder,
    date_dir: &OsStr,
    extensions: &[String],
    tx: &Sender<Input>,
    summary: &mut Summary,
) -> Option<bool> {
    let date = date_dir.to_string_lossy().into_owned();
    // Before the first lstat, through the channel the watcher's files go through: whatever
    // the owner records of this folder after this message is at least as new as the
    // listing, which then does not set it back to what it saw.
    tx.send(Input::ListingStarted {
        folder: folder.label.clone(),
        date: date.clone(),
    })
    .ok()?;
    let Some(entries) = list_one(folder, date_dir, extensions) else {
        return Some(false);
    };
    summary.date_dirs += 1;
    summary.files += entries.len();
    tx.send(Input::Listing {
        folder: folder.label.clone(),
        date,
        entries,
    })
    .ok()?;
    Some(true)
}
