//! What happened in an episode: every fault and event counted by kind and written to
//! `faults.log` with its time (since the run's start and since the episode's), restarts and
//! their causes, daemon exits nobody asked for, unclean stops, and notes on the engine's own
//! trouble. The lines are kept in memory too, so that a lost file can be shown next to what
//! happened around it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What happened, for the summary.
#[derive(Clone, Default)]
pub struct Counts {
    /// Faults and events injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Restarts by cause.
    pub restarts: BTreeMap<&'static str, u64>,
    /// Daemon exits nobody asked for, with the end of its stderr.
    pub unexpected_exits: Vec<String>,
    /// SIGTERM stops that did not end with exit 0 within the grace.
    pub bad_stops: Vec<String>,
    pub slowest_stop: Duration,
    /// Trouble in the engine's own machinery (a lock it could not take, a start that failed).
    pub notes: Vec<String>,
}

pub struct Tally {
    /// The run's start and this episode's.
    run_started: Instant,
    started: Instant,
    episode: usize,
    counts: Mutex<Counts>,
    /// faults.log (shared by the episodes of a run).
    file: Arc<Mutex<File>>,
    /// The lines of this episode, by episode time.
    lines: Mutex<Vec<(f64, String)>>,
}

impl Tally {
    pub fn new(run_started: Instant, episode: usize, file: Arc<Mutex<File>>) -> Tally {
        Tally {
            run_started,
            started: Instant::now(),
            episode,
            counts: Mutex::new(Counts::default()),
            file,
            lines: Mutex::new(Vec::new()),
        }
    }

    pub fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A line in faults.log, stamped with the run's and the episode's clocks.
    pub fn log(&self, msg: &str) {
        let t = self.started.elapsed().as_secs_f64();
        let run = self.run_started.elapsed().as_secs_f64();
        {
            let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "[{run:8.1}s ep{} {t:7.1}s] {msg}", self.episode);
        }
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, msg.to_owned()));
    }

    /// One fault or event of `kind`, counted and logged.
    pub fn fault(&self, kind: &'static str, detail: &str) {
        *self.counts().faults.entry(kind).or_default() += 1;
        self.log(&format!("{kind}: {detail}"));
    }

    /// Trouble in the engine itself: logged and listed in the summary.
    pub fn note(&self, msg: String) {
        self.log(&format!("NOTE {msg}"));
        self.counts().notes.push(msg);
    }

    /// The lines between `from` and `to` seconds into the episode.
    pub fn events_between(&self, from: f64, to: f64) -> Vec<String> {
        let g = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        g.iter()
            .filter(|(t, _)| (from..=to).contains(t))
            .map(|(t, m)| format!("[{t:7.1}s] {m}"))
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.counts().faults.values().sum()
    }

    pub fn snapshot(&self) -> Counts {
        self.counts().clone()
    }
}
