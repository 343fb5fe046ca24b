//! `sega-uploader list`: recorded files, newest date first, as a table or JSON lines.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde_json::{json, Value};

use super::setup;
use crate::error::{Result, EXIT_OK};
use crate::layout::display_name;
use crate::store::{self, FileRow, ListFilter, Role};

fn row_json(r: &FileRow) -> Value {
    let raw = r.path.as_os_str().as_bytes();
    json!({
        "id": r.id,
        "path": display_name(r.path.as_os_str()),
        "path_utf8": std::str::from_utf8(raw).is_ok(),
        "folder": r.folder,
        "date": r.date,
        "filename": display_name(&r.filename),
        "size": r.size,
        "mtime_ns": r.mtime_ns,
        "status": r.status.as_str(),
        "attempts": r.attempts,
        "next_attempt_at": r.next_attempt_at.map(|t| t.to_string()),
        "last_error": r.last_error,
        "detected_at": r.detected_at.to_string(),
        "uploaded_at": r.uploaded_at.map(|t| t.to_string()),
        "updated_at": r.updated_at.to_string(),
        "host": r.host,
    })
}

pub(super) fn list(path: &Path, filter: &ListFilter, as_json: bool) -> Result<i32> {
    let (config, _clock) = setup(path, true)?;
    let rows = store::open(&config, Role::Read)?.ledger.list(filter)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        for r in &rows {
            let _ = writeln!(out, "{}", row_json(r));
        }
        return Ok(EXIT_OK);
    }
    // A shared ledger says which host holds (or last held) each row.
    let shared = config.database.url.is_some();
    let host_col = |h: &str| {
        if shared {
            format!("{h:<16}  ")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        out,
        "{:<9} {:>3} {:>10}  {:<10}  {:<10}  {}file / last error",
        "status",
        "try",
        "size",
        "date",
        "folder",
        host_col("host")
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<9} {:>3} {:>10}  {:<10}  {:<10}  {}{}",
            r.status,
            r.attempts,
            r.size,
            r.date,
            r.folder,
            host_col(r.host.as_deref().unwrap_or("-")),
            display_name(&r.filename)
        );
        if let Some(e) = &r.last_error {
            let _ = writeln!(out, "{:>50}  {}^ {e}", "", host_col(""));
        }
    }
    let _ = writeln!(out, "({} row(s))", rows.len());
    Ok(EXIT_OK)
}
