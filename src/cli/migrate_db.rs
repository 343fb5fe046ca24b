//! `sega-uploader migrate-db`: copies an SQLite ledger into the PostgreSQL one at
//! `database.url`, in chunks, leaving rows already there alone so that it may be run again.
//! On a terminal a live line says how far the copy is (`super::progress`); at the end one
//! summary line; `--quiet` leaves errors only.

use std::path::{Path, PathBuf};

use super::progress::{eta, rate, Progress, Verbosity};
use super::setup;
use crate::cli::out::outln;
use crate::config::{ConfigError, Problem};
use crate::error::{Error, Result, EXIT_OK};
use crate::layout::Show;
use crate::lock;
use crate::store::{self, Ledger, Role};

/// Rows carried per transaction: big enough to be quick, small enough that an interrupted
/// copy loses little (a second run skips what is already there).
const MIGRATE_CHUNK: usize = 1000;

pub(super) fn migrate_db(path: &Path, from: Option<PathBuf>, verbosity: Verbosity) -> Result<i32> {
    let (config, _clock) = setup(path, false)?;
    if verbosity == Verbosity::Quiet {
        crate::logging::set_level(log::max_level().min(log::LevelFilter::Error));
    }
    if config.database.url.is_none() {
        // A config that cannot do what was asked: exit 78 naming the key, as any other.
        return Err(Error::Config(ConfigError {
            source_name: path.shown().to_string(),
            problems: vec![Problem {
                location: "database.url".into(),
                message: "not set: migrate-db copies an SQLite ledger into the PostgreSQL \
                          ledger that database.url names"
                    .into(),
            }],
        }));
    }
    let source = from.unwrap_or_else(|| config.database.path.clone());
    // A daemon still writing the SQLite file would record files the copy misses.
    let _lock = match lock::try_lock(&source)? {
        lock::Attempt::Acquired(l) => l,
        lock::Attempt::Held(holder) => {
            return Err(Error::Other(format!(
                "a daemon (pid {holder}) is using {}: stop it first (systemctl stop sega-uploader)",
                source.shown()
            )))
        }
    };
    let mut src = store::Store::open_read_only(&source)?;
    let mut dst = store::open(&config, Role::Write)?.ledger;
    let mut progress = Progress::new(verbosity);
    // For the live line only: how many rows there are to copy.
    let total: i64 = if progress.shown() {
        src.counts()?.iter().map(|(_, _, n)| n).sum()
    } else {
        0
    };
    let total = usize::try_from(total).unwrap_or(0);
    let line = |read: usize, added: usize, elapsed| {
        let mut s = format!(
            "migrate-db: {read}/{total} row(s) read, {added} added · {}",
            rate(read, elapsed, "rows")
        );
        if let Some(left) = eta(read, total, elapsed) {
            s += &format!(", about {left} left");
        }
        s
    };
    progress.update(true, || line(0, 0, std::time::Duration::ZERO));
    let mut chunk = Vec::with_capacity(MIGRATE_CHUNK);
    let (mut read_so_far, mut added) = (0, 0);
    let read = src.export(&mut |row| {
        chunk.push(row);
        read_so_far += 1;
        if chunk.len() >= MIGRATE_CHUNK {
            added += dst.import(&chunk)?;
            chunk.clear();
        }
        let elapsed = progress.elapsed();
        progress.update(false, || line(read_so_far, added, elapsed));
        Ok(())
    })?;
    if !chunk.is_empty() {
        added += dst.import(&chunk)?;
    }
    let elapsed = progress.elapsed();
    progress.update(true, || line(read, added, elapsed));
    progress.finish();
    if verbosity == Verbosity::Quiet {
        return Ok(EXIT_OK);
    }
    outln!(
        "migrate-db: {read} row(s) read from {}; {added} added to {}, {} already there; in {} ({})",
        source.shown(),
        dst.describe(),
        read - added,
        crate::clock::human_duration(elapsed),
        rate(read, elapsed, "rows")
    );
    Ok(EXIT_OK)
}
