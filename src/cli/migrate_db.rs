//! `sega-uploader migrate-db`: copies an SQLite ledger into the PostgreSQL one at
//! `database.url`, in chunks, leaving rows already there alone so that it may be run again.

use std::path::{Path, PathBuf};

use super::setup;
use crate::error::{Error, Result, EXIT_OK};
use crate::layout::Show;
use crate::lock;
use crate::store::{self, Ledger, Role};

/// Rows carried per transaction: big enough to be quick, small enough that an interrupted
/// copy loses little (a second run skips what is already there).
const MIGRATE_CHUNK: usize = 1000;

pub(super) fn migrate_db(path: &Path, from: Option<PathBuf>) -> Result<i32> {
    let (config, _clock) = setup(path, false)?;
    if config.database.url.is_none() {
        return Err(Error::Other(
            "migrate-db copies an SQLite ledger into the PostgreSQL ledger at database.url, \
             and database.url is not set in this config"
                .into(),
        ));
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
    let mut chunk = Vec::with_capacity(MIGRATE_CHUNK);
    let mut added = 0;
    let read = src.export(&mut |row| {
        chunk.push(row);
        if chunk.len() >= MIGRATE_CHUNK {
            added += dst.import(&chunk)?;
            chunk.clear();
        }
        Ok(())
    })?;
    if !chunk.is_empty() {
        added += dst.import(&chunk)?;
    }
    println!(
        "migrate-db: {read} row(s) read from {}; {added} added to {}, {} already there",
        source.shown(),
        dst.describe(),
        read - added
    );
    Ok(EXIT_OK)
}
