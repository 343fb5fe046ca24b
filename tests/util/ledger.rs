//! Reading the ledger as tests look at it: the rows of `files` and `upload_results` from
//! the SQLite file (read-only) or the PostgreSQL database of the env's scope, counts, and
//! the ledger lost or untouched.

use std::time::Duration;

use serde_json::Value;

use super::Env;
use crate::pg::{self, Pg};

/// A PostgreSQL ledger as one `Env` sees it: a database on a cluster and this env's scope.
#[derive(Clone, Debug)]
pub struct PgLedger {
    pub pg: Pg,
    pub db: String,
    pub scope: String,
    /// The env that created the database drops it (after a passing test).
    pub(super) owner: bool,
}

impl PgLedger {
    pub fn conninfo(&self) -> String {
        self.pg.conninfo(&self.db)
    }

    /// Rows of `select` as JSON objects; an empty list while the schema is not there yet
    /// (nobody has opened the ledger), as a missing SQLite file reads as no rows.
    pub fn query(&self, select: &str) -> Vec<Value> {
        match self.pg.try_query(&self.db, select) {
            Ok(v) => v,
            Err(e) if e.contains("does not exist") && e.contains("relation") => Vec::new(),
            Err(e) => panic!("psql -d {}: {select}: {e}", self.db),
        }
    }

    fn rows_of(&self, scope: &str) -> Vec<Row> {
        self.try_rows_of(scope)
            .unwrap_or_else(|e| panic!("reading rows of {}: {e}", self.db))
    }

    /// Never panics on a server error (the drop-time dump runs while a test panics).
    pub(super) fn try_rows_of(&self, scope: &str) -> Result<Vec<Row>, String> {
        let rows = match self.pg.try_query(&self.db, &format!(
            "SELECT id, path, folder, filename, status, attempts, last_error, \
             to_char(uploaded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS uploaded_at, \
             claimed_host FROM files WHERE scope = {} ORDER BY id",
            pg::lit(scope)
        )) {
            Ok(rows) => rows,
            Err(e) if e.contains("does not exist") && e.contains("relation") => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(rows
            .iter()
            .map(|v| Row {
                id: v["id"].as_i64().unwrap(),
                path: pg::bytea(&v["path"]),
                folder: v["folder"].as_str().unwrap().to_string(),
                filename: pg::bytea(&v["filename"]),
                status: v["status"].as_str().unwrap().to_string(),
                attempts: v["attempts"].as_i64().unwrap(),
                last_error: v["last_error"].as_str().map(str::to_string),
                uploaded_at: v["uploaded_at"].as_str().map(str::to_string),
                claimed_host: v["claimed_host"].as_str().map(str::to_string),
            })
            .collect())
    }

    fn results_of(&self, scope: &str) -> Vec<ResultRow> {
        self.query(&format!(
            "SELECT r.file_id, r.attempt, r.http_status, r.response_json, r.error, r.outcome, \
             r.host FROM upload_results r JOIN files f ON f.id = r.file_id \
             WHERE f.scope = {} ORDER BY r.id",
            pg::lit(scope)
        ))
        .iter()
        .map(|v| ResultRow {
            file_id: v["file_id"].as_i64().unwrap(),
            attempt: v["attempt"].as_i64().unwrap(),
            http_status: v["http_status"].as_i64(),
            // jsonb comes back as a value: written out compactly, as SQLite stores it.
            response_json: (!v["response_json"].is_null())
                .then(|| serde_json::to_string(&v["response_json"]).unwrap()),
            error: v["error"].as_str().map(str::to_string),
            outcome: v["outcome"].as_str().unwrap().to_string(),
            host: v["host"].as_str().map(str::to_string),
        })
        .collect()
    }
}

/// A row of `files`, as tests look at it.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub path: Vec<u8>,
    pub folder: String,
    pub filename: Vec<u8>,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub uploaded_at: Option<String>,
    /// PostgreSQL: the host holding (or that last held) the row's claim.
    pub claimed_host: Option<String>,
}

impl Row {
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.filename).into_owned()
    }
}

#[derive(Debug, Clone)]
pub struct ResultRow {
    pub file_id: i64,
    pub attempt: i64,
    pub http_status: Option<i64>,
    pub response_json: Option<String>,
    pub error: Option<String>,
    pub outcome: String,
    /// PostgreSQL: the host that made the attempt.
    pub host: Option<String>,
}

