//! The fault injectors: four threads, each drawing from its own stream of the seed, mixing
//! the kinds the run turned on until told to stop, and each leaving its part of the world
//! as it found it when it stops.
//!
//! - `endpoint`: the test endpoint's modes (errors, Retry-After, delays, hangs, resets,
//!   refusal, slow and huge answers, per-file poison, interim 1xx answers);
//! - `process`: SIGKILL, SIGSTOP with a burst, SIGTERM, a database lock, a deleted WAL;
//! - `tree`: files vanishing and coming back, rewrites, hard-linked files, a folder
//!   unmounted, a date folder swapped for a symlink to sentinels;
//! - `world`: the daemon's clock stepped both ways, the config narrowed and widened.
//!
//! Every fault is counted and logged (`Tally`); those that disturb every upload are marked
//! in the ledger as disruptions (the oracle's "calm" is their absence).

mod endpoint;
mod process;
mod tree;
mod world;

pub use endpoint::spawn as spawn_endpoint;
pub use process::spawn as spawn_process;
pub use tree::spawn as spawn_tree;
pub use world::{reload, spawn as spawn_world};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::clock::ModelClock;
use super::daemon::{ConfigSpec, Daemon};
use super::kinds::Faults;
use super::ledger::Ledger;
use super::tally::Tally;
use super::tree::Tree;
use super::Pace;
use crate::daemon::{log_since, tail};
use crate::pg::Pg;
use crate::rng::Rng;
use crate::Server;

/// The episode's ledger database.
pub enum Db {
    Sqlite(PathBuf),
    Postgres { pg: Pg, db: String },
}

/// What the injectors work on.
pub struct Ctx {
    pub pace: Pace,
    pub faults: Faults,
    pub server: Arc<Server>,
    pub daemon: Arc<Mutex<Daemon>>,
    pub tree: Arc<Tree>,
    pub ledger: Arc<Ledger>,
    pub clock: Arc<ModelClock>,
    pub tally: Arc<Tally>,
    pub config: ConfigSpec,
    pub config_path: PathBuf,
    pub stderr: PathBuf,
    pub db: Db,
    /// /proc/sys/fs/inotify/max_queued_events: an overflow burst writes more files than this.
    pub max_queued: usize,
    pub stop: AtomicBool,
}

impl Ctx {
    pub fn daemon(&self) -> MutexGuard<'_, Daemon> {
        lock(&self.daemon)
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d` in small steps; false if the episode is stopping.
    pub fn nap(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.stopping() {
                return false;
            }
            thread::sleep(
                end.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
            );
        }
        !self.stopping()
    }
}

/// Picks what comes next so that every kind turned on comes round: each round deals every
/// card once (a kind with count 3 has three cards), shuffled. Random draws by weight could
/// leave a rare kind out of a short run.
pub struct Deck {
    counts: Vec<u64>,
    cards: Vec<usize>,
}

impl Deck {
    /// `counts[i]`: how many times kind `i` comes up per round (0: never).
    pub fn new(counts: &[u64]) -> Deck {
        Deck {
            counts: counts.to_vec(),
            cards: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| *c == 0)
    }

    /// The next kind's index; `None` if no kind is on.
    pub fn draw(&mut self, rng: &mut Rng) -> Option<usize> {
        if self.cards.is_empty() {
            for (i, c) in self.counts.iter().enumerate() {
                self.cards.extend(std::iter::repeat_n(i, *c as usize));
            }
            // Fisher–Yates.
            for i in (1..self.cards.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                self.cards.swap(i, j);
            }
        }
        self.cards.pop()
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// If the daemon has ended on its own (it never should), records how, with the end of its
/// stderr, and starts it again after a second, as systemd would. Skipped while another
/// thread holds the daemon (a start, a stop, a pause in progress).
pub fn revive(ctx: &Ctx) -> Result<(), String> {
    let exited = match ctx.daemon.try_lock() {
        Ok(mut d) => d
            .exited()
            .map(|how| (how, d.last_life(), log_since(&ctx.stderr, d.log_offset))),
        Err(_) => None,
    };
    if let Some((how, life, said)) = exited {
        ctx.tally.log(&life);
        // A deleted WAL: the daemon saves what it held and stops, so that its next start
        // opens a new one. That is its job, not a crash.
        if said.contains("-wal was deleted") || said.contains("was deleted or replaced") {
            ctx.tally.log(&format!(
                "the daemon stopped ({how}) after noticing its WAL was deleted, as it should"
            ));
            thread::sleep(Duration::from_secs(1));
            return start_again(ctx, "the WAL deleted");
        }
        let tail = tail(&ctx.stderr, 8);
        ctx.tally
            .log(&format!("UNEXPECTED daemon exit ({how}):\n{tail}"));
        ctx.tally
            .counts()
            .unexpected_exits
            .push(format!("{how}; stderr ended:\n{tail}"));
        thread::sleep(Duration::from_secs(1));
        start_again(ctx, "unexpected exit")?;
    }
    Ok(())
}

/// A daemon that refuses a database whose WAL was deleted (it lost its schema, or its last
/// transactions) is doing its job; the operator's recovery is to move the file aside, and
/// the next scan re-finds every image (sent again under the same Idempotency-Keys).
fn move_db_aside_after_wal_loss(ctx: &Ctx) {
    let Db::Sqlite(db) = &ctx.db else { return };
    if ctx.ledger.lock().world.wal_deleted.is_empty() || !db.exists() {
        return;
    }
    let mut moved = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut from = db.clone().into_os_string();
        from.push(suffix);
        let mut to = from.clone();
        to.push(".aside");
        if std::fs::rename(&from, &to).is_ok() {
            moved.push(PathBuf::from(to));
        }
    }
    ctx.tally.note(format!(
        "the WAL was deleted and the daemon would not start: database moved aside (the operator's recovery): {moved:?}"
    ));
}

/// Starts the daemon (5 attempts, 2 s apart), counting the restart under `why`.
pub fn start_again(ctx: &Ctx, why: &'static str) -> Result<(), String> {
    for attempt in 1..=5 {
        let r = {
            let mut d = ctx.daemon();
            // Another thread started it meanwhile (a restart after an exit of its own and
            // one after a fault can cross): one daemon is enough.
            if d.pid() != 0 {
                ctx.tally.log(&format!(
                    "restart after {why}: already running, pid {}",
                    d.pid()
                ));
                return Ok(());
            }
            d.start()
        };
        match r {
            Ok(()) => {
                *ctx.tally.counts().restarts.entry(why).or_default() += 1;
                let pid = ctx.daemon().pid();
                ctx.tally
                    .log(&format!("daemon restarted ({why}), pid {pid}"));
                return Ok(());
            }
            Err(e) => {
                ctx.tally
                    .note(format!("start after {why} failed (attempt {attempt}): {e}"));
                move_db_aside_after_wal_loss(ctx);
                thread::sleep(Duration::from_secs(2));
            }
        }
    }
    Err(format!(
        "the daemon could not be started again after {why} (5 attempts): see daemon.stderr"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_comes_round() {
        let mut d = Deck::new(&[2, 0, 1]);
        let mut rng = Rng::stream(5, 0);
        let mut round: Vec<usize> = (0..3).map(|_| d.draw(&mut rng).unwrap()).collect();
        round.sort_unstable();
        assert_eq!(round, [0, 0, 2]);
        assert!(Deck::new(&[0, 0]).draw(&mut rng).is_none());
    }
}
