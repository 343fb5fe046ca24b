//! The ledger: what the model did and what the endpoint saw, recorded as it happens, for the
//! oracle to judge at the end of an episode.
//!
//! Files: every version written (its SHA-256, size, mtime once complete, when it became
//! current and when the next one replaced it), when the file was away from its path
//! (vanished), and every upload the endpoint settled for it. The world: when each folder was
//! unmounted, each date folder swapped for a symlink, each folder or extension removed from
//! the config, and when any disruptive fault was active. Sentinels: the content of every file
//! planted outside the tree, so that an upload of one is caught.
//!
//! Writers `register` a version before it becomes visible, so an upload can never arrive for
//! a version the ledger does not know. The `collector` thread feeds it every request the
//! endpoint settles (`Server::subscribe`) and ends when the server stops.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Instant, SystemTime};

use sha2::Digest as _;

use super::span::Spans;
use crate::Request;

/// A SHA-256 (content) or an Idempotency-Key, as bytes: half the memory of hex text.
pub type Digest = [u8; 32];

pub fn sha256(bytes: &[u8]) -> Digest {
    sha2::Sha256::digest(bytes).into()
}

/// 64 hex digits as bytes; anything else (a missing or malformed key) is hashed, so that
/// different texts stay different.
pub fn digest_of(text: &str) -> Digest {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = text.as_bytes();
    let mut out = [0u8; 32];
    if b.len() == 64 {
        let mut ok = true;
        for (i, o) in out.iter_mut().enumerate() {
            match (hex(b[2 * i]), hex(b[2 * i + 1])) {
                (Some(h), Some(l)) => *o = h << 4 | l,
                _ => ok = false,
            }
        }
        if ok {
            return out;
        }
    }
    sha256(text.as_bytes())
}

/// How a version came to be: for the summary's breakdown and for a lost file's story.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum How {
    /// One write, then close (IN_CLOSE_WRITE).
    Direct,
    /// Several writes with pauses between them.
    Slow,
    /// Written elsewhere, renamed into the date folder (IN_MOVED_TO).
    Renamed,
    /// Written while the daemon was stopped (SIGSTOP).
    Burst,
    /// Written elsewhere and hard-linked in (IN_CREATE only).
    Linked,
    /// A new version: rewritten in place.
    RewriteInPlace,
    /// A new version: renamed over the old one.
    RewriteRenamed,
    /// A new version written while the file was out of the tree.
    RewriteAway,
}

impl How {
    pub fn label(self) -> &'static str {
        match self {
            How::Direct => "direct",
            How::Slow => "slow (several writes)",
            How::Renamed => "renamed in",
            How::Burst => "burst while stopped",
            How::Linked => "hard-linked in",
            How::RewriteInPlace => "rewritten in place",
            How::RewriteRenamed => "rewritten by rename",
            How::RewriteAway => "rewritten while away",
        }
    }
}

/// One written version. Times are seconds since the episode started.
pub struct Version {
    pub sha: Digest,
    pub size: u64,
    pub how: How,
    pub registered: f64,
    /// Written and closed (or linked) at its path; `None` while still being written.
    pub complete: Option<f64>,
    /// Its mtime once complete: part of its Idempotency-Key.
    pub mtime_ns: Option<i128>,
}

/// One request the endpoint settled for a file.
pub struct Arrival {
    /// The content's SHA-256, when the file part was complete.
    pub sha: Option<Digest>,
    pub key: Option<Digest>,
    /// When its head arrived.
    pub at: f64,
    /// A 2xx with a complete, well-formed file part.
    pub ok: bool,
}

/// Times a condition held: closed intervals and at most one still open.
#[derive(Default, Clone)]
pub struct Periods(Vec<(f64, Option<f64>)>);

impl Periods {
    pub fn begin(&mut self, t: f64) {
        if !self.is_open() {
            self.0.push((t, None));
        }
    }

    pub fn end(&mut self, t: f64) {
        if let Some(last) = self.0.last_mut().filter(|p| p.1.is_none()) {
            last.1 = Some(t);
        }
    }

    pub fn is_open(&self) -> bool {
        self.0.last().is_some_and(|p| p.1.is_none())
    }

    /// As spans, an open period running to `end`.
    pub fn spans(&self, end: f64) -> Spans {
        Spans::of(self.0.iter().map(|&(a, b)| (a, b.unwrap_or(end))).collect())
    }
}

pub struct FileRec {
    pub folder: &'static str,
    pub date: String,
    pub day: i64,
    /// The extension, lower-case.
    pub ext: String,
    pub path: PathBuf,
    pub versions: Vec<Version>,
    /// Moved out of the tree (vanish).
    pub away: Periods,
    /// Deleted by the space-keeper after its last version arrived.
    pub deleted: Option<f64>,
    pub arrivals: Vec<Arrival>,
}

