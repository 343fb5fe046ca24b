//! `sega-soak` (`make soak`): sega-uploader against every fault of the fault suite, mixed at
//! random for a long time while files keep arriving; at the end, what was lost, what was
//! sent twice (and with how many Idempotency-Keys), and the daemon's peak memory.
//!
//! usage: sega-soak --daemon PATH [--minutes 60 | --seconds N] [--seed N] [--rate FILES_PER_SEC]
//!                  [--workers N] [--work DIR] [--keep]
//!
//! The wiring, top to bottom (`main`): a loopback endpoint (`sega_testsrv::Server`) whose
//! every settled request feeds the `ledger`; the daemon (`daemon`) on a tree under the work
//! directory; the `writer` thread (`tree`) writing files at `--rate`; two fault injectors
//! (`faults`: the endpoint's modes; SIGKILL, SIGSTOP with a burst, SIGTERM, a database lock).
//! After the run: stop injecting, endpoint Ok, wait (3 min at most) until every file has
//! arrived or the daemon has nothing pending, SIGTERM, and the verdict.
//!
//! Exit: 0 if nothing was lost and every duplicate carried one Idempotency-Key; 1 otherwise
//! (or if the run could not go on); 64 for a usage error. Only 127.0.0.1 is used; everything
//! is written under the work directory, removed after a clean run unless `--keep`.

// A binary's root looks for modules next to itself; these live in sega-soak/.
#[path = "sega-soak/daemon.rs"]
mod daemon;
#[path = "sega-soak/faults.rs"]
mod faults;
#[path = "sega-soak/ledger.rs"]
mod ledger;
#[path = "sega-soak/report.rs"]
mod report;
#[path = "sega-soak/rng.rs"]
mod rng;
#[path = "sega-soak/tree.rs"]
mod tree;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sega_testsrv::{Mode, Server};

use crate::daemon::Daemon;
use crate::faults::{Process, Tally};
use crate::ledger::Ledger;
use crate::rng::Rng;
use crate::tree::Tree;

const USAGE: &str = "usage: sega-soak --daemon PATH [--minutes 60 | --seconds N] [--seed N] \
                     [--rate FILES_PER_SEC (20)] [--workers N (4)] [--work DIR] [--keep]";
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// How long the end waits for the backlog after the faults stop.
const DRAIN_LIMIT: Duration = Duration::from_secs(180);
/// "Nothing pending" must hold this long (past a rescan, 10 s, and settling) to end the wait.
const IDLE_PROOF: Duration = Duration::from_secs(15);

struct Args {
    daemon: PathBuf,
    duration: Duration,
    seed: u64,
    rate: f64,
    workers: usize,
    work: Option<PathBuf>,
    keep: bool,
}

