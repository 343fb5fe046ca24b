//! The oracle: at the end of an episode (faults stopped, endpoint Ok, tree, config and clock
//! restored, the backlog drained), what the daemon owed and what it did, from the ledger and
//! the daemon's own output alone.
//!
//! A version was *there* while it was the file's content at its path, its folder mounted,
//! its date folder a real directory inside the daemon's window (by the daemon's clock), and
//! neither its folder nor its extension removed from the config. It is *expected* when
//!
//! - it is the file's last version and is there at the end (everything is restored, so
//!   this is every file still on disk whose date is in the window), or
//! - it was there for `settle_secs` + `CALM_MIN` in one stretch of calm (no disruptive
//!   fault active, none ended within `CALM_LEAD`: a backlog or a backoff from a fault has
//!   cleared), and the daemon demonstrably got past it meanwhile: a version written after
//!   the stretch began arrived `PROGRESS_MARGIN` before it ended.
//!
//! Versions that lived less (rewritten, moved away, excluded, out of the window) need not
//! arrive; if they do, they are checked like the others. The checks:
//!
//! - every expected version arrived (2xx, right bytes) at least once: else **lost**;
//! - every accepted upload carried the Idempotency-Key computed here from (scope, folder,
//!   date, name, size, mtime_ns) as `upload::idempotency_key` does: else **wrong key**; and
//!   so every duplicate of a version carried one key;
//! - no sentinel's content reached the endpoint and no sentinel's atime moved: else an
//!   **outside-tree open**;
//! - no seeded secret in the daemon's stderr, its log file or any command output;
//! - no upload of a version of a removed folder or extension written after the daemon
//!   confirmed the narrowing (plus `RELOAD_GRACE` of time it could run), before the
//!   config was restored;
//! - no "pruned" line: the tree never holds a date older than `keep_days`, so a prune means
//!   a stepped clock fooled the daemon (and it would upload those files again).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::clock::ModelClock;
use super::daemon::{LOOKBACK_DAYS, SECRETS, SETTLE_SECS};
use super::ledger::{Digest, FileRec, How, Inner, Periods};
use super::span::Spans;

/// A calm stretch begins this long after the last disruptive fault ended: past the largest
/// backoff (`max_secs` 10, lengthened by jitter) and a rescan (10 s).
const CALM_LEAD: f64 = 30.0;
/// And lasts at least `settle_secs` + this for a short-lived version to be owed: two
/// rescans (10 s each; a hard-linked file may wait for one) and the upload.
const CALM_MIN: f64 = 25.0;
/// A later version's arrival must precede the stretch's end by this much.
const PROGRESS_MARGIN: f64 = 5.0;
/// After a reload is confirmed, the daemon's threads pick it up within this much time in
/// which the daemon could run (neither stopped nor waiting for a locked database).
const RELOAD_GRACE: f64 = 5.0;

/// A version never uploaded that was owed.
pub struct Lost {
    pub name: String,
    pub path: PathBuf,
    /// "final" or "calm stretch 12.0–40.3 s".
    pub why: String,
    pub story: String,
    /// When its version was written, seconds into the episode.
    pub written: f64,
}

/// One version accepted more than once.
pub struct Duplicate {
    pub name: String,
    pub copies: usize,
    pub keys: usize,
}

#[derive(Default)]
pub struct Verdict {
    pub files: usize,
    pub versions: u64,
    pub by_how: BTreeMap<How, u64>,
    pub expected: u64,
    pub arrived: u64,
    pub accepted: u64,
    pub lost: Vec<Lost>,
    pub duplicates: Vec<Duplicate>,
    pub wrong_keys: Vec<String>,
    pub outside_opens: Vec<String>,
    pub secrets: Vec<String>,
    pub excluded_uploads: Vec<String>,
    pub prunes: Vec<String>,
    pub strangers: Vec<String>,
    pub wrong_content: Vec<(String, u64)>,
    pub refused: BTreeMap<String, u64>,
    pub malformed: Vec<String>,
}

