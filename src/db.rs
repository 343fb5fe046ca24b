//! The DB owner: the one thread that writes the database, and the scheduler of all uploads.
//!
//! Everything that changes state sends it a message: the watcher and the scanner send what
//! they saw (`Input`), the upload workers send `Report`s, the supervisor sends `Control`.
//! The database is the queue: pending work lives in rows, and the owner claims only as many
//! as fit in the job channel, so a backlog of a million files costs disk, not memory.
//!
//! It also keeps the endpoint's health: after 3 consecutive transport errors or 5xx answers
//! the pool pauses and a single probe is sent per backoff interval; a 429/503 with
//! Retry-After pauses the pool for that long.
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
use crate::config::{Config, Order};
use crate::error::Result;
use crate::health::Beat;
use crate::layout::Show;
use crate::layout::{display_name, EntryType, Seen, Version};
use crate::live::Live;
use crate::metrics;
use crate::store::{Claimed, Completion, Disposition, Ledger, Observation};
use crate::upload::{
    classify_status, is_endpoint_failure, Class, Gate, Job, Outcome, Report, RequestSettings,
};

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
        }
    }

    /// Exponential backoff from `initial` to `max`; the jitter only lengthens (up to +25%).
    pub fn backoff(&self, attempt: i64, rng: &mut Rng) -> Duration {
        let exp = (attempt.max(1) - 1).min(30) as u32;
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        base + base.mul_f64(rng.unit() / 4.0)
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

/// Consecutive endpoint failures that declare an outage.
const DOWN_AFTER: u32 = 3;
/// The owner wakes at least this often, idle or not (watchdog, heartbeat).
/// How often the heartbeat row is written (status/check read it).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Endpoint {
    failures: u32,
    down_since: Option<(Instant, OffsetDateTime)>,
    last_error: String,
    probe_wait: Duration,
    next_probe: Instant,
    probe_in_flight: bool,
    paused_until: Option<Instant>,
}

impl Endpoint {
    fn new() -> Endpoint {
        Endpoint {
            failures: 0,
            down_since: None,
            last_error: String::new(),
            probe_wait: Duration::ZERO,
            next_probe: Instant::now(),
            probe_in_flight: false,
            paused_until: None,
        }
    }

