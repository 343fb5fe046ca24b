//! The DB owner: the one thread that writes the database (on PostgreSQL, results also
//! through the thread it hands them to, `committer`), and the scheduler of all uploads.
//!
//! Everything that changes state sends it a message: the watcher and the scanner send what
//! they saw (`Input`), the upload workers send `Report`s, the supervisor sends `Control`.
//! The database is the queue: pending work lives in rows, and the owner claims only as many
//! as fit in the job channel, so a backlog of a million files costs disk, not memory.
//!
//! Each claimed row is checked against the file rules and the config in force before a
//! worker may open it (`layout::target`); what a worker reports is turned into the row's
//! next state by `judge`, and into the endpoint's health by `endpoint` (outage, probes,
//! Retry-After pauses). The owner sleeps until the next real event: a report, an input, a
//! due row, the next probe or the end of a pause, the heartbeat.
//!
//! It stops on `Control::Shutdown`: no new claims, unstarted jobs go back to `pending`, the
//! job channel closes (workers finish their request and end), results are saved as they
//! come until the grace runs out, then whatever is still in flight is marked `pending`.
//!
//! This file holds the owner's state, its loops and its shutdown; the rest is one file per
//! kind of work: `ingest` (what the watcher and the scanner send), `dispatch` (claims into
//! jobs), `reports` (what the workers send back), `turn` (what a busy turn writes, as one
//! transaction), `housekeeping` (heartbeat, metrics, prune), `policy` (the knobs from the
//! config), and the pure decisions `judge` and `endpoint`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use time::OffsetDateTime;

use crate::alerts::{Alerts, Event as AlertEvent};
use crate::clock::{human_duration, Clock};
use crate::config::Config;
use crate::error::Result;
use crate::health::Beat;
use crate::layout::Seen;
use crate::live::Live;
use crate::metrics;
use crate::store::{Claimed, Completion, Ledger};
use crate::timestamp::Timestamp;
use crate::upload::{Gate, Job, Report, RequestSettings};
use crate::work::Observation;

mod committer;
mod dispatch;
mod endpoint;
mod housekeeping;
mod ingest;
pub mod judge;
mod policy;
mod reports;
#[cfg(test)]
mod tests;
mod turn;

pub use committer::Committer;
use endpoint::Endpoint;
use housekeeping::WallClock;
pub use policy::Policy;
use policy::Rng;

/// What the watcher and the scanner tell the owner.
#[derive(Debug)]
pub enum Input {
    /// Files reported by inotify (complete now) or otherwise already judged new.
    Observed(Vec<Observation>),
    /// A scan is about to list one date folder (sent before its first `lstat`): what the
    /// ledger records of that folder from now on is at least as new as the listing that
    /// follows, which must not set it back (see `known_among`).
    ListingStarted { folder: String, date: String },
    /// One date folder's listing from a scan: the owner compares it with the database.
    Listing {
        folder: String,
        date: String,
        entries: Vec<Seen>,
    },
    /// A permission change on a file: re-check a pending one now.
    Attrib(std::path::PathBuf),
    /// A full rescan finished (for status and metrics).
    ScanFinished { files: usize, took: Duration },
}

/// What the supervisor tells the owner.
#[derive(Debug)]
pub enum Control {
    Shutdown { grace: Duration },
    Reload(Box<Config>, Arc<RequestSettings>),
}

/// How long the daemon holds a new file seen by inotify, or an upload's result, before it
/// commits it with what came meanwhile (a group commit). Each commit writes every page it
/// touched to the WAL (a row and its index entries, a result and its index entries, the
/// counter rows: 10 pages or more for one result, 20 for eight), so at a busy time one
/// commit per file and per report was most of the database's work. What a crash takes
/// with it costs nothing new: a file not yet recorded is found by the catch-up scan of the
/// next start, and a result not yet saved leaves its row `uploading`, so that file is sent
/// again with the same Idempotency-Key, as any upload a crash interrupts.
const GROUP_COMMIT: Duration = Duration::from_millis(5);

/// What is held for a group commit is committed at once when this many files or results
/// are waiting.
const GROUP_COMMIT_MAX: usize = 256;

