//! The logger: one line per event, to stderr and optionally to `log.file`.
//!
//! Under journald (`JOURNAL_STREAM` set) each stderr line starts with a `<N>` syslog
//! priority and carries no timestamp (journald adds its own); elsewhere a local timestamp and
//! the level. The file, when configured, always gets timestamps. `set_file` opens it again on
//! SIGHUP (the reload), so logrotate can move the file away. Each line is written with a
//! single `write_all` so lines from different threads never interleave.
//!
//! A command working on a terminal (`scan`, `migrate-db`) may keep one live line at the
//! bottom of stderr ([`live_line`]): a log line is written above it (the live line cleared,
//! the log line, the live line again, in one write), so the two never garble each other.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::clock::Clock;

struct Logger {
    journald: bool,
    clock: Clock,
    file: Mutex<Option<(PathBuf, File)>>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// The live line on stderr, if one is shown; its lock also orders every write to stderr.
static LIVE: Mutex<Option<String>> = Mutex::new(None);

/// Erases the terminal's current line: back to its start, clear to its end.
const ERASE: &str = "\r\x1b[K";

/// Shows `line` as the live line on stderr (a terminal: the caller checks), replacing the
/// one shown; `None` erases it and leaves the cursor at the start of an empty line. Writes
/// to a stderr that cannot take them are dropped, like log lines.
pub fn live_line(line: Option<&str>) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let text = match line {
        Some(l) => format!("{ERASE}{l}"),
        None if live.is_some() => ERASE.to_owned(),
        None => return,
    };
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
    *live = line.map(str::to_owned);
}

/// Installs the logger once per process. Later calls only change the level.
pub fn init(level: LevelFilter, clock: Clock) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let logger = LOGGER.get_or_init(|| Logger {
        journald,
        clock,
        file: Mutex::new(None),
    });
    // set_logger fails only when a logger is already installed: ours, so nothing to do.
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}

pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Opens (or re-opens, after logrotate) the log file; `None` stops file logging.
pub fn set_file(path: Option<&Path>) -> std::io::Result<()> {
    let Some(logger) = LOGGER.get() else {
        return Ok(());
    };
    let opened = match path {
        // Never waiting, and only a regular file: a FIFO there with no reader blocked the
        // open for ever, so the daemon never got to READY (or a reload never ended),
        // without a word (review of 2026-12-04).
        Some(p) => Some((
            p.to_path_buf(),
            crate::layout::open_own_file(p, OpenOptions::new().create(true).append(true))?,
        )),
        None => None,
    };
    *logger.file.lock().unwrap_or_else(|e| e.into_inner()) = opened;
    Ok(())
}

/// The level named by `SEGA_LOG`, when set and valid.
pub fn env_level() -> Option<LevelFilter> {
    std::env::var("SEGA_LOG")
        .ok()
        .and_then(|v| crate::config::parse_level(&v))
}

fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Logger {
    fn timestamp(&self) -> String {
        crate::clock::format_local(self.clock.now_local())
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // The HTTP client's own chatter ("POST /hook/<token> HTTP/1.1", "trying to connect
        // to …") names the webhook's path, which is a secret as a whole: only its warnings
        // and errors get through.
        if metadata.target().starts_with("attohttpc") && metadata.level() > log::Level::Warn {
            return false;
        }
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = record.level();
        let stamped = format!("{} {:<5} {}\n", self.timestamp(), level, record.args());
        let line = if self.journald {
            format!("<{}>{}\n", syslog_priority(level), record.args())
        } else {
            stamped.clone()
        };
        // A full or closed stderr must not take the daemon down: the line is lost, the
        // upload is not.
        {
            let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
            let out = match live.as_deref() {
                Some(l) => format!("{ERASE}{line}{l}"),
                None => line,
            };
            let _ = std::io::stderr().lock().write_all(out.as_bytes());
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, f)) = file.as_mut() {
            let _ = f.write_all(stamped.as_bytes());
        }
    }

    fn flush(&self) {}
}
