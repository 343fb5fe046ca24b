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

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
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

/// Sets a file's atime, leaving its mtime.
fn set_atime(path: &Path, secs: i64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let times = [
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs that outlive the call.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

    /// Moves a file out of the tree (rename: its mtime, so its version, is kept). Its name.
    pub fn vanish(&self, rng: &mut Rng) -> io::Result<Option<String>> {
        let mut st = self.state();
        let Some((name, path)) = self.pick_present(&st, rng) else {
            return Ok(None);
        };
        let away = self.holding.join(format!("v-{name}"));
        fs::rename(&path, &away)?;
        self.ledger.away(&name, true);
        st.vanished.insert(name.clone(), (away, path));
        Ok(Some(name))
    }

    /// Puts a vanished file back, rewritten first (a new version) if `rewrite`. False if its
    /// folder is out of the tree just now (try later).
    pub fn reappear(&self, name: &str, rewrite: bool, rng: &mut Rng) -> io::Result<bool> {
        let mut st = self.state();
        let Some((away, path)) = st.vanished.get(name).cloned() else {
            return Ok(true);
        };
        let (folder, date) = self.place_of(name);
        if !st.reachable(folder, &date) {
            return Ok(false);
        }
        if rewrite {
            self.rewrite_aside(name, folder, &date, &path, &away, rng)?;
        }
        fs::rename(&away, &path)?;
        self.ledger.away(name, false);
        st.vanished.remove(name);
        Ok(true)
    }

    /// A new version of `name` (whose place in the tree is `path`) written where the file
    /// is now, out of the tree (`actual`): it becomes current when it is back.
    fn rewrite_aside(
        &self,
        name: &str,
        folder: &'static str,
        date: &str,
        path: &Path,
        actual: &Path,
        rng: &mut Rng,
    ) -> io::Result<()> {
        let size = pick_size(rng, self.big_files);
        let bytes = image(rng, name.ends_with(".png"), size);
        self.ledger.register(
            name,
            folder,
            date,
            path.to_path_buf(),
            sha256(&bytes),
            bytes.len() as u64,
            How::RewriteAway,
        );
        let mut f = File::create(actual)?;
        f.write_all(&bytes)?;
        let m = f.metadata()?;
        drop(f);
        self.ledger.complete(name, mtime_ns(&m));
        Ok(())
    }

    /// A file of the moved-away directory `away` (the real `folder/date`), complete and
    /// neither being written nor vanished, rewritten there: a camera still writing to the
    /// share, whose events the daemon's watch (which follows the moved directory) reports
    /// under the old path. Its name.
    fn rewrite_moved(
        &self,
        st: &State,
        folder: &'static str,
        date: &str,
        away: &Path,
        names: &[String],
        rng: &mut Rng,
    ) -> io::Result<Option<String>> {
        let usable: Vec<&String> = names
            .iter()
            .filter(|n| !st.slow.contains(*n) && !st.vanished.contains_key(*n))
            .filter(|n| away.join(n).is_file())
            .collect();
        if usable.is_empty() {
            return Ok(None);
        }
        let name = (*rng.pick(&usable)).clone();
        let path = self.root.join(folder).join(date).join(&name);
        self.rewrite_aside(&name, folder, date, &path, &away.join(&name), rng)?;
        Ok(Some(name))
    }

    pub fn vanished(&self) -> Vec<String> {
        self.state().vanished.keys().cloned().collect()
    }

    fn place_of(&self, name: &str) -> (&'static str, String) {
        let g = self.ledger.lock();
        let f = &g.files[name];
        (f.folder, f.date.clone())
    }

    /// A new version of a present file: rewritten in place (truncate and write) or written
    /// aside and renamed over it. Its name.
    pub fn rewrite(&self, rng: &mut Rng) -> io::Result<Option<(String, &'static str)>> {
        let mut st = self.state();
        let Some((name, path)) = self.pick_present(&st, rng) else {
            return Ok(None);
        };
        let (folder, date) = self.place_of(&name);
        let size = pick_size(rng, self.big_files);
        let bytes = image(rng, name.ends_with(".png"), size);
        let (sha, len) = (sha256(&bytes), bytes.len() as u64);
        let how = if rng.chance(0.5) {
            self.ledger.register(
                &name,
                folder,
                &date,
                path.clone(),
                sha,
                len,
                How::RewriteInPlace,
            );
            let mut f = OpenOptions::new().write(true).truncate(true).open(&path)?;
            f.write_all(&bytes)?;
            let m = f.metadata()?;
            drop(f);
            self.ledger.complete(&name, mtime_ns(&m));
            "in place"
        } else {
            let tmp = self.incoming.join(format!("{name}.new"));
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            let m = f.metadata()?;
            drop(f);
            self.ledger.register(
                &name,
                folder,
                &date,
                path.clone(),
                sha,
                len,
                How::RewriteRenamed,
            );
            fs::rename(&tmp, &path)?;
            self.ledger.complete(&name, mtime_ns(&m));
            "by rename"
        };
        st.recent.retain(|r| r.0 != name);
        self.remember(&mut st, &name, folder, &date, &path);
        Ok(Some((name, how)))
    }

    /// A complete file written outside the tree and hard-linked into today's folder of
    /// some folder: the kernel reports only IN_CREATE. Its name.
    pub fn link_in(&self, rng: &mut Rng) -> io::Result<Option<String>> {
        let mut st = self.state();
        let Some((folder, date)) = self.place(&st, rng) else {
            return Ok(None);
        };
        let dir = self.date_dir(&mut st, folder, &date)?;
        let png = rng.chance(0.15);
        let name = self.name(rng, png);
        let size = pick_size(rng, self.big_files);
        let bytes = image(rng, png, size);
        let tmp = self.incoming.join(&name);
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        let m = f.metadata()?;
        drop(f);
        let path = dir.join(&name);
        self.ledger.register(
            &name,
            folder,
            &date,
            path.clone(),
            sha256(&bytes),
            bytes.len() as u64,
            How::Linked,
        );
        fs::hard_link(&tmp, &path)?;
        self.ledger.complete(&name, mtime_ns(&m));
        fs::remove_file(&tmp)?;
        self.remember(&mut st, &name, folder, &date, &path);
        Ok(Some(name))
    }

    /// Folders that are mounted now.
    pub fn mounted(&self) -> Vec<&'static str> {
        let st = self.state();
        FOLDERS
            .into_iter()
            .filter(|f| !st.unmounted.contains_key(f))
            .collect()
    }

    /// "Unmounts" a folder: its directory goes to holding, an empty one takes its place.
    /// A file of today's date folder is rewritten in the moved directory meanwhile (see
    /// `rewrite_moved`); its name.
    pub fn unmount(&self, folder: &'static str, rng: &mut Rng) -> io::Result<Option<String>> {
        let mut st = self.state();
        if st.unmounted.contains_key(folder) {
            return Ok(None);
        }
        let dir = self.root.join(folder);
        let away = self.holding.join(format!("mnt-{folder}"));
        fs::rename(&dir, &away)?;
        fs::create_dir(&dir)?;
        st.unmounted.insert(folder, away.clone());
        self.ledger
            .world(|w, t| w.unmounted.entry(folder).or_default().begin(t));
        let date = date_name(self.clock.day(0));
        let names: Vec<String> = st
            .recent
            .iter()
            .filter(|r| r.1 == folder && r.2 == date)
            .map(|r| r.0.clone())
            .collect();
        self.rewrite_moved(&st, folder, &date, &away.join(&date), &names, rng)
    }

    /// Puts an unmounted folder back (the empty stand-in removed first).
    pub fn remount(&self, folder: &'static str) -> io::Result<()> {
        let mut st = self.state();
        let Some(away) = st.unmounted.get(folder).cloned() else {
            return Ok(());
        };
        let dir = self.root.join(folder);
        fs::remove_dir(&dir)?;
        fs::rename(&away, &dir)?;
        st.unmounted.remove(folder);
        self.ledger
            .world(|w, t| w.unmounted.entry(folder).or_default().end(t));
        Ok(())
    }

    /// Replaces today's date folder of `folder` with a symlink to a directory outside the
    /// tree holding sentinels: files named like some that were in the real folder, and two
    /// of new names, each with content of its own and an atime older than its mtime. One
    /// more sentinel is written there once the link is in place (an event a watch that
    /// followed the link would see), and one of the real files that has a sentinel twin is
    /// rewritten in the moved real folder (an event reported under the linked path). The
    /// (folder, date) swapped and the file rewritten, if any.
    pub fn swap(&self, n: u64, rng: &mut Rng) -> io::Result<Option<Swapped>> {
        let mut st = self.state();
        let date = date_name(self.clock.day(0));
        let candidates: Vec<&'static str> = FOLDERS
            .into_iter()
            .filter(|f| st.reachable(f, &date) && st.made.contains(&self.root.join(f).join(&date)))
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let folder = *rng.pick(&candidates);
        let real = self.root.join(folder).join(&date);
        let mut names: Vec<String> = st
            .recent
            .iter()
            .filter(|r| r.1 == folder && r.2 == date)
            .map(|r| r.0.clone())
            .collect();
        let keep = names.len().saturating_sub(5);
        names.drain(..keep);
        names.push(format!("sentinel-{n}-a.jpg"));
        names.push(format!("sentinel-{n}-b.JPG"));
        let dir = self.outside.join(format!("sentinels-{n}"));
        fs::create_dir_all(&dir)?;
        for name in &names {
            self.plant(&dir, name, rng)?;
        }
        let away = self.holding.join(format!("swap-{n}"));
        fs::rename(&real, &away)?;
        std::os::unix::fs::symlink(&dir, &real)?;
        st.swapped.insert((folder, date.clone()), away.clone());
        self.ledger.world(|w, t| {
            w.swapped
                .entry((folder, date.clone()))
                .or_default()
                .begin(t)
        });
        self.plant(&dir, &format!("sentinel-{n}-late.jpg"), rng)?;
        let real_names = &names[..names.len() - 2];
        let moved = self.rewrite_moved(&st, folder, &date, &away, real_names, rng)?;
        Ok(Some((folder, date, moved)))
    }

    fn plant(&self, dir: &Path, name: &str, rng: &mut Rng) -> io::Result<()> {
        let bytes = images::jpeg_of_size(rng.range(2048, 8192) as usize, rng.next_u64());
        let path = dir.join(name);
        self.ledger.sentinel(sha256(&bytes), name, path.clone());
        fs::write(&path, &bytes)?;
        set_atime(&path, SENTINEL_ATIME)?;
        self.sentinels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path);
        Ok(())
    }

    /// Puts a swapped date folder back.
    pub fn unswap(&self, folder: &'static str, date: &str) -> io::Result<()> {
        let mut st = self.state();
        let key = (folder, date.to_owned());
        let Some(away) = st.swapped.get(&key).cloned() else {
            return Ok(());
        };
        let link = self.root.join(folder).join(date);
        fs::remove_file(&link)?;
        fs::rename(&away, &link)?;
        st.swapped.remove(&key);
        self.ledger
            .world(|w, t| w.swapped.entry(key).or_default().end(t));
        Ok(())
    }

    /// Every sentinel whose atime moved (something read it), with its atime.
    pub fn sentinels_read(&self) -> Vec<String> {
        let s = self.sentinels.lock().unwrap_or_else(|e| e.into_inner());
        s.iter()
            .filter_map(|p| match fs::symlink_metadata(p) {
                Ok(m) if m.atime() != SENTINEL_ATIME => Some(format!(
                    "{} was read (atime {}; mtime {})",
                    p.display(),
                    m.atime(),
                    m.mtime()
                )),
                Ok(_) => None,
                Err(e) => Some(format!("{}: {e} (cannot check its atime)", p.display())),
            })
            .collect()
    }

    pub fn sentinel_count(&self) -> usize {
        self.sentinels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
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
