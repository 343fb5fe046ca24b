//! The one safe way to open a candidate ([`open_regular`]): lstat first, then an open that
//! follows no symlink and never blocks on a FIFO, then fstat; and [`OpenError`], why it could
//! not be opened.

use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::entry::{entry_type, EntryType};

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

pub(super) fn is_vanished(e: &io::Error) -> bool {
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
pub(super) fn open_no_follow(path: &Path) -> Result<(File, Metadata), OpenError> {
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

pub(super) fn clear_nonblock(file: &File) -> io::Result<()> {
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

/// Opens one of the daemon's own files (the database's lock file, the log file) without
/// ever waiting, and only a regular file: O_NONBLOCK, and its type looked at before the
/// open and again after. A FIFO put there would block the open or a read for ever (a
/// daemon that never gets to READY, a `status` that hangs); looked at first, it is named,
/// where a non-blocking write-only open of a FIFO without a reader fails with "no such
/// device". Unlike [`open_regular`], a symlink is followed: these paths are the operator's.
pub fn open_own_file(path: &Path, opts: &mut OpenOptions) -> io::Result<File> {
    let not_regular =
        |meta: &Metadata| io::Error::other(format!("not a regular file ({})", entry_type(meta)));
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(not_regular(&meta)),
        _ => {}
    }
    let file = opts.custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok(file)
}
