//! The ledger's behaviour, written once against `dyn Ledger` and run on every backend:
//! `both!(name)` makes `name::sqlite` and (with the `postgres` feature) `name::postgres`.
//! Backend-specific tests live with their backend (`sqlite/`, `postgres/`).
//!
//! The PostgreSQL instances run on a throwaway cluster (`sega_testsrv::pg`), a fresh database
//! each; without PostgreSQL installed they pass vacuously with a note (never in CI).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use time::macros::datetime;

use super::{
    Attempted, ClaimOrder, Claimed, Completion, Disposition, Exported, Ledger, ListFilter,
    Observation, ResultRow, Status, Store, RESULTS_KEPT_PER_FILE,
};
use crate::layout::Version;
use crate::timestamp::Timestamp;

pub(super) const T0: Timestamp = Timestamp::new(datetime!(2026-11-26 10:00:00.000 UTC));
pub(super) const T1: Timestamp = Timestamp::new(datetime!(2026-11-26 10:00:01.000 UTC));
pub(super) const T2: Timestamp = Timestamp::new(datetime!(2026-11-26 10:00:02.000 UTC));
pub(super) const LATER: Timestamp = Timestamp::new(datetime!(2027-01-01 00:00:00.000 UTC));
/// A `far` for `claim_due` beyond every due time of these tests (none counts as set before
/// a clock step).
pub(super) const FAR: Timestamp = Timestamp::new(datetime!(9999-12-31 23:59:59.999 UTC));

pub(super) fn temp_db() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sega-ledger-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("t.db")
}

pub(super) fn sqlite() -> Box<dyn Ledger> {
    Box::new(Store::open(&temp_db()).unwrap())
}

/// This test host's folder roots: the paths `obs` makes are its local paths.
#[cfg(feature = "postgres")]
pub(super) fn roots() -> HashMap<String, PathBuf> {
    HashMap::from([("Sega_1".to_owned(), PathBuf::from("/data/Sega_1"))])
}

#[cfg(feature = "postgres")]
pub(super) fn pg_open(
    url: &str,
    scope: &str,
    host: &str,
    roots: HashMap<String, PathBuf>,
) -> super::postgres::PgStore {
    pg_try_open(url, scope, host, roots, std::time::Duration::from_secs(60)).unwrap()
}

#[cfg(feature = "postgres")]
pub(super) fn pg_try_open(
    url: &str,
    scope: &str,
    host: &str,
    roots: HashMap<String, PathBuf>,
    lease: std::time::Duration,
) -> crate::error::Result<super::postgres::PgStore> {
    super::postgres::PgStore::open(
        url,
        super::Identity {
            scope: scope.into(),
            host: host.into(),
        },
        roots,
        lease,
    )
}

#[cfg(feature = "postgres")]
fn postgres() -> Option<Box<dyn Ledger>> {
    let url = sega_testsrv::pg::database()?;
    Some(Box::new(pg_open(&url, "site-a", "cam-1", roots())))
}

/// Generates, for each backend-neutral test fn `name(Box<dyn Ledger>)`, the tests
/// `name::sqlite` and `name::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(super::sqlite())
            }

            #[cfg(feature = "postgres")]
            #[test]
            fn postgres() {
                if let Some(s) = super::postgres() {
                    super::$name(s)
                }
            }
        }
    )*};
}

both!(
    claimed_here_lists_this_process_claims,
    list_by_folder_reads_every_date_newest_first,
    record_distinguishes_new_known_and_new_versions,
    non_utf8_names_round_trip_losslessly,
    claims_are_atomic_ordered_and_respect_due_times,
    completions_update_rows_and_keep_twenty_results,
    a_completion_never_touches_a_newer_version,
    interrupted_uploads_are_reset_with_a_result_row,
    unclaim_gives_the_attempt_back,
    retry_and_prune,
    events_make_settling_rows_due,
    known_among_follows_the_version_on_disk,
    dispositions_set_the_row_as_sqlite_does,
    claim_ids_and_due_ids_follow_upload_order,
    state_counts_and_summary,
    uploaded_total_counts_every_version_sent_and_prune_keeps_it,
    export_then_import_round_trips,
    a_row_and_its_results_are_read_by_id,
);

// The counters behind the counts, against the rows, through every change.
pub(super) mod counts;

pub(super) fn obs(name: &[u8], size: u64, mtime_ns: i64) -> Observation {
    let filename = OsString::from_vec(name.to_vec());
    let mut path = PathBuf::from("/data/Sega_1/2026-11-26");
    path.push(&filename);
    Observation {
        path,
        folder: "Sega_1".into(),
        date: "2026-11-26".into(),
        filename,
        version: Version { size, mtime_ns },
        ready_at: T0,
        via_event: true,
    }
}

