//! Tree faults: a file moved out of the tree and back later (sometimes rewritten first), a
//! file rewritten, a complete file hard-linked in, a folder unmounted (an empty directory in
//! its place) and remounted, a date folder swapped for a symlink to sentinels outside the
//! tree and restored. When the episode stops, everything is put back.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Ctx, Deck};
use crate::rng::Rng;
use crate::soak::kinds::Kind;

pub fn spawn(ctx: Arc<Ctx>, rng: Rng) -> JoinHandle<Result<(), String>> {
    thread::Builder::new()
        .name("tree-faults".into())
        .spawn(move || {
            let mut t = TreeFaults {
                ctx,
                rng,
                returns: Vec::new(),
                swaps: 0,
            };
            let r = t.run();
            let restored = t
                .ctx
                .tree
                .restore(&mut t.rng)
                .map_err(|e| format!("restoring the tree: {e}"))?;
            for what in restored {
                t.ctx.tally.log(&format!("episode end: {what}"));
            }
            r
        })
        .expect("spawning the tree injector")
}

struct TreeFaults {
    ctx: Arc<Ctx>,
    rng: Rng,
    /// Vanished files and when they come back (rewritten first if true).
    returns: Vec<(Instant, String, bool)>,
    swaps: u64,
}

impl TreeFaults {
    fn run(&mut self) -> Result<(), String> {
        let on = |k| u64::from(self.ctx.faults.has(k));
        let mut deck = Deck::new(&[
            on(Kind::Vanish) * 3,
            on(Kind::Rewrite) * 3,
            on(Kind::Link) * 2,
            on(Kind::Unmount),
            on(Kind::Symlink),
        ]);
        if deck.is_empty() {
            // Nothing of ours is on: wait for the end like the others.
            while self.ctx.nap(Duration::from_secs(1)) {}
            return Ok(());
        }
        let (lo, hi) = self.ctx.pace.tree_gap;
        let mut next = Instant::now() + self.rng.secs(lo, hi);
        while self.ctx.nap(Duration::from_millis(100)) {
            self.due_returns()?;
            if Instant::now() < next {
                continue;
            }
            let r = match deck.draw(&mut self.rng).unwrap_or(0) {
                0 => self.vanish(),
                1 => self.rewrite(),
                2 => self.link(),
                3 => self.unmount(),
                _ => self.swap(),
            };
            r.map_err(|e| format!("tree fault: {e}"))?;
            next = Instant::now() + self.rng.secs(lo, hi);
        }
        Ok(())
    }

    fn due_returns(&mut self) -> Result<(), String> {
        let now = Instant::now();
        let mut i = 0;
        while i < self.returns.len() {
            if self.returns[i].0 > now {
                i += 1;
                continue;
            }
            let (_, name, rewrite) = self.returns[i].clone();
            let back = self
                .ctx
                .tree
                .reappear(&name, rewrite, &mut self.rng)
                .map_err(|e| format!("putting {name} back: {e}"))?;
            if back {
                let how = if rewrite { "rewritten, " } else { "" };
                self.ctx
                    .tally
                    .fault("reappear", &format!("{name} ({how}back in the tree)"));
                self.returns.swap_remove(i);
            } else {
                // Its folder is out of the tree just now: a second later.
                self.returns[i].0 = now + Duration::from_secs(1);
                i += 1;
            }
        }
        Ok(())
    }

    fn vanish(&mut self) -> std::io::Result<()> {
        let Some(name) = self.ctx.tree.vanish(&mut self.rng)? else {
            return Ok(());
        };
        let (lo, hi) = self.ctx.pace.away_len;
        let away = self.rng.secs(lo, hi);
        let rewrite = self.rng.chance(0.3);
        self.ctx.tally.fault(
            "vanish",
            &format!(
                "{name} out of the tree for {:.1}s{}",
                away.as_secs_f64(),
                if rewrite { ", rewritten meanwhile" } else { "" }
            ),
        );
        self.returns.push((Instant::now() + away, name, rewrite));
        Ok(())
    }

    fn rewrite(&mut self) -> std::io::Result<()> {
        if let Some((name, how)) = self.ctx.tree.rewrite(&mut self.rng)? {
            self.ctx.tally.fault("rewrite", &format!("{name} {how}"));
        }
        Ok(())
    }

    fn link(&mut self) -> std::io::Result<()> {
        if let Some(name) = self.ctx.tree.link_in(&mut self.rng)? {
            self.ctx
                .tally
                .fault("link() ingest", &format!("{name} hard-linked in"));
        }
        Ok(())
    }

    fn unmount(&mut self) -> std::io::Result<()> {
        let mounted = self.ctx.tree.mounted();
        if mounted.is_empty() {
            return Ok(());
        }
        let folder = *self.rng.pick(&mounted);
        let (lo, hi) = self.ctx.pace.unmount_len;
        let len = self.rng.secs(lo, hi);
        self.ctx.ledger.disruption(true);
        let moved = self.ctx.tree.unmount(folder, &mut self.rng)?;
        self.ctx.tally.fault(
            "unmount",
            &format!(
                "{folder} renamed away, an empty directory in its place for {:.1}s{}",
                len.as_secs_f64(),
                moved.map_or(String::new(), |m| format!(
                    "; {m} rewritten in the moved folder"
                ))
            ),
        );
        self.ctx.nap(len);
        self.ctx.tree.remount(folder)?;
        self.ctx.ledger.disruption(false);
        self.ctx.tally.fault("remount", folder);
        Ok(())
    }

    fn swap(&mut self) -> std::io::Result<()> {
        self.swaps += 1;
        let (lo, hi) = self.ctx.pace.unmount_len;
        let len = self.rng.secs(lo, hi);
        self.ctx.ledger.disruption(true);
        let r = self.ctx.tree.swap(self.swaps, &mut self.rng);
        let Some((folder, date, moved)) = r? else {
            self.ctx.ledger.disruption(false);
            return Ok(());
        };
        self.ctx.tally.fault(
            "symlink swap",
            &format!(
                "{folder}/{date} is a symlink to outside/sentinels-{} for {:.1}s{}",
                self.swaps,
                len.as_secs_f64(),
                moved.map_or(String::new(), |m| format!(
                    "; {m} (a sentinel's twin) rewritten in the moved real folder"
                ))
            ),
        );
        self.ctx.nap(len);
        self.ctx.tree.unswap(folder, &date)?;
        self.ctx.ledger.disruption(false);
        self.ctx
            .tally
            .fault("symlink restored", &format!("{folder}/{date}"));
        Ok(())
    }
}
