//! The image tree the daemon watches, and everything that changes it.
//!
//! The `writer` (writer.rs) adds files to `<root>/Sega_N/<date>/`, the date by the model
//! clock (5 % to tomorrow's folder). The fault injectors change the tree through the same
//! `Tree`: a burst while the daemon is stopped, a file moved away and back,
//! rewritten, hard-linked in, a folder "unmounted", a date folder swapped for a symlink to
//! sentinel files outside the tree. One mutex (`State`) orders them, so the writer never
//! writes into an unmounted folder or through a symlink, and every change is in the ledger
//! before the daemon can see it.
//!
//! Work files live beside the root, on the same filesystem: `incoming/` (written aside, then
//! renamed or linked in), `holding/` (what is out of the tree), `outside/` (sentinels).
//!
//! Here: the tree, its state and the writes; `files` a file's changes (vanished and back,
//! rewritten, hard-linked in); `folders` whole folders out of the tree (unmounted, a date
//! folder swapped for a symlink to sentinels) and the sentinels' check.

mod files;
mod folders;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::clock::{date_name, ModelClock};
use super::ledger::{sha256, How, Ledger};
use crate::images;
use crate::rng::Rng;

pub const FOLDERS: [&str; 3] = ["Sega_1", "Sega_2", "Sega_3"];
/// The atime sentinels are given: older than their mtime, so any read moves it (relatime).
pub const SENTINEL_ATIME: i64 = 1;
/// How many recent names the injectors choose from.
const RECENT: usize = 4000;

pub(super) fn mtime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

/// Mostly small images, some large: 70 % 1–16 KiB, 25 % to 128 KiB, 4.5 % to 1 MiB,
/// 0.5 % to 4 MiB. Without `big`, 1–32 KiB (the model test on a shared machine).
pub(super) fn pick_size(rng: &mut Rng, big: bool) -> usize {
    const K: u64 = 1024;
    if !big {
        return rng.range(K, 32 * K) as usize;
    }
    let (lo, hi) = match rng.weighted(&[700, 250, 45, 5]) {
        0 => (K, 16 * K),
        1 => (16 * K, 128 * K),
        2 => (128 * K, 1024 * K),
        _ => (1024 * K, 4096 * K),
    };
    rng.range(lo, hi) as usize
}

pub(super) fn image(rng: &mut Rng, png: bool, size: usize) -> Vec<u8> {
    let seed = rng.next_u64();
    if png {
        images::png_of_size(size, seed)
    } else {
        images::jpeg_of_size(size, seed)
    }
}

