//! `scan --dry-run`: what a scan would do with each candidate, by the rules the real scan
//! applies, and nothing changed (the ledger opened read-only, no lock taken, no request).
//!
//! The rules, in the order the real scan meets them: the listing's shape, name and type
//! rules (`scanner::list_one`: a symlink, FIFO or device is never opened); the ledger's
//! view (new, a new version, or a row already finished); whether the row is due now (a file
//! found by a scan settles for `watch.settle_secs`; a retry waits for its time); the
//! owner's check of the row against the config (`Policy::target`); and the worker's checks
//! with the file open (`upload::check_file`: opened beneath its folder with no link
//! followed and no blocking on a FIFO, then the magic bytes and the end marker). Only the
//! request itself is not made. Known gaps: a file still incomplete is shown waiting even
//! when its wait (`incomplete_max_wait_secs`) is over, since the ledger's rows as read
//! here do not say since when; and on a PostgreSQL ledger a running daemon is not noticed.

use std::collections::BTreeMap;

use time::{Date, OffsetDateTime};

use super::super::progress::Verbosity;
use crate::cli::out::outln;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Result, EXIT_OK};
use crate::layout::{self, display_name, EntryType, Refusal, Seen};
use crate::owner::judge::settle_time;
use crate::owner::Policy;
use crate::scanner;
use crate::store::{self, Claimed, FileRow, Ledger, Role, Status};
use crate::timestamp::Timestamp;
use crate::upload;
use crate::work::Outcome;

/// What the scan would do with one candidate: the word counted in the summary, and why.
#[derive(Debug, PartialEq, Eq)]
struct Prediction {
    action: &'static str,
    why: String,
}

fn says(action: &'static str, why: impl Into<String>) -> Prediction {
    Prediction {
        action,
        why: why.into(),
    }
}

/// The fixed parts of the judgement: the config's rules, the clock, the ledger.
struct Judge<'a> {
    config: &'a Config,
    policy: Policy,
    now: OffsetDateTime,
    far: OffsetDateTime,
    store: Option<Box<dyn Ledger>>,
}

pub(super) fn dry_run(
    config: &Config,
    clock: &Clock,
    dates: &[Date],
    verbosity: Verbosity,
) -> Result<i32> {
    let store = if store::exists(config) {
        Some(store::open(config, Role::Read)?.ledger)
    } else {
        None
    };
    let policy = Policy::new(config);
    let now = clock.now_utc();
    let mut judge = Judge {
        config,
        far: now + policy.horizon(),
        policy,
        now,
        store,
    };
    // A daemon holding the SQLite ledger's lock: the real scan would only record.
    let daemon = match config.database.url {
        None => crate::lock::holder(&config.database.path),
        Some(_) => None,
    };
    let quiet = verbosity == Verbosity::Quiet;
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
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
                let p = judge.predict(&s)?;
                if !quiet {
                    let what = format!("{} ({})", p.action, p.why);
                    outln!("{what:<32} {}", display_name(s.path.as_os_str()));
                }
                *counts.entry(p.action).or_default() += 1;
            }
        }
    }
    if !quiet {
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let mut line = format!(
            "dry run: {}; nothing was changed",
            if parts.is_empty() {
                "no candidates".into()
            } else {
                parts.join(", ")
            }
        );
        if let Some(pid) = daemon {
            line += &format!(
                " (the daemon, pid {pid}, holds the lock: a scan now would only record, and the daemon would upload)"
            );
        }
        outln!("{line}");
    }
    Ok(EXIT_OK)
}

impl Judge<'_> {
    fn predict(&mut self, s: &Seen) -> Result<Prediction> {
        let Some(version) = s.version.filter(|_| s.entry == EntryType::Regular) else {
            return Ok(says("ignore", format!("{}, never opened", s.entry)));
        };
        let row = match self.store.as_mut() {
            Some(st) => st.file_by_path(&s.path)?,
            None => None,
        };
        let same = |r: &FileRow| r.size as u64 == version.size && r.mtime_ns == version.mtime_ns;
        let (label, due_at) = match &row {
            None => ("new".to_string(), self.settled(version.mtime_ns)),
            Some(r) if !same(r) => (
                format!("new version; was {}", r.status),
                self.settled(version.mtime_ns),
            ),
            Some(r) => match &r.status {
                Status::Pending => ("pending".to_string(), r.next_attempt_at.map(|t| t.utc())),
                // Left by a crash: the real scan puts it back to pending, due now.
                Status::Uploading => ("interrupted".to_string(), None),
                st => return Ok(says("nothing", st.as_str())),
            },
        };
        if let Some(at) = due_at.filter(|&at| at > self.now && at <= self.far) {
            let wait = std::time::Duration::try_from(at - self.now).unwrap_or_default();
            return Ok(says(
                "wait",
                format!("{label}; due in {}", crate::clock::human_duration(wait)),
            ));
        }
        Ok(self.checked(s, version, label))
    }

    /// When a file found by a scan with this mtime is due (`watch.settle_secs`).
    fn settled(&self, mtime_ns: i64) -> Option<OffsetDateTime> {
        Some(settle_time(self.now, mtime_ns, self.policy.settle))
    }

    /// The owner's check of the row, then the worker's with the file open.
    fn checked(&self, s: &Seen, version: layout::Version, label: String) -> Prediction {
        let claimed = Claimed {
            id: 0,
            path: s.path.clone(),
            folder: s.location.folder.clone(),
            date: s.location.date_dir.clone(),
            filename: s.location.name.clone(),
            version,
            attempt: 1,
            incomplete_since: None,
        };
        let target = match self.policy.target(&claimed) {
            Ok(t) => t,
            Err(r @ Refusal::Hostile(_)) => return says("fail", r.to_string()),
            Err(r @ Refusal::OutOfScope(_)) => return says("skip", r.to_string()),
        };
        let checked = upload::check_file(
            &target,
            version,
            None::<Timestamp>,
            self.config.watch.incomplete_max_wait,
            self.now,
        );
        match checked {
            Ok(_) => says("upload", label),
            Err(outcome) => match outcome {
                Outcome::NotAnImage => says("skip", "not an image"),
                Outcome::Vanished => says("skip", "vanished before upload"),
                Outcome::NotRegular(t) => says("skip", format!("not a regular file ({t})")),
                Outcome::NotBeneath(why) => says("skip", why),
                Outcome::Incomplete { .. } => says("wait", "no end-of-image marker yet"),
                Outcome::Unavailable(why) => says("wait", format!("unreadable for now: {why}")),
                Outcome::Unreadable(e) => says("retry", format!("cannot read the file: {e}")),
                Outcome::Changed { .. } => says("wait", "changed while being checked"),
                // Never what check_file returns: those come from a request.
                Outcome::Answered(_)
                | Outcome::Transport(_)
                | Outcome::NotStarted
                | Outcome::Shrank => says("upload", label),
            },
        }
    }
}