impl Verdict {
    pub fn extra_uploads(&self) -> usize {
        self.duplicates.iter().map(|d| d.copies - 1).sum()
    }

    pub fn multi_key(&self) -> usize {
        self.duplicates.iter().filter(|d| d.keys > 1).count()
    }

    /// Every failed check, one line each (empty: passed).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut add = |what: &str, items: &[String]| {
            if !items.is_empty() {
                out.push(format!("{what}: {}", items.len()));
                for i in items.iter().take(10) {
                    out.push(format!("  {i}"));
                }
            }
        };
        let lost: Vec<String> = self
            .lost
            .iter()
            .map(|l| format!("{} ({}; {})", l.path.display(), l.why, l.story))
            .collect();
        add("LOST", &lost);
        add("WRONG IDEMPOTENCY-KEY", &self.wrong_keys);
        add("OPENED OUTSIDE THE TREE", &self.outside_opens);
        add("SECRET PRINTED", &self.secrets);
        add(
            "UPLOADED WHILE REMOVED FROM THE CONFIG",
            &self.excluded_uploads,
        );
        add("PRUNED BY A STEPPED CLOCK", &self.prunes);
        out
    }
}

/// The Idempotency-Key of a version, as the daemon computes it: hex SHA-256 over the scope,
/// folder label, date and file name, each prefixed by its length (u64 BE), then the size
/// (u64 BE) and the mtime in ns (i64 BE).
pub fn idempotency_key(
    scope: &str,
    folder: &str,
    date: &str,
    name: &[u8],
    size: u64,
    mtime_ns: i64,
) -> Digest {
    let mut h = Sha256::new();
    for part in [scope.as_bytes(), folder.as_bytes(), date.as_bytes(), name] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(size.to_be_bytes());
    h.update(mtime_ns.to_be_bytes());
    h.finalize().into()
}

/// What the oracle reads besides the ledger.
pub struct Inputs<'a> {
    pub clock: &'a ModelClock,
    /// Seconds into the episode when the verdict is drawn.
    pub end: f64,
    pub scope: &'a str,
    /// Everything the daemon printed or logged, and its commands' output, by where.
    pub texts: &'a [(String, String)],
    /// Sentinels whose atime moved.
    pub sentinels_read: Vec<String>,
}

fn periods_of<K: std::hash::Hash + Eq>(m: &HashMap<K, Periods>, k: &K, end: f64) -> Spans {
    m.get(k).map_or_else(Spans::empty, |p| p.spans(end))
}

/// "v1 4096 B direct at 12.3s (arrived 1x), v2 …": what happened to a file.
pub fn story(f: &FileRec) -> String {
    let mut parts: Vec<String> = f
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let n = f
                .arrivals
                .iter()
                .filter(|a| a.ok && a.sha == Some(v.sha))
                .count();
            let tries = f.arrivals.iter().filter(|a| a.sha == Some(v.sha)).count();
            format!(
                "v{} {} B {} at {:.1}s (accepted {n}x of {tries} request(s))",
                i + 1,
                v.size,
                v.how.label(),
                v.registered
            )
        })
        .collect();
    for (a, b) in &f.away.spans(f64::INFINITY).intervals().to_vec() {
        parts.push(format!("away {a:.1}–{b:.1}s"));
    }
    parts.join(", ")
}

