//! The ledger: every file seen and every attempt made, behind a handful of named
//! operations (record, claim, complete, requeue, prune, and the queries behind the operator
//! commands). Nothing outside this module writes SQL.
//!
//! Two implementations of [`Ledger`]: SQLite (`sqlite/`, the embedded default, one host)
//! and PostgreSQL (`postgres/`, behind the `postgres` cargo feature: one ledger shared by
//! many hosts). [`open`] picks one from the config and takes the daemon's lock the way that
//! backend does it: a lock file next to the SQLite database, an advisory lock per
//! (scope, host) in PostgreSQL.
//!
//! Times cross this interface as [`Timestamp`]s and statuses as [`Status`]; each backend
//! turns them into what it stores at its own edge (TEXT that sorts as time; `timestamptz`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::Version;
use crate::lock;
use crate::timestamp::Timestamp;

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;

// Types the backends and their tests name through `super::`, defined where the rest of the
// daemon shares them.
#[cfg(feature = "postgres")]
pub use crate::identity::Identity;
pub use crate::work::Observation;
pub use sqlite::Store;

/// Results kept per file: enough to see a pattern, bounded so a file failing for a week
/// cannot bloat the database.
pub const RESULTS_KEPT_PER_FILE: i64 = 20;

/// The `state` row that counts every file version `complete` marked uploaded: a counter
/// kept in the same transaction as the rows it counts, so it is exact, survives restarts and
/// is never lowered by prune (`check` reports it as `uploaded_total`, unit `c`). In a shared
/// PostgreSQL ledger each host counts its own.
pub const UPLOADED_TOTAL: &str = "uploaded_total";

/// Which due rows a claim takes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOrder {
    /// `upload.order` oldest_first: by mtime, oldest file first.
    OldestFile,
    /// `upload.order` newest_first.
    NewestFile,
    /// The row due longest ago first (by `next_attempt_at`): the outage's probes, so that
    /// each tries another file and one the endpoint cannot take is not tried over and over.
    LongestWaiting,
}

/// Claimed rows in the order they are sent: by mtime (then id), newest first for
/// `NewestFile`. A statement's RETURNING gives no order guarantee.
pub fn in_upload_order(claimed: &mut [Claimed], order: ClaimOrder) {
    claimed.sort_by_key(|c| (c.version.mtime_ns, c.id));
    if order == ClaimOrder::NewestFile {
        claimed.reverse();
    }
}

/// What a row's `status` column holds.
///
/// The daemon only ever writes the five words it knows. Anything else was written by hand
/// (`UPDATE files SET status = …`) and reads as [`Status::Unknown`] with its text: shown
/// and counted under its own word, never claimed (claims take `pending` rows only), never
/// re-queued by `retry`, and carried as it is by `migrate-db`. A reader never fails on it.
/// Like any row, it is made `pending` again when its file changes (a new version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pending,
    Uploading,
    Uploaded,
    Failed,
    Skipped,
    /// A word this build does not know, as the column holds it.
    Unknown(String),
}

impl Status {
    /// The statuses the daemon writes.
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Uploading,
        Status::Uploaded,
        Status::Failed,
        Status::Skipped,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Status::Pending => "pending",
            Status::Uploading => "uploading",
            Status::Uploaded => "uploaded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Unknown(text) => text,
        }
    }

    /// One of the five words the daemon writes (`list --status`), or None.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// What the column holds, whatever it is: a known word, or [`Status::Unknown`].
    pub fn stored(s: &str) -> Status {
        Status::parse(s).unwrap_or_else(|| Status::Unknown(s.to_owned()))
    }
}

/// The column's text, as `list` and `retry` print it.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What `record` did with a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordStats {
    pub new: usize,
    pub new_versions: usize,
    pub made_due: usize,
    pub unchanged: usize,
}

/// What one turn of the DB owner writes together (`Ledger::write_turn`): the new files it
/// held, the results it held, then a claim.
#[derive(Debug, Clone, Copy)]
pub struct Turn<'a> {
    /// Recorded first, as `record_claiming` records them, with up to `record_claiming` of
    /// the new rows written claimed.
    pub record: &'a [Observation],
    pub record_claiming: usize,
    /// Then applied, as `complete` applies them.
    pub complete: &'a [Completion],
    /// Then up to this many due rows claimed, as `claim_due` claims them (0: no claim).
    pub claim: usize,
    /// The order of both claims.
    pub order: ClaimOrder,
}

