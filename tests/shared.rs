//! A shared PostgreSQL ledger (issue 8): several daemons, one database. Hosts of one scope
//! split the work and never send a file twice; a dead host's claims are taken over after its
//! lease; scopes never see each other; the database going away for a while loses nothing;
//! one (scope, host) runs one daemon; `status` and `check` see every host.
//!
//! PostgreSQL only: each test skips itself (with a note) without the server binaries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::pg;
use crate::util::*;
use serde_json::{json, Value};

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(16, 16, seed)
}

/// name → sha256 of `n` files written across the three folders, seeds from `seed0`.
fn burst(env: &Env, prefix: &str, n: usize, seed0: u64) -> Written {
    let mut w = Written::new();
    for i in 0..n {
        let name = format!("{prefix}{i:04}.jpg");
        let b = jpeg(seed0 + i as u64);
        env.put(&format!("Sega_{}", i % 3 + 1), &name, &b);
        w.insert(name, sha256_hex(&b));
    }
    w
}

/// Each written file arrived at `env`'s endpoint exactly once with status 200, right bytes,
/// and nothing else was sent there.
fn assert_each_exactly_once(env: &Env, written: &Written) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in env.successful_uploads() {
        let f = r.file.as_ref().unwrap();
        let name = String::from_utf8_lossy(&f.filename).into_owned();
        let sha = written
            .get(&name)
            .unwrap_or_else(|| panic!("{name} was sent here but not written here"));
        assert_eq!(&f.sha256, sha, "{name}: bytes");
        *seen.entry(name).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(seen.len(), written.len(), "every file arrived");
    let with_file = env
        .server
        .requests()
        .iter()
        .filter(|r| r.file.is_some())
        .count();
    assert_eq!(with_file, written.len(), "no other upload request at all");
}

