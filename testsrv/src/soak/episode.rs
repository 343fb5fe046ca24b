//! One episode: a fresh tree, endpoint, ledger database and daemon; files arriving and
//! faults injected for a while; then the end: faults stopped (each injector puts its part of
//! the world back), the endpoint Ok, the full config reloaded, the clock true; a wait (with a
//! deadline) until every file on disk has arrived or the daemon has had nothing pending for
//! a while; SIGTERM; and the oracle's verdict.
//!
//! The wiring, top to bottom (`run`): the endpoint (`Server`) whose settled requests feed
//! the `ledger` through the collector; the `tree` and its `writer`; the daemon; the four
//! injectors sharing one `Ctx`. The main thread watches the daemon (restarting it if it
//! ends on its own), prints progress and ends the episode.

use std::fmt;
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::clock::ModelClock;
use super::daemon::{self, ConfigSpec, Daemon, Life};
use super::inject::{self, Ctx, Db};
use super::ledger::{self, Ledger};
use super::oracle::{self, Verdict};
use super::report::{self, mib};
use super::tally::{Counts, Tally};
use super::tree::Tree;
use super::writer;
use super::Options;
use crate::daemon as harness;
use crate::pg;
use crate::rng::Rng;
use crate::{Mode, Server};

const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Which ledger an episode's daemon uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// What an episode is to be.
pub struct Plan {
    pub n: usize,
    pub backend: Backend,
    /// Seconds of files and faults.
    pub secs: f64,
    /// Start this many seconds before midnight (`SEGA_TEST_NOW`), if set.
    pub before_midnight: Option<f64>,
    /// The clock step the daemon starts with (seconds).
    pub start_step: i64,
}

/// What an episode did, and the verdict.
pub struct Episode {
    pub n: usize,
    pub backend: Backend,
    pub midnight: bool,
    pub dir: PathBuf,
    pub fault_secs: f64,
    pub drain_secs: f64,
    pub drain_end: &'static str,
    pub verdict: Verdict,
    pub counts: Counts,
    pub starts: u32,
    pub lives: Vec<Life>,
    pub max_hwm_kib: u64,
    pub final_stop: String,
    pub sentinels: usize,
    pub aborted: Option<String>,
    /// The daemon's log (stderr), for the summary's counts.
    pub daemon_log: String,
    /// Stories of lost versions and failed checks.
    pub details: Vec<String>,
}

