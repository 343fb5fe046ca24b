//! The image tree the daemon watches, and the writers that fill it: the `writer` thread
//! (files at a steady rate, in every way a camera or a copy tool writes them, with some
//! rewritten later) and `Tree::burst` (thousands at once while the daemon is stopped).
//!
//! Every version is registered in the ledger before it becomes visible. Files go to
//! `<root>/Sega_N/<today>/` (5 % to tomorrow's folder); dates are UTC, as the daemon runs
//! with `TZ=UTC`. Temp files for renames live in `incoming/`, outside the watched root but on
//! the same filesystem. The writer also prunes: a file whose last version arrived 10 minutes
//! ago is deleted, so an hour's run does not fill the disk.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sega_testsrv::images;
use sha2::{Digest as _, Sha256};

use crate::ledger::{Digest, How, Ledger};
use crate::rng::Rng;

pub const FOLDERS: [&str; 3] = ["Sega_1", "Sega_2", "Sega_3"];
/// Slow writers run on their own threads; beyond this many at once a file is written directly.
const MAX_SLOW: usize = 8;
/// A file whose last version arrived this long ago is deleted (disk space on long runs).
const PRUNE_AFTER: Duration = Duration::from_secs(600);

/// The UTC date `days` from now as `YYYY-MM-DD`.
pub fn utc_date(days: i64) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let t: libc::time_t = secs + days * 86_400;
    // SAFETY: an all-zero tm is a valid value; gmtime_r only writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::gmtime_r(&t, &mut tm) };
    format!(
        "{:04}-{:02}-{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday
    )
}

fn sha256(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// Mostly small images, some large: 70 % 1–16 KiB, 25 % to 128 KiB, 4.5 % to 1 MiB,
/// 0.5 % to 4 MiB.
fn pick_size(rng: &mut Rng) -> usize {
    const K: u64 = 1024;
    let (lo, hi) = match rng.weighted(&[700, 250, 45, 5]) {
        0 => (K, 16 * K),
        1 => (16 * K, 128 * K),
        2 => (128 * K, 1024 * K),
        _ => (1024 * K, 4096 * K),
    };
    rng.range(lo, hi) as usize
}

fn image(rng: &mut Rng, png: bool, size: usize) -> Vec<u8> {
    let seed = rng.next();
    if png {
        images::png_of_size(size, seed)
    } else {
        images::jpeg_of_size(size, seed)
    }
}

pub struct Tree {
    pub root: PathBuf,
    incoming: PathBuf,
    pub ledger: Arc<Ledger>,
    seq: AtomicU64,
    made: Mutex<HashSet<PathBuf>>,
}

impl Tree {
    /// Makes `root` with today's folders, and `incoming`.
    pub fn create(root: PathBuf, incoming: PathBuf, ledger: Arc<Ledger>) -> io::Result<Tree> {
        fs::create_dir_all(&incoming)?;
        let tree = Tree {
            root,
            incoming,
            ledger,
            seq: AtomicU64::new(0),
            made: Mutex::new(HashSet::new()),
        };
        for f in FOLDERS {
            tree.date_dir(f, 0)?;
        }
        Ok(tree)
    }

    /// The date folder `days` from today, made if needed (a new folder is an event too).
    fn date_dir(&self, folder: &str, days: i64) -> io::Result<PathBuf> {
        let dir = self.root.join(folder).join(utc_date(days));
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if !made.contains(&dir) {
            fs::create_dir_all(&dir)?;
            made.insert(dir.clone());
        }
        Ok(dir)
    }

    /// A new unique name: mostly `s0000042.jpg`, some with a space or Korean letters (sent
    /// percent-encoded), upper-case or `.jpeg` extensions.
    fn name(&self, rng: &mut Rng, png: bool) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let prefix = ["s", "cam 2_", "카메라-"][rng.weighted(&[95, 3, 2])];
        let ext = if png {
            "png"
        } else {
            ["jpg", "JPG", "jpeg"][rng.weighted(&[90, 7, 3])]
        };
        format!("{prefix}{n:07}.{ext}")
    }

    /// Writes `n` small files as fast as it can (the daemon is stopped meanwhile).
    pub fn burst(&self, n: usize, rng: &mut Rng) -> io::Result<()> {
        for _ in 0..n {
            let dir = self.date_dir(FOLDERS[rng.range(0, 2) as usize], 0)?;
            let name = self.name(rng, false);
            let size = rng.range(1024, 4096) as usize;
            let bytes = image(rng, false, size);
            let path = dir.join(&name);
            let sha = sha256(&bytes);
            self.ledger
                .register(&name, path.clone(), sha, bytes.len() as u64, How::Burst);
            fs::write(&path, &bytes)?;
        }
        Ok(())
    }
}