/// What `write_turn` did: each part's answer, as its own call would have given it.
#[derive(Debug, Default)]
pub struct Turned {
    pub recorded: RecordStats,
    /// The new rows the record wrote claimed.
    pub claimed_new: Vec<Claimed>,
    /// Completions whose row is gone.
    pub gone: Vec<i64>,
    /// The claim's rows, in upload order.
    pub claimed: Vec<Claimed>,
}

/// A row handed to an upload worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub path: PathBuf,
    pub folder: String,
    pub date: String,
    pub filename: OsString,
    pub version: Version,
    /// This attempt's number (attempts after the claim's increment).
    pub attempt: i64,
    pub incomplete_since: Option<Timestamp>,
}

/// What an attempt came to, as `upload_results.outcome` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempted {
    Success,
    Retry,
    Failed,
    /// A request went out, but the file changed while it was sent: what arrived was not
    /// the version claimed, and the new version follows.
    Changed,
}

impl Attempted {
    pub fn as_str(self) -> &'static str {
        match self {
            Attempted::Success => "success",
            Attempted::Retry => "retry",
            Attempted::Failed => "failed",
            Attempted::Changed => "changed",
        }
    }

    pub fn parse(s: &str) -> Option<Attempted> {
        [
            Attempted::Success,
            Attempted::Retry,
            Attempted::Failed,
            Attempted::Changed,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// The end of one claim, as decided by the DB owner from the worker's report.
#[derive(Debug, Clone)]
pub struct Completion {
    pub file_id: i64,
    pub attempt: i64,
    /// The version that was claimed: a completion never touches a newer version.
    pub version: Version,
    pub started_at: Timestamp,
    pub duration_ms: i64,
    pub http_status: Option<u16>,
    pub response_body: Option<String>,
    pub response_json: Option<String>,
    pub error: Option<String>,
    /// The attempt's result row, when there was an attempt (a request, or the file tried
    /// and unreadable); None when nothing was tried (skipped, not ready, changed before
    /// the send, refused by the rules).
    pub result: Option<Attempted>,
    pub disposition: Disposition,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// 2xx: done.
    Uploaded,
    /// Try again at `at`. `counted` false gives the attempt back (a probe, a shutdown).
    Retry { at: Timestamp, counted: bool },
    /// Permanent failure (4xx, 3xx, attempts exhausted).
    Failed,
    /// Not to be uploaded (not an image, vanished, not a regular file, no longer within
    /// the config). `absent`: the file was not there as a candidate (vanished, a
    /// symlink, out of the config's scope): seen again as one, the row is sent after all.
    Skipped { absent: bool },
    /// Not ready (still being written): look again at `at`. No result row, no attempt.
    NotReady {
        at: Timestamp,
        incomplete_since: Option<Timestamp>,
    },
    /// The file changed under the worker: record the new version, due at `at`.
    Changed { version: Version, at: Timestamp },
}

/// One row of `files`, for the operator commands.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: i64,
    pub path: PathBuf,
    pub folder: String,
    pub date: String,
    pub filename: OsString,
    pub size: i64,
    pub mtime_ns: i64,
    pub status: Status,
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    /// `None` where the ledger holds text that is not a time (a SQLite row edited by hand:
    /// its columns take any text), here and in every time an operator's command reads:
    /// shown as unreadable rather than failing the command.
    pub detected_at: Option<Timestamp>,
    pub uploaded_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
    /// The host that holds, or last held, the row's claim (shared ledgers only).
    pub host: Option<String>,
}

/// Filters for `list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub folder: Option<String>,
    pub date: Option<String>,
    pub limit: Option<i64>,
}

