//! The command line: parsing it, the usage text, and the dispatch to the subcommands, one
//! file each (`run` is the daemon, in `daemon`). Each command is a short function over the
//! shared parts (config, layout, store, upload, the owner); `setup` loads the config and
//! starts logging the same way for all of them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::clock::Clock;
use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::layout;
use crate::logging;
use crate::store::{ListFilter, Status};
use dates::{DateArg, ScanDates};
pub use progress::Verbosity;

mod answer;
mod check_config;
mod dates;
mod list;
mod migrate_db;
pub mod out;
mod progress;
mod retry;
mod scan;
mod show;
pub mod sigpipe;
mod status;
mod upload_test;

const USAGE: &str = "\
Usage: sega-uploader [-c FILE] <COMMAND> [OPTIONS]

Watches <root>/<folder>/<YYYY-MM-DD>/ for new images and uploads each one once.

Commands:
  run            the daemon, in the foreground (systemd Type=notify)
  check-config   validate the config, print it (secrets redacted), check the environment
  scan           one pass: record, one attempt per due file, exit (cron, backfill)
  status         counts per folder and status, endpoint state, daemon alive
  list           list recorded files
  show           one file: its row and every stored attempt with the endpoint's answer
  retry          re-queue failed files or given paths
  upload-test    upload one file now: print what is sent and the full response
  check          Nagios/Icinga plugin: OK/WARNING/CRITICAL from the database and heartbeat
  migrate-db     copy an SQLite ledger into the PostgreSQL one at database.url

Options:
  -c, --config FILE   config file (default: $SEGA_CONFIG, else /etc/sega/config.json)
  -h, --help          this help; `sega-uploader COMMAND --help` for a command's options
  -V, --version       print the version

