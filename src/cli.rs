//! The subcommands: parsing their arguments and running them. Each command is a short
//! function over the shared parts (config, layout, store, upload, db owner); the daemon's
//! thread wiring is in `daemon`.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded};
use serde_json::{json, Value};
use time::Date;

use crate::clock::{format_ts, human_duration, parse_ts, Clock};
use crate::config::{self, Config};
use crate::db::{Input, Owner};
use crate::error::{Error, Result, EXIT_FAILURE, EXIT_OK};
use crate::health::Beat;
use crate::layout::Show;
use crate::layout::{self, display_name, FolderRef, Window};
use crate::lock;
use crate::logging;
use crate::scanner;
use crate::store::{self, Claimed, FileRow, Ledger, ListFilter, Role, Status};
use crate::upload::{self, Outcome, RequestSettings};

pub enum Parsed {
    Help(String),
    Version,
    Run(Cli),
}

pub struct Cli {
    config: Option<PathBuf>,
    cmd: Cmd,
}

enum Cmd {
    Run,
    CheckConfig {
        offline: bool,
    },
    Scan {
        dates: Vec<Date>,
        dry_run: bool,
    },
    Status {
        json: bool,
    },
    List {
        filter: ListFilter,
        json: bool,
    },
    Retry {
        failed: bool,
        paths: Vec<PathBuf>,
        force: bool,
    },
    UploadTest {
        file: PathBuf,
    },
    Check {
        thresholds: crate::check::Thresholds,
    },
    MigrateDb {
        from: Option<PathBuf>,
    },
}

const COMMON: &str = "  -c, --config FILE   config file (default: $SEGA_CONFIG, else /etc/sega/config.json)\n  -h, --help          this help";

fn help(cmd: &str) -> String {
    let (usage, about, opts) = match cmd {
        "run" => ("run", "Runs the daemon in the foreground (systemd Type=notify). SIGTERM/SIGINT stop it\ngracefully; SIGHUP reloads the config.", ""),
        "check-config" => (
            "check-config [--offline]",
            "Validates the config and prints it with secrets redacted, then checks the environment:\nfolders readable, database directory writable, inotify limits, endpoint reachable.\nExit 78 if the config is invalid, 1 if a check fails, else 0.",
            "      --offline       contact neither the endpoint nor a PostgreSQL ledger\n",
        ),
        "scan" => (
            "scan [--date YYYY-MM-DD]... [--dry-run]",
            "One pass: records every image of the date folders in the window (or the given dates),\nmakes one upload attempt per due file, and exits. If the daemon is running, only records.\nExit 1 if any file of the scanned dates is left pending or failed.",
            "      --date D        scan this date folder (repeatable; default: the date window)\n      --dry-run       print what it would do, change nothing\n",
        ),
        "status" => ("status [--json]", "Counts per folder and status, uploaded today, oldest pending, last success and error,\nerrors of the last 24 h by cause, endpoint state, and whether the daemon is alive.", "      --json          a stable JSON document instead of the table\n"),
        "list" => (
            "list [--status S] [--folder F] [--date D] [--limit N] [--json]",
            "Lists recorded files, newest date first.",
            "      --status S      pending, uploading, uploaded, failed or skipped\n      --folder F      a folder label (Sega_1)\n      --date D        a date folder (YYYY-MM-DD)\n      --limit N       at most N rows (default 100; 0 for all)\n      --json          JSON lines instead of the table\n",
        ),
        "retry" => (
            "retry (--failed | PATH...) [--force]",
            "Re-queues files; a running daemon picks them up within seconds.",
            "      --failed        every file marked failed\n      --force         also files already uploaded (or skipped)\n",
        ),
        "upload-test" => (
            "upload-test FILE",
            "Uploads one file now with the configured request and prints the status, headers and body.\nThe database is not touched. Exit 0 on a 2xx answer, else 1.",
            "",
        ),
        "migrate-db" => (
            "migrate-db [--from SQLITE_FILE]",
            "Copies an SQLite ledger (default: database.path) into the PostgreSQL ledger at\n\
             database.url, under this host's scope: every file row with its status and its latest\n\
             results, so nothing already uploaded is sent again. Rows already in PostgreSQL are\n\
             left alone, so it may be run again. Stop the daemon first; the SQLite file is only read.",
            "      --from FILE     the SQLite database to copy (default: database.path)\n",
        ),
        "check" => (
            "check [--warn-…/--crit-… thresholds]",
            "A Nagios/Icinga plugin: one line, perfdata after '|'. Exit 0 OK, 1 WARNING, 2 CRITICAL,\n3 UNKNOWN (also for usage and configuration errors).",
            crate::check::FLAGS,
        ),
        _ => return crate::usage().to_string(),
    };
    format!("Usage: sega-uploader {usage} [-c FILE]\n\n{about}\n\nOptions:\n{opts}{COMMON}")
}

