//! The `writer` thread: files at a steady rate, in every way a camera or a copy tool writes
//! them (one write; several writes with pauses shorter than `settle_secs`; written aside and
//! renamed in), each registered in the ledger before it is visible. It also keeps space: a
//! file whose last version arrived 10 minutes ago is deleted (only while the tree is whole).

use std::fs::{self, File};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::ledger::{sha256, How};
use super::tree::{image, mtime_ns, pick_size, Tree};
use crate::rng::Rng;

/// Slow writers run on their own threads; beyond this many at once a file is written directly.
const MAX_SLOW: usize = 8;
/// A file whose last version arrived this long ago is deleted (disk space on long runs).
const PRUNE_AFTER_SECS: f64 = 600.0;

struct Writer {
    tree: Arc<Tree>,
    rng: Rng,
    slow: Vec<JoinHandle<io::Result<()>>>,
    slow_active: Arc<AtomicUsize>,
}

/// Writes `rate` files a second until `stop`; then finishes its slow writes and returns.
pub fn spawn(
    tree: Arc<Tree>,
    rate: f64,
    rng: Rng,
    stop: Arc<AtomicBool>,
) -> JoinHandle<io::Result<()>> {
    thread::Builder::new()
        .name("writer".into())
        .spawn(move || {
            let mut w = Writer {
                tree,
                rng,
                slow: Vec::new(),
                slow_active: Arc::new(AtomicUsize::new(0)),
            };
            let result = w.run(rate, &stop);
            for h in w.slow.drain(..) {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            }
            result
        })
        .expect("spawning the writer thread")
}

impl Writer {
    fn run(&mut self, rate: f64, stop: &AtomicBool) -> io::Result<()> {
        let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let mut next = Instant::now();
        let mut last_prune = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next {
                self.write_one()?;
                next += period;
                // Behind by more than a second (a slow disk, a big file): no rush to catch up.
                if next + Duration::from_secs(1) < now {
                    next = now;
                }
            }
            if last_prune.elapsed() >= Duration::from_secs(30) {
                last_prune = Instant::now();
                self.keep_space();
            }
            self.reap_slow()?;
            let until = next.min(now + Duration::from_millis(50));
            thread::sleep(until.saturating_duration_since(Instant::now()));
        }
        Ok(())
    }

    /// Deletes files whose last version arrived long ago (only where the tree is whole).
    fn keep_space(&self) {
        let st = self.tree.state();
        if !st.whole() {
            return;
        }
        for p in self.tree.ledger.take_prunable(PRUNE_AFTER_SECS) {
            let _ = fs::remove_file(p);
        }
    }

    fn reap_slow(&mut self) -> io::Result<()> {
        let mut i = 0;
        while i < self.slow.len() {
            if self.slow[i].is_finished() {
                let h = self.slow.swap_remove(i);
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    fn write_one(&mut self) -> io::Result<()> {
        let tree = self.tree.clone();
        let mut st = tree.state();
        let rng = &mut self.rng;
        let Some((folder, date)) = tree.place(&st, rng) else {
            return Ok(());
        };
        let dir = tree.date_dir(&mut st, folder, &date)?;
        let png = rng.chance(0.15);
        let name = tree.name(rng, png);
        let size = pick_size(rng, tree.big_files);
        let bytes = image(rng, png, size);
        let path = dir.join(&name);
        let sha = sha256(&bytes);
        let len = bytes.len() as u64;
        let ledger = &tree.ledger;
        match rng.weighted(&[80, 8, 12]) {
            1 if self.slow_active.load(Ordering::Relaxed) < MAX_SLOW => {
                // 3–6 writes with pauses under settle_secs (1 s): the daemon must wait for the
                // close (or the end-of-image marker), never send a half-written file.
                let pieces = rng.range(3, 6) as usize;
                let mut cuts: Vec<usize> = (1..pieces)
                    .map(|_| rng.range(1, len - 1) as usize)
                    .collect();
                cuts.sort_unstable();
                let pauses: Vec<Duration> = (1..pieces).map(|_| rng.secs(0.1, 0.7)).collect();
                ledger.register(&name, folder, &date, path.clone(), sha, len, How::Slow);
                // Created under the lock: the file then moves with its folder if that is
                // unmounted or swapped while the writes go on.
                let f = File::create(&path)?;
                st.slow.insert(name.clone());
                tree.remember(&mut st, &name, folder, &date, &path);
                drop(st);
                let active = self.slow_active.clone();
                active.fetch_add(1, Ordering::Relaxed);
                let t = tree.clone();
                let h = thread::Builder::new()
                    .name("slow-write".into())
                    .spawn(move || {
                        let r = slow_write(f, &bytes, &cuts, &pauses);
                        if let Ok(m) = &r {
                            t.ledger.complete(&name, mtime_ns(m));
                        }
                        t.state().slow.remove(&name);
                        active.fetch_sub(1, Ordering::Relaxed);
                        r.map(drop)
                    })?;
                self.slow.push(h);
            }
            2 => {
                let tmp = tree.incoming.join(&name);
                let mut f = File::create(&tmp)?;
                f.write_all(&bytes)?;
                let m = f.metadata()?;
                drop(f);
                ledger.register(&name, folder, &date, path.clone(), sha, len, How::Renamed);
                fs::rename(&tmp, &path)?;
                ledger.complete(&name, mtime_ns(&m));
                tree.remember(&mut st, &name, folder, &date, &path);
            }
            _ => tree.put(&mut st, &name, folder, &date, &path, &bytes, How::Direct)?,
        }
        Ok(())
    }
}

/// Writes in pieces with pauses; the file's metadata after the last write.
fn slow_write(
    mut f: File,
    bytes: &[u8],
    cuts: &[usize],
    pauses: &[Duration],
) -> io::Result<fs::Metadata> {
    let mut from = 0;
    for (cut, pause) in cuts.iter().zip(pauses) {
        f.write_all(&bytes[from..*cut])?;
        from = *cut;
        thread::sleep(*pause);
    }
    f.write_all(&bytes[from..])?;
    f.metadata()
}
