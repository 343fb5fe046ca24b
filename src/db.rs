//! The DB owner: the one thread that writes the database, and the scheduler of all uploads.
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

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use time::OffsetDateTime;

use crate::alerts::{Alerts, Event as AlertEvent};
use crate::clock::{format_ts, human_duration, Clock};
use crate::config::{Config, Folder, Order};
use crate::endpoint::{Change, Endpoint, Pause};
use crate::error::Result;
use crate::health::Beat;
use crate::judge::{self, settle_time, Facts, Health, Tally, Verdict};
use crate::layout::{self, display_name, EntryType, Refusal, Seen, Show, Target, Version};
use crate::live::Live;
use crate::metrics;
use crate::store::{ClaimOrder, Claimed, Completion, Disposition, Ledger, Observation};
use crate::upload::{Gate, Job, Outcome, Report, RequestSettings};
/// What the watcher and the scanner tell the owner.
#[derive(Debug)]
pub enum Input {
    /// Files reported by inotify (complete now) or otherwise already judged new.
    Observed(Vec<Observation>),
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

/// The scheduling knobs taken from the config (replaced on reload).
#[derive(Debug, Clone)]
pub struct Policy {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: u32,
    pub newest_first: bool,
    pub settle: Duration,
    pub keep_days: u32,
    pub backlog_alert: Duration,
    /// How often the heartbeat is written: every 10 s, and at least four times a lease so a
    /// busy host is never mistaken for a dead one.
    pub heartbeat: Duration,
    /// What a claimed row is checked against before a worker may open it.
    pub folders: Vec<Folder>,
    pub extensions: Vec<String>,
}

impl Policy {
    pub fn new(c: &Config) -> Policy {
        Policy {
            initial: c.upload.retry.initial,
            max: c.upload.retry.max,
            max_attempts: c.upload.retry.max_attempts,
            newest_first: c.upload.order == Order::NewestFirst,
            settle: c.watch.settle,
            keep_days: c.database.keep_days,
            backlog_alert: c.alerts.backlog,
            heartbeat: HEARTBEAT_EVERY.min(c.database.lease / 4),
            folders: c.watch.folders.clone(),
            extensions: c.watch.extensions.clone(),
        }
    }

    /// Exponential backoff from `initial` to `max`; the jitter only lengthens (up to +25%).
    pub fn backoff(&self, attempt: i64, rng: &mut Rng) -> Duration {
        let exp = (attempt.max(1) - 1).min(30) as u32;
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        base + base.mul_f64(rng.unit() / 4.0)
    }

    /// No wait the owner sets is longer than this: backoff and Retry-After stop at
    /// `retry.max_secs` (+25 % jitter), settling at `settle_secs`. A row due later than
    /// now + this was scheduled before the wall clock was stepped back (an RTC that was
    /// hours ahead at boot, corrected by NTP), and is due now.
    pub fn horizon(&self) -> Duration {
        self.max.max(self.settle).mul_f64(1.25) + Duration::from_secs(60)
    }

