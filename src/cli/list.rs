//! `sega-uploader list`: recorded files, newest date first, as a table (times local, with
//! their offset) or JSON lines (times UTC); `-v` adds each file's latest answer in one line.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde_json::{json, Value};

use super::{answer, setup};
use crate::cli::out::outln;
use crate::error::{Result, EXIT_OK};
use crate::layout::{display_name, text_line};
use crate::store::{self, FileRow, ListFilter, Role};

/// One row as `list --json` prints it (and `show --json` as its `file`).
pub(super) fn row_json(r: &FileRow) -> Value {
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
        "detected_at": r.detected_at.map(|t| t.to_string()),
        "uploaded_at": r.uploaded_at.map(|t| t.to_string()),
        "updated_at": r.updated_at.map(|t| t.to_string()),
        "host": r.host,
    })
}

pub(super) fn list(path: &Path, filter: &ListFilter, as_json: bool, verbose: bool) -> Result<i32> {
    let (config, _clock) = setup(path, true)?;
    let mut store = store::open(&config, Role::Read)?.ledger;
    let rows = store.list(filter)?;
    let answers = if verbose {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        store.latest_results(&ids)?
    } else {
        Default::default()
    };
    let last_answer = |r: &FileRow| answers.get(&r.id).map(answer::one_line);
    if as_json {
        for r in &rows {
            let mut v = row_json(r);
            if verbose {
                v["last_answer"] = json!(last_answer(r));
            }
            outln!("{v}");
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
    // The time is the row's last change (recorded, tried, failed, uploaded), local; the id
    // is what `show` takes. The name stays last: it is the one column of any width.
    outln!(
        "{:<9} {:>3} {:>10}  {:<10}  {:<10}  {:<26}  {}{:>7}  file / ^ last error{}",
        "status",
        "try",
        "size",
        "date",
        "folder",
        "last change",
        host_col("host"),
        "id",
        if verbose { " / > last answer" } else { "" }
    );
    // Under the row, from the `try` column: room for the message on a narrow terminal.
    let indent = " ".repeat(10);
    for r in &rows {
        outln!(
            "{:<9} {:>3} {:>10}  {:<10}  {:<10}  {:<26}  {}{:>7}  {}",
            r.status,
            r.attempts,
            r.size,
            text_line(&r.date),
            text_line(&r.folder),
            crate::timestamp::local_or_unreadable(r.updated_at),
            host_col(&text_line(r.host.as_deref().unwrap_or("-"))),
            r.id,
            display_name(&r.filename)
        );
        if let Some(e) = &r.last_error {
            outln!("{indent}^ {}", text_line(e));
        }
        if verbose {
            let line = last_answer(r).unwrap_or_else(|| "no attempt stored".into());
            outln!("{indent}> {line}");
        }
    }
    outln!("({} row(s))", rows.len());
    Ok(EXIT_OK)
}
