//! Opening the database: for writing (WAL, busy timeout, migrations), read-only for the
//! operator commands, or as the lock holder, which refuses a database that lost its
//! content; SQLite's open errors as sentences; and the daemon's watch over the database
//! file and its `-wal` (`watch_files`).

use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::schema::{newer_schema, COUNTERS_SINCE, SCHEMA_VERSION};
use super::{FileId, Store};
use crate::error::{Error, LedgerState, Result};
use crate::layout::Show;

/// `<database>-wal`.
fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// Refuses a database path that is there (`meta`, followed through symlinks) but is not a
/// regular file: SQLite would open a FIFO and wait for a writer forever, a `status` at
/// 3 a.m. hanging instead of saying what is wrong.
fn refuse_non_regular(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    Err(Error::sqlite_state(
        path,
        LedgerState::Unusable,
        format!(
            "is not a regular file ({}): check database.path",
            crate::layout::entry_type(meta)
        ),
    ))
}

fn file_id(p: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

impl Store {
    /// Opens (creating if needed) the database for writing: WAL, synchronous=NORMAL, a 5 s
    /// busy timeout, migrations applied.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_checked(path, |_| Ok(()))
    }

    /// `open`, with `check` run on the connection before any migration.
    fn open_checked(path: &Path, check: impl FnOnce(&Connection) -> Result<()>) -> Result<Store> {
        if let Ok(meta) = std::fs::metadata(path) {
            refuse_non_regular(path, &meta)?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
        // SQLite quietly opens a write-protected file read-only; the daemon would then fail
        // at its first write. Say so now, naming the file.
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(Error::sqlite_state(
                path,
                LedgerState::Unusable,
                "is not writable by this user (check its owner and mode, and its directory's)",
            ));
        }
        // Every write transaction takes the write lock at BEGIN: a deferred one that reads
        // first and upgrades later gets SQLITE_BUSY at once (no busy wait) when another
        // process (a `scan`, a `retry`) committed in between.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            files: None,
            counters: true,
        };
        store.configure(false)?;
        check(&store.conn)?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens the database as the holder of its lock (`run`, `scan`). `initialised`: when the
    /// lock file says a ledger was first set up here. A database file that exists without
    /// a schema then lost its content (a `-wal` deleted before a checkpoint, a truncated
    /// copy): it is refused, never silently started afresh (DESIGN §4). A database file
    /// that is gone altogether is started afresh, said loudly.
    pub fn open_as_holder(path: &Path, initialised: Option<&str>) -> Result<Store> {
        let existed = path.exists();
        let lock = crate::lock::lock_path(path);
        if let (Some(since), false) = (initialised, existed) {
            log::warn!(
                "database {} is gone, though {} shows a ledger was set up here on {since}: starting a new one; every image in the window is uploaded again (with the same Idempotency-Key)",
                path.shown(),
                lock.shown()
            );
        }
        let lost = |conn: &Connection| -> Result<()> {
            let Some(since) = initialised.filter(|_| existed) else {
                return Ok(());
            };
            let tables: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| open_error(path, e))?;
            if tables == 0 {
                return Err(Error::sqlite_state(
                    path,
                    LedgerState::Lost,
                    format!(
                        "has no tables, but {} shows a ledger was set up here on {since}: its \
                         content is lost (a deleted -wal file?). Not starting afresh: restore a \
                         backup, or remove {} to start a new ledger (every image in the window \
                         is then uploaded again, with the same Idempotency-Key)",
                        lock.shown(),
                        lock.shown()
                    ),
                ));
            }
            Ok(())
        };
        let mut store = Store::open_checked(path, lost)?;
        store.files = file_id(path).map(|db| (db, file_id(&wal_path(path))));
        Ok(store)
    }

    /// Opens an existing database for reading only (operator commands). Works while the
    /// daemon runs; says clearly when there is no database yet.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        match std::fs::metadata(path) {
            Ok(meta) => refuse_non_regular(path, &meta)?,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Error::sqlite_state(
                    path,
                    LedgerState::Unusable,
                    "cannot be read by this user: its directory is closed to it (the package \
                     makes /var/lib/sega readable by the group sega: run as a member of that \
                     group, or with sudo)",
                ))
            }
            Err(_) => {
                return Err(Error::sqlite_state(
                    path,
                    LedgerState::Unusable,
                    "does not exist yet (has the daemon or a scan run with this config?)",
                ))
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match immutable_uri(path) {
            Some(uri) => Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI),
            None => Connection::open_with_flags(path, flags),
        }
        .map_err(|e| open_error(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            files: None,
            counters: false,
        };
        store.configure(true)?;
        let version = store.user_version()?;
        store.counters = version >= COUNTERS_SINCE;
        if version == 0 {
            return Err(Error::sqlite_state(
                path,
                LedgerState::Unusable,
                "is empty: not yet initialised by sega-uploader",
            ));
        }
        if version > SCHEMA_VERSION {
            return Err(newer_schema(path, version));
        }
        Ok(store)
    }

    fn configure(&self, read_only: bool) -> Result<()> {
        let what = format!("configuring database {}", self.path.shown());
        self.conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| Error::db(what.clone(), e))?;
        // One plan per statement, whatever the bound values. Without this, SQLite re-plans
        // statements whose plan could depend on a parameter (`LIMIT ?2`, `file_id = ?1 ...
        // ORDER BY id DESC LIMIT 1`) on every new binding: the claim and the results trim were
        // re-prepared at each use, a fifth of the owner's CPU during a burst.
        self.conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(|e| Error::db(what.clone(), e))?;
        if !read_only {
            // journal_mode=WAL persists in the file; synchronous is per connection. The
            // first statement is also where SQLite notices a file that is not a database.
            let mode: String = self
                .conn
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                .map_err(|e| open_error(&self.path, e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                log::warn!(
                    "database {}: journal_mode is {mode}, not WAL",
                    self.path.shown()
                );
            }
            self.conn
                .execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
                .map_err(|e| Error::db(what, e))?;
        }
        Ok(())
    }

    fn user_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| open_error(&self.path, e))
    }

    /// The database file and its `-wal` must still be the ones this connection writes: a
    /// `-wal` deleted (a clean-up script) leaves the connection writing into an unlinked
    /// file whose content no later process would see. Then what it holds is checkpointed
    /// into the database, and the error stops the daemon, so that the next start opens the
    /// database afresh with a new `-wal`.
    pub(super) fn watch_files(&mut self) -> Result<()> {
        let Some((db, wal)) = self.files else {
            return Ok(());
        };
        let wal_now = file_id(&wal_path(&self.path));
        let problem = if file_id(&self.path) != Some(db) {
            Some(format!("{} was deleted or replaced", self.path.shown()))
        } else {
            match (wal, wal_now) {
                (Some(a), Some(b)) if a != b => Some(format!(
                    "{} was deleted and made anew by someone else",
                    wal_path(&self.path).shown()
                )),
                (Some(_), None) => Some(format!("{} was deleted", wal_path(&self.path).shown())),
                (None, now) => {
                    self.files = Some((db, now));
                    None
                }
                _ => None,
            }
        };
        let Some(problem) = problem else {
            return Ok(());
        };
        let saved = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|busy| busy == 0)
            .unwrap_or(false);
        Err(Error::sqlite_state(
            &self.path,
            LedgerState::Lost,
            if saved {
                format!("{problem} while the daemon ran: what it held was saved into the database (checkpoint); stopping, so that the next start opens a new write-ahead log")
            } else {
                format!("{problem} while the daemon ran, and what it held could not be saved into the database: stopping; the next start refuses a database that lost its schema rather than start afresh")
            },
        ))
    }
}