fn usage_err(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

fn parse_date_arg(s: &str) -> Result<Date> {
    layout::parse_date_dir(std::ffi::OsStr::new(s))
        .ok_or_else(|| usage_err(format!("--date {s}: expected a date as YYYY-MM-DD")))
}

impl Cli {
    /// Parses the command line. For `check`, a usage error is the plugin's UNKNOWN (3).
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed> {
        let args: Vec<OsString> = args.into_iter().collect();
        let is_check = args.iter().any(|a| a == "check");
        Cli::parse_args(args).map_err(|e| match e {
            Error::Usage(m) if is_check => Error::Plugin(format!("SEGA UNKNOWN - {m}")),
            e => e,
        })
    }

    fn parse_args(args: Vec<OsString>) -> Result<Parsed> {
        use lexopt::prelude::*;
        let mut p = lexopt::Parser::from_args(args);
        let mut config = None;
        let mut command: Option<String> = None;
        let (mut offline, mut dry_run, mut json, mut failed, mut force) =
            (false, false, false, false, false);
        let mut dates = Vec::new();
        let mut filter = ListFilter {
            limit: Some(100),
            ..ListFilter::default()
        };
        let mut positional: Vec<PathBuf> = Vec::new();
        let mut thresholds = crate::check::Thresholds::default();
        let mut from = None;
        let bad = |e: lexopt::Error| usage_err(e.to_string());
        while let Some(arg) = p.next().map_err(bad)? {
            let cmd = command.as_deref().unwrap_or("");
            match arg {
                Short('c') | Long("config") => {
                    config = Some(PathBuf::from(p.value().map_err(bad)?))
                }
                Short('h') | Long("help") => return Ok(Parsed::Help(help(cmd))),
                Short('V') | Long("version") => return Ok(Parsed::Version),
                Long("offline") if cmd == "check-config" => offline = true,
                Long("dry-run") if cmd == "scan" => dry_run = true,
                Long("date") if cmd == "scan" => dates.push(parse_date_arg(
                    &p.value().map_err(bad)?.string().map_err(bad)?,
                )?),
                Long("json") if cmd == "status" || cmd == "list" => json = true,
                Long("status") if cmd == "list" => {
                    let v = p.value().map_err(bad)?.string().map_err(bad)?;
                    filter.status = Some(Status::parse(&v).ok_or_else(|| {
                        usage_err(format!("--status {v}: expected pending, uploading, uploaded, failed or skipped"))
                    })?);
                }
                Long("folder") if cmd == "list" => {
                    filter.folder = Some(p.value().map_err(bad)?.string().map_err(bad)?)
                }
                Long("date") if cmd == "list" => {
                    let v = p.value().map_err(bad)?.string().map_err(bad)?;
                    parse_date_arg(&v)?;
                    filter.date = Some(v);
                }
                Long("limit") if cmd == "list" => {
                    let n: i64 = p.value().map_err(bad)?.parse().map_err(bad)?;
                    filter.limit = if n <= 0 { None } else { Some(n) };
                }
                Long("failed") if cmd == "retry" => failed = true,
                Long("force") if cmd == "retry" => force = true,
                Long("from") if cmd == "migrate-db" => {
                    from = Some(PathBuf::from(p.value().map_err(bad)?))
                }
                Long(flag)
                    if cmd == "check"
                        && (flag.starts_with("warn-") || flag.starts_with("crit-")) =>
                {
                    let flag = flag.to_owned();
                    let v = p.value().map_err(bad)?.string().map_err(bad)?;
                    thresholds.set(&flag, &v).map_err(usage_err)?;
                }
                Value(v) if command.is_none() => command = Some(v.string().map_err(bad)?),
                Value(v) if cmd == "retry" || cmd == "upload-test" => {
                    positional.push(PathBuf::from(v))
                }
                other => return Err(usage_err(other.unexpected().to_string())),
            }
        }
        let Some(name) = command else {
            return Ok(Parsed::Help(crate::usage().to_string()));
        };
        let cmd = match name.as_str() {
            "run" => Cmd::Run,
            "check-config" => Cmd::CheckConfig { offline },
            "scan" => Cmd::Scan { dates, dry_run },
            "status" => Cmd::Status { json },
            "list" => Cmd::List { filter, json },
            "retry" => {
                if failed != positional.is_empty() {
                    return Err(usage_err(
                        "retry: give either --failed or one or more paths",
                    ));
                }
                Cmd::Retry {
                    failed,
                    paths: positional,
                    force,
                }
            }
            "upload-test" => match <[PathBuf; 1]>::try_from(positional) {
                Ok([file]) => Cmd::UploadTest { file },
                Err(_) => return Err(usage_err("upload-test: give exactly one FILE")),
            },
            "check" => Cmd::Check { thresholds },
            "migrate-db" => Cmd::MigrateDb { from },
            other => return Err(usage_err(format!("unknown command '{other}'"))),
        };
        Ok(Parsed::Run(Cli { config, cmd }))
    }

    pub fn execute(self) -> Result<i32> {
        let path = config::resolve_path(self.config.as_deref());
        match self.cmd {
            Cmd::Run => crate::daemon::run(&path),
            Cmd::CheckConfig { offline } => check_config(&path, offline),
            Cmd::Scan { dates, dry_run } => scan(&path, &dates, dry_run),
            Cmd::Status { json } => status(&path, json),
            Cmd::List { filter, json } => list(&path, &filter, json),
            Cmd::Retry {
                failed,
                paths,
                force,
            } => retry(&path, failed, &paths, force),
            Cmd::UploadTest { file } => upload_test(&path, &file),
            Cmd::Check { thresholds } => check(&path, &thresholds),
            Cmd::MigrateDb { from } => migrate_db(&path, from),
        }
    }
}

/// Loads the config and starts logging at its level (or `SEGA_LOG`'s).
pub fn setup(path: &Path, quiet: bool) -> Result<(Config, Clock)> {
    let config = config::load(path)?;
    let clock = Clock::from_env().map_err(Error::Other)?;
    let level = logging::env_level().unwrap_or(config.log.level);
    let level = if quiet {
        level.min(log::LevelFilter::Warn)
    } else {
        level
    };
    logging::init(level, clock.clone());
    Ok((config, clock))
}

// ---------------------------------------------------------------------------------------
// check-config

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

fn line(v: Verdict, what: &str, detail: &str) -> Verdict {
    let tag = match v {
        Verdict::Ok => "ok  ",
        Verdict::Warn => "warn",
        Verdict::Fail => "fail",
    };
    println!("{tag} {what}: {detail}");
    v
}

fn access(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; access() reads it and nothing else.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

fn check_config(path: &Path, offline: bool) -> Result<i32> {
    let config = config::load(path)?;
    let clock = Clock::from_env().map_err(Error::Other)?;
    println!("# {} (effective, secrets redacted)", path.shown());
    println!(
        "{}",
        serde_json::to_string_pretty(&config.redacted_json()).unwrap_or_default()
    );
    println!();
    let mut worst = Verdict::Ok;
    let mut note = |v: Verdict| worst = worst.max(v);

    let root = &config.watch.root;
    if !root.is_dir() {
        note(line(
            Verdict::Warn,
            "root",
            &format!(
                "{} is missing (it may be mounted later; the daemon waits for it)",
                root.shown()
            ),
        ));
    }
    let today = clock.today_local();
    for f in &config.watch.folders {
        let what = format!("folder {} ({})", f.label, f.path.shown());
        if !f.path.exists() {
            note(line(
                Verdict::Warn,
                &what,
                "missing (it may be created or mounted later)",
            ));
            continue;
        }
        if !access(&f.path, libc::R_OK | libc::X_OK) {
            note(line(
                Verdict::Fail,
                &what,
                "not readable by this user: give it read access (group or ACL)",
            ));
            continue;
        }
        let today_dir = f.path.join(layout::format_date(today));
        if today_dir.is_dir() && !access(&today_dir, libc::R_OK | libc::X_OK) {
            note(line(
                Verdict::Fail,
                &what,
                &format!(
                    "today's folder {} is not readable by this user",
                    today_dir.shown()
                ),
            ));
            continue;
        }
        match crate::watch::fs_kind(&f.path) {
            Some(kind) if !kind.gives_events => note(line(
                Verdict::Warn,
                &what,
                &format!("readable, but on {} which gives no inotify events: the minute scan is the detector", kind.name),
            )),
            _ => note(line(Verdict::Ok, &what, "readable")),
        }
    }

    let db = &config.database.path;
    let dir = db.parent().unwrap_or(Path::new("/"));
    if let (Some(url), true) = (&config.database.url, offline) {
        note(line(
            Verdict::Ok,
            "database",
            &format!(
                "PostgreSQL {}: not contacted (--offline)",
                config::redact_db_url(url.expose())
            ),
        ));
    } else if config.database.url.is_some() {
        // A shared ledger: connecting (and migrating, as the daemon would) is the check.
        match store::open(&config, Role::Write) {
            Ok(o) => note(line(
                Verdict::Ok,
                "database",
                &format!("{} reachable", o.ledger.describe()),
            )),
            Err(e) => note(line(Verdict::Fail, "database", &e.to_string())),
        }
    } else if !dir.is_dir() {
        note(line(
            Verdict::Fail,
            "database",
            &format!("directory {} does not exist", dir.shown()),
        ));
    } else if !access(dir, libc::W_OK | libc::X_OK)
        || (db.exists() && !access(db, libc::W_OK | libc::R_OK))
    {
        note(line(
            Verdict::Fail,
            "database",
            &format!("{} is not writable by this user", db.shown()),
        ));
    } else {
        note(line(
            Verdict::Ok,
            "database",
            &format!("{} writable", db.shown()),
        ));
    }

    let needed = 1 + config.watch.folders.len() * (config.watch.lookback_days as usize + 3);
    match std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches").ok().and_then(|s| s.trim().parse::<usize>().ok()) {
        Some(limit) if limit < needed * 2 => note(line(
            Verdict::Warn,
            "inotify",
            &format!("max_user_watches is {limit}, this config needs about {needed}: raise it with sysctl fs.inotify.max_user_watches=524288"),
        )),
        Some(limit) => note(line(Verdict::Ok, "inotify", &format!("max_user_watches {limit}, this config needs about {needed}"))),
        None => note(line(Verdict::Warn, "inotify", "cannot read /proc/sys/fs/inotify/max_user_watches")),
    }

    let ep = &config.upload.url;
    let what = format!("endpoint {}:{}", ep.host, ep.port);
    if offline {
        line(Verdict::Ok, &what, "not checked (--offline)");
    } else {
        note(
            match connect(&ep.host, ep.port, config.upload.connect_timeout) {
                Ok(addr) => line(
                    Verdict::Ok,
                    &what,
                    &format!("accepts TCP connections ({addr})"),
                ),
                Err(e) => line(Verdict::Fail, &what, &e),
            },
        );
    }
    Ok(if worst == Verdict::Fail {
        EXIT_FAILURE
    } else {
        EXIT_OK
    })
}

fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> std::result::Result<std::net::SocketAddr, String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(_) => return Ok(a),
            Err(e) => last = crate::error::describe_io(&e),
        }
    }
    Err(last)
}

