//! The daemon (`run`) end to end: live detection, catch-up, late folders and roots, midnight,
//! retries and outages, hostile entries, shutdown. (Crashes and overflow: faults.rs.)

use std::time::Duration;

use crate::util::*;
use serde_json::json;

both_backends!(
    live_files_catch_up_and_new_folders,
    a_folder_and_a_root_that_appear_after_start,
    the_window_moves_at_midnight_without_a_restart,
    transient_failures_are_retried_until_uploaded,
    retry_after_is_honoured_and_400_fails_at_once,
    an_outage_costs_few_requests_and_everything_arrives_after,
    hostile_entries_while_running_block_nothing,
    sigterm_drains_within_the_grace_and_leaves_the_rest_pending,
);

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(32, 24, seed)
}

/// Every (name → sha256) in `want` arrived with status 200, each exactly once.
fn assert_arrived_once(env: &Env, want: &[(String, Vec<u8>)]) {
    let ok = env.successful_uploads();
    for (name, bytes) in want {
        let got: Vec<_> = ok
            .iter()
            .filter(|r| r.file.as_ref().unwrap().filename == name.as_bytes())
            .collect();
        assert_eq!(got.len(), 1, "{name} arrived {} times", got.len());
        assert_eq!(
            got[0].file.as_ref().unwrap().sha256,
            sha256_hex(bytes),
            "{name}: bytes"
        );
    }
}

fn wait_uploaded(env: &Env, n: usize) {
    wait_until(&format!("{n} successful uploads"), DEADLINE, || {
        env.successful_uploads().len() >= n
    });
}