Exit codes: 0 success, 1 runtime failure, 64 usage error, 66 no such file recorded (show),
78 configuration error.";

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
        dates: ScanDates,
        dry_run: bool,
        verbosity: Verbosity,
    },
    Status {
        json: bool,
    },
    List {
        filter: ListFilter,
        /// `--date`, resolved when the command runs (`today`, `yesterday`).
        date: Option<DateArg>,
        json: bool,
        verbose: bool,
    },
    Show {
        target: show::Target,
        json: bool,
        full: bool,
    },
    Retry {
        failed: bool,
        paths: Vec<PathBuf>,
        force: bool,
    },
    UploadTest {
        file: PathBuf,
        force: bool,
    },
    Check {
        thresholds: crate::check::Thresholds,
        timeout: std::time::Duration,
    },
    MigrateDb {
        from: Option<PathBuf>,
        verbosity: Verbosity,
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
            "scan [--date D]... | [--since D [--until D]] [--dry-run] [-q | -v]",
            "One pass: records every image of the date folders in the window (or the given dates),\nmakes one upload attempt per due file, and exits. If the daemon is running, only records.\nA date is YYYY-MM-DD, today or yesterday (the host's local date).\nOn a terminal a progress line; at the end one summary line.\nExit 1 if any file of the scanned dates is left pending or failed.",
            "      --date D        scan this date folder (repeatable; default: the date window)\n      --since D       scan every date folder from D ...\n      --until D       ... to D, both included (default: today)\n      --dry-run       print what it would do, change nothing\n  -q, --quiet         print errors only (no progress, no summary)\n  -v, --verbose       a log line per file (uploaded, retrying), as the daemon logs them\n",
        ),
        "status" => ("status [--json]", "Counts per folder and status, uploaded today, oldest pending, last success and error,\nerrors of the last 24 h by cause, endpoint state, and whether the daemon is alive.", "      --json          a stable JSON document instead of the table\n"),
        "list" => (
            "list [--status S] [--folder F] [--date D] [--limit N] [-v] [--json]",
            "Lists recorded files, newest date first, each with its last change in local time\n(with its offset) and its last error. JSON times are UTC.",
            "      --status S      pending, uploading, uploaded, failed or skipped\n      --folder F      a folder label (Sega_1)\n      --date D        a date folder (YYYY-MM-DD, today or yesterday)\n      --limit N       at most N rows (default 100; 0 for all)\n  -v, --verbose       also each file's latest answer in one line (`show` has them all)\n      --json          JSON lines instead of the table\n",
        ),
        "show" => (
            "show ID|PATH [--full] [--json]",
            "Shows one recorded file: every column of its row, then every stored attempt (time,\n\
             duration, HTTP status, error) with the endpoint's answer as stored, pretty-printed\n\
             when it is JSON. ID is the row's id (`list --json`); PATH is absolute, or relative to\n\
             watch.root (Sega_1/2026-11-26/IMG_0001.jpg), or to the current directory. Times are\n\
             local with their offset; with --json, UTC. Exit 66 if no such file is recorded.",
            "      --full          every answer whole (without it, long answers are cut with a note)\n      --json          one JSON object (the row as `list --json` has it, and `results`)\n",
        ),
        "retry" => (
            "retry (--failed | PATH...) [--force]",
            "Re-queues files; a running daemon picks them up within seconds.",
            "      --failed        every file marked failed\n      --force         also files already uploaded (or skipped)\n",
        ),
        "upload-test" => (
            "upload-test FILE [--force]",
            "Uploads one file now with the configured request: prints what it sends (the headers,\n\
             secrets redacted, and the form fields), then the answer's status, headers and body.\n\
             The database is not touched. Exit 0 on a 2xx answer, else 1. A file outside the\n\
             watched folders is refused (exit 64): the daemon would never send it.",
            "      --force         send a file from outside the watched folders anyway (folder \"\",\n                      date = its directory's name)\n",
        ),
        "migrate-db" => (
            "migrate-db [--from SQLITE_FILE] [-q]",
            "Copies an SQLite ledger (default: database.path) into the PostgreSQL ledger at\n\
             database.url, under this host's scope: every file row with its status and its latest\n\
             results, so nothing already uploaded is sent again. Rows already in PostgreSQL are\n\
             left alone, so it may be run again. Stop the daemon first; the SQLite file is only read.",
            "      --from FILE     the SQLite database to copy (default: database.path)\n  -q, --quiet         print errors only (no progress, no summary)\n",
        ),
        "check" => (
            "check [-t SECS] [--warn-…/--crit-… thresholds]",
            "A Nagios/Icinga plugin: one line, perfdata after '|' (U: not known; c: a counter).\nExit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also for usage and configuration errors,\nand a database that does not answer in time). A level is reached at or above its\nthreshold; a --warn-… above its --crit-… is a usage error.",
            crate::check::FLAGS,
        ),
        _ => return USAGE.to_string(),
    };
    format!("Usage: sega-uploader {usage} [-c FILE]\n\n{about}\n\nOptions:\n{opts}{COMMON}")
}