/// A date folder swapped for a symlink: (folder, date, a file rewritten in the moved real
/// folder).
pub type Swapped = (&'static str, String, Option<String>);

/// Where things are out of the tree, and what is being written.
#[derive(Default)]
pub(super) struct State {
    made: HashSet<PathBuf>,
    /// Folder → where its real directory waits.
    unmounted: HashMap<&'static str, PathBuf>,
    /// (folder, date) → where the real date folder waits.
    swapped: HashMap<(&'static str, String), PathBuf>,
    /// Name → (where it waits, its path in the tree).
    vanished: HashMap<String, (PathBuf, PathBuf)>,
    /// Names being written slowly: not to be moved or rewritten yet.
    pub(super) slow: HashSet<String>,
    /// Recently written names, with folder, date and path, for the injectors to pick from.
    recent: VecDeque<(String, &'static str, String, PathBuf)>,
}

impl State {
    /// Whether the whole tree is in place (no folder unmounted, no date folder swapped).
    pub(super) fn whole(&self) -> bool {
        self.unmounted.is_empty() && self.swapped.is_empty()
    }

    /// Whether a path of this folder and date is in the tree and writable now.
    fn reachable(&self, folder: &'static str, date: &str) -> bool {
        !self.unmounted.contains_key(folder) && !self.swapped.contains_key(&(folder, date.into()))
    }
}

pub struct Tree {
    pub root: PathBuf,
    pub(super) incoming: PathBuf,
    holding: PathBuf,
    outside: PathBuf,
    pub ledger: Arc<Ledger>,
    pub clock: Arc<ModelClock>,
    pub(super) big_files: bool,
    seq: AtomicU64,
    state: Mutex<State>,
    /// Every sentinel file planted, for the atime check.
    sentinels: Mutex<Vec<PathBuf>>,
}

impl Tree {
    /// Makes `root` with today's folders, and the work directories beside it under `work`.
    pub fn create(
        root: PathBuf,
        work: &Path,
        ledger: Arc<Ledger>,
        clock: Arc<ModelClock>,
        big_files: bool,
    ) -> io::Result<Tree> {
        let tree = Tree {
            root,
            incoming: work.join("incoming"),
            holding: work.join("holding"),
            outside: work.join("outside"),
            ledger,
            clock,
            big_files,
            seq: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            sentinels: Mutex::new(Vec::new()),
        };
        for d in [&tree.incoming, &tree.holding, &tree.outside] {
            fs::create_dir_all(d)?;
        }
        let today = date_name(tree.clock.day(0));
        let mut st = tree.state();
        for f in FOLDERS {
            tree.date_dir(&mut st, f, &today)?;
        }
        drop(st);
        Ok(tree)
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The date folder, made if needed (a new folder is an event too).
    pub(super) fn date_dir(&self, st: &mut State, folder: &str, date: &str) -> io::Result<PathBuf> {
        let dir = self.root.join(folder).join(date);
        if !st.made.contains(&dir) {
            fs::create_dir_all(&dir)?;
            st.made.insert(dir.clone());
        }
        Ok(dir)
    }

    /// A new unique name: mostly `s0000042.jpg`, some with a space or Korean letters (sent
    /// percent-encoded), upper-case or `.jpeg` extensions.
    pub(super) fn name(&self, rng: &mut Rng, png: bool) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let prefix = ["s", "cam 2_", "카메라-"][rng.weighted(&[95, 3, 2])];
        let ext = if png {
            "png"
        } else {
            ["jpg", "JPG", "jpeg"][rng.weighted(&[90, 7, 3])]
        };
        format!("{prefix}{n:07}.{ext}")
    }

    /// A folder and date the writer may use now: today's (5 % tomorrow's) in a folder that is
    /// mounted, whose date folder is not swapped.
    pub(super) fn place(&self, st: &State, rng: &mut Rng) -> Option<(&'static str, String)> {
        let days = if rng.chance(0.05) { 1 } else { 0 };
        let date = date_name(self.clock.day(days));
        let folder = FOLDERS[rng.range(0, 2) as usize];
        st.reachable(folder, &date).then_some((folder, date))
    }

    pub(super) fn remember(
        &self,
        st: &mut State,
        name: &str,
        folder: &'static str,
        date: &str,
        path: &Path,
    ) {
        if st.recent.len() >= RECENT {
            st.recent.pop_front();
        }
        st.recent
            .push_back((name.to_owned(), folder, date.to_owned(), path.to_path_buf()));
    }

    /// Writes `bytes` at `path` in one go, registered first and completed after.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn put(
        &self,
        st: &mut State,
        name: &str,
        folder: &'static str,
        date: &str,
        path: &Path,
        bytes: &[u8],
        how: How,
    ) -> io::Result<()> {
        self.ledger.register(
            name,
            folder,
            date,
            path.to_path_buf(),
            sha256(bytes),
            bytes.len() as u64,
            how,
        );
        let mut f = File::create(path)?;
        f.write_all(bytes)?;
        let m = f.metadata()?;
        drop(f);
        self.ledger.complete(name, mtime_ns(&m));
        self.remember(st, name, folder, date, path);
        Ok(())
    }

    /// Writes `n` small files as fast as it can (the daemon is stopped meanwhile).
    pub fn burst(&self, n: usize, rng: &mut Rng) -> io::Result<usize> {
        let mut written = 0;
        for _ in 0..n {
            let mut st = self.state();
            let Some((folder, date)) = self.place(&st, rng) else {
                continue;
            };
            let dir = self.date_dir(&mut st, folder, &date)?;
            let name = self.name(rng, false);
            let size = rng.range(1024, 4096) as usize;
            let bytes = image(rng, false, size);
            let path = dir.join(&name);
            self.put(&mut st, &name, folder, &date, &path, &bytes, How::Burst)?;
            written += 1;
        }
        Ok(written)
    }

    /// A recent file that is in the tree, complete and not being written: (name, path).
    fn pick_present(&self, st: &State, rng: &mut Rng) -> Option<(String, PathBuf)> {
        for _ in 0..20 {
            if st.recent.is_empty() {
                return None;
            }
            let i = rng.below(st.recent.len() as u64) as usize;
            let (name, folder, date, path) = &st.recent[i];
            if st.slow.contains(name)
                || st.vanished.contains_key(name)
                || !st.reachable(folder, date)
            {
                continue;
            }
            let deleted = self
                .ledger
                .lock()
                .files
                .get(name)
                .is_none_or(|f| f.deleted.is_some());
            if !deleted && fs::symlink_metadata(path).is_ok() {
                return Some((name.clone(), path.clone()));
            }
        }
        None
    }

    pub fn vanished(&self) -> Vec<String> {
        self.state().vanished.keys().cloned().collect()
    }

    fn place_of(&self, name: &str) -> (&'static str, String) {
        let g = self.ledger.lock();
        let f = &g.files[name];
        (f.folder, f.date.clone())
    }

    /// Everything back in the tree: folders remounted, date folders unswapped, vanished
    /// files returned (as they are).
    pub fn restore(&self, rng: &mut Rng) -> io::Result<Vec<String>> {
        let mut done = Vec::new();
        let (unmounted, swapped) = {
            let st = self.state();
            let u: Vec<&'static str> = st.unmounted.keys().copied().collect();
            let s: Vec<(&'static str, String)> = st.swapped.keys().cloned().collect();
            (u, s)
        };
        for f in unmounted {
            self.remount(f)?;
            done.push(format!("remounted {f}"));
        }
        for (f, d) in swapped {
            self.unswap(f, &d)?;
            done.push(format!("unswapped {f}/{d}"));
        }
        for name in self.vanished() {
            self.reappear(&name, false, rng)?;
            done.push(format!("returned {name}"));
        }
        Ok(done)
    }
}