impl FileRec {
    /// When version `i` was the file's content: from complete until the next registered.
    pub fn current(&self, i: usize, end: f64) -> Spans {
        let Some(from) = self.versions[i].complete else {
            return Spans::empty();
        };
        let to = self.versions.get(i + 1).map_or(end, |n| n.registered);
        let to = self.deleted.map_or(to, |d| to.min(d));
        Spans::one(from, to)
    }

    pub fn arrived_ok(&self, sha: &Digest) -> bool {
        self.arrivals
            .iter()
            .any(|a| a.ok && a.sha.as_ref() == Some(sha))
    }

    fn last_arrived(&self) -> bool {
        self.versions
            .last()
            .is_some_and(|v| self.arrived_ok(&v.sha))
    }
}

/// A config narrowing: what it removed, and the moments that bound its check.
#[derive(Clone)]
pub struct Narrowing {
    /// A folder label or an extension.
    pub removed: String,
    pub is_folder: bool,
    /// The daemon said it reloaded (or started) with the narrowed config.
    pub confirmed: Option<f64>,
    /// The full config was written back.
    pub restored: Option<f64>,
}

/// The world around the files.
#[derive(Default)]
pub struct World {
    pub unmounted: HashMap<&'static str, Periods>,
    pub swapped: HashMap<(&'static str, String), Periods>,
    /// Removed from the config: from the narrowed config's write until the restored one
    /// is confirmed.
    pub excluded_folder: HashMap<String, Periods>,
    pub excluded_ext: HashMap<String, Periods>,
    pub narrowings: Vec<Narrowing>,
    /// Faults that disturb every upload (endpoint, process, clock, reload, mount, WAL…):
    /// the oracle's "calm" is their absence.
    pub disruptions: Periods,
    /// Disruptions overlap: a count of those open.
    open_disruptions: usize,
    /// The daemon stopped (SIGSTOP) or its database locked: it could not act on anything.
    pub frozen: Periods,
    /// When a WAL was deleted.
    pub wal_deleted: Vec<f64>,
}

#[derive(Default)]
pub struct Inner {
    pub files: HashMap<String, FileRec>,
    pub versions: u64,
    /// Files whose last version has arrived.
    uploaded: u64,
    pub accepted: u64,
    /// Accepted uploads of names the model never wrote.
    pub strangers: Vec<String>,
    /// Accepted uploads whose content matches no version written under that name.
    pub wrong_content: Vec<(String, u64)>,
    /// Requests that were not accepted, by status ("none" for hang/reset).
    pub refused: BTreeMap<String, u64>,
    /// Requests the endpoint found malformed (its strict parser's complaints).
    pub malformed: Vec<String>,
    /// Sentinel content (planted outside the tree) → its name and path.
    pub sentinels: HashMap<Digest, (String, PathBuf)>,
    /// Uploads that carried a sentinel's content: something outside the tree was read.
    pub sentinel_uploads: Vec<String>,
    pub world: World,
}

pub struct Ledger {
    inner: Mutex<Inner>,
    started: Instant,
    /// The real clock at `started`, for the endpoint's SystemTime stamps.
    started_wall: SystemTime,
}

impl Ledger {
    pub fn new(started: Instant) -> Ledger {
        Ledger {
            inner: Mutex::new(Inner::default()),
            started,
            started_wall: SystemTime::now() - started.elapsed(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds since the episode started.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Records a version about to be written (before it is visible to the daemon).
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &self,
        name: &str,
        folder: &'static str,
        date: &str,
        path: PathBuf,
        sha: Digest,
        size: u64,
        how: How,
    ) {
        let registered = self.now();
        let mut g = self.lock();
        g.versions += 1;
        let v = Version {
            sha,
            size,
            how,
            registered,
            complete: None,
            mtime_ns: None,
        };
        let mut newly_pending = false;
        match g.files.get_mut(name) {
            Some(f) => {
                newly_pending = f.last_arrived();
                f.versions.push(v);
            }
            None => {
                let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
                let rec = FileRec {
                    folder,
                    date: date.to_owned(),
                    day: super::clock::day_of(date).unwrap_or(0),
                    ext,
                    path,
                    versions: vec![v],
                    away: Periods::default(),
                    deleted: None,
                    arrivals: Vec::new(),
                };
                g.files.insert(name.to_owned(), rec);
            }
        }
        if newly_pending {
            g.uploaded -= 1;
        }
    }

    /// The last version of `name` is written and closed, with this mtime.
    pub fn complete(&self, name: &str, mtime_ns: i128) {
        let t = self.now();
        if let Some(v) = self
            .lock()
            .files
            .get_mut(name)
            .and_then(|f| f.versions.last_mut())
        {
            v.complete = Some(t);
            v.mtime_ns = Some(mtime_ns);
        }
    }

    pub fn away(&self, name: &str, gone: bool) {
        let t = self.now();
        if let Some(f) = self.lock().files.get_mut(name) {
            if gone {
                f.away.begin(t);
            } else {
                f.away.end(t);
            }
        }
    }

    /// A sentinel planted outside the tree.
    pub fn sentinel(&self, sha: Digest, name: &str, path: PathBuf) {
        self.lock().sentinels.insert(sha, (name.to_owned(), path));
    }

    /// (files written, versions written, files whose last version arrived).
    pub fn counts(&self) -> (usize, u64, u64) {
        let g = self.lock();
        (g.files.len(), g.versions, g.uploaded)
    }

    /// Files whose last version arrived at least `age` seconds ago, are at their path and
    /// complete: the space-keeper may delete them. Marks them deleted.
    pub fn take_prunable(&self, age: f64) -> Vec<PathBuf> {
        let now = self.now();
        let mut g = self.lock();
        let mut out = Vec::new();
        for f in g.files.values_mut() {
            if f.deleted.is_some() || f.away.is_open() {
                continue;
            }
            let Some(last) = f.versions.last() else {
                continue;
            };
            let arrived = f
                .arrivals
                .iter()
                .any(|a| a.ok && a.sha == Some(last.sha) && a.at + age <= now);
            if arrived && last.complete.is_some() {
                f.deleted = Some(now);
                out.push(f.path.clone());
            }
        }
        out
    }

    /// Files at their path whose last version has not arrived, among those whose date is
    /// within `days`: what the end of an episode waits for.
    pub fn missing(&self, days: std::ops::RangeInclusive<i64>) -> Vec<String> {
        let g = self.lock();
        g.files
            .iter()
            .filter(|(_, f)| f.deleted.is_none() && !f.away.is_open() && days.contains(&f.day))
            .filter(|(_, f)| f.versions.last().is_some_and(|v| v.complete.is_some()))
            .filter(|(_, f)| !f.last_arrived())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A disruptive fault began (`true`) or ended.
    pub fn disruption(&self, on: bool) {
        let t = self.now();
        let mut g = self.lock();
        let w = &mut g.world;
        if on {
            w.open_disruptions += 1;
            w.disruptions.begin(t);
        } else {
            w.open_disruptions = w.open_disruptions.saturating_sub(1);
            if w.open_disruptions == 0 {
                w.disruptions.end(t);
            }
        }
    }

    pub fn world(&self, f: impl FnOnce(&mut World, f64)) {
        let t = self.now();
        f(&mut self.lock().world, t);
    }

    fn accept(&self, r: &Request) {
        let at = r
            .received_at
            .duration_since(self.started_wall)
            .map_or(0.0, |d| d.as_secs_f64());
        let ok_status = r.status.is_some_and(|s| (200..300).contains(&s));
        let mut g = self.lock();
        if r.method != "POST" {
            return;
        }
        let Some(file) = r.file.as_ref() else {
            if let Some(e) = &r.error {
                if g.malformed.len() < 20 {
                    g.malformed.push(format!("seq {}: {e}", r.seq));
                }
            }
            let status = r.status.map_or("none".to_owned(), |s| s.to_string());
            *g.refused.entry(status).or_default() += 1;
            return;
        };
        let name = String::from_utf8_lossy(&file.filename).into_owned();
        let sha = digest_of(&file.sha256);
        if let Some((sname, path)) = g.sentinels.get(&sha).cloned() {
            let msg = format!(
                "{name}: the content of {} ({sname}, outside the tree) was uploaded (HTTP {:?})",
                path.display(),
                r.status
            );
            g.sentinel_uploads.push(msg);
        }
        let ok = ok_status && r.error.is_none();
        if ok {
            g.accepted += 1;
        } else {
            let status = r.status.map_or("none".to_owned(), |s| s.to_string());
            *g.refused.entry(status).or_default() += 1;
        }
        let key = r.header("Idempotency-Key").map(digest_of);
        let Some(f) = g.files.get_mut(&name) else {
            if ok && g.strangers.len() < 20 {
                g.strangers.push(name);
            }
            return;
        };
        if ok && !f.versions.iter().any(|v| v.sha == sha) {
            let size = file.size;
            g.wrong_content.push((name, size));
            return;
        }
        let was = f.last_arrived();
        f.arrivals.push(Arrival {
            sha: Some(sha),
            key,
            at,
            ok,
        });
        if !was && f.last_arrived() {
            g.uploaded += 1;
        }
    }
}

/// Feeds every settled request into the ledger until the server stops.
pub fn collector(ledger: Arc<Ledger>, rx: Receiver<Request>) -> JoinHandle<()> {
    thread::Builder::new()
        .name("collector".into())
        .spawn(move || {
            for r in rx {
                ledger.accept(&r);
            }
        })
        .expect("spawning the collector thread")
}
