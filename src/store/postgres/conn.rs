//! The session: `PgStore::open`, the one `Link` every statement runs through (it
//! reconnects after an outage, at most one attempt a second, backing off to 5 s), the
//! daemon's advisory lock, taken again after a reconnect, and [`Prepared`]: the busy
//! statements parsed and planned once per session.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_query;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use sha2::{Digest, Sha256};

use super::conninfo::{server_of, session_conninfo};
use super::schema::migrate;
#[cfg(test)]
use super::Count;
use super::{Ctx, Flag, OptText, PgStore};
use crate::error::{Error, LedgerState, Result};
use crate::store::Identity;

/// Reconnect attempts: the first at once, then after this, doubling up to `RECONNECT_MAX`.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A session's cached plans are made again (`DISCARD PLANS`) this long after it starts,
/// then after twice that, and so on up to `REPLAN_MAX`: see [`Link::replan`].
const REPLAN_FIRST: Duration = Duration::from_secs(1);
const REPLAN_MAX: Duration = Duration::from_secs(60);

/// Why a closure run on the connection failed: the database, or something of ours (a
/// refusal, an `export` callback) that must not be mistaken for a lost connection.
pub(super) enum Fail {
    Db(DieselError),
    /// The database is not one this build may use (not ours, a newer schema): the caller
    /// names it.
    Refused(LedgerState, String),
    Other(Error),
}

impl From<DieselError> for Fail {
    fn from(e: DieselError) -> Fail {
        Fail::Db(e)
    }
}

pub(super) type Q<T> = std::result::Result<T, Fail>;

/// A statement of fixed text (`sql_query` with `$n` binds) that the session prepares once
/// and then only executes: one round trip and no parsing per call, and in the daemon's
/// session no planning either ([`DAEMON_SESSION`]). Diesel sends `sql_query` text afresh
/// each time, since it cannot know the text is one of a few. Only for text from a bounded
/// set: each distinct text stays prepared for the session's life. A reconnect starts a new
/// session and prepares again.
pub(super) struct Prepared<T>(pub(super) T);