/// The arguments; `None` for `--help`.
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        daemon: PathBuf::new(),
        duration: Duration::from_secs(3600),
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000),
        rate: 20.0,
        workers: 4,
        work: None,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--keep" {
            args.keep = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag}: bad value {value:?}");
        match flag.as_str() {
            "--daemon" => args.daemon = PathBuf::from(&value),
            "--minutes" => {
                args.duration = Duration::from_secs(60 * value.parse::<u64>().map_err(|_| bad())?)
            }
            "--seconds" => args.duration = Duration::from_secs(value.parse().map_err(|_| bad())?),
            "--seed" => args.seed = value.parse().map_err(|_| bad())?,
            "--rate" => {
                args.rate = value.parse().map_err(|_| bad())?;
                if !(args.rate > 0.0 && args.rate <= 10_000.0) {
                    return Err(format!("--rate: must be within (0, 10000], not {value}"));
                }
            }
            "--workers" => {
                args.workers = value.parse().map_err(|_| bad())?;
                if args.workers == 0 {
                    return Err("--workers: at least 1".into());
                }
            }
            "--work" => args.work = Some(PathBuf::from(&value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.daemon.as_os_str().is_empty() {
        return Err("--daemon PATH is required".into());
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sega-soak: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    daemon::kill_on_panic();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sega-soak: {e}");
            ExitCode::from(1)
        }
    }
}

/// The work directory: made fresh (a given one must be empty or absent), absolute.
fn make_work(given: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("sega-soak-{}", std::process::id())),
    };
    if fs::read_dir(&dir).is_ok_and(|mut r| r.next().is_some()) {
        return Err(format!(
            "{}: not empty (the soak needs a fresh work directory)",
            dir.display()
        ));
    }
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn io_err(what: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Everything the run holds, for the progress line.
struct Run {
    started: Instant,
    ledger: Arc<Ledger>,
    tally: Arc<Tally>,
    mem: Arc<daemon::Mem>,
}

impl Run {
    fn progress(&self, phase: &str) {
        let (files, versions, uploaded) = self.ledger.counts();
        println!(
            "[{:>6.0}s] {phase}written {files} ({versions} versions), uploaded {uploaded}, pending {}, faults {}, daemon RSS {} (peak {})",
            self.started.elapsed().as_secs_f64(),
            files as u64 - uploaded,
            self.tally.total(),
            mib(self.mem.rss_kib.load(Ordering::Relaxed)),
            mib(self.mem.max_hwm_kib.load(Ordering::Relaxed)),
        );
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let bin =
        fs::canonicalize(&args.daemon).map_err(|e| format!("{}: {e}", args.daemon.display()))?;
    let work = make_work(args.work.as_deref())?;
    println!(
        "sega-soak: seed {} (repeat with --seed {}); {} s at {} files/s, {} workers; work {}",
        args.seed,
        args.seed,
        args.duration.as_secs(),
        args.rate,
        args.workers,
        work.display()
    );
    let root = work.join("data");
    let db = work.join("state").join("sega.db");
    let config = work.join("config.json");
    let daemon_log = work.join("daemon.log");
    let stderr = work.join("daemon.stderr");
    fs::create_dir_all(work.join("state")).map_err(io_err("state dir"))?;

    let started = Instant::now();
    let server = Arc::new(Server::start("127.0.0.1:0").map_err(io_err("test endpoint"))?);
    // The ledger keeps what it needs; the server's own record list stays short.
    server.set_max_records(1000);
    let ledger = Arc::new(Ledger::new(started));
    let collector = ledger::collector(ledger.clone(), server.subscribe());
    let tree = Arc::new(
        Tree::create(root.clone(), work.join("incoming"), ledger.clone())
            .map_err(io_err("tree"))?,
    );
    daemon::write_config(
        &config,
        &root,
        &db,
        &server.url(),
        args.workers,
        &daemon_log,
    )
    .map_err(io_err("config"))?;
    let faults_log = fs::File::create(work.join("faults.log")).map_err(io_err("faults.log"))?;
    let tally = Arc::new(Tally::new(started, faults_log));

    let mut d = Daemon::new(&bin, &config, &stderr, started);
    d.start()
        .map_err(|e| format!("starting the daemon: {e}\n{}", faults::tail(&stderr, 20)))?;
    let mem = d.mem.clone();
    let daemon = Arc::new(Mutex::new(d));
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = daemon::spawn_sampler(mem.clone(), stop_sampler.clone());
    let max_queued = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16384);

    let stop_writer = Arc::new(AtomicBool::new(false));
    let stop_faults = Arc::new(AtomicBool::new(false));
    let writer = tree::spawn_writer(
        tree.clone(),
        args.rate,
        Rng::stream(args.seed, 1),
        stop_writer.clone(),
    );
    let endpoint = faults::spawn_endpoint(
        server.clone(),
        Rng::stream(args.seed, 2),
        stop_faults.clone(),
        tally.clone(),
    );
    let process = faults::spawn_process(Process {
        daemon: daemon.clone(),
        tree: tree.clone(),
        db: db.clone(),
        stderr: stderr.clone(),
        max_queued,
        rng: Rng::stream(args.seed, 3),
        stop: stop_faults.clone(),
        tally: tally.clone(),
    });
    let run = Run {
        started,
        ledger: ledger.clone(),
        tally: tally.clone(),
        mem: mem.clone(),
    };

    // The run: a progress line every 30 s; an injector or the writer failing ends it early.
    let end = started + args.duration;
    let mut next_progress = started + PROGRESS_EVERY;
    let mut aborted = None;
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(200));
        if process.is_finished() || writer.is_finished() {
            aborted = Some("an injector or the writer ended early".to_owned());
            break;
        }
        if Instant::now() >= next_progress {
            run.progress("");
            next_progress += PROGRESS_EVERY;
        }
    }

    // Stop injecting: faults first (the daemon is left running, the endpoint Ok), then files.
    stop_faults.store(true, Ordering::Relaxed);
    let _ = endpoint.join();
    let process_result = process
        .join()
        .unwrap_or_else(|_| Err("the process injector panicked".into()));
    stop_writer.store(true, Ordering::Relaxed);
    let writer_result = writer
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the writer panicked")));
    server.set_mode(Mode::Ok);
    if let Err(e) = process_result {
        aborted = Some(e);
    }
    if let Err(e) = writer_result {
        aborted = Some(format!("the writer failed: {e}"));
    }
    let run_secs = started.elapsed().as_secs();
    tally.log("faults and writer stopped; draining");
    println!(
        "[{run_secs:>6}s] faults and files stopped; waiting (at most {}s) for the backlog",
        DRAIN_LIMIT.as_secs()
    );

    // The drain: until everything arrived, or the daemon has had nothing pending for a while.
    let drain_start = Instant::now();
    let mut idle_since: Option<Instant> = None;
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    let drain_end = loop {
        let (files, _, uploaded) = ledger.counts();
        if uploaded as usize == files {
            break "everything arrived";
        }
        if drain_start.elapsed() >= DRAIN_LIMIT {
            break "time limit";
        }
        if let Err(e) = faults::revive(&daemon, &tally, &stderr) {
            aborted = Some(e);
            break "no daemon";
        }
        let idle = daemon
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending()
            .is_some_and(|(p, u)| p + u == 0);
        if idle {
            if idle_since.get_or_insert_with(Instant::now).elapsed() >= IDLE_PROOF {
                break "the daemon has nothing pending";
            }
        } else {
            idle_since = None;
        }
        if Instant::now() >= next_progress {
            run.progress("drain: ");
            next_progress += PROGRESS_EVERY;
        }
        thread::sleep(Duration::from_secs(2));
    };
    let drain_secs = drain_start.elapsed().as_secs_f64();
    tally.log(&format!("drain ended ({drain_end}) after {drain_secs:.1}s"));

    let final_stop = {
        let mut d = daemon.lock().unwrap_or_else(|e| e.into_inner());
        let pid = d.pid();
        match d.terminate(Duration::from_secs(30)) {
            Ok((how, took)) => format!("pid {pid}: {how} after {:.1}s", took.as_secs_f64()),
            Err(e) => format!("pid {pid}: {e}"),
        }
    };
    stop_sampler.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    // Our last handle on the endpoint: dropping it stops the server, which ends the
    // collector's channel once every settled request is in the ledger.
    if let Ok(server) = Arc::try_unwrap(server) {
        drop(server);
        let _ = collector.join();
    }
    drop(tree);

    let verdict = ledger.verdict();
    let counts = tally.snapshot();
    let (starts, lives) = {
        let d = daemon.lock().unwrap_or_else(|e| e.into_inner());
        (d.starts, d.lives.clone())
    };
    let passed = report::summary(&report::SummaryIn {
        seed: args.seed,
        run_secs,
        drain_secs,
        drain_end,
        verdict: &verdict,
        counts: &counts,
        starts,
        lives: &lives,
        max_hwm_kib: mem.max_hwm_kib.load(Ordering::Relaxed),
        final_stop: &final_stop,
        daemon_log: &daemon_log,
        db: &db,
        tally: &tally,
        aborted: aborted.as_deref(),
    });
    if passed && !args.keep {
        let _ = fs::remove_dir_all(&work);
    } else {
        println!(
            "work directory kept: {} (daemon.log, daemon.stderr, faults.log, state/sega.db)",
            work.display()
        );
    }
    Ok(passed && aborted.is_none())
}
