//! Opening a recorded file: only beneath its watched folder, and never because a row says
//! so. A ledger row is checked against the file rules and the folder as configured now
//! ([`target`]), then opened by walking down from the configured directory with `openat`,
//! one component at a time, following no link ([`open_beneath`]).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::entry::{entry_type, EntryType, Version};
use super::name::name_is_candidate;
use super::open::{clear_nonblock, is_vanished, OpenError};
use super::show::Show;
use super::window::parse_date_dir;

/// Why a recorded row may not be opened under the configuration in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The row can name no file of the tree: a file name that is not one plain path
    /// component, a date that is not a date folder name (a hostile or damaged ledger row).
    /// Marked `failed`; nothing is opened.
    Hostile(String),
    /// The row names a file the configuration no longer covers (its folder or extension was
    /// removed, or the folder moved): `skipped`, and sent after all if seen again as a
    /// candidate.
    OutOfScope(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Hostile(why) => write!(f, "refused: {why}"),
            Refusal::OutOfScope(why) => write!(f, "no longer watched: {why}"),
        }
    }
}

/// A recorded file's place, checked by [`target`]: what [`open_beneath`] walks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The directory the operator configured (`config::Folder::anchor`): the one path that
    /// may be reached through links.
    pub anchor: PathBuf,
    /// The folder's name under `anchor`, for a folder named under `watch.root`.
    pub below: Option<OsString>,
    pub date: OsString,
    pub name: OsString,
    /// `<folder path>/<date>/<name>`, for messages.
    pub path: PathBuf,
}

/// Checks a recorded row against the file rules and the folder as configured now, before
/// anything is opened (DESIGN §10: a path rebuilt from the ledger is re-validated). `dir` is
/// the folder's path, `anchor`/`below` as in `config::Folder`; `recorded` is the path the
/// row was recorded (or, in a shared ledger, rebuilt) at.
pub fn target(
    anchor: &Path,
    below: Option<&OsStr>,
    dir: &Path,
    extensions: &[String],
    date: &str,
    name: &OsStr,
    recorded: &Path,
) -> Result<Target, Refusal> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.as_bytes().iter().any(|&b| b == b'/' || b == 0);
    if !plain {
        return Err(Refusal::Hostile(format!(
            "file name {} is not one plain path component",
            name.shown()
        )));
    }
    if parse_date_dir(OsStr::new(date)).is_none() {
        return Err(Refusal::Hostile(format!(
            "date {} is not a date folder name (YYYY-MM-DD)",
            OsStr::new(date).shown()
        )));
    }
    if !name_is_candidate(name, extensions) {
        return Err(Refusal::OutOfScope(format!(
            "{} is not a candidate under watch.extensions ({})",
            name.shown(),
            extensions.join(", ")
        )));
    }
    let path = dir.join(date).join(name);
    if path != recorded {
        return Err(Refusal::OutOfScope(format!(
            "recorded at {}, and its folder is now {}",
            recorded.shown(),
            dir.shown()
        )));
    }
    Ok(Target {
        anchor: anchor.to_path_buf(),
        below: below.map(OsStr::to_os_string),
        date: OsString::from(date),
        name: name.to_os_string(),
        path,
    })
}

/// Opens a recorded file the way [`open_regular`] does, but walking down from the
/// configured directory one component at a time with `openat`, each directory with
/// `O_NOFOLLOW|O_DIRECTORY`: a date folder (or a folder) swapped for a symbolic link is
/// refused, never followed out of the tree. A missing or empty folder or date folder is
/// [`OpenError::Unavailable`] (a share not mounted), a file missing from a date folder
/// that still has entries [`OpenError::Vanished`].
pub fn open_beneath(t: &Target) -> Result<(File, Metadata), OpenError> {
    open_beneath_in(t).map(|o| (o.file, o.meta))
}

/// A file opened by [`open_beneath_in`], with the date folder it was opened in.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub meta: Metadata,
    /// The date folder, as it was walked down to: [`DateDir::version_of`] looks at the
    /// name again there without another walk.
    pub date: DateDir,
}

/// A date folder held open.
#[derive(Debug)]
pub struct DateDir(File);

impl DateDir {
    /// The version of the regular file `name` in this folder now (lstat: a link is not a
    /// regular file); `None` when there is none. One call instead of a walk from the
    /// configured directory: for what a file became while it was being sent, where the
    /// walk would find the same entry unless the folders above were swapped meanwhile
    /// (and then the next rescan compares the new tree with the ledger).
    pub fn version_of(&self, name: &OsStr) -> Option<Version> {
        let meta = stat_at(&self.0, name).ok()?;
        (entry_type(&meta) == EntryType::Regular).then(|| Version::of(&meta))
    }
}

