//! `sega-uploader status` and `check`: what the ledger and the daemon's state rows say,
//! read at one moment (`status_json`), as a table, as JSON, or as the one line of a
//! Nagios/Icinga plugin (`crate::check` judges it).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::setup;
use crate::cli::out::outln;
use crate::clock::{human_duration, Clock};
use crate::config::Config;
use crate::error::{Result, EXIT_OK};
use crate::identity::Identity;
use crate::layout::{display_name, text_line, Show};
use crate::lock;
use crate::store::{self, Role, Status};
use crate::timestamp::Timestamp;

/// The daemon's heartbeat is written every 10 s; three missed ones mean it is not alive.
const HEARTBEAT_STALE: Duration = Duration::from_secs(30);

fn age(clock: &Clock, t: Timestamp) -> Option<Duration> {
    (clock.now_utc() - t.utc()).try_into().ok()
}

/// The age of a time kept as a state row's value (`heartbeat`, `endpoint_down_since`).
fn value_age(clock: &Clock, v: &str) -> Option<Duration> {
    age(clock, Timestamp::parse(v)?)
}

fn status_json(config: &Config, clock: &Clock) -> Result<Value> {
    let mut store = store::open(config, Role::Read)?.ledger;
    let now = Timestamp::new(clock.now_utc());
    let local = clock.now_local();
    let today_start = Timestamp::new(local.replace_time(time::Time::MIDNIGHT));
    let s = store.summary(
        today_start,
        now - Duration::from_secs(86400),
        now - Duration::from_secs(3600),
    )?;
    let state = |k: &str| {
        s.state
            .get(k)
            .map(|(v, _)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let heartbeat = state("heartbeat");
    let shared = config.database.url.is_some();
    let me = Identity::from_config(config);
    let this_host = s.hosts.iter().find(|h| h.host == me.host);
    // In a shared ledger the server's clock judges ages: the hosts' clocks may disagree.
    let heartbeat_age = match this_host {
        Some(h) => h.heartbeat_age_secs.map(Duration::from_secs),
        None if shared => None,
        None => heartbeat.as_deref().and_then(|h| value_age(clock, h)),
    };
    // Alive: the daemon's lock is held (the lock file's flock; the advisory lock's session)
    // and its heartbeat is fresh.
    let holder = if shared {
        this_host.filter(|h| h.locked).and_then(|_| state("pid"))
    } else {
        lock::holder(&config.database.path)
    };
    let alive = holder.is_some() && heartbeat_age.is_some_and(|a| a <= HEARTBEAT_STALE);
    let hosts: Vec<Value> = s
        .hosts
        .iter()
        .map(|h| {
            let st = |k: &str| h.state.get(k).filter(|v| !v.is_empty()).cloned();
            let alive = h.locked
                && h.heartbeat_age_secs
                    .is_some_and(|a| a <= HEARTBEAT_STALE.as_secs());
            json!({
                "host": h.host,
                "this_host": h.host == me.host,
                "alive": alive,
                "pid": st("pid"),
                "heartbeat_at": st("heartbeat"),
                "heartbeat_age_secs": h.heartbeat_age_secs,
                "started_at": st("started_at"),
                "stopped_at": st("stopped_at"),
                "endpoint": st("endpoint"),
                "uploading": h.claimed,
            })
        })
        .collect();
    let mut folders = serde_json::Map::new();
    let mut totals = serde_json::Map::new();
    for st in Status::ALL {
        totals.insert(st.as_str().into(), json!(0));
    }
    for f in &config.watch.folders {
        let mut m = serde_json::Map::new();
        for st in Status::ALL {
            m.insert(st.as_str().into(), json!(0));
        }
        folders.insert(f.label.clone(), Value::Object(m));
    }
    // A status this build does not know (a row written by hand) is counted under its own
    // word, beside the five; added up, as two unknown words may read alike.
    let add = |m: &mut serde_json::Map<String, Value>, st: &Status, n: i64| {
        let t = m.get(st.as_str()).and_then(Value::as_i64).unwrap_or(0);
        m.insert(st.as_str().into(), json!(t + n));
    };
    for (folder, st, n) in &s.counts {
        let entry = folders.entry(folder.clone()).or_insert_with(|| json!({}));
        if let Value::Object(m) = entry {
            add(m, st, *n);
        }
        add(&mut totals, st, *n);
    }
    let path_at = |p: &Option<crate::store::PathAt>| -> Value {
        match p {
            Some(p) => json!({
                "path": display_name(p.path.as_os_str()),
                "at": p.at.map(|t| t.to_string()),
                "age_secs": p.at.and_then(|t| age(clock, t)).map(|d| d.as_secs()),
                "detail": p.detail,
            }),
            None => Value::Null,
        }
    };
    let endpoint_state = match (alive, state("endpoint").as_deref()) {
        (true, Some(e)) => e.to_owned(),
        _ => "unknown".to_owned(),
    };
    Ok(json!({
        "schema": 1,
        "database": store.describe(),
        "scope": if shared { Some(me.scope.clone()) } else { None },
        "host": if shared { Some(me.host.clone()) } else { None },
        "hosts": hosts,
        "daemon": {
            "alive": alive,
            "pid": holder.filter(|h| !h.is_empty()),
            "heartbeat_at": heartbeat,
            "heartbeat_age_secs": heartbeat_age.map(|d| d.as_secs()),
            "started_at": state("started_at"),
            "stopped_at": state("stopped_at"),
        },
        "endpoint": {
            "url": config.upload.url.redacted(),
            "state": endpoint_state,
            "down_since": if endpoint_state == "down" { state("endpoint_down_since") } else { None },
            "down_for_secs": if endpoint_state == "down" {
                state("endpoint_down_since").as_deref().and_then(|t| value_age(clock, t)).map(|d| d.as_secs())
            } else {
                None
            },
            "last_error": if endpoint_state == "down" { state("endpoint_error") } else { None },
        },
        "folders": folders,
        "totals": totals,
        "uploaded_today": s.uploaded_today,
        // Every file version this ledger (in PostgreSQL: this host) marked uploaded, kept by
        // the ledger as it commits them: it only grows, prune never lowers it.
        "uploaded_total": state(store::UPLOADED_TOTAL).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0),
        "failed_last_hour": s.failed_last_hour,
        "oldest_pending": path_at(&s.oldest_pending),
        "last_success": path_at(&s.last_success),
        "last_error": path_at(&s.last_error),
        "errors_24h": s.errors_24h.iter().map(|e| json!({
            "cause": e.cause, "count": e.count, "example": display_name(e.example.as_os_str()),
        })).collect::<Vec<_>>(),
        "last_scan_at": state("last_scan_at"),
        "watch": {
            // Directories only the rescan covers: the inotify watch limit refused them (the
            // daemon tries again at every scan interval). Known while a daemon runs.
            "unwatched_dirs": if alive {
                state("unwatched_dirs").and_then(|n| n.parse::<u64>().ok())
            } else {
                None
            },
        },
    }))
}

pub(super) fn status(path: &Path, as_json: bool) -> Result<i32> {
    let (config, clock) = setup(path, true)?;
    let v = status_json(&config, &clock)?;
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    // Text from the ledger may have come from an endpoint (a reason, an error): one safe line
    // each, whatever it holds.
    let s = |v: &Value| v.as_str().map(text_line).unwrap_or_else(|| "-".into());
    // The document's times are UTC (`format_ts`); a person reads them local, with the offset.
    let local = |v: &Value| match v.as_str() {
        Some(t) => Timestamp::parse(t).map_or_else(|| t.to_owned(), |t| t.local().to_string()),
        None => "-".into(),
    };
    let secs = |v: &Value| match v.as_u64() {
        Some(0) => "<1s".to_string(),
        Some(n) => human_duration(Duration::from_secs(n)),
        None => "-".into(),
    };
    let d = &v["daemon"];
    if d["alive"].as_bool() == Some(true) {
        outln!(
            "daemon:    running (pid {}, heartbeat {} ago)",
            s(&d["pid"]),
            secs(&d["heartbeat_age_secs"])
        );
    } else if d["pid"].is_string() {
        // The lock is held, so the process lives; its heartbeat is old because it cannot
        // write the ledger (a full disk, a lock held elsewhere): "not running" sent the
        // operator looking for a crash (review of 2026-12-04).
        outln!(
            "daemon:    NOT ANSWERING (pid {} holds the ledger's lock, but its last heartbeat \
             was {} ago: it cannot write the ledger; its log says why)",
            s(&d["pid"]),
            secs(&d["heartbeat_age_secs"])
        );
    } else {
        match (d["stopped_at"].as_str(), d["heartbeat_at"].as_str()) {
            (Some(stop), Some(hb)) if stop >= hb => {
                outln!(
                    "daemon:    NOT RUNNING (stopped cleanly at {})",
                    local(&d["stopped_at"])
                )
            }
            (_, Some(_)) => {
                outln!(
                    "daemon:    NOT RUNNING (last heartbeat {}; it did not stop cleanly)",
                    local(&d["heartbeat_at"])
                )
            }
            _ => outln!("daemon:    NOT RUNNING (never ran on this database)"),
        }
    }
    if let Some(hosts) = v["hosts"].as_array().filter(|h| !h.is_empty()) {
        outln!("ledger:    {}", s(&v["database"]));
        outln!(
            "  {:<20} {:<12} {:>9} {:>10}  endpoint",
            "host",
            "state",
            "heartbeat",
            "uploading"
        );
        for h in hosts {
            let state = if h["alive"].as_bool() == Some(true) {
                "running"
            } else if crate::check::stopped_cleanly(h) {
                "stopped"
            } else {
                "NOT RUNNING"
            };
            outln!(
                "  {:<20} {:<12} {:>9} {:>10}  {}",
                s(&h["host"]),
                state,
                secs(&h["heartbeat_age_secs"]),
                h["uploading"].as_i64().unwrap_or(0),
                s(&h["endpoint"])
            );
        }
    }
    let e = &v["endpoint"];
    match e["state"].as_str() {
        Some("down") => outln!(
            "endpoint:  DOWN since {} ({}) {}",
            local(&e["down_since"]),
            s(&e["last_error"]),
            s(&e["url"])
        ),
        Some(st) => outln!("endpoint:  {st} {}", s(&e["url"])),
        None => {}
    }
    if let Some(n) = v["watch"]["unwatched_dirs"].as_u64().filter(|n| *n > 0) {
        outln!(
            "watches:   {n} director(ies) scan-only: the inotify watch limit (fs.inotify.max_user_watches) refused them; tried again every scan interval"
        );
    }
    outln!();
    outln!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "folder",
        "pending",
        "uploading",
        "uploaded",
        "failed",
        "skipped"
    );
    let row = |name: &str, m: &Value| {
        let n = |k: &str| m[k].as_i64().unwrap_or(0);
        outln!(
            "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name,
            n("pending"),
            n("uploading"),
            n("uploaded"),
            n("failed"),
            n("skipped")
        )
    };
    if let Some(folders) = v["folders"].as_object() {
        for (name, m) in folders {
            row(&text_line(name), m);
        }
    }
    row("total", &v["totals"]);
    // Rows whose status was written by hand: not in the table's columns, never uploaded.
    if let Some(totals) = v["totals"].as_object() {
        for (st, n) in totals.iter().filter(|(st, _)| Status::parse(st).is_none()) {
            outln!("{:<16} {n} row(s) with status {st:?}: not one this build knows (set by hand?); never uploaded", "other status:");
        }
    }
    outln!();
    outln!("uploaded today:  {}", v["uploaded_today"]);
    let pa = |label: &str, p: &Value| {
        if p.is_null() {
            outln!("{label:<16} -");
        } else if p["at"].is_null() {
            outln!("{label:<16} (not a time) {}", s(&p["path"]));
        } else {
            outln!(
                "{label:<16} {} ({} ago) {}",
                local(&p["at"]),
                secs(&p["age_secs"]),
                s(&p["path"])
            );
            if let Some(d) = p["detail"].as_str() {
                outln!("{:<16} {}", "", text_line(d));
            }
        }
    };
    pa("oldest pending:", &v["oldest_pending"]);
    pa("last success:", &v["last_success"]);
    pa("last error:", &v["last_error"]);
    if let Some(errs) = v["errors_24h"].as_array().filter(|a| !a.is_empty()) {
        outln!("\nerrors in the last 24 h:");
        for e in errs {
            outln!(
                "  {:>6}  {}  (e.g. {})",
                e["count"],
                s(&e["cause"]),
                s(&e["example"])
            );
        }
    }
    Ok(EXIT_OK)
}

