//! `sega-uploader run`: the whole architecture in one function you can read top to bottom.
//!
//!     watch (inotify) ──┐ Input
//!                       ├──► db (owner) ──Job (bounded)──► upload-1..N
//!     ticker (rescan) ──┘ ◄────────────Report─────────────────┘
//!     signals ──► this thread (supervisor): shutdown, reload, watchdog, STATUS
//!
//! Channel capacities (backpressure):
//! - jobs: 8 × workers (at least 32), built by `pipeline`, which the one-shot `scan` uses
//!   too. Enough that a worker finishing a request finds its next job while the owner is
//!   in a commit or a PostgreSQL round trip, and that a claim (refilling from half) takes
//!   16 rows or more: a claim is a transaction whose fixed cost (on PostgreSQL a round
//!   trip, a commit, the counts' trigger) its rows share. Small enough that on an outage
//!   or a shutdown a few dozen claimed rows at most go back to `pending`, in one
//!   statement (after a crash they are `uploading` until the next start, or another
//!   host's take-over, gives them back, their attempt counted as for an upload the crash
//!   cut). The owner never claims more than the free slots, so its sends never block.
//! - inputs: 1024 messages (each a batch of up to ~1000 files). When the owner cannot keep
//!   up, the watcher blocks, the kernel's inotify queue fills and overflows, and the
//!   overflow triggers a full rescan: slower, never lossy.
//! - reports: unbounded in type, bounded in fact by the number of jobs in flight.
//! - control channels and signals: unbounded; a handful of messages in a lifetime.
//!
//! Shutdown order: signal → STOPPING=1 → stop the producers (watch, ticker) → the owner
//! stops claiming, returns unstarted jobs, closes the job channel, and saves results until
//! the grace runs out → the process exits 0 without waiting for workers still in a request
//! (their rows were marked `pending`). Any thread that ends on its own takes the process down
//! with exit 1, so systemd restarts it rather than leaving it half-alive.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::alerts::Alerts;
use crate::clock::Clock;
use crate::config::{self, Config};
use crate::error::{Error, Result, EXIT_FAILURE, EXIT_OK};
use crate::health::Monitor;
use crate::identity::Identity;
use crate::layout::Show;
use crate::live::Live;
use crate::logging;
use crate::notify;
use crate::owner::{Channels, Committer, Control, Outlets, Owner};
use crate::store::{self, Ledger};
use crate::ticker::{self, TickerControl};
use crate::upload::{self, Report, RequestSettings};
use crate::watch::{self, WatchControl};

/// A thread's end, reported to the supervisor.
struct Exit {
    name: String,
    result: std::result::Result<Result<()>, String>,
}

/// Sends the thread's end to the supervisor even when it panics.
struct ExitGuard {
    name: String,
    tx: Sender<Exit>,
    done: bool,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.tx.send(Exit {
                name: self.name.clone(),
                result: Err("panicked".into()),
            });
        }
    }
}

fn watched<F>(name: &str, exits: &Sender<Exit>, f: F) -> Result<thread::JoinHandle<()>>
where
    F: FnOnce() -> Result<()> + Send + 'static,
{
    let mut guard = ExitGuard {
        name: name.to_owned(),
        tx: exits.clone(),
        done: false,
    };
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let result = f();
            guard.done = true;
            let _ = guard.tx.send(Exit {
                name: guard.name.clone(),
                result: Ok(result),
            });
        })
        .map_err(|e| Error::system(format!("starting thread {name}"), e))
}