impl Episode {
    pub fn passed(&self) -> bool {
        self.aborted.is_none() && self.verdict.failures().is_empty()
    }
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The ledger database: an SQLite file in the episode's directory, or a fresh database on
/// the process's PostgreSQL cluster.
fn make_db(backend: Backend, state: &std::path::Path) -> Result<(Db, Option<String>), String> {
    match backend {
        Backend::Sqlite => Ok((Db::Sqlite(state.join("sega.db")), None)),
        Backend::Postgres => {
            let cluster = pg::Cluster::try_shared()?;
            let pg = cluster.handle();
            let db = pg.create_database();
            let conninfo = pg.conninfo(&db);
            Ok((Db::Postgres { pg, db }, Some(conninfo)))
        }
    }
}

/// Stops the injectors and the writer when the episode ends, however it ends: a panic in
/// the engine (a test's failed assertion) must not leave them hitting a daemon. Once they
/// are gone, the last handle on the `Daemon` kills it.
struct Halt {
    ctx: Arc<Ctx>,
    writer: Arc<AtomicBool>,
}

impl Drop for Halt {
    fn drop(&mut self) {
        self.ctx.stop.store(true, Ordering::Relaxed);
        self.writer.store(true, Ordering::Relaxed);
    }
}

struct Threads {
    writer: JoinHandle<std::io::Result<()>>,
    injectors: Vec<(&'static str, JoinHandle<Result<(), String>>)>,
}

pub fn run(
    opts: &Options,
    plan: &Plan,
    work: &std::path::Path,
    faults_log: Arc<Mutex<File>>,
    run_started: Instant,
) -> Result<Episode, String> {
    let dir = work.join(format!("ep{}", plan.n));
    let state = dir.join("state");
    fs::create_dir_all(&state).map_err(io_err("episode directory"))?;
    let started = Instant::now();
    let offset = plan.before_midnight.map_or(0, |lead| {
        (ModelClock::secs_to_real_midnight() - lead) as i64
    });
    let clock = Arc::new(
        ModelClock::new(started, offset, &dir.join("clock-step"), plan.start_step)
            .map_err(io_err("clock step file"))?,
    );
    let ledger = Arc::new(Ledger::new(started));
    let server = Arc::new(Server::start("127.0.0.1:0").map_err(io_err("test endpoint"))?);
    // The ledger keeps what it needs; the server's own record list stays short.
    server.set_max_records(1000);
    let collector = ledger::collector(ledger.clone(), server.subscribe());
    let tree = Arc::new(
        Tree::create(
            dir.join("data"),
            &dir,
            ledger.clone(),
            clock.clone(),
            opts.pace.big_files,
        )
        .map_err(io_err("tree"))?,
    );
    let (db, conninfo) = make_db(plan.backend, &state)?;
    let config = ConfigSpec {
        root: tree.root.clone(),
        db: state.join("sega.db"),
        pg: conninfo,
        url: server.url(),
        workers: opts.workers,
        log: dir.join("daemon.log"),
        scope: format!("{}-{}", opts.label, plan.n),
    };
    let config_path = dir.join("config.json");
    config.write(&config_path, None).map_err(io_err("config"))?;
    let stderr = dir.join("daemon.stderr");
    let tally = Arc::new(Tally::new(run_started, plan.n, faults_log));
    tally.log(&format!(
        "== episode {}: {}, {:.0} s, clock step {:+}s{}, faults {}; work {}",
        plan.n,
        plan.backend,
        plan.secs,
        plan.start_step,
        plan.before_midnight
            .map_or(String::new(), |l| format!(", {l:.0} s before midnight")),
        opts.faults,
        dir.display()
    ));
    if let Some(now) = clock.test_now() {
        tally.fault("midnight", &format!("SEGA_TEST_NOW={now}"));
    }
    if plan.start_step != 0 {
        tally.fault(
            "clock step",
            &format!("daemon clock {:+}s from the start", plan.start_step),
        );
    }

    let mut d = Daemon::new(&opts.daemon, &config_path, &stderr, clock.clone(), started)
        .map_err(io_err("the launcher thread"))?;
    d.start().map_err(|e| {
        format!(
            "episode {}: starting the daemon: {e}\n{}",
            plan.n,
            harness::tail(&stderr, 20)
        )
    })?;
    let mem = d.mem.clone();
    let captured = d.captured.clone();
    let daemon = Arc::new(Mutex::new(d));
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = daemon::spawn_sampler(mem.clone(), stop_sampler.clone());
    let max_queued = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16384);
    let ctx = Arc::new(Ctx {
        pace: opts.pace.clone(),
        faults: opts.faults,
        server: server.clone(),
        daemon: daemon.clone(),
        tree: tree.clone(),
        ledger: ledger.clone(),
        clock: clock.clone(),
        tally: tally.clone(),
        config,
        config_path,
        stderr: stderr.clone(),
        db,
        max_queued,
        stop: AtomicBool::new(false),
    });
    let stream = |k: u64| Rng::stream(opts.seed, plan.n as u64 * 16 + k);
    let stop_writer = Arc::new(AtomicBool::new(false));
    let halt = Halt {
        ctx: ctx.clone(),
        writer: stop_writer.clone(),
    };
    let threads = Threads {
        writer: writer::spawn(tree.clone(), opts.pace.rate, stream(1), stop_writer.clone()),
        injectors: vec![
            ("endpoint", inject::spawn_endpoint(ctx.clone(), stream(2))),
            ("process", inject::spawn_process(ctx.clone(), stream(3))),
            ("tree", inject::spawn_tree(ctx.clone(), stream(4))),
            ("world", inject::spawn_world(ctx.clone(), stream(5))),
        ],
    };
    let progress = |phase: &str| {
        let (files, versions, uploaded) = ledger.counts();
        println!(
            "[ep{} {:>5.0}s] {phase}written {files} ({versions} versions), last version arrived {uploaded}, faults {}, daemon RSS {} (peak {})",
            plan.n,
            started.elapsed().as_secs_f64(),
            tally.total(),
            mib(mem.rss_kib.load(Ordering::Relaxed)),
            mib(mem.max_hwm_kib.load(Ordering::Relaxed)),
        );
    };