fn usage_err(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
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
        let (mut verbose, mut full) = (false, false);
        let mut dates = Vec::new();
        let (mut since, mut until, mut list_date) = (None, None, None);
        let mut verbosity = Verbosity::Normal;
        let mut filter = ListFilter {
            limit: Some(100),
            ..ListFilter::default()
        };
        let mut positional: Vec<PathBuf> = Vec::new();
        let mut thresholds = crate::check::Thresholds::default();
        let mut timeout = crate::check::DEFAULT_TIMEOUT;
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
                Long("date") if cmd == "scan" => dates.push(DateArg::parse(
                    "--date",
                    &p.value().map_err(bad)?.string().map_err(bad)?,
                )?),
                Long("since") if cmd == "scan" => {
                    let v = p.value().map_err(bad)?.string().map_err(bad)?;
                    since = Some(DateArg::parse("--since", &v)?);
                }
                Long("until") if cmd == "scan" => {
                    let v = p.value().map_err(bad)?.string().map_err(bad)?;
                    until = Some(DateArg::parse("--until", &v)?);
                }
                Short('q') | Long("quiet") if cmd == "scan" || cmd == "migrate-db" => {
                    verbosity = Verbosity::Quiet
                }
                Short('v') | Long("verbose") if cmd == "scan" => verbosity = Verbosity::Verbose,
                Long("json") if cmd == "status" || cmd == "list" || cmd == "show" => json = true,
                Short('v') | Long("verbose") if cmd == "list" => verbose = true,
                Long("full") if cmd == "show" => full = true,
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
                    list_date = Some(DateArg::parse("--date", &v)?);
                }
                Long("limit") if cmd == "list" => {
                    let n: i64 = p.value().map_err(bad)?.parse().map_err(bad)?;
                    filter.limit = if n <= 0 { None } else { Some(n) };
                }
                Long("failed") if cmd == "retry" => failed = true,
                Long("force") if cmd == "retry" || cmd == "upload-test" => force = true,
                Long("from") if cmd == "migrate-db" => {
                    from = Some(PathBuf::from(p.value().map_err(bad)?))
                }
                Short('t') | Long("timeout") if cmd == "check" => {
                    let v = p.value().map_err(bad)?.string().map_err(bad)?;
                    timeout = crate::check::parse_timeout(&v).map_err(usage_err)?;
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
                Value(v) if cmd == "retry" || cmd == "upload-test" || cmd == "show" => {
                    positional.push(PathBuf::from(v))
                }
                other => return Err(usage_err(other.unexpected().to_string())),
            }
        }
        let Some(name) = command else {
            return Ok(Parsed::Help(USAGE.to_string()));
        };
        let cmd = match name.as_str() {
            "run" => Cmd::Run,
            "check-config" => Cmd::CheckConfig { offline },
            "scan" => Cmd::Scan {
                dates: ScanDates::from_flags(dates, since, until)?,
                dry_run,
                verbosity,
            },
            "status" => Cmd::Status { json },
            "list" => Cmd::List {
                filter,
                date: list_date,
                json,
                verbose,
            },
            "show" => match <[PathBuf; 1]>::try_from(positional) {
                Ok([target]) => Cmd::Show {
                    target: show::Target(target),
                    json,
                    full,
                },
                Err(_) => return Err(usage_err("show: give exactly one ID or PATH")),
            },
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
                Ok([file]) => Cmd::UploadTest { file, force },
                Err(_) => return Err(usage_err("upload-test: give exactly one FILE")),
            },
            "check" => {
                thresholds.validate().map_err(usage_err)?;
                Cmd::Check {
                    thresholds,
                    timeout,
                }
            }
            "migrate-db" => Cmd::MigrateDb { from, verbosity },
            other => return Err(usage_err(format!("unknown command '{other}'"))),
        };
        Ok(Parsed::Run(Cli { config, cmd }))
    }

    /// `run`: the daemon, which keeps SIGPIPE ignored (see `sigpipe`).
    pub fn is_daemon(&self) -> bool {
        matches!(self.cmd, Cmd::Run)
    }

    /// `check`: the Nagios plugin, whose every failure is UNKNOWN.
    pub fn is_check(&self) -> bool {
        matches!(self.cmd, Cmd::Check { .. })
    }

    pub fn execute(self) -> Result<i32> {
        let path = config::resolve_path(self.config.as_deref());
        match self.cmd {
            Cmd::Run => {
                let (config, clock) = setup(&path, false)?;
                crate::daemon::run(&path, config, clock)
            }
            Cmd::CheckConfig { offline } => check_config::check_config(&path, offline),
            Cmd::Scan {
                dates,
                dry_run,
                verbosity,
            } => scan::scan(&path, &dates, dry_run, verbosity),
            Cmd::Status { json } => status::status(&path, json),
            Cmd::List {
                mut filter,
                date,
                json,
                verbose,
            } => {
                if let Some(d) = date {
                    let today = Clock::from_env().map_err(Error::Other)?.today_local();
                    filter.date = Some(layout::format_date(d.on(today)));
                }
                list::list(&path, &filter, json, verbose)
            }
            Cmd::Show { target, json, full } => show::show(&path, &target, json, full),
            Cmd::Retry {
                failed,
                paths,
                force,
            } => retry::retry(&path, failed, &paths, force),
            Cmd::UploadTest { file, force } => upload_test::upload_test(&path, &file, force),
            Cmd::Check {
                thresholds,
                timeout,
            } => status::check(&path, &thresholds, timeout),
            Cmd::MigrateDb { from, verbosity } => migrate_db::migrate_db(&path, from, verbosity),
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
