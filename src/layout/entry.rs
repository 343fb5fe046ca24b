//! The type rule and file identity: what kind of entry a path is as lstat sees it (a symlink
//! is a symlink), and its [`Version`] (size and mtime), whose change makes a new version.

use std::fmt;
use std::fs::{FileType, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

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

pub(super) fn type_of(ft: FileType) -> EntryType {
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
