//! The ledger: every file version the soak wrote and every upload the endpoint accepted,
//! and the verdict drawn from the two (lost, duplicated, keys).
//!
//! Writers `register` a version (its SHA-256) before the file becomes visible, so an upload
//! can never arrive for a version the ledger does not know. The `collector` thread feeds it
//! every request the endpoint settles (`Server::subscribe`) and ends when the server stops.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sega_testsrv::Request;

/// A SHA-256 (content) or an Idempotency-Key, as bytes: half the memory of hex text, and
/// an hour's run records a few hundred thousand of each.
pub type Digest = [u8; 32];

/// 64 hex digits as bytes; anything else (a missing or malformed key) is hashed, so that
/// different texts stay different.
fn digest_of(text: &str) -> Digest {
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
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// How a file came to be: for the summary's breakdown and for a lost file's story.
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
    /// A new version: rewritten in place.
    RewriteInPlace,
    /// A new version: renamed over the old one.
    RewriteRenamed,
}

impl How {
    pub fn label(self) -> &'static str {
        match self {
            How::Direct => "direct",
            How::Slow => "slow (several writes)",
            How::Renamed => "renamed in",
            How::Burst => "burst while stopped",
            How::RewriteInPlace => "rewritten in place",
            How::RewriteRenamed => "rewritten by rename",
        }
    }
}

/// One written version.
pub struct Version {
    pub sha: Digest,
    pub size: u64,
    pub how: How,
    /// Since the start of the run.
    pub at: Duration,
}

/// One accepted upload (2xx with a complete file part).
struct Arrival {
    sha: Digest,
    key: Digest,
    at: Instant,
}

pub struct FileRec {
    pub path: PathBuf,
    pub versions: Vec<Version>,
    arrivals: Vec<Arrival>,
    /// A rewrite is scheduled: the file must stay on disk.
    pub rewrite_pending: bool,
    /// Deleted by the pruner after its last version arrived.
    pub deleted: bool,
}

impl FileRec {
    fn final_arrival(&self) -> Option<&Arrival> {
        let last = &self.versions.last()?.sha;
        self.arrivals.iter().find(|a| &a.sha == last)
    }
}

#[derive(Default)]
struct Inner {
    files: HashMap<String, FileRec>,
    versions: u64,
    /// Files whose last version has arrived.
    uploaded: u64,
    accepted: u64,
    /// Accepted uploads of names the soak never wrote.
    strangers: u64,
    /// Accepted uploads whose content matches no version written under that name.
    wrong_content: Vec<(String, u64)>,
    /// Requests that were not accepted, by status ("none" for hang/reset).
    refused: BTreeMap<String, u64>,
    /// Requests the endpoint found malformed (its strict parser's complaints).
    malformed: Vec<String>,
}

pub struct Ledger {
    inner: Mutex<Inner>,
    started: Instant,
}

/// A duplicate: one version of one file accepted more than once.
pub struct Duplicate {
    pub name: String,
    pub copies: usize,
    pub keys: usize,
}

/// A written file whose last version never arrived.
pub struct Lost {
    pub name: String,
    pub path: PathBuf,
    pub story: String,
    /// When its last version was written, since the start of the run.
    pub last_written: Duration,
}

pub struct Verdict {
    pub files: usize,
    pub versions: u64,
    pub by_how: BTreeMap<How, u64>,
    pub arrived: usize,
    pub accepted: u64,
    pub lost: Vec<Lost>,
    pub duplicates: Vec<Duplicate>,
    pub strangers: u64,
    pub wrong_content: Vec<(String, u64)>,
    pub refused: BTreeMap<String, u64>,
    pub malformed: Vec<String>,
}