pub fn run(config_path: &Path, config: Config, clock: Clock) -> Result<i32> {
    // glibc gives each thread that allocates its own malloc arena, and an arena keeps what it
    // once held: after a burst of uploads the daemon idled at 11 MiB RSS instead of 9.5.
    // Two arenas are plenty for one busy thread (the DB owner) and workers that mostly wait.
    // SAFETY: mallopt only tunes the allocator; no thread of ours is running yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    if let Some(f) = &config.log.file {
        logging::set_file(Some(f)).map_err(|e| Error::io("opening log file", f, e))?;
    }
    let config = Arc::new(config);
    let opened = store::open(&config, store::Role::Daemon)?;
    let lock = opened.lock;
    let store = opened.ledger;
    // The scope is resolved once: a reload keeps it (`database.scope` needs a restart).
    let scope = Identity::from_config(&config).scope;
    let settings = Arc::new(
        RequestSettings::new(&config, scope.clone()).map_err(|e| e.in_config(config_path))?,
    );
    log::info!(
        "sega-uploader {} starting: folders {} under {}, endpoint {}, {} worker(s), {}",
        env!("CARGO_PKG_VERSION"),
        watch::describe_folders(&config.watch.folders),
        config.watch.root.shown(),
        config.upload.url.redacted(),
        config.upload.workers,
        store.describe()
    );
    if let Some(tls) = &settings.route.tls {
        log::info!("TLS: {}", tls.describe());
    }
    if let Some(p) = &config.upload.proxy {
        log::info!("every request goes through the proxy {}", p.redacted());
    }
    if !config.watch.root.is_dir() {
        log::warn!(
            "{} does not exist yet: waiting for it to appear",
            config.watch.root.shown()
        );
    }

    let monitor = Arc::new(Monitor::new());
    if let Some(w) = notify::watchdog_interval() {
        crate::health::set_watchdog(w);
    }
    let live = Arc::new(Live::default());
    let (exit_tx, exit_rx) = unbounded::<Exit>();
    let signals = spawn_signals()?;

    // The DB owner and the upload workers.
    let alerts = match &config.alerts.webhook_url {
        Some(url) => Alerts::spawn(
            url.clone(),
            settings.route.clone(),
            config.alerts.after,
            clock.clone(),
        )
        .map(|(a, _)| a)
        .map_err(|e| Error::system("starting thread alerts", e))?,
        None => Alerts::disabled(),
    };
    // Rescan requests (inotify overflow, database recovered) go to the ticker; a few can
    // wait, more would mean the same scan again.
    let (rescan_tx, rescan_rx) = bounded::<&'static str>(4);
    let outlets = Outlets {
        beat: monitor.register("db"),
        live: live.clone(),
        alerts,
        metrics_path: config.metrics.textfile.clone(),
        rescan: Some(rescan_tx.clone()),
        committer: committer(&config)?,
    };
    let Pipeline {
        mut owner,
        reports: reports_rx,
        pool,
        workers,
    } = pipeline(&config, &clock, store, settings, outlets)?;
    // Before READY: the `ready:` line and the first STATUS show the ledger's real counts.
    owner.start()?;
    // Workers are not joined: at shutdown one may sit in a request past the grace.
    drop(workers);
    let (inputs_tx, inputs_rx) = bounded(1024);
    let (owner_tx, owner_rx) = unbounded::<Control>();
    let owner_handle = watched("db", &exit_tx, move || {
        owner.run(Channels {
            inputs: inputs_rx,
            reports: reports_rx,
            control: owner_rx,
        })
    })?;

    // The watcher: READY only once every watch is in place.
    let (watch_ctl_tx, watch_ctl_rx) = unbounded::<WatchControl>();
    let (ready_tx, ready_rx) = bounded(1);
    let watch_beat = monitor.register("watch");
    let watcher = watch::Watcher::new(
        config.clone(),
        clock.clone(),
        inputs_tx.clone(),
        rescan_tx,
        live.clone(),
    )?;
    watched("watch", &exit_tx, move || {
        watcher.run(watch_ctl_rx, ready_tx, watch_beat)
    })?;
    select! {
        recv(ready_rx) -> _ => {}
        recv(exit_rx) -> e => return Ok(thread_died(e.ok())),
    }

    // The ticker's first scan is the catch-up scan, after READY.
    let (ticker_ctl_tx, ticker_ctl_rx) = unbounded::<TickerControl>();
    let ticker_beat = monitor.register("ticker");
    let (tc, tclock, tinputs) = (config.clone(), clock.clone(), inputs_tx.clone());
    watched("ticker", &exit_tx, move || {
        ticker::run(tc, tclock, tinputs, rescan_rx, ticker_ctl_rx, ticker_beat)
    })?;
    drop(inputs_tx);

    let folders = config.watch.folders.len();
    let status = live.status_line(folders);
    notify::ready(&status);
    log::info!("ready: {status}");

    // The supervisor: signals, the watchdog (only while every loop makes progress and some
    // upload worker is not stuck), and STATUS whenever it changes.
    let watchdog = notify::watchdog_interval();
    let ping_every = watchdog.map(|w| w / 2);
    let mut next_ping = Instant::now();
    let mut last_status = status;
    let mut config = config;
    let mut lost_lock = false;
    loop {
        // The lock file removed (a clean-up script): another daemon could start on the same
        // database and send again what this one is sending. Stop, loudly.
        if lock.as_ref().is_some_and(|l| !l.still_in_place()) {
            log::error!(
                "{} was removed while the daemon held it: another sega-uploader could now start on the same database; stopping (systemd starts it again with a new lock)",
                crate::lock::lock_path(&config.database.path).shown()
            );
            lost_lock = true;
            break;
        }
        for o in pool.newly_overdue() {
            log::warn!(
                "upload-{} has been on {} for {}, past its deadline (a read blocked on a hung mount?); if every worker sticks like this, the watchdog stops and systemd restarts the daemon",
                o.worker,
                o.path.shown(),
                crate::clock::human_duration(o.running)
            );
        }
        if let (Some(w), Some(every)) = (watchdog, ping_every) {
            if Instant::now() >= next_ping {
                next_ping = Instant::now() + every;
                let mut stale = monitor.stale(w);
                if pool.all_stuck() {
                    stale.push("the upload workers (every one is stuck)");
                }
                if stale.is_empty() {
                    notify::watchdog();
                } else {
                    log::warn!(
                        "withholding the watchdog ping: no progress within {} from {}",
                        crate::clock::human_duration(w),
                        stale.join(", ")
                    );
                }
            }
        }
        let status = live.status_line(config.watch.folders.len());
        if status != last_status {
            notify::status(&status);
            last_status = status;
        }
        let wait = ping_every
            .map(|_| next_ping.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        select! {
            recv(signals) -> sig => match sig {
                Ok(SIGHUP) => {
                    notify::reloading();
                    config = reload(config_path, config, &scope, &watch_ctl_tx, &ticker_ctl_tx, &owner_tx);
                    notify::ready(&live.status_line(config.watch.folders.len()));
                }
                Ok(_) | Err(_) => break,
            },
            recv(exit_rx) -> e => return Ok(thread_died(e.ok())),
            default(wait) => {}
        }
    }

    let grace = config.shutdown_grace;
    let msg = format!(
        "stopping: letting uploads in flight finish (up to {})",
        crate::clock::human_duration(grace)
    );
    notify::stopping(&msg);
    log::info!("{msg}");
    drop(watch_ctl_tx);
    drop(ticker_ctl_tx);
    if owner_tx.send(Control::Shutdown { grace }).is_err() {
        return Ok(EXIT_FAILURE);
    }
    // The owner bounds its own wait by the grace; its database calls by the busy timeout.
    let joined = owner_handle.join();
    let code = loop {
        match exit_rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Exit {
                name,
                result: Ok(Ok(())),
            }) if name == "db" => break EXIT_OK,
            Ok(Exit {
                name,
                result: Ok(Err(e)),
            }) if name == "db" => {
                log::error!("database owner: {e}");
                break EXIT_FAILURE;
            }
            Ok(Exit {
                name,
                result: Err(_),
            }) if name == "db" => break EXIT_FAILURE,
            Ok(_) => continue,
            Err(_) if joined.is_ok() => break EXIT_OK,
            Err(_) => break EXIT_FAILURE,
        }
    };
    log::info!("stopped");
    Ok(if lost_lock { EXIT_FAILURE } else { code })
}

