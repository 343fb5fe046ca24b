//! The fault suite: nothing is lost whatever happens to the process, the network, the
//! endpoint or the disk. Each scenario is bounded in time and deterministic on a shared
//! 2-core machine: random moments come from a logged seed, and assertions are bounds that
//! jitter cannot break. Figures are printed (`cargo test -- --nocapture`) for the record in
//! docs/RELIABILITY.md.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;
use serde_json::json;

both_backends!(
    crash_loop_ten_kills_during_a_2000_file_burst,
    a_sixty_second_outage_while_files_keep_arriving,
    overflow_tens_of_thousands_of_files_while_stopped,
    an_unreadable_image_waits_and_goes_once_readable,
    silent_trickling_and_huge_answers_free_the_worker,
    status_counts_agree_with_the_rows_after_kills,
);

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(16, 16, seed)
}

fn crash_loop_ten_kills_during_a_2000_file_burst(backend: Backend) {
    let env = Env::with_backend("crashloop", backend);
    env.set("/upload/workers", json!(4));
    env.server.set_mode(Mode::Delay(Duration::from_millis(2)));
    let mut rng = Rng::seeded("crash loop");
    let env_ref = &env;
    let written = std::thread::scope(|s| {
        let writer =
            s.spawn(move || write_burst(env_ref, "c", 2000, 100, Duration::from_millis(150)));
        let mut kills = Vec::new();
        for round in 0..10 {
            let mut d = env.start_daemon();
            d.wait_log("ready:");
            std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
            d.kill();
            // In flight at the kill: the rows the daemon had claimed (`uploading`). Only
            // these can be sent again; the endpoint may have received them whole.
            let in_flight = env.count_status("uploading");
            kills.push(in_flight);
            eprintln!("kill {}: {} upload(s) in flight", round + 1, in_flight);
        }
        (writer.join().unwrap(), kills)
    });
    let (written, kills) = written;
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    wait_until(
        "all 2000 files uploaded after 10 kills",
        Duration::from_secs(180),
        || env.count_status("uploaded") == 2000,
    );
    let dupes = check_all_arrived(&env, &written);
    eprintln!(
        "crash loop: {dupes} duplicate upload(s) over 10 kills (in flight at the kills: {kills:?})"
    );
    assert!(
        dupes <= kills.iter().sum::<usize>(),
        "duplicates {dupes} exceed the in-flight uploads at the kills"
    );
    assert_eq!(env.count_status("uploading"), 0, "no row stays uploading");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

fn a_sixty_second_outage_while_files_keep_arriving(backend: Backend) {
    let env = Env::with_backend("outage60", backend);
    env.set("/upload/workers", json!(4));
    env.set(
        "/upload/retry",
        json!({ "initial_secs": 5, "max_secs": 10 }),
    );
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let before = write_burst(&env, "pre", 30, 0, Duration::ZERO);
    wait_until("the first files", DEADLINE, || {
        env.count_status("uploaded") == 30
    });
    let results_before = env.results().len();
    env.server.set_mode(Mode::Refuse);
    let t0 = Instant::now();
    let mut written = before;
    for wave in 0..6 {
        written.extend(write_burst(
            &env,
            &format!("w{wave}_"),
            20,
            0,
            Duration::ZERO,
        ));
        std::thread::sleep(
            Duration::from_secs(10)
                .saturating_sub(t0.elapsed().saturating_sub(Duration::from_secs(10 * wave))),
        );
    }
    while t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = env.results().len() - results_before;
    let outage = t0.elapsed();
    env.server.set_mode(Mode::Ok);
    let t1 = Instant::now();
    wait_until("the backlog to drain", Duration::from_secs(120), || {
        env.count_status("uploaded") == written.len()
    });
    let drained = t1.elapsed();
    // (outage / probe interval) + workers, plus the two one-at-a-time attempts that confirm
    // the outage: probes are at least initial_secs = 5 s apart.
    let bound = (outage.as_secs() / 5) as usize + 4 + 2;
    eprintln!("outage: {during} request(s) during {outage:?} for 120 arriving files (bound {bound}); backlog drained {drained:?} after recovery");
    assert!(
        during <= bound,
        "{during} requests during the outage, bound {bound}"
    );
    assert_eq!(
        check_all_arrived(&env, &written),
        0,
        "no duplicates from an outage"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

fn overflow_tens_of_thousands_of_files_while_stopped(backend: Backend) {
    let env = Env::with_backend("overflow", backend);
    env.set("/upload/workers", json!(4));
    let max_queued: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16384);
    let n = (max_queued + 2000).max(20_000);
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    d.signal(libc::SIGSTOP);
    let dir = env.dir_of("Sega_2", &env.today);
    let body = jpeg(7);
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i:06}.jpg")), &body).unwrap();
    }
    d.signal(libc::SIGCONT);
    d.wait_log("inotify queue overflowed");
    let t0 = Instant::now();
    // A deadline on the whole drain would be a throughput assertion, which a loaded machine
    // breaks (under two CPU hogs and parallel builds PostgreSQL managed ~47 files/s): what
    // must hold is that the daemon keeps making progress until every file is sent.
    wait_progressing(
        &format!("all {n} files uploaded"),
        Duration::from_secs(60),
        n,
        || env.count_status("uploaded"),
    );
    eprintln!(
        "overflow: {n} files (queue limit {max_queued}) all uploaded {:?} after SIGCONT",
        t0.elapsed()
    );
    assert_eq!(env.successful_uploads().len(), n, "each exactly once");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Waits until `count()` reaches `target`, failing when it has not moved for `stall` (or
/// after 20 minutes in all, so that a daemon that crawls cannot hang the suite).
fn wait_progressing(what: &str, stall: Duration, target: usize, mut count: impl FnMut() -> usize) {
    let start = Instant::now();
    let (mut last, mut moved) = (count(), Instant::now());
    while last != target {
        assert!(
            moved.elapsed() < stall,
            "waiting for {what}: no progress for {stall:?} at {last} of {target}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(1200),
            "waiting for {what}: {last} of {target} after 20 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
        let now = count();
        if now != last {
            (last, moved) = (now, Instant::now());
        }
    }
}

#[test]
fn a_write_lock_held_past_the_busy_timeout() {
    let env = Env::new("dblock");
    env.set("/watch/scan_interval_secs", json!(2));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let conn = rusqlite::Connection::open(&env.db).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let written = write_burst(&env, "l", 20, 0, Duration::ZERO);
    d.wait_log("database trouble");
    std::thread::sleep(Duration::from_secs(3));
    conn.execute_batch("COMMIT").unwrap();
    drop(conn);
    d.wait_log("database is writable again");
    wait_until("every file after the lock", DEADLINE, || {
        env.count_status("uploaded") == 20
    });
    check_all_arrived(&env, &written);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// The daemon as `nobody`, with its state directory on a small tmpfs of its own mount
/// namespace (`unshare -m`): the test can fill it or make it read-only without touching the
/// machine. Call `open_to_nobody` first.
fn daemon_on_tmpfs(env: &Env, size: &str) -> Daemon {
    let state = env.db.parent().unwrap().to_path_buf();
    // The paths travel as arguments ("$1"), never inside the script: a checkout or temp dir
    // may have spaces in its name.
    let script = "mount -t tmpfs -o size=\"$1\",mode=0777 sega-test \"$2\" && shift 2 && \
                  exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"";
    env.start_daemon_wrapped(|c| {
        let mut wrapped = Command::new("unshare");
        wrapped
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                size,
            ])
            .arg(&state)
            .arg(c.get_program())
            .args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        wrapped
    })
}

/// Runs `args` inside the daemon's mount namespace.
fn in_namespace(d: &Daemon, args: &[&std::ffi::OsStr]) -> Out {
    out(Command::new("nsenter")
        .args(["-t", &d.pid().to_string(), "-m", "--"])
        .args(args)
        .output()
        .unwrap())
}

#[test]
fn a_full_disk_under_the_database() {
    // Mount namespaces and another user: root only (open_to_nobody says so otherwise).
    let env = Env::new("diskfull");
    env.set("/watch/scan_interval_secs", json!(2));
    if !env.open_to_nobody() {
        return;
    }
    let mut d = daemon_on_tmpfs(&env, "2m");
    // stderr is redirected by start_daemon_with; the log file is in env.dir (host side).
    d.wait_log("ready:");
    let state = env.db.parent().unwrap().to_path_buf();
    let filler = state.join("filler");
    let first = write_burst(&env, "a", 10, 0, Duration::ZERO);
    wait_until("the first files", DEADLINE, || {
        env.successful_uploads().len() >= 10
    });

    // Fill the disk: writes fail (SQLITE_FULL). Files keep arriving.
    let of = format!("of={}", filler.display());
    let o = in_namespace(
        &d,
        &["dd", "if=/dev/zero", &of, "bs=64k", "count=100"].map(std::ffi::OsStr::new),
    );
    eprintln!("filled: {}", o.stderr.trim());
    let during_full = write_burst(&env, "f", 10, 0, Duration::ZERO);
    d.wait_log("database trouble");
    in_namespace(&d, &["rm".as_ref(), "-f".as_ref(), filler.as_os_str()]);
    d.wait_log("database is writable again");
    wait_until(
        "the files that came while the disk was full",
        DEADLINE,
        || env.successful_uploads().len() >= 20,
    );

    let mut all = first;
    all.extend(during_full);
    check_all_arrived(&env, &all);
    let status = || {
        let st = in_namespace(
            &d,
            &[
                BIN.as_ref(),
                "-c".as_ref(),
                env.config_path.as_os_str(),
                "status".as_ref(),
                "--json".as_ref(),
            ],
        );
        serde_json::from_str::<serde_json::Value>(&st.stdout)
            .unwrap_or_else(|_| panic!("{}\n{}", st.stdout, st.stderr))
    };
    // The endpoint has the last files a moment before their results are committed (the
    // group commit's few ms): the ledger may still say `uploading` just after.
    let mut v = serde_json::Value::Null;
    wait_until("the last results committed", DEADLINE, || {
        v = status();
        v["totals"]["uploading"] == json!(0)
    });
    assert_eq!(v["totals"]["uploaded"], json!(20), "{v}");
    assert_eq!(v["totals"]["uploading"], json!(0));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Makes the test tree usable by `nobody` (the daemon's user in these tests), its state
/// directory writable; false when the test cannot run here (the reason printed).
fn open_up(env: &Env) -> bool {
    if !env.open_to_nobody() {
        return false;
    }
    std::fs::set_permissions(
        env.db.parent().unwrap(),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    true
}

#[test]
fn a_read_only_database_file_stops_the_start_clearly_and_nothing_is_lost() {
    let env = Env::new("readonly");
    if !open_up(&env) {
        return;
    }
    let mut d = env.start_daemon_as_nobody();
    d.wait_log("ready:");
    let mut written = write_burst(&env, "a", 5, 0, Duration::ZERO);
    wait_until("the first files", DEADLINE, || {
        env.successful_uploads().len() == 5
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    // Someone makes the database read-only; files keep arriving meanwhile.
    std::fs::set_permissions(&env.db, std::fs::Permissions::from_mode(0o444)).unwrap();
    written.extend(write_burst(&env, "b", 5, 0, Duration::ZERO));
    let o = out(env.nobody_cmd(&["run"]).output().unwrap());
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("is not writable by this user"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains(&env.db.display().to_string()),
        "names the file: {}",
        o.stderr
    );
    // Fixed: the next start finds what arrived in between.
    std::fs::set_permissions(&env.db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut d = env.start_daemon_as_nobody();
    wait_until(
        "the files that arrived while it could not start",
        DEADLINE,
        || env.successful_uploads().len() == 10,
    );
    check_all_arrived(&env, &written);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

#[test]
fn a_corrupt_or_unwritable_database_is_a_clear_error_never_a_fresh_start() {
    let env = Env::new("corrupt");
    env.put("Sega_1", "a.jpg", &jpeg(1));
    assert_eq!(env.run(&["scan"]).code, 0);
    // The daemon is stopped; its file gets overwritten (a bad copy, a disk error). The WAL
    // would still hold the newest pages, so it goes too.
    let wal = env.db.with_extension("db-wal");
    let _ = std::fs::remove_file(&wal);
    let _ = std::fs::remove_file(env.db.with_extension("db-shm"));
    let good = std::fs::read(&env.db).unwrap();
    let bad: Vec<u8> = (0..good.len().max(8192))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(&env.db, &bad).unwrap();
    let o = env.run(&["run"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("corrupt or not an SQLite database"),
        "{}",
        o.stderr
    );
    assert_eq!(
        std::fs::read(&env.db).unwrap(),
        bad,
        "the corrupt file is left as it was"
    );
    assert_eq!(env.server.request_count(), 1, "nothing was sent again");

    if env.open_to_nobody() {
        // A database the daemon's user cannot write: exit 1 naming the file.
        std::fs::write(&env.db, &good).unwrap();
        std::fs::set_permissions(
            env.db.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::set_permissions(&env.db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = out(env.nobody_cmd(&["run"]).output().unwrap());
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(
            o.stderr
                .contains(&env.db.parent().unwrap().display().to_string()),
            "{}",
            o.stderr
        );
    }
}

fn an_unreadable_image_waits_and_goes_once_readable(backend: Backend) {
    let env = Env::with_backend("unreadable", backend);
    if !open_up(&env) {
        return;
    }
    for f in ["Sega_1", "Sega_2", "Sega_3"] {
        std::fs::set_permissions(env.root.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            env.dir_of(f, &env.today),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let mut d = env.start_daemon_as_nobody();
    d.wait_log("ready:");
    let b = jpeg(1);
    // Created unreadable (mode 000 from the first byte): written as root and locked only
    // after the close, a fast daemon could read it in between.
    let p = env.dir_of("Sega_1", &env.today).join("locked.jpg");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&p)
            .unwrap();
        f.write_all(&b).unwrap();
    }
    wait_until("the unreadable file to be tried", DEADLINE, || {
        env.rows().iter().any(|r| {
            r.name() == "locked.jpg"
                && r.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("permission denied"))
        })
    });
    let row = env.row("locked.jpg");
    assert_eq!(row.status, "pending");
    assert_eq!(env.server.request_count(), 0);
    env.set("/upload/retry/initial_secs", json!(1));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    wait_until("the file once readable", DEADLINE, || {
        !env.uploads_of(b"locked.jpg").is_empty()
    });
    assert!(
        d.log_text().contains("permissions changed"),
        "IN_ATTRIB re-checked it at once"
    );
    check_all_arrived(
        &env,
        &[("locked.jpg".to_string(), sha256_hex(&b))]
            .into_iter()
            .collect(),
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

fn silent_trickling_and_huge_answers_free_the_worker(backend: Backend) {
    let env = Env::with_backend("slowserver", backend);
    env.set("/upload/workers", json!(1));
    env.set("/upload/timeout_secs", json!(1));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    // Never answers: the read timeout frees the only worker for the next file.
    env.server.set_mode(Mode::Hang);
    env.put("Sega_1", "hang.jpg", &jpeg(1));
    wait_until("the hung request", DEADLINE, || {
        env.server.request_count() >= 1
    });
    env.server
        .set_mode(Mode::TrickleResponse { bytes_per_sec: 200 });
    env.put("Sega_1", "trickle.jpg", &jpeg(2));
    wait_until("the trickled request", DEADLINE, || {
        !env.uploads_of(b"trickle.jpg").is_empty()
    });
    env.server.set_mode(Mode::HugeBody { bytes: 5_000_000 });
    env.put("Sega_1", "huge.jpg", &jpeg(3));
    wait_until("huge.jpg uploaded", DEADLINE, || {
        env.rows()
            .iter()
            .any(|r| r.name() == "huge.jpg" && r.status == "uploaded")
    });
    env.server.set_mode(Mode::Ok);
    wait_until("hang.jpg retried and uploaded", DEADLINE, || {
        env.rows()
            .iter()
            .any(|r| r.name() == "hang.jpg" && r.status == "uploaded")
    });
    wait_until("trickle.jpg settled", DEADLINE, || {
        env.rows()
            .iter()
            .any(|r| r.name() == "trickle.jpg" && r.status == "uploaded")
    });
    let (len, json_null): (i64, bool) = if env.is_pg() {
        let v = env.sql(&format!(
            "SELECT octet_length(r.response_body) AS len, r.response_json IS NULL AS json_null \
             FROM upload_results r JOIN files f ON f.id = r.file_id \
             WHERE f.scope = '{}' AND f.filename = convert_to('huge.jpg', 'UTF8') \
             AND r.outcome = 'success'",
            env.scope()
        ));
        assert_eq!(v.len(), 1, "{v:?}");
        (
            v[0]["len"].as_i64().unwrap(),
            v[0]["json_null"].as_bool().unwrap(),
        )
    } else {
        let c = rusqlite::Connection::open(&env.db).unwrap();
        c.query_row(
            "SELECT length(r.response_body), r.response_json IS NULL FROM upload_results r JOIN files f ON f.id = r.file_id
             WHERE f.filename = 'huge.jpg' AND r.outcome = 'success'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    assert_eq!(len, 64 * 1024, "the 5 MB answer is stored capped at 64 KiB");
    assert!(json_null, "a capped body that no longer parses is not JSON");
    let hwm = vm_hwm_kib(d.pid());
    eprintln!("slow/huge answers: daemon peak RSS {} KiB", hwm);
    assert!(
        hwm > 0 && hwm < 32 * 1024,
        "memory stays flat: VmHWM {hwm} KiB"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// `status --json`'s counts per folder and status, against the rows themselves.
fn assert_status_counts_are_the_rows(env: &Env, when: &str) {
    let o = env.run(&["status", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let s: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let mut want: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for r in env.rows() {
        *want.entry((r.folder, r.status)).or_default() += 1;
    }
    for folder in ["Sega_1", "Sega_2"] {
        for status in ["pending", "uploading", "uploaded", "failed", "skipped"] {
            let rows = want
                .get(&(folder.to_owned(), status.to_owned()))
                .copied()
                .unwrap_or(0);
            assert_eq!(
                s["folders"][folder][status],
                json!(rows),
                "{folder} {status} {when}: {s}"
            );
        }
    }
}

/// The counts `status` shows come from counters the ledger keeps in the transaction of each
/// change, not from a count of the rows: daemons killed (SIGKILL) in the middle of uploads
/// leave them equal to the rows, and so does the start that resets their claims.
fn status_counts_agree_with_the_rows_after_kills(backend: Backend) {
    let env = Env::with_backend("countkills", backend);
    env.set("/upload/workers", json!(4));
    env.server.set_mode(Mode::Delay(Duration::from_millis(20)));
    for i in 0..150 {
        env.put("Sega_1", format!("k{i:03}.jpg"), &jpeg(i));
    }
    for i in 0..10 {
        env.put("Sega_2", format!("t{i}.jpg"), b"not an image");
    }
    let mut rng = Rng::seeded("status counts after kills");
    for round in 0..3 {
        let mut d = env.start_daemon();
        d.wait_log("ready:");
        std::thread::sleep(Duration::from_millis(200 + rng.below(300)));
        d.kill();
        assert_status_counts_are_the_rows(&env, &format!("after kill {}", round + 1));
    }
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    // Then nothing changes: `status` and the rows are read at different moments.
    wait_until("every file uploaded or skipped", DEADLINE, || {
        env.count_status("uploaded") == 150 && env.count_status("skipped") == 10
    });
    assert_status_counts_are_the_rows(&env, "at the end");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}