pub(super) fn completion(c: &Claimed, d: Disposition) -> Completion {
    let result = match d {
        Disposition::Uploaded => Some(Attempted::Success),
        Disposition::Retry { .. } => Some(Attempted::Retry),
        Disposition::Failed => Some(Attempted::Failed),
        _ => None,
    };
    Completion {
        file_id: c.id,
        attempt: c.attempt,
        version: c.version,
        started_at: T1,
        duration_ms: 3,
        http_status: Some(200),
        response_body: Some("{\"ok\":true}".into()),
        response_json: Some("{\"ok\":true}".into()),
        error: None,
        result,
        disposition: d,
    }
}

/// Every row with its results, through `export` (the one view both backends share).
pub(super) fn exported(s: &mut dyn Ledger) -> Vec<Exported> {
    let mut all = Vec::new();
    s.export(&mut |e| {
        all.push(e);
        Ok(())
    })
    .unwrap();
    all
}

pub(super) fn all_results(s: &mut dyn Ledger) -> Vec<ResultRow> {
    exported(s).into_iter().flat_map(|e| e.results).collect()
}

fn a_path() -> &'static Path {
    Path::new("/data/Sega_1/2026-11-26/a.jpg")
}

fn record_distinguishes_new_known_and_new_versions(mut s: Box<dyn Ledger>) {
    let st = s
        .record(&[obs(b"a.jpg", 10, 1), obs(b"b.jpg", 20, 2)], T0)
        .unwrap();
    assert_eq!((st.new, st.new_versions, st.unchanged), (2, 0, 0));
    let mut settled = obs(b"a.jpg", 10, 1);
    settled.via_event = false;
    let st = s.record(&[settled], T0).unwrap();
    assert_eq!((st.new, st.new_versions, st.unchanged), (0, 0, 1));

    // Upload a.jpg, then it is rewritten: a new version, attempts from 0.
    let c = s.claim_due(T0, FAR, 10, ClaimOrder::OldestFile).unwrap();
    assert_eq!(c.len(), 2);
    let a = c.iter().find(|c| c.filename == "a.jpg").unwrap().clone();
    s.complete(&[completion(&a, Disposition::Uploaded)], T1)
        .unwrap();
    let st = s.record(&[obs(b"a.jpg", 11, 5)], T2).unwrap();
    assert_eq!(st.new_versions, 1);
    let row = s.file_by_path(a_path()).unwrap().unwrap();
    assert_eq!(
        (
            row.status.as_str(),
            row.attempts,
            row.size,
            row.uploaded_at.is_none()
        ),
        ("pending", 0, 11, true)
    );
    assert_eq!(
        row.detected_at,
        Some(T0),
        "detection time is the first version's"
    );
    assert_eq!(row.path, a_path());
}

fn non_utf8_names_round_trip_losslessly(mut s: Box<dyn Ledger>) {
    let name = b"\xbb\xe7\xc1\xf8.jpg";
    s.record(&[obs(name, 1, 1), obs("사진.jpg".as_bytes(), 1, 1)], T0)
        .unwrap();
    let c = s.claim_due(T0, FAR, 10, ClaimOrder::OldestFile).unwrap();
    let got: Vec<&[u8]> = c.iter().map(|c| c.filename.as_bytes()).collect();
    assert!(got.contains(&&name[..]));
    assert!(got.contains(&"사진.jpg".as_bytes()));
    let raw = c.iter().find(|c| c.filename.as_bytes() == name).unwrap();
    assert!(raw.path.as_os_str().as_bytes().ends_with(name));
    // The same bytes recorded again are the same row.
    assert_eq!(s.record(&[obs(name, 1, 1)], T0).unwrap().unchanged, 1);
    let mut p = PathBuf::from("/data/Sega_1/2026-11-26");
    p.push(OsString::from_vec(name.to_vec()));
    let row = s.file_by_path(&p).unwrap().unwrap();
    assert_eq!(row.filename.as_bytes(), name);
}

fn claims_are_atomic_ordered_and_respect_due_times(mut s: Box<dyn Ledger>) {
    let mut late = obs(b"late.jpg", 1, 1);
    late.ready_at = T2;
    s.record(
        &[obs(b"new.jpg", 1, 300), obs(b"old.jpg", 1, 100), late],
        T0,
    )
    .unwrap();
    let c = s.claim_due(T1, FAR, 10, ClaimOrder::OldestFile).unwrap();
    let names: Vec<_> = c.iter().map(|c| c.filename.clone()).collect();
    assert_eq!(names, ["old.jpg", "new.jpg"]);
    assert!(c.iter().all(|c| c.attempt == 1));
    assert_eq!(c[0].path, Path::new("/data/Sega_1/2026-11-26/old.jpg"));
    assert!(
        s.claim_due(T1, FAR, 10, ClaimOrder::OldestFile)
            .unwrap()
            .is_empty(),
        "claimed rows are not claimed twice"
    );
    assert_eq!(s.next_due().unwrap(), Some(T2));
    assert_eq!(
        s.claim_due(T2, FAR, 10, ClaimOrder::NewestFile)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.next_due().unwrap(), None);
}