/// [`open_beneath`], keeping the date folder.
pub fn open_beneath_in(t: &Target) -> Result<Opened, OpenError> {
    let anchor = open_dir_at(None, t.anchor.as_os_str(), true).map_err(|e| {
        if is_vanished(&e) {
            OpenError::Unavailable(format!("{} is missing", t.anchor.shown()))
        } else {
            OpenError::Unreadable(e)
        }
    })?;
    let folder = match &t.below {
        None => anchor,
        Some(name) => step_down(&anchor, name, &t.anchor.join(name), "folder")?,
    };
    let folder_path = t.path.parent().and_then(Path::parent).unwrap_or(&t.anchor);
    let date = step_down(&folder, &t.date, &folder_path.join(&t.date), "date folder")?;
    let date_path = folder_path.join(&t.date);
    let gone = |e: io::Error| -> OpenError {
        if !is_vanished(&e) {
            return OpenError::Unreadable(e);
        }
        match has_entries(&date) {
            Ok(true) => OpenError::Vanished,
            Ok(false) => OpenError::Unavailable(format!("{} is empty", date_path.shown())),
            Err(e) => OpenError::Unreadable(e),
        }
    };
    let before = stat_at(&date, &t.name).map_err(gone)?;
    match entry_type(&before) {
        EntryType::Regular => {}
        other => return Err(OpenError::NotRegular(other)),
    }
    let fd = open_at(
        Some(&date),
        &t.name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => OpenError::NotRegular(EntryType::Symlink),
        Some(libc::ENXIO | libc::ENODEV) => match stat_at(&date, &t.name) {
            Ok(m) if entry_type(&m) != EntryType::Regular => OpenError::NotRegular(entry_type(&m)),
            _ => OpenError::Unreadable(e),
        },
        _ => gone(e),
    })?;
    let meta = fd.metadata().map_err(OpenError::Unreadable)?;
    match entry_type(&meta) {
        EntryType::Regular => {}
        other => return Err(OpenError::NotRegular(other)),
    }
    clear_nonblock(&fd).map_err(OpenError::Unreadable)?;
    Ok(Opened {
        file: fd,
        meta,
        date: DateDir(date),
    })
}

/// One directory down from `dir`, never through a link. `what` and `path` name it in the
/// messages.
fn step_down(dir: &File, name: &OsStr, path: &Path, what: &str) -> Result<File, OpenError> {
    open_dir_at(Some(dir), name, false).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => match has_entries(dir) {
            Ok(false) => OpenError::Unavailable(format!(
                "{} is empty (not mounted?)",
                path.parent().unwrap_or(path).shown()
            )),
            Ok(true) => OpenError::Unavailable(format!("{what} {} is missing", path.shown())),
            Err(e) => OpenError::Unreadable(e),
        },
        Some(libc::ELOOP | libc::ENOTDIR) => match stat_at(dir, name) {
            Ok(m) if entry_type(&m) == EntryType::Symlink => OpenError::NotBeneath(format!(
                "{what} {} is a symbolic link: not followed",
                path.shown()
            )),
            Ok(m) => OpenError::NotBeneath(format!(
                "{what} {} is a {}, not a directory",
                path.shown(),
                entry_type(&m)
            )),
            Err(e) if is_vanished(&e) => {
                OpenError::Unavailable(format!("{what} {} is missing", path.shown()))
            }
            Err(e) => OpenError::Unreadable(e),
        },
        _ => OpenError::Unreadable(e),
    })
}

fn open_dir_at(dir: Option<&File>, name: &OsStr, follow: bool) -> io::Result<File> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    open_at(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | nofollow,
    )
}

fn open_at(dir: Option<&File>, name: &OsStr, flags: libc::c_int) -> io::Result<File> {
    use std::os::unix::io::FromRawFd;
    let c = std::ffi::CString::new(name.as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let at = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: a NUL-terminated name and a descriptor that `dir` keeps open for the call; a
    // new descriptor is owned by the File at once.
    let fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// lstat of `name` in `dir`: what the entry itself is, never what a link points to.
fn stat_at(dir: &File, name: &OsStr) -> io::Result<Metadata> {
    // std has no fstatat; opening with O_PATH|O_NOFOLLOW gives a descriptor of the entry
    // itself (a symlink included) without reading or opening what it names, and its fstat
    // is the lstat.
    let f = open_at(
        Some(dir),
        name,
        libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
    )?;
    f.metadata()
}

/// Whether a directory has any entry but `.` and `..`.
fn has_entries(dir: &File) -> io::Result<bool> {
    // A fresh open of "." gives a directory stream of our own (its offset is not shared
    // with `dir`).
    let own = open_at(
        Some(dir),
        OsStr::new("."),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
    )?;
    let mut entries = fs::read_dir(format!("/proc/self/fd/{}", own.as_raw_fd()))?;
    Ok(entries.next().transpose()?.is_some())
}
