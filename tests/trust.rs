//! The adversarial reviews' findings ("Trust", parts 1 to 3), one regression test each:
//! files that vanish for a moment, folders unmounted under the daemon, prune and clocks,
//! hostile ledger rows and symlinks, a poison file, a narrowed config, interim answers, a
//! locked database under a one-shot scan, an owner that must sleep through an outage, a
//! file changed while it is sent, files that arrive by link(), a watch limit, and upload
//! workers stuck on a hung mount; and (issue 17's review) a deadline timer that sleeps
//! while idle. (Secrets and log forging: tests/secrets.rs.)

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::util::*;
use serde_json::json;

both_backends!(
    a_file_away_for_a_moment_is_sent_once_it_is_back,
    an_unmounted_folder_is_unreadable_for_now_not_vanished,
    prune_keeps_what_was_never_uploaded,
    a_date_folder_swapped_for_a_symlink_is_never_followed,
    a_poison_file_holds_no_other_back,
    narrowing_the_config_narrows_what_is_sent,
    interim_answers_are_read_past_to_the_final_one,
    a_file_changed_while_it_is_sent_leaves_its_result,
);

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(16, 16, seed)
}

fn s503() -> Mode {
    Mode::Status {
        code: 503,
        fraction: 1.0,
    }
}

fn uploaded(env: &Env, name: &str) -> bool {
    env.rows()
        .iter()
        .any(|r| r.name() == name && r.status == "uploaded")
}