    fn is_down(&self) -> bool {
        self.down_since.is_some()
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
            endpoint: Endpoint::new(),
            rng: Rng::seeded(),
            mode: Mode::Daemon,
            maybe_due: true,
            next_due: None,
            unsaved: Vec::new(),
            db_trouble: None,
            warned_hostile: HashSet::new(),
            last_heartbeat: None,
            last_prune_day: None,
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
                log::error!("the database file is damaged: stopping (restore a backup, or move it aside: the next scan re-finds every image on disk)");
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

    /// The one-shot scan's loop: one attempt for each of `ids`, then return.
    pub fn run_oneshot(mut self, ids: Vec<i64>, reports: &Receiver<Report>) -> Result<Stats> {
        self.mode = Mode::Oneshot { queue: ids.into() };
        loop {
            self.dispatch();
            let queue_empty = matches!(&self.mode, Mode::Oneshot { queue } if queue.is_empty());
            if self.in_flight.is_empty() && (queue_empty || self.endpoint.is_down()) {
                break;
            }
            if self.in_flight.is_empty() {
                // Paused by a Retry-After: wait it out, it is part of the one attempt.
                std::thread::sleep(self.sleep_for());
                continue;
            }
            match reports.recv() {
                Ok(r) => self.on_reports(std::iter::once(r).chain(reports.try_iter()).collect()),
                Err(_) => break,
            }
        }
        self.flush_unsaved();
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

    fn sleep_for(&self) -> Duration {
        let mut wait = crate::health::max_sleep();
        let now = Instant::now();
        if let Some(until) = self.endpoint.paused_until {
            wait = wait.min(until.saturating_duration_since(now));
        }
        if self.endpoint.is_down() && !self.endpoint.probe_in_flight {
            wait = wait.min(self.endpoint.next_probe.saturating_duration_since(now));
        }
        if let Some(due) = self.next_due {
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

    /// Claims due rows into free job slots (or one probe while the endpoint is down).
    fn dispatch(&mut self) {
        let Some(tx) = &self.jobs_tx else { return };
        if self.db_trouble.is_some() && !self.unsaved.is_empty() {
            return;
        }
        let now_i = Instant::now();
        if let Some(until) = self.endpoint.paused_until {
            if now_i < until {
                return;
            }
            self.endpoint.paused_until = None;
            self.maybe_due = true;
        }
        let mut probe = false;
        let mut solo = false;
        let free = if self.endpoint.is_down() {
            if self.endpoint.probe_in_flight
                || now_i < self.endpoint.next_probe
                || !self.in_flight.is_empty()
            {
                return;
            }
            probe = true;
            solo = true;
            1
        } else if self.gate.failing() {
            // The last request failed for endpoint reasons: one at a time until one gets
            // an answer (or three in a row fail and the outage is declared).
            if !self.in_flight.is_empty() {
                return;
            }
            solo = true;
            1
        } else {
            self.capacity.saturating_sub(tx.len())
        };
        if free == 0 {
            return;
        }
        if !probe && !self.maybe_due {
            match self.next_due {
                Some(t) if t <= self.clock.now_utc() => {}
                _ => return,
            }
        }
        let now = self.now();
        let claimed = match &mut self.mode {
            Mode::Daemon => self.store.claim_due(&now, free, self.policy.newest_first),
            Mode::Oneshot { queue } => {
                let ids: Vec<i64> = (0..free).map_while(|_| queue.pop_front()).collect();
                self.store.claim_ids(&ids, &now)
            }
        };
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => return self.trouble(&e),
        };
        if claimed.len() < free && matches!(self.mode, Mode::Daemon) {
            self.maybe_due = false;
            self.next_due = match self.store.next_due() {
                Ok(t) => t.as_deref().and_then(crate::clock::parse_ts),
                Err(e) => return self.trouble(&e),
            };
        }
        if probe && !claimed.is_empty() {
            self.endpoint.probe_in_flight = true;
            log::debug!(
                "probing the endpoint with {}",
                display_name(claimed[0].path.as_os_str())
            );
        }
        for c in claimed {
            self.in_flight.insert(c.id, c.clone());
            let job = Job {
                file: c,
                probe,
                solo,
                settings: self.settings.clone(),
            };
            // Never blocks: only this thread sends, and it sent no more than the free slots.
            if tx.send(job).is_err() {
                // Every worker is gone: that is a dead thread, which the supervisor sees.
                return;
            }
        }
    }

    fn on_reports(&mut self, batch: Vec<Report>) {
        let now_t = self.clock.now_utc();
        let now = format_ts(now_t);
        let mut completions = Vec::with_capacity(batch.len());
        let mut handed_back = Vec::new();
        for r in batch {
            self.in_flight.remove(&r.job.file.id);
            if matches!(r.outcome, Outcome::NotStarted) {
                handed_back.push(r.job.file.id);
                continue;
            }
            if let Some(note) = &r.note {
                log::warn!("{note}");
            }
            completions.push(self.judge(r, now_t));
        }
        self.unsaved.extend(completions);
        self.flush_unsaved_at(&now);
        if !handed_back.is_empty() {
            self.give_back(&handed_back);
        }
    }

    fn flush_unsaved(&mut self) {
        let now = self.now();
        self.flush_unsaved_at(&now);
    }

    fn flush_unsaved_at(&mut self, now: &str) {
        if self.unsaved.is_empty() {
            return;
        }
        match self.store.complete(&self.unsaved, now) {
            Ok(()) => {
                self.unsaved.clear();
                self.maybe_due = true;
                self.recovered();
            }
            Err(e) => self.trouble(&e),
        }
    }

    /// Turns a worker's report into the row's next state, and updates the endpoint's health.
    fn judge(&mut self, r: Report, now: OffsetDateTime) -> Completion {
        let f = &r.job.file;
        let probe = r.job.probe;
        if probe {
            self.endpoint.probe_in_flight = false;
        }
        let mut c = Completion {
            file_id: f.id,
            attempt: f.attempt,
            version: f.version,
            started_at: format_ts(r.started_at),
            duration_ms: r.duration.as_millis() as i64,
            http_status: None,
            response_body: None,
            response_json: None,
            error: None,
            disposition: Disposition::Skipped,
        };
        let name = display_name(f.path.as_os_str());
        let exhausted = self.policy.max_attempts > 0
            && f.attempt >= i64::from(self.policy.max_attempts)
            && !probe;
        match r.outcome {
            Outcome::Answered(resp) => {
                c.http_status = Some(resp.status);
                c.response_json = resp.json.clone();
                c.response_body = Some(resp.body.clone());
                let class = classify_status(resp.status);
                if is_endpoint_failure(resp.status) {
                    self.endpoint_failed(&format!("HTTP {}", resp.status), probe);
                } else {
                    self.endpoint_answered();
                }
                if let (Some(ra), true) =
                    (resp.retry_after, resp.status == 429 || resp.status == 503)
                {
                    let pause = ra.min(self.policy.max);
                    log::warn!(
                        "endpoint answered {} with Retry-After {}: pausing all uploads",
                        resp.status,
                        human_duration(pause)
                    );
                    self.endpoint.paused_until = Some(Instant::now() + pause);
                    self.take_back_queued();
                }
                match class {
                    Class::Success => {
                        self.stats.uploaded += 1;
                        log::info!(
                            "uploaded {name} ({} bytes, HTTP {}, {} ms)",
                            f.version.size,
                            resp.status,
                            c.duration_ms
                        );
                        c.disposition = Disposition::Uploaded;
                    }
                    Class::Retry => {
                        let wait =
                            match (resp.retry_after, resp.status == 429 || resp.status == 503) {
                                (Some(ra), true) => ra.min(self.policy.max),
                                _ => self.policy.backoff(f.attempt, &mut self.rng),
                            };
                        c.error = Some(format!("HTTP {}", resp.status));
                        c.disposition = self.retry_or_fail(
                            now,
                            wait,
                            probe,
                            exhausted,
                            &name,
                            c.error.as_deref(),
                        );
                    }
                    Class::Failed => {
                        self.stats.failed += 1;
                        let err = if (300..400).contains(&resp.status) {
                            format!(
                                "HTTP {}: redirect to {} not followed",
                                resp.status,
                                resp.location.as_deref().unwrap_or("(no Location)")
                            )
                        } else {
                            format!("HTTP {}", resp.status)
                        };
                        log::error!(
                            "{name}: {err}: marked failed (retry with `sega-uploader retry`)"
                        );
                        c.error = Some(err);
                        c.disposition = Disposition::Failed;
                    }
                }
                if let Some(e) = resp.body_error {
                    let joined = format!(
                        "{}; response body cut short: {e}",
                        c.error.take().unwrap_or_default()
                    );
                    c.error = Some(joined.trim_start_matches("; ").to_owned());
                }
            }
            Outcome::Transport(e) => {
                self.endpoint_failed(&e, probe);
                let wait = self.policy.backoff(f.attempt, &mut self.rng);
                c.disposition = self.retry_or_fail(now, wait, probe, exhausted, &name, Some(&e));
                c.error = Some(e);
            }
            Outcome::Unreadable(e) => {
                let wait = self.policy.backoff(f.attempt, &mut self.rng);
                let e = format!("cannot read the file: {e}");
                c.disposition = self.retry_or_fail(now, wait, false, exhausted, &name, Some(&e));
                c.error = Some(e);
            }
            Outcome::Vanished => {
                self.stats.skipped += 1;
                log::info!("{name}: vanished before it was uploaded: skipped");
                c.error = Some("vanished before upload".into());
            }
            Outcome::NotRegular(t) => {
                self.stats.skipped += 1;
                log::warn!("{name}: no longer a regular file ({t}): skipped");
                c.error = Some(format!("not a regular file ({t})"));
            }
            Outcome::NotAnImage => {
                self.stats.skipped += 1;
                log::warn!("{name}: not an image (content does not match its extension): skipped");
                c.error = Some("not an image".into());
            }
            Outcome::Incomplete { since } => {
                self.stats.not_ready += 1;
                let at = now + self.policy.settle.max(Duration::from_secs(1));
                log::debug!("{name}: no end-of-image marker yet, looking again later");
                c.error = Some("incomplete: no end-of-image marker yet".into());
                c.disposition = Disposition::NotReady {
                    at: format_ts(at),
                    incomplete_since: Some(format_ts(since)),
                };
            }
            // Filtered out by on_reports before judging.
            Outcome::NotStarted => {}
            Outcome::Changed(v) => {
                self.stats.not_ready += 1;
                log::info!(
                    "{name}: changed while queued ({} bytes now): will send the new version",
                    v.size
                );
                c.disposition = Disposition::Changed {
                    version: v,
                    at: format_ts(settle_time(now, v.mtime_ns, self.policy.settle)),
                };
            }
        }
        self.count(&c, &name);
        c
    }

    /// Metrics counters, today's count and the permanent-failure alert for one completion.
    fn count(&mut self, c: &Completion, name: &str) {
        let attempted = match c.disposition {
            Disposition::Uploaded => {
                self.counters.success += 1;
                self.uploaded_today.1 += 1;
                true
            }
            Disposition::Retry { .. } => {
                self.counters.retry += 1;
                true
            }
            Disposition::Failed => {
                self.counters.failed += 1;
                self.alerts.send(AlertEvent::FileFailed {
                    path: name.to_owned(),
                    error: c.error.clone().unwrap_or_default(),
                });
                true
            }
            _ => false,
        };
        if attempted {
            self.counters
                .observe(Duration::from_millis(c.duration_ms.max(0) as u64));
        }
    }

    fn retry_or_fail(
        &mut self,
        now: OffsetDateTime,
        wait: Duration,
        probe: bool,
        exhausted: bool,
        name: &str,
        error: Option<&str>,
    ) -> Disposition {
        if exhausted {
            self.stats.failed += 1;
            log::error!(
                "{name}: giving up after {} attempts ({}): marked failed",
                self.policy.max_attempts,
                error.unwrap_or("error")
            );
            return Disposition::Failed;
        }
        self.stats.retry += 1;
        if !self.endpoint.is_down() {
            log::info!(
                "{name}: {}; retrying in {}",
                error.unwrap_or("error"),
                human_duration(wait)
            );
        }
        Disposition::Retry {
            at: format_ts(now + wait),
            counted: !probe,
        }
    }

    fn endpoint_failed(&mut self, error: &str, probe: bool) {
        self.endpoint.failures += 1;
        self.endpoint.last_error = error.to_owned();
        if self.endpoint.is_down() {
            if probe {
                self.endpoint.probe_wait = (self.endpoint.probe_wait * 2).min(self.policy.max);
                self.endpoint.next_probe = Instant::now() + self.endpoint.probe_wait;
            }
            return;
        }
        if self.endpoint.failures >= DOWN_AFTER {
            self.endpoint.down_since = Some((Instant::now(), self.clock.now_utc()));
            self.endpoint.probe_wait = self.policy.initial;
            self.endpoint.next_probe = Instant::now() + self.endpoint.probe_wait;
            self.alerts.send(AlertEvent::EndpointDown {
                error: error.to_owned(),
            });
            self.live.queue().endpoint_down = Some((Duration::ZERO, error.to_owned()));
            log::warn!(
                "endpoint {} is down ({} consecutive failures, last: {error}): pausing uploads, one probe every {} or longer",
                self.settings.shown_url,
                self.endpoint.failures,
                human_duration(self.endpoint.probe_wait)
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
    }

    fn endpoint_answered(&mut self) {
        self.endpoint.failures = 0;
        if let Some((since, _)) = self.endpoint.down_since.take() {
            self.alerts.send(AlertEvent::EndpointUp {
                down_for: since.elapsed(),
            });
            self.live.queue().endpoint_down = None;
            log::info!(
                "endpoint is back after {}: resuming uploads",
                human_duration(since.elapsed())
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
        let today = self.clock.today_local();
        if self.last_prune_day != Some(today) {
            self.last_prune_day = Some(today);
            let cutoff = today - time::Duration::days(i64::from(self.policy.keep_days));
            match self.store.prune(&crate::layout::format_date(cutoff)) {
                Ok(0) => {}
                Ok(n) => log::info!(
                    "pruned {n} row(s) of date folders before {}",
                    crate::layout::format_date(cutoff)
                ),
                Err(e) => self.trouble(&e),
            }
        }
    }

    /// Refreshes what the supervisor shows in STATUS, and the backlog alert.
    fn publish(&mut self) {
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
        if let (Some((since, _)), Some(down)) = (self.endpoint.down_since, q.endpoint_down.as_mut())
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
            if let Some(tx) = &self.rescan {
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

/// When a file found by a scan may be sent: `settle` after its mtime, but never later than
/// `settle` from now (a camera clock running ahead must not park a file for hours).
pub fn settle_time(now: OffsetDateTime, mtime_ns: i64, settle: Duration) -> OffsetDateTime {
    let mtime = OffsetDateTime::from_unix_timestamp_nanos(i128::from(mtime_ns)).unwrap_or(now);
    (mtime + settle).clamp(now, now + settle)
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
    fn settle_time_is_bounded_both_ways() {
        let now = datetime!(2026-11-26 12:00 UTC);
        let ns = |t: OffsetDateTime| t.unix_timestamp_nanos() as i64;
        let s = Duration::from_secs(5);
        assert_eq!(
            settle_time(now, ns(datetime!(2026-11-26 11:00 UTC)), s),
            now
        );
        assert_eq!(
            settle_time(now, ns(datetime!(2026-11-26 11:59:58 UTC)), s),
            datetime!(2026-11-26 12:00:03 UTC)
        );
        assert_eq!(
            settle_time(now, ns(datetime!(2026-11-27 12:00 UTC)), s),
            datetime!(2026-11-26 12:00:05 UTC)
        );
    }
}
