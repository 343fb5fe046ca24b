//! World faults: the daemon's wall clock stepped forward (a day, or 200 days) or back (hours)
//! for a while and then set right, and the config narrowed (a folder or an extension
//! removed, SIGHUP) and widened again (SIGHUP). When the episode stops, the clock is true and
//! the full config is in force.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{Ctx, Deck};
use crate::daemon::{log_len, log_since, wait_log};
use crate::rng::Rng;
use crate::soak::daemon::EXTENSIONS;
use crate::soak::kinds::Kind;
use crate::soak::tree::FOLDERS;

/// How long a reload may take to be confirmed by the daemon's log.
const CONFIRM: Duration = Duration::from_secs(30);

pub fn spawn(ctx: Arc<Ctx>, rng: Rng) -> JoinHandle<Result<(), String>> {
    thread::Builder::new()
        .name("world-faults".into())
        .spawn(move || {
            let mut w = World { ctx, rng };
            let r = w.run();
            w.set_clock(0, "episode end");
            r
        })
        .expect("spawning the world injector")
}

struct World {
    ctx: Arc<Ctx>,
    rng: Rng,
}

/// Sends SIGHUP after writing the config (without `removed`), while no start or stop is in
/// progress; when the daemon confirmed it (a "configuration reloaded" line, or "ready:" from
/// a start that read the new file), in seconds into the episode, or `None`. Also the time
/// of the write.
pub fn reload(ctx: &Ctx, removed: Option<&str>) -> Result<(f64, Option<f64>), String> {
    let offset;
    let written;
    {
        let d = ctx.daemon();
        offset = log_len(&ctx.stderr);
        ctx.config
            .write(&ctx.config_path, removed)
            .map_err(|e| format!("writing the config: {e}"))?;
        written = ctx.ledger.now();
        // Down (between a kill and its restart): the next start reads the new file.
        d.signal(libc::SIGHUP);
    }
    let needles = ["configuration reloaded", "ready:", "reload refused"];
    if !wait_log(&ctx.stderr, offset, &needles, CONFIRM) {
        ctx.tally.note(format!(
            "the daemon did not confirm a reload within {}s",
            CONFIRM.as_secs()
        ));
        return Ok((written, None));
    }
    let confirmed = ctx.ledger.now();
    let text = log_since(&ctx.stderr, offset);
    if text.contains("reload refused") {
        ctx.tally
            .note("the daemon refused a config the engine wrote".to_string());
    }
    Ok((written, Some(confirmed)))
}

impl World {
    fn run(&mut self) -> Result<(), String> {
        if self.ctx.clock.step() != 0 {
            // The episode started with the clock ahead: set it right after a while.
            let (lo, hi) = self.ctx.pace.world_len;
            if !self.ctx.nap(self.rng.secs(lo, hi)) {
                return Ok(());
            }
            let was = self.ctx.clock.step();
            self.ctx.ledger.disruption(true);
            self.set_clock(0, &format!("stepped back from {was:+}s"));
            self.ctx.ledger.disruption(false);
        }
        let on = |k| u64::from(self.ctx.faults.has(k));
        // Clock forward, clock back, reload.
        let mut deck = Deck::new(&[on(Kind::Clock), on(Kind::Clock), on(Kind::Reload)]);
        if deck.is_empty() {
            // Nothing of ours is on: wait for the end like the others.
            while self.ctx.nap(Duration::from_secs(1)) {}
            return Ok(());
        }
        let (lo, hi) = self.ctx.pace.world_gap;
        let mut gap = self.rng.secs(lo / 2.0, hi / 2.0);
        while self.ctx.nap(gap) {
            self.ctx.ledger.disruption(true);
            let r = match deck.draw(&mut self.rng).unwrap_or(0) {
                card @ (0 | 1) => {
                    self.clock(card == 0);
                    Ok(())
                }
                _ => self.reload(),
            };
            self.ctx.ledger.disruption(false);
            r?;
            gap = self.rng.secs(lo, hi);
        }
        Ok(())
    }

    fn set_clock(&self, secs: i64, why: &str) {
        if self.ctx.clock.step() == secs {
            return;
        }
        match self.ctx.clock.set_step(secs) {
            Ok(()) => self
                .ctx
                .tally
                .fault("clock step", &format!("daemon clock {secs:+}s ({why})")),
            Err(e) => self.ctx.tally.note(format!("stepping the clock: {e}")),
        }
    }

    /// A step forward (a day or 200 days) or back (1–3 hours), held, then set right.
    fn clock(&mut self, forward: bool) {
        let secs: i64 = match (forward, self.rng.chance(0.5)) {
            (true, true) => 200 * 86_400,
            (true, false) => 86_400 + self.rng.range(0, 3600) as i64,
            (false, _) => -(self.rng.range(3600, 3 * 3600) as i64),
        };
        let (lo, hi) = self.ctx.pace.world_len;
        let len = self.rng.secs(lo, hi);
        self.set_clock(secs, &format!("for {:.1}s", len.as_secs_f64()));
        self.ctx.nap(len);
        self.set_clock(0, "set right");
    }

    /// A folder or an extension removed from the config (SIGHUP), then put back (SIGHUP).
    fn reload(&mut self) -> Result<(), String> {
        let choices: Vec<&'static str> = FOLDERS
            .into_iter()
            .chain(EXTENSIONS.into_iter().filter(|e| *e != "jpg"))
            .collect();
        let removed = *self.rng.pick(&choices);
        let is_folder = FOLDERS.contains(&removed);
        let (lo, hi) = self.ctx.pace.world_len;
        let len = self.rng.secs(lo, hi);
        let ctx = self.ctx.clone();
        let (written, confirmed) = reload(&ctx, Some(removed))?;
        ctx.ledger.world(|w, _| {
            let p = if is_folder {
                w.excluded_folder.entry(removed.to_string()).or_default()
            } else {
                w.excluded_ext.entry(removed.to_string()).or_default()
            };
            p.begin(written);
            w.narrowings.push(crate::soak::ledger::Narrowing {
                removed: removed.to_string(),
                is_folder,
                confirmed,
                restored: None,
            });
        });
        ctx.tally.fault(
            "reload narrowed",
            &format!(
                "{} {removed} removed from the config for {:.1}s (SIGHUP; {})",
                if is_folder { "folder" } else { "extension" },
                len.as_secs_f64(),
                confirmed.map_or("not confirmed".into(), |c| format!(
                    "confirmed after {:.1}s",
                    c - written
                ))
            ),
        );
        ctx.nap(len);
        let (written, confirmed) = reload(&ctx, None)?;
        ctx.ledger.world(|w, _| {
            if let Some(n) = w.narrowings.last_mut() {
                n.restored = Some(written);
            }
            // Unconfirmed: still excluded, until the episode's end confirms its own reload.
            if let Some(c) = confirmed {
                let p = if is_folder {
                    w.excluded_folder.entry(removed.to_string()).or_default()
                } else {
                    w.excluded_ext.entry(removed.to_string()).or_default()
                };
                p.end(c);
            }
        });
        ctx.tally.fault(
            "reload widened",
            &format!(
                "{removed} back in the config (SIGHUP; {})",
                confirmed.map_or("not confirmed".into(), |c| format!(
                    "confirmed after {:.1}s",
                    c - written
                ))
            ),
        );
        Ok(())
    }
}