// ---------------------------------------------------------------------------------------
// scan

fn scan(path: &Path, dates: &[Date], dry_run: bool) -> Result<i32> {
    let (config, clock) = setup(path, false)?;
    let window = Window::new(clock.today_local(), config.watch.lookback_days);
    let dates: Vec<Date> = if dates.is_empty() {
        window.dates()
    } else {
        dates.to_vec()
    };
    let date_names: Vec<String> = dates.iter().map(|d| layout::format_date(*d)).collect();
    if dry_run {
        return scan_dry_run(&config, &dates);
    }
    let opened = store::open(&config, Role::Scan)?;
    let (store, held_by, _lock) = (opened.ledger, opened.held_by, opened.lock);
    let settings = Arc::new(RequestSettings::new(
        &config,
        upload::resolve_scope(config.database.scope.as_deref()),
    ));
    let workers = config.upload.workers;
    let capacity = workers * 2;
    let gate = Arc::new(upload::Gate::default());
    let (jobs_tx, jobs_rx) = bounded(capacity);
    let mut owner = Owner::new(
        store,
        clock.clone(),
        &config,
        settings,
        jobs_tx,
        jobs_rx.clone(),
        capacity,
        gate.clone(),
        Beat::detached(),
    );

    // Record: the listing goes through the same comparison as the daemon's rescan.
    let (tx, rx) = unbounded::<Input>();
    let summary = scanner::scan_dates(&config.watch.folders, &dates, &config.watch.extensions, &tx);
    drop(tx);
    for input in rx {
        owner.ingest(input);
    }
    let found = summary.map(|s| s.files).unwrap_or(0);
    let recorded = owner.stats.recorded;
    if let Some(holder) = held_by {
        println!(
            "scan: {found} candidate(s) in {} date folder(s), {recorded} newly recorded; the daemon ({holder}) holds the lock and uploads them",
            date_names.len()
        );
        return Ok(EXIT_OK);
    }

    let now_t = clock.now_utc();
    let now = format_ts(now_t);
    let far = format_ts(now_t + crate::db::Policy::new(&config).horizon());
    let newest_first = config.upload.order == config::Order::NewestFirst;
    let reset = owner.store().reset_uploading(None, &now, "interrupted")?;
    if reset > 0 {
        log::warn!("{reset} upload(s) were interrupted by an earlier crash; sending them again");
    }
    let ids = owner
        .store()
        .due_ids(&now, &far, &date_names, newest_first)?;
    let (reports_tx, reports_rx) = unbounded();
    let limiter = config
        .upload
        .max_kib_s
        .map(|k| Arc::new(upload::RateLimiter::new(k * 1024)));
    let pool = Arc::new(crate::health::Workers::new(workers));
    let handles = upload::spawn_workers(
        workers,
        jobs_rx,
        reports_tx,
        limiter,
        gate,
        clock.clone(),
        pool,
    )
    .map_err(|e| Error::Other(format!("starting upload workers: {e}")))?;
    let stats = owner.run_oneshot(ids, &reports_rx)?;
    for h in handles {
        let _ = h.join();
    }
    let mut check = store::open(&config, Role::Read)?.ledger;
    let left = check.count_status_in_dates(&[Status::Pending, Status::Uploading], &date_names)?;
    let failed = check.count_status_in_dates(&[Status::Failed], &date_names)?;
    println!(
        "scan: {found} candidate(s) in {} date folder(s): {recorded} newly recorded, {} uploaded, {} to retry, {} failed, {} skipped; {left} pending, {failed} failed in these dates",
        date_names.len(),
        stats.uploaded,
        stats.retry,
        stats.failed,
        stats.skipped
    );
    Ok(if left + failed > 0 || stats.unsaved > 0 {
        EXIT_FAILURE
    } else {
        EXIT_OK
    })
}