pub fn judge(inner: &Inner, inp: &Inputs<'_>) -> Verdict {
    let end = inp.end;
    let w = &inner.world;
    let calm = Spans::one(0.0, end).minus(&w.disruptions.spans(end).extended(CALM_LEAD));
    // (arrival time, when that version was registered), for the progress condition.
    let mut progress: Vec<(f64, f64)> = Vec::new();
    for f in inner.files.values() {
        for a in f.arrivals.iter().filter(|a| a.ok) {
            if let Some(v) = f.versions.iter().find(|v| Some(v.sha) == a.sha) {
                progress.push((a.at, v.registered));
            }
        }
    }
    progress.sort_by(|x, y| x.0.total_cmp(&y.0));
    let got_past = |from: f64, to: f64| {
        let lo = progress.partition_point(|p| p.0 <= from);
        progress[lo..]
            .iter()
            .take_while(|p| p.0 < to - PROGRESS_MARGIN)
            .any(|p| p.1 > from)
    };
    let mut windows: HashMap<i64, Spans> = HashMap::new();
    let mut v = Verdict {
        files: inner.files.len(),
        versions: inner.versions,
        accepted: inner.accepted,
        strangers: inner.strangers.clone(),
        wrong_content: inner.wrong_content.clone(),
        refused: inner.refused.clone(),
        malformed: inner.malformed.clone(),
        outside_opens: inner.sentinel_uploads.clone(),
        ..Verdict::default()
    };
    v.outside_opens.extend(inp.sentinels_read.iter().cloned());
    for (name, f) in &inner.files {
        let window = windows
            .entry(f.day)
            .or_insert_with(|| inp.clock.window_spans(f.day, LOOKBACK_DAYS, end))
            .clone();
        let out = Spans::of(
            [
                periods_of(&w.unmounted, &f.folder, end)
                    .intervals()
                    .to_vec(),
                periods_of(&w.swapped, &(f.folder, f.date.clone()), end)
                    .intervals()
                    .to_vec(),
                periods_of(&w.excluded_folder, &f.folder.to_string(), end)
                    .intervals()
                    .to_vec(),
                periods_of(&w.excluded_ext, &f.ext, end)
                    .intervals()
                    .to_vec(),
                f.away.spans(end).intervals().to_vec(),
            ]
            .concat(),
        );
        let there = window.minus(&out);
        let last = f.versions.len() - 1;
        for (i, ver) in f.versions.iter().enumerate() {
            *v.by_how.entry(ver.how).or_default() += 1;
            let current = f.current(i, end).intersect(&there);
            let why = if i == last && f.deleted.is_none() && current.contains(end - 1e-3) {
                Some("its last version, there at the end".to_string())
            } else {
                current
                    .intersect(&calm)
                    .intervals()
                    .iter()
                    .find(|(a, b)| b - a >= SETTLE_SECS + CALM_MIN && got_past(*a, *b))
                    .map(|(a, b)| format!("there through a calm stretch {a:.1}–{b:.1}s"))
            };
            let arrived = f.arrived_ok(&ver.sha);
            if let Some(why) = why {
                v.expected += 1;
                if arrived {
                    v.arrived += 1;
                } else {
                    v.lost.push(Lost {
                        name: name.clone(),
                        path: f.path.clone(),
                        why,
                        story: story(f),
                        written: ver.registered,
                    });
                }
            }
        }
        check_keys(name, f, inp.scope, &mut v);
    }
    check_exclusions(inner, end, &mut v);
    check_texts(inp.texts, &mut v);
    v.lost.sort_by(|a, b| a.written.total_cmp(&b.written));
    v.duplicates
        .sort_by(|a, b| (b.keys, &a.name).cmp(&(a.keys, &b.name)));
    v
}

/// Every accepted upload's key against the computed one; duplicates and their keys.
fn check_keys(name: &str, f: &FileRec, scope: &str, v: &mut Verdict) {
    let mut by_sha: HashMap<Digest, Vec<Option<Digest>>> = HashMap::new();
    for a in f.arrivals.iter().filter(|a| a.ok) {
        let Some(sha) = a.sha else { continue };
        by_sha.entry(sha).or_default().push(a.key);
        let Some(ver) = f.versions.iter().find(|x| x.sha == sha) else {
            continue;
        };
        let Some(mtime) = ver.mtime_ns else { continue };
        let want = idempotency_key(
            scope,
            f.folder,
            &f.date,
            name.as_bytes(),
            ver.size,
            mtime as i64,
        );
        if a.key != Some(want) {
            v.wrong_keys.push(format!(
                "{}: accepted at {:.1}s with key {} (expected {} for size {} mtime_ns {mtime})",
                f.path.display(),
                a.at,
                a.key.map_or("(none)".into(), |k| hex(&k)),
                hex(&want),
                ver.size
            ));
        }
    }
    for keys in by_sha.values().filter(|k| k.len() > 1) {
        let distinct: HashSet<&Option<Digest>> = keys.iter().collect();
        v.duplicates.push(Duplicate {
            name: name.to_string(),
            copies: keys.len(),
            keys: distinct.len(),
        });
    }
}

