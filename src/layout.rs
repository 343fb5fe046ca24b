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

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, FileType, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use time::{Date, Duration, Month};

// ---------------------------------------------------------------------------------------------
// The date window and date directory names

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

// ---------------------------------------------------------------------------------------------
// Path shape

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

// ---------------------------------------------------------------------------------------------
// Name rule and kind

/// Suffixes that transfer tools give a file while it is still being written (Firefox `.part`,
/// WinSCP `.filepart`, Chrome `.crdownload`, many tools `.tmp`). Rejected even if an operator
/// lists one of them in `watch.extensions`.
pub const PARTIAL_SUFFIXES: [&str; 4] = ["part", "tmp", "filepart", "crdownload"];

/// The bytes after the last `.`, if there is one that is neither the first nor the last byte
/// (".jpg" and "x." have no extension, as with `Path::extension`).
fn extension(name: &[u8]) -> Option<&[u8]> {
    let dot = name.iter().rposition(|&b| b == b'.')?;
    let ext = &name[dot + 1..];
    (dot > 0 && !ext.is_empty()).then_some(ext)
}

/// The name rule. A name is a candidate when it is not hidden (no leading `.`: rsync and many
/// uploaders write to hidden temporary names) and its LAST extension is one of `extensions`,
/// compared ASCII case-insensitively (`.JPG` counts), and is not a partial-transfer suffix.
///
/// Only the last extension matters, because transfer tools append their suffix to the final
/// name: "x.jpg.part" is a transfer in progress and is rejected, while "x.part.jpg" is a
/// finished file whose name happens to contain ".part" and is a candidate.
/// Works on raw bytes, so a non-UTF-8 name (CP949 from an old Samba share) is a candidate when
/// its extension matches. Allocates nothing: it runs on every directory entry of a rescan.
pub fn name_is_candidate(name: &OsStr, extensions: &[String]) -> bool {
    let name = name.as_bytes();
    if name.first() == Some(&b'.') {
        return false;
    }
    let Some(ext) = extension(name) else {
        return false;
    };
    if PARTIAL_SUFFIXES
        .iter()
        .any(|p| ext.eq_ignore_ascii_case(p.as_bytes()))
    {
        return false;
    }
    extensions.iter().any(|e| {
        // Tolerate "jpg" and ".jpg" alike; config validation should have settled on the former.
        let e = e.strip_prefix('.').unwrap_or(e);
        ext.eq_ignore_ascii_case(e.as_bytes())
    })
}

/// What the content rule checks a file as, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jpeg,
    Png,
    /// Another operator-configured extension (e.g. "bmp"): no content check.
    Other,
}

/// By extension, case-insensitively: jpg/jpeg → Jpeg, png → Png, anything else → Other.
pub fn kind_of(name: &OsStr) -> Kind {
    match extension(name.as_bytes()) {
        Some(e) if e.eq_ignore_ascii_case(b"jpg") || e.eq_ignore_ascii_case(b"jpeg") => Kind::Jpeg,
        Some(e) if e.eq_ignore_ascii_case(b"png") => Kind::Png,
        _ => Kind::Other,
    }
}

/// The Content-Type of the file part of the upload.
pub fn content_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Jpeg => "image/jpeg",
        Kind::Png => "image/png",
        Kind::Other => "application/octet-stream",
    }
}

// ---------------------------------------------------------------------------------------------
// Type rule and file identity

/// What kind of directory entry a path is, as lstat sees it (a symlink is a symlink, whatever
/// it points to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl fmt::Display for EntryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryType::Regular => "regular file",
            EntryType::Directory => "directory",
            EntryType::Symlink => "symlink",
            EntryType::Fifo => "FIFO",
            EntryType::Socket => "socket",
            EntryType::CharDevice => "character device",
            EntryType::BlockDevice => "block device",
            EntryType::Unknown => "unknown type",
        })
    }
}

fn type_of(ft: FileType) -> EntryType {
    if ft.is_file() {
        EntryType::Regular
    } else if ft.is_dir() {
        EntryType::Directory
    } else if ft.is_symlink() {
        EntryType::Symlink
    } else if ft.is_fifo() {
        EntryType::Fifo
    } else if ft.is_socket() {
        EntryType::Socket
    } else if ft.is_char_device() {
        EntryType::CharDevice
    } else if ft.is_block_device() {
        EntryType::BlockDevice
    } else {
        EntryType::Unknown
    }
}

/// The entry type from `symlink_metadata()` (lstat) or `File::metadata()` (fstat). Given the
/// result of a following `metadata()` (stat) it would describe a symlink's target instead.
pub fn entry_type(meta: &Metadata) -> EntryType {
    type_of(meta.file_type())
}

/// File identity for "is this new?": size and mtime. A change of either is a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub size: u64,
    /// st_mtime × 10⁹ + st_mtime_nsec (saturating, for absurd far-future clocks).
    pub mtime_ns: i64,
}

