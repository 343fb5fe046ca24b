//! A file's changes: moved out of the tree and back (maybe rewritten meanwhile), rewritten
//! in place or by rename, written aside while its folder is away, and hard-linked in.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::{image, mtime_ns, pick_size, State, Tree};
use crate::rng::Rng;
use crate::soak::ledger::{sha256, How};

impl Tree {
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
    pub(super) fn rewrite_moved(
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
}
