//! The crate's error type: one enum whose variants carry the context an operator needs
//! (which path, which database, which key), and the mapping to DESIGN §7 exit codes.
//!
//! Per-file problems (an unreadable image, a refused connection) are not errors of this
//! type: they are outcomes recorded in the database. `Error` is for what stops a command.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::layout::Show;

/// Exit codes fixed by DESIGN §7.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 64;
pub const EXIT_CONFIG: i32 = 78;

#[derive(Debug)]
pub enum Error {
    /// The configuration is invalid (exit 78).
    Config(ConfigError),
    /// The command line is wrong (exit 64).
    Usage(String),
    /// A filesystem operation on `path` failed.
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    /// A database operation failed.
    Db {
        what: String,
        source: rusqlite::Error,
    },
    /// A PostgreSQL operation failed (the server's or libpq's message, already worded).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Pg { what: String, msg: String },
    /// PostgreSQL refused the rows of a statement (a constraint): about them, not the
    /// connection or the server.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    PgRefused { what: String, msg: String },
    /// The database belongs to a newer version, is corrupt, or is not ours.
    DbState { path: PathBuf, msg: String },
    /// The database's files were deleted or replaced under the running daemon.
    LedgerFilesLost { path: PathBuf, msg: String },
    /// Another process holds `<database>.lock`.
    Locked { lock: PathBuf, holder: String },
    /// Something else that stops the command, already worded for the operator.
    Other(String),
    /// A usage error of the Nagios plugin (`check`): UNKNOWN, exit 3.
    Plugin(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(what: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    }

    pub fn db(what: impl Into<String>, source: rusqlite::Error) -> Error {
        Error::Db {
            what: what.into(),
            source,
        }
    }

    /// The database file itself is damaged: not something waiting fixes.
    pub fn is_corrupt(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match self {
            Error::Db { source, .. } => {
                matches!(
                    source.sqlite_error_code(),
                    Some(DatabaseCorrupt) | Some(NotADatabase)
                )
            }
            Error::DbState { msg, .. } => msg.contains("corrupt"),
            Error::LedgerFilesLost { .. } => true,
            _ => false,
        }
    }

    /// The database refused the rows of one write (a constraint), not the write as such:
    /// the same write without them would succeed.
    pub fn is_item_problem(&self) -> bool {
        match self {
            Error::Db { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::ConstraintViolation)
            ),
            Error::PgRefused { .. } => true,
            _ => false,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => EXIT_CONFIG,
            Error::Usage(_) => EXIT_USAGE,
            Error::Plugin(_) => 3,
            _ => EXIT_FAILURE,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Io { path, what, source } => {
                write!(f, "{what} {}: {}", path.shown(), describe_io(source))
            }
            Error::Db { what, source } => write!(f, "{what}: {source}"),
            Error::Pg { what, msg } | Error::PgRefused { what, msg } => {
                write!(f, "{what}: {msg}")
            }
            Error::DbState { path, msg } | Error::LedgerFilesLost { path, msg } => {
                write!(f, "database {}: {msg}", path.shown())
            }
            Error::Locked { lock, holder } => write!(
                f,
                "another sega-uploader ({holder}) holds {}: only one daemon may use a database",
                lock.shown()
            ),
            Error::Other(msg) | Error::Plugin(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

/// `io::Error`'s Display adds "(os error 13)"; operators read "permission denied".
pub fn describe_io(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => lowercase_first(&text[..i]),
        None => text,
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_like_a_sentence() {
        let e = Error::io(
            "opening database",
            Path::new("/var/lib/sega/x.db"),
            io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(
            e.to_string(),
            "opening database /var/lib/sega/x.db: permission denied"
        );
        assert_eq!(e.exit_code(), EXIT_FAILURE);
    }
}