impl<T: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<T> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    /// What `sql_query` says no to; the text is one of a few here (see the type).
    fn is_safe_to_cache_prepared(&self, _: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

/// Cached by its text, not by a type: the statements share one Rust type.
impl<T> QueryId for Prepared<T> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<T: Query> Query for Prepared<T> {
    type SqlType = T::SqlType;
}

impl<T, C> RunQueryDsl<C> for Prepared<T> {}

/// `.prepared()` on a statement: [`Prepared`].
pub(super) trait Prepare: Sized {
    fn prepared(self) -> Prepared<Self> {
        Prepared(self)
    }
}

impl<T: Query> Prepare for T {}

/// The server's or libpq's message on one line (libpq's own span several, indented, and a
/// log line must stay one line under journald).
fn message(e: &DieselError) -> String {
    match e {
        DieselError::DatabaseError(_, info) => {
            let mut m = one_line(info.message());
            if let Some(d) = info.details() {
                m = format!("{m} ({})", one_line(d));
            }
            m
        }
        other => one_line(&other.to_string()),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Errors that mean the session is gone, whatever the statement was.
fn is_lost(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _
        ) | DieselError::BrokenTransactionManager
    )
}

/// The advisory lock key of one host's daemon: the first 8 bytes of a SHA-256, so that
/// (scope, host) pairs do not collide in practice and no registry of keys is needed.
pub fn lock_key(scope: &str, host: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(b"sega-uploader daemon\0");
    h.update(scope.as_bytes());
    h.update(b"\0");
    h.update(host.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

/// What makes a session the daemon's: generic plans for its prepared statements. The
/// daemon runs a handful of [`Prepared`] statements thousands of times; left to itself the
/// server plans each execution afresh whenever a custom plan looks cheaper, which for a
/// small batch it always does (it sees 4 array elements where a generic plan must guess
/// 10), and that planning cost about as much server time as running the statement. A
/// statement of the daemon's must therefore never need a bound value to choose its plan
/// (a status compared with a partial index's predicate is written as a literal). Other
/// sessions (the operator's commands, each statement run once) keep the server's choice.
const DAEMON_SESSION: &str = "SET plan_cache_mode = force_generic_plan";

/// Within a transaction, plans its statements for the values bound (`SET LOCAL`): the
/// statements that carry a listing or a record batch, thousands of names in arrays. A
/// generic plan must guess each array's length (10) and, before the table has statistics,
/// how many rows a folder and date hold (one): it then reads the whole folder once per
/// name, quadratic, minutes for 20,000 files.
pub(super) fn custom_plans(c: &mut PgConnection) -> QueryResult<()> {
    c.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")
}

/// Opens a session and applies the server-side limits: a statement that runs 20 s or waits
/// 5 s for a lock fails, so the DB owner (and the watchdog it feeds) is never stuck on one.
/// `daemon`: the daemon's session ([`DAEMON_SESSION`]).
fn connect(conninfo: &str, daemon: bool) -> std::result::Result<PgConnection, String> {
    let mut c = PgConnection::establish(conninfo).map_err(|e| one_line(&e.to_string()))?;
    // The server's side of the keepalives (no-ops over a unix socket): it drops a dead host's
    // session, and with it the host's daemon lock, in seconds rather than two hours.
    let mut set = String::from(
        "SET statement_timeout = '20s'; SET lock_timeout = '5s';
         SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3",
    );
    if daemon {
        set = format!("{set}; {DAEMON_SESSION}");
    }
    c.batch_execute(&set).map_err(|e| message(&e))?;
    Ok(c)
}

/// The session and what it takes to get it back.
pub(super) struct Link {
    conninfo: String,
    /// Where the server is, for messages (no password).
    place: String,
    conn: Option<PgConnection>,
    /// The daemon lock this session holds, taken again after a reconnect.
    lock_key: Option<i64>,
    /// A session of the daemon's ([`DAEMON_SESSION`]), again after a reconnect: the one
    /// that holds the lock, and the one that saves results.
    daemon: bool,
    /// After a reconnect the lock may still be held by our own lost session until the
    /// server notices it is dead: try again at this time.
    lock_retry_at: Option<Instant>,
    /// No reconnect attempt before this (None: at the next call).
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: String,
    /// When the session's cached plans are dropped next, and the interval after that.
    replan_at: Instant,
    replan_every: Duration,
}

impl Link {
    /// Whether this session should hold the daemon lock and does not (yet) since a
    /// reconnect: our lost session may still be alive on the server.
    pub(super) fn lock_pending(&self) -> bool {
        self.lock_key.is_some() && (self.conn.is_none() || self.lock_retry_at.is_some())
    }

    /// Runs `f` on the session, reconnecting first if it was lost. A failure that left the
    /// session unusable drops it, so the next call reconnects.
    pub(super) fn with<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut PgConnection) -> Q<T>,
    ) -> Result<T> {
        self.ensure(what)?;
        let replan = self.replan();
        let Some(conn) = self.conn.as_mut() else {
            return Err(self.not_connected(what));
        };
        let run = |conn: &mut PgConnection| {
            if replan {
                conn.batch_execute("DISCARD PLANS")?;
            }
            f(conn)
        };
        match run(conn) {
            Ok(v) => Ok(v),
            Err(Fail::Other(e)) => Err(e),
            Err(Fail::Refused(state, msg)) => Err(Error::ledger(what, state, msg)),
            Err(Fail::Db(e)) => {
                // Server errors leave the session usable; libpq's own (a reset connection, a
                // keepalive timeout) may come with any kind, so a failed ping decides.
                let lost = is_lost(&e)
                    || AnsiTransactionManager::is_broken_transaction_manager(conn)
                    || conn.batch_execute("SELECT 1").is_err();
                if lost {
                    log::debug!("PostgreSQL session lost ({what}): {}", message(&e));
                    self.conn = None;
                    self.retry_at = None;
                    self.backoff = RECONNECT_FIRST;
                    self.last_error = message(&e);
                }
                // A constraint this statement broke is about the rows it carried, not the
                // session or the server: the caller may retry the others without it.
                let refused = matches!(
                    e,
                    DieselError::DatabaseError(
                        DatabaseErrorKind::UniqueViolation
                            | DatabaseErrorKind::ForeignKeyViolation
                            | DatabaseErrorKind::NotNullViolation
                            | DatabaseErrorKind::CheckViolation,
                        _
                    )
                );
                if refused {
                    return Err(Error::PgRefused {
                        what: what.to_owned(),
                        msg: message(&e),
                    });
                }
                Err(Error::Pg {
                    what: what.to_owned(),
                    msg: message(&e),
                })
            }
        }
    }

    /// Whether the session's cached plans are due to be made again. A generic plan (the
    /// daemon's session, [`DAEMON_SESSION`]) is made at a statement's first run and kept;
    /// the server makes it again only when the table's statistics change (autovacuum's
    /// ANALYZE). A plan made while the ledger was new and empty expects a table of a few
    /// pages and reads every row (a claim, a completion) as the table grows: milliseconds a
    /// statement at 20,000 rows, forever if autovacuum is off. Dropped 1 s into the session,
    /// then at intervals doubling up to a minute, such a plan lasts seconds; the cost is one
    /// round trip and a few plannings each time.
    fn replan(&mut self) -> bool {
        let now = Instant::now();
        if now < self.replan_at {
            return false;
        }
        self.replan_every = (self.replan_every * 2).min(REPLAN_MAX);
        self.replan_at = now + self.replan_every;
        true
    }

    fn not_connected(&self, what: &str) -> Error {
        Error::Pg {
            what: what.to_owned(),
            msg: format!(
                "not connected to PostgreSQL ({}); reconnecting",
                self.last_error
            ),
        }
    }

    /// Reconnects if the session was lost, at most once per backoff interval.
    fn ensure(&mut self, what: &str) -> Result<()> {
        if let Some(conn) = self.conn.as_mut() {
            if let (Some(key), Some(at)) = (self.lock_key, self.lock_retry_at) {
                if Instant::now() >= at {
                    match try_lock(conn, key) {
                        Ok(true) => {
                            log::info!("took this host's daemon lock again on {}", self.place);
                            self.lock_retry_at = None;
                        }
                        _ => self.lock_retry_at = Some(Instant::now() + RECONNECT_MAX),
                    }
                }
            }
            return Ok(());
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return Err(self.not_connected(what));
        }
        match connect(&self.conninfo, self.daemon) {
            Ok(mut c) => {
                if let Some(key) = self.lock_key {
                    match try_lock(&mut c, key) {
                        Ok(true) => self.lock_retry_at = None,
                        // Usually our own lost session, not yet noticed dead by the server
                        // (its keepalives end it in seconds); else a second daemon.
                        Ok(false) => {
                            log::warn!(
                                "reconnected to {}, but this host's daemon lock is still held by \
                                 another session (our lost one, or a second daemon for this scope \
                                 and host): trying again",
                                self.place
                            );
                            self.lock_retry_at = Some(Instant::now() + RECONNECT_MAX);
                        }
                        Err(e) => {
                            log::warn!(
                                "reconnected to {}, but taking the daemon lock again failed: {}",
                                self.place,
                                message(&e)
                            );
                            self.lock_retry_at = Some(Instant::now() + RECONNECT_MAX);
                        }
                    }
                }
                log::info!("reconnected to PostgreSQL {}", self.place);
                self.conn = Some(c);
                self.retry_at = None;
                self.backoff = RECONNECT_FIRST;
                self.replan_every = REPLAN_FIRST;
                self.replan_at = Instant::now() + REPLAN_FIRST;
                Ok(())
            }
            Err(msg) => {
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
                self.last_error = msg.clone();
                Err(Error::Pg {
                    what: what.to_owned(),
                    msg: format!("cannot connect to {}: {msg}", self.place),
                })
            }
        }
    }
}

fn try_lock(c: &mut PgConnection, key: i64) -> QueryResult<bool> {
    sql_query("SELECT pg_try_advisory_lock($1) AS b")
        .bind::<BigInt, _>(key)
        .get_result::<Flag>(c)
        .map(|f| f.b)
}

#[cfg(test)]
#[derive(QueryableByName)]
struct Plan {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[derive(QueryableByName)]
struct Holder {
    #[diesel(sql_type = Nullable<Integer>)]
    backend: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    addr: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    daemon_pid: Option<String>,
}

impl PgStore {
    /// Connects (an unreachable server is an error: the daemon exits and systemd retries),
    /// applies migrations, and returns the store. `roots`: this host's folder label → root.
    pub fn open(
        url: &str,
        identity: Identity,
        roots: HashMap<String, PathBuf>,
        lease: Duration,
    ) -> Result<PgStore> {
        let (host, port, db) = server_of(url);
        let place_host = match host.as_deref() {
            None | Some("") => "the local socket".to_owned(),
            Some(h) => h.to_owned(),
        };
        let place_port = port.unwrap_or_else(|| "5432".into());
        let place = format!("{place_host}:{place_port}");
        let conninfo = session_conninfo(url, &identity.host);
        let mut conn = connect(&conninfo, false).map_err(|msg| Error::Pg {
            what: format!(
                "connecting to PostgreSQL at {place} ({})",
                crate::config::redact_db_url(url)
            ),
            msg,
        })?;
        let what = format!("preparing the PostgreSQL database at {place}");
        let db = match sql_query("SELECT current_database() AS v").get_result::<OptText>(&mut conn)
        {
            Ok(r) => r.v.or(db).unwrap_or_default(),
            Err(e) => {
                return Err(Error::Pg {
                    what,
                    msg: message(&e),
                })
            }
        };
        match migrate(&mut conn) {
            Ok(()) => {}
            Err(Fail::Db(e)) => {
                return Err(Error::Pg {
                    what,
                    msg: message(&e),
                })
            }
            Err(Fail::Refused(state, msg)) => {
                return Err(Error::ledger(
                    format!("PostgreSQL database {db} on {place}"),
                    state,
                    msg,
                ))
            }
            Err(Fail::Other(e)) => {
                return Err(Error::Pg {
                    what: format!("PostgreSQL database {db} on {place}"),
                    msg: e.to_string(),
                })
            }
        }
        let mut labels: Vec<String> = roots.keys().cloned().collect();
        labels.sort();
        let description = format!(
            "PostgreSQL database {db} on {place} (scope {}, host {})",
            identity.scope, identity.host
        );
        Ok(PgStore {
            link: Link {
                conninfo,
                place: format!("database {db} on {place}"),
                conn: Some(conn),
                lock_key: None,
                daemon: false,
                lock_retry_at: None,
                retry_at: None,
                backoff: RECONNECT_FIRST,
                last_error: String::new(),
                replan_at: Instant::now() + REPLAN_FIRST,
                replan_every: REPLAN_FIRST,
            },
            ctx: Ctx {
                lock_key: lock_key(&identity.scope, &identity.host),
                scope: identity.scope,
                host: identity.host,
                pid: std::process::id() as i32,
                labels,
                roots,
                lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
            },
            description,
        })
    }

    /// Makes this session the daemon's second, which saves upload results
    /// (`owner::Committer`): no lock, the daemon's plans, and its own name in messages.
    pub fn serve_results(&mut self) -> Result<()> {
        self.link.place = format!("{} (the session that saves results)", self.link.place);
        self.daemon_session()
    }

    /// Generic plans for this session's statements, now and after every reconnect.
    fn daemon_session(&mut self) -> Result<()> {
        self.link.daemon = true;
        self.link.with("preparing the daemon's session", |c| {
            Ok(c.batch_execute(DAEMON_SESSION)?)
        })
    }

    /// Takes this (scope, host)'s daemon lock, a session-level advisory lock: Ok(None) when
    /// taken, Ok(Some(holder)) when another session holds it. It dies with the session (a
    /// crashed or partitioned daemon frees it) and is taken again after a reconnect.
    pub fn lock_daemon(&mut self) -> Result<Option<String>> {
        let key = self.ctx.lock_key;
        if self.link.lock_key == Some(key) {
            return Ok(None);
        }
        let got = self
            .link
            .with("taking the daemon lock", |c| Ok(try_lock(c, key)?))?;
        if got {
            // Reconnects take the lock again and make the new session the daemon's too.
            self.link.lock_key = Some(key);
            self.daemon_session()?;
            return Ok(None);
        }
        let ctx = &self.ctx;
        let holder = self.link.with("finding the daemon lock's holder", |c| {
            Ok(sql_query(
                "SELECT l.pid AS backend, a.client_addr::text AS addr,
                    (SELECT value FROM state WHERE scope = $2 AND host = $3 AND key = 'pid') AS daemon_pid
                 FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND l.classid::bigint = (($1 >> 32) & 4294967295)
                   AND l.objid::bigint = ($1 & 4294967295)
                 LIMIT 1",
            )
            .bind::<BigInt, _>(key)
            .bind::<Text, _>(&ctx.scope)
            .bind::<Text, _>(&ctx.host)
            .get_result::<Holder>(c)
            .optional()?)
        })?;
        let mut who = match holder.as_ref().and_then(|h| h.daemon_pid.as_deref()) {
            Some(pid) if !pid.is_empty() => format!("pid {pid} on host {}", self.ctx.host),
            _ => format!("a daemon for host {}", self.ctx.host),
        };
        if let Some(h) = &holder {
            if let Some(backend) = h.backend {
                who += &format!(", database session {backend}");
            }
            if let Some(addr) = &h.addr {
                who += &format!(" from {addr}");
            }
        }
        Ok(Some(who))
    }

    /// Test access to the raw session (stale heartbeats, terminated backends).
    #[cfg(test)]
    pub(crate) fn exec_for_test(&mut self, sql: &str) -> Result<()> {
        self.link
            .with("test statement", |c| Ok(c.batch_execute(sql)?))
    }

    /// Counts, from now on, the statements this session sends (each a round trip) and the
    /// statements it prepares: (sent, prepared).
    #[cfg(test)]
    pub(crate) fn count_statements_for_test(
        &mut self,
    ) -> std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]> {
        use diesel::connection::{Connection, InstrumentationEvent};
        use std::sync::atomic::Ordering::Relaxed;
        let n: std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]> =
            std::sync::Arc::new([0.into(), 0.into()]);
        let seen = n.clone();
        if let Some(c) = self.link.conn.as_mut() {
            c.set_instrumentation(move |e: InstrumentationEvent<'_>| match e {
                InstrumentationEvent::StartQuery { .. } => {
                    seen[0].fetch_add(1, Relaxed);
                }
                InstrumentationEvent::CacheQuery { .. } => {
                    seen[1].fetch_add(1, Relaxed);
                }
                _ => {}
            });
        }
        n
    }

    /// The plan the session would use now for its prepared statement whose text holds
    /// `like`, run with `args` (EXPLAIN EXECUTE), one line.
    #[cfg(test)]
    pub(crate) fn explain_prepared_for_test(&mut self, like: &str, args: &str) -> String {
        self.link
            .with("test statement", |c| {
                let name = sql_query(format!(
                    "SELECT name AS v FROM pg_prepared_statements WHERE statement LIKE '%{like}%'"
                ))
                .get_result::<OptText>(c)?
                .v
                .unwrap_or_default();
                let plan = sql_query(format!("EXPLAIN (COSTS off) EXECUTE \"{name}\"({args})"))
                    .load::<Plan>(c)?;
                Ok(plan
                    .into_iter()
                    .map(|p| p.line)
                    .collect::<Vec<_>>()
                    .join(" | "))
            })
            .unwrap()
    }

    /// Makes the session's cached plans due to be made again at the next statement
    /// (`now`), or not for an hour.
    #[cfg(test)]
    pub(crate) fn replan_for_test(&mut self, now: bool) {
        self.link.replan_at = Instant::now()
            + if now {
                Duration::ZERO
            } else {
                Duration::from_secs(3600)
            };
    }

    #[cfg(test)]
    fn plan_cache_mode_for_test(&mut self) -> String {
        self.link
            .with("test statement", |c| {
                Ok(sql_query("SELECT current_setting('plan_cache_mode') AS v")
                    .get_result::<OptText>(c)?
                    .v)
            })
            .unwrap()
            .unwrap_or_default()
    }

    #[cfg(test)]
    pub(crate) fn backend_pid_for_test(&mut self) -> Result<i64> {
        self.link.with("test statement", |c| {
            Ok(sql_query("SELECT pg_backend_pid()::bigint AS n")
                .get_result::<Count>(c)?
                .n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::tests::{open_error, t, wait_for};
    use crate::store::tests::{obs, pg_open, roots, FAR, T0, T1};
    use crate::store::{ClaimOrder, Ledger};

    #[test]
    fn the_daemon_lock_excludes_a_second_daemon_for_the_same_host() {
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        let mut b = pg_open(&url, "site-a", "cam-1", roots());
        let mut other = pg_open(&url, "site-a", "cam-2", roots());
        a.set_state(&[("pid", "4242".into()), ("heartbeat", T0.to_string())], T0)
            .unwrap();
        assert_eq!(a.lock_daemon().unwrap(), None);
        assert_eq!(a.lock_daemon().unwrap(), None, "taking it twice is fine");
        let holder = b.lock_daemon().unwrap().unwrap();
        assert!(holder.starts_with("pid 4242 on host cam-1"), "{holder}");
        assert_eq!(other.lock_daemon().unwrap(), None, "another host's lock");
        let sum = other.summary(T0, T0, T0).unwrap();
        assert!(sum.hosts.iter().any(|h| h.host == "cam-1" && h.locked));
        assert!(
            a.describe().starts_with("PostgreSQL database t_"),
            "{}",
            a.describe()
        );
        assert!(a.describe().ends_with("(scope site-a, host cam-1)"));
        drop(a);
        // The server frees a session's locks when its backend has exited.
        wait_for("the first daemon's lock to be freed", || {
            b.lock_daemon().unwrap().is_none()
        });
    }

    /// Advisory locks belong to one database; pg_locks lists the whole server's. A daemon
    /// of the same (scope, host) in another ledger on the same server is not this one's.
    #[test]
    fn another_databases_daemon_lock_is_not_this_ledgers() {
        let Some(url_a) = t() else { return };
        let Some(url_b) = t() else { return };
        let mut a = pg_open(&url_a, "site-a", "cam-1", roots());
        let mut b = pg_open(&url_b, "site-a", "cam-1", roots());
        let mut b_other = pg_open(&url_b, "site-a", "cam-2", roots());
        b.set_state(&[("pid", "4242".into()), ("heartbeat", T0.to_string())], T0)
            .unwrap();
        assert_eq!(a.lock_daemon().unwrap(), None);
        let sum = b_other.summary(T0, T0, T0).unwrap();
        assert!(
            sum.hosts.iter().any(|h| h.host == "cam-1" && !h.locked),
            "cam-1 holds a lock in the other database only: {:?}",
            sum.hosts
        );
        assert_eq!(
            b.lock_daemon().unwrap(),
            None,
            "the same key in another database is free"
        );
        let sum = b_other.summary(T0, T0, T0).unwrap();
        assert!(sum.hosts.iter().any(|h| h.host == "cam-1" && h.locked));
    }

    /// Issue 17's review: the session that saves results (`owner::Committer`) is the
    /// daemon's (generic plans: the completion's statement is not planned at every run),
    /// again after a reconnect, without the daemon lock (the first session holds it), and
    /// its reconnect messages say which session they are about.
    #[test]
    fn the_results_session_is_the_daemons_without_the_lock() {
        let Some(url) = t() else { return };
        let mut first = pg_open(&url, "site-r", "cam-1", roots());
        assert_eq!(first.lock_daemon().unwrap(), None);
        let mut results = pg_open(&url, "site-r", "cam-1", roots());
        let mut admin = pg_open(&url, "site-r", "admin", roots());
        results.serve_results().unwrap();
        assert_eq!(results.plan_cache_mode_for_test(), "force_generic_plan");
        let pid = results.backend_pid_for_test().unwrap();
        admin
            .exec_for_test(&format!("SELECT pg_terminate_backend({pid})"))
            .unwrap();
        assert!(results.next_due().is_err(), "the session was lost");
        // "reconnected to PostgreSQL …", "cannot connect to …" name it.
        assert!(results
            .link
            .place
            .ends_with("(the session that saves results)"));
        wait_for("the results session to reconnect", || {
            results.next_due().is_ok()
        });
        assert_ne!(results.backend_pid_for_test().unwrap(), pid);
        assert_eq!(
            results.plan_cache_mode_for_test(),
            "force_generic_plan",
            "the new session is the daemon's too"
        );
        let mut twin = pg_open(&url, "site-r", "cam-1", roots());
        assert!(
            twin.lock_daemon().unwrap().is_some(),
            "the first session still holds the lock"
        );
    }

    /// Until the daemon lock is ours again after a reconnect, our lost session may still be
    /// committing a claim: what this process holds claimed is not known yet.
    #[test]
    fn claims_here_are_not_known_until_the_lock_is_ours_again() {
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        assert_eq!(a.lock_daemon().unwrap(), None);
        a.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap();
        let id = a.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap()[0].id;
        assert_eq!(a.claimed_here().unwrap(), Some(vec![id]));
        // Reconnected, the lock still held by the lost session.
        a.link.lock_retry_at = Some(Instant::now() + Duration::from_secs(60));
        assert_eq!(a.claimed_here().unwrap(), None);
        a.link.lock_retry_at = None;
        assert_eq!(a.claimed_here().unwrap(), Some(vec![id]));
    }

    #[test]
    fn a_lost_session_is_replaced_and_the_lock_taken_again() {
        let Some(url) = t() else { return };
        let mut a = pg_open(&url, "site-a", "cam-1", roots());
        let mut admin = pg_open(&url, "site-a", "admin", roots());
        assert_eq!(a.plan_cache_mode_for_test(), "auto");
        assert_eq!(a.lock_daemon().unwrap(), None);
        assert_eq!(a.plan_cache_mode_for_test(), "force_generic_plan");
        a.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap();
        let terminate = |admin: &mut PgStore, pid: i64| {
            admin
                .exec_for_test(&format!("SELECT pg_terminate_backend({pid})"))
                .unwrap();
            let mut gone = false;
            wait_for("the backend to exit", || {
                let mut n = 1;
                let _ = admin.link.with("test", |c| {
                    n = sql_query(format!(
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = {pid}"
                    ))
                    .get_result::<Count>(c)?
                    .n;
                    Ok(())
                });
                gone = n == 0;
                gone
            });
        };
        let pid = a.backend_pid_for_test().unwrap();
        terminate(&mut admin, pid);
        let e = a
            .claim_due(T1, FAR, 10, ClaimOrder::OldestFile)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("claiming files: "), "{e}");
        // The next call reconnects, takes the lock again, and works.
        assert_eq!(a.next_due().unwrap(), Some(T0));
        assert_ne!(a.backend_pid_for_test().unwrap(), pid);
        assert_eq!(
            a.plan_cache_mode_for_test(),
            "force_generic_plan",
            "the new session is the daemon's too"
        );
        assert_eq!(admin.plan_cache_mode_for_test(), "auto");
        let mut twin = pg_open(&url, "site-a", "cam-1", roots());
        assert!(
            twin.lock_daemon().unwrap().is_some(),
            "the lock was taken again"
        );

        // A server that cannot be reached: one attempt, then errors at once until the
        // backoff has passed.
        let real = std::mem::replace(
            &mut a.link.conninfo,
            "host=/nonexistent/sega-test dbname=x connect_timeout=1".into(),
        );
        let pid = a.backend_pid_for_test().unwrap();
        terminate(&mut admin, pid);
        assert!(a.next_due().is_err());
        let e = a.next_due().unwrap_err().to_string();
        assert!(e.contains("cannot connect to database t_"), "{e}");
        let quick = Instant::now();
        let e = a.next_due().unwrap_err().to_string();
        assert!(e.contains("not connected to PostgreSQL ("), "{e}");
        assert!(e.ends_with("); reconnecting"), "{e}");
        assert!(quick.elapsed() < Duration::from_millis(500));
        a.link.conninfo = real;
        a.link.retry_at = None;
        assert_eq!(a.next_due().unwrap(), Some(T0));
        assert!(twin.lock_daemon().unwrap().is_some());
    }

    #[test]
    fn an_unreachable_server_is_an_error_at_open_without_the_password() {
        let e = open_error("postgresql://u:hunter2@%2Fnonexistent%2Fsega/db?connect_timeout=1");
        assert!(
            e.starts_with("connecting to PostgreSQL at /nonexistent/sega:5432"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn lock_keys_differ_per_scope_and_host() {
        assert_ne!(lock_key("a", "h"), lock_key("b", "h"));
        assert_ne!(lock_key("a", "h1"), lock_key("a", "h"));
        assert_ne!(lock_key("ab", "c"), lock_key("a", "bc"));
        assert_eq!(lock_key("a", "h"), lock_key("a", "h"));
    }
}