fn completions_update_rows_and_keep_twenty_results(mut s: Box<dyn Ledger>) {
    s.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap();
    for i in 0..25 {
        let c = s
            .claim_due(LATER, FAR, 1, ClaimOrder::OldestFile)
            .unwrap()
            .remove(0);
        assert_eq!(c.attempt, i + 1);
        let mut done = completion(
            &c,
            Disposition::Retry {
                at: T1,
                counted: true,
            },
        );
        done.http_status = Some(503);
        done.error = Some("HTTP 503".into());
        s.complete(&[done], T1).unwrap();
    }
    let results = all_results(&mut *s);
    assert_eq!(results.len() as i64, RESULTS_KEPT_PER_FILE);
    let row = s.list(&ListFilter::default()).unwrap().remove(0);
    assert_eq!(
        (row.status.as_str(), row.attempts, row.last_error.as_deref()),
        ("pending", 25, Some("HTTP 503"))
    );
    assert_eq!(results.iter().map(|r| r.attempt).max(), Some(25));
    assert_eq!(results.iter().map(|r| r.attempt).min(), Some(6));
    let r = &results[0];
    assert_eq!(
        (r.started_at, r.http_status, r.outcome.as_str()),
        (Some(T1), Some(503), "retry")
    );
}

fn a_completion_never_touches_a_newer_version(mut s: Box<dyn Ledger>) {
    s.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap();
    let c = s
        .claim_due(T0, FAR, 1, ClaimOrder::OldestFile)
        .unwrap()
        .remove(0);
    s.record(&[obs(b"a.jpg", 2, 2)], T1).unwrap();
    s.complete(&[completion(&c, Disposition::Uploaded)], T2)
        .unwrap();
    let row = s.list(&ListFilter::default()).unwrap().remove(0);
    assert_eq!((row.status.as_str(), row.size), ("pending", 2));
    assert_eq!(
        all_results(&mut *s).len(),
        1,
        "the attempt is still on record"
    );
}

fn interrupted_uploads_are_reset_with_a_result_row(mut s: Box<dyn Ledger>) {
    s.record(&[obs(b"a.jpg", 1, 1), obs(b"b.jpg", 1, 2)], T0)
        .unwrap();
    let c = s.claim_due(T0, FAR, 2, ClaimOrder::OldestFile).unwrap();
    assert_eq!(
        s.reset_uploading(Some(&[c[0].id]), T1, "interrupted")
            .unwrap(),
        1
    );
    assert_eq!(s.reset_uploading(None, T1, "interrupted").unwrap(), 1);
    let results = all_results(&mut *s);
    assert_eq!(results.len(), 2);
    assert!(results
        .iter()
        .all(|r| r.outcome.as_str() == "retry" && r.error.as_deref() == Some("interrupted")));
    assert!(results.iter().all(|r| r.attempt == 1));
    let again = s.claim_due(T1, FAR, 10, ClaimOrder::OldestFile).unwrap();
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|c| c.attempt == 2),
        "an interrupted attempt counts"
    );
}

fn unclaim_gives_the_attempt_back(mut s: Box<dyn Ledger>) {
    s.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap();
    let c = s
        .claim_due(T0, FAR, 1, ClaimOrder::OldestFile)
        .unwrap()
        .remove(0);
    s.unclaim(&[c.id], T1).unwrap();
    let c = s
        .claim_due(T1, FAR, 1, ClaimOrder::OldestFile)
        .unwrap()
        .remove(0);
    assert_eq!(c.attempt, 1);
    assert!(all_results(&mut *s).is_empty());
}

fn claimed_here_lists_this_process_claims(mut s: Box<dyn Ledger>) {
    s.record(
        &[
            obs(b"a.jpg", 1, 1),
            obs(b"b.jpg", 1, 2),
            obs(b"c.jpg", 1, 3),
        ],
        T0,
    )
    .unwrap();
    assert_eq!(s.claimed_here().unwrap(), Some(Vec::new()));
    let claimed = s.claim_due(T0, FAR, 2, ClaimOrder::OldestFile).unwrap();
    let mut ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
    let mut here = s.claimed_here().unwrap().unwrap_or_default();
    ids.sort_unstable();
    here.sort_unstable();
    assert_eq!(here, ids);
    s.unclaim(&ids[..1], T1).unwrap();
    assert_eq!(s.claimed_here().unwrap(), Some(ids[1..].to_vec()));
}