fn status_as(env: &Env, host: &str) -> Value {
    let o = env.run_as(host, &["status", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
}

fn host_entry<'a>(status: &'a Value, host: &str) -> Option<&'a Value> {
    status["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["host"].as_str() == Some(host))
}

fn ids(env: &Env, select_where: &str) -> Vec<i64> {
    env.sql(&format!(
        "SELECT id FROM files WHERE scope = {} AND {select_where} ORDER BY id",
        pg::lit(&env.scope())
    ))
    .iter()
    .map(|v| v["id"].as_i64().unwrap())
    .collect()
}

#[test]
fn two_hosts_of_one_scope_split_a_burst_and_send_each_file_once() {
    if !pg::available() {
        return;
    }
    let env = Env::with_backend("twohosts", Backend::Postgres);
    env.set("/upload/workers", json!(2));
    // A little latency per request, so that both hosts have claims in flight at once.
    env.server.set_mode(Mode::Delay(Duration::from_millis(5)));
    let mut a = env.start_daemon_as("cam-a");
    let mut b = env.start_daemon_as("cam-b");
    a.wait_log("ready:");
    b.wait_log("ready:");
    let t0 = Instant::now();
    let written = burst(&env, "s", 300, 1);
    wait_until("all 300 rows uploaded", DEADLINE, || {
        env.count_status("uploaded") == 300
    });
    eprintln!("two hosts: 300 files uploaded in {:?}", t0.elapsed());
    assert_each_exactly_once(&env, &written);
    let rows = env.rows();
    assert_eq!(rows.len(), 300, "one row per file");
    assert!(rows.iter().all(|r| r.status == "uploaded"));
    // Who did the work: the claim's host on each row, and the host of each success.
    let mut by_row: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        *by_row
            .entry(r.claimed_host.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let res = env.results();
    let successes: Vec<&ResultRow> = res.iter().filter(|r| r.outcome == "success").collect();
    assert_eq!(successes.len(), 300, "one success per file: {res:?}");
    let mut by_result: HashMap<String, usize> = HashMap::new();
    for r in &successes {
        *by_result
            .entry(r.host.clone().unwrap_or_default())
            .or_default() += 1;
    }
    eprintln!("split by claimed_host: {by_row:?}; by upload_results.host: {by_result:?}");
    assert!(
        by_row.keys().all(|h| h == "cam-a" || h == "cam-b"),
        "{by_row:?}"
    );
    assert_eq!(by_row, by_result, "the claim's host made the upload");
    // Not asserted: that both hosts did some of the work. A host claims when its own
    // recording made a row due (or at its rescan tick), and the host that records a file
    // first is the one that sends it, so one host may well do the whole burst.
    if by_row.len() < 2 {
        eprintln!("note: one host did the whole burst: {by_row:?}");
    }
    for d in [&mut a, &mut b] {
        d.signal(libc::SIGTERM);
        assert_eq!(d.wait_exit(DEADLINE), 0);
    }
}

#[test]
fn a_killed_hosts_claims_are_taken_over_after_its_lease() {
    if !pg::available() {
        return;
    }
    let env = Env::with_backend("takeover", Backend::Postgres);
    env.set("/database/lease_secs", json!(5));
    env.set("/upload/workers", json!(2));
    // A slow endpoint keeps claims in flight.
    env.server.set_mode(Mode::Delay(Duration::from_millis(250)));
    let mut a = env.start_daemon_as("cam-a");
    let mut b = env.start_daemon_as("cam-b");
    a.wait_log("ready:");
    b.wait_log("ready:");
    let mut rng = Rng::seeded("takeover");
    let written = burst(&env, "t", 120, 1000);
    wait_until("10 uploads and cam-a holding claims", DEADLINE, || {
        env.count_status("uploaded") >= 10
    });
    std::thread::sleep(Duration::from_millis(rng.below(300)));
    wait_until("cam-a holding claims", DEADLINE, || {
        !ids(&env, "status = 'uploading' AND claimed_host = 'cam-a'").is_empty()
    });
    a.kill();
    let killed = Instant::now();
    // What cam-a had claimed when it died: only these may be sent twice.
    let stranded = ids(&env, "status = 'uploading' AND claimed_host = 'cam-a'");
    let pending_then = env.count_status("pending");
    eprintln!(
        "killed cam-a holding {} claim(s) ({:?}); {pending_then} pending",
        stranded.len(),
        stranded
    );
    assert!(!stranded.is_empty(), "cam-a died holding claims");
    let takeover = "host cam-a stopped its heartbeat";
    b.wait_log(takeover);
    let after = killed.elapsed();
    eprintln!("cam-b took over {after:?} after the kill (lease 5 s)");
    // The lease runs from cam-a's last heartbeat (at most lease/4 before the kill).
    assert!(
        after >= Duration::from_millis(3500),
        "taken over {after:?} after the kill: before the lease ran out"
    );
    wait_until("all 120 rows uploaded", DEADLINE, || {
        env.count_status("uploaded") == 120
    });
    assert!(b.alive());
    let rows = env.rows();
    assert_eq!(rows.len(), 120);
    assert!(rows.iter().all(|r| r.status == "uploaded"));
    for id in &stranded {
        let r = rows.iter().find(|r| r.id == *id).unwrap();
        assert_eq!(
            r.claimed_host.as_deref(),
            Some("cam-b"),
            "{}: uploaded by cam-b after the takeover",
            r.name()
        );
    }
    let res = env.results();
    for id in &stranded {
        let mine: Vec<&ResultRow> = res.iter().filter(|r| r.file_id == *id).collect();
        assert!(
            mine.iter().any(|r| r.outcome == "retry"
                && r.host.as_deref() == Some("cam-b")
                && r.error.as_deref().is_some_and(|e| e.contains("cam-a"))),
            "the takeover is recorded: {mine:?}"
        );
        assert_eq!(
            mine.last().map(|r| (r.outcome.as_str(), r.host.as_deref())),
            Some(("success", Some("cam-b"))),
            "{mine:?}"
        );
    }
    // Everything arrived; a re-send carries the file's one Idempotency-Key.
    let dupes = check_all_arrived(&env, &written);
    eprintln!(
        "takeover: {dupes} duplicate upload(s); {} claim(s) stranded",
        stranded.len()
    );
    assert!(
        dupes <= stranded.len(),
        "{dupes} duplicates but only {} claims were in flight at the kill",
        stranded.len()
    );
    let log = b.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(takeover)).collect();
    eprintln!("{lines:?}");
    assert!(lines.iter().all(|l| l.contains("WARN")), "{lines:?}");
    b.signal(libc::SIGTERM);
    assert_eq!(b.wait_exit(DEADLINE), 0);
}

#[test]
fn scopes_sharing_a_database_never_see_each_other() {
    if !pg::available() {
        return;
    }
    let one = Env::with_backend("scope-one", Backend::Postgres);
    let two = Env::sharing_ledger("scope-two", &one, "other-scope");
    // The same folder labels, dates and names in both trees, different bytes: the identity
    // (folder, date, name) is equal, only the scope tells them apart.
    let w1 = burst(&one, "x", 40, 100);
    let w2 = burst(&two, "x", 40, 200);
    // Both daemons have the default host id (this machine's name): the lock is per scope.
    let mut d1 = one.start_daemon();
    let mut d2 = two.start_daemon();
    d1.wait_log("ready:");
    d2.wait_log("ready:");
    let more1 = burst(&one, "y", 20, 300);
    let more2 = burst(&two, "y", 20, 400);
    wait_until("both scopes done", DEADLINE, || {
        one.count_status("uploaded") == 60 && two.count_status("uploaded") == 60
    });
    let (mut all1, mut all2) = (w1, w2);
    all1.extend(more1);
    all2.extend(more2);
    assert_each_exactly_once(&one, &all1);
    assert_each_exactly_once(&two, &all2);
    for (env, root) in [(&one, &one.root), (&two, &two.root)] {
        let rows = env.rows();
        assert_eq!(rows.len(), 60, "{}", env.scope());
        for r in &rows {
            assert!(
                r.path.starts_with(root.as_os_str().as_encoded_bytes()),
                "{} row recorded from the other tree: {}",
                env.scope(),
                String::from_utf8_lossy(&r.path)
            );
        }
    }
    let total = one.sql("SELECT count(*) AS n FROM files");
    assert_eq!(total[0]["n"], json!(120), "two scopes' rows, nothing else");
    let me = host_name();
    for env in [&one, &two] {
        let s = status_as(env, &me);
        assert_eq!(s["scope"], json!(env.scope()), "{s}");
        assert_eq!(s["totals"]["uploaded"], json!(60), "{s}");
        assert_eq!(s["hosts"].as_array().map(Vec::len), Some(1), "{s}");
    }
    for d in [&mut d1, &mut d2] {
        d.signal(libc::SIGTERM);
        assert_eq!(d.wait_exit(DEADLINE), 0);
    }
}

#[test]
fn postgres_stopped_during_a_burst_loses_nothing() {
    if !pg::available() {
        return;
    }
    let cluster = pg::Cluster::private();
    let env = Env::on_cluster("pgdown", &cluster);
    env.set("/upload/workers", json!(2));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let mut written = burst(&env, "a", 20, 1);
    wait_until("the first files", DEADLINE, || {
        env.count_status("uploaded") == 20
    });

    // Files keep arriving (one every 50 ms for 4 s) while the server is stopped.
    let count = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let (env_ref, count_ref, done_ref) = (&env, &count, &done);
    let during = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let mut w = Written::new();
            for i in 0..80 {
                let name = format!("b{i:04}.jpg");
                let b = jpeg(5000 + i);
                env_ref.put(&format!("Sega_{}", i % 3 + 1), &name, &b);
                w.insert(name, sha256_hex(&b));
                count_ref.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
            done_ref.store(true, Ordering::SeqCst);
            w
        });
        wait_until("the writer to get going", DEADLINE, || {
            count.load(Ordering::SeqCst) >= 10
        });
        cluster.stop();
        let stopped = Instant::now();
        eprintln!(
            "PostgreSQL stopped after {} of 80 files",
            count.load(Ordering::SeqCst)
        );
        wait_until("the daemon to notice", DEADLINE, || {
            assert!(d.alive(), "the daemon exited while the database was down");
            d.log_text().contains("database trouble")
        });
        wait_until("the writer to finish", DEADLINE, || {
            assert!(d.alive(), "the daemon exited while the database was down");
            done.load(Ordering::SeqCst)
        });
        // Down for at least 3 s, a few reconnect attempts.
        while stopped.elapsed() < Duration::from_secs(3) {
            assert!(d.alive(), "the daemon exited while the database was down");
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("PostgreSQL down for {:?}", stopped.elapsed());
        cluster.start();
        writer.join().unwrap()
    });
    written.extend(during);
    wait_until("the daemon to write again", DEADLINE, || {
        assert!(d.alive(), "the daemon exited after the database came back");
        d.log_text().contains("database is writable again")
    });
    wait_until("every file uploaded", DEADLINE, || {
        assert!(d.alive(), "the daemon exited after the database came back");
        env.count_status("uploaded") == 100
    });
    let rows = env.rows();
    assert_eq!(rows.len(), 100);
    assert!(rows.iter().all(|r| r.status == "uploaded"));
    let dupes = check_all_arrived(&env, &written);
    eprintln!("database outage: {dupes} duplicate upload(s)");
    let log = d.log_text();
    let trouble: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("database trouble"))
        .collect();
    let back: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("database is writable again"))
        .collect();
    assert_eq!(trouble.len(), 1, "one WARN: {trouble:?}");
    assert!(trouble[0].contains(" WARN "), "{trouble:?}");
    assert_eq!(back.len(), 1, "one INFO: {back:?}");
    assert!(back[0].contains(" INFO "), "{back:?}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

#[test]
fn a_second_daemon_with_the_same_scope_and_host_refuses_to_start() {
    if !pg::available() {
        return;
    }
    let env = Env::with_backend("samehost", Backend::Postgres);
    let mut a = env.start_daemon_as("cam-a");
    a.wait_log("ready:");
    let config = env.host_config("cam-a");
    let mut c = env.cmd_with_config(&config, &["run"]);
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the second daemon to give up", DEADLINE, || {
        child.try_wait().unwrap().is_some()
    });
    let o = out(child.wait_with_output().unwrap());
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!("pid {}", a.pid())) && o.stderr.contains("cam-a"),
        "names the holder: {}",
        o.stderr
    );
    // The first one is unaffected, and another host id on the same scope is welcome.
    assert!(a.alive());
    let mut b = env.start_daemon_as("cam-b");
    b.wait_log("ready:");
    env.put("Sega_1", "after.jpg", &jpeg(1));
    wait_until("after.jpg uploaded", DEADLINE, || {
        env.count_status("uploaded") == 1
    });
    assert_eq!(env.successful_uploads().len(), 1);
    for d in [&mut a, &mut b] {
        d.signal(libc::SIGTERM);
        assert_eq!(d.wait_exit(DEADLINE), 0);
    }
}