impl Version {
    pub fn of(meta: &Metadata) -> Version {
        let mtime_ns = meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec());
        Version {
            size: meta.size(),
            mtime_ns,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Safe open

/// Why a candidate could not be opened as a regular file.
#[derive(Debug)]
pub enum OpenError {
    /// ENOENT / ENOTDIR: it is gone (renamed, deleted) from a date folder that is still there.
    Vanished,
    /// Its folder or date folder is missing or empty: most likely a share not mounted right
    /// now. Unreadable for now, never "vanished".
    Unavailable(String),
    /// A directory on the way is a symbolic link (or not a directory): never followed.
    NotBeneath(String),
    /// A symlink, FIFO, socket, device or directory: never to be read.
    NotRegular(EntryType),
    /// EACCES, EPERM, EIO, EMFILE and anything else: transient, retry with backoff.
    Unreadable(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Vanished => f.write_str("vanished"),
            OpenError::Unavailable(why) => write!(f, "unreadable for now: {why}"),
            OpenError::NotBeneath(why) => f.write_str(why),
            OpenError::NotRegular(t) => write!(f, "not a regular file ({t})"),
            OpenError::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Unreadable(e) => Some(e),
            _ => None,
        }
    }
}

fn is_vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
        || e.kind() == io::ErrorKind::NotFound
}

/// Open a candidate for reading, safely, and return it with its fstat metadata.
///
/// 1. lstat: anything but a regular file is refused without being opened — opening a FIFO
///    blocks, opening a tape or serial device has side effects, a symlink may point anywhere.
/// 2. open(O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC|O_NOCTTY), which covers the path being
///    swapped between the lstat and the open: O_NOFOLLOW fails with ELOOP on a symlink,
///    O_NONBLOCK makes a FIFO open return at once instead of waiting for a writer, O_NOCTTY
///    keeps a terminal from becoming ours.
/// 3. fstat the descriptor and require a regular file again; then clear O_NONBLOCK so later
///    reads behave normally.
///
/// The metadata returned is the fstat of what was actually opened, so the caller compares
/// `Version::of(&meta)` with the version it recorded: if the file was replaced or rewritten
/// since, nothing is sent and the new version is recorded instead (DESIGN.md §3 "Identity").
/// Known limit: a device swapped in between steps 1 and 2 would be opened (O_NONBLOCK, then
/// closed at once); only someone able to create device nodes in the image tree can do that.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), OpenError> {
    let before = fs::symlink_metadata(path).map_err(|e| {
        if is_vanished(&e) {
            OpenError::Vanished
        } else {
            OpenError::Unreadable(e)
        }
    })?;
    match entry_type(&before) {
        EntryType::Regular => open_no_follow(path),
        other => Err(OpenError::NotRegular(other)),
    }
}

/// Steps 2 and 3 of [`open_regular`]; separate so tests can reach the race path.
fn open_no_follow(path: &Path) -> Result<(File, Metadata), OpenError> {
    let file = OpenOptions::new()
        .read(true)
        // std sets O_CLOEXEC itself; it is repeated here so the flag list says it all.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| open_failed(path, e))?;
    let meta = file.metadata().map_err(OpenError::Unreadable)?;
    match entry_type(&meta) {
        EntryType::Regular => {}
        // Dropping `file` closes it without a single read.
        other => return Err(OpenError::NotRegular(other)),
    }
    clear_nonblock(&file).map_err(OpenError::Unreadable)?;
    Ok((file, meta))
}

