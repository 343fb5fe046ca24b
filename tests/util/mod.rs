//! Shared helpers for the integration tests: a per-test temp tree with a config, the real
//! binary, the loopback test endpoint, a database reader, and waits that poll with a
//! deadline and fail with "timeout waiting for …" (never sleep-and-hope).
//!
//! When a test fails, the `Env` prints the daemon logs and the database rows on drop, and
//! keeps the temp directory for a look.
//!
//! Who owns what: `env` the test tree and its config, clock and drop-time report; `run` the
//! binary's commands and daemons (through the harness, [`sega_testsrv::daemon`]) and the
//! notify socket; `nobody` running them as another user; `ledger` reading the database;
//! `tree` the files in (and beside) the watched tree; `endpoint` what reached the endpoint.
//! This file: the constants, the wait, the backends.

mod endpoint;
mod env;
mod ledger;
mod nobody;
mod run;
mod tree;

use std::time::{Duration, Instant};

pub use endpoint::check_all_arrived;
pub use env::Env;
pub use ledger::{host_name, PgLedger, ResultRow, Row};
pub use run::{Daemon, Notify};
pub use sega_testsrv::daemon::{out, vm_hwm_kib, Out};
pub use sega_testsrv::images;
/// The one seeded RNG (seed from `SEGA_TEST_SEED` or the clock, always logged).
pub use sega_testsrv::rng::Rng;
pub use sega_testsrv::{Mode, Request, Server};
use serde_json::Value;
pub use tree::{sha256_hex, write_burst, Sentinel, Written};

pub const BIN: &str = env!("CARGO_BIN_EXE_sega-uploader");

/// Secrets every test's config carries (DESIGN §6): the upload URL's password, a header
/// value, the webhook URL's token and, on PostgreSQL, the database password. When a test
/// passes, its `Env` looks for each of them in every daemon log and command output it
/// captured, and fails the test if one shows (DESIGN §10, "nothing secret printed").
pub const SECRETS: [&str; 4] = [
    "url-pw-5e3d9c",
    "hdr-val-77c1ab",
    "hook-tok-91ee0f",
    "db-pw-0b2f4d",
];

/// Generous: CI machines are shared and slow; the waits return as soon as the condition
/// holds, so a long limit costs nothing when things work.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    while !cond() {
        if Instant::now() > end {
            panic!("timeout waiting for {what} (after {timeout:?})");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

pub fn utc_date(offset_days: i64) -> String {
    let d = time::OffsetDateTime::now_utc().date() + time::Duration::days(offset_days);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The time `ahead` from now, as `SEGA_TEST_NOW` takes it (UTC, whole seconds).
pub fn utc_now_plus(ahead: time::Duration) -> String {
    let t = time::OffsetDateTime::now_utc() + ahead;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Which ledger a test's daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file (`database.path`).
    Sqlite,
    /// A PostgreSQL database (`database.url`) on a throwaway cluster.
    Postgres,
}

/// Instantiates each named test `fn name(backend: Backend)` once per backend, as
/// `name::sqlite` and `name::postgres` (`cargo test postgres` runs the PostgreSQL half). The
/// PostgreSQL variant skips itself with a note when the server binaries are missing (and
/// fails under CI=true).
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(crate::util::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                if crate::pg::available() {
                    super::$name(crate::util::Backend::Postgres)
                }
            }
        }
    )+};
}

/// A pid in a JSON document, written as a number or as a string.
pub fn same_pid(v: &Value, pid: i32) -> bool {
    v.as_i64() == Some(pid as i64) || v.as_str() == Some(&pid.to_string())
}