fn retry_and_prune(mut s: Box<dyn Ledger>) {
    let mut old = obs(b"old.jpg", 1, 1);
    old.date = "2026-01-01".into();
    old.path = PathBuf::from("/data/Sega_1/2026-01-01/old.jpg");
    s.record(&[obs(b"a.jpg", 1, 1), old], T0).unwrap();
    for c in s.claim_due(T0, FAR, 10, ClaimOrder::OldestFile).unwrap() {
        s.complete(&[completion(&c, Disposition::Failed)], T1)
            .unwrap();
    }
    assert_eq!(s.retry_failed(T2).unwrap(), 2);
    let c = s.claim_due(T2, FAR, 10, ClaimOrder::OldestFile).unwrap();
    assert_eq!(c.len(), 2);
    for c in &c {
        s.complete(&[completion(c, Disposition::Uploaded)], T2)
            .unwrap();
    }
    assert_eq!(
        s.retry_path(a_path(), false, T2).unwrap(),
        Some(Status::Uploaded)
    );
    assert!(
        s.claim_due(T2, FAR, 10, ClaimOrder::OldestFile)
            .unwrap()
            .is_empty(),
        "uploaded needs --force"
    );
    s.retry_path(a_path(), true, T2).unwrap();
    assert_eq!(
        s.claim_due(T2, FAR, 10, ClaimOrder::OldestFile)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.retry_path(a_path(), true, T2).unwrap(),
        Some(Status::Uploading),
        "a row being uploaded is left alone"
    );
    assert_eq!(
        s.retry_path(Path::new("/nope.jpg"), true, T2).unwrap(),
        None
    );
    assert_eq!(all_results(&mut *s).len(), 4);
    assert_eq!(s.prune("2026-06-01").unwrap(), 1);
    let left = exported(&mut *s);
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].results.len(),
        2,
        "the pruned row's results went with it"
    );
}

fn events_make_settling_rows_due(mut s: Box<dyn Ledger>) {
    // Found by a scan: due when it has settled.
    let mut scanned = obs(b"a.jpg", 1, 1);
    scanned.ready_at = LATER;
    scanned.via_event = false;
    s.record(&[scanned.clone()], T0).unwrap();
    assert!(s
        .claim_due(T1, FAR, 10, ClaimOrder::OldestFile)
        .unwrap()
        .is_empty());
    // Seen again by a scan: still settling.
    let st = s.record(&[scanned.clone()], T1).unwrap();
    assert_eq!((st.unchanged, st.made_due), (1, 0));
    // IN_CLOSE_WRITE: the writer is done, due now.
    let mut event = scanned;
    event.via_event = true;
    let st = s.record(&[event.clone()], T1).unwrap();
    assert_eq!((st.unchanged, st.made_due), (0, 1));
    assert_eq!(s.next_due().unwrap(), Some(T1));
    // Once tried and backing off, an event does not cut the backoff short…
    let c = s
        .claim_due(T1, FAR, 1, ClaimOrder::OldestFile)
        .unwrap()
        .remove(0);
    let mut done = completion(
        &c,
        Disposition::Retry {
            at: LATER,
            counted: true,
        },
    );
    done.error = Some("permission denied".into());
    s.complete(&[done], T1).unwrap();
    let st = s.record(&[event], T2).unwrap();
    assert_eq!((st.unchanged, st.made_due), (1, 0));
    // …but a permission change does, and so does the end of an endpoint outage.
    assert!(s.recheck(a_path(), T2).unwrap());
    assert!(!s.recheck(a_path(), T2).unwrap(), "already due");
    assert!(!s
        .recheck(Path::new("/data/Sega_1/2026-11-26/x.jpg"), T2)
        .unwrap());
    let c = s
        .claim_due(T2, FAR, 1, ClaimOrder::OldestFile)
        .unwrap()
        .remove(0);
    let done = completion(
        &c,
        Disposition::Retry {
            at: LATER,
            counted: true,
        },
    );
    s.complete(&[done], T2).unwrap();
    assert_eq!(s.release_backoff(T2).unwrap(), 1);
    assert_eq!(s.next_due().unwrap(), Some(T2));
}

fn known_among_follows_the_version_on_disk(mut s: Box<dyn Ledger>) {
    let names: Vec<String> = (0..300).map(|i| format!("f{i}.jpg")).collect();
    let batch: Vec<Observation> = names.iter().map(|n| obs(n.as_bytes(), 10, 1)).collect();
    assert_eq!(s.record(&batch, T0).unwrap().new, 300);
    let paths: Vec<Vec<u8>> = names
        .iter()
        .map(|n| format!("/data/Sega_1/2026-11-26/{n}").into_bytes())
        .collect();
    // Short (looked up one by one in SQLite) and long (streamed) listings agree.
    for len in [3, 300] {
        let mut listed: Vec<(&[u8], Version)> = paths[..len]
            .iter()
            .map(|p| {
                (
                    p.as_slice(),
                    Version {
                        size: 10,
                        mtime_ns: 1,
                    },
                )
            })
            .collect();
        listed[1].1.size = 11;
        let extra = b"/data/Sega_1/2026-11-26/new.jpg".to_vec();
        listed.push((
            &extra,
            Version {
                size: 1,
                mtime_ns: 1,
            },
        ));
        // A listing begun after the rows last changed (T1 > T0) is compared by version, and
        // so is one whose "now" is before their change: stamped by a clock since stepped
        // back, which must not keep a new version out for as long as the step.
        let hour = std::time::Duration::from_secs(3600);
        for during in [None, Some((T1, T2)), Some((T0 - hour, T0 - hour / 2))] {
            let known = s
                .known_among("Sega_1", "2026-11-26", &listed, during)
                .unwrap();
            assert_eq!(known.len(), len + 1);
            assert!(known[0] && !known[1] && known[2] && !known[len]);
            assert_eq!(known.iter().filter(|k| **k).count(), len - 1);
        }
        // One begun before they changed (T0, when they were recorded) and ending after saw
        // them no later than the ledger did: every recorded file is known, whatever
        // version it listed.
        let known = s
            .known_among("Sega_1", "2026-11-26", &listed, Some((T0, T1)))
            .unwrap();
        assert!(known[..len].iter().all(|k| *k) && !known[len], "{known:?}");
    }
}