fn open_failed(path: &Path, e: io::Error) -> OpenError {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => OpenError::Vanished,
        // O_NOFOLLOW on a symlink. (ELOOP also means a symlink loop in a parent directory;
        // either way the path leads through a link we will not follow.)
        Some(libc::ELOOP) => OpenError::NotRegular(EntryType::Symlink),
        // ENXIO: open() of a Unix socket, or of a device with no driver; ENODEV likewise.
        // Ask lstat what is there now so the row says what it is.
        Some(libc::ENXIO | libc::ENODEV) => match fs::symlink_metadata(path) {
            Ok(m) if entry_type(&m) != EntryType::Regular => OpenError::NotRegular(entry_type(&m)),
            Err(e2) if is_vanished(&e2) => OpenError::Vanished,
            _ => OpenError::Unreadable(e),
        },
        _ => OpenError::Unreadable(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Opening a recorded file: only beneath its watched folder, and never because a row says so

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
    Ok((fd, meta))
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

fn clear_nonblock(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with F_GETFL/F_SETFL on a descriptor owned by `file`; only integers pass.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: as above.
        let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Content rule

/// How far from the end the JPEG end-of-image marker or the PNG IEND chunk may be for a file
/// to count as complete. Cameras may append padding or a short trailer after EOI, which is
/// why the check is "near the end" and not "at the end"; 1 KiB is one small pread. A longer
/// trailer makes the file look incomplete, and it is uploaded with a WARN once
/// `watch.incomplete_max_wait_secs` passes unchanged. Assumed, untested on real cameras: that
/// an embedded EXIF thumbnail's own EOI (near the start) is rarely in the last 1 KiB of a
/// half-written file; the primary completeness signals are IN_CLOSE_WRITE and settle time.
pub const TAIL_WINDOW: u64 = 1024;

const JPEG_SOI: [u8; 3] = [0xFF, 0xD8, 0xFF];
const JPEG_EOI: [u8; 2] = [0xFF, 0xD9];
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
/// The IEND chunk type and its CRC, which never varies (the chunk has no data).
const PNG_IEND: [u8; 8] = [b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];
/// Bytes read from the start: the longest signature.
const HEAD_LEN: usize = PNG_SIGNATURE.len();

/// The result of the content rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Image,
    /// Wrong magic bytes or empty: `skipped`, "not an image".
    NotAnImage,
    /// No end marker near the end (or shorter than its signature so far): still being written.
    Incomplete,
}

fn signature(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Jpeg => &JPEG_SOI,
        Kind::Png => &PNG_SIGNATURE,
        Kind::Other => &[],
    }
}

/// Does the file's start carry the kind's magic bytes? (Other: no check.)
pub fn magic_ok(kind: Kind, head: &[u8]) -> bool {
    head.starts_with(signature(kind))
}

/// Does the file's last [`TAIL_WINDOW`] bytes hold the kind's end marker? (Other: yes.)
pub fn looks_complete(kind: Kind, tail: &[u8]) -> bool {
    let marker: &[u8] = match kind {
        Kind::Jpeg => &JPEG_EOI,
        Kind::Png => &PNG_IEND,
        Kind::Other => return true,
    };
    tail.windows(marker.len()).any(|w| w == marker)
}

/// The content rule on an open file of `size` bytes (from its fstat), reading only the first
/// [`HEAD_LEN`] and the last [`TAIL_WINDOW`] bytes with pread — never the whole file, and
/// without moving the file position, so the upload can stream it from 0 afterwards.
///
/// A 0-byte file is NotAnImage (DESIGN.md §3). A non-empty file shorter than its signature
/// whose bytes so far match it is Incomplete rather than NotAnImage: a write caught early is
/// re-checked instead of being skipped for good. The same holds if the file shrank since fstat.
pub fn check_content(file: &File, size: u64, kind: Kind) -> io::Result<Content> {
    if size == 0 {
        return Ok(Content::NotAnImage);
    }
    if kind == Kind::Other {
        return Ok(Content::Image);
    }
    let mut head = [0u8; HEAD_LEN];
    let n = read_full_at(file, &mut head, 0)?;
    let head = &head[..n];
    if !magic_ok(kind, head) {
        return Ok(if signature(kind).starts_with(head) {
            Content::Incomplete
        } else {
            Content::NotAnImage
        });
    }
    let start = size.saturating_sub(TAIL_WINDOW);
    let mut tail = [0u8; TAIL_WINDOW as usize];
    // size - start <= TAIL_WINDOW, so the cast cannot truncate.
    let len = (size - start) as usize;
    let n = read_full_at(file, &mut tail[..len], start)?;
    Ok(if looks_complete(kind, &tail[..n]) {
        Content::Image
    } else {
        Content::Incomplete
    })
}

/// pread until `buf` is full or end of file; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            // End of file early: it was truncated since its fstat.
            Ok(0) => break,
            Ok(n) => done += n,
            // EINTR: retry.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

// ---------------------------------------------------------------------------------------------
// Names are bytes

/// A name or path for logs and terminals: valid UTF-8 as is; each byte that is not valid UTF-8
/// as `\xNN`; ASCII control characters as `\xNN` and other control characters as `\u{NNNN}`
/// (a newline in a name cannot forge a log line); a backslash as `\\`, so the form is
/// unambiguous. For logs only: not reversible for storage.
pub fn display_name(name: &OsStr) -> String {
    Shown(name).to_string()
}

/// A name or path, written the [`display_name`] way without allocating: what every log line,
/// error message and human output uses (`path.shown()`), never `Path::display`, which lets a
/// newline in a file name start a forged log line.
#[derive(Clone, Copy)]
pub struct Shown<'a>(&'a OsStr);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.as_bytes().utf8_chunks() {
            let valid = chunk.valid();
            let mut plain = 0;
            for (i, c) in valid.char_indices() {
                if c != '\\' && !c.is_control() && !moves_text(c) {
                    continue;
                }
                f.write_str(&valid[plain..i])?;
                plain = i + c.len_utf8();
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c if c.is_ascii_control() => write!(f, "\\x{:02x}", u32::from(c))?,
                    c => write!(f, "\\u{{{:04x}}}", u32::from(c))?,
                }
            }
            f.write_str(&valid[plain..])?;
            for &b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Characters that are not control characters but move text around on a terminal or in a