#[test]
fn status_lists_every_host_and_check_names_a_dead_one() {
    if !pg::available() {
        return;
    }
    let env = Env::with_backend("hosts", Backend::Postgres);
    // Heartbeats every lease/4 = 2 s.
    env.set("/database/lease_secs", json!(8));
    let mut a = env.start_daemon_as("cam-a");
    let mut b = env.start_daemon_as("cam-b");
    a.wait_log("ready:");
    b.wait_log("ready:");
    env.put("Sega_1", "one.jpg", &jpeg(1));
    wait_until("one.jpg uploaded", DEADLINE, || {
        env.count_status("uploaded") == 1
    });
    let mut s = Value::Null;
    wait_until("both hosts alive in status --json", DEADLINE, || {
        s = status_as(&env, "cam-b");
        ["cam-a", "cam-b"]
            .iter()
            .all(|h| host_entry(&s, h).is_some_and(|e| e["alive"] == json!(true)))
    });
    assert_eq!(s["scope"], json!("test-scope"), "{s}");
    assert_eq!(s["host"], json!("cam-b"), "{s}");
    assert_eq!(s["hosts"].as_array().unwrap().len(), 2, "{s}");
    for (h, d) in [("cam-a", &a), ("cam-b", &b)] {
        let e = host_entry(&s, h).unwrap();
        assert!(same_pid(&e["pid"], d.pid()), "{h}: {s}");
        assert!(
            e["heartbeat_age_secs"].as_u64().is_some_and(|a| a < 8),
            "{h}: {s}"
        );
        assert!(e["stopped_at"].is_null(), "{h}: {s}");
        assert_eq!(e["uploading"], json!(0), "{h}: {s}");
    }
    assert_eq!(s["daemon"]["alive"], json!(true), "{s}");
    let thresholds = ["--warn-heartbeat", "6", "--crit-heartbeat", "600"];
    let check = |host: &str, t: &[&str]| {
        let mut args = vec!["check"];
        args.extend_from_slice(t);
        env.run_as(host, &args)
    };
    let c = check("cam-b", &thresholds);
    assert_eq!(c.code, 0, "two live hosts: {}", c.stdout);
    assert!(c.stdout.starts_with("SEGA OK"), "{}", c.stdout);

    a.kill();
    let killed = Instant::now();
    wait_until("cam-a no longer alive in status", DEADLINE, || {
        host_entry(&status_as(&env, "cam-b"), "cam-a").is_some_and(|e| e["alive"] == json!(false))
    });
    let mut c = check("cam-b", &thresholds);
    wait_until("check to warn about cam-a", DEADLINE, || {
        c = check("cam-b", &thresholds);
        c.code != 0
    });
    eprintln!("check after {:?}: {}", killed.elapsed(), c.stdout.trim());
    assert_eq!(c.code, 1, "WARNING: {}", c.stdout);
    assert!(
        c.stdout.starts_with("SEGA WARNING") && c.stdout.contains("cam-a"),
        "names the stale host: {}",
        c.stdout
    );
    assert!(
        !c.stdout.contains("cam-b"),
        "only the dead host: {}",
        c.stdout
    );
    let crit = ["--warn-heartbeat", "6", "--crit-heartbeat", "7"];
    wait_until("check to be critical about cam-a", DEADLINE, || {
        c = check("cam-b", &crit);
        c.code == 2
    });
    assert!(c.stdout.contains("cam-a"), "{}", c.stdout);
    let s = status_as(&env, "cam-b");
    let e = host_entry(&s, "cam-a").unwrap();
    assert_eq!(e["alive"], json!(false), "{s}");
    assert!(
        e["stopped_at"].is_null(),
        "killed, not stopped cleanly: {s}"
    );
    assert!(
        e["heartbeat_age_secs"].as_u64().is_some_and(|a| a >= 7),
        "{s}"
    );
    assert_eq!(
        host_entry(&s, "cam-b").unwrap()["alive"],
        json!(true),
        "{s}"
    );
    b.signal(libc::SIGTERM);
    assert_eq!(b.wait_exit(DEADLINE), 0);
}