/// Uploads of versions of a removed folder or extension, written after the narrowing was
/// confirmed, that arrived before the config was restored.
fn check_exclusions(inner: &Inner, end: f64, v: &mut Verdict) {
    let frozen = inner.world.frozen.spans(end);
    for n in &inner.world.narrowings {
        let Some(confirmed) = n.confirmed else {
            continue;
        };
        let from = after_running(&frozen, confirmed, RELOAD_GRACE);
        let to = n.restored.unwrap_or(f64::INFINITY);
        for f in inner.files.values() {
            let hit = if n.is_folder {
                f.folder == n.removed
            } else {
                f.ext == n.removed
            };
            if !hit {
                continue;
            }
            for a in f.arrivals.iter().filter(|a| a.at > from && a.at < to) {
                let Some(ver) = f.versions.iter().find(|x| Some(x.sha) == a.sha) else {
                    continue;
                };
                if ver.complete.is_some_and(|c| c > from) {
                    v.excluded_uploads.push(format!(
                        "{}: sent at {:.1}s, written at {:.1}s, while {} {} was removed \
                         (confirmed at {confirmed:.1}s, restored at {to:.1}s)",
                        f.path.display(),
                        a.at,
                        ver.registered,
                        if n.is_folder { "folder" } else { "extension" },
                        n.removed
                    ));
                }
            }
        }
    }
}

/// The moment the daemon has had `secs` of time to run after `from`: frozen periods do
/// not count.
fn after_running(frozen: &Spans, from: f64, secs: f64) -> f64 {
    let mut t = from;
    let mut left = secs;
    for &(a, b) in frozen.intervals() {
        if b <= t {
            continue;
        }
        if a > t {
            if a - t >= left {
                return t + left;
            }
            left -= a - t;
        }
        t = b;
    }
    t + left
}

/// Seeded secrets and prune lines in what the daemon printed.
pub fn check_texts(texts: &[(String, String)], v: &mut Verdict) {
    for (place, text) in texts {
        for line in text.lines() {
            for secret in SECRETS {
                if line.contains(secret) {
                    v.secrets
                        .push(format!("{secret} in {place}: {}", clip(line, 300)));
                }
            }
            if line.contains("pruned ") && line.contains("row(s)") {
                v.prunes.push(format!("{place}: {}", clip(line, 300)));
            }
        }
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_time_does_not_count() {
        let frozen = Spans::of(vec![(12.0, 20.0), (22.0, 23.0)]);
        assert_eq!(after_running(&frozen, 10.0, 1.0), 11.0);
        assert_eq!(after_running(&frozen, 10.0, 5.0), 24.0);
        assert_eq!(after_running(&frozen, 13.0, 1.0), 21.0);
        assert_eq!(after_running(&Spans::empty(), 3.0, 5.0), 8.0);
    }

    #[test]
    fn the_key_matches_the_daemons_layout() {
        // The same bytes the daemon hashes, assembled by hand.
        let mut h = Sha256::new();
        for p in [&b"s"[..], b"Sega_1", b"2026-11-26", b"a.jpg"] {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p);
        }
        h.update(10u64.to_be_bytes());
        h.update(5i64.to_be_bytes());
        let want: Digest = h.finalize().into();
        assert_eq!(
            idempotency_key("s", "Sega_1", "2026-11-26", b"a.jpg", 10, 5),
            want
        );
        assert_ne!(
            idempotency_key("s", "Sega_1", "2026-11-26", b"a.jpg", 10, 6),
            want
        );
    }
}
