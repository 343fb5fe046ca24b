//! The randomized model test of sega-uploader at its boundary, and the engine of `make soak`:
//! files keep arriving while faults of every kind are mixed at random from one seed, and at
//! the end of each episode an oracle checks what the daemon owed against what the endpoint
//! received and what the daemon printed. `tests/model.rs` runs it for about a minute in
//! `make test`; `sega-soak` (`make soak`) for an hour.
//!
//! A run is a few *episodes*, each with a fresh tree, endpoint, ledger database (SQLite, or
//! PostgreSQL every other episode when asked) and daemon; some start a little before
//! midnight, some with the daemon's clock ahead. Within an episode a writer adds files and
//! four injectors (`inject`) hit the endpoint, the process, the tree and the world (clock,
//! config); `ledger` records everything; `oracle` judges; `report` prints. The fault kinds
//! are in `kinds`; every fault is counted and logged with its time in `faults.log`.
//!
//! Files: the run's work directory holds `faults.log` and one directory per episode (the
//! tree, `daemon.stderr`, `daemon.log`, `config.json`, the SQLite file). It is removed after
//! a passing run unless `keep`; an episode that fails keeps its directory.
//!
//! Only 127.0.0.1 and the work directory are used; nothing machine-wide is changed.

mod clock;
mod daemon;
mod episode;
mod inject;
mod kinds;
mod ledger;
mod oracle;
mod report;
mod span;
mod tally;
mod tree;
mod writer;

pub use kinds::{Faults, Kind, FAULTS_SYNTAX};

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use episode::{Backend, Episode, Plan};

use crate::rng::Rng;

/// How busy a run is: the writer's rate and the injectors' gaps and lengths, in seconds
/// (`(lo, hi)`: uniform between).
#[derive(Clone, Debug)]
pub struct Pace {
    /// Files a second from the writer.
    pub rate: f64,
    /// Files up to 4 MiB (else up to 32 KiB).
    pub big_files: bool,
    /// Files written while the daemon is stopped.
    pub burst: (u64, u64),
    /// The chance that a burst overflows the inotify queue instead.
    pub overflow_chance: f64,
    /// Between endpoint faults.
    pub endpoint_gap: (f64, f64),
    /// How long an endpoint fault lasts.
    pub endpoint_len: (f64, f64),
    /// Between process faults.
    pub process_gap: (f64, f64),
    /// How long the daemon stays stopped (SIGSTOP).
    pub stop_len: (f64, f64),
    /// Between tree faults.
    pub tree_gap: (f64, f64),
    /// How long a vanished file stays away.
    pub away_len: (f64, f64),
    /// How long a folder stays unmounted or a date folder swapped.
    pub unmount_len: (f64, f64),
    /// Between clock steps and reloads.
    pub world_gap: (f64, f64),
    /// How long a clock step or a narrowed config lasts.
    pub world_len: (f64, f64),
    /// How long the end of an episode waits for the backlog.
    pub drain_limit: Duration,
    /// "Nothing pending" must hold this long (past a rescan and settling) to end the wait
    /// early when something is still missing.
    pub idle_proof: Duration,
}

impl Pace {
    /// `make soak`: 20 files a second of every size, faults every few tens of seconds.
    pub fn soak() -> Pace {
        Pace {
            rate: 20.0,
            big_files: true,
            burst: (50, 800),
            overflow_chance: 0.25,
            endpoint_gap: (2.0, 10.0),
            endpoint_len: (4.0, 20.0),
            process_gap: (8.0, 30.0),
            stop_len: (2.0, 10.0),
            tree_gap: (0.5, 3.0),
            away_len: (3.0, 40.0),
            unmount_len: (2.0, 10.0),
            world_gap: (20.0, 60.0),
            world_len: (5.0, 25.0),
            drain_limit: Duration::from_secs(180),
            idle_proof: Duration::from_secs(15),
        }
    }

    /// The model test in `make test`: a shared 2-core machine running other tests, so few
    /// and small files, but faults close together so that a minute sees most kinds.
    pub fn test() -> Pace {
        Pace {
            rate: 8.0,
            big_files: false,
            burst: (20, 150),
            overflow_chance: 0.0,
            endpoint_gap: (2.0, 6.0),
            endpoint_len: (2.0, 6.0),
            process_gap: (3.0, 8.0),
            stop_len: (0.5, 2.0),
            tree_gap: (0.3, 1.5),
            away_len: (1.0, 8.0),
            unmount_len: (1.0, 4.0),
            world_gap: (3.0, 8.0),
            world_len: (2.0, 6.0),
            drain_limit: Duration::from_secs(90),
            idle_proof: Duration::from_secs(15),
        }
    }
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The sega-uploader binary.
    pub daemon: PathBuf,
    /// Every random choice follows from it.
    pub seed: u64,
    /// Seconds of files and faults in all, over the episodes.
    pub duration: Duration,
    /// The longest episode.
    pub episode: Duration,
    /// The pace.
    pub pace: Pace,
    /// `upload.workers`.
    pub workers: usize,
    /// The kinds turned on.
    pub faults: Faults,
    /// Every other episode on a PostgreSQL ledger (a throwaway cluster).
    pub postgres: bool,
    /// The work directory (made fresh; must be empty or absent); a temp one if `None`.
    pub work: Option<PathBuf>,
    /// Keep the work directory after a passing run.
    pub keep: bool,
    /// "sega-soak" or "model": names the verdict line and the database scope.
    pub label: &'static str,
}