    /// Where a claimed row's file is, if the rules and the config in force let it be opened.
    pub fn target(&self, c: &Claimed) -> std::result::Result<Target, Refusal> {
        let Some(folder) = self.folders.iter().find(|f| f.label == c.folder) else {
            return Err(Refusal::OutOfScope(format!(
                "folder {} is not in watch.folders",
                std::ffi::OsStr::new(&c.folder).shown()
            )));
        };
        layout::target(
            &folder.anchor,
            folder.below.as_deref(),
            &folder.path,
            &self.extensions,
            &c.date,
            &c.filename,
            &c.path,
        )
    }
}

/// A small xorshift generator for jitter: no crate needed for "not all at once".
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let t = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
        Rng(t ^ (u64::from(std::process::id()) << 32) | 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How often the heartbeat row is written (status/check read it).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// A file whose attempts fail this many times in a row while the endpoint is not down is
/// reported (one WARN, an alert): the endpoint cannot take it, the others go on.
const REPORT_RETRYING_AT: i64 = 5;
/// How far the wall clock may drift from the monotonic clock before it counts as a jump.
const CLOCK_JUMP: Duration = Duration::from_secs(300);
/// After a jump, how long the wall clock must keep pace before pruning trusts its date.
const CLOCK_STEADY: Duration = Duration::from_secs(3600);
/// How long a one-shot `scan` keeps trying to save its results while the database is
/// locked or failing, before it gives up (exit 1; those files are sent again next time).
const ONESHOT_SAVE_FOR: Duration = Duration::from_secs(60);

/// Whether the wall clock can be trusted for the daily prune. A wall clock that jumps (a
/// bad NTP or GPS answer, an RTC corrected after boot) would prune by a date that is not
/// today: the prune waits until the clock has kept pace with the monotonic one for
/// `CLOCK_STEADY` after any jump.
#[derive(Debug)]
struct WallClock {
    base: (OffsetDateTime, Instant),
    unsteady_until: Option<Instant>,
}

impl WallClock {
    fn new(wall: OffsetDateTime, mono: Instant) -> WallClock {
        WallClock {
            base: (wall, mono),
            unsteady_until: None,
        }
    }

    /// Compares the two clocks; returns how far the wall clock jumped, if it did.
    fn observe(&mut self, wall: OffsetDateTime, mono: Instant) -> Option<time::Duration> {
        let expected = self.base.0 + mono.saturating_duration_since(self.base.1);
        let skew = wall - expected;
        self.base = (wall, mono);
        if skew.unsigned_abs() > CLOCK_JUMP {
            self.unsteady_until = Some(mono + CLOCK_STEADY);
            return Some(skew);
        }
        None
    }

    fn steady(&self, mono: Instant) -> bool {
        self.unsteady_until.is_none_or(|t| mono >= t)
    }
}

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
    clock: Clock,
    policy: Policy,
    settings: Arc<RequestSettings>,
    jobs_tx: Option<Sender<Job>>,
    /// A clone of the workers' receiver, to take back unstarted jobs (outage, shutdown).
    jobs_rx: Receiver<Job>,
    capacity: usize,
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
    /// Completions that could not be committed (database trouble), retried.
    unsaved: Vec<Completion>,
    db_trouble: Option<Instant>,
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
        beat: Beat,
    ) -> Owner {
        let wall = WallClock::new(clock.now_utc(), Instant::now());
        Owner {
            store,
            clock,
            policy: Policy::new(config),
            settings,
            jobs_tx: Some(jobs_tx),
            jobs_rx,
            capacity,
            gate,
            in_flight: HashMap::new(),
            solo_in_flight: None,
            endpoint: Endpoint::new(Instant::now()),
            rng: Rng::seeded(),
            mode: Mode::Daemon,
            maybe_due: true,
            next_due: None,
            unsaved: Vec::new(),
            db_trouble: None,
            warned_hostile: HashSet::new(),
            last_heartbeat: None,
            last_prune_day: None,
            wall,
            beat,
            stats: Stats::default(),
            live: Arc::new(Live::default()),
            alerts: Alerts::disabled(),
            metrics_path: None,
            counters: metrics::Counters::default(),
            uploaded_today: (None, 0),
            last_scan: None,
            fatal: None,
            rescan: None,
            unwatched_written: None,
            recovery_rescan: None,
        }
    }

    /// The daemon's extras: what it publishes (STATUS), whom it alerts, where metrics go.
    pub fn attach(
        &mut self,
        live: Arc<Live>,
        alerts: Alerts,
        metrics_path: Option<PathBuf>,
        rescan: Sender<&'static str>,
    ) {
        self.rescan = Some(rescan);
        self.live = live;
        self.alerts = alerts;
        self.metrics_path = metrics_path;
    }

    fn now(&self) -> String {
        format_ts(self.clock.now_utc())
    }

    /// `now + horizon`: a row due after this is due now (see `Policy::horizon`).
    fn far(&self, now: OffsetDateTime) -> String {
        format_ts(now + self.policy.horizon())
    }

    pub fn store(&mut self) -> &mut dyn Ledger {
        self.store.as_mut()
    }