/// How long a one-shot `scan` keeps trying to save its results while the database is
/// locked or failing, before it gives up (exit 1; those files are sent again next time).
const ONESHOT_SAVE_FOR: Duration = Duration::from_secs(60);

/// One-shot (scan) or daemon.
#[derive(Debug)]
enum Mode {
    Daemon,
    /// Work through these row ids once each; stop when done (or the endpoint is down).
    Oneshot {
        queue: std::collections::VecDeque<i64>,
    },
}

pub struct Owner {
    store: Box<dyn Ledger>,
    /// Saves results on a second connection while this thread goes on (PostgreSQL only);
    /// without it, results are committed here.
    committer: Option<Committer>,
    clock: Clock,
    policy: Policy,
    settings: Arc<RequestSettings>,
    jobs_tx: Option<Sender<Job>>,
    /// A clone of the workers' receiver, to take back unstarted jobs (outage, shutdown).
    jobs_rx: Receiver<Job>,
    capacity: usize,
    /// The upload threads, spawned once at start (`upload.workers`; a reload that changes
    /// it takes effect at the next start).
    workers: usize,
    gate: Arc<Gate>,
    in_flight: HashMap<i64, Claimed>,
    /// The one job sent alone while the endpoint is failing (a probe, or a solo attempt
    /// after an endpoint error). Only it holds the next one back: a worker stuck on a hung
    /// mount must not stop the others.
    solo_in_flight: Option<i64>,
    endpoint: Endpoint,
    rng: Rng,
    mode: Mode,
    /// Set when something may have become due; cleared when a claim comes back short.
    maybe_due: bool,
    next_due: Option<OffsetDateTime>,
    /// Completions not yet committed: held for the group commit, or kept through
    /// database trouble.
    unsaved: Vec<Completion>,
    /// Results whose commit failed are among those not yet committed (in `unsaved`, or out
    /// on the committer). That commit may have taken effect all the same (its answer lost
    /// after COMMIT), leaving rows `pending` already: no claim until they are committed,
    /// or such a row, claimed again, would get the old result on top of its new claim and
    /// be sent again while its job is out.
    unsure: bool,
    /// New files seen by inotify, held for the group commit (`ingest`).
    unrecorded: Vec<Observation>,
    /// New rows written claimed at their record (`Ledger::record_claiming`), for the next
    /// `dispatch` to hand out; given back with the queued jobs (`take_back_queued`).
    claimed_ahead: Vec<Claimed>,
    /// Claimed rows whose return to `pending` the database refused (`unclaim`), tried
    /// again before the next claim.
    not_given_back: Vec<i64>,
    /// When the oldest thing held for the group commit came; `None` when nothing is held
    /// for it (completions kept through database trouble are `housekeeping`'s).
    held_since: Option<Instant>,
    db_trouble: Option<Instant>,
    /// A database call failed since the last look: a claim (or a record that claims) whose
    /// answer was lost may have taken effect all the same, leaving rows `uploading` that no
    /// job stands for. Looked at once the database answers again (`housekeeping`).
    claims_unsure: bool,
    /// No look for them before this (the last one failed).
    claims_check_at: Option<Instant>,
    warned_hostile: HashSet<std::path::PathBuf>,
    last_heartbeat: Option<Instant>,
    last_prune_day: Option<time::Date>,
    wall: WallClock,
    beat: Beat,
    pub stats: Stats,
    live: Arc<Live>,
    alerts: Alerts,
    metrics_path: Option<PathBuf>,
    counters: metrics::Counters,
    /// Uploads since local midnight of this date (seeded from the database at start).
    uploaded_today: (Option<time::Date>, i64),
    last_scan: Option<(OffsetDateTime, Duration)>,
    /// When each date folder's listing under way began, by the owner's clock, as its
    /// `ListingStarted` came: (folder, date) → then. Taken by its `Listing`.
    listings: HashMap<(String, String), Timestamp>,
    /// The level of the judge's INFO lines about one file ("uploaded …", "retrying in …"):
    /// INFO in the daemon, DEBUG for a `scan` that prints one summary line instead.
    file_lines: log::Level,
    /// A damaged database file: the daemon stops (exit 1) rather than loop on it.
    fatal: Option<crate::error::Error>,
    /// Asks the ticker for a full rescan (what could not be recorded during database
    /// trouble is found again at once when it ends, not at the next minute tick).
    rescan: Option<Sender<&'static str>>,
    /// Directories the watch limit keeps unwatched, as last written to the state rows.
    unwatched_written: Option<usize>,
    /// The last rescan asked for after database trouble: at most one each 10 s, so a read
    /// that fails on the same rows again cannot turn trouble and recovery into a loop.
    recovery_rescan: Option<Instant>,
}