    // The episode: a progress line now and then; an injector or the writer failing ends it.
    let end = started + Duration::from_secs_f64(plan.secs);
    let mut next_progress = started + PROGRESS_EVERY;
    let mut aborted = None;
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(200));
        if let Err(e) = inject::revive(&ctx) {
            aborted = Some(e);
            break;
        }
        if threads.writer.is_finished() || threads.injectors.iter().any(|i| i.1.is_finished()) {
            aborted = Some("an injector or the writer ended early".to_owned());
            break;
        }
        if Instant::now() >= next_progress {
            progress("");
            next_progress += PROGRESS_EVERY;
        }
    }

    // Stop: faults first (each puts its part back), then files; the endpoint Ok, the full
    // config in force, the clock true.
    ctx.stop.store(true, Ordering::Relaxed);
    for (name, h) in threads.injectors {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => aborted = Some(format!("the {name} injector: {e}")),
            Err(_) => aborted = Some(format!("the {name} injector panicked")),
        }
    }
    stop_writer.store(true, Ordering::Relaxed);
    match threads.writer.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => aborted = Some(format!("the writer failed: {e}")),
        Err(_) => aborted = Some("the writer panicked".into()),
    }
    server.set_mode(Mode::Ok);
    if clock.step() != 0 {
        let _ = clock.set_step(0);
    }
    if let Err(e) = inject::revive(&ctx) {
        aborted = Some(e);
    }
    match inject::reload(&ctx, None) {
        Ok((_, confirmed)) => ledger.world(|w, now| {
            for p in w
                .excluded_folder
                .values_mut()
                .chain(w.excluded_ext.values_mut())
            {
                p.end(confirmed.unwrap_or(now));
            }
        }),
        Err(e) => aborted = Some(e),
    }
    let fault_secs = started.elapsed().as_secs_f64();
    tally.log("faults and writer stopped, tree, config and clock restored; draining");
    println!(
        "[ep{} {fault_secs:>5.0}s] faults and files stopped; waiting (at most {}s) for the backlog",
        plan.n,
        opts.pace.drain_limit.as_secs()
    );

    // The drain: until every file on disk has arrived, or the daemon has had nothing
    // pending for a while.
    let drain_start = Instant::now();
    let mut idle_since: Option<Instant> = None;
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    let drain_end = loop {
        let today = clock.day(0);
        if ledger.missing(today - 1..=today + 1).is_empty() {
            break "everything arrived";
        }
        if drain_start.elapsed() >= opts.pace.drain_limit {
            break "time limit";
        }
        if let Err(e) = inject::revive(&ctx) {
            aborted = Some(e);
            break "no daemon";
        }
        let idle = ctx.daemon().pending().is_some_and(|(p, u)| p + u == 0);
        if idle {
            if idle_since.get_or_insert_with(Instant::now).elapsed() >= opts.pace.idle_proof {
                break "the daemon has nothing pending";
            }
        } else {
            idle_since = None;
        }
        if Instant::now() >= next_progress {
            progress("drain: ");
            next_progress += PROGRESS_EVERY;
        }
        thread::sleep(Duration::from_secs(1));
    };
    let drain_secs = drain_start.elapsed().as_secs_f64();
    tally.log(&format!("drain ended ({drain_end}) after {drain_secs:.1}s"));

    let final_stop = {
        let mut d = ctx.daemon();
        let pid = d.pid();
        match d.terminate(Duration::from_secs(30)) {
            Ok((how, took)) => format!("pid {pid}: {how} after {:.1}s", took.as_secs_f64()),
            Err(e) => format!("pid {pid}: {e}"),
        }
    };
    stop_sampler.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let end_t = ledger.now();
    let sentinels_read = tree.sentinels_read();
    let scope = ctx.config.scope.clone();
    let log_file = ctx.config.log.clone();
    let db_cleanup = match &ctx.db {
        Db::Postgres { pg, db } => Some((pg.clone(), db.clone())),
        Db::Sqlite(_) => None,
    };
    drop(halt);
    drop(ctx);
    // Our last handle on the endpoint: dropping it stops the server, which ends the
    // collector's channel once every settled request is in the ledger.
    match Arc::try_unwrap(server) {
        Ok(server) => {
            drop(server);
            let _ = collector.join();
        }
        Err(_) => aborted = Some("the endpoint is still shared at the end".into()),
    }

    let daemon_log = fs::read_to_string(&stderr).unwrap_or_default();
    let mut texts = vec![
        (stderr.display().to_string(), daemon_log.clone()),
        (
            log_file.display().to_string(),
            fs::read_to_string(&log_file).unwrap_or_default(),
        ),
    ];
    let verdict = {
        let inner = ledger.lock();
        let inputs = oracle::Inputs {
            clock: &clock,
            end: end_t,
            scope: &scope,
            texts: &texts,
            sentinels_read,
        };
        oracle::judge(&inner, &inputs)
    };
    let mut details = Vec::new();
    {
        let d = daemon.lock().unwrap_or_else(|e| e.into_inner());
        for lost in verdict.lost.iter().take(20) {
            details.push(format!(
                "LOST {} ({}): {}",
                lost.path.display(),
                lost.why,
                lost.story
            ));
            let path = lost.path.to_string_lossy().into_owned();
            if let Some(show) = d.command(&["show", &path]) {
                for l in show.lines().take(12) {
                    details.push(format!("    show: {l}"));
                }
            }
            let lines: Vec<&str> = daemon_log
                .lines()
                .filter(|l| l.contains(&lost.name))
                .collect();
            if lines.is_empty() {
                details.push("    daemon log: no line names it".into());
            }
            for l in &lines[lines.len().saturating_sub(8)..] {
                details.push(format!("    log: {l}"));
            }
            for e in tally.events_between(lost.written - 15.0, lost.written + 60.0) {
                details.push(format!("    fault {e}"));
            }
        }
    }
    // The commands' output (status, show) too: no secret in any of it.
    let captured = captured.texts();
    texts.truncate(0);
    texts.extend(
        captured
            .into_iter()
            .map(|t| ("a command's output".to_string(), t)),
    );
    let mut verdict = verdict;
    oracle::check_texts(&texts, &mut verdict);
    let (starts, lives) = {
        let d = daemon.lock().unwrap_or_else(|e| e.into_inner());
        (d.starts, d.lives.clone())
    };
    drop(daemon);
    let episode = Episode {
        n: plan.n,
        backend: plan.backend,
        midnight: plan.before_midnight.is_some(),
        dir: dir.clone(),
        fault_secs,
        drain_secs,
        drain_end,
        verdict,
        counts: tally.snapshot(),
        starts,
        lives,
        max_hwm_kib: mem.max_hwm_kib.load(Ordering::Relaxed),
        final_stop,
        sentinels: tree.sentinel_count(),
        aborted,
        daemon_log,
        details,
    };
    tally.log(&format!(
        "episode {} {}: lost {}, failures {}",
        plan.n,
        if episode.passed() { "passed" } else { "FAILED" },
        episode.verdict.lost.len(),
        episode.verdict.failures().len()
    ));
    report::episode(&episode);
    if episode.passed() {
        if let Some((pg, db)) = db_cleanup {
            pg.drop_database(&db);
        }
        if !opts.keep {
            let _ = fs::remove_dir_all(&dir);
        }
    }
    Ok(episode)
}