/// A path with a time and a detail, for status lines.
#[derive(Debug, Clone)]
pub struct PathAt {
    pub path: PathBuf,
    /// `None`: not a time (see `FileRow::detected_at`).
    pub at: Option<Timestamp>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ErrorCause {
    pub cause: String,
    pub count: i64,
    pub example: PathBuf,
}

/// What `status` shows.
#[derive(Debug, Clone)]
pub struct Summary {
    /// (folder, status, count)
    pub counts: Vec<(String, Status, i64)>,
    pub uploaded_today: i64,
    pub oldest_pending: Option<PathAt>,
    pub last_success: Option<PathAt>,
    pub last_error: Option<PathAt>,
    pub errors_24h: Vec<ErrorCause>,
    pub failed_last_hour: i64,
    /// The daemon's `state` rows: key → (value, updated_at).
    pub state: HashMap<String, (String, Option<Timestamp>)>,
    /// Every host of the scope (shared ledgers only; empty for SQLite).
    pub hosts: Vec<HostState>,
}

/// One host of a shared ledger's scope, as its state rows and the server see it.
#[derive(Debug, Clone)]
pub struct HostState {
    pub host: String,
    /// Key → value of its `state` rows (heartbeat, pid, started_at, stopped_at, endpoint…).
    pub state: HashMap<String, String>,
    /// Seconds since its last heartbeat, by the database server's clock (hosts' clocks may
    /// disagree).
    pub heartbeat_age_secs: Option<u64>,
    /// Its daemon holds its advisory lock right now (a live session).
    pub locked: bool,
    /// Rows it holds claimed (`uploading`).
    pub claimed: i64,
}

/// The named operations both backends implement. One value is one connection, used by one
/// thread. Every operation takes `&mut self`: the PostgreSQL one reconnects by itself after
/// its connection is lost.
pub trait Ledger: Send {
    /// Where the ledger is, for logs and `status` (no password).
    fn describe(&self) -> String;

    /// Records a batch of observations in one transaction: new files get a `pending` row;
    /// a known file with another size or mtime is a new version (attempts restart from 0,
    /// whatever its status); a known, unchanged file reported complete by inotify while it
    /// waits to settle is made due now.
    fn record(&mut self, batch: &[Observation], now: Timestamp) -> Result<RecordStats>;

    /// `record`, with up to `limit` of the new rows that are due now written claimed for
    /// this process (`uploading`, their first attempt), first in `order` (`OldestFile` or
    /// `NewestFile`; the owner puts them in upload order with `in_upload_order`); none while
    /// another row is due (by `now` and `far` as in `claim_due`: it goes first, and the
    /// owner may not know of it, re-queued by `retry` say). For the owner when it knows
    /// no other row is due: a file that arrives while the workers have room
    /// is then one row version fewer, and one claim transaction fewer, than recorded and
    /// claimed (`dispatch`). A backend may claim none (PostgreSQL: another host of the
    /// scope may have older due rows this one does not know of).
    fn record_claiming(
        &mut self,
        batch: &[Observation],
        now: Timestamp,
        far: Timestamp,
        limit: usize,
        order: ClaimOrder,
    ) -> Result<(RecordStats, Vec<Claimed>)> {
        let _ = (far, limit, order);
        Ok((self.record(batch, now)?, Vec::new()))
    }

    /// Which listed files (path bytes, version) of one date folder need not be recorded:
    /// those recorded with the version they have on disk now, and, with `changed_during`
    /// (when the listing began, and now), those whose row changed in between: the ledger
    /// then knows the file at least as newly as the listing (a rewrite inotify recorded
    /// while the folder was being listed), and a version that did change meanwhile unseen
    /// is found by the upload's own check or the next rescan. A change stamped later than
    /// now is compared by version: a wall clock stepped back would otherwise have kept a
    /// new version out for as long as the step. Memory follows the listing, never the
    /// ledger.
    fn known_among(
        &mut self,
        folder: &str,
        date: &str,
        listed: &[(&[u8], Version)],
        changed_during: Option<(Timestamp, Timestamp)>,
    ) -> Result<Vec<bool>>;

    /// A permission change on a pending file that failed: due now rather than at its backoff.
    fn recheck(&mut self, path: &Path, now: Timestamp) -> Result<bool>;

    /// Atomically claims up to `limit` due rows in `order`. Due: a `next_attempt_at` at or
    /// before `now`, or after `far` (set before the wall clock was stepped back: no wait the
    /// daemon sets is that long).
    fn claim_due(
        &mut self,
        now: Timestamp,
        far: Timestamp,
        limit: usize,
        order: ClaimOrder,
    ) -> Result<Vec<Claimed>>;

    /// Claims these rows if they are still pending (the one-shot scan).
    fn claim_ids(&mut self, ids: &[i64], now: Timestamp) -> Result<Vec<Claimed>>;

    /// Ids of pending rows due by `now` (or after `far`, as for `claim_due`), optionally
    /// only of these dates, in upload order.
    fn due_ids(
        &mut self,
        now: Timestamp,
        far: Timestamp,
        dates: &[String],
        newest_first: bool,
    ) -> Result<Vec<i64>>;

