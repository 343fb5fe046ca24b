//! The crate's error type: one enum whose variants carry the context an operator needs
//! (which path, which database, which key), and the mapping to DESIGN §7 exit codes.
//!
//! Per-file problems (an unreadable image, a refused connection) are not errors of this
//! type: they are outcomes recorded in the database. `Error` is for what stops a command.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::layout::{OpenError, Show};

/// Exit codes fixed by DESIGN §7.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 64;
/// sysexits' EX_NOINPUT: what the command was asked about does not exist (`show` of a file
/// the ledger has no row for).
pub const EXIT_NOINPUT: i32 = 66;
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
    /// A file to be read (`upload-test`'s) could not be opened as one: gone, not a regular
    /// file, beneath a symbolic link, unreadable.
    Open { path: PathBuf, source: OpenError },
    /// The system refused something the process needs to run at all: a thread, the signal
    /// handlers, an inotify instance.
    System { what: String, source: io::Error },
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
    /// The ledger as a whole cannot be used as it is (`ledger` names it: "database PATH",
    /// "PostgreSQL database NAME on HOST"); `state` says why, for the callers that decide
    /// on it, `msg` says it to the operator.
    Ledger {
        ledger: String,
        state: LedgerState,
        msg: String,
    },
    /// Another process holds `<database>.lock`.
    Locked { lock: PathBuf, holder: String },
    /// What the command was asked about is not there (exit 66, EX_NOINPUT): `show` of an id
    /// or a path the ledger has no row for.
    NotFound(String),
    /// Something else that stops the command, already worded for the operator; no caller
    /// decides anything on it.
    Other(String),
    /// A usage error of the Nagios plugin (`check`): UNKNOWN, exit 3.
    Plugin(String),
}

/// Why a ledger cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerState {
    /// The file is damaged or not a database at all: waiting does not fix it.
    Corrupt,
    /// Its content or its files (a `-wal`) were lost, before a start or under the running
    /// daemon: never a silent fresh start.
    Lost,
    /// Another program's tables, or no schema version: not ours to touch.
    Foreign,
    /// A schema newer than this build understands.
    Newer,
    /// Missing, empty, or not writable by this user: the operator's to fix.
    Unusable,
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

    pub fn system(what: impl Into<String>, source: io::Error) -> Error {
        Error::System {
            what: what.into(),
            source,
        }
    }

    /// A ledger that cannot be used: see [`LedgerState`].
    pub fn ledger(ledger: impl Into<String>, state: LedgerState, msg: impl Into<String>) -> Error {
        Error::Ledger {
            ledger: ledger.into(),
            state,
            msg: msg.into(),
        }
    }

    /// The SQLite ledger at `path` cannot be used.
    pub fn sqlite_state(path: &Path, state: LedgerState, msg: impl Into<String>) -> Error {
        Error::ledger(format!("database {}", path.shown()), state, msg)
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
            Error::Ledger { state, .. } => {
                matches!(state, LedgerState::Corrupt | LedgerState::Lost)
            }
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

    /// A statement the database could not run as written (SQLite's generic error: a table
    /// or index missing, renamed by hand; a datatype mismatch), rather than a database
    /// that is locked, full or failing: another statement may still run.
    pub fn is_statement_problem(&self) -> bool {
        match self {
            Error::Db { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::Unknown) | Some(rusqlite::ErrorCode::TypeMismatch)
            ),
            _ => false,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => EXIT_CONFIG,
            Error::Usage(_) => EXIT_USAGE,
            Error::NotFound(_) => EXIT_NOINPUT,
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
            Error::Open { path, source } => write!(f, "{}: {source}", path.shown()),
            Error::System { what, source } => write!(f, "{what}: {}", describe_io(source)),
            Error::Ledger { ledger, msg, .. } => write!(f, "{ledger}: {msg}"),
            Error::Locked { lock, holder } => write!(
                f,
                "another sega-uploader ({holder}) holds {}: only one daemon may use a database",
                lock.shown()
            ),
            Error::Other(msg) | Error::NotFound(msg) | Error::Plugin(msg) => write!(f, "{msg}"),
        }
    }
}

/// `Display` is the whole sentence an operator reads, the cause included and worded for them
/// ("permission denied", not "Permission denied (os error 13)"); `source()` hands the typed
/// cause to code that decides on it. So a printer shows `Display` alone and does not walk the
/// chain, or the cause would be said twice.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Io { source, .. } | Error::System { source, .. } => Some(source),
            Error::Open { source, .. } => Some(source),
            Error::Db { source, .. } => Some(source),
            _ => None,
        }
    }
}

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

    #[test]
    fn callers_decide_on_the_ledgers_state_not_on_its_words() {
        let path = Path::new("/var/lib/sega/x.db");
        let corrupt = Error::sqlite_state(path, LedgerState::Corrupt, "is damaged");
        assert!(corrupt.is_corrupt());
        assert_eq!(
            corrupt.to_string(),
            "database /var/lib/sega/x.db: is damaged"
        );
        assert!(Error::sqlite_state(path, LedgerState::Lost, "lost its -wal").is_corrupt());
        // The words alone decide nothing.
        let foreign = Error::sqlite_state(path, LedgerState::Foreign, "corrupt-looking words");
        assert!(!foreign.is_corrupt());
        assert!(!Error::Other("database is corrupt".into()).is_corrupt());
    }

    #[test]
    fn the_cause_is_there_for_code_and_said_once_to_people() {
        use std::error::Error as _;
        let e = Error::system(
            "starting thread db",
            io::Error::from_raw_os_error(libc::EAGAIN),
        );
        assert_eq!(
            e.to_string(),
            "starting thread db: resource temporarily unavailable"
        );
        let cause = e.source().and_then(|c| c.downcast_ref::<io::Error>());
        assert_eq!(cause.and_then(io::Error::raw_os_error), Some(libc::EAGAIN));
    }

    #[test]
    fn a_file_that_cannot_be_opened_keeps_its_cause() {
        use std::error::Error as _;
        let e = Error::Open {
            path: PathBuf::from("/srv/img/x.jpg"),
            source: OpenError::Unreadable(io::Error::from_raw_os_error(libc::EACCES)),
        };
        assert!(
            e.to_string().starts_with("/srv/img/x.jpg: unreadable: "),
            "{e}"
        );
        let open = e.source().and_then(|c| c.downcast_ref::<OpenError>());
        assert!(matches!(open, Some(OpenError::Unreadable(_))), "{open:?}");
        let io = open
            .and_then(|o| o.source())
            .and_then(|c| c.downcast_ref::<io::Error>());
        assert_eq!(io.and_then(io::Error::raw_os_error), Some(libc::EACCES));
    }
}
