//! `sega-uploader show ID|PATH`: one recorded file, every column of its row an operator
//! needs, then every stored attempt with the endpoint's answer as stored (JSON
//! pretty-printed); `--json` gives the same as one JSON object, times in UTC.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{answer, list, setup};
use crate::cli::out::outln;
use crate::clock::{human_duration, Clock};
use crate::config::Config;
use crate::error::{Error, Result, EXIT_OK};
use crate::layout::{display_name, text_line, Show};
use crate::store::{self, FileRow, Ledger, ResultRow, Role, Status, RESULTS_KEPT_PER_FILE};
use crate::timestamp::{local_or_unreadable, Timestamp};

/// What `show` was asked about, as typed.
pub(super) struct Target(pub(super) PathBuf);

pub(super) fn show(path: &Path, target: &Target, as_json: bool, full: bool) -> Result<i32> {
    let (config, clock) = setup(path, true)?;
    let mut store = store::open(&config, Role::Read)?.ledger;
    let row = find(&config, &mut *store, &target.0)?;
    let results = store.results(row.id)?;
    if as_json {
        let doc = json!({
            "file": list::row_json(&row),
            "results": results.iter().map(result_json).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    let shared = config.database.url.is_some();
    for line in row_lines(&row, &clock, shared) {
        outln!("{line}");
    }
    outln!();
    if results.is_empty() {
        outln!("no attempt stored");
    } else {
        outln!(
            "{} stored attempt(s), oldest first (the ledger keeps the latest {RESULTS_KEPT_PER_FILE}):",
            results.len()
        );
    }
    for r in &results {
        outln!();
        for line in result_lines(r, full, shared) {
            outln!("{line}");
        }
    }
    Ok(EXIT_OK)
}

/// The row `arg` names: an id (digits: no image name is only digits), or a path, absolute,
/// or relative to a folder label (`Sega_1/2026-12-02/a.jpg`, as `list` shows folder, date
/// and name), to `watch.root`, or to the working directory, in that order.
fn find(config: &Config, store: &mut dyn Ledger, arg: &Path) -> Result<FileRow> {
    let bytes = arg.as_os_str().as_bytes();
    if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) {
        let id: i64 = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::NotFound(format!("no file with id {}", arg.shown())))?;
        return store.file_by_id(id)?.ok_or_else(|| {
            Error::NotFound(format!(
                "no file with id {id} in {}: `sega-uploader list` shows the recorded files and their ids",
                store.describe()
            ))
        });
    }
    let tried = candidates(config, arg);
    for p in &tried {
        if let Some(row) = store.file_by_path(p)? {
            return Ok(row);
        }
    }
    let looked: Vec<String> = tried.iter().map(|p| display_name(p.as_os_str())).collect();
    Err(Error::NotFound(format!(
        "{} is not recorded in {} (looked for {}): a scan records the images of the date folders \
         in the window; `sega-uploader list` shows what is recorded",
        arg.shown(),
        store.describe(),
        looked.join(", ")
    )))
}

fn candidates(config: &Config, arg: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut add = |p: PathBuf| {
        // `a/./b` and `a/b` name one row: the ledger stores paths without `.` components.
        let p: PathBuf = p.components().filter(|c| *c != Component::CurDir).collect();
        if !out.contains(&p) {
            out.push(p);
        }
    };
    if arg.is_absolute() {
        add(arg.to_path_buf());
        return out;
    }
    let parts: Vec<&OsStr> = arg
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    if let [label, date, name] = parts[..] {
        if let Some(f) = config
            .watch
            .folders
            .iter()
            .find(|f| OsStr::new(&f.label) == label)
        {
            add(f.path.join(date).join(name));
        }
    }
    add(config.watch.root.join(arg));
    if let Ok(cwd) = std::env::current_dir() {
        add(cwd.join(arg));
    }
    if let Some(p) = as_recorded(config, arg) {
        add(p);
    }
    out
}

/// The path the ledger records for a file named through another route to its folder: with
/// `watch.root` a link (`/data` → `/mnt/disk1`), the working directory of an operator who
/// went `cd /data/Sega_1/2026-12-02` is `/mnt/disk1/Sega_1/2026-12-02`, and the ledger knows
/// `/data/Sega_1/2026-12-02/a.jpg`. The file's directory is resolved and matched against each
/// folder's resolved directory, then rebuilt under the folder as configured. None when it is
/// in no folder, or its directory does not resolve. (`retry` uses it too.)
pub(super) fn as_recorded(config: &Config, arg: &Path) -> Option<PathBuf> {
    let name = arg.file_name()?;
    let dir = arg
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let date_dir = std::fs::canonicalize(dir).ok()?;
    let date = date_dir.file_name()?;
    let folder_dir = date_dir.parent()?;
    let folder = config
        .watch
        .folders
        .iter()
        .find(|f| std::fs::canonicalize(&f.path).is_ok_and(|d| d == folder_dir))?;
    Some(folder.path.join(date).join(name))
}

fn local(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".into(), |t| t.local().to_string())
}

/// The row, one `name: value` line each.
fn row_lines(r: &FileRow, clock: &Clock, shared: bool) -> Vec<String> {
    let mtime = OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.mtime_ns))
        .ok()
        .map(Timestamp::new);
    let next = match r.next_attempt_at {
        Some(t) => {
            let now = clock.now_utc();
            let when = match Duration::try_from(t.utc() - now) {
                Ok(d) => format!("in {}", human_duration(d)),
                Err(_) => "due now".into(),
            };
            format!("{} ({when})", t.local())
        }
        None => "-".into(),
    };
    let mut lines = vec![
        format!("file {}  {}", r.id, r.path.shown()),
        format!(
            "status:        {}{}",
            r.status,
            match r.status {
                Status::Failed => " (for good: `sega-uploader retry PATH` sends it again)",
                Status::Skipped => " (not to be uploaded: see the last error)",
                _ => "",
            }
        ),
        format!(
            "attempts:      {} (of this version of the file)",
            r.attempts
        ),
        format!("folder:        {}", text_line(&r.folder)),
        format!("date:          {}", text_line(&r.date)),
        format!("name:          {}", r.filename.shown()),
        format!("size:          {} bytes", r.size),
        format!("mtime:         {}", local(mtime)),
        format!("detected:      {}", local_or_unreadable(r.detected_at)),
        format!("last change:   {}", local_or_unreadable(r.updated_at)),
        format!("uploaded:      {}", local(r.uploaded_at)),
        format!("next attempt:  {next}"),
        format!(
            "last error:    {}",
            r.last_error.as_deref().map_or("-".into(), text_line)
        ),
    ];
    if shared {
        lines.push(format!(
            "host:          {} (holds or last held it)",
            r.host.as_deref().map_or("-".into(), text_line)
        ));
    }
    lines
}

