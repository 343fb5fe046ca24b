//! Helpers the PostgreSQL tests of this folder share (a fresh database, a wait with a
//! deadline), and the tests of what every statement shares: the scope filter, and text
//! PostgreSQL can hold.

use super::*;
use crate::store::tests::{completion, exported, obs, pg_open, pg_try_open, roots, FAR, T0, T1};
use crate::store::{ClaimOrder, Disposition};
use std::time::{Duration, Instant};

pub(super) fn t() -> Option<String> {
    sega_testsrv::pg::database()
}

/// Polls `f` until it holds, failing after 20 s: the server acts on some requests
/// (terminating a backend, releasing its locks) after answering them.
pub(super) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timeout waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) const LEASE: Duration = Duration::from_secs(60);

/// Why opening a store for scope "s", host "h" fails.
pub(super) fn open_error(url: &str) -> String {
    match pg_try_open(url, "s", "h", roots(), LEASE) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    }
}

/// A daemon's session (generic plans) on a fresh ledger that autovacuum never analyzes,
/// its plans not made again for an hour unless a test says so (`replan_for_test`): the
/// plans a new ledger's daemon makes, to look at with `explain_prepared_for_test`.
pub(super) fn daemon_session(url: &str) -> PgStore {
    let mut s = pg_open(url, "site-a", "cam-1", roots());
    s.exec_for_test("ALTER TABLE files SET (autovacuum_enabled = false)")
        .unwrap();
    assert_eq!(s.lock_daemon().unwrap(), None);
    s.replan_for_test(false);
    s
}

/// A SQLite ledger at a path of its own, for a test that also edits it by hand.
pub(super) fn sqlite_at() -> (std::path::PathBuf, Box<dyn Ledger>) {
    let db = crate::store::tests::temp_db();
    let store = crate::store::sqlite::Store::open(&db).unwrap();
    (db, Box::new(store))
}

pub(super) fn many(n: usize) -> Vec<Observation> {
    (0..n)
        .map(|i| obs(format!("f{i:06}.jpg").as_bytes(), 1, i as i64))
        .collect()
}

/// `claimed_here` is this host's claims under this pid: not another host's, nor those of an
/// earlier process of this host (start-up resets those).
#[test]
fn claimed_here_is_this_process_alone() {
    let Some(url) = t() else { return };
    let mut a = pg_open(&url, "site-a", "cam-1", roots());
    let mut b = pg_open(&url, "site-a", "cam-2", roots());
    a.record(&many(3), T0).unwrap();
    let mine = a.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap();
    let theirs = b.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap();
    let earlier = a.claim_due(T0, FAR, 1, ClaimOrder::OldestFile).unwrap();
    a.exec_for_test(&format!(
        "UPDATE files SET claimed_pid = claimed_pid + 1 WHERE id = {}",
        earlier[0].id
    ))
    .unwrap();
    assert_eq!(a.claimed_here().unwrap(), Some(vec![mine[0].id]));
    assert_eq!(b.claimed_here().unwrap(), Some(vec![theirs[0].id]));
}

#[test]
fn scopes_do_not_see_each_other() {
    let Some(url) = t() else { return };
    let mut a = pg_open(&url, "site-a", "cam-1", roots());
    let mut b = pg_open(&url, "site-b", "cam-1", roots());
    a.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap();
    a.set_state(&[("heartbeat", T0.to_string())], T0).unwrap();
    let p = Path::new("/data/Sega_1/2026-11-26/a.jpg");
    assert!(b
        .claim_due(T1, FAR, 10, ClaimOrder::OldestFile)
        .unwrap()
        .is_empty());
    assert!(b.due_ids(T1, FAR, &[], false).unwrap().is_empty());
    assert!(b.counts().unwrap().is_empty());
    assert!(b.list(&ListFilter::default()).unwrap().is_empty());
    assert!(b.file_by_path(p).unwrap().is_none());
    assert!(b.state().unwrap().is_empty());
    assert!(b.summary(T0, T0, T0).unwrap().hosts.is_empty());
    assert_eq!(b.retry_path(p, true, T1).unwrap(), None);
    assert_eq!(exported(&mut b).len(), 0);
    assert_eq!(b.record(&[obs(b"a.jpg", 1, 1)], T0).unwrap().new, 1);
    // Prune takes finished rows only: both scopes' rows uploaded, b's prune takes b's.
    for s in [&mut a, &mut b] {
        let c = s
            .claim_due(T1, FAR, 10, ClaimOrder::OldestFile)
            .unwrap()
            .remove(0);
        s.complete(&[completion(&c, Disposition::Uploaded)], T1)
            .unwrap();
    }
    assert_eq!(b.prune("2099-01-01").unwrap(), 1);
    assert_eq!(
        a.counts().unwrap(),
        [("Sega_1".into(), Status::Uploaded, 1)]
    );
}

#[test]
fn text_for_postgres_has_no_nul() {
    assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
    assert_eq!(jsonb_text(&Some(r#"{"a":"x\u0000"}"#.into())), None);
    assert_eq!(
        jsonb_text(&Some(r#"{"a":1}"#.into())).as_deref(),
        Some(r#"{"a":1}"#)
    );
}
