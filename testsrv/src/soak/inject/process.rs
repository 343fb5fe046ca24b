//! Process faults: SIGKILL and SIGTERM with a restart (standing in for systemd), SIGSTOP with
//! a burst of files written meanwhile (sometimes more than the inotify queue holds), another
//! connection holding the database's write lock, and (only when asked) the SQLite WAL
//! deleted under the running daemon. The daemon is left running when the episode stops.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{start_again, Ctx, Db, Deck};
use crate::rng::Rng;
use crate::soak::kinds::Kind;

pub fn spawn(ctx: Arc<Ctx>, rng: Rng) -> JoinHandle<Result<(), String>> {
    thread::Builder::new()
        .name("process-faults".into())
        .spawn(move || Process { ctx, rng }.run())
        .expect("spawning the process injector")
}

struct Process {
    ctx: Arc<Ctx>,
    rng: Rng,
}

impl Process {
    fn run(mut self) -> Result<(), String> {
        let sqlite = matches!(self.ctx.db, Db::Sqlite(_));
        let on = |k| u64::from(self.ctx.faults.has(k));
        let mut deck = Deck::new(&[
            on(Kind::Kill),
            on(Kind::Stop),
            on(Kind::Term),
            on(Kind::DbLock),
            on(Kind::Wal) * u64::from(sqlite),
        ]);
        if deck.is_empty() {
            // Nothing of ours is on: wait for the end like the others.
            while self.ctx.nap(Duration::from_secs(1)) {}
            return Ok(());
        }
        let (lo, hi) = self.ctx.pace.process_gap;
        let mut gap = self.rng.secs(lo / 2.0, hi / 2.0);
        while self.ctx.nap(gap) {
            self.ctx.ledger.disruption(true);
            let r = match deck.draw(&mut self.rng).unwrap_or(0) {
                0 => self.kill(),
                1 => self.pause(),
                2 => self.terminate(),
                3 => {
                    self.lock_db();
                    Ok(())
                }
                _ => {
                    self.delete_wal();
                    Ok(())
                }
            };
            self.ctx.ledger.disruption(false);
            r?;
            gap = self.rng.secs(lo, hi);
        }
        Ok(())
    }

    fn kill(&mut self) -> Result<(), String> {
        let down = self.rng.secs(0.5, 4.0);
        let ctx = &self.ctx;
        let pid = ctx.daemon().pid();
        ctx.tally.fault(
            "SIGKILL + restart",
            &format!("pid {pid}, restart after {:.1}s", down.as_secs_f64()),
        );
        let life = {
            let mut d = ctx.daemon();
            d.kill();
            d.last_life()
        };
        ctx.tally.log(&life);
        thread::sleep(down);
        start_again(ctx, "SIGKILL")
    }

    fn terminate(&mut self) -> Result<(), String> {
        let down = self.rng.secs(0.5, 3.0);
        let ctx = &self.ctx;
        let pid = ctx.daemon().pid();
        ctx.tally.fault("SIGTERM + restart", &format!("pid {pid}"));
        let (r, life) = {
            let mut d = ctx.daemon();
            let r = d.terminate(Duration::from_secs(30));
            (r, d.last_life())
        };
        ctx.tally.log(&life);
        match r {
            Ok((how, took)) => {
                ctx.tally.log(&format!(
                    "pid {pid} stopped: {how} after {:.1}s",
                    took.as_secs_f64()
                ));
                let mut c = ctx.tally.counts();
                c.slowest_stop = c.slowest_stop.max(took);
                // shutdown_grace_secs is 5: past it the daemon must exit anyway.
                if how != "exit 0" || took > Duration::from_secs(8) {
                    c.bad_stops
                        .push(format!("pid {pid}: {how} after {:.1}s", took.as_secs_f64()));
                }
            }
            Err(e) => {
                ctx.tally.log(&format!("pid {pid}: {e}"));
                ctx.tally.counts().bad_stops.push(format!("pid {pid}: {e}"));
            }
        }
        thread::sleep(down);
        start_again(ctx, "SIGTERM")
    }