/// Review item 1: a file moved away during an outage was `skipped` ("vanished") for good,
/// and came back unchanged to a row the rescan thought it knew.
fn a_file_away_for_a_moment_is_sent_once_it_is_back(backend: Backend) {
    let env = Env::with_backend("away", backend);
    env.set("/watch/scan_interval_secs", json!(2));
    env.server.set_mode(s503());
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let b = jpeg(1);
    let p = env.put("Sega_1", "away.jpg", &b);
    env.put("Sega_1", "stays.jpg", &jpeg(2));
    wait_until("both tried", DEADLINE, || env.server.request_count() >= 2);
    let aside = env.dir.join("away.jpg");
    std::fs::rename(&p, &aside).unwrap();
    // The endpoint answers again while the file is away: its row is tried and the file is
    // not there (its date folder still has stays.jpg).
    env.server.set_mode(Mode::Ok);
    wait_until("the row to find its file gone", DEADLINE, || {
        env.rows()
            .iter()
            .any(|r| r.name() == "away.jpg" && r.status == "skipped")
    });
    std::fs::rename(&aside, &p).unwrap();
    wait_until("away.jpg sent once it is back", DEADLINE, || {
        uploaded(&env, "away.jpg")
    });
    check_all_arrived(
        &env,
        &[("away.jpg".to_string(), sha256_hex(&b))]
            .into_iter()
            .collect(),
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Review item 1, the reported repro: endpoint 503, five files pending in Sega_1, Sega_1
/// moved away with an empty directory in its place for 8 s (a share unmounted), moved back,
/// endpoint 200: all five were `skipped: vanished before upload` and never sent.
fn an_unmounted_folder_is_unreadable_for_now_not_vanished(backend: Backend) {
    let env = Env::with_backend("unmounted", backend);
    env.set("/upload/retry", json!({ "initial_secs": 1, "max_secs": 1 }));
    env.server.set_mode(s503());
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let mut written = Written::new();
    for i in 0..5 {
        let b = jpeg(10 + i);
        env.put("Sega_1", format!("m{i}.jpg"), &b);
        written.insert(format!("m{i}.jpg"), sha256_hex(&b));
    }
    d.wait_log("is down");
    let share = env.root.join("Sega_1");
    let away = env.dir.join("Sega_1.unmounted");
    std::fs::rename(&share, &away).unwrap();
    std::fs::create_dir(&share).unwrap();
    // Probes go on while it is "unmounted": they must find the folder empty, not the files
    // vanished.
    let t0 = Instant::now();
    wait_until("a probe into the empty folder", DEADLINE, || {
        env.rows().iter().any(|r| {
            r.status == "skipped"
                || r.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("unreadable for now"))
        })
    });
    let left = Duration::from_secs(8).saturating_sub(t0.elapsed());
    std::thread::sleep(left);
    assert!(
        !env.rows().iter().any(|r| r.status == "skipped"),
        "nothing skipped while unmounted: {:?}",
        env.rows()
    );
    std::fs::remove_dir(&share).unwrap();
    std::fs::rename(&away, &share).unwrap();
    env.server.set_mode(Mode::Ok);
    wait_until("the five files once it is back", DEADLINE, || {
        env.count_status("uploaded") == 5
    });
    assert_eq!(check_all_arrived(&env, &written), 0);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Review item 2a: `DELETE FROM files WHERE date < ?` ignored the status: a backfilled date
/// older than keep_days lost its pending rows at the next start.
fn prune_keeps_what_was_never_uploaded(backend: Backend) {
    let env = Env::with_backend("prune-pending", backend);
    env.set("/database/keep_days", json!(4));
    env.server.set_mode(Mode::Refuse);
    let old = utc_date(-6);
    for i in 0..3 {
        env.put_in("Sega_1", &old, format!("old{i}.jpg"), &jpeg(i));
    }
    assert_eq!(env.run(&["scan", "--date", &old]).code, 1, "left pending");
    assert_eq!(env.count_status("pending"), 3);
    env.server.set_mode(Mode::Ok);
    // Today's files too: prune never reaches past the newest date folder in the ledger.
    env.put("Sega_2", "today.jpg", &jpeg(9));
    let mut d = env.start_daemon();
    wait_until("the backfilled files", DEADLINE, || {
        env.count_status("uploaded") == 4
    });
    assert!(
        !d.log_text().contains("pruned 3"),
        "pending rows were pruned: {}",
        d.log_text()
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    // Uploaded now, the next start prunes them: finished rows still go.
    let mut d = env.start_daemon();
    d.wait_log("pruned 3 row(s)");
    assert_eq!(env.rows().len(), 1);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Review item 2b: a row deleted while its upload was in flight made the result insert
/// fail its foreign key; the failed batch stayed in memory with every later result, and
/// SQLite reused the deleted id for the next file, attaching the stale result to it.
#[test]
fn a_result_whose_row_is_gone_is_dropped_and_blocks_nothing() {
    let env = Env::new("pruned-in-flight");
    env.server.set_mode(Mode::Delay(Duration::from_secs(3)));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    env.put("Sega_1", "first.jpg", &jpeg(1));
    wait_until("first.jpg in flight", DEADLINE, || {
        env.server.connection_count() >= 1
    });
    let gone = env.row("first.jpg").id;
    // Another process removes the row (a prune of another daemon, a hand-made DELETE).
    env.sqlite_writer()
        .execute("DELETE FROM files WHERE id = ?1", [gone])
        .unwrap();
    env.server.set_mode(Mode::Ok);
    env.put("Sega_1", "next.jpg", &jpeg(2));
    wait_until("the dropped result to be said", DEADLINE, || {
        d.log_text().contains("result(s) dropped")
    });
    for i in 0..3 {
        env.put("Sega_2", format!("later{i}.jpg"), &jpeg(10 + i));
    }
    wait_until("every later file uploaded", DEADLINE, || {
        env.count_status("uploaded") == 4
    });
    let next = env.row("next.jpg");
    assert!(
        next.id > gone,
        "ids are never reused: {} after {gone}",
        next.id
    );
    let results = env.results();
    assert!(
        results.iter().all(|r| r.file_id != gone),
        "no result kept for the deleted row: {results:?}"
    );
    assert_eq!(
        results.iter().filter(|r| r.file_id == next.id).count(),
        1,
        "next.jpg has its own result only: {results:?}"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    // Nothing is left claimed, so a restart sends nothing again.
    assert_eq!(env.count_status("uploading"), 0);
}

/// Review item 6: a row in the shared ledger could make a host send any local file (an
/// absolute file name, `..` in the name or the date).
#[test]
fn hostile_ledger_rows_never_open_anything() {
    if !crate::pg::available() {
        return;
    }
    let env = Env::with_backend("hostile-rows", Backend::Postgres);
    let outside = env.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = Sentinel::new(outside.join("secret.txt"), b"top secret".to_vec());
    let img = Sentinel::new(outside.join("a.jpg"), jpeg(7));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let today = env.today.clone();
    let rows = [
        (today.as_str(), secret.path.to_str().unwrap().to_string()),
        (today.as_str(), "../../outside/a.jpg".to_string()),
        ("../..", "outside/a.jpg".to_string()),
        (today.as_str(), "sub/dir.jpg".to_string()),
    ];
    let l = env.pg();
    for (date, name) in &rows {
        l.pg.psql(&l.db, &format!(
            "INSERT INTO files(scope, folder, date, filename, path, size, mtime_ns, status, attempts,
                next_attempt_at, detected_at, updated_at, recorded_by)
             VALUES ({scope}, 'Sega_1', {date}, convert_to({name}, 'UTF8'), convert_to({name}, 'UTF8'),
                10, 1, 'pending', 0, now(), now(), now(), 'attacker')",
            scope = crate::pg::lit(&env.scope()),
            date = crate::pg::lit(date),
            name = crate::pg::lit(name),
        ));
    }
    wait_until("every hostile row refused", DEADLINE, || {
        let r = env.rows();
        r.len() == 4 && r.iter().all(|r| r.status == "failed")
    });
    for r in env.rows() {
        assert!(
            r.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("refused: ")),
            "{r:?}"
        );
    }
    assert_eq!(env.server.request_count(), 0);
    assert!(secret.untouched(&env) && img.untouched(&env));
    assert!(d.log_text().contains("nothing was opened"));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Review item 7: a date folder swapped for a symlink let a file outside the tree be sent
/// (only the last component was opened with O_NOFOLLOW).
fn a_date_folder_swapped_for_a_symlink_is_never_followed(backend: Backend) {
    let env = Env::with_backend("symlinked", backend);
    env.set("/watch/scan_interval_secs", json!(2));
    env.server.set_mode(s503());
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let real = jpeg(1);
    env.put("Sega_1", "x.jpg", &real);
    wait_until("x.jpg tried", DEADLINE, || env.server.request_count() >= 1);
    let date_dir = env.dir_of("Sega_1", &env.today);
    let outside = env.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let decoy = Sentinel::new(outside.join("x.jpg"), jpeg(666));
    let aside = env.dir.join("real-date-dir");
    std::fs::rename(&date_dir, &aside).unwrap();
    std::os::unix::fs::symlink(&outside, &date_dir).unwrap();
    env.server.set_mode(Mode::Ok);
    wait_until("the row to meet the symlink", DEADLINE, || {
        env.rows().iter().any(|r| {
            r.name() == "x.jpg"
                && r.status == "skipped"
                && r.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("symbolic link"))
        })
    });
    assert!(decoy.untouched(&env), "the file outside was opened or sent");
    // Put back, the real file is sent.
    std::fs::remove_file(&date_dir).unwrap();
    std::fs::rename(&aside, &date_dir).unwrap();
    wait_until("the real x.jpg", DEADLINE, || uploaded(&env, "x.jpg"));
    check_all_arrived(
        &env,
        &[("x.jpg".to_string(), sha256_hex(&real))]
            .into_iter()
            .collect(),
    );
    assert!(decoy.untouched(&env));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Part 2, item 1: one file the endpoint answers 500 for (and 200 for all others) declared
/// an outage after three quiet failures, and every probe picked that same file again.
fn a_poison_file_holds_no_other_back(backend: Backend) {
    let env = Env::with_backend("poison", backend);
    env.set("/upload/retry", json!({ "initial_secs": 1, "max_secs": 2 }));
    env.server.set_mode(Mode::Poison {
        needle: "poison".into(),
        code: 500,
    });
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    env.put("Sega_1", "poison.jpg", &jpeg(1));
    wait_until("the poison file to fail five times", DEADLINE, || {
        env.uploads_of(b"poison.jpg").len() >= 5
    });
    let mut written = Written::new();
    for i in 0..5 {
        let b = jpeg(20 + i);
        env.put("Sega_2", format!("good{i}.jpg"), &b);
        written.insert(format!("good{i}.jpg"), sha256_hex(&b));
    }
    wait_until("the good files", DEADLINE, || {
        env.count_status("uploaded") == 5
    });
    check_all_arrived(&env, &written);
    let log = d.log_text();
    assert!(!log.contains("is down"), "no outage from one file: {log}");
    assert!(
        log.contains("poison.jpg: 5 attempts failed in a row"),
        "the file that keeps failing is reported: {log}"
    );
    let c = env.run(&["check"]);
    assert!(!c.stdout.contains("endpoint down"), "{}", c.stdout);
    assert_eq!(env.row("poison.jpg").status, "pending", "still retried");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Part 2, item 2: a wall clock 200 days ahead for 15 s made the daily prune delete every
/// row, and every file was uploaded again once the clock came back.
#[test]
fn a_clock_jump_forward_prunes_nothing_and_sends_nothing_twice() {
    let env = Env::new("clock-forward");
    // Heartbeats (and the prune check) every 2 s.
    env.set("/database/lease_secs", json!(8));
    env.set("/watch/scan_interval_secs", json!(2));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let written = write_burst(&env, "f", 20, 0, Duration::ZERO);
    wait_until("the 20 files", DEADLINE, || {
        env.count_status("uploaded") == 20
    });
    env.step_clock(200 * 86_400);
    d.wait_log("the wall clock jumped by +");
    // A few heartbeats and rescans under the wrong date.
    let seen = d.log_text().matches("the wall clock jumped").count();
    std::thread::sleep(Duration::from_secs(6));
    env.step_clock(0);
    wait_until("the jump back", DEADLINE, || {
        d.log_text().matches("the wall clock jumped").count() > seen
    });
    // Two rescans after the return find every file known.
    let rescans = |d: &Daemon| d.log_text().matches("periodic scan").count();
    let after = rescans(&d);
    wait_until("two rescans", DEADLINE, || rescans(&d) >= after + 2);
    assert_eq!(env.rows().len(), 20, "nothing pruned");
    assert!(!d.log_text().contains("pruned"), "{}", d.log_text());
    assert_eq!(check_all_arrived(&env, &written), 0, "nothing sent twice");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Part 2, item 3: started with the clock 3 h ahead and stepped back by NTP, pending rows
/// kept their due times 3 h ahead and waited for the clock to catch up.
#[test]
fn a_clock_stepped_back_does_not_stall_retries() {
    let env = Env::new("clock-back");
    env.step_clock(3 * 3600);
    env.server.set_mode(s503());
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let written = write_burst(&env, "b", 6, 0, Duration::ZERO);
    wait_until("each file tried", DEADLINE, || {
        env.rows()
            .iter()
            .filter(|r| r.attempts > 0 || r.last_error.is_some())
            .count()
            == 6
    });
    env.step_clock(0);
    env.server.set_mode(Mode::Ok);
    wait_until("the files, well before 3 h", DEADLINE, || {
        env.count_status("uploaded") == 6
    });
    check_all_arrived(&env, &written);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Part 2, item 4: pending rows of a folder removed from watch.folders, and of an extension
/// removed from watch.extensions, were still opened and sent after SIGHUP.
fn narrowing_the_config_narrows_what_is_sent(backend: Backend) {
    let env = Env::with_backend("narrowed", backend);
    env.set("/watch/extensions", json!(["jpg", "png"]));
    env.server.set_mode(s503());
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    env.put("Sega_2", "secret_cam2.jpg", &jpeg(1));
    env.put("Sega_1", "pic.png", &images::png(8, 8, 2));
    let keep = jpeg(3);
    env.put("Sega_1", "keep.jpg", &keep);
    // Each tried once and answered 503 before the reload: the rows this test is about are
    // pending ones. A request already under way when the reload comes cannot be called
    // back (`Owner::on_control`), and would reach the endpoint once it answers 200.
    wait_until("all three tried and pending", DEADLINE, || {
        let rows = env.rows();
        rows.len() == 3
            && rows
                .iter()
                .all(|r| r.status == "pending" && r.last_error.is_some())
    });
    env.set("/watch/folders", json!(["Sega_1", "Sega_3"]));
    env.set("/watch/extensions", json!(["jpg"]));
    d.signal(libc::SIGHUP);
    d.wait_log("configuration reloaded");
    env.server.set_mode(Mode::Ok);
    wait_until("keep.jpg uploaded", DEADLINE, || uploaded(&env, "keep.jpg"));
    // In a shared ledger a folder this host no longer watches may be another host's: its
    // rows are left to them (never claimed here), not skipped.
    let skipped: &[&str] = match backend {
        Backend::Sqlite => &["secret_cam2.jpg", "pic.png"],
        Backend::Postgres => &["pic.png"],
    };
    wait_until("the narrowed-out rows skipped", DEADLINE, || {
        env.rows().iter().filter(|r| r.status == "skipped").count() == skipped.len()
    });
    if backend == Backend::Postgres {
        assert_eq!(env.row("secret_cam2.jpg").status, "pending");
    }
    for name in ["secret_cam2.jpg", "pic.png"] {
        assert!(
            env.successful_uploads()
                .iter()
                .all(|u| u.file.as_ref().unwrap().filename != name.as_bytes()),
            "{name} was sent after the reload"
        );
    }
    for name in skipped {
        let r = env.row(name);
        assert!(
            r.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("no longer watched: ")),
            "{r:?}"
        );
    }
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Part 2, item 5: an interim `100 Continue` (or 102, 103) before the final 200 was taken
/// for the answer: the delivered file was marked `failed` ("HTTP 100").
fn interim_answers_are_read_past_to_the_final_one(backend: Backend) {
    let env = Env::with_backend("interim", backend);
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    for (i, codes) in [vec![100], vec![102, 103], vec![100, 103]]
        .into_iter()
        .enumerate()
    {
        env.server.set_mode(Mode::Interim(codes));
        env.put("Sega_1", format!("i{i}.jpg"), &jpeg(i as u64));
        wait_until("the file uploaded", DEADLINE, || {
            uploaded(&env, &format!("i{i}.jpg"))
        });
    }
    let statuses: Vec<Option<i64>> = env.results().iter().map(|r| r.http_status).collect();
    assert_eq!(statuses, [Some(200), Some(200), Some(200)]);
    assert!(env.results().iter().all(|r| r.response_json.is_some()));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Part 2, item 6: a one-shot scan whose completion met a locked database never retried it
/// and never ended, holding the daemon's lock.
#[test]
fn a_scan_saves_its_results_after_a_lock_and_always_ends() {
    let env = Env::new("scan-locked");
    env.set("/upload/workers", json!(1));
    env.server.set_mode(Mode::Delay(Duration::from_secs(2)));
    // The database exists before the scan starts (the lock needs its tables).
    assert_eq!(env.run(&["scan"]).code, 0);
    let mut written = Written::new();
    for i in 0..3 {
        let b = jpeg(i);
        env.put("Sega_1", format!("s{i}.jpg"), &b);
        written.insert(format!("s{i}.jpg"), sha256_hex(&b));
    }
    let mut scan = env
        .cmd(&["scan"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the first upload in flight", DEADLINE, || {
        env.server.connection_count() >= 1
    });
    // Another process holds the write lock for 16 s: the first completion meets it.
    let w = env.sqlite_writer();
    w.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::sleep(Duration::from_secs(16));
    w.execute_batch("COMMIT").unwrap();
    drop(w);
    wait_until("the scan to end", DEADLINE, || {
        scan.try_wait().unwrap().is_some()
    });
    let o = env.capture(out(scan.wait_with_output().unwrap()));
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(env.count_status("uploaded"), 3);
    check_all_arrived(&env, &written);
    // The lock is free: the daemon can start.
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// The voluntary context switches (wake-ups) of the thread named `name`.
fn thread_wakeups(pid: i32, name: &str) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap();
            return status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    panic!("no {name} thread in {pid}")
}

/// The DB owner thread's wake-ups.
fn owner_wakeups(pid: i32) -> u64 {
    thread_wakeups(pid, "db")
}

/// Part 3, item 1: during an endpoint outage the owner woke about 800 times a second and
/// ran a claim each time. Now it sleeps until the next probe or due row: with the heartbeat
/// every 2 s of a test, well under 100 wake-ups in 10 s (main: thousands).
#[test]
fn the_owner_sleeps_through_an_outage() {
    let env = Env::new("outage-idle");
    env.set(
        "/upload/retry",
        json!({ "initial_secs": 5, "max_secs": 600 }),
    );
    env.server.set_mode(s503());
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    for i in 0..3 {
        env.put("Sega_1", format!("o{i}.jpg"), &jpeg(i));
    }
    d.wait_log("is down");
    // Past the first probes, into the steady outage.
    wait_until("a probe", DEADLINE, || env.server.request_count() >= 4);
    let before = owner_wakeups(d.pid());
    std::thread::sleep(Duration::from_secs(10));
    let woke = owner_wakeups(d.pid()) - before;
    eprintln!("owner wake-ups in 10 s of outage: {woke}");
    assert!(woke < 100, "the owner woke {woke} times in 10 s");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Issue 17 review: the deadlines of every connection are kept by one timer thread
/// (`http-deadline`, vendor/attohttpc patch 4), which lives as long as the daemon. Idle, it
/// must sleep until a connection is armed, not wake on a period: the idle CPU budget
/// (BENCHMARKS.md) has no room for a timer ticking. After three uploads whose deadlines
/// (1 s) have passed, it may wake once for a deadline already disarmed, no more.
#[test]
fn the_deadline_timer_sleeps_while_no_connection_is_open() {
    let env = Env::new("deadline-idle");
    env.set("/upload/timeout_secs", json!(1));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    for i in 0..3 {
        env.put("Sega_1", format!("i{i}.jpg"), &jpeg(i));
    }
    wait_until("three uploads", DEADLINE, || {
        (0..3).all(|i| uploaded(&env, &format!("i{i}.jpg")))
    });
    // Past the last connection's deadline.
    std::thread::sleep(Duration::from_secs(2));
    let before = thread_wakeups(d.pid(), "http-deadline");
    std::thread::sleep(Duration::from_secs(6));
    let woke = thread_wakeups(d.pid(), "http-deadline") - before;
    eprintln!("deadline timer wake-ups in 6 s idle: {woke}");
    assert!(
        woke <= 1,
        "the idle deadline timer woke {woke} times in 6 s"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Part 3, item 3: a file rewritten while it was sent got a 200 for torn bytes, and the
/// ledger kept no trace of that attempt ("changed" wrote no result row).
fn a_file_changed_while_it_is_sent_leaves_its_result(backend: Backend) {
    let env = Env::with_backend("changed-in-flight", backend);
    env.server.set_mode(Mode::SlowRead {
        bytes_per_sec: 64 * 1024,
    });
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let first = images::jpeg_of_size(256 * 1024, 1);
    let p = env.put("Sega_1", "moving.jpg", &first);
    wait_until("the upload under way", DEADLINE, || {
        env.server.connection_count() >= 1
    });
    let second = jpeg(2);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all(&second).unwrap();
        f.set_len(second.len() as u64).unwrap();
    }
    env.server.set_mode(Mode::Ok);
    wait_until("the new version uploaded", DEADLINE, || {
        env.successful_uploads()
            .iter()
            .any(|u| u.file.as_ref().unwrap().sha256 == sha256_hex(&second))
    });
    wait_until("its row uploaded", DEADLINE, || {
        uploaded(&env, "moving.jpg")
    });
    // The torn attempt ends after the new version's (it was slow): both are kept.
    wait_until("both attempts' results", DEADLINE, || {
        env.results().len() == 2
    });
    let mut outcomes: Vec<String> = env.results().iter().map(|r| r.outcome.clone()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["changed", "success"]);
    assert!(
        uploaded(&env, "moving.jpg"),
        "the torn attempt undoes nothing"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Part 3, item 4: a file that arrives by link() raises only IN_CREATE, which was not
/// watched: it waited for the minute rescan (here: an hour away).
#[test]
fn a_file_linked_into_a_date_folder_is_seen_at_once() {
    let env = Env::new("linked");
    env.set("/watch/scan_interval_secs", json!(3600));
    let mut d = env.start_daemon();
    d.wait_log("catch-up scan");
    let staging = env.dir.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let b = jpeg(5);
    std::fs::write(staging.join("linked.jpg"), &b).unwrap();
    std::fs::hard_link(
        staging.join("linked.jpg"),
        env.dir_of("Sega_1", &env.today).join("linked.jpg"),
    )
    .unwrap();
    wait_until("the linked file uploaded", DEADLINE, || {
        uploaded(&env, "linked.jpg")
    });
    check_all_arrived(
        &env,
        &[("linked.jpg".to_string(), sha256_hex(&b))]
            .into_iter()
            .collect(),
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Part 3, item 5: a watch the kernel refused (ENOSPC, the watch limit) was never tried
/// again until a reload, midnight or a new folder. The limit is lowered in a user namespace
/// of the daemon's own (never machine-wide), then raised.
#[test]
fn a_watch_refused_by_the_limit_is_tried_again() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a user namespace with its own inotify limit needs root here");
        return;
    }
    let env = Env::new("watch-limit");
    env.set("/watch/scan_interval_secs", json!(2));
    let limit = "/proc/sys/user/max_inotify_watches";
    let mut d = env.start_daemon_with(|c| {
        let program = c.get_program().to_owned();
        let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
        let mut w = std::process::Command::new("unshare");
        w.args(["-U", "--map-root-user", "sh", "-c"])
            .arg(format!("echo 4 > {limit} && exec \"$0\" \"$@\""))
            .arg(program)
            .args(args);
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => w.env(k, v),
                None => w.env_remove(k),
            };
        }
        *c = w;
    });
    d.wait_log("inotify watch limit reached");
    // The root and the folders come first; some date folders are left unwatched.
    let mut v = serde_json::Value::Null;
    wait_until("status to count them", DEADLINE, || {
        let o = env.run(&["status", "--json"]);
        v = serde_json::from_str(&o.stdout).unwrap_or_default();
        v["watch"]["unwatched_dirs"].as_u64().is_some_and(|n| n > 0)
    });
    eprintln!("unwatched: {}", v["watch"]["unwatched_dirs"]);
    let o = std::process::Command::new("nsenter")
        .args([
            "-t",
            &d.pid().to_string(),
            "-U",
            "--preserve-credentials",
            "sh",
            "-c",
        ])
        .arg(format!("echo 1000 > {limit}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d.wait_log("every directory is watched again");
    wait_until("status to say so", DEADLINE, || {
        let o = env.run(&["status", "--json"]);
        serde_json::from_str::<serde_json::Value>(&o.stdout)
            .is_ok_and(|v| v["watch"]["unwatched_dirs"] == json!(0))
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Part 3, item 2: the `-wal` deleted under the running daemon (a clean-up script) went
/// unnoticed; after a crash the database had no tables, the restart initialised it without
/// a word, and every file was sent again.
#[test]
fn a_deleted_wal_is_noticed_and_never_a_silent_fresh_start() {
    let env = Env::new("wal-deleted");
    env.set("/database/lease_secs", json!(8));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let written = write_burst(&env, "w", 5, 0, Duration::ZERO);
    wait_until("the files", DEADLINE, || env.count_status("uploaded") == 5);
    std::fs::remove_file(env.db.with_extension("db-wal")).unwrap();
    assert_eq!(d.wait_exit(DEADLINE), 1, "it stops, loudly");
    assert!(
        d.log_text().contains("-wal was deleted"),
        "{}",
        d.log_text()
    );
    // What the lost WAL held was saved: the restart knows every file.
    let mut d = env.start_daemon();
    d.wait_log("catch-up scan");
    wait_until("a rescan to compare", DEADLINE, || {
        d.log_text().contains("rescan:")
    });
    assert_eq!(env.count_status("uploaded"), 5);
    assert_eq!(check_all_arrived(&env, &written), 0, "nothing sent twice");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    // A database that lost its schema altogether is refused, not started afresh.
    for ext in ["db", "db-wal", "db-shm"] {
        let _ = std::fs::remove_file(env.db.with_extension(ext));
    }
    std::fs::write(&env.db, b"").unwrap();
    std::fs::set_permissions(&env.db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = env.run(&["run"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("Not starting afresh"), "{}", o.stderr);
    assert_eq!(env.server.request_count(), 5);
}

/// Review item 5: after an inotify queue overflow only a rescan ran; a date folder created
/// while the events were lost stayed unwatched until midnight or a reload (its files were
/// found by the minute rescan only: here an hour away).
#[test]
fn an_overflow_places_the_watches_again() {
    let env = Env::new("overflow-watches");
    env.set("/watch/scan_interval_secs", json!(3600));
    let mut d = env.start_daemon();
    d.wait_log("catch-up scan");
    d.signal(libc::SIGSTOP);
    // Noise first (not candidates, but events all the same), past the kernel's queue
    // (max_queued_events, 16,384 by default), then the new date folder, whose event is
    // lost.
    let queue: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16_384);
    let noise = env.dir_of("Sega_2", &env.today);
    for i in 0..queue + 1000 {
        std::fs::write(noise.join(format!("noise{i}.txt")), b"x").unwrap();
    }
    let tomorrow = utc_date(1);
    env.dir_of("Sega_1", &tomorrow);
    d.signal(libc::SIGCONT);
    d.wait_log("inotify queue overflowed");
    wait_until("the rescan after the overflow", DEADLINE, || {
        d.log_text().contains("overflow scan")
    });
    let b = jpeg(3);
    env.put_in("Sega_1", &tomorrow, "late.jpg", &b);
    wait_until("late.jpg seen by its watch", DEADLINE, || {
        uploaded(&env, "late.jpg")
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Review item 4: with `max_kib_s` below `workers × min_rate_kib_s` the limiter made
/// requests wait inside the body while the deadline assumed `min_rate_kib_s`: a healthy
/// endpoint got "broken pipe" and was declared down.
#[test]
fn a_shared_rate_limit_never_declares_a_false_outage() {
    let env = Env::new("rate-limit");
    env.set("/upload/workers", json!(4));
    env.set("/upload/max_kib_s", json!(8));
    env.set("/upload/min_rate_kib_s", json!(8));
    env.set("/upload/timeout_secs", json!(2));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let mut written = Written::new();
    for i in 0..4 {
        let b = images::jpeg_of_size(48 * 1024, 40 + i);
        env.put(&format!("Sega_{}", i % 3 + 1), format!("r{i}.jpg"), &b);
        written.insert(format!("r{i}.jpg"), sha256_hex(&b));
    }
    wait_until("the four files, at 8 KiB/s in all", DEADLINE, || {
        env.count_status("uploaded") == 4
    });
    assert_eq!(check_all_arrived(&env, &written), 0);
    assert_eq!(env.server.request_count(), 4, "no attempt was cut off");
    let log = d.log_text();
    assert!(!log.contains("is down"), "{log}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// DESIGN §10: nothing below `watch.root` is reached through a link, the folder level
/// included: a camera folder replaced by a symlink to a tree elsewhere is neither watched
/// nor listed, and nothing in it is read.
#[test]
fn a_folder_under_the_root_that_is_a_symlink_is_not_followed() {
    let env = Env::new("folder-link");
    env.set("/watch/scan_interval_secs", json!(2));
    let elsewhere = env.dir.join("elsewhere");
    let dated = elsewhere.join(&env.today);
    std::fs::create_dir_all(&dated).unwrap();
    let decoy = Sentinel::new(dated.join("there.jpg"), jpeg(77));
    std::fs::remove_dir_all(env.root.join("Sega_3")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.root.join("Sega_3")).unwrap();
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    env.put("Sega_1", "here.jpg", &jpeg(1));
    wait_until("here.jpg", DEADLINE, || uploaded(&env, "here.jpg"));
    // Two rescans pass over the linked folder.
    let scans = |d: &Daemon| d.log_text().matches("periodic scan").count();
    wait_until("two rescans", DEADLINE, || scans(&d) >= 2);
    assert!(decoy.untouched(&env), "the linked folder was followed");
    assert!(env.rows().iter().all(|r| r.name() != "there.jpg"));
    assert!(
        d.log_text().contains("is a symbolic link"),
        "{}",
        d.log_text()
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// The deadline of a small file's job with `connect_timeout_secs` and `timeout_secs` 1
/// (src/upload.rs `job_limit`: connect + timeout + size ÷ min rate + timeout + a 30 s margin).
const HUNG_JOB_LIMIT: Duration = Duration::from_secs(33);

/// A daemon whose `watch.root` is a FUSE filesystem (tests' `sega_testsrv::fuse`) holding
/// `Sega_1/<today>/ok.jpg` and `hang.jpg`, where no READ of hang.jpg is ever answered: a
/// network mount whose server hung, as the daemon's worker meets it, while listing and lstat
/// (the scanner) still answer. Mounted in a private mount namespace of the daemon's own, so
/// the machine never sees it and it goes with the daemon. A real NOTIFY_SOCKET and a 2 s
/// watchdog (a ping a second while healthy).
///
/// FUSE gives no inotify events: the scans find the files. Fields drop in order: the daemon
/// first (SIGKILL, which a held READ gives way to), the filesystem (answers whatever is
/// still held), the tree last.
struct HungMount {
    d: Daemon,
    n: Notify,
    fs: sega_testsrv::fuse::HangingFs,
    written: Written,
    env: Env,
}

impl HungMount {
    /// None when FUSE cannot be mounted here (not root, no /dev/fuse): "skipped: …" on
    /// stderr. Under CI=true that is a failure: CI runs as root on a machine with FUSE, and
    /// the suite must not pass by skipping this.
    fn start(name: &str, workers: usize) -> Option<HungMount> {
        let env = Env::new(name);
        let mnt = env.dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        if let Err(why) = sega_testsrv::fuse::check(&mnt) {
            if crate::pg::ci() {
                panic!("CI=true but {why} (the hung-mount tests need root and /dev/fuse)");
            }
            eprintln!("skipped: {why}");
            return None;
        }
        let dir = format!("Sega_1/{}", env.today);
        let (ok, hang) = (format!("{dir}/ok.jpg"), format!("{dir}/hang.jpg"));
        let (ok_bytes, hang_bytes) = (jpeg(1), jpeg(2));
        let fs = sega_testsrv::fuse::HangingFs::new(
            &[(ok.as_str(), ok_bytes.as_slice()), (&hang, &hang_bytes)],
            &[&hang],
        )
        .unwrap();
        env.set("/watch/root", json!(mnt));
        // And a local folder, by its absolute path, for files that arrive meanwhile.
        env.set("/watch/folders", json!(["Sega_1", env.root.join("Sega_2")]));
        env.set("/watch/scan_interval_secs", json!(2));
        env.set("/upload/workers", json!(workers));
        env.set("/upload/connect_timeout_secs", json!(1));
        env.set("/upload/timeout_secs", json!(1));
        let mut n = Notify::new(&env);
        let sock = n.path.clone();
        let d = env.start_daemon_with(|c| {
            c.env("NOTIFY_SOCKET", &sock)
                .env("WATCHDOG_USEC", "2000000");
            fs.mount_for(c, &mnt);
        });
        n.wait_for("READY=1", 0);
        let written = [("ok.jpg", &ok_bytes), ("hang.jpg", &hang_bytes)]
            .into_iter()
            .map(|(name, b)| (name.to_string(), sha256_hex(b)))
            .collect();
        Some(HungMount {
            d,
            n,
            fs,
            written,
            env,
        })
    }

    /// Waits until a worker is blocked in hang.jpg's READ; when that was.
    fn wait_stuck(&self) -> Instant {
        wait_until("a worker blocked reading hang.jpg", DEADLINE, || {
            self.fs.held() == 1
        });
        Instant::now()
    }

    /// Waits for the WARN that names hang.jpg's job as past its deadline (its job began
    /// before `stuck`), reading the pings meanwhile; when it came.
    fn wait_overdue(&mut self, stuck: Instant) -> Instant {
        let end = stuck + HUNG_JOB_LIMIT + Duration::from_secs(20);
        loop {
            self.n.pump();
            let warned = self
                .d
                .log_text()
                .lines()
                .any(|l| l.contains("past its deadline") && l.contains("hang.jpg"));
            if warned {
                return Instant::now();
            }
            let now = Instant::now();
            if now > end {
                let recent = self.n.pings_between(now - Duration::from_secs(5), now);
                panic!(
                    "{:?} after a worker blocked reading hang.jpg (its job's limit: {HUNG_JOB_LIMIT:?}) \
                     no WARN names it, and the watchdog is still fed: {} WATCHDOG=1 in the last 5 s",
                    now - stuck,
                    recent.len()
                );
            }
        }
    }

    /// The mount answers again: the held READ fails (EIO), the retry sends hang.jpg, and
    /// every file arrives; then a clean stop.
    fn recover_and_stop(mut self) {
        self.fs.release();
        wait_until("hang.jpg uploaded once readable", DEADLINE, || {
            uploaded(&self.env, "ok.jpg") && uploaded(&self.env, "hang.jpg")
        });
        check_all_arrived(&self.env, &self.written);
        self.d.signal(libc::SIGTERM);
        assert_eq!(self.d.wait_exit(DEADLINE), 0);
    }
}

/// Trust, the workers under the watchdog: a worker blocked reading a file on a hung
/// NFS/CIFS/FUSE mount stayed in flight forever while the watchdog kept being fed, so
/// systemd never restarted the daemon. Now the job past its deadline is logged with its file,
/// and with every worker stuck the pings stop.
#[test]
fn a_worker_stuck_on_a_hung_mount_stops_the_watchdog() {
    let Some(mut h) = HungMount::start("hung-mount", 1) else {
        return;
    };
    let stuck = h.wait_stuck();
    let warned = h.wait_overdue(stuck);
    // Within its deadline, a job that takes long stops nothing.
    let fed = h.n.pings_between(stuck, warned).len();
    eprintln!(
        "hang.jpg's job reported past its deadline {:?} after its READ hung; {fed} pings until then",
        warned - stuck
    );
    assert!(
        fed >= 3,
        "only {fed} pings while the job was within its deadline"
    );
    h.d.wait_log("the upload workers (every one is stuck)");
    // From then on, not one ping: systemd would restart the daemon.
    let pings = h.n.pings_in_next(Duration::from_secs(5));
    assert_eq!(pings, 0, "pings went on with the only worker stuck");
    assert_eq!(h.fs.held(), 1, "still stuck");
    let from = h.n.got.len();
    h.fs.release();
    h.n.wait_for("WATCHDOG=1", from);
    h.recover_and_stop();
}

/// The same hung mount with two workers: one stuck past its deadline is logged, but the
/// other still uploads, so the daemon is not restarted for it: the pings go on.
#[test]
fn one_worker_stuck_on_a_hung_mount_of_two_keeps_the_watchdog_fed() {
    let Some(mut h) = HungMount::start("hung-mount-two", 2) else {
        return;
    };
    let stuck = h.wait_stuck();
    wait_until("ok.jpg uploaded by the other worker", DEADLINE, || {
        uploaded(&h.env, "ok.jpg")
    });
    let warned = h.wait_overdue(stuck);
    eprintln!(
        "hang.jpg's job reported past its deadline {:?} after its READ hung",
        warned - stuck
    );
    // A ping a second: at least two in 6 s whatever the load.
    let pings = h.n.pings_in_next(Duration::from_secs(6));
    assert!(pings >= 2, "{pings} pings in 6 s with a worker free");
    assert_eq!(h.fs.held(), 1, "still stuck");
    // An endpoint failure now sends the next attempts one at a time: the stuck job must not
    // count as the one out (review finding: nothing more was sent until it came back).
    h.env.server.set_mode(Mode::Status {
        code: 503,
        fraction: 1.0,
    });
    h.env.put("Sega_2", "during.jpg", &jpeg(30));
    wait_until("during.jpg refused once", DEADLINE, || {
        !h.env.uploads_of(b"during.jpg").is_empty()
    });
    h.env.server.set_mode(Mode::Ok);
    for i in 0..3 {
        h.env.put("Sega_2", format!("after{i}.jpg"), &jpeg(31 + i));
    }
    wait_until(
        "the later files, with a worker still stuck",
        DEADLINE,
        || {
            (0..3).all(|i| uploaded(&h.env, &format!("after{i}.jpg")))
                && uploaded(&h.env, "during.jpg")
        },
    );
    assert_eq!(h.fs.held(), 1, "still stuck");
    let log = h.d.log_text();
    assert!(!log.contains("every one is stuck"), "{log}");
    h.recover_and_stop();
}

/// Adversarial review: with the lock file removed under a running daemon, a second daemon
/// started on the same database and sent again what the first had in flight.
#[test]
fn a_removed_lock_file_stops_the_daemon() {
    let env = Env::new("lock-removed");
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    std::fs::remove_file(env.db.with_extension("db.lock")).unwrap();
    assert_eq!(d.wait_exit(DEADLINE), 1, "it stops, loudly");
    assert!(d
        .log_text()
        .contains("was removed while the daemon held it"));
    // Started again (as systemd would), it takes a new lock and runs.
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    env.put("Sega_1", "after.jpg", &jpeg(1));
    wait_until("after.jpg", DEADLINE, || uploaded(&env, "after.jpg"));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}
