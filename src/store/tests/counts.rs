//! The counts against the rows themselves, after every kind of change the ledger makes.
//! `counts`, the summary's counts and `queue_overview` come from counters the ledger keeps
//! (triggers in the transaction of each change; on PostgreSQL, changes folded into totals
//! once a heartbeat), not from a scan of the rows: every path that writes a row must keep
//! them exact, folded or not.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[cfg(feature = "postgres")]
use super::postgres;
use super::{completion, exported, fresh_like, obs, sqlite, FAR, LATER, T0, T1, T2};
use crate::layout::Version;
use crate::store::{ClaimOrder, Disposition, Ledger, ListFilter, Observation, Status};
use crate::timestamp::Timestamp;

both!(
    counts_stay_exact_through_every_change,
    counts_follow_imports,
);

/// Counts per (folder, status word), sorted: what the ledger says, or what the rows say.
type Counts = Vec<(String, String, i64)>;

fn words(v: Vec<(String, Status, i64)>) -> Counts {
    let mut v: Counts = v
        .into_iter()
        .map(|(f, st, n)| (f, st.as_str().to_owned(), n))
        .collect();
    v.sort();
    v
}

/// What the rows say: counts per (folder, status), and the oldest waiting row's detection.
fn truth(s: &mut dyn Ledger) -> (Counts, Option<Timestamp>) {
    let mut m: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut oldest: Option<Timestamp> = None;
    for r in s.list(&ListFilter::default()).unwrap() {
        if matches!(r.status, Status::Pending | Status::Uploading) {
            if let Some(t) = r.detected_at {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        *m.entry((r.folder, r.status.as_str().to_owned()))
            .or_default() += 1;
    }
    let counts = m.into_iter().map(|((f, st), n)| (f, st, n)).collect();
    (counts, oldest)
}

/// Every count the ledger gives agrees with its rows, before and after a fold.
pub(crate) fn assert_exact(s: &mut dyn Ledger, step: &str) {
    for folded in [false, true] {
        if folded {
            s.fold_counts().unwrap();
        }
        let (want, oldest) = truth(s);
        let at = format!("after {step} (folded: {folded})");
        assert_eq!(words(s.counts().unwrap()), want, "counts {at}");
        assert_eq!(
            words(s.summary(T0, T0, T0).unwrap().counts),
            want,
            "summary {at}"
        );
        let waiting: i64 = want
            .iter()
            .filter(|(_, st, _)| st == "pending" || st == "uploading")
            .map(|(_, _, n)| n)
            .sum();
        assert_eq!(
            s.queue_overview().unwrap(),
            (waiting, oldest),
            "queue overview {at}"
        );
    }
}

/// `name` in date folder `date` of `folder`, with this host's path.
fn obs_at(folder: &str, date: &str, name: &str, mtime_ns: i64) -> Observation {
    let mut o = obs(name.as_bytes(), 10, mtime_ns);
    o.folder = folder.into();
    o.date = date.into();
    o.path = PathBuf::from(format!("/data/{folder}/{date}/{name}"));
    o
}

fn path_of(name: &str) -> PathBuf {
    PathBuf::from(format!("/data/Sega_1/2026-11-26/{name}"))
}

pub(crate) fn counts_stay_exact_through_every_change(mut s: Box<dyn Ledger>) {
    let s = &mut *s;
    assert_exact(s, "nothing");
    let mut batch: Vec<Observation> = (0..8)
        .map(|i| obs(format!("{i}.jpg").as_bytes(), 10, i))
        .collect();
    // Another folder (on PostgreSQL not this host's: never claimed by it), and an old date
    // folder, last in upload order.
    batch.push(obs_at("Sega_2", "2026-11-26", "x.jpg", 1));
    batch.push(obs_at("Sega_2", "2026-11-25", "y.jpg", 2));
    batch.push(obs_at("Sega_1", "2026-01-01", "old.jpg", 100));
    s.record(&batch, T0).unwrap();
    assert_exact(s, "recording");
    s.record(&batch, T0).unwrap();
    assert_exact(s, "recording the same again");

    let c = s.claim_due(T0, FAR, 20, ClaimOrder::OldestFile).unwrap();
    assert!(c.len() >= 9, "{}", c.len());
    assert_exact(s, "a claim");
    let kinds = [
        Disposition::Uploaded,
        Disposition::Retry {
            at: T2,
            counted: true,
        },
        Disposition::Failed,
        Disposition::Skipped { absent: true },
        Disposition::NotReady {
            at: T2,
            incomplete_since: Some(T1),
        },
        Disposition::Changed {
            version: Version {
                size: 99,
                mtime_ns: 77,
            },
            at: T2,
        },
    ];
    // Every claimed row but the last (old.jpg) comes to an end of some kind.
    let (kept, ended) = c.split_last().unwrap();
    assert_eq!(kept.filename, "old.jpg");
    let done: Vec<_> = ended
        .iter()
        .zip(kinds.iter().cycle())
        .map(|(c, d)| completion(c, d.clone()))
        .collect();
    s.complete(&done, T1).unwrap();
    assert_exact(s, "completions of every kind");
    // A completion whose claim is over changes nothing.
    s.complete(&[completion(&c[0], Disposition::Failed)], T1)
        .unwrap();
    assert_exact(s, "a stale completion");
    s.unclaim(&[kept.id], T1).unwrap();
    assert_exact(s, "unclaim");

    // A daemon killed holding claims: the next start resets them.
    let held = s.claim_due(T2, FAR, 3, ClaimOrder::NewestFile).unwrap();
    assert!(!held.is_empty());
    assert_exact(s, "claims held at a crash");
    assert_eq!(
        s.reset_uploading(None, T2, "interrupted").unwrap(),
        held.len()
    );
    assert_exact(s, "claims reset after the crash");

    s.release_backoff(T2).unwrap();
    assert_exact(s, "an outage's end");
    assert!(s.retry_failed(T2).unwrap() > 0);
    assert_exact(s, "retry --failed");
    assert_eq!(
        s.retry_path(&path_of("0.jpg"), true, T2).unwrap(),
        Some(Status::Uploaded)
    );
    assert!(s.retry_path(&path_of("3.jpg"), true, T2).unwrap().is_some());
    assert_exact(s, "retry of one path");
    let st = s.record(&[obs(b"5.jpg", 11, 500)], T2).unwrap();
    assert_eq!(st.new_versions, 1);
    assert_exact(s, "a new version");
    s.recheck(&path_of("1.jpg"), T2).unwrap();
    assert_exact(s, "a permission change");

    // Everything this host may claim is uploaded, then the old date folder pruned.
    loop {
        let c = s.claim_due(LATER, FAR, 4, ClaimOrder::OldestFile).unwrap();
        if c.is_empty() {
            break;
        }
        let done: Vec<_> = c
            .iter()
            .map(|c| completion(c, Disposition::Uploaded))
            .collect();
        s.complete(&done, LATER).unwrap();
        assert_exact(s, "uploads");
    }
    assert_eq!(s.prune("2026-06-01").unwrap(), 1);
    assert_exact(s, "prune");
    assert!(s.prune("2027-06-01").unwrap() >= 8);
    assert_exact(s, "a prune of everything finished");
}

/// `migrate-db` writes rows of every status: the counts of the ledger it fills follow.
fn counts_follow_imports(mut s: Box<dyn Ledger>) {
    let batch: Vec<Observation> = (0..5)
        .map(|i| obs(format!("{i}.jpg").as_bytes(), 10, i))
        .collect();
    s.record(&batch, T0).unwrap();
    let c = s.claim_due(T0, FAR, 3, ClaimOrder::OldestFile).unwrap();
    s.complete(
        &[
            completion(&c[0], Disposition::Uploaded),
            completion(&c[1], Disposition::Failed),
        ],
        T1,
    )
    .unwrap();
    let rows = exported(&mut *s);
    let mut t = fresh_like(&*s);
    assert_eq!(t.import(&rows).unwrap(), 5);
    assert_exact(&mut *t, "an import");
    assert_eq!(t.import(&rows).unwrap(), 0);
    assert_exact(&mut *t, "an import that adds nothing");
    // The same rows under other names, into the ledger they came from.
    let renamed: Vec<_> = rows
        .into_iter()
        .map(|mut e| {
            let name = format!("copy-{}", e.file.filename.to_string_lossy());
            e.file.path = path_of(&name);
            e.file.filename = name.into();
            e
        })
        .collect();
    assert_eq!(s.import(&renamed).unwrap(), 5);
    assert_exact(&mut *s, "an import beside rows being uploaded");
}