fn dispositions_set_the_row_as_sqlite_does(mut s: Box<dyn Ledger>) {
    let batch: Vec<Observation> = (1..=5)
        .map(|i| obs(format!("{i}.jpg").as_bytes(), 10, i))
        .collect();
    s.record(&batch, T0).unwrap();
    let c = s.claim_due(T0, FAR, 10, ClaimOrder::OldestFile).unwrap();
    assert_eq!(c.len(), 5);
    let mut skipped = completion(&c[1], Disposition::Skipped { absent: false });
    skipped.error = Some("not an image".into());
    let mut failed = completion(&c[2], Disposition::Failed);
    failed.http_status = Some(400);
    failed.error = Some("HTTP 400".into());
    let mut not_ready = completion(
        &c[3],
        Disposition::NotReady {
            at: T2,
            incomplete_since: Some(T1),
        },
    );
    not_ready.error = Some("no end marker yet".into());
    let changed = completion(
        &c[4],
        Disposition::Changed {
            version: Version {
                size: 99,
                mtime_ns: 77,
            },
            at: LATER,
        },
    );
    s.complete(
        &[
            completion(&c[0], Disposition::Uploaded),
            skipped,
            failed,
            not_ready,
            changed,
        ],
        T1,
    )
    .unwrap();
    let rows: HashMap<String, _> = exported(&mut *s)
        .into_iter()
        .map(|e| (e.file.filename.to_string_lossy().into_owned(), e))
        .collect();
    let r = &rows["1.jpg"];
    assert_eq!(
        (
            r.file.status.as_str(),
            r.file.uploaded_at,
            r.file.next_attempt_at
        ),
        ("uploaded", Some(T1), None)
    );
    assert_eq!(r.results.len(), 1);
    assert!(r.results[0].response_json.is_some());
    let r = &rows["2.jpg"];
    assert_eq!(
        (
            r.file.status.as_str(),
            r.file.last_error.as_deref(),
            r.results.len()
        ),
        ("skipped", Some("not an image"), 0)
    );
    let r = &rows["3.jpg"];
    assert_eq!(
        (
            r.file.status.as_str(),
            r.file.last_error.as_deref(),
            r.results.len()
        ),
        ("failed", Some("HTTP 400"), 1)
    );
    assert_eq!(r.results[0].outcome.as_str(), "failed");
    let r = &rows["4.jpg"];
    assert_eq!(
        (
            r.file.status.as_str(),
            r.file.attempts,
            r.file.next_attempt_at,
            r.incomplete_since,
            r.results.len()
        ),
        ("pending", 0, Some(T2), Some(T1), 0)
    );
    let r = &rows["5.jpg"];
    assert_eq!(
        (
            r.file.status.as_str(),
            r.file.attempts,
            r.file.size,
            r.file.mtime_ns,
            r.file.next_attempt_at
        ),
        ("pending", 0, 99, 77, Some(LATER))
    );
    // A retry that does not count gives the attempt back.
    let c = s.claim_due(T2, FAR, 10, ClaimOrder::OldestFile).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].incomplete_since, Some(T1));
    let probe = completion(
        &c[0],
        Disposition::Retry {
            at: T2,
            counted: false,
        },
    );
    s.complete(&[probe], T2).unwrap();
    assert_eq!(
        s.claim_due(T2, FAR, 10, ClaimOrder::OldestFile).unwrap()[0].attempt,
        1
    );
}