/// A `file:…?immutable=1` URI for a database that a reader could not otherwise open: no
/// `-wal` beside it (no daemon has it open: a clean stop removes both the `-wal` and the
/// `-shm`) and a directory this user cannot write. SQLite reads a WAL database only through
/// the `-shm` file, which it would have to create there; a member of the database's group
/// (an operator, the monitoring user running `check`) has read access only. With no `-wal`,
/// everything is in the database file, and `immutable` reads just that, without the `-shm`
/// and without locks. None otherwise: the normal read-only open, which sees the daemon's
/// latest commits through its `-wal`. (A daemon that starts during such a read writes into
/// a new `-wal`; only its checkpoints, later, touch the database file.)
fn immutable_uri(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    if wal_path(path).exists() {
        return None;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir_c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: access only reads the NUL-terminated path it is given.
    if unsafe { libc::access(dir_c.as_ptr(), libc::W_OK) } == 0 {
        return None;
    }
    // RFC 3986 for SQLite's URI parser: every byte but the unreserved ones and '/' escaped.
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    Some(uri)
}

/// Turns SQLite's terse open errors into a sentence that names the file, and refuses to
/// treat a corrupt file as a fresh start.
pub(super) fn open_error(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let (state, msg) = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => (
            LedgerState::Corrupt,
            "is corrupt or not an SQLite database; it was left untouched. Move it aside (the next \
             scan re-finds every image on disk) or restore a backup"
                .to_string(),
        ),
        Some(ErrorCode::CannotOpen) => (
            LedgerState::Unusable,
            format!(
                "cannot be opened (does its directory exist and is it writable by this user?): {e}"
            ),
        ),
        Some(ErrorCode::ReadOnly) | Some(ErrorCode::PermissionDenied) => (
            LedgerState::Unusable,
            format!("is not writable by this user: {e}"),
        ),
        _ => return Error::db(format!("opening database {}", path.shown()), e),
    };
    Error::sqlite_state(path, state, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_db;

    #[test]
    fn open_creates_the_schema_in_wal_mode_and_reopens() {
        let p = temp_db();
        let s = Store::open(&p).unwrap();
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(s.user_version().unwrap(), SCHEMA_VERSION);
        drop(s);
        Store::open(&p).unwrap();
        Store::open_read_only(&p).unwrap();
    }

    #[test]
    fn refuses_corrupt_foreign_and_newer_databases() {
        let p = temp_db();
        std::fs::write(&p, vec![0x42u8; 8192]).unwrap();
        let e = Store::open(&p).err().unwrap().to_string();
        assert!(e.contains("corrupt or not an SQLite database"), "{e}");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            vec![0x42u8; 8192],
            "left untouched"
        );

        let p = temp_db();
        Connection::open(&p)
            .unwrap()
            .execute_batch("CREATE TABLE other(x)")
            .unwrap();
        let e = Store::open(&p).err().unwrap().to_string();
        assert!(e.contains("not our database"), "{e}");

        let p = temp_db();
        Connection::open(&p)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let e = Store::open(&p).err().unwrap().to_string();
        assert!(e.contains("newer than this sega-uploader"), "{e}");
    }
}