fn scan_dry_run(config: &Config, dates: &[Date]) -> Result<i32> {
    let mut store = if store::exists(config) {
        Some(store::open(config, Role::Read)?.ledger)
    } else {
        None
    };
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for folder in &config.watch.folders {
        for d in dates {
            let name = layout::format_date(*d);
            let Some(entries) = scanner::list_one(
                folder,
                std::ffi::OsStr::new(&name),
                &config.watch.extensions,
            ) else {
                continue;
            };
            for s in entries {
                let what = match (&s.version, &mut store) {
                    (None, _) => format!("ignore ({:?}, never opened)", s.entry),
                    (Some(_), None) => "upload (new)".to_string(),
                    (Some(v), Some(st)) => match st.file_by_path(&s.path)? {
                        None => "upload (new)".to_string(),
                        Some(row) if row.size as u64 != v.size || row.mtime_ns != v.mtime_ns => {
                            format!("upload (new version; was {})", row.status)
                        }
                        Some(row) if row.status == "pending" => "upload (pending)".to_string(),
                        Some(row) => format!("nothing ({})", row.status),
                    },
                };
                println!("{what:<32} {}", display_name(s.path.as_os_str()));
                *counts
                    .entry(what.split(' ').next().unwrap_or("").to_owned())
                    .or_default() += 1;
            }
        }
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "dry run: {}; nothing was changed",
        if parts.is_empty() {
            "no candidates".into()
        } else {
            parts.join(", ")
        }
    );
    Ok(EXIT_OK)
}