/// A scheduled rewrite: when, the name, the path.
type Rewrite = Reverse<(Instant, String, PathBuf)>;

struct Writer {
    tree: Arc<Tree>,
    rng: Rng,
    rewrites: BinaryHeap<Rewrite>,
    slow: Vec<JoinHandle<io::Result<()>>>,
    slow_active: Arc<AtomicUsize>,
}

/// Writes `rate` files a second until `stop`; then finishes its slow writes, drops the
/// rewrites not yet due and returns.
pub fn spawn_writer(
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
                rewrites: BinaryHeap::new(),
                slow: Vec::new(),
                slow_active: Arc::new(AtomicUsize::new(0)),
            };
            let result = w.run(rate, &stop);
            for Reverse((_, name, _)) in w.rewrites.drain() {
                w.tree.ledger.set_rewrite_pending(&name, false);
            }
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
            while let Some(Reverse((at, _, _))) = self.rewrites.peek() {
                if *at > now {
                    break;
                }
                let Some(Reverse((_, name, path))) = self.rewrites.pop() else {
                    break;
                };
                self.rewrite(&name, &path)?;
            }
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
                for p in self.tree.ledger.take_prunable(PRUNE_AFTER) {
                    let _ = fs::remove_file(p);
                }
            }
            self.reap_slow()?;
            let mut until = next.min(now + Duration::from_millis(50));
            if let Some(Reverse((at, _, _))) = self.rewrites.peek() {
                until = until.min(*at);
            }
            thread::sleep(until.saturating_duration_since(Instant::now()));
        }
        Ok(())
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
        let rng = &mut self.rng;
        let days = if rng.chance(0.05) { 1 } else { 0 };
        let dir = self
            .tree
            .date_dir(FOLDERS[rng.range(0, 2) as usize], days)?;
        let png = rng.chance(0.15);
        let name = self.tree.name(rng, png);
        let size = pick_size(rng);
        let bytes = image(rng, png, size);
        let path = dir.join(&name);
        let sha = sha256(&bytes);
        let len = bytes.len() as u64;
        let ledger = &self.tree.ledger;
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
                ledger.register(&name, path.clone(), sha, len, How::Slow);
                let active = self.slow_active.clone();
                let target = path.clone();
                active.fetch_add(1, Ordering::Relaxed);
                let h = thread::Builder::new()
                    .name("slow-write".into())
                    .spawn(move || {
                        let r = slow_write(&target, &bytes, &cuts, &pauses);
                        active.fetch_sub(1, Ordering::Relaxed);
                        r
                    })?;
                self.slow.push(h);
            }
            2 => {
                let tmp = self.tree.incoming.join(&name);
                fs::write(&tmp, &bytes)?;
                ledger.register(&name, path.clone(), sha, len, How::Renamed);
                fs::rename(&tmp, &path)?;
            }
            _ => {
                ledger.register(&name, path.clone(), sha, len, How::Direct);
                fs::write(&path, &bytes)?;
            }
        }
        if rng.chance(0.04) {
            let at = Instant::now() + rng.secs(10.0, 90.0);
            ledger.set_rewrite_pending(&name, true);
            self.rewrites.push(Reverse((at, name, path)));
        }
        Ok(())
    }

    /// A new version of a file, with new content: in place (truncate and write) or written
    /// aside and renamed over it.
    fn rewrite(&mut self, name: &str, path: &Path) -> io::Result<()> {
        let rng = &mut self.rng;
        let png = name.ends_with(".png");
        let size = pick_size(rng);
        let bytes = image(rng, png, size);
        let sha = sha256(&bytes);
        let len = bytes.len() as u64;
        let ledger = &self.tree.ledger;
        if rng.chance(0.5) {
            ledger.register(name, path.to_path_buf(), sha, len, How::RewriteInPlace);
            fs::write(path, &bytes)?;
        } else {
            let tmp = self.tree.incoming.join(format!("{name}.new"));
            fs::write(&tmp, &bytes)?;
            ledger.register(name, path.to_path_buf(), sha, len, How::RewriteRenamed);
            fs::rename(&tmp, path)?;
        }
        ledger.set_rewrite_pending(name, false);
        Ok(())
    }
}

fn slow_write(path: &Path, bytes: &[u8], cuts: &[usize], pauses: &[Duration]) -> io::Result<()> {
    let mut f = fs::File::create(path)?;
    let mut from = 0;
    for (cut, pause) in cuts.iter().zip(pauses) {
        f.write_all(&bytes[from..*cut])?;
        from = *cut;
        thread::sleep(*pause);
    }
    f.write_all(&bytes[from..])
}
