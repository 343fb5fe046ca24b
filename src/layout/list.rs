//! Listing, for the minute rescan and the one-shot scan: the candidates of one date
//! directory with their types and versions, and the date directories inside the window.
//! Nothing is opened.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use time::Date;

use super::entry::{entry_type, type_of, EntryType, Version};
use super::name::name_is_candidate;
use super::open::is_vanished;
use super::show::display_name;
use super::window::{parse_date_dir, Window};
use super::{FolderRef, Location};

/// One candidate seen in a directory listing.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: PathBuf,
    pub location: Location,
    pub entry: EntryType,
    /// Some for a Regular entry, None for any other type.
    pub version: Option<Version>,
}

/// List one date directory of a folder: every entry whose NAME passes [`name_is_candidate`],
/// whatever its type (the caller records hostile types as such), in directory order.
///
/// Nothing is opened. The name rule runs first on every entry, with no allocation but the
/// entry's path; the type comes from readdir's d_type where the filesystem provides it; only
/// then is each regular candidate lstat'ed, for its size and mtime and its type as of now
/// (spread over a few threads in a large directory: the stats are most of a rescan's cost).
/// An entry that vanishes between readdir and lstat is skipped silently.
/// A missing date directory is an empty list. A date directory that is itself a symlink is not
/// followed, like every other symlink in the tree, and also lists as empty (the folder's own
/// dir may be a symlink, to a mount say: that one is the operator's choice).
/// Errors are those of the directory itself, including an lstat failing for another reason
/// than ENOENT (EACCES: the directory is readable but not searchable), which would fail for
/// every entry alike. A `date_dir_name` that is not a date directory name is InvalidInput.
pub fn list_date_dir(
    folder: &FolderRef,
    date_dir_name: &OsStr,
    extensions: &[String],
) -> io::Result<Vec<Seen>> {
    let Some(date) = parse_date_dir(date_dir_name) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a date directory name: {}", display_name(date_dir_name)),
        ));
    };
    let date_dir = date_dir_name.to_string_lossy().into_owned();
    let dir = folder.dir.join(date_dir_name);
    match fs::symlink_metadata(&dir) {
        Ok(m) if !m.is_dir() => return Ok(Vec::new()),
        Ok(_) => {}
        Err(e) if is_vanished(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        // Removed between the lstat and the opendir.
        Err(e) if is_vanished(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // Phase 1, readdir: the name rule on every entry, the type from d_type, no stat yet.
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        if !name_is_candidate(name, extensions) {
            continue;
        }
        // std answers file_type() from d_type, falling back to lstat for DT_UNKNOWN.
        let kind = match entry.file_type() {
            Ok(ft) => type_of(ft),
            Err(e) if is_vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        let location = Location {
            folder: folder.label.to_owned(),
            date,
            date_dir: date_dir.clone(),
            name: name.to_owned(),
        };
        out.push(Seen {
            path,
            location,
            entry: kind,
            version: None,
        });
    }
    // Phase 2: lstat the regular candidates for their version.
    let mut gone = vec![false; out.len()];
    lstat_regular(&mut out, &mut gone)?;
    let mut gone = gone.into_iter();
    out.retain(|_| !gone.next().unwrap_or(false));
    Ok(out)
}

/// Below this many candidates one thread stats them all: a few milliseconds, less than
/// starting helpers.
pub(super) const PARALLEL_LSTAT_MIN: usize = 2048;
/// At most this many threads stat a large directory. A stat costs about 1 µs (measured on a
/// 2-vCPU VM, ext4, warm cache), so 100,000 files cost ~120 ms on one thread: most of a
/// rescan. They are system calls on independent inodes, so they scale with cores.
const MAX_LSTAT_THREADS: usize = 4;

/// Fill in `version` (and the type as of now: lstat's type wins over readdir's d_type, in case
/// the entry was replaced since) for every Regular entry; mark in `gone` those that vanished.
fn lstat_regular(seen: &mut [Seen], gone: &mut [bool]) -> io::Result<()> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_LSTAT_THREADS);
    if threads < 2 || seen.len() < PARALLEL_LSTAT_MIN {
        return lstat_chunk(seen, gone);
    }
    let chunk = seen.len().div_ceil(threads);
    let parallel = std::thread::scope(|scope| {
        let mut parts = seen.chunks_mut(chunk).zip(gone.chunks_mut(chunk));
        // This thread takes the first part itself; helpers take the rest.
        let (first, first_gone) = parts.next()?;
        let mut helpers = Vec::new();
        for (part, part_gone) in parts {
            let helper = std::thread::Builder::new()
                .name("lstat".into())
                .spawn_scoped(scope, move || lstat_chunk(part, part_gone));
            // Out of threads: give up on helpers (the scope joins those started) and redo
            // the whole slice below; lstat has no side effects.
            helpers.push(helper.ok()?);
        }
        let mut result = lstat_chunk(first, first_gone);
        for helper in helpers {
            match helper.join() {
                Ok(r) => result = result.and(r),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Some(result)
    });
    parallel.unwrap_or_else(|| lstat_chunk(seen, gone))
}

fn lstat_chunk(seen: &mut [Seen], gone: &mut [bool]) -> io::Result<()> {
    for (s, gone) in seen.iter_mut().zip(gone.iter_mut()) {
        if s.entry != EntryType::Regular {
            continue;
        }
        match fs::symlink_metadata(&s.path) {
            Ok(meta) => {
                s.entry = entry_type(&meta);
                s.version = (s.entry == EntryType::Regular).then(|| Version::of(&meta));
            }
            Err(e) if is_vanished(&e) => *gone = true,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The date directories directly under a folder whose names parse as dates inside the window,
/// ascending by date. Only real directories count: a symlink named like a date is not
/// followed. A missing folder is an empty list (it may be mounted later).
pub fn date_dirs_in_window(
    folder_dir: &Path,
    window: &Window,
) -> io::Result<Vec<(Date, OsString)>> {
    let entries = match fs::read_dir(folder_dir) {
        Ok(entries) => entries,
        Err(e) if is_vanished(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(date) = parse_date_dir(&name) else {
            continue;
        };
        if !window.contains(date) {
            continue;
        }
        match entry.file_type() {
            Ok(ft) if ft.is_dir() => out.push((date, name)),
            Ok(_) => {}
            Err(e) if is_vanished(&e) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}
