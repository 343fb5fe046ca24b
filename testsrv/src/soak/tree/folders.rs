//! Whole folders out of the tree: a folder "unmounted" (its directory away, an empty one in
//! its place) and remounted, a date folder swapped for a symlink to sentinel files outside
//! the tree and back, and the check that no sentinel was read.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Swapped, Tree, FOLDERS, SENTINEL_ATIME};
use crate::images;
use crate::rng::Rng;
use crate::soak::clock::date_name;
use crate::soak::ledger::sha256;

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

impl Tree {
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
}