/// Counters for the one-shot summary and the daemon's status line.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub uploaded: usize,
    pub retry: usize,
    pub failed: usize,
    pub skipped: usize,
    pub not_ready: usize,
    pub recorded: usize,
    /// Results the one-shot scan could not save (the database stayed locked or failing).
    pub unsaved: usize,
}

pub struct Channels {
    pub inputs: Receiver<Input>,
    pub reports: Receiver<Report>,
    pub control: Receiver<Control>,
}

/// The daemon's extras: its watchdog beat, what it publishes (STATUS), whom it alerts, where
/// metrics go, and whom it asks for a rescan. A one-shot scan has none (`Outlets::none`).
pub struct Outlets {
    pub beat: Beat,
    pub live: Arc<Live>,
    pub alerts: Alerts,
    pub metrics_path: Option<PathBuf>,
    pub rescan: Option<Sender<&'static str>>,
    /// The daemon on a PostgreSQL ledger: results saved on a connection of their own.
    pub committer: Option<Committer>,
}

impl Outlets {
    pub fn none() -> Outlets {
        Outlets {
            beat: Beat::detached(),
            live: Arc::new(Live::default()),
            alerts: Alerts::disabled(),
            metrics_path: None,
            rescan: None,
            committer: None,
        }
    }
}

