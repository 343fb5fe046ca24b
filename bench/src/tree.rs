//! Test trees and databases: image folders with real JPEGs of exact sizes, a 1 GiB image
//! streamed to disk, and rows inserted straight into the daemon's SQLite schema (a million
//! rows take seconds this way, against hours through uploads).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection};
use sega_testsrv::images;

use crate::sys::db_timestamp;

/// A few distinct JPEGs of one exact size, handed out round-robin, so writing thousands of
/// files costs no encoding on the measured path.
pub struct Contents(Vec<Vec<u8>>);

impl Contents {
    pub fn new(size: usize, distinct: usize, seed: u64) -> Contents {
        Contents(
            (0..distinct.max(1) as u64)
                .map(|i| images::jpeg_of_size(size, seed + i))
                .collect(),
        )
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.0[i % self.0.len()]
    }
}

/// `<root>/<folder>/<date>` for each folder.
pub fn date_dirs(root: &Path, folders: &[&str], date: &str) -> io::Result<Vec<PathBuf>> {
    folders
        .iter()
        .map(|f| {
            let d = root.join(f).join(date);
            fs::create_dir_all(&d).map(|()| d)
        })
        .collect()
}

/// The file name of the `i`-th bench image with this prefix.
pub fn name(prefix: &str, i: usize) -> String {
    format!("{prefix}_{i:07}.jpg")
}

/// Writes `n` images `prefix_0000000.jpg`… into `dir`; returns their paths.
pub fn write_images(
    dir: &Path,
    prefix: &str,
    n: usize,
    contents: &Contents,
) -> io::Result<Vec<PathBuf>> {
    (0..n)
        .map(|i| {
            let p = dir.join(name(prefix, i));
            fs::write(&p, contents.get(i)).map(|()| p)
        })
        .collect()
}

/// A valid JPEG of exactly `size` bytes at `path`, streamed (64 KiB in memory). Kept if a
/// file of that size is already there (a re-run does not rewrite a gigabyte).
pub fn write_big_image(path: &Path, size: u64) -> io::Result<()> {
    if fs::metadata(path).is_ok_and(|m| m.len() == size) {
        return Ok(());
    }
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    images::write_jpeg_of_size(&mut w, size, 7)?;
    w.flush()
}

/// One `files` row as the daemon would have written it.
pub struct Row {
    pub path: String,
    pub folder: String,
    pub date: String,
    pub filename: String,
    pub size: i64,
    pub mtime_ns: i64,
    /// `uploaded` or `pending`.
    pub status: &'static str,
    /// For a pending row: when it is due. For an uploaded one: when it was uploaded.
    pub at: SystemTime,
}

/// Inserts rows into an initialised database in one transaction, then truncates the WAL
/// (as a long-running database is: checkpointed). Returns the count.
pub fn insert_rows(db: &Path, rows: impl Iterator<Item = Row>) -> rusqlite::Result<usize> {
    let mut conn = Connection::open(db)?;
    // Bulk load only: the bench's own connection may skip fsyncs.
    conn.execute_batch("PRAGMA synchronous=OFF; PRAGMA cache_size=-262144;")?;
    let tx = conn.transaction()?;
    let mut n = 0;
    {
        let mut insert = tx.prepare(
            "INSERT INTO files(path, folder, date, filename, size, mtime_ns, status, attempts,
                next_attempt_at, last_error, detected_at, uploaded_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10, ?11, ?10)",
        )?;
        for r in rows {
            let at = db_timestamp(r.at);
            let detected = db_timestamp(r.at - Duration::from_secs(1));
            let uploaded = r.status == "uploaded";
            insert.execute(params![
                r.path,
                r.folder,
                r.date,
                r.filename,
                r.size,
                r.mtime_ns,
                r.status,
                i64::from(uploaded),
                if uploaded { None } else { Some(&at) },
                detected,
                if uploaded { Some(&at) } else { None },
            ])?;
            n += 1;
        }
    }
    tx.commit()?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(n)
}

/// Rows per status.
pub fn count_by_status(db: &Path) -> rusqlite::Result<Vec<(String, i64)>> {
    let conn = Connection::open(db)?;
    let mut stmt = conn.prepare("SELECT status, count(*) FROM files GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// A row for a file that exists: its size and mtime from lstat.
pub fn row_for_file(
    path: &Path,
    folder: &str,
    date: &str,
    status: &'static str,
    at: SystemTime,
) -> io::Result<Row> {
    let m = fs::symlink_metadata(path)?;
    Ok(Row {
        path: path.to_string_lossy().into_owned(),
        folder: folder.to_string(),
        date: date.to_string(),
        filename: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size: m.size() as i64,
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        status,
        at,
    })
}

/// Recreates `dir` empty.
pub fn fresh_dir(dir: &Path) -> io::Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    Ok(dir.to_path_buf())
}