// ---------------------------------------------------------------------------------------
// status

/// The daemon's heartbeat is written every 10 s; three missed ones mean it is not alive.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(30);

fn age(clock: &Clock, ts: &str) -> Option<Duration> {
    let t = parse_ts(ts)?;
    (clock.now_utc() - t).try_into().ok()
}

pub fn status_json(config: &Config, clock: &Clock) -> Result<Value> {
    let mut store = store::open(config, Role::Read)?.ledger;
    let now = clock.now_utc();
    let local = clock.now_local();
    let today_start = format_ts(local.replace_time(time::Time::MIDNIGHT));
    let s = store.summary(
        &today_start,
        &format_ts(now - Duration::from_secs(86400)),
        &format_ts(now - Duration::from_secs(3600)),
    )?;
    let state = |k: &str| {
        s.state
            .get(k)
            .map(|(v, _)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let heartbeat = state("heartbeat");
    let shared = config.database.url.is_some();
    let me = store::Identity::from_config(config);
    let this_host = s.hosts.iter().find(|h| h.host == me.host);
    // In a shared ledger the server's clock judges ages: the hosts' clocks may disagree.
    let heartbeat_age = match this_host {
        Some(h) => h.heartbeat_age_secs.map(Duration::from_secs),
        None if shared => None,
        None => heartbeat.as_deref().and_then(|h| age(clock, h)),
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
    for (folder, st, n) in &s.counts {
        let entry = folders.entry(folder.clone()).or_insert_with(|| json!({}));
        entry[st.as_str()] = json!(n);
        let t = totals.get(st).and_then(Value::as_i64).unwrap_or(0);
        totals.insert(st.clone(), json!(t + n));
    }
    let path_at = |p: &Option<crate::store::PathAt>| -> Value {
        match p {
            Some(p) => json!({
                "path": display_name(p.path.as_os_str()),
                "at": p.at,
                "age_secs": age(clock, &p.at).map(|d| d.as_secs()),
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
                state("endpoint_down_since").as_deref().and_then(|t| age(clock, t)).map(|d| d.as_secs())
            } else {
                None
            },
            "last_error": if endpoint_state == "down" { state("endpoint_error") } else { None },
        },
        "folders": folders,
        "totals": totals,
        "uploaded_today": s.uploaded_today,
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

fn status(path: &Path, as_json: bool) -> Result<i32> {
    let (config, clock) = setup(path, true)?;
    let v = status_json(&config, &clock)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    let s = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| "-".into());
    let secs = |v: &Value| match v.as_u64() {
        Some(0) => "<1s".to_string(),
        Some(n) => human_duration(Duration::from_secs(n)),
        None => "-".into(),
    };
    let d = &v["daemon"];
    if d["alive"].as_bool() == Some(true) {
        println!(
            "daemon:    running (pid {}, heartbeat {} ago)",
            s(&d["pid"]),
            secs(&d["heartbeat_age_secs"])
        );
    } else {
        match (d["stopped_at"].as_str(), d["heartbeat_at"].as_str()) {
            (Some(stop), Some(hb)) if stop >= hb => {
                println!("daemon:    NOT RUNNING (stopped cleanly at {stop})")
            }
            (_, Some(hb)) => {
                println!("daemon:    NOT RUNNING (last heartbeat {hb}; it did not stop cleanly)")
            }
            _ => println!("daemon:    NOT RUNNING (never ran on this database)"),
        }
    }
    if let Some(hosts) = v["hosts"].as_array().filter(|h| !h.is_empty()) {
        println!("ledger:    {}", s(&v["database"]));
        println!(
            "  {:<20} {:<12} {:>9} {:>10}  endpoint",
            "host", "state", "heartbeat", "uploading"
        );
        for h in hosts {
            let state = if h["alive"].as_bool() == Some(true) {
                "running"
            } else if crate::check::stopped_cleanly(h) {
                "stopped"
            } else {
                "NOT RUNNING"
            };
            println!(
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
        Some("down") => println!(
            "endpoint:  DOWN since {} ({}) {}",
            s(&e["down_since"]),
            s(&e["last_error"]),
            s(&e["url"])
        ),
        Some(st) => println!("endpoint:  {st} {}", s(&e["url"])),
        None => {}
    }
    if let Some(n) = v["watch"]["unwatched_dirs"].as_u64().filter(|n| *n > 0) {
        println!(
            "watches:   {n} director(ies) scan-only: the inotify watch limit (fs.inotify.max_user_watches) refused them; tried again every scan interval"
        );
    }
    println!();
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "folder", "pending", "uploading", "uploaded", "failed", "skipped"
    );
    let row = |name: &str, m: &Value| {
        let n = |k: &str| m[k].as_i64().unwrap_or(0);
        println!(
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
            row(name, m);
        }
    }
    row("total", &v["totals"]);
    println!();
    println!("uploaded today:  {}", v["uploaded_today"]);
    let pa = |label: &str, p: &Value| {
        if p.is_null() {
            println!("{label:<16} -");
        } else {
            println!(
                "{label:<16} {} ({} ago) {}",
                s(&p["at"]),
                secs(&p["age_secs"]),
                s(&p["path"])
            );
            if let Some(d) = p["detail"].as_str() {
                println!("{:<16} {d}", "");
            }
        }
    };
    pa("oldest pending:", &v["oldest_pending"]);
    pa("last success:", &v["last_success"]);
    pa("last error:", &v["last_error"]);
    if let Some(errs) = v["errors_24h"].as_array().filter(|a| !a.is_empty()) {
        println!("\nerrors in the last 24 h:");
        for e in errs {
            println!(
                "  {:>6}  {}  (e.g. {})",
                e["count"],
                s(&e["cause"]),
                s(&e["example"])
            );
        }
    }
    Ok(EXIT_OK)
}

// ---------------------------------------------------------------------------------------
// check

fn check(path: &Path, thresholds: &crate::check::Thresholds) -> Result<i32> {
    let (config, clock) = match setup(path, true) {
        Ok(x) => x,
        Err(e) => {
            println!("SEGA UNKNOWN - {}", e.to_string().replace('\n', "; "));
            return Ok(crate::check::UNKNOWN);
        }
    };
    match status_json(&config, &clock) {
        Ok(v) => {
            let (code, line) = crate::check::evaluate(&v, thresholds);
            println!("{line}");
            Ok(code)
        }
        Err(e) => {
            println!("SEGA UNKNOWN - {e}");
            Ok(crate::check::UNKNOWN)
        }
    }
}

// ---------------------------------------------------------------------------------------
// list, retry

pub fn row_json(r: &FileRow) -> Value {
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
        "status": r.status,
        "attempts": r.attempts,
        "next_attempt_at": r.next_attempt_at,
        "last_error": r.last_error,
        "detected_at": r.detected_at,
        "uploaded_at": r.uploaded_at,
        "updated_at": r.updated_at,
        "host": r.host,
    })
}

fn list(path: &Path, filter: &ListFilter, as_json: bool) -> Result<i32> {
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

fn retry(path: &Path, failed: bool, paths: &[PathBuf], force: bool) -> Result<i32> {
    let (config, clock) = setup(path, true)?;
    let mut store = store::open(&config, Role::Write)?.ledger;
    let now = format_ts(clock.now_utc());
    if failed {
        let n = store.retry_failed(&now)?;
        println!("re-queued {n} failed file(s)");
        return Ok(EXIT_OK);
    }
    let mut code = EXIT_OK;
    for p in paths {
        let abs = if p.is_absolute() {
            p.clone()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("reading", Path::new("."), e))?
                .join(p)
        };
        match store.retry_path(&abs, force, &now)? {
            None => {
                println!(
                    "not recorded: {} (a scan records it)",
                    display_name(abs.as_os_str())
                );
                code = EXIT_FAILURE;
            }
            Some(st) if (st == "uploaded" || st == "skipped") && !force => {
                println!(
                    "{st}, not re-queued (use --force to send it again): {}",
                    display_name(abs.as_os_str())
                );
                code = EXIT_FAILURE;
            }
            Some(st) if st == "uploading" => {
                println!(
                    "being uploaded right now, not re-queued: {}",
                    display_name(abs.as_os_str())
                );
            }
            Some(st) => println!("re-queued (was {st}): {}", display_name(abs.as_os_str())),
        }
    }
    Ok(code)
}

// ---------------------------------------------------------------------------------------
// migrate-db

/// Rows carried per transaction: big enough to be quick, small enough that an interrupted
/// copy loses little (a second run skips what is already there).
const MIGRATE_CHUNK: usize = 1000;

fn migrate_db(path: &Path, from: Option<PathBuf>) -> Result<i32> {
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

// ---------------------------------------------------------------------------------------
// upload-test

fn upload_test(path: &Path, file: &Path) -> Result<i32> {
    let (config, _clock) = setup(path, false)?;
    let abs = std::fs::canonicalize(file.parent().unwrap_or(Path::new(".")))
        .map(|d| d.join(file.file_name().unwrap_or_default()))
        .map_err(|e| Error::io("resolving", file, e))?;
    let (f, meta) =
        layout::open_regular(&abs).map_err(|e| Error::Other(format!("{}: {e}", abs.shown())))?;
    let version = layout::Version::of(&meta);
    let refs: Vec<FolderRef> = config
        .watch
        .folders
        .iter()
        .map(|f| FolderRef {
            label: &f.label,
            dir: &f.path,
        })
        .collect();
    let (folder, date) = match layout::locate(&refs, &abs) {
        Some(loc) => (loc.folder, loc.date_dir),
        None => {
            let parent = abs
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            println!("note: {} is outside the watched folders; sending folder \"\" and date \"{parent}\"", abs.shown());
            (String::new(), parent)
        }
    };
    let name = abs.file_name().unwrap_or_default().to_owned();
    let kind = layout::kind_of(&name);
    if let Ok(c) = layout::check_content(&f, version.size, kind) {
        if c != layout::Content::Image {
            println!("note: the daemon would not send this file as it is ({c:?})");
        }
    }
    let settings = RequestSettings::new(
        &config,
        upload::resolve_scope(config.database.scope.as_deref()),
    );
    let claimed = Claimed {
        id: 0,
        path: abs.clone(),
        folder,
        date,
        filename: name.clone(),
        version,
        attempt: 1,
        incomplete_since: None,
    };
    println!("POST {}", config.upload.url.redacted());
    println!(
        "Idempotency-Key: {}",
        upload::idempotency_key(
            &settings.scope,
            &claimed.folder,
            &claimed.date,
            name.as_bytes(),
            version
        )
    );
    println!(
        "file: {} ({} bytes, {})",
        display_name(abs.as_os_str()),
        version.size,
        layout::content_type(kind)
    );
    let t0 = std::time::Instant::now();
    let outcome = upload::send(&settings, &claimed, kind, f, version.size, None);
    let took = t0.elapsed();
    match outcome {
        Outcome::Answered(r) => {
            println!(
                "\nHTTP {} ({} ms, {:?})",
                r.status,
                took.as_millis(),
                upload::classify_status(r.status)
            );
            for (k, v) in &r.headers {
                println!("{k}: {v}");
            }
            println!("\n{}", r.body);
            if let Some(e) = r.body_error {
                println!("(body cut short: {e})");
            }
            Ok(
                if upload::classify_status(r.status) == upload::Class::Success {
                    EXIT_OK
                } else {
                    EXIT_FAILURE
                },
            )
        }
        Outcome::Transport(e) => {
            println!("\nno answer after {} ms: {e}", took.as_millis());
            Ok(EXIT_FAILURE)
        }
        other => {
            println!("\nnot sent: {other:?}");
            Ok(EXIT_FAILURE)
        }
    }
}