fn live_files_catch_up_and_new_folders(backend: Backend) {
    let env = Env::with_backend("live", backend);
    let mut want = Vec::new();
    let present = jpeg(1);
    env.put("Sega_1", "present.jpg", &present);
    want.push(("present.jpg".to_string(), present));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    wait_uploaded(&env, 1);

    for i in 0..10 {
        let b = jpeg(100 + i);
        let name = format!("live_{i}.jpg");
        env.put(&format!("Sega_{}", i % 3 + 1), &name, &b);
        want.push((name, b));
    }
    wait_uploaded(&env, 11);

    // A date folder created while running (tomorrow's: in the window).
    let tomorrow = utc_date(1);
    let b = jpeg(200);
    env.put_in("Sega_2", &tomorrow, "tomorrow.jpg", &b);
    want.push(("tomorrow.jpg".into(), b));
    // A file moved in (IN_MOVED_TO), written elsewhere first.
    let b = jpeg(201);
    let tmp = env.dir.join("moved.jpg");
    std::fs::write(&tmp, &b).unwrap();
    std::fs::rename(&tmp, env.dir_of("Sega_3", &env.today).join("moved.jpg")).unwrap();
    want.push(("moved.jpg".into(), b));
    wait_uploaded(&env, 13);
    assert_arrived_once(&env, &want);
    // The endpoint records a request before the daemon has read the answer and logged it.
    wait_until("13 `uploaded` log lines", DEADLINE, || {
        d.log_text().matches("uploaded ").count() >= 13
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

fn a_folder_and_a_root_that_appear_after_start(backend: Backend) {
    let env = Env::with_backend("late", backend);
    // The root itself is missing at start.
    let real_root = env.root.clone();
    std::fs::rename(&real_root, env.dir.join("data-later")).unwrap();
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    assert!(
        d.log_text().contains("does not exist"),
        "warned once about the missing root"
    );
    std::fs::rename(env.dir.join("data-later"), &real_root).unwrap();
    let b = jpeg(1);
    env.put("Sega_1", "after_root.jpg", &b);
    wait_uploaded(&env, 1);

    // A configured folder removed and created again while running, with a file already in it.
    std::fs::remove_dir_all(real_root.join("Sega_2")).unwrap();
    let staging = env.dir.join("staging");
    std::fs::create_dir_all(staging.join(&env.today)).unwrap();
    let b2 = jpeg(2);
    std::fs::write(staging.join(&env.today).join("inside.jpg"), &b2).unwrap();
    std::fs::rename(&staging, real_root.join("Sega_2")).unwrap();
    wait_uploaded(&env, 2);
    let b3 = jpeg(3);
    env.put("Sega_2", "later.jpg", &b3);
    wait_uploaded(&env, 3);
    assert_arrived_once(
        &env,
        &[
            ("after_root.jpg".into(), b),
            ("inside.jpg".into(), b2),
            ("later.jpg".into(), b3),
        ],
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

fn the_window_moves_at_midnight_without_a_restart(backend: Backend) {
    let env = Env::with_backend("midnight", backend);
    // Fake clock: 3 s before midnight of 2030-01-01 (UTC; the test runs with TZ=UTC).
    let (d1, d2, d3) = ("2030-01-01", "2030-01-02", "2030-01-03");
    let b_early = jpeg(1);
    env.put_in("Sega_1", d3, "day_after_tomorrow.jpg", &b_early);
    let mut d = env.start_daemon_with(|c| {
        c.env("SEGA_TEST_NOW", "2030-01-01T23:59:57Z");
    });
    d.wait_log("ready:");
    let b1 = jpeg(2);
    env.put_in("Sega_1", d1, "today.jpg", &b1);
    let b2 = jpeg(3);
    env.put_in("Sega_2", d2, "tomorrow.jpg", &b2);
    wait_uploaded(&env, 2);
    assert!(
        env.uploads_of(b"day_after_tomorrow.jpg").is_empty(),
        "outside the window before midnight"
    );
    d.wait_log("date window moved");
    // After midnight 2030-01-03 is tomorrow: the waiting file goes, and new ones too.
    let b3 = jpeg(4);
    env.put_in("Sega_3", d3, "next_day.jpg", &b3);
    wait_uploaded(&env, 4);
    assert_arrived_once(
        &env,
        &[
            ("today.jpg".into(), b1),
            ("tomorrow.jpg".into(), b2),
            ("day_after_tomorrow.jpg".into(), b_early),
            ("next_day.jpg".into(), b3),
        ],
    );
    let r = &env.uploads_of(b"next_day.jpg")[0];
    assert_eq!(r.field("date"), Some(d3));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

fn transient_failures_are_retried_until_uploaded(backend: Backend) {
    for (name, mode) in [
        (
            "503",
            Mode::Status {
                code: 503,
                fraction: 1.0,
            },
        ),
        ("reset", Mode::ResetMidBody { after_bytes: 64 }),
        ("hang", Mode::Hang),
    ] {
        let env = Env::with_backend(name, backend);
        env.set("/upload/timeout_secs", json!(1));
        env.server.set_mode(mode);
        let mut d = env.start_daemon();
        d.wait_log("ready:");
        let b = jpeg(1);
        env.put("Sega_1", "a.jpg", &b);
        wait_until(&format!("{name}: two failed attempts"), DEADLINE, || {
            env.server.request_count() >= 2
        });
        env.server.set_mode(Mode::Ok);
        wait_uploaded(&env, 1);
        assert_arrived_once(&env, &[("a.jpg".into(), b)]);
        wait_until("the row to be uploaded", DEADLINE, || {
            env.row("a.jpg").status == "uploaded"
        });
        let res = env.results();
        assert!(res.len() >= 3, "{name}: {res:?}");
        assert!(
            res[..res.len() - 1].iter().all(|r| r.outcome == "retry"),
            "{name}: {res:?}"
        );
        assert_eq!(res.last().unwrap().outcome, "success");
        d.signal(libc::SIGTERM);
        assert_eq!(d.wait_exit(DEADLINE), 0, "{name}");
    }
}

fn retry_after_is_honoured_and_400_fails_at_once(backend: Backend) {
    let env = Env::with_backend("retryafter", backend);
    env.set("/upload/retry/max_secs", json!(5));
    env.server.set_mode(Mode::RetryAfter { code: 429, secs: 2 });
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let b = jpeg(1);
    env.put("Sega_1", "a.jpg", &b);
    wait_until("the 429", DEADLINE, || env.server.request_count() >= 1);
    env.server.set_mode(Mode::Ok);
    wait_uploaded(&env, 1);
    let reqs = env.server.requests();
    let answered_429 = reqs[0].completed_at.unwrap();
    let retried = reqs[1].received_at;
    let gap = retried.duration_since(answered_429).unwrap_or_default();
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, sooner than Retry-After: 2"
    );

    env.server.set_mode(Mode::Status {
        code: 400,
        fraction: 1.0,
    });
    env.put("Sega_1", "bad.jpg", &jpeg(2));
    wait_until("bad.jpg to fail", DEADLINE, || {
        env.rows()
            .iter()
            .any(|r| r.name() == "bad.jpg" && r.status == "failed")
    });
    assert_eq!(env.row("bad.jpg").attempts, 1);
    env.server.set_mode(Mode::Ok);
    // The failed file stays failed: a rescan does not send it again.
    env.put("Sega_1", "after.jpg", &jpeg(3));
    wait_until("after.jpg", DEADLINE, || {
        !env.uploads_of(b"after.jpg").is_empty()
    });
    assert_eq!(env.uploads_of(b"bad.jpg").len(), 1);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

fn an_outage_costs_few_requests_and_everything_arrives_after(backend: Backend) {
    let env = Env::with_backend("outage", backend);
    env.set("/upload/workers", json!(3));
    env.set("/upload/retry", json!({ "initial_secs": 1, "max_secs": 2 }));
    env.server.set_mode(Mode::Refuse);
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let started = std::time::Instant::now();
    let mut want = Vec::new();
    for i in 0..30 {
        let b = jpeg(i);
        let name = format!("o_{i}.jpg");
        env.put(&format!("Sega_{}", i % 3 + 1), &name, &b);
        want.push((name, b));
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    d.wait_log("is down");
    std::thread::sleep(Duration::from_secs(4));
    let outage = started.elapsed();
    let attempts_during = env.results().len();
    env.server.set_mode(Mode::Ok);
    d.wait_log("endpoint is back");
    wait_uploaded(&env, 30);
    assert_arrived_once(&env, &want);
    // The workers' first failures (at most one each), then one at a time until three in a
    // row have failed, then one probe per interval of at least initial_secs = 1 s: the
    // issue's bound, (outage / probe interval) + workers, plus the two serial attempts.
    let bound = 3 + 2 + outage.as_secs() as usize + 1;
    eprintln!("outage of {outage:?}: {attempts_during} attempts for 30 files (bound {bound})");
    assert!(
        attempts_during <= bound,
        "{attempts_during} attempts during a {outage:?} outage (bound {bound})"
    );
    let log = d.log_text();
    assert_eq!(log.matches("is down").count(), 1, "one WARN");
    assert_eq!(log.matches("endpoint is back").count(), 1, "one INFO");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn hostile_entries_while_running_block_nothing(backend: Backend) {
    let env = Env::with_backend("hostile-live", backend);
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    env.put("Sega_1", "first.jpg", &jpeg(1));
    wait_uploaded(&env, 1);
    let fds_before = fd_count(d.pid());
    let dir = env.dir_of("Sega_1", &env.today);
    // A FIFO that is opened for writing and closed: IN_CLOSE_WRITE on a FIFO.
    let fifo = dir.join("x.jpg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    drop(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap(),
    );
    // Symlinks moved in (IN_MOVED_TO): one to a file inside the tree, one outside.
    let outside = env.dir.join("outside.jpg");
    std::fs::write(&outside, jpeg(2)).unwrap();
    std::os::unix::fs::symlink(&outside, env.dir.join("l1")).unwrap();
    std::fs::rename(env.dir.join("l1"), dir.join("out_link.jpg")).unwrap();
    std::os::unix::fs::symlink(dir.join("first.jpg"), env.dir.join("l2")).unwrap();
    std::fs::rename(env.dir.join("l2"), dir.join("in_link.jpg")).unwrap();
    std::fs::create_dir(dir.join("y.jpg")).unwrap();
    // A file that vanishes right after it is written.
    env.put("Sega_1", "gone.jpg", &jpeg(3));
    std::fs::remove_file(dir.join("gone.jpg")).unwrap();
    let b = jpeg(4);
    env.put("Sega_1", "good.jpg", &b);
    wait_until("good.jpg", DEADLINE, || {
        !env.uploads_of(b"good.jpg").is_empty()
    });
    let sent = env.sent_names();
    // gone.jpg may have been sent if a worker opened it before the unlink (it was a complete
    // image then); the hostile entries never are.
    let expected: Vec<&str> = if sent.len() == 3 {
        vec!["first.jpg", "gone.jpg", "good.jpg"]
    } else {
        vec!["first.jpg", "good.jpg"]
    };
    let mut sorted = sent.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "sent: {sent:?}");
    // The endpoint sees the request while the worker still holds the file and the socket:
    // a leak is descriptors that never come back, not ones still in use.
    wait_until(
        &format!("descriptors back near {fds_before} (no leak)"),
        DEADLINE,
        || fd_count(d.pid()) <= fds_before + 2,
    );
    let log = d.log_text();
    assert!(
        log.contains("x.jpg") && log.contains("Fifo"),
        "the FIFO is named in the log"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

fn sigterm_drains_within_the_grace_and_leaves_the_rest_pending(backend: Backend) {
    let env = Env::with_backend("grace", backend);
    env.set("/shutdown_grace_secs", json!(1));
    env.set("/upload/timeout_secs", json!(60));
    env.server.set_mode(Mode::Hang);
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    for i in 0..4 {
        env.put("Sega_1", format!("s{i}.jpg"), &jpeg(i));
    }
    // All four in the ledger before the SIGTERM: a file whose inotify event is still on its
    // way at shutdown is found by the next start's catch-up scan, which is another test.
    wait_until("all four recorded", DEADLINE, || env.rows().len() == 4);
    wait_until("two uploads in flight", DEADLINE, || {
        env.server.request_count() >= 2
    });
    let t0 = std::time::Instant::now();
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    eprintln!("stopped {:?} after SIGTERM with a 1 s grace", t0.elapsed());
    let rows = env.rows();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.status == "pending"), "{rows:?}");
    assert!(env
        .results()
        .iter()
        .any(|r| r.error.as_deref() == Some("interrupted by shutdown")));
    // A restart sends them.
    env.server.set_mode(Mode::Ok);
    let mut d = env.start_daemon();
    wait_until("the four files after restart", DEADLINE, || {
        env.count_status("uploaded") == 4
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// The upload workers keep their connections: a backlog of 40 files goes over fewer than 40
/// of them (each of the 4 workers opens one; an idle gap over 1 s on a loaded machine may
/// cost another), with one request per file and nothing sent twice.
#[test]
fn a_backlog_goes_over_kept_connections() {
    let env = Env::new("keepalive");
    let mut want = Vec::new();
    for i in 0..40 {
        let b = jpeg(300 + i);
        let name = format!("k_{i}.jpg");
        env.put(&format!("Sega_{}", i % 3 + 1), &name, &b);
        want.push((name, b));
    }
    let mut d = env.start_daemon();
    wait_uploaded(&env, 40);
    assert_arrived_once(&env, &want);
    let (requests, connections) = (env.server.request_count(), env.server.connection_count());
    assert_eq!(requests, 40, "a request went more than once");
    assert!(
        connections < 40,
        "{connections} connections for 40 uploads: none was kept"
    );
    // Idle for over 1 s, a kept connection is closed, not held until the next job (the
    // endpoint's own idle limit here is 60 s).
    wait_until(
        "the idle connections closed",
        Duration::from_secs(20),
        || env.server.open_connections() == 0,
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// `upload.keep_alive: false`: a connection per upload, each asking to close.
#[test]
fn keep_alive_off_opens_a_connection_per_upload() {
    let env = Env::new("keepalive-off");
    env.set("/upload/keep_alive", json!(false));
    env.set("/upload/workers", json!(1));
    for i in 0..6 {
        env.put("Sega_1", format!("n_{i}.jpg"), &jpeg(400 + i));
    }
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(env.count_status("uploaded"), 6);
    assert_eq!(env.server.connection_count(), 6);
    assert!(env
        .successful_uploads()
        .iter()
        .all(|r| r.header("Connection") == Some("close")));
}
