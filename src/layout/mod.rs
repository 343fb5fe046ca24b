//! What a path means, and every per-file rule of DESIGN.md §3.
//!
//! This module owns the on-disk contract: the shape `<folder>/<YYYY-MM-DD>/<name>`, the date
//! window, the name rule, the type rule (lstat; a symlink is never followed, a FIFO, socket or
//! device never opened), the one safe way to open a candidate ([`open_regular`]), the content
//! rule (magic bytes, and a JPEG EOI / PNG IEND near the end), and the listing of date
//! directories used by the minute rescan and the one-shot scan.
//!
//! Everything here is a pure function or a few system calls with no state kept between
//! calls: the watcher, the ticker, the `scan` command and the upload workers all call it, so a
//! file is judged by the same rules however it was found. It owns no thread and nothing to stop.
//! The clock is not read here: callers pass "today" in, so tests can move it.
//!
//! This file holds the path shape ([`locate`]); `window` the date window and date directory
//! names; `name` the name rule and a file's kind by its extension; `entry` the type rule and
//! a file's version; `open` the safe open of a candidate; `beneath` the checked open of a
//! recorded file (a ledger row); `content` the content rule; `list` the listing of date
//! directories; `show` how a name or path is printed. The tests of them all, which share
//! their fixtures, are in `tests.rs`.

use std::ffi::OsString;
use std::path::Path;

use time::Date;

mod beneath;
mod content;
mod entry;
mod list;
mod name;
mod open;
mod show;
mod window;

pub use beneath::{open_beneath, open_beneath_in, target, DateDir, Opened, Refusal, Target};
pub use content::{check_content, Content};
pub use entry::{entry_type, EntryType, Version};
pub use list::{date_dirs_in_window, list_date_dir, Seen};
pub use name::{content_type, kind_of, name_is_candidate, Kind};
pub use open::{open_own_file, open_regular, OpenError};
pub use show::{display_name, text_line, Show};
pub use window::{format_date, parse_date_dir, Window};

/// A folder being watched: its label ("Sega_1") and its absolute directory.
#[derive(Debug, Clone, Copy)]
pub struct FolderRef<'a> {
    pub label: &'a str,
    pub dir: &'a Path,
}

/// Where a candidate sits: `<folder dir>/<YYYY-MM-DD>/<name>`, exactly that depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The folder's label (`files.folder`).
    pub folder: String,
    pub date: Date,
    /// The date directory's name as on disk (`files.date`); always ASCII.
    pub date_dir: String,
    /// The file name, raw bytes.
    pub name: OsString,
}

/// Shape only, no filesystem access: the first folder whose directory is the path's
/// grandparent, a valid date directory name as the parent, and one more component.
/// Anything else — a file directly in a folder, in a deeper subfolder, under a directory whose
/// name is not a date, or outside every folder — is `None`. Paths are compared by components
/// (a trailing `/` on a folder's dir does not matter) and are not canonicalized: callers pass
/// absolute paths built from the folders' own dirs.
pub fn locate(folders: &[FolderRef], path: &Path) -> Option<Location> {
    let name = path.file_name()?;
    let date_path = path.parent()?;
    let date_dir = date_path.file_name()?;
    let date = parse_date_dir(date_dir)?;
    let folder_dir = date_path.parent()?;
    let folder = folders.iter().find(|f| f.dir == folder_dir)?;
    Some(Location {
        folder: folder.label.to_owned(),
        date,
        // parse_date_dir accepted it, so it is ASCII and the conversion is exact.
        date_dir: date_dir.to_string_lossy().into_owned(),
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests;