    /// When the next pending row becomes due, if any.
    fn next_due(&mut self) -> Result<Option<Timestamp>>;

    /// Applies a batch of completions in one transaction (see `Completion`), and adds the
    /// rows it marked uploaded to the `UPLOADED_TOTAL` state row. A completion whose row is
    /// gone (pruned, or removed by hand) is dropped, never the batch: its id is returned.
    fn complete(&mut self, batch: &[Completion], now: Timestamp) -> Result<Vec<i64>>;

    /// `record_claiming`, `complete` and `claim_due`, in that order, in one transaction: all
    /// of it is written, or none (an error). `None`: this ledger does not write them as one
    /// (the caller writes each part by itself). On SQLite a turn's three transactions wrote
    /// the pages they share (index pages, the counters, the header) three times, and each
    /// paid its own begin and commit: a third of the owner's time at a busy time (half the
    /// WAL pages per file now, BENCHMARKS.md).
    fn write_turn(
        &mut self,
        turn: Turn<'_>,
        now: Timestamp,
        far: Timestamp,
    ) -> Option<Result<Turned>> {
        let _ = (turn, now, far);
        None
    }

    /// Whether `write_turn` writes a turn as one transaction (never `None`).
    fn writes_turns(&self) -> bool {
        false
    }

    /// Gives claimed rows that no worker started back to `pending`, as if never claimed.
    fn unclaim(&mut self, ids: &[i64], now: Timestamp) -> Result<()>;

    /// The rows this process holds `uploading` in the ledger (SQLite: every such row, the
    /// file lock making it the only writer; PostgreSQL: this host's, claimed by this pid).
    /// The owner compares them with the jobs it knows of after database trouble: a claim
    /// whose answer was lost may have taken effect all the same. `None`: not yet known
    /// (PostgreSQL: this host's daemon lock is not taken again since a reconnect, so the
    /// lost session may still be running, and committing, a claim).
    fn claimed_here(&mut self) -> Result<Option<Vec<i64>>>;

    /// This daemon's rows left `uploading` go back to `pending`, due now, each with an
    /// `interrupted` result row (start-up; shutdown past the grace). Only `ids` when given.
    fn reset_uploading(
        &mut self,
        ids: Option<&[i64]>,
        now: Timestamp,
        error: &str,
    ) -> Result<usize>;

    /// Claims held by hosts of this scope whose heartbeat is older than the lease go back to
    /// `pending` (shared ledgers; nothing to do for SQLite, where one daemon owns the file).
    fn take_over_stale(&mut self, _now: Timestamp) -> Result<usize> {
        Ok(0)
    }

    /// The folders this daemon watches changed (a reload): a shared ledger claims only files
    /// of folders it can see, found at these roots (label → folder path).
    fn set_folders(&mut self, _roots: HashMap<String, PathBuf>) {}

    /// The daemon's periodic look at the ledger's own files (SQLite: the database and its
    /// write-ahead log are still the ones it opened). An error is fatal: it says what was
    /// lost and what was saved.
    fn watch_files(&mut self) -> Result<()> {
        Ok(())
    }

    /// After an endpoint outage: rows that failed during it are due now.
    fn release_backoff(&mut self, now: Timestamp) -> Result<usize>;

    /// Re-queues `failed` rows (`retry --failed`).
    fn retry_failed(&mut self, now: Timestamp) -> Result<usize>;

    /// Re-queues one path; uploaded (or skipped) rows only with `force`, a row being
    /// uploaded or with a status this build does not know never. Returns the status it had,
    /// or None when the path is not recorded.
    fn retry_path(&mut self, path: &Path, force: bool, now: Timestamp) -> Result<Option<Status>>;

    /// Deletes finished rows (`uploaded`, `failed`, `skipped`) and their results whose date
    /// folder is before `before_date`. A pending or claimed row is never pruned.
    fn prune(&mut self, before_date: &str) -> Result<usize>;

    /// The newest date folder with a row: prune never reaches past it, whatever the wall
    /// clock says.
    fn newest_date(&mut self) -> Result<Option<String>>;

    /// Writes this daemon's state rows (heartbeat, endpoint, pid…).
    fn set_state(&mut self, pairs: &[(&str, String)], now: Timestamp) -> Result<()>;

