//! `sega-uploader list`: recorded files, newest date first, as a table (times local, with
//! their offset) or JSON lines (times UTC); `-v` adds each file's latest answer in one line.

use std::collections::HashMap;
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

/// Rows whose latest answers `-v` reads at a time: a stored answer may be 64 KiB, and
/// `--limit 0` on a large ledger would otherwise hold every one at once.
const ANSWERS_PER_READ: usize = 500;

pub(super) fn list(path: &Path, filter: &ListFilter, as_json: bool, verbose: bool) -> Result<i32> {
    let (config, _clock) = setup(path, true)?;
    let mut store = store::open(&config, Role::Read)?.ledger;
    let rows = store.list(filter)?;
    // A shared ledger says which host holds (or last held) each row.
    let shared = config.database.url.is_some();
    if !as_json {
        table_head(shared, verbose);
    }
    for chunk in rows.chunks(ANSWERS_PER_READ) {
        let answers = if verbose {
            let ids: Vec<i64> = chunk.iter().map(|r| r.id).collect();
            store.latest_results(&ids)?
        } else {
            HashMap::new()
        };
        for r in chunk {
            let last_answer = answers.get(&r.id).map(answer::one_line);
            if as_json {
                let mut v = row_json(r);
                if verbose {
                    v["last_answer"] = json!(last_answer);
                }
                outln!("{v}");
            } else {
                table_row(r, shared, verbose.then_some(last_answer));
            }
        }
    }
    if !as_json {
        outln!("({} row(s))", rows.len());
    }
    Ok(EXIT_OK)
}

fn host_col(shared: bool, h: &str) -> String {
    if shared {
        format!("{h:<16}  ")
    } else {
        String::new()
    }
}

/// The time is the row's last change (recorded, tried, failed, uploaded), local; the id is
/// what `show` takes. The name stays last: it is the one column of any width.
fn table_head(shared: bool, verbose: bool) {
    outln!(
        "{:<9} {:>3} {:>10}  {:<10}  {:<10}  {:<26}  {}{:>7}  file / ^ last error{}",
        "status",
        "try",
        "size",
        "date",
        "folder",
        "last change",
        host_col(shared, "host"),
        "id",
        if verbose { " / > last answer" } else { "" }
    );
}

/// One row, its last error and (with `-v`) its latest answer under it, from the `try`
/// column: room for the message on a narrow terminal.
fn table_row(r: &FileRow, shared: bool, last_answer: Option<Option<String>>) {
    let indent = " ".repeat(10);
    outln!(
        "{:<9} {:>3} {:>10}  {:<10}  {:<10}  {:<26}  {}{:>7}  {}",
        r.status,
        r.attempts,
        r.size,
        text_line(&r.date),
        text_line(&r.folder),
        crate::timestamp::local_or_unreadable(r.updated_at),
        host_col(shared, &text_line(r.host.as_deref().unwrap_or("-"))),
        r.id,
        display_name(&r.filename)
    );
    if let Some(e) = &r.last_error {
        outln!("{indent}^ {}", text_line(e));
    }
    if let Some(answer) = last_answer {
        let line = answer.unwrap_or_else(|| "no attempt stored".into());
        outln!("{indent}> {line}");
    }
}