    /// The daemon's loop. Returns when shut down.
    pub fn run(mut self, ch: Channels) -> Result<()> {
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
        let reset = self.store.reset_uploading(None, &now, "interrupted")?;
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
                ("started_at", now.clone()),
                ("heartbeat", now.clone()),
                ("stopped_at", String::new()),
                ("endpoint", "up".into()),
                ("endpoint_down_since", String::new()),
            ],
            &now,
        )?;
        // Once the producers are gone (shutdown under way) their channel would be ready
        // forever; `never()` takes it out of the select.
        let mut inputs = ch.inputs.clone();
        loop {
            if let Some(e) = self.fatal.take() {
                match e {
                    crate::error::Error::LedgerFilesLost { .. } => log::error!("{e}"),
                    _ => log::error!("the database file is damaged: stopping (restore a backup, or move it aside: the next scan re-finds every image on disk)"),
                }
                return Err(e);
            }
            self.beat.beat();
            // Results first: an upload is not done until its commit, and a result waiting
            // behind a large listing would be sent again after a crash.
            let done: Vec<Report> = ch.reports.try_iter().take(1024).collect();
            if !done.is_empty() {
                self.on_reports(done);
            }
            self.housekeeping();
            self.dispatch();
            let wait = self.sleep_for();
            select! {
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
                    Ok(Control::Reload(config, settings)) => {
                        self.policy = Policy::new(&config);
                        self.store.set_folders(crate::store::roots(&config));
                        self.settings = settings;
                        self.maybe_due = true;
                    }
                    Ok(Control::Shutdown { grace }) => return self.shutdown(grace, &ch.reports),
                    Err(_) => return self.shutdown(Duration::ZERO, &ch.reports),
                },
                default(wait) => {}
            }
        }
    }

    /// The one-shot scan's loop: one attempt for each of `ids`, then return. Results that
    /// cannot be saved (a locked or failing database) are retried for `ONESHOT_SAVE_FOR`,
    /// then counted in `Stats::unsaved`: the scan always ends.
    pub fn run_oneshot(mut self, ids: Vec<i64>, reports: &Receiver<Report>) -> Result<Stats> {
        self.mode = Mode::Oneshot { queue: ids.into() };
        let mut giving_up_at: Option<Instant> = None;
        loop {
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
        wait.max(Duration::from_millis(1))
    }

    /// Takes one message from the watcher or the scanner (also used by the one-shot scan).
    pub fn ingest(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Observed(batch) => self.record(&batch, &now),
            Input::Listing {
                folder,
                date,
                entries,
            } => {
                // Borrowed from `entries`, in their order: `known` lines up with them.
                let listed: Vec<(&[u8], Version)> = entries
                    .iter()
                    .filter(|s| s.entry == EntryType::Regular)
                    .filter_map(|s| Some((s.path.as_os_str().as_bytes(), s.version?)))
                    .collect();
                let known = match self.store.known_among(&folder, &date, &listed) {
                    Ok(k) => k,
                    Err(e) => return self.trouble(&e),
                };
                let mut known = known.into_iter();
                let now_t = self.clock.now_utc();
                let mut batch = Vec::new();
                for s in entries {
                    if s.entry != EntryType::Regular {
                        self.warn_hostile(&s);
                        continue;
                    }
                    let Some(version) = s.version else { continue };
                    if known.next() == Some(true) {
                        continue;
                    }
                    batch.push(Observation {
                        ready_at: format_ts(settle_time(
                            now_t,
                            version.mtime_ns,
                            self.policy.settle,
                        )),
                        path: s.path,
                        folder: folder.clone(),
                        date: date.clone(),
                        filename: s.location.name,
                        version,
                        via_event: false,
                    });
                }
                if !batch.is_empty() {
                    self.record(&batch, &now);
                }
                // Files already recorded may be due: in a shared ledger another host may have
                // recorded them a moment ago (a claim that finds nothing costs microseconds).
                self.maybe_due = true;
            }
            Input::Attrib(path) => match self.store.recheck(&path, &now) {
                Ok(true) => {
                    log::info!(
                        "{}: permissions changed, checking it again now",
                        display_name(path.as_os_str())
                    );
                    self.maybe_due = true;
                }
                Ok(false) => {}
                Err(e) => self.trouble(&e),
            },
            Input::ScanFinished { files, took } => {
                log::debug!("rescan: {files} candidate(s) in {}", human_duration(took));
                self.last_scan = Some((self.clock.now_utc(), took));
                self.live.rescan_done();
                let _ = self.store.set_state(
                    &[
                        ("last_scan_at", now.clone()),
                        ("last_scan_ms", took.as_millis().to_string()),
                    ],
                    &now,
                );
            }
        }
    }

    fn record(&mut self, batch: &[Observation], now: &str) {
        match self.store.record(batch, now) {
            Ok(st) => {
                self.recovered();
                // Unchanged rows count too: in a shared ledger they may have just been
                // recorded by another host, and be due without this host knowing.
                if st.new + st.new_versions + st.made_due + st.unchanged > 0 {
                    self.maybe_due = true;
                }
                self.stats.recorded += st.new + st.new_versions;
                if st.new > 0 {
                    log::debug!("recorded {} new file(s)", st.new);
                }
            }
            // Not lost: the next rescan finds these files again and records them.
            Err(e) => self.trouble(&e),
        }
    }

    fn warn_hostile(&mut self, s: &Seen) {
        if self.warned_hostile.len() > 10_000 {
            self.warned_hostile.clear();
        }
        if self.warned_hostile.insert(s.path.clone()) {
            log::warn!(
                "{}: not a regular file ({:?}): ignored, never opened",
                display_name(s.path.as_os_str()),
                s.entry
            );
        }
    }

    /// Whether `dispatch` could hand out ordinary jobs now (not a probe): the next due row
    /// only matters then. While it cannot, reports wake the loop.
    fn can_claim(&self) -> bool {
        let Some(tx) = &self.jobs_tx else {
            return false;
        };
        if (self.db_trouble.is_some() && !self.unsaved.is_empty())
            || self.endpoint.is_down()
            || self.endpoint.next_wake().is_some()
        {
            return false;
        }
        if self.gate.failing() {
            return self.solo_in_flight.is_none();
        }
        self.capacity > tx.len()
    }

    /// Claims due rows into free job slots (or one probe while the endpoint is down), checks
    /// each against the rules before a worker may open it, and hands them out.
    fn dispatch(&mut self) {
        if self.jobs_tx.is_none() || (self.db_trouble.is_some() && !self.unsaved.is_empty()) {
            return;
        }
        let now_i = Instant::now();
        match self.endpoint.paused(now_i) {
            Pause::Paused => return,
            Pause::JustEnded => self.maybe_due = true,
            Pause::No => {}
        }
        let probe = self.endpoint.is_down();
        let solo = probe || self.gate.failing();
        let free = if probe {
            if !self.endpoint.may_probe(now_i) || self.solo_in_flight.is_some() {
                return;
            }
            1
        } else if solo {
            // The last request failed for endpoint reasons: one at a time until one gets
            // an answer (or an outage is declared). Other jobs still out do not hold it back:
            // one may be stuck for good.
            if self.solo_in_flight.is_some() {
                return;
            }
            1
        } else {
            let queued = self.jobs_tx.as_ref().map_or(0, Sender::len);
            self.capacity.saturating_sub(queued)
        };
        if free == 0 {
            return;
        }
        let now_t = self.clock.now_utc();
        if !self.maybe_due {
            match self.next_due {
                Some(t) if t <= now_t => {}
                _ => return,
            }
        }
        let now = format_ts(now_t);
        let far = self.far(now_t);
        let claimed = match &mut self.mode {
            Mode::Daemon => {
                let order = if probe {
                    ClaimOrder::LongestWaiting
                } else if self.policy.newest_first {
                    ClaimOrder::NewestFile
                } else {
                    ClaimOrder::OldestFile
                };
                self.store.claim_due(&now, &far, free, order)
            }
            Mode::Oneshot { queue } => {
                let ids: Vec<i64> = (0..free).map_while(|_| queue.pop_front()).collect();
                let claimed = self.store.claim_ids(&ids, &now);
                if claimed.is_err() {
                    // Not claimed: they stay this scan's to try.
                    for id in ids.into_iter().rev() {
                        queue.push_front(id);
                    }
                }
                claimed
            }
        };
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => return self.trouble(&e),
        };
        if claimed.len() < free && matches!(self.mode, Mode::Daemon) {
            self.maybe_due = false;
            self.next_due = match self.store.next_due() {
                // Due rows the claim did not take (another host's meanwhile, say) are
                // looked at again in a second, not in a loop; one due beyond the horizon
                // was set before the clock was stepped back, and the claim takes it.
                Ok(t) => t.as_deref().and_then(crate::clock::parse_ts).map(|t| {
                    let soon = now_t + Duration::from_secs(1);
                    if t <= now_t || t > now_t + self.policy.horizon() {
                        soon
                    } else {
                        t
                    }
                }),
                Err(e) => return self.trouble(&e),
            };
        }
        if probe {
            if claimed.is_empty() {
                // Nothing due to probe with: the probe goes when a row is due (`sleep_for`).
                return;
            }
            self.endpoint.probe_started();
        }
        let mut refused = Vec::new();
        for c in claimed {
            let target = match self.policy.target(&c) {
                Ok(t) => t,
                Err(r) => {
                    refused.push((judge::refuse(&c, &r, now_t), c.path));
                    continue;
                }
            };
            if probe {
                log::debug!("probing the endpoint with {}", c.path.shown());
            }
            self.in_flight.insert(c.id, c.clone());
            if solo {
                self.solo_in_flight = Some(c.id);
            }
            let job = Job {
                file: c,
                target,
                probe,
                solo,
                settings: self.settings.clone(),
            };
            // Never blocks: only this thread sends, and it sent no more than the free slots.
            let Some(tx) = &self.jobs_tx else { return };
            if tx.send(job).is_err() {
                // Every worker is gone: that is a dead thread, which the supervisor sees.
                return;
            }
        }
        if !refused.is_empty() {
            if probe && self.solo_in_flight.is_none() {
                // Refused rows never reached the endpoint: the probe goes with another.
                self.endpoint.probe_abandoned();
            }
            let done = refused
                .into_iter()
                .map(|(v, path)| self.carry_out(v, &path))
                .collect();
            self.save(done);
        }
    }

    fn on_reports(&mut self, batch: Vec<Report>) {
        let mut completions = Vec::with_capacity(batch.len());
        let mut handed_back = Vec::new();
        for r in batch {
            self.in_flight.remove(&r.job.file.id);
            if self.solo_in_flight == Some(r.job.file.id) {
                self.solo_in_flight = None;
            }
            if matches!(r.outcome, Outcome::NotStarted) {
                handed_back.push(r.job.file.id);
                continue;
            }
            if let Some(note) = &r.note {
                log::warn!("{note}");
            }
            let verdict = self.decide(&r);
            completions.push(self.carry_out(verdict, &r.job.file.path));
        }
        self.save(completions);
        if !handed_back.is_empty() {
            self.give_back(&handed_back);
        }
    }

    /// The endpoint's side of a report first (its state and the probe gap), then the row's.
    fn decide(&mut self, r: &Report) -> Verdict {
        let now_i = Instant::now();
        let now = self.clock.now_utc();
        let probe = r.job.probe;
        match judge::health(&r.outcome) {
            Health::Answered => {
                if let Some(Change::Up { down_for }) = self.endpoint.answered(now_i) {
                    self.endpoint_up(down_for);
                }
            }
            Health::Failing(error) => {
                let change = self.endpoint.failed(
                    r.job.file.id,
                    &error,
                    probe,
                    now_i,
                    now,
                    self.policy.initial,
                    self.policy.max,
                );
                if let Some(Change::Down {
                    failures,
                    probe_wait,
                }) = change
                {
                    self.endpoint_down(&error, failures, probe_wait);
                }
            }
            Health::Silent => {}
        }
        if probe {
            // Every probe paces the next, whatever it found.
            self.endpoint.probe_ended(now_i);
        }
        let facts = Facts {
            file: &r.job.file,
            started_at: r.started_at,
            duration: r.duration,
            probe,
            max_attempts: self.policy.max_attempts,
            backoff: self.policy.backoff(r.job.file.attempt, &mut self.rng),
            retry_max: self.policy.max,
            probe_gap: self.endpoint.probe_gap(),
            settle: self.policy.settle,
            now,
        };
        let verdict = judge::judge(&facts, &r.outcome);
        if let Some(pause) = verdict.pause {
            log::warn!(
                "endpoint answered {} with Retry-After {}: pausing all uploads",
                verdict.completion.http_status.unwrap_or(0),
                human_duration(pause)
            );
            self.endpoint.pause(now_i + pause);
            self.take_back_queued();
        }
        verdict
    }

    /// Logs, counts and alerts what a verdict about `path` says; its completion is what
    /// gets saved.
    fn carry_out(&mut self, v: Verdict, path: &std::path::Path) -> Completion {
        let c = v.completion;
        if let Some((level, line)) = v.log {
            // During an outage the probes' retries would be a line each: the WARN that it is
            // down and the INFO that it is back say it all.
            let level = if v.tally == Tally::Retry && self.endpoint.is_down() {
                log::Level::Debug
            } else {
                level
            };
            log::log!(level, "{line}");
        }
        self.alert_file(&c, path);
        match v.tally {
            Tally::Uploaded => {
                self.stats.uploaded += 1;
                self.counters.success += 1;
                self.uploaded_today.1 += 1;
            }
            Tally::Retry => {
                self.stats.retry += 1;
                self.counters.retry += 1;
            }
            Tally::Failed => {
                self.stats.failed += 1;
                self.counters.failed += 1;
            }
            Tally::Skipped => self.stats.skipped += 1,
            Tally::NotReady => self.stats.not_ready += 1,
        }
        if c.result.is_some() {
            self.counters
                .observe(Duration::from_millis(c.duration_ms.max(0) as u64));
        }
        c
    }

    /// Alerts about one file's completion: failed for good, or failing again and again
    /// while the endpoint is not down (a file the endpoint cannot take).
    fn alert_file(&mut self, c: &Completion, path: &std::path::Path) {
        match &c.disposition {
            Disposition::Failed => self.alerts.send(AlertEvent::FileFailed {
                path: path.shown().to_string(),
                error: c.error.clone().unwrap_or_default(),
            }),
            Disposition::Retry { counted: true, .. }
                if c.attempt == REPORT_RETRYING_AT && !self.endpoint.is_down() =>
            {
                let error = c.error.clone().unwrap_or_default();
                log::warn!(
                    "{}: {} attempts failed in a row ({error}) while the endpoint takes other files: still retrying it with backoff, the others are not held back",
                    path.shown(),
                    c.attempt
                );
                self.alerts.send(AlertEvent::FileRetrying {
                    path: path.shown().to_string(),
                    attempts: c.attempt,
                    error,
                });
            }
            _ => {}
        }
    }

    /// Saves completions now, or holds them while the database is in trouble.
    fn save(&mut self, completions: Vec<Completion>) {
        self.unsaved.extend(completions);
        self.flush_unsaved();
    }

    fn flush_unsaved(&mut self) {
        if self.unsaved.is_empty() {
            return;
        }
        let now = self.now();
        match self.store.complete(&self.unsaved, &now) {
            Ok(gone) => {
                if !gone.is_empty() {
                    log::warn!(
                        "{} result(s) dropped: their rows were removed meanwhile (pruned or deleted by hand); ids {:?}",
                        gone.len(),
                        &gone[..gone.len().min(10)]
                    );
                }
                self.unsaved.clear();
                self.maybe_due = true;
                self.recovered();
            }
            // One completion the database refuses (a constraint it breaks) must not hold the
            // others, nor every later result, in memory: save them one by one and drop it.
            Err(e) if e.is_item_problem() && self.unsaved.len() > 1 => {
                let batch = std::mem::take(&mut self.unsaved);
                for c in batch {
                    match self.store.complete(std::slice::from_ref(&c), &now) {
                        Ok(_) => {}
                        Err(e) if e.is_item_problem() => log::warn!(
                            "the result of file id {} was dropped: the database refuses it: {e}",
                            c.file_id
                        ),
                        Err(e) => {
                            self.unsaved.push(c);
                            self.trouble(&e);
                        }
                    }
                }
                if self.unsaved.is_empty() {
                    self.maybe_due = true;
                    self.recovered();
                }
            }
            Err(e) if e.is_item_problem() => {
                log::warn!(
                    "the result of file id {} was dropped: the database refuses it: {e}",
                    self.unsaved[0].file_id
                );
                self.unsaved.clear();
            }
            Err(e) => self.trouble(&e),
        }
    }

    fn endpoint_down(&mut self, error: &str, failures: u32, probe_wait: Duration) {
        self.alerts.send(AlertEvent::EndpointDown {
            error: error.to_owned(),
        });
        self.live.queue().endpoint_down = Some((Duration::ZERO, error.to_owned()));
        log::warn!(
            "endpoint {} is down ({failures} consecutive failures from more than one file, last: {error}): pausing uploads, one probe every {} or longer",
            self.settings.shown_url,
            human_duration(probe_wait)
        );
        self.take_back_queued();
        let now = self.now();
        let _ = self.store.set_state(
            &[
                ("endpoint", "down".into()),
                ("endpoint_down_since", now.clone()),
                ("endpoint_error", error.to_owned()),
            ],
            &now,
        );
    }

    fn endpoint_up(&mut self, down_for: Duration) {
        self.alerts.send(AlertEvent::EndpointUp { down_for });
        self.live.queue().endpoint_down = None;
        log::info!(
            "endpoint is back after {}: resuming uploads",
            human_duration(down_for)
        );
        let now = self.now();
        match self.store.release_backoff(&now) {
            Ok(n) if n > 0 => {
                log::info!("{n} file(s) that failed during the outage are due now")
            }
            Ok(_) => {}
            Err(e) => self.trouble(&e),
        }
        let _ = self.store.set_state(
            &[
                ("endpoint", "up".into()),
                ("endpoint_down_since", String::new()),
            ],
            &now,
        );
        self.maybe_due = true;
    }

    /// Jobs claimed but not yet picked up by a worker go back to `pending` (an outage or a
    /// pause began: sending them would only make failed requests).
    fn take_back_queued(&mut self) {
        let ids: Vec<i64> = self.jobs_rx.try_iter().map(|j| j.file.id).collect();
        if !ids.is_empty() {
            self.give_back(&ids);
        }
    }

    /// Claimed rows that were never sent go back to `pending`, as if never claimed.
    fn give_back(&mut self, ids: &[i64]) {
        for id in ids {
            self.in_flight.remove(id);
            if self.solo_in_flight == Some(*id) {
                self.solo_in_flight = None;
            }
        }
        if let Mode::Oneshot { queue } = &mut self.mode {
            for id in ids.iter().rev() {
                queue.push_front(*id);
            }
        }
        let now = self.now();
        match self.store.unclaim(ids, &now) {
            Ok(()) => self.maybe_due = true,
            Err(e) => self.trouble(&e),
        }
    }

    /// Heartbeat row and the daily prune.
    fn housekeeping(&mut self) {
        if !matches!(self.mode, Mode::Daemon) {
            return;
        }
        if self.db_trouble.is_some() {
            // Held results first; with none held, a heartbeat write tells whether the
            // database takes writes again.
            self.flush_unsaved();
            if self.unsaved.is_empty() && self.db_trouble.is_some() {
                let now = self.now();
                match self.store.set_state(&[("heartbeat", now.clone())], &now) {
                    Ok(()) => self.recovered(),
                    Err(e) => self.trouble(&e),
                }
            }
        }
        if self
            .last_heartbeat
            .is_some_and(|t| t.elapsed() < self.policy.heartbeat)
        {
            return;
        }
        self.last_heartbeat = Some(Instant::now());
        if let Err(e) = self.store.watch_files() {
            self.fatal = Some(e);
            return;
        }
        // Rows re-queued by another process (`retry`) become due without telling us.
        self.maybe_due = true;
        let now = self.now();
        let endpoint = if self.endpoint.is_down() {
            "down"
        } else {
            "up"
        };
        if let Err(e) = self.store.set_state(
            &[("heartbeat", now.clone()), ("endpoint", endpoint.into())],
            &now,
        ) {
            return self.trouble(&e);
        }
        // A host of a shared ledger that died holding claims: its rows become ours to send.
        match self.store.take_over_stale(&now) {
            Ok(0) => {}
            Ok(_) => self.maybe_due = true,
            Err(e) => return self.trouble(&e),
        }
        self.publish();
        self.write_metrics();
        self.prune();
    }

    /// Once a day: finished rows of date folders older than `keep_days` go. Never by a wall
    /// clock that just jumped, and never past the newest date folder in the ledger: a clock
    /// 200 days ahead must not delete what the rescans would then upload again.
    fn prune(&mut self) {
        let (wall, mono) = (self.clock.now_utc(), Instant::now());
        if let Some(jump) = self.wall.observe(wall, mono) {
            log::warn!(
                "the wall clock jumped by {}{} (against the monotonic clock): pruning waits until it has kept time for {}",
                if jump.is_negative() { "-" } else { "+" },
                human_duration(jump.unsigned_abs()),
                human_duration(CLOCK_STEADY)
            );
        }
        let today = self.clock.today_local();
        if self.last_prune_day == Some(today) || !self.wall.steady(mono) {
            return;
        }
        let newest = match self.store.newest_date() {
            Ok(d) => d
                .as_deref()
                .and_then(|d| layout::parse_date_dir(d.as_ref())),
            Err(e) => return self.trouble(&e),
        };
        let reference = newest.map_or(today, |n| n.min(today));
        let cutoff = reference - time::Duration::days(i64::from(self.policy.keep_days));
        match self.store.prune(&layout::format_date(cutoff)) {
            Ok(0) => {}
            Ok(n) => log::info!(
                "pruned {n} row(s) of date folders before {} (finished ones only)",
                layout::format_date(cutoff)
            ),
            Err(e) => return self.trouble(&e),
        }
        self.last_prune_day = Some(today);
    }

    /// Refreshes what the supervisor shows in STATUS, and the backlog alert.
    fn publish(&mut self) {
        // What `status` says about directories only the rescan covers (the watch limit).
        let unwatched = self.live.watch().unwatched;
        if self.unwatched_written != Some(unwatched) {
            let now = self.now();
            match self
                .store
                .set_state(&[("unwatched_dirs", unwatched.to_string())], &now)
            {
                Ok(()) => self.unwatched_written = Some(unwatched),
                Err(e) => return self.trouble(&e),
            }
        }
        let local = self.clock.now_local();
        if self.uploaded_today.0 != Some(local.date()) {
            let midnight = format_ts(local.replace_time(time::Time::MIDNIGHT));
            match self.store.uploaded_since(&midnight) {
                Ok(n) => self.uploaded_today = (Some(local.date()), n),
                Err(e) => return self.trouble(&e),
            }
        }
        let (pending, oldest) = match self.store.queue_overview() {
            Ok(x) => x,
            Err(e) => return self.trouble(&e),
        };
        let oldest_age = oldest
            .as_deref()
            .and_then(crate::clock::parse_ts)
            .and_then(|t| Duration::try_from(self.clock.now_utc() - t).ok());
        match oldest_age {
            Some(age) if age >= self.policy.backlog_alert => {
                self.alerts.send(AlertEvent::Backlog {
                    oldest_age: age,
                    pending,
                })
            }
            _ => self.alerts.send(AlertEvent::BacklogCleared),
        }
        let mut q = self.live.queue();
        q.pending = pending;
        q.uploaded_today = self.uploaded_today.1;
        if let (Some((since, _)), Some(down)) =
            (self.endpoint.down_since(), q.endpoint_down.as_mut())
        {
            down.0 = since.elapsed();
        }
    }

    fn write_metrics(&mut self) {
        let Some(path) = self.metrics_path.clone() else {
            return;
        };
        let files = match self.store.counts() {
            Ok(f) => f,
            Err(e) => return self.trouble(&e),
        };
        let oldest_pending_age = self
            .store
            .queue_overview()
            .ok()
            .and_then(|(_, oldest)| oldest)
            .as_deref()
            .and_then(crate::clock::parse_ts)
            .and_then(|t| Duration::try_from(self.clock.now_utc() - t).ok());
        let snapshot = metrics::Snapshot {
            files: &files,
            counters: self.counters.clone(),
            oldest_pending_age,
            endpoint_up: !self.endpoint.is_down(),
            last_scan_unix: self
                .last_scan
                .map(|(t, _)| t.unix_timestamp_nanos() as f64 / 1e9),
            last_scan_duration: self.last_scan.map(|(_, d)| d),
            overflows: self.live.watch().overflows,
            rescans: self.live.rescans.load(std::sync::atomic::Ordering::Relaxed),
        };
        if let Err(e) = metrics::write_atomic(&path, &metrics::render(&snapshot)) {
            log::warn!(
                "writing metrics to {}: {}",
                path.shown(),
                crate::error::describe_io(&e)
            );
        }
    }

    fn trouble(&mut self, e: &crate::error::Error) {
        if e.is_corrupt() && self.fatal.is_none() {
            self.fatal = Some(crate::error::Error::Other(e.to_string()));
        }
        if self.db_trouble.is_none() {
            log::warn!(
                "database trouble: {e}; holding results in memory and retrying (files not yet recorded are found again by the next rescan)"
            );
            self.db_trouble = Some(Instant::now());
            self.live.queue().db_trouble = Some(e.to_string());
        } else {
            log::debug!("database still in trouble: {e}");
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.db_trouble.take() {
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
        self.flush_unsaved();
        let now = self.now();
        if !self.in_flight.is_empty() {
            let ids: Vec<i64> = self.in_flight.keys().copied().collect();
            log::warn!(
                "{} upload(s) still running after the grace period: marked pending",
                ids.len()
            );
            self.store
                .reset_uploading(Some(&ids), &now, "interrupted by shutdown")?;
        }
        self.write_metrics();
        self.store.set_state(
            &[
                ("stopped_at", now.clone()),
                ("heartbeat", now.clone()),
                ("pid", String::new()),
            ],
            &now,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn policy() -> Policy {
        Policy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(600),
            max_attempts: 0,
            newest_first: false,
            settle: Duration::from_secs(5),
            keep_days: 90,
            backlog_alert: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(10),
            folders: Vec::new(),
            extensions: vec!["jpg".into()],
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_jitter_only_lengthens() {
        let p = policy();
        let mut rng = Rng(12345);
        for (attempt, base) in [(1, 5), (2, 10), (3, 20), (4, 40), (8, 600), (60, 600)] {
            for _ in 0..100 {
                let d = p.backoff(attempt, &mut rng);
                assert!(d >= Duration::from_secs(base), "attempt {attempt}: {d:?}");
                assert!(
                    d <= Duration::from_secs(base).mul_f64(1.25),
                    "attempt {attempt}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn the_wall_clock_is_trusted_again_an_hour_after_a_jump() {
        let t0 = datetime!(2026-11-26 12:00 UTC);
        let m0 = Instant::now();
        let mut w = WallClock::new(t0, m0);
        let s = |n: u64| Duration::from_secs(n);
        assert!(w.steady(m0), "trusted from the start");
        assert_eq!(w.observe(t0 + s(10), m0 + s(10)), None);
        // 200 days ahead for 15 s, then back.
        let jump = w.observe(t0 + time::Duration::days(200), m0 + s(20));
        assert!(jump.is_some_and(|j| j.whole_days() >= 199), "{jump:?}");
        assert!(!w.steady(m0 + s(20)));
        assert!(w.observe(t0 + s(35), m0 + s(35)).is_some(), "and back");
        assert!(!w.steady(m0 + s(35) + CLOCK_STEADY - s(1)));
        assert!(w.steady(m0 + s(35) + CLOCK_STEADY));
        // NTP's small steps are not jumps.
        assert_eq!(w.observe(t0 + s(100) + s(2), m0 + s(100)), None);
    }

    #[test]
    fn the_horizon_is_beyond_every_wait_the_owner_sets() {
        let p = policy();
        let mut rng = Rng(99);
        for attempt in 1..40 {
            assert!(p.backoff(attempt, &mut rng) < p.horizon());
        }
        assert!(p.settle < p.horizon());
    }
}