    /// This daemon's state rows: key → (value, updated_at; `None` where that is not a
    /// time). A row edited by hand must not stop the daemon from starting.
    fn state(&mut self) -> Result<HashMap<String, (String, Option<Timestamp>)>>;

    /// How many rows wait (pending or uploading), and when the oldest was detected. From
    /// counters and an index: its cost does not grow with the backlog.
    fn queue_overview(&mut self) -> Result<(i64, Option<Timestamp>)>;

    /// Folds the count changes written since the last fold into the totals, so that reading
    /// the counts stays cheap (shared ledgers, once a heartbeat; SQLite's triggers keep the
    /// totals themselves).
    fn fold_counts(&mut self) -> Result<()> {
        Ok(())
    }

    /// Rows uploaded at or after `since`.
    fn uploaded_since(&mut self, since: Timestamp) -> Result<i64>;

    /// Row counts per (folder, status), from the counters the ledger keeps (not a scan of
    /// the rows). A status this build does not know (a row written by hand) is counted under
    /// its own word, as [`Status::Unknown`]: `status` and the metrics show it, and never fail
    /// on it.
    fn counts(&mut self) -> Result<Vec<(String, Status, i64)>>;

    /// Rows in any of `statuses` among the given dates (the one-shot scan's exit code).
    fn count_status_in_dates(&mut self, statuses: &[Status], dates: &[String]) -> Result<i64>;

    fn list(&mut self, filter: &ListFilter) -> Result<Vec<FileRow>>;

    fn file_by_path(&mut self, path: &Path) -> Result<Option<FileRow>>;

    /// One row by its id (`show ID`); None when no row of this ledger (or scope) has it.
    fn file_by_id(&mut self, id: i64) -> Result<Option<FileRow>>;

    /// Every stored result of one file, oldest first (`show`): at most
    /// `RESULTS_KEPT_PER_FILE`, as the ledger keeps them.
    fn results(&mut self, file_id: i64) -> Result<Vec<ResultRow>>;

    /// The latest stored result of each of these files that has one (`list -v`).
    fn latest_results(&mut self, file_ids: &[i64]) -> Result<HashMap<i64, ResultRow>>;

    /// Everything `status` and `check` show, read at one moment so the numbers agree.
    fn summary(
        &mut self,
        today_start: Timestamp,
        day_ago: Timestamp,
        hour_ago: Timestamp,
    ) -> Result<Summary>;

    /// Every row of the ledger, for `migrate-db`: (row, its latest results oldest first).
    fn export(&mut self, each: &mut dyn FnMut(Exported) -> Result<()>) -> Result<usize>;

    /// Writes rows exported from another ledger (`migrate-db`); a row whose file is already
    /// recorded is left alone. Returns how many were added.
    fn import(&mut self, rows: &[Exported]) -> Result<usize>;
}

/// The log line of a new version of a recorded file, or of a file back where it had been
/// missing from (both backends' `record`).
fn log_new_version(path: &Path, old: Version, old_status: &str, absent: bool, now: Version) {
    use crate::layout::Show;
    if absent && old == now {
        log::info!(
            "{} is there again (it was {old_status}, missing when last tried): it will be uploaded",
            path.shown()
        );
    } else {
        log::info!(
            "new version of {} (was {} bytes, {old_status}; now {} bytes): it will be uploaded again",
            path.shown(),
            old.size,
            now.size
        );
    }
}

/// One file row and its results, as `migrate-db` carries them from one ledger to another.
#[derive(Debug, Clone)]
pub struct Exported {
    pub file: FileRow,
    pub incomplete_since: Option<Timestamp>,
    /// See `Disposition::Skipped`.
    pub absent: bool,
    pub results: Vec<ResultRow>,
}

/// One `upload_results` row.
#[derive(Debug, Clone)]
pub struct ResultRow {
    /// Its id: results of one file sort by it (`results`, `latest_results`).
    pub id: i64,
    pub attempt: i64,
    /// `None`: not a time (see `FileRow::detected_at`).
    pub started_at: Option<Timestamp>,
    pub duration_ms: i64,
    pub http_status: Option<i64>,
    pub response_body: Option<String>,
    pub response_json: Option<String>,
    pub error: Option<String>,
    pub outcome: Attempted,
    /// The host that made the attempt (shared ledgers only).
    pub host: Option<String>,
}

/// What the opener is for: it decides the lock taken and whether to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `run`: the daemon's lock, or fail naming its holder.
    Daemon,
    /// `scan`: the daemon's lock if free; if not, record only (`Opened::held_by`).
    Scan,
    /// An operator command that writes (`retry`): no lock, the daemon may be running.
    Write,
    /// The daemon's second session, which saves upload results (`owner::Committer`): no
    /// lock (the daemon's first session holds it), the daemon's plans.
    Results,
    /// An operator command that only reads.
    Read,
}