/// On a PostgreSQL ledger, the thread that saves results on a connection of its own
/// (`owner::Committer`: the owner claims and records meanwhile). SQLite takes one writer
/// at a time: there the owner commits results itself.
/// Without that second session (the server's `max_connections` reached, say) the daemon
/// runs on the one it has, slower over a distant link, rather than not at all.
fn committer(config: &Config) -> Result<Option<Committer>> {
    if config.database.url.is_none() {
        return Ok(None);
    }
    let ledger = match store::open(config, store::Role::Results) {
        Ok(opened) => opened.ledger,
        Err(e) => {
            log::warn!(
                "a second PostgreSQL session, to save upload results while files are claimed, could not be opened ({e}): results are saved on the daemon's one session (each batch then holds up the next claim)"
            );
            return Ok(None);
        }
    };
    Committer::spawn(ledger)
        .map(Some)
        .map_err(|e| Error::system("starting thread db-results", e))
}

/// The owner and the upload workers, wired to each other: what `run` and `scan` share.
pub struct Pipeline {
    pub owner: Owner,
    /// The workers' reports, for the owner's loop.
    pub reports: Receiver<Report>,
    /// What each worker is on and since when (the supervisor's stuck-worker check).
    pub pool: Arc<crate::health::Workers>,
    pub workers: Vec<thread::JoinHandle<()>>,
}