    /// SIGSTOP for a few seconds with a burst written meanwhile: sometimes more files than
    /// the inotify queue holds, so the kernel drops events and the daemon must rescan.
    fn pause(&mut self) -> Result<(), String> {
        let ctx = self.ctx.clone();
        let p = &ctx.pace;
        let overflow = self.rng.chance(p.overflow_chance);
        let n = if overflow {
            ctx.max_queued + self.rng.range(1000, 3000) as usize
        } else {
            self.rng.range(p.burst.0, p.burst.1) as usize
        };
        let hold = self.rng.secs(p.stop_len.0, p.stop_len.1);
        let kind = if overflow {
            "SIGSTOP + inotify-overflow burst"
        } else {
            "SIGSTOP + burst"
        };
        let d = ctx.daemon();
        ctx.tally.fault(
            kind,
            &format!("pid {}, {n} files, {:.1}s", d.pid(), hold.as_secs_f64()),
        );
        let t0 = Instant::now();
        ctx.ledger.world(|w, t| w.frozen.begin(t));
        d.signal(libc::SIGSTOP);
        let written = ctx.tree.burst(n, &mut self.rng);
        thread::sleep(hold.saturating_sub(t0.elapsed()));
        d.signal(libc::SIGCONT);
        ctx.ledger.world(|w, t| w.frozen.end(t));
        drop(d);
        ctx.tally
            .log(&format!("SIGCONT after {:.1}s", t0.elapsed().as_secs_f64()));
        written
            .map(drop)
            .map_err(|e| format!("writing the burst: {e}"))
    }

    /// Another connection holds the database's write lock for 1–8 s (SQLite's busy timeout
    /// is 5 s: past it, the daemon must hold results in memory and retry).
    fn lock_db(&mut self) {
        let hold = self.rng.secs(1.0, 8.0);
        let ctx = &self.ctx;
        ctx.tally
            .fault("DB write lock", &format!("{:.1}s", hold.as_secs_f64()));
        ctx.ledger.world(|w, t| w.frozen.begin(t));
        let r = match &ctx.db {
            Db::Sqlite(path) => (|| -> rusqlite::Result<()> {
                let c = rusqlite::Connection::open(path)?;
                c.busy_timeout(Duration::from_secs(10))?;
                c.execute_batch("BEGIN EXCLUSIVE")?;
                thread::sleep(hold);
                c.execute_batch("COMMIT")
            })()
            .map_err(|e| e.to_string()),
            // EXCLUSIVE mode: readers go on, every writer waits, as with SQLite's lock.
            Db::Postgres { pg, db } => pg
                .try_psql(
                    db,
                    &format!(
                        "BEGIN; LOCK TABLE files IN EXCLUSIVE MODE; SELECT pg_sleep({:.3}); COMMIT;",
                        hold.as_secs_f64()
                    ),
                )
                .map(drop),
        };
        ctx.ledger.world(|w, t| w.frozen.end(t));
        match r {
            Ok(()) => ctx.tally.log("DB write lock released"),
            Err(e) => ctx.tally.note(format!("DB write lock: {e}")),
        }
    }

    /// Deletes `<database>-wal` under the running daemon (SQLite only).
    fn delete_wal(&mut self) {
        let ctx = &self.ctx;
        let Db::Sqlite(path) = &ctx.db else {
            return;
        };
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let r = std::fs::remove_file(&wal);
        ctx.ledger.world(|w, t| w.wal_deleted.push(t));
        ctx.tally.fault(
            "WAL deleted",
            &format!(
                "{}: {}",
                std::path::Path::new(&wal).display(),
                match r {
                    Ok(()) => "removed".to_string(),
                    Err(e) => e.to_string(),
                }
            ),
        );
    }
}