/// An open ledger and the lock that came with it.
pub struct Opened {
    pub ledger: Box<dyn Ledger>,
    /// `Role::Scan` only: who holds the daemon's lock (then the scan only records).
    pub held_by: Option<String>,
    /// The SQLite lock file, held as long as this lives (PostgreSQL's advisory lock lives in
    /// the ledger's own session).
    pub lock: Option<lock::DbLock>,
}

/// Opens the ledger the config names, for `role`.
pub fn open(config: &Config, role: Role) -> Result<Opened> {
    if let Some(url) = &config.database.url {
        return open_postgres(config, url.expose(), role);
    }
    let db = &config.database.path;
    let (mut lock, held_by) = match role {
        Role::Daemon => (Some(lock::acquire(db)?), None),
        Role::Scan => match lock::try_lock(db)? {
            lock::Attempt::Acquired(l) => (Some(l), None),
            lock::Attempt::Held(holder) => (None, Some(format!("pid {holder}"))),
        },
        Role::Write | Role::Results | Role::Read => (None, None),
    };
    let ledger: Box<dyn Ledger> = match (role, &mut lock) {
        (Role::Read, _) => Box::new(Store::open_read_only(db)?),
        (_, Some(l)) => {
            let store = Store::open_as_holder(db, l.initialised())?;
            l.mark_initialised(&crate::clock::format_ts(time::OffsetDateTime::now_utc()));
            Box::new(store)
        }
        _ => Box::new(Store::open(db)?),
    };
    Ok(Opened {
        ledger,
        held_by,
        lock,
    })
}

/// Whether a ledger exists to be read (a `scan --dry-run` before any run has none).
pub fn exists(config: &Config) -> bool {
    config.database.url.is_some() || config.database.path.exists()
}

/// Label → folder path of every watched folder.
pub fn roots(config: &Config) -> HashMap<String, PathBuf> {
    config
        .watch
        .folders
        .iter()
        .map(|f| (f.label.clone(), f.path.clone()))
        .collect()
}

#[cfg(feature = "postgres")]
fn open_postgres(config: &Config, url: &str, role: Role) -> Result<Opened> {
    let roots = roots(config);
    let mut pg = postgres::PgStore::open(
        url,
        Identity::from_config(config),
        roots,
        config.database.lease,
    )?;
    let held_by = match role {
        Role::Daemon => {
            if let Some(holder) = pg.lock_daemon()? {
                return Err(Error::Other(format!(
                    "another sega-uploader ({holder}) already runs for this scope and host in {}: \
                     stop it first, or give this one its own database.host",
                    pg.describe()
                )));
            }
            None
        }
        Role::Scan => pg.lock_daemon()?,
        Role::Results => {
            pg.serve_results()?;
            None
        }
        Role::Write | Role::Read => None,
    };
    Ok(Opened {
        ledger: Box::new(pg),
        held_by,
        lock: None,
    })
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_: &Config, _: &str, _: Role) -> Result<Opened> {
    // The config check refuses database.url in such a build; this is only reached if a
    // caller skipped it.
    Err(Error::Other(
        "database.url is set but this build has no PostgreSQL support (the `postgres` feature)"
            .into(),
    ))
}

/// The date folder and file name a path names (`…/<folder>/<date>/<name>`), as a shared
/// ledger identifies the file: the same file seen under another mount point on another
/// host has the same identity.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub fn identity_of(path: &Path) -> Option<(String, String, OsString)> {
    let name = path.file_name()?.to_os_string();
    let date_dir = path.parent()?;
    let date = date_dir.file_name()?.to_str()?.to_owned();
    let folder = date_dir.parent()?.file_name()?.to_str()?.to_owned();
    Some((folder, date, name))
}

/// A local path for a file of a shared ledger: this host's folder root, the date, the name.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub fn local_path(
    roots: &HashMap<String, PathBuf>,
    folder: &str,
    date: &str,
    name: &OsString,
) -> Option<PathBuf> {
    Some(roots.get(folder)?.join(date).join(name))
}