/// How many jobs the channel holds for `workers` workers: 8 × workers, at least 32 (the
/// module doc says why). BENCHMARKS.md: "A larger job channel" (2 × → 4 × workers) and
/// "Claims of 16 rows" (4 × → 8 ×), what each was worth.
fn job_capacity(workers: usize) -> usize {
    (8 * workers).max(32)
}

/// Builds the upload pipeline in one step: the job channel, the gate and the rate limiter
/// the workers share, `upload.workers` named workers, and the owner that feeds them.
///
/// The job channel holds [`job_capacity`] jobs, for the daemon and `scan` alike: a scan
/// gives back to `pending` what it did not start, as the daemon does.
pub fn pipeline(
    config: &Config,
    clock: &Clock,
    store: Box<dyn Ledger>,
    settings: Arc<RequestSettings>,
    outlets: Outlets,
) -> Result<Pipeline> {
    let workers = config.upload.workers;
    let capacity = job_capacity(workers);
    let (jobs_tx, jobs_rx) = bounded(capacity);
    let (reports_tx, reports_rx) = unbounded();
    let limiter = config
        .upload
        .max_kib_s
        .map(|k| Arc::new(upload::RateLimiter::new(k * 1024)));
    let gate = Arc::new(upload::Gate::default());
    let pool = Arc::new(crate::health::Workers::new(workers));
    let handles = upload::spawn_workers(
        workers,
        jobs_rx.clone(),
        reports_tx,
        limiter,
        gate.clone(),
        clock.clone(),
        pool.clone(),
    )
    .map_err(|e| Error::system("starting upload workers", e))?;
    let owner = Owner::new(
        store,
        clock.clone(),
        config,
        settings,
        jobs_tx,
        jobs_rx,
        capacity,
        gate,
        outlets,
    );
    Ok(Pipeline {
        owner,
        reports: reports_rx,
        pool,
        workers: handles,
    })
}

fn thread_died(exit: Option<Exit>) -> i32 {
    match exit {
        Some(Exit {
            name,
            result: Ok(Ok(())),
        }) => log::error!("thread {name} stopped unexpectedly: exiting so systemd restarts us"),
        Some(Exit {
            name,
            result: Ok(Err(e)),
        }) => log::error!("thread {name} failed: {e}: exiting so systemd restarts us"),
        Some(Exit {
            name,
            result: Err(p),
        }) => log::error!("thread {name} {p}: exiting so systemd restarts us"),
        None => log::error!("a thread ended unexpectedly: exiting"),
    }
    EXIT_FAILURE
}

/// SIGTERM, SIGINT and SIGHUP, forwarded into a channel by a thread of their own.
fn spawn_signals() -> Result<Receiver<i32>> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Error::system("installing signal handlers", e))?;
    let (tx, rx) = unbounded();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| Error::system("starting thread signals", e))?;
    Ok(rx)
}

/// SIGHUP: re-read the config; an invalid one is refused and the old one kept.
fn reload(
    path: &Path,
    old: Arc<Config>,
    scope: &str,
    watch: &Sender<WatchControl>,
    ticker: &Sender<TickerControl>,
    owner: &Sender<Control>,
) -> Arc<Config> {
    let new = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            log::error!("reload refused, keeping the running configuration:\n{e}");
            return old;
        }
    };
    for key in old.restart_needed(&new) {
        log::warn!("{key} changed: that takes effect only after a restart");
    }
    logging::set_level(logging::env_level().unwrap_or(new.log.level));
    if let Err(e) = logging::set_file(new.log.file.as_deref()) {
        log::error!("reopening log file: {e}");
    }
    let settings = match RequestSettings::new(&new, scope.to_owned()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            log::error!(
                "reload refused, keeping the running configuration:\n{}",
                e.in_config(path)
            );
            return old;
        }
    };
    let new = Arc::new(new);
    let _ = watch.send(WatchControl::Reload(new.clone()));
    let _ = ticker.send(TickerControl::Reload(new.clone()));
    let _ = owner.send(Control::Reload(Box::new((*new).clone()), settings));
    log::info!("configuration reloaded from {}", path.shown());
    new
}