/// What a run did.
pub struct Outcome {
    label: &'static str,
    seed: u64,
    wall: Duration,
    work: PathBuf,
    episodes: Vec<Episode>,
}

impl Outcome {
    /// Every episode ran to its end and passed every check.
    pub fn passed(&self) -> bool {
        !self.episodes.is_empty() && self.episodes.iter().all(Episode::passed)
    }

    /// The run's one-line verdict.
    pub fn verdict_line(&self) -> String {
        report::verdict_line(self)
    }

    /// Each failed check (and each early end) with its episode, for a test's message.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.episodes {
            if let Some(a) = &e.aborted {
                out.push(format!("episode {}: ended early: {a}", e.n));
            }
            for f in e.verdict.failures() {
                out.push(format!("episode {}: {f}", e.n));
            }
            for d in e.details.iter().take(40) {
                out.push(format!("episode {}: {d}", e.n));
            }
        }
        out
    }

    /// The run's faults.log (kept when the run failed or `keep`).
    pub fn faults_log(&self) -> PathBuf {
        self.work.join("faults.log")
    }
}

/// The work directory: made fresh (a given one must be empty or absent), absolute.
fn make_work(given: Option<&Path>, label: &str) -> Result<PathBuf, String> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            std::env::temp_dir().join(format!(
                "{label}-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ))
        }
    };
    if fs::read_dir(&dir).is_ok_and(|mut r| r.next().is_some()) {
        return Err(format!(
            "{}: not empty (the engine needs a fresh work directory)",
            dir.display()
        ));
    }
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// The episodes of a run: `duration` cut into episodes of at most `episode` (a remainder
/// under 10 s joins the one before); PostgreSQL for every other one if asked; every other
/// one (from the first or the second, by the seed) starts before midnight, and half of the
/// others with the clock three hours ahead.
fn plans(opts: &Options, rng: &mut Rng) -> Vec<Plan> {
    let phase = rng.below(2) as usize;
    let total = opts.duration.as_secs_f64().max(1.0);
    let each = opts.episode.as_secs_f64().max(10.0);
    let mut secs = Vec::new();
    let mut left = total;
    while left > 0.0 {
        let s = left.min(each);
        if s < 10.0 && !secs.is_empty() {
            *secs.last_mut().unwrap() += s;
        } else {
            secs.push(s);
        }
        left -= s;
    }
    secs.into_iter()
        .enumerate()
        .map(|(i, secs)| {
            let backend = if opts.postgres && i % 2 == 1 {
                Backend::Postgres
            } else {
                Backend::Sqlite
            };
            let before_midnight = (opts.faults.has(Kind::Midnight)
                && (i + phase).is_multiple_of(2))
            .then(|| rng.range(5, (secs * 0.6).max(6.0) as u64) as f64);
            let ahead = before_midnight.is_none() && rng.chance(0.5);
            let start_step = if opts.faults.has(Kind::Clock) && ahead {
                3 * 3600
            } else {
                0
            };
            Plan {
                n: i + 1,
                backend,
                secs,
                before_midnight,
                start_step,
            }
        })
        .collect()
}

/// Runs the episodes one after the other and prints each one's summary and the verdict
/// line. An error is a run that could not go on (a daemon that would not start); failed
/// checks are in the `Outcome`.
pub fn run(opts: &Options) -> Result<Outcome, String> {
    let started = Instant::now();
    let work = make_work(opts.work.as_deref(), opts.label)?;
    if opts.postgres && crate::pg::server_bin().is_none() {
        return Err(
            "PostgreSQL episodes asked for, but no server binaries under \
                    /usr/lib/postgresql/*/bin"
                .into(),
        );
    }
    println!(
        "{}: seed {seed} (replay with --seed {seed} or SEGA_TEST_SEED={seed}); {} s in episodes of at most {} s at {} files/s, {} workers; faults {}; work {}",
        opts.label,
        opts.duration.as_secs(),
        opts.episode.as_secs(),
        opts.pace.rate,
        opts.workers,
        opts.faults,
        work.display(),
        seed = opts.seed,
    );
    let log = File::create(work.join("faults.log")).map_err(|e| format!("faults.log: {e}"))?;
    let log = Arc::new(Mutex::new(log));
    let mut rng = Rng::stream(opts.seed, 0);
    let mut outcome = Outcome {
        label: opts.label,
        seed: opts.seed,
        wall: Duration::ZERO,
        work: work.clone(),
        episodes: Vec::new(),
    };
    for plan in plans(opts, &mut rng) {
        let e = episode::run(opts, &plan, &work, log.clone(), started)?;
        outcome.episodes.push(e);
    }
    outcome.wall = started.elapsed();
    let line = outcome.verdict_line();
    println!("\n{line}");
    if let Ok(mut f) = log.lock() {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
    if outcome.passed() && !opts.keep {
        let _ = fs::remove_dir_all(&work);
    } else {
        println!(
            "work directory kept: {} (faults.log; per episode: daemon.stderr, daemon.log, config.json, state/)",
            work.display()
        );
    }
    Ok(outcome)
}