/// One stored attempt: its line, the error, the answer.
fn result_lines(r: &ResultRow, full: bool, shared: bool) -> Vec<String> {
    let mut head = format!(
        "attempt {}  {}  took {}  ",
        r.attempt,
        local_or_unreadable(r.started_at),
        human_duration(Duration::from_millis(r.duration_ms.max(0) as u64))
    );
    match r.http_status {
        Some(s) => head += &format!("HTTP {s}"),
        None => head += "no answer",
    }
    head += &format!("  {}", r.outcome.as_str());
    if shared {
        if let Some(h) = &r.host {
            head += &format!("  by {}", text_line(h));
        }
    }
    let mut lines = vec![head];
    if let Some(e) = &r.error {
        lines.push(format!("  error: {}", text_line(e)));
    }
    match &r.response_body {
        Some(body) => lines.extend(answer::body_lines(body, full, "  ")),
        None if r.http_status.is_some() => lines.push("  answer: none stored".into()),
        None => {}
    }
    lines
}

/// One attempt for `--json`: the stored columns, times in UTC; `response_json` the parsed
/// answer when it was JSON.
fn result_json(r: &ResultRow) -> Value {
    let parsed = r
        .response_body
        .as_deref()
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        .or_else(|| {
            r.response_json
                .as_deref()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
        });
    json!({
        "id": r.id,
        "attempt": r.attempt,
        "started_at": r.started_at.map(|t| t.to_string()),
        "duration_ms": r.duration_ms,
        "http_status": r.http_status,
        "outcome": r.outcome.as_str(),
        "error": r.error,
        "response_body": r.response_body,
        "response_body_bytes": r.response_body.as_ref().map(String::len),
        "response_json": parsed,
        "host": r.host,
    })
}