fn claim_ids_and_due_ids_follow_upload_order(mut s: Box<dyn Ledger>) {
    let mut other_day = obs(b"z.jpg", 1, 5);
    other_day.date = "2026-11-25".into();
    other_day.path = PathBuf::from("/data/Sega_1/2026-11-25/z.jpg");
    let mut not_yet = obs(b"later.jpg", 1, 1);
    not_yet.ready_at = LATER;
    s.record(
        &[
            obs(b"b.jpg", 1, 20),
            obs(b"a.jpg", 1, 10),
            other_day,
            not_yet,
        ],
        T0,
    )
    .unwrap();
    let all = s.due_ids(T1, FAR, &[], false).unwrap();
    assert_eq!(all.len(), 3);
    let today = s
        .due_ids(T1, FAR, &["2026-11-26".to_owned()], false)
        .unwrap();
    assert_eq!(today.len(), 2);
    let newest = s.due_ids(T1, FAR, &[], true).unwrap();
    assert_eq!(newest, all.iter().rev().copied().collect::<Vec<_>>());
    let c = s.claim_ids(&today, T1).unwrap();
    let names: Vec<_> = c.iter().map(|c| c.filename.clone()).collect();
    assert_eq!(names, ["a.jpg", "b.jpg"]);
    assert!(s.claim_ids(&today, T1).unwrap().is_empty(), "claimed once");
    assert_eq!(
        s.count_status_in_dates(&[Status::Uploading], &["2026-11-26".to_owned()])
            .unwrap(),
        2
    );
    assert_eq!(
        s.count_status_in_dates(
            &[Status::Pending, Status::Uploading],
            &["2026-11-26".to_owned(), "2026-11-25".to_owned()]
        )
        .unwrap(),
        4
    );
}

fn state_counts_and_summary(mut s: Box<dyn Ledger>) {
    s.set_state(
        &[("heartbeat", T1.to_string()), ("endpoint", "up".to_owned())],
        T1,
    )
    .unwrap();
    s.set_state(&[("endpoint", "down".to_owned())], T2).unwrap();
    let st = s.state().unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(st["endpoint"].0, "down");
    assert_eq!(st["heartbeat"].0, T1.to_string());
    assert_eq!(
        st["heartbeat"].1.map(|t| t.to_string().len()),
        Some(T1.to_string().len()),
        "{st:?}"
    );

    s.record(
        &[
            obs(b"a.jpg", 1, 1),
            obs(b"b.jpg", 1, 2),
            obs(b"c.jpg", 1, 3),
        ],
        T0,
    )
    .unwrap();
    let c = s.claim_due(T0, FAR, 2, ClaimOrder::OldestFile).unwrap();
    s.complete(&[completion(&c[0], Disposition::Uploaded)], T1)
        .unwrap();
    let mut failed = completion(&c[1], Disposition::Failed);
    failed.http_status = Some(413);
    failed.error = None;
    s.complete(&[failed], T1).unwrap();

    assert_eq!(s.uploaded_since(T0).unwrap(), 1);
    assert_eq!(s.uploaded_since(T2).unwrap(), 0);
    assert_eq!(s.queue_overview().unwrap(), (1, Some(T0.to_owned())));
    let counts = s.counts().unwrap();
    assert_eq!(
        counts,
        [
            ("Sega_1".to_owned(), Status::Failed, 1),
            ("Sega_1".to_owned(), Status::Pending, 1),
            ("Sega_1".to_owned(), Status::Uploaded, 1),
        ]
    );
    let sum = s.summary(T0, T0, T0).unwrap();
    assert_eq!(sum.counts, counts);
    assert_eq!(sum.uploaded_today, 1);
    assert_eq!(sum.failed_last_hour, 1);
    let oldest = sum.oldest_pending.unwrap();
    assert_eq!(oldest.path, Path::new("/data/Sega_1/2026-11-26/c.jpg"));
    assert_eq!(oldest.at, Some(T0));
    let ok = sum.last_success.unwrap();
    assert_eq!((ok.path, ok.at), (c[0].path.clone(), Some(T1)));
    let err = sum.last_error.unwrap();
    assert_eq!(err.detail.as_deref(), Some("HTTP 413"));
    assert_eq!(err.path, c[1].path);
    assert_eq!(sum.errors_24h.len(), 1);
    assert_eq!(
        (sum.errors_24h[0].cause.as_str(), sum.errors_24h[0].count),
        ("HTTP 413", 1)
    );
    assert_eq!(sum.state["endpoint"].0, "down");

    let listed = s
        .list(&ListFilter {
            status: Some(Status::Uploaded),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].filename, "a.jpg");
    let listed = s
        .list(&ListFilter {
            limit: Some(2),
            ..Default::default()
        })
        .unwrap();
    let names: Vec<_> = listed.iter().map(|r| r.filename.clone()).collect();
    assert_eq!(names, ["c.jpg", "b.jpg"], "newest first");
    assert!(s
        .list(&ListFilter {
            folder: Some("Sega_2".into()),
            ..Default::default()
        })
        .unwrap()
        .is_empty());
}