#[test]
fn an_unreachable_database_is_a_clear_error_and_keeps_its_password() {
    if !pg::available() {
        return;
    }
    let cluster = pg::Cluster::private();
    let env = Env::on_cluster("pgunreachable", &cluster);
    // Trust authentication ignores the password; what matters is that it never shows.
    env.set(
        "/database/url",
        json!(format!("{} password=s3cr3t-pw", env.pg().conninfo())),
    );
    env.put("Sega_1", "a.jpg", &jpeg(1));
    cluster.stop();
    let secret_free = |o: &Out| !o.stdout.contains("s3cr3t") && !o.stderr.contains("s3cr3t");
    let o = env.run(&["check-config"]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.lines().any(|l| l.starts_with("fail database")),
        "{}",
        o.stdout
    );
    assert!(secret_free(&o), "{}\n{}", o.stdout, o.stderr);
    let mut child = env
        .cmd(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "run to give up on an unreachable database",
        DEADLINE,
        || child.try_wait().unwrap().is_some(),
    );
    let o = out(child.wait_with_output().unwrap());
    assert_eq!(o.code, 1, "runtime failure: {}", o.stderr);
    assert!(
        o.stderr.contains(&env.pg().db),
        "names the database: {}",
        o.stderr
    );
    assert!(secret_free(&o), "{}", o.stderr);
    let o = env.run(&["status"]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(secret_free(&o), "{}\n{}", o.stdout, o.stderr);
    assert_eq!(env.server.request_count(), 0);
    // Back: the daemon starts and sends what waited.
    cluster.start();
    let mut d = env.start_daemon();
    wait_until("a.jpg uploaded", DEADLINE, || {
        env.count_status("uploaded") == 1
    });
    assert!(secret_free(&Out {
        code: 0,
        stdout: d.log_text(),
        stderr: String::new()
    }));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}