impl Owner {
    #[allow(clippy::too_many_arguments)] // the owner's whole wiring, named at its one call site
    pub fn new(
        store: Box<dyn Ledger>,
        clock: Clock,
        config: &Config,
        settings: Arc<RequestSettings>,
        jobs_tx: Sender<Job>,
        jobs_rx: Receiver<Job>,
        capacity: usize,
        gate: Arc<Gate>,
        outlets: Outlets,
    ) -> Owner {
        let wall = WallClock::new(clock.now_utc(), Instant::now());
        Owner {
            store,
            committer: outlets.committer,
            clock,
            policy: Policy::new(config),
            settings,
            jobs_tx: Some(jobs_tx),
            jobs_rx,
            capacity,
            workers: config.upload.workers,
            gate,
            in_flight: HashMap::new(),
            solo_in_flight: None,
            endpoint: Endpoint::new(Instant::now()),
            rng: Rng::seeded(),
            mode: Mode::Daemon,
            maybe_due: true,
            next_due: None,
            unsaved: Vec::new(),
            unsure: false,
            unrecorded: Vec::new(),
            claimed_ahead: Vec::new(),
            not_given_back: Vec::new(),
            held_since: None,
            db_trouble: None,
            claims_unsure: false,
            claims_check_at: None,
            warned_hostile: HashSet::new(),
            last_heartbeat: None,
            last_prune_day: None,
            wall,
            beat: outlets.beat,
            stats: Stats::default(),
            live: outlets.live,
            alerts: outlets.alerts,
            metrics_path: outlets.metrics_path,
            counters: metrics::Counters::default(),
            uploaded_today: (None, 0),
            last_scan: None,
            listings: HashMap::new(),
            file_lines: log::Level::Info,
            fatal: None,
            rescan: outlets.rescan,
            unwatched_written: None,
            recovery_rescan: None,
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::new(self.clock.now_utc())
    }

    /// `now + horizon`: a row due after this is due now (see `Policy::horizon`).
    fn far(&self, now: OffsetDateTime) -> Timestamp {
        Timestamp::new(now + self.policy.horizon())
    }

    pub fn store(&mut self) -> &mut dyn Ledger {
        self.store.as_mut()
    }

    /// Logs the INFO lines about single files at `level` instead (warnings and errors about
    /// a file keep theirs).
    pub fn file_lines_at(&mut self, level: log::Level) {
        self.file_lines = level;
    }

    /// The daemon's start, before READY: what a run that did not stop cleanly left (its
    /// interrupted uploads back to `pending`), the state rows of this run, and the queue's
    /// numbers published, so the `ready:` line and the first STATUS say what the ledger
    /// holds rather than the zeros of a count not yet made.
    pub fn start(&mut self) -> Result<()> {
        let now = self.now();
        // A previous run that left a heartbeat but no stop time did not stop cleanly.
        let before = self.store.state()?;
        let value = |k: &str| {
            before
                .get(k)
                .map(|(v, _)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let unclean = value("heartbeat").is_some() && value("stopped_at").is_none();
        let reset = self.store.reset_uploading(None, now, "interrupted")?;
        if unclean || reset > 0 {
            log::warn!(
                "the previous run did not stop cleanly (last heartbeat {}); {reset} interrupted upload(s) will be sent again",
                value("heartbeat").unwrap_or_else(|| "unknown".into())
            );
            self.alerts.send(AlertEvent::UncleanStop {
                last_heartbeat: value("heartbeat"),
                interrupted: reset,
            });
        }
        self.store.set_state(
            &[
                ("pid", std::process::id().to_string()),
                ("started_at", now.to_string()),
                ("heartbeat", now.to_string()),
                ("stopped_at", String::new()),
                ("endpoint", "up".into()),
                ("endpoint_down_since", String::new()),
            ],
            now,
        )?;
        self.publish();
        Ok(())
    }

    /// The daemon's loop, after `start`. Returns when shut down.
    pub fn run(mut self, ch: Channels) -> Result<()> {
        // Once the producers are gone (shutdown under way) their channel would be ready
        // forever; `never()` takes it out of the select.
        let mut inputs = ch.inputs.clone();
        loop {
            if let Some(e) = self.fatal.take() {
                match e {
                    crate::error::Error::Ledger {
                        state: crate::error::LedgerState::Lost,
                        ..
                    } => log::error!("{e}"),
                    // Logged by the supervisor, which names this thread.
                    crate::error::Error::Other(_) => {}
                    _ => log::error!("the database file is damaged: stopping (restore a backup, or move it aside: the next scan re-finds every image on disk)"),
                }
                return Err(e);
            }
            // Results first: an upload is not done until its commit, and a result waiting
            // behind a large listing would be sent again after a crash. An answer first of
            // all: a batch out ages the beat.
            if let Some(c) = &mut self.committer {
                match c.try_answer() {
                    Ok(Some(answer)) => self.on_committed(answer),
                    Ok(None) => {}
                    Err(_) => self.committer_gone(),
                }
            }
            self.beat();
            let done: Vec<Report> = ch.reports.try_iter().take(1024).collect();
            if !done.is_empty() {
                self.on_reports(done);
            }
            self.commit_held();
            self.housekeeping();
            // A reload is taken before anything is claimed: a select that happened to pick
            // the inputs would let this round claim under the rules the operator just
            // narrowed (a folder or an extension removed), and send those files.
            while let Ok(c) = ch.control.try_recv() {
                if let Some(shutdown) = self.on_control(c) {
                    return self.shutdown(shutdown, &ch.reports);
                }
            }
            self.dispatch();
            let wait = self.sleep_for();
            let answers = self
                .committer
                .as_ref()
                .map_or_else(crossbeam_channel::never, Committer::answers);
            select! {
                recv(answers) -> msg => match msg {
                    Ok(answer) => self.on_committed(answer),
                    Err(_) => self.committer_gone(),
                },
                recv(inputs) -> msg => if let Ok(input) = msg {
                    self.ingest(input);
                    // Drain what else is queued into the same round: fewer transactions
                    // during a burst.
                    for i in inputs.try_iter().take(256) {
                        self.ingest(i);
                    }
                } else {
                    inputs = crossbeam_channel::never();
                },
                recv(ch.reports) -> msg => if let Ok(r) = msg {
                    let mut batch = vec![r];
                    batch.extend(ch.reports.try_iter().take(1024));
                    self.on_reports(batch);
                },
                recv(ch.control) -> msg => match msg {
                    Ok(c) => if let Some(grace) = self.on_control(c) {
                        return self.shutdown(grace, &ch.reports);
                    },
                    Err(_) => return self.shutdown(Duration::ZERO, &ch.reports),
                },
                default(wait) => {}
            }
        }
    }

    /// The watchdog's beat: a batch of results out on the committer counts as a call of the
    /// owner's own, so a connection hung on it stops the beat as a hung call here would.
    fn beat(&self) {
        match self.committer.as_ref().and_then(Committer::out_since) {
            Some(since) => self.beat.beat_at(since),
            None => self.beat.beat(),
        }
    }

    /// Applies a reload, or says a shutdown (with its grace) was asked for.
    fn on_control(&mut self, c: Control) -> Option<Duration> {
        match c {
            Control::Reload(config, settings) => {
                self.policy = Policy::new(&config);
                self.store.set_folders(crate::store::roots(&config));
                self.settings = settings;
                // Jobs claimed under the old rules go back unsent, to be claimed again (or
                // not) under the new ones: those still queued now, and any a worker takes
                // from here on (it sees the generation change). A request already under
                // way cannot be called back.
                self.gate.rules_changed();
                self.take_back_queued();
                self.maybe_due = true;
                None
            }
            Control::Shutdown { grace } => Some(grace),
        }
    }

    /// The one-shot scan's loop: one attempt for each of `ids`, then return. Results that
    /// cannot be saved (a locked or failing database) are retried for `ONESHOT_SAVE_FOR`,
    /// then counted in `Stats::unsaved`: the scan always ends. `progress` is shown the
    /// counts at every turn of the loop (at least once a second while uploads run).
    pub fn run_oneshot(
        mut self,
        ids: Vec<i64>,
        reports: &Receiver<Report>,
        progress: &mut dyn FnMut(&Stats),
    ) -> Result<Stats> {
        self.mode = Mode::Oneshot { queue: ids.into() };
        let mut giving_up_at: Option<Instant> = None;
        loop {
            progress(&self.stats);
            if self.db_trouble.is_some() {
                self.flush_unsaved();
                if self.db_trouble.is_some() {
                    let at = *giving_up_at.get_or_insert(Instant::now() + ONESHOT_SAVE_FOR);
                    if Instant::now() >= at {
                        // Nothing more is claimed; what is in flight still gets its answer.
                        if let Mode::Oneshot { queue } = &mut self.mode {
                            queue.clear();
                        }
                    }
                } else {
                    giving_up_at = None;
                }
            }
            self.dispatch();
            let queue_empty = matches!(&self.mode, Mode::Oneshot { queue } if queue.is_empty());
            if self.in_flight.is_empty() && (queue_empty || self.endpoint.is_down()) {
                if self.unsaved.is_empty() || giving_up_at.is_some_and(|t| Instant::now() >= t) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            if self.in_flight.is_empty() {
                // Paused by a Retry-After, or holding results for a locked database: wait,
                // it is part of the one attempt.
                std::thread::sleep(self.sleep_for());
                continue;
            }
            match reports.recv_timeout(Duration::from_secs(1)) {
                Ok(r) => self.on_reports(std::iter::once(r).chain(reports.try_iter()).collect()),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.flush_unsaved();
        self.stats.unsaved = self.unsaved.len();
        if self.stats.unsaved > 0 {
            log::error!(
                "{} result(s) could not be saved (the database stayed locked or failing): those files are sent again next time, with the same Idempotency-Key",
                self.stats.unsaved
            );
        }
        if let Mode::Oneshot { queue } = &self.mode {
            if !queue.is_empty() {
                log::warn!(
                    "endpoint down: {} file(s) left pending for the next run",
                    queue.len()
                );
            }
        }
        self.jobs_tx = None;
        Ok(self.stats.clone())
    }

    /// Until the next real event: a pause's end or the next probe (endpoint), the next
    /// row due (only while rows can be claimed), a database retry; at most `max_sleep` (the
    /// watchdog's beat, the heartbeat). Reports and inputs wake the loop by themselves.
    fn sleep_for(&self) -> Duration {
        let mut wait = crate::health::max_sleep();
        let now = Instant::now();
        // A probe waits for the job already sent alone (its report wakes the loop).
        let waiting_for_solo = self.endpoint.is_down() && self.solo_in_flight.is_some();
        if let Some(at) = self.endpoint.next_wake().filter(|_| !waiting_for_solo) {
            // A probe needs a due row: with none known, the later of the probe's time and
            // the next row's due time (new files wake the loop by themselves).
            let at = if self.endpoint.is_down() && !self.maybe_due {
                self.next_due.map(|due| {
                    let d: Duration = (due - self.clock.now_utc())
                        .try_into()
                        .unwrap_or(Duration::ZERO);
                    at.max(now + d)
                })
            } else {
                Some(at)
            };
            if let Some(at) = at {
                wait = wait.min(at.saturating_duration_since(now));
            }
        }
        if let (true, Some(due)) = (self.can_claim(), self.next_due) {
            let d: Duration = (due - self.clock.now_utc())
                .try_into()
                .unwrap_or(Duration::ZERO);
            wait = wait.min(d);
        }
        if self.db_trouble.is_some() {
            wait = wait.min(Duration::from_secs(1));
        }
        if let Some(since) = self.held_since {
            wait = wait.min((since + GROUP_COMMIT).saturating_duration_since(now));
        }
        wait.max(Duration::from_millis(1))
    }

    /// A database operation failed: hold on and retry, unless the database itself is
    /// damaged, which stops the owner (with this very error, kept for the caller).
    fn trouble(&mut self, e: crate::error::Error) {
        self.claims_unsure = true;
        if self.db_trouble.is_none() {
            log::warn!(
                "database trouble: {e}; holding results in memory and retrying (files not yet recorded are found again by the next rescan)"
            );
            self.db_trouble = Some(Instant::now());
            self.live.queue().db_trouble = Some(e.to_string());
        } else {
            log::debug!("database still in trouble: {e}");
        }
        if e.is_corrupt() && self.fatal.is_none() {
            self.fatal = Some(e);
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.db_trouble.take() {
            // Results kept through the trouble were retried by `housekeeping` while it
            // lasted; when something else found the database writable again (a record),
            // they are committed as if held for the group commit, or nothing would.
            if !self.unsaved.is_empty() {
                self.hold();
            }
            let due = self
                .recovery_rescan
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
            if let (Some(tx), true) = (&self.rescan, due) {
                self.recovery_rescan = Some(Instant::now());
                let _ = tx.try_send("database recovered");
            }
            self.live.queue().db_trouble = None;
            log::info!(
                "database is writable again after {}",
                human_duration(since.elapsed())
            );
        }
    }

    fn shutdown(mut self, grace: Duration, reports: &Receiver<Report>) -> Result<()> {
        let deadline = Instant::now() + grace;
        // From here on every result is committed as it comes, on this connection.
        self.await_committer();
        self.committer = None;
        // Unstarted jobs go back as if never claimed; closing the channel lets each worker
        // end after its current request.
        self.take_back_queued();
        self.jobs_tx = None;
        while !self.in_flight.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match reports.recv_timeout(left) {
                Ok(r) => self.on_reports(std::iter::once(r).chain(reports.try_iter()).collect()),
                Err(_) => break,
            }
        }
        self.commit_now();
        let now = self.now();
        self.unclaim(Vec::new());
        if !self.in_flight.is_empty() {
            let ids: Vec<i64> = self.in_flight.keys().copied().collect();
            log::warn!(
                "{} upload(s) still running after the grace period: marked pending",
                ids.len()
            );
            self.store
                .reset_uploading(Some(&ids), now, "interrupted by shutdown")?;
        }
        self.write_metrics();
        self.store.set_state(
            &[
                ("stopped_at", now.to_string()),
                ("heartbeat", now.to_string()),
                ("pid", String::new()),
            ],
            now,
        )?;
        Ok(())
    }
}