impl Ledger {
    pub fn new(started: Instant) -> Ledger {
        Ledger {
            inner: Mutex::new(Inner::default()),
            started,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a version about to be written (before it is visible to the daemon).
    pub fn register(&self, name: &str, path: PathBuf, sha: Digest, size: u64, how: How) {
        let at = self.started.elapsed();
        let mut g = self.lock();
        g.versions += 1;
        let v = Version { sha, size, how, at };
        let mut newly_pending = false;
        match g.files.get_mut(name) {
            Some(f) => {
                newly_pending = f.final_arrival().is_some();
                f.versions.push(v);
            }
            None => {
                let rec = FileRec {
                    path,
                    versions: vec![v],
                    arrivals: Vec::new(),
                    rewrite_pending: false,
                    deleted: false,
                };
                g.files.insert(name.to_owned(), rec);
            }
        }
        if newly_pending {
            g.uploaded -= 1;
        }
    }

    pub fn set_rewrite_pending(&self, name: &str, pending: bool) {
        if let Some(f) = self.lock().files.get_mut(name) {
            f.rewrite_pending = pending;
        }
    }

    /// (files written, versions written, files whose last version arrived).
    pub fn counts(&self) -> (usize, u64, u64) {
        let g = self.lock();
        (g.files.len(), g.versions, g.uploaded)
    }

    /// Files whose last version arrived at least `age` ago, have no rewrite coming and are
    /// still on disk: the pruner may delete them. Marks them deleted.
    pub fn take_prunable(&self, age: Duration) -> Vec<PathBuf> {
        let mut g = self.lock();
        let mut out = Vec::new();
        for f in g.files.values_mut() {
            if f.deleted || f.rewrite_pending {
                continue;
            }
            if f.final_arrival().is_some_and(|a| a.at.elapsed() >= age) {
                f.deleted = true;
                out.push(f.path.clone());
            }
        }
        out
    }

    fn accept(&self, r: &Request) {
        let mut g = self.lock();
        let Some(file) = r.file.as_ref().filter(|_| r.error.is_none()) else {
            if r.method == "POST" {
                if let Some(e) = &r.error {
                    if g.malformed.len() < 20 {
                        g.malformed.push(format!("seq {}: {e}", r.seq));
                    }
                }
                let status = r.status.map_or("none".to_owned(), |s| s.to_string());
                *g.refused.entry(status).or_default() += 1;
            }
            return;
        };
        if !r.status.is_some_and(|s| (200..300).contains(&s)) {
            let status = r.status.map_or("none".to_owned(), |s| s.to_string());
            *g.refused.entry(status).or_default() += 1;
            return;
        }
        g.accepted += 1;
        let name = String::from_utf8_lossy(&file.filename).into_owned();
        let key = digest_of(r.header("Idempotency-Key").unwrap_or(""));
        let sha = digest_of(&file.sha256);
        let Some(f) = g.files.get_mut(&name) else {
            g.strangers += 1;
            return;
        };
        if !f.versions.iter().any(|v| v.sha == sha) {
            let size = file.size;
            g.wrong_content.push((name, size));
            return;
        }
        let was = f.final_arrival().is_some();
        f.arrivals.push(Arrival {
            sha,
            key,
            at: Instant::now(),
        });
        if !was && f.final_arrival().is_some() {
            g.uploaded += 1;
        }
    }

    /// The verdict, once the run is over.
    pub fn verdict(&self) -> Verdict {
        let g = self.lock();
        let mut by_how = BTreeMap::new();
        let mut lost = Vec::new();
        let mut duplicates = Vec::new();
        let mut arrived = 0;
        for (name, f) in &g.files {
            for v in &f.versions {
                *by_how.entry(v.how).or_default() += 1;
            }
            if !f.arrivals.is_empty() {
                arrived += 1;
            }
            if f.final_arrival().is_none() {
                lost.push(Lost {
                    name: name.clone(),
                    path: f.path.clone(),
                    story: story(f),
                    last_written: f.versions.last().map_or(Duration::ZERO, |v| v.at),
                });
            }
            let mut by_sha: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
            for a in &f.arrivals {
                by_sha.entry(&a.sha).or_default().push(&a.key);
            }
            for keys in by_sha.values().filter(|k| k.len() > 1) {
                let mut distinct = keys.clone();
                distinct.sort_unstable();
                distinct.dedup();
                duplicates.push(Duplicate {
                    name: name.clone(),
                    copies: keys.len(),
                    keys: distinct.len(),
                });
            }
        }
        lost.sort_by(|a, b| a.name.cmp(&b.name));
        duplicates.sort_by(|a, b| (b.keys, &a.name).cmp(&(a.keys, &b.name)));
        Verdict {
            files: g.files.len(),
            versions: g.versions,
            by_how,
            arrived,
            accepted: g.accepted,
            lost,
            duplicates,
            strangers: g.strangers,
            wrong_content: g.wrong_content.clone(),
            refused: g.refused.clone(),
            malformed: g.malformed.clone(),
        }
    }
}

/// "v1 4096 B direct at 12.3s (arrived 1×), v2 …": what happened to a lost file.
fn story(f: &FileRec) -> String {
    let parts: Vec<String> = f
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let n = f.arrivals.iter().filter(|a| a.sha == v.sha).count();
            format!(
                "v{} {} B {} at {:.1}s (arrived {n}x)",
                i + 1,
                v.size,
                v.how.label(),
                v.at.as_secs_f64()
            )
        })
        .collect();
    parts.join(", ")
}

/// Feeds every settled request into the ledger until the server stops.
pub fn collector(ledger: std::sync::Arc<Ledger>, rx: Receiver<Request>) -> JoinHandle<()> {
    thread::Builder::new()
        .name("collector".into())
        .spawn(move || {
            for r in rx {
                ledger.accept(&r);
            }
        })
        .expect("spawning the collector thread")
}