impl Env {
    /// A writable connection to the SQLite ledger (for a test that plays another process:
    /// a lock held, a row deleted by hand).
    pub fn sqlite_writer(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(&self.db).unwrap();
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        c
    }

    fn conn(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    /// The PostgreSQL ledger (panics for SQLite).
    pub fn pg(&self) -> &PgLedger {
        self.pg.as_ref().expect("a PostgreSQL env")
    }

    pub fn is_pg(&self) -> bool {
        self.pg.is_some()
    }

    /// This env's scope (`database.scope`).
    pub fn scope(&self) -> String {
        self.config.lock().unwrap()["database"]["scope"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Rows of `select` against the PostgreSQL ledger, as JSON objects.
    pub fn sql(&self, select: &str) -> Vec<Value> {
        self.pg().query(select)
    }

    /// The ledger is gone (a lost disk, a dropped database): the SQLite file and its
    /// directory, or the PostgreSQL database dropped and created empty again.
    pub fn lose_database(&self) {
        match &self.pg {
            None => {
                std::fs::remove_dir_all(self.db.parent().unwrap()).unwrap();
                std::fs::create_dir_all(self.db.parent().unwrap()).unwrap();
            }
            Some(l) => {
                l.pg.drop_database(&l.db);
                l.pg.psql("postgres", &format!("CREATE DATABASE {}", l.db));
            }
        }
    }

    /// Nothing was ever written to the ledger: no SQLite file; in PostgreSQL not one row
    /// in any of the ledger's tables (whether the schema exists or not).
    pub fn ledger_untouched(&self) -> bool {
        match &self.pg {
            None => !self.db.exists(),
            Some(l) => ["files", "upload_results", "state"].iter().all(|t| {
                !l.pg.has_table(&l.db, t)
                    || l.pg
                        .psql(&l.db, &format!("SELECT count(*) FROM {t}"))
                        .trim()
                        == "0"
            }),
        }
    }

    pub fn rows(&self) -> Vec<Row> {
        if let Some(l) = &self.pg {
            return l.rows_of(&l.scope);
        }
        self.try_sqlite_rows()
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.db.display()))
    }

    /// Never panics (the drop-time dump runs while a test panics).
    pub(super) fn try_sqlite_rows(&self) -> rusqlite::Result<Vec<Row>> {
        if !self.db.exists() {
            return Ok(Vec::new());
        }
        let c = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        c.busy_timeout(Duration::from_secs(10))?;
        let mut stmt = c.prepare(
            "SELECT id, path, folder, filename, status, attempts, last_error, uploaded_at FROM files ORDER BY id",
        )?;
        let bytes = |v: rusqlite::types::ValueRef<'_>| match v {
            rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
            _ => Vec::new(),
        };
        let rows = stmt
            .query_map([], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    path: bytes(r.get_ref(1)?),
                    folder: r.get(2)?,
                    filename: bytes(r.get_ref(3)?),
                    status: r.get(4)?,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                    uploaded_at: r.get(7)?,
                    claimed_host: None,
                })
            })?
            .collect::<rusqlite::Result<Vec<Row>>>();
        rows
    }

    pub fn row(&self, name: &str) -> Row {
        self.rows()
            .into_iter()
            .find(|r| r.filename == name.as_bytes())
            .unwrap_or_else(|| panic!("no row for {name}"))
    }

    pub fn results(&self) -> Vec<ResultRow> {
        if let Some(l) = &self.pg {
            return l.results_of(&l.scope);
        }
        let c = self.conn();
        let mut stmt = c
            .prepare("SELECT file_id, attempt, http_status, response_json, error, outcome FROM upload_results ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| {
            Ok(ResultRow {
                file_id: r.get(0)?,
                attempt: r.get(1)?,
                http_status: r.get(2)?,
                response_json: r.get(3)?,
                error: r.get(4)?,
                outcome: r.get(5)?,
                host: None,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    pub fn count_status(&self, status: &str) -> usize {
        if let Some(l) = &self.pg {
            // Counted by the server: the big fault tests poll this often over many rows.
            return l
                .query(&format!(
                    "SELECT count(*) AS n FROM files WHERE scope = {} AND status = {}",
                    pg::lit(&l.scope),
                    pg::lit(status)
                ))
                .first()
                .map_or(0, |v| v["n"].as_u64().unwrap() as usize);
        }
        self.rows().iter().filter(|r| r.status == status).count()
    }
}

/// The kernel's host name: the default `database.host`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}