/// `list --folder` without a date: the folder's rows of every date, newest date first,
/// another folder's left out (on PostgreSQL the dates come from the key, schema 5's).
fn list_by_folder_reads_every_date_newest_first(mut s: Box<dyn Ledger>) {
    let at = |folder: &str, date: &str, name: &str| {
        let mut o = obs(name.as_bytes(), 1, 1);
        o.folder = folder.into();
        o.date = date.into();
        o.path = PathBuf::from(format!("/data/{folder}/{date}/{name}"));
        o
    };
    s.record(
        &[
            at("Sega_1", "2026-11-24", "old.jpg"),
            at("Sega_2", "2026-11-25", "other.jpg"),
            at("Sega_1", "2026-11-26", "new.jpg"),
            at("Sega_1", "2026-11-25", "mid.jpg"),
        ],
        T0,
    )
    .unwrap();
    let names = |s: &mut Box<dyn Ledger>, folder: &str, limit: Option<i64>| -> Vec<String> {
        s.list(&ListFilter {
            folder: Some(folder.into()),
            limit,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| r.filename.to_string_lossy().into_owned())
        .collect()
    };
    assert_eq!(
        names(&mut s, "Sega_1", None),
        ["new.jpg", "mid.jpg", "old.jpg"]
    );
    assert_eq!(names(&mut s, "Sega_1", Some(2)), ["new.jpg", "mid.jpg"]);
    assert_eq!(names(&mut s, "Sega_2", None), ["other.jpg"]);
    assert!(names(&mut s, "Sega_3", None).is_empty());
}

/// The `uploaded_total` state row: one per version marked uploaded, nothing for a completion
/// that did not land (a newer version recorded meanwhile) or did not upload, and a prune of
/// the counted rows does not lower it.
fn uploaded_total_counts_every_version_sent_and_prune_keeps_it(mut s: Box<dyn Ledger>) {
    fn total(s: &mut dyn Ledger) -> Option<String> {
        s.state()
            .unwrap()
            .get(super::UPLOADED_TOTAL)
            .map(|(v, _)| v.clone())
    }
    let mut old = obs(b"old.jpg", 1, 1);
    old.date = "2026-01-01".into();
    old.path = PathBuf::from("/data/Sega_1/2026-01-01/old.jpg");
    s.record(&[obs(b"a.jpg", 1, 1), obs(b"b.jpg", 1, 1), old], T0)
        .unwrap();
    let c = s.claim_due(T0, FAR, 10, ClaimOrder::OldestFile).unwrap();
    assert_eq!(c.len(), 3);
    let named = |n: &str| c.iter().find(|c| c.filename == n).unwrap();
    s.complete(&[completion(named("a.jpg"), Disposition::Failed)], T1)
        .unwrap();
    assert_eq!(total(&mut *s), None, "nothing uploaded yet");
    s.complete(
        &[
            completion(named("b.jpg"), Disposition::Uploaded),
            completion(named("old.jpg"), Disposition::Uploaded),
        ],
        T1,
    )
    .unwrap();
    assert_eq!(total(&mut *s).as_deref(), Some("2"));
    // The same completion again lands nowhere (the row is no longer `uploading`).
    s.complete(&[completion(named("b.jpg"), Disposition::Uploaded)], T1)
        .unwrap();
    assert_eq!(total(&mut *s).as_deref(), Some("2"));
    // a.jpg rewritten while it was sent: the completion is for the old version, not counted;
    // the new version's upload is.
    let a = s.file_by_path(a_path()).unwrap().unwrap();
    assert_eq!(a.status, Status::Failed);
    s.record(&[obs(b"a.jpg", 2, 2)], T1).unwrap();
    let a1 = s.claim_due(T1, FAR, 10, ClaimOrder::OldestFile).unwrap();
    assert_eq!(a1.len(), 1);
    s.record(&[obs(b"a.jpg", 3, 3)], T1).unwrap();
    s.complete(&[completion(&a1[0], Disposition::Uploaded)], T2)
        .unwrap();
    assert_eq!(total(&mut *s).as_deref(), Some("2"));
    let a2 = s.claim_due(T2, FAR, 10, ClaimOrder::OldestFile).unwrap();
    s.complete(&[completion(&a2[0], Disposition::Uploaded)], T2)
        .unwrap();
    assert_eq!(total(&mut *s).as_deref(), Some("3"));
    assert_eq!(s.prune("2026-06-01").unwrap(), 1);
    assert_eq!(
        total(&mut *s).as_deref(),
        Some("3"),
        "prune never lowers the counter"
    );
    // A value edited by hand into nonsense counts from 0 again instead of failing uploads.
    s.set_state(&[(super::UPLOADED_TOTAL, "lots".to_owned())], T2)
        .unwrap();
    s.record(&[obs(b"d.jpg", 1, 1)], T2).unwrap();
    let d = s.claim_due(T2, FAR, 10, ClaimOrder::OldestFile).unwrap();
    s.complete(&[completion(&d[0], Disposition::Uploaded)], T2)
        .unwrap();
    assert_eq!(total(&mut *s).as_deref(), Some("1"));
}

/// `migrate-db` into a fresh ledger of the same kind: rows, versions, states and results
/// arrive; a claim arrives as pending; a second import adds nothing.
fn export_then_import_round_trips(mut s: Box<dyn Ledger>) {
    s.record(
        &[
            obs(b"a.jpg", 1, 1),
            obs(b"b.jpg", 2, 2),
            obs(b"c.jpg", 3, 3),
        ],
        T0,
    )
    .unwrap();
    let c = s.claim_due(T0, FAR, 2, ClaimOrder::OldestFile).unwrap();
    let mut retry = completion(
        &c[0],
        Disposition::Retry {
            at: T2,
            counted: true,
        },
    );
    retry.http_status = Some(503);
    retry.response_body = Some("busy".into());
    retry.response_json = None;
    retry.error = Some("HTTP 503".into());
    s.complete(&[retry], T1).unwrap();
    let rows = exported(&mut *s);
    assert_eq!(rows.len(), 3);

    let mut t = fresh_like(&*s);
    assert_eq!(t.import(&rows).unwrap(), 3);
    assert_eq!(t.import(&rows).unwrap(), 0, "already recorded");
    let back = exported(&mut *t);
    let by_name =
        |v: &[Exported], n: &str| v.iter().find(|e| e.file.filename == n).cloned().unwrap();
    let a = by_name(&back, "a.jpg");
    assert_eq!(
        (
            a.file.status.as_str(),
            a.file.attempts,
            a.file.next_attempt_at
        ),
        ("pending", 1, Some(T2))
    );
    assert_eq!(a.results.len(), 1);
    assert_eq!(a.results[0].response_body.as_deref(), Some("busy"));
    assert_eq!(a.results[0].http_status, Some(503));
    let b = by_name(&back, "b.jpg");
    assert_eq!(
        (b.file.status.as_str(), b.file.next_attempt_at),
        ("pending", Some(T0)),
        "a claim does not travel"
    );
    assert_eq!(b.file.path, Path::new("/data/Sega_1/2026-11-26/b.jpg"));
    assert_eq!(
        t.claim_due(T2, FAR, 10, ClaimOrder::OldestFile)
            .unwrap()
            .len(),
        3
    );
}

/// An empty ledger of the same backend as `s`.
fn fresh_like(s: &dyn Ledger) -> Box<dyn Ledger> {
    #[cfg(feature = "postgres")]
    if s.describe().starts_with("PostgreSQL") {
        return postgres().unwrap();
    }
    let _ = s;
    sqlite()
}

/// `show` and `list -v`: a row by its id, every result oldest first, the latest of each.
fn a_row_and_its_results_are_read_by_id(mut s: Box<dyn Ledger>) {
    s.record(&[obs(b"a.jpg", 1, 1), obs(b"b.jpg", 2, 2)], T0)
        .unwrap();
    let answer = r#"{"detail":"missing field camera_id"}"#;
    for (i, status) in [503, 422].into_iter().enumerate() {
        let c = s
            .claim_due(LATER, FAR, 1, ClaimOrder::OldestFile)
            .unwrap()
            .remove(0);
        assert_eq!(c.filename, "a.jpg");
        let mut done = completion(
            &c,
            if status == 503 {
                Disposition::Retry {
                    at: T0,
                    counted: true,
                }
            } else {
                Disposition::Failed
            },
        );
        done.started_at = [T1, T2][i];
        done.http_status = Some(status);
        done.response_body = Some(answer.into());
        done.response_json = Some(answer.into());
        done.error = Some(format!("HTTP {status}"));
        s.complete(&[done], T2).unwrap();
    }
    let a = s
        .file_by_path(Path::new("/data/Sega_1/2026-11-26/a.jpg"))
        .unwrap()
        .unwrap();
    let by_id = s.file_by_id(a.id).unwrap().unwrap();
    assert_eq!(
        (by_id.filename.as_os_str(), by_id.status, by_id.attempts),
        (OsString::from("a.jpg").as_os_str(), Status::Failed, 2)
    );
    assert!(s.file_by_id(a.id + 1000).unwrap().is_none());
    let results = s.results(a.id).unwrap();
    let seen: Vec<_> = results
        .iter()
        .map(|r| (r.attempt, r.started_at, r.http_status, r.outcome))
        .collect();
    assert_eq!(
        seen,
        [
            (1, Some(T1), Some(503), Attempted::Retry),
            (2, Some(T2), Some(422), Attempted::Failed)
        ]
    );
    assert!(results[0].id < results[1].id);
    assert_eq!(results[1].response_body.as_deref(), Some(answer));
    assert_eq!(results[1].error.as_deref(), Some("HTTP 422"));
    let b = s
        .file_by_path(Path::new("/data/Sega_1/2026-11-26/b.jpg"))
        .unwrap()
        .unwrap();
    assert!(s.results(b.id).unwrap().is_empty());
    let latest = s.latest_results(&[a.id, b.id, a.id + 1000]).unwrap();
    assert_eq!(latest.len(), 1, "only a.jpg has results");
    assert_eq!(latest[&a.id].id, results[1].id);
    assert!(s.latest_results(&[]).unwrap().is_empty());
}