pub(super) fn check(
    path: &Path,
    thresholds: &crate::check::Thresholds,
    timeout: Duration,
) -> Result<i32> {
    let (config, clock) = match setup(path, true) {
        Ok(x) => x,
        Err(e) => {
            outln!("SEGA UNKNOWN - {}", e.to_string().replace('\n', "; "));
            return Ok(crate::check::UNKNOWN);
        }
    };
    // The ledger is read on a thread of its own, so that a server that does not answer or a
    // database locked by another process cannot hold the plugin past `-t`: the main thread
    // gives up with UNKNOWN, and the process exits with the reader still blocked (main
    // exits the process as soon as this returns).
    let (where_, hint) = match &config.database.url {
        Some(url) => (
            format!(
                "the PostgreSQL ledger ({})",
                crate::config::redact_db_url(url.expose())
            ),
            "is the server reachable and answering?",
        ),
        None => (
            format!("the database {}", config.database.path.shown()),
            "is it locked by another process?",
        ),
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    let reader = std::thread::Builder::new()
        .name("check".into())
        .spawn(move || {
            let _ = tx.send(status_json(&config, &clock));
        });
    if let Err(e) = reader {
        outln!("SEGA UNKNOWN - starting the reader thread: {e}");
        return Ok(crate::check::UNKNOWN);
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(v)) => {
            let (code, line) = crate::check::evaluate(&v, thresholds);
            outln!("{line}");
            Ok(code)
        }
        Ok(Err(e)) => {
            outln!("SEGA UNKNOWN - {}", e.to_string().replace('\n', "; "));
            Ok(crate::check::UNKNOWN)
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
            outln!("SEGA UNKNOWN - reading {where_} failed (the reader thread ended without an answer)");
            Ok(crate::check::UNKNOWN)
        }
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            outln!(
                "SEGA UNKNOWN - no answer from {where_} within {} (-t): {hint}",
                human_duration(timeout)
            );
            Ok(crate::check::UNKNOWN)
        }
    }
}