/// log viewer: line and paragraph separators (a line break in some viewers) and the
/// bidirectional controls (a name that reads backwards). Written as `\u{NNNN}` too.
fn moves_text(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// `.shown()` on paths and names: see [`Shown`].
pub trait Show {
    fn shown(&self) -> Shown<'_>;
}

impl Show for Path {
    fn shown(&self) -> Shown<'_> {
        Shown(self.as_os_str())
    }
}

impl Show for OsStr {
    fn shown(&self) -> Shown<'_> {
        Shown(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Listing (the minute rescan and the one-shot scan)

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
const PARALLEL_LSTAT_MIN: usize = 2048;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration as StdDuration, Instant, UNIX_EPOCH};

    /// A per-test directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("sega-layout-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
        assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
    }

    fn exts() -> Vec<String> {
        vec!["jpg".into(), "jpeg".into(), "png".into()]
    }

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn day(s: &str) -> Date {
        parse_date_dir(os(s)).unwrap()
    }

    fn folder<'a>(label: &'a str, dir: &'a Path) -> FolderRef<'a> {
        FolderRef { label, dir }
    }

    /// The outcome of `f(path)` as text: "ok" or the OpenError's Display.
    fn outcome(f: fn(&Path) -> Result<(File, Metadata), OpenError>, path: &Path) -> String {
        f(path).map_or_else(|e| e.to_string(), |_| "ok".into())
    }

    /// A complete 1×1 greyscale baseline JPEG: SOI, APP0 (JFIF), DQT, SOF0, DHT ×2, SOS,
    /// one byte of entropy-coded data, EOI. (`file` reports it as a 1x1 JPEG.)
    fn tiny_jpeg() -> Vec<u8> {
        let mut j = vec![
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0,
        ];
        j.extend([1, 1, 0, 0, 1, 0, 1, 0, 0]);
        j.extend([0xFF, 0xDB, 0x00, 0x43, 0x00]);
        j.extend([1u8; 64]);
        j.extend([0xFF, 0xC0, 0x00, 0x0B, 0x08, 0, 1, 0, 1, 1, 1, 0x11, 0]);
        for class in [0x00, 0x10] {
            // One code of length 1 for symbol 0 (DC: category 0; AC: end of block).
            j.extend([0xFF, 0xC4, 0x00, 0x14, class, 1]);
            j.extend([0u8; 16]);
        }
        j.extend([0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
        j.extend([0x3F, 0xFF, 0xD9]);
        j
    }

    /// A complete 1×1 greyscale PNG: signature, IHDR, IDAT (zlib of one scanline), IEND,
    /// with real CRCs (checked with Python's zlib and `file`).
    const TINY_PNG: [u8; 70] = [
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, // signature
        0x00, 0x00, 0x00, 0x0D, b'I', b'H', b'D', b'R', 0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0,
        0x3A, 0x7E, 0x9B, 0x55, // IHDR
        0x00, 0x00, 0x00, 0x0D, b'I', b'D', b'A', b'T', 0x78, 0x01, 0x01, 0x02, 0x00, 0xFD, 0xFF,
        0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x7E, 0x05, 0x0D, 0xD2, // IDAT
        0x00, 0x00, 0x00, 0x00, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82, // IEND
    ];

    #[test]
    fn window_holds_lookback_today_and_tomorrow() {
        let w = Window::new(day("2026-11-26"), 0);
        assert_eq!(w.dates(), [day("2026-11-26"), day("2026-11-27")]);
        assert!(!w.contains(day("2026-11-25")) && !w.contains(day("2026-11-28")));
        let w = Window::new(day("2026-11-26"), 7);
        assert_eq!((w.first, w.last), (day("2026-11-19"), day("2026-11-27")));
        assert_eq!(w.dates().len(), 9);
        assert!(w.contains(day("2026-11-19")) && !w.contains(day("2026-11-18")));
    }

    #[test]
    fn window_moves_at_midnight_and_across_month_and_year_ends() {
        let (before, after) = (
            Window::new(day("2026-11-26"), 1),
            Window::new(day("2026-11-27"), 1),
        );
        assert!(before.contains(day("2026-11-25")) && !after.contains(day("2026-11-25")));
        assert!(!before.contains(day("2026-11-28")) && after.contains(day("2026-11-28")));
        assert_eq!(Window::new(day("2026-01-31"), 0).last, day("2026-02-01"));
        let w = Window::new(day("2026-12-31"), 7);
        assert_eq!((w.first, w.last), (day("2026-12-24"), day("2027-01-01")));
        let w = Window::new(day("2027-01-01"), 1);
        let all = [day("2026-12-31"), day("2027-01-01"), day("2027-01-02")];
        assert_eq!(w.dates(), all);
        assert_eq!(Window::new(day("2028-03-01"), 1).first, day("2028-02-29"));
        // Saturation at the ends of the calendar.
        assert_eq!(Window::new(Date::MAX, 1).dates().len(), 2);
        assert_eq!(Window::new(Date::MIN, 5).first, Date::MIN);
    }

    #[test]
    fn date_dir_names_are_strict() {
        assert_eq!(day("2028-02-29").to_string(), "2028-02-29");
        let bad = "2026-02-29 2026-02-30 2026-13-01 2026-00-10 2026-01-00 2026-1-05 2026-01-5 \
                   26-01-05 2026/01/05 2026-01-05x +026-01-05 2026-+1-05 2026-01-0a 20260105";
        for name in bad.split(' ').chain([" 2026-01-05", "2026-01-05 ", ""]) {
            assert_eq!(parse_date_dir(os(name)), None, "{name:?}");
        }
        assert_eq!(parse_date_dir(OsStr::from_bytes(b"2026-01-\xff5")), None);
        assert_eq!(format_date(day("2026-01-05")), "2026-01-05");
    }

    #[test]
    fn locate_accepts_exactly_folder_date_name() {
        let folders = [
            folder("Sega_1", Path::new("/data/Sega_1")),
            folder("Sega_2", Path::new("/mnt/other/Sega_2/")),
            folder("Dup", Path::new("/data/Sega_1")),
        ];
        let loc = locate(&folders, Path::new("/data/Sega_1/2026-11-26/IMG_0001.jpg"));
        let want = Location {
            folder: "Sega_1".into(),
            date: day("2026-11-26"),
            date_dir: "2026-11-26".into(),
            name: "IMG_0001.jpg".into(),
        };
        assert_eq!(loc, Some(want));
        let loc = locate(&folders, Path::new("/mnt/other/Sega_2/2026-11-27/c.PNG")).unwrap();
        assert_eq!(
            (loc.folder.as_str(), loc.date),
            ("Sega_2", day("2026-11-27"))
        );
        for rejected in [
            "/data/Sega_1/IMG_0001.jpg",          // directly in the folder
            "/data/Sega_1/2026-11-26/sub/x.jpg",  // deeper
            "/data/Sega_1/2026-11-26/a/b/x.jpg",  // deeper still
            "/data/Sega_1/holiday/x.jpg",         // not a date
            "/data/Sega_1/2026-02-30/x.jpg",      // not a real date
            "/data/Sega_3/2026-11-26/x.jpg",      // not a watched folder
            "/data/2026-11-26/x.jpg",             // the root itself
            "/data/Sega_1/2026-11-26",            // the date dir itself
            "/data/Sega_1/2026-11-26/..",         // not a name
            "/data/Sega_1/x/../2026-11-26/y.jpg", // not canonical
        ] {
            assert_eq!(locate(&folders, Path::new(rejected)), None, "{rejected}");
        }
        assert_eq!(
            locate(&[], Path::new("/data/Sega_1/2026-11-26/a.jpg")),
            None
        );
    }

    #[test]
    fn name_rule() {
        let e = exts();
        for ok in "IMG_0001.jpg a.JPG b.Jpeg c.png x.part.jpg x.tmp.PNG a+b.jpg".split(' ') {
            assert!(name_is_candidate(os(ok), &e), "{ok}");
        }
        let no = ".hidden.jpg .jpg x.jpg.part x.JPG.PART x.tmp x.jpg.tmp x.filepart \
                  x.jpg.crdownload notes.txt jpg noext x. x.jpgx x.jpg~";
        for name in no.split(' ').chain([""]) {
            assert!(!name_is_candidate(os(name), &e), "{name}");
        }
        // CP949 "사진.jpg": not UTF-8, still a candidate.
        assert!(name_is_candidate(
            OsStr::from_bytes(b"\xbb\xe7\xc1\xf8.jpg"),
            &e
        ));
        assert!(!name_is_candidate(OsStr::from_bytes(b"\xbb\xe7.txt"), &e));
        // An operator's own extension, with or without the dot; partial suffixes never count.
        let custom = vec![".bmp".to_string(), "tmp".to_string()];
        assert!(name_is_candidate(os("a.BMP"), &custom));
        assert!(
            !name_is_candidate(os("a.tmp"), &custom) && !name_is_candidate(os("a.jpg"), &custom)
        );
    }

    #[test]
    fn kinds_and_content_types() {
        for (name, kind) in [
            ("a.jpg", Kind::Jpeg),
            ("a.JPEG", Kind::Jpeg),
            ("a.Png", Kind::Png),
        ] {
            assert_eq!(kind_of(os(name)), kind, "{name}");
        }
        assert_eq!(kind_of(os("a.bmp")), Kind::Other);
        assert_eq!(kind_of(os("jpg")), Kind::Other);
        assert_eq!(kind_of(OsStr::from_bytes(b"\xbb.jpg")), Kind::Jpeg);
        assert_eq!(content_type(Kind::Jpeg), "image/jpeg");
        assert_eq!(content_type(Kind::Png), "image/png");
        assert_eq!(content_type(Kind::Other), "application/octet-stream");
    }

    #[test]
    fn magic_and_end_markers() {
        let jpeg = tiny_jpeg();
        assert!(magic_ok(Kind::Jpeg, &jpeg) && looks_complete(Kind::Jpeg, &jpeg));
        assert!(magic_ok(Kind::Png, &TINY_PNG) && looks_complete(Kind::Png, &TINY_PNG));
        assert!(!magic_ok(Kind::Png, &jpeg) && !magic_ok(Kind::Jpeg, &TINY_PNG));
        assert!(!looks_complete(Kind::Jpeg, &jpeg[..jpeg.len() - 1]));
        assert!(!looks_complete(Kind::Png, &TINY_PNG[..TINY_PNG.len() - 1]));
        assert!(!magic_ok(Kind::Jpeg, b"hello") && !magic_ok(Kind::Jpeg, &[0xFF, 0xD8]));
        assert!(magic_ok(Kind::Other, b"") && looks_complete(Kind::Other, b""));
    }

    #[test]
    fn content_rule_on_files() {
        use Content::{Image, Incomplete, NotAnImage};
        let t = TempDir::new();
        let jpeg = tiny_jpeg();
        // A trailer after EOI: within the window still complete; one byte beyond, not.
        let mut trailer = jpeg.clone();
        trailer.resize(jpeg.len() + TAIL_WINDOW as usize - 2, 0);
        let mut long_trailer = trailer.clone();
        long_trailer.push(0);
        // Large files: the start and the end are read, not the middle.
        let mut big_jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
        big_jpeg.resize(1 << 20, 0x55);
        big_jpeg.extend([0xFF, 0xD9]);
        let mut big_png = TINY_PNG[..33].to_vec();
        big_png.resize(1 << 20, 0);
        big_png.extend(&TINY_PNG[TINY_PNG.len() - 12..]);
        let cases: [(&[u8], Kind, Content); 14] = [
            (&jpeg, Kind::Jpeg, Image),
            (&TINY_PNG, Kind::Png, Image),
            (&jpeg[..100], Kind::Jpeg, Incomplete),
            (&TINY_PNG[..60], Kind::Png, Incomplete),
            (&[0xFF, 0xD8], Kind::Jpeg, Incomplete),
            (b"hello, world\n", Kind::Jpeg, NotAnImage),
            (&jpeg, Kind::Png, NotAnImage),
            (b"", Kind::Jpeg, NotAnImage),
            (b"", Kind::Other, NotAnImage),
            (b"BM anything", Kind::Other, Image),
            (&trailer, Kind::Jpeg, Image),
            (&long_trailer, Kind::Jpeg, Incomplete),
            (&big_jpeg, Kind::Jpeg, Image),
            (&big_png, Kind::Png, Image),
        ];
        for (i, (bytes, kind, want)) in cases.into_iter().enumerate() {
            let path = t.0.join(format!("{i}"));
            fs::write(&path, bytes).unwrap();
            let (file, meta) = open_regular(&path).unwrap();
            assert_eq!(
                check_content(&file, meta.len(), kind).unwrap(),
                want,
                "case {i}"
            );
        }
        // Shrunk since its fstat: re-checked later, not skipped.
        let path = t.0.join("shrunk.jpg");
        fs::write(&path, &jpeg).unwrap();
        let (file, meta) = open_regular(&path).unwrap();
        for now in [&[0xFF, 0xD8, 0xFF, 0xE0][..], b""] {
            fs::write(&path, now).unwrap();
            assert_eq!(
                check_content(&file, meta.len(), Kind::Jpeg).unwrap(),
                Incomplete
            );
        }
    }

    #[test]
    fn open_regular_opens_a_regular_file_for_blocking_reads() {
        let t = TempDir::new();
        let path = t.0.join("a.jpg");
        fs::write(&path, tiny_jpeg()).unwrap();
        let (file, meta) = open_regular(&path).unwrap();
        let lstat = fs::symlink_metadata(&path).unwrap();
        assert_eq!(Version::of(&meta), Version::of(&lstat));
        assert_eq!((meta.dev(), meta.ino()), (lstat.dev(), lstat.ino()));
        // SAFETY: F_GETFL on an open descriptor.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0, "O_NONBLOCK left set");
    }

    #[test]
    fn open_regular_refuses_symlinks_without_touching_the_target() {
        let t = TempDir::new();
        let target = t.0.join("target.jpg");
        fs::write(&target, tiny_jpeg()).unwrap();
        let fifo = t.0.join("fifo");
        mkfifo(&fifo);
        // Were a target followed, the dangling link would be "vanished" and the FIFO's a FIFO.
        for (link, to) in [
            ("link.jpg", target),
            ("dangling.jpg", t.0.join("no")),
            ("f.jpg", fifo),
        ] {
            let link = t.0.join(link);
            symlink(&to, &link).unwrap();
            assert_eq!(outcome(open_regular, &link), "not a regular file (symlink)");
            // The race path, with no lstat first: O_NOFOLLOW refuses it with ELOOP.
            assert_eq!(
                outcome(open_no_follow, &link),
                "not a regular file (symlink)"
            );
        }
    }

    #[test]
    fn open_regular_never_blocks_on_a_fifo() {
        let t = TempDir::new();
        let fifo = t.0.join("f.jpg");
        mkfifo(&fifo);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let started = Instant::now();
            let gated = outcome(open_regular, &fifo);
            // Also the race path, where the FIFO really is opened: O_NONBLOCK returns at once.
            let raced = outcome(open_no_follow, &fifo);
            let _ = tx.send((gated, raced, started.elapsed()));
        });
        let (gated, raced, took) = rx
            .recv_timeout(StdDuration::from_secs(5))
            .expect("timeout: opening a FIFO blocked");
        assert_eq!(
            (gated.as_str(), raced.as_str()),
            ("not a regular file (FIFO)", "not a regular file (FIFO)")
        );
        assert!(took < StdDuration::from_secs(1), "{took:?}");
    }

    #[test]
    fn open_regular_classifies_the_rest() {
        let t = TempDir::new();
        fs::create_dir(t.0.join("d.jpg")).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(t.0.join("s.jpg")).unwrap();
        fs::write(t.0.join("f.jpg"), b"x").unwrap();
        for (path, want) in [
            (t.0.join("d.jpg"), "not a regular file (directory)"),
            (t.0.join("s.jpg"), "not a regular file (socket)"),
            (t.0.join("missing.jpg"), "vanished"),
            (t.0.join("f.jpg/x.jpg"), "vanished"), // ENOTDIR
            (
                PathBuf::from("/dev/null"),
                "not a regular file (character device)",
            ),
        ] {
            assert_eq!(outcome(open_regular, &path), want, "{path:?}");
            if path.starts_with(&t.0) {
                assert_eq!(outcome(open_no_follow, &path), want, "{path:?}");
            }
        }
    }

    #[test]
    fn open_errors_read_well_and_permission_is_retryable() {
        assert_eq!(OpenError::Vanished.to_string(), "vanished");
        let e = OpenError::Unreadable(io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.to_string(), "unreadable: Permission denied (os error 13)");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("EACCES case skipped: root reads files whatever their mode");
            return;
        }
        let t = TempDir::new();
        let path = t.0.join("locked.jpg");
        fs::write(&path, b"x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        let e = open_regular(&path).unwrap_err();
        assert!(matches!(e, OpenError::Unreadable(_)), "{e}");
        assert_eq!(e.to_string(), "unreadable: Permission denied (os error 13)");
    }

    #[test]
    fn entry_types_and_versions_from_lstat() {
        let t = TempDir::new();
        let d = &t.0;
        let f = File::create(d.join("r")).unwrap();
        f.set_len(5).unwrap();
        f.set_modified(UNIX_EPOCH + StdDuration::new(1_764_115_200, 123_456_789))
            .unwrap();
        drop(f);
        symlink(d.join("r"), d.join("l")).unwrap();
        mkfifo(&d.join("f"));
        let lstat = |n: &str| fs::symlink_metadata(d.join(n)).unwrap();
        assert_eq!(entry_type(&lstat("r")), EntryType::Regular);
        assert_eq!(entry_type(&lstat("l")), EntryType::Symlink);
        assert_eq!(entry_type(&lstat("f")), EntryType::Fifo);
        assert_eq!(entry_type(&lstat("")), EntryType::Directory);
        let v = Version::of(&lstat("r"));
        assert_eq!((v.size, v.mtime_ns), (5, 1_764_115_200_123_456_789));
    }

    #[test]
    fn names_for_display() {
        assert_eq!(
            display_name(OsStr::from_bytes(b"\xbb\xe7\xc1\xf8.jpg")),
            r"\xbb\xe7\xc1\xf8.jpg"
        );
        assert_eq!(display_name(os("사진.jpg")), "사진.jpg");
        assert_eq!(
            display_name(os("a\nb\\c\u{85}.jpg")),
            r"a\x0ab\\c\u{0085}.jpg"
        );
        // A UTF-8 name spelled like an escape reads apart from the bytes it spells.
        assert_eq!(display_name(os(r"\xbb.jpg")), r"\\xbb.jpg");
        // Separators and bidirectional controls would break or reverse the line in a viewer.
        assert_eq!(
            display_name(os("a\u{2028}b\u{202e}gpj.exe")),
            r"a\u{2028}b\u{202e}gpj.exe"
        );
    }

    #[test]
    fn list_date_dir_returns_candidates_with_types() {
        let t = TempDir::new();
        let folder_dir = t.0.join("Sega_1");
        let dir = folder_dir.join("2026-11-26");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("a.jpg"), tiny_jpeg()).unwrap();
        fs::write(dir.join("B.PNG"), TINY_PNG).unwrap();
        fs::write(dir.join(OsStr::from_bytes(b"\xbb\xe7.jpg")), b"x").unwrap();
        symlink(dir.join("a.jpg"), dir.join("link.jpg")).unwrap();
        mkfifo(&dir.join("pipe.jpg"));
        fs::create_dir(dir.join("dir.jpg")).unwrap();
        for skipped in [
            "notes.txt",
            ".hidden.jpg",
            "c.jpg.part",
            "noext",
            "sub/deep.jpg",
        ] {
            fs::write(dir.join(skipped), b"x").unwrap();
        }
        let f = folder("Sega_1", &folder_dir);
        let mut seen = list_date_dir(&f, os("2026-11-26"), &exts()).unwrap();
        seen.sort_by(|a, b| a.location.name.cmp(&b.location.name));
        let got: Vec<_> = seen
            .iter()
            .map(|s| {
                (
                    s.location.name.as_bytes(),
                    s.entry,
                    s.version.map(|v| v.size),
                )
            })
            .collect();
        let want: [(&[u8], _, _); 6] = [
            (b"B.PNG", EntryType::Regular, Some(TINY_PNG.len() as u64)),
            (b"a.jpg", EntryType::Regular, Some(tiny_jpeg().len() as u64)),
            (b"dir.jpg", EntryType::Directory, None),
            (b"link.jpg", EntryType::Symlink, None),
            (b"pipe.jpg", EntryType::Fifo, None),
            (b"\xbb\xe7.jpg", EntryType::Regular, Some(1)),
        ];
        assert_eq!(got, want);
        for s in &seen {
            assert_eq!(s.path, dir.join(&s.location.name));
            assert_eq!(locate(&[f], &s.path).as_ref(), Some(&s.location));
        }
        // Not a date name: an error. Missing, or a symlink (not followed): empty.
        let err = list_date_dir(&f, os("holiday"), &exts()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        symlink(&dir, folder_dir.join("2026-11-25")).unwrap();
        let nowhere = t.0.join("nowhere");
        for (f, name) in [
            (f, "2026-11-27"),
            (f, "2026-11-25"),
            (folder("X", &nowhere), "2026-11-26"),
        ] {
            assert!(
                list_date_dir(&f, os(name), &exts()).unwrap().is_empty(),
                "{name}"
            );
        }
    }

    #[test]
    fn list_date_dir_stats_a_large_directory_in_parallel() {
        let t = TempDir::new();
        let dir = t.0.join("2026-11-26");
        fs::create_dir(&dir).unwrap();
        let n = PARALLEL_LSTAT_MIN + 11;
        for i in 0..n {
            fs::write(dir.join(format!("{i:05}.jpg")), vec![0u8; i % 7]).unwrap();
        }
        let seen = list_date_dir(&folder("S", &t.0), os("2026-11-26"), &exts()).unwrap();
        assert_eq!(seen.len(), n);
        for s in &seen {
            let i: usize = s.location.name.to_str().unwrap()[..5].parse().unwrap();
            let size = s.version.map(|v| v.size);
            assert_eq!(
                (s.entry, size),
                (EntryType::Regular, Some((i % 7) as u64)),
                "{i}"
            );
        }
    }

    #[test]
    fn date_dirs_in_window_lists_real_date_dirs_in_order() {
        let t = TempDir::new();
        for d in
            "2026-11-27 2026-11-25 2026-11-26 2026-11-24 2026-11-28 holiday 2026-02-30".split(' ')
        {
            fs::create_dir(t.0.join(d)).unwrap();
        }
        fs::write(t.0.join("2026-11-26.jpg"), b"x").unwrap();
        let w = Window::new(day("2026-11-26"), 1);
        let got = date_dirs_in_window(&t.0, &w).unwrap();
        let want: Vec<_> = ["2026-11-25", "2026-11-26", "2026-11-27"]
            .map(|d| (day(d), OsString::from(d)))
            .into();
        assert_eq!(got, want);
        // A symlink named like a date is not a date directory; a regular file neither.
        let t2 = TempDir::new();
        symlink(t.0.join("2026-11-26"), t2.0.join("2026-11-26")).unwrap();
        fs::write(t2.0.join("2026-11-25"), b"").unwrap();
        assert!(date_dirs_in_window(&t2.0, &w).unwrap().is_empty());
        assert!(date_dirs_in_window(&t.0.join("missing"), &w)
            .unwrap()
            .is_empty());
    }

    /// `cargo test --release -- --ignored rescan_speed --nocapture`: 100,000 files in one date
    /// folder, all candidates, listed with a warm cache.
    #[test]
    #[ignore]
    fn rescan_speed() {
        let t = TempDir::new();
        let dir = t.0.join("2026-11-26");
        fs::create_dir(&dir).unwrap();
        for i in 0..100_000 {
            File::create(dir.join(format!("IMG_{i:06}.jpg"))).unwrap();
        }
        let mut best = StdDuration::MAX;
        for _ in 0..5 {
            let started = Instant::now();
            let seen = list_date_dir(&folder("S", &t.0), os("2026-11-26"), &exts()).unwrap();
            best = best.min(started.elapsed());
            assert_eq!(seen.len(), 100_000);
        }
        eprintln!("list_date_dir of 100,000 files: {best:?}");
        assert!(best < StdDuration::from_millis(200), "{best:?}");
    }
}
