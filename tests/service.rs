//! The daemon as a systemd service and the operator's tools: sd_notify over a real
//! NOTIFY_SOCKET, the watchdog, reload, journald prefixes, status/list/retry/check,
//! upload-test, metrics, alerts, check-config diagnosis.

use std::time::{Duration, Instant};

use crate::util::*;
use serde_json::{json, Value};

both_backends!(
    sd_notify_ready_status_stopping_and_reload,
    sighup_adds_a_folder_and_refuses_an_invalid_config,
    operator_commands_agree_with_the_database,
    rows_older_than_keep_days_are_pruned,
    a_status_set_by_hand_is_shown_counted_and_never_sent,
);

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(32, 24, seed)
}

fn sd_notify_ready_status_stopping_and_reload(backend: Backend) {
    let env = Env::with_backend("notify", backend);
    let mut n = Notify::new(&env);
    let path = n.path.clone();
    let mut d = env.start_daemon_with(|c| {
        c.env("NOTIFY_SOCKET", &path);
    });
    let ready = n.wait_for("READY=1", 0);
    // READY means every watch is in place: a file created right now is seen by inotify.
    env.put("Sega_1", "right_after_ready.jpg", &jpeg(1));
    wait_until("the file created right after READY", DEADLINE, || {
        env.successful_uploads().len() == 1
    });
    assert!(
        n.got[ready].1.contains("STATUS="),
        "READY carries a STATUS line"
    );
    let st = n.wait_for("uploaded today", ready + 1);
    assert!(n.got[st].1.contains("1 uploaded today") || n.wait_for("1 uploaded today", st) > 0);

    d.signal(libc::SIGHUP);
    let r = n.wait_for("RELOADING=1", 0);
    assert!(n.got[r].1.contains("MONOTONIC_USEC="), "{:?}", n.got[r]);
    n.wait_for("READY=1", r + 1);

    d.signal(libc::SIGTERM);
    n.wait_for("STOPPING=1", r + 1);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

#[test]
fn the_watchdog_stops_while_the_db_owner_is_stuck_and_resumes() {
    let env = Env::new("watchdog");
    let mut n = Notify::new(&env);
    let path = n.path.clone();
    let mut d = env.start_daemon_with(|c| {
        c.env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "2000000");
    });
    n.wait_for("READY=1", 0);
    // Idle: a ping every second. Count over 4 s, with slack for a busy machine.
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    n.pump();
    let idle = n.pings_between(t0, Instant::now()).len();
    assert!(idle >= 2, "{idle} pings in 4 s while idle");

    // Another process holds the write lock longer than the busy timeout (5 s), and a new
    // file makes the owner want to write.
    let conn = rusqlite::Connection::open(&env.db).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    env.put("Sega_1", "blocked.jpg", &jpeg(2));
    let locked_at = Instant::now();
    std::thread::sleep(Duration::from_secs(7));
    n.pump();
    let until = Instant::now();
    let pings = n.pings_between(locked_at, until);
    // Every stretch of the 7 s without a ping: before the first, between two, and after
    // the last (the owner may stay stuck to the end: it blocks once on the record and again
    // on the heartbeat, 5 s each, before its loop turns).
    let mut edges = vec![locked_at];
    edges.extend(pings.iter().copied());
    edges.push(until);
    let gaps: Vec<Duration> = edges.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    // A ping a second normally; with the owner stuck in a 5 s busy wait and a 2 s
    // watchdog, none for seconds.
    assert!(
        longest >= Duration::from_millis(2500),
        "pings kept coming while the owner was stuck: longest gap {longest:?}"
    );
    conn.execute_batch("COMMIT").unwrap();
    drop(conn);
    let released = Instant::now();
    wait_until(
        "blocked.jpg uploaded after the lock is gone",
        DEADLINE,
        || !env.uploads_of(b"blocked.jpg").is_empty(),
    );
    std::thread::sleep(Duration::from_secs(3));
    n.pump();
    let after = n.pings_between(released, Instant::now()).len();
    assert!(after >= 2, "pings resume: {after}");
    assert!(d.log_text().contains("withholding the watchdog ping"));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

fn sighup_adds_a_folder_and_refuses_an_invalid_config(backend: Backend) {
    let env = Env::with_backend("reload", backend);
    env.set("/watch/folders", json!(["Sega_1"]));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let b = jpeg(1);
    env.put("Sega_3", "waiting.jpg", &b);
    env.set("/watch/folders", json!(["Sega_1", "Sega_3"]));
    d.signal(libc::SIGHUP);
    wait_until("the new folder's image", DEADLINE, || {
        !env.uploads_of(b"waiting.jpg").is_empty()
    });
    env.put("Sega_3", "live.jpg", &jpeg(2));
    wait_until("a live file in the new folder", DEADLINE, || {
        !env.uploads_of(b"live.jpg").is_empty()
    });

    env.set("/upload/workers", json!(3));
    std::fs::write(&env.config_path, "{ not json").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("reload refused");
    env.put("Sega_1", "still.jpg", &jpeg(3));
    wait_until("uploads go on with the old config", DEADLINE, || {
        !env.uploads_of(b"still.jpg").is_empty()
    });
    assert!(d.alive());
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

#[test]
fn journald_lines_carry_priorities_and_no_timestamps() {
    let env = Env::new("journal");
    env.set("/upload/url", json!("http://127.0.0.1:9/upload"));
    let mut d = env.start_daemon_with(|c| {
        c.env("JOURNAL_STREAM", "8:12345");
    });
    d.wait_log("ready:");
    env.put("Sega_1", "a.jpg", &jpeg(1));
    d.wait_log("connection refused");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    let log = d.log_text();
    for line in log.lines() {
        assert!(
            line.starts_with("<3>")
                || line.starts_with("<4>")
                || line.starts_with("<6>")
                || line.starts_with("<7>"),
            "{line}"
        );
    }
    assert!(log.contains("<6>ready:"), "{log}");
}

fn status_json(env: &Env) -> Value {
    let o = env.run(&["status", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    serde_json::from_str(&o.stdout).unwrap()
}

fn operator_commands_agree_with_the_database(backend: Backend) {
    let env = Env::with_backend("operator", backend);
    let metrics = env.dir.join("metrics.prom");
    env.set("/metrics/textfile", json!(metrics));
    env.put("Sega_1", "ok1.jpg", &jpeg(1));
    env.put("Sega_2", "ok2.jpg", &jpeg(2));
    env.put("Sega_2", "text.jpg", b"not an image");
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    wait_until("two uploads", DEADLINE, || {
        env.count_status("uploaded") == 2
    });
    env.server.set_mode(Mode::Status {
        code: 400,
        fraction: 1.0,
    });
    env.put("Sega_3", "bad.jpg", &jpeg(3));
    wait_until("bad.jpg failed", DEADLINE, || {
        env.count_status("failed") == 1
    });

    let s = status_json(&env);
    assert_eq!(s["daemon"]["alive"], json!(true), "{s}");
    assert_eq!(s["daemon"]["pid"], json!(d.pid().to_string()));
    if backend == Backend::Postgres {
        // A shared ledger also says whose view this is and lists every host of the scope.
        let me = host_name();
        assert_eq!(s["scope"], json!("test-scope"), "{s}");
        assert_eq!(s["host"], json!(me), "{s}");
        let hosts = s["hosts"]
            .as_array()
            .unwrap_or_else(|| panic!("hosts: {s}"));
        assert_eq!(hosts.len(), 1, "{s}");
        let h = &hosts[0];
        assert_eq!(h["host"], json!(me), "{s}");
        assert_eq!(h["alive"], json!(true), "{s}");
        assert!(same_pid(&h["pid"], d.pid()), "{s}");
        assert!(
            h["heartbeat_age_secs"].as_u64().is_some_and(|a| a < 60),
            "{s}"
        );
        assert!(
            h.get("stopped_at").is_some() && h.get("uploading").is_some(),
            "{s}"
        );
    }
    assert_eq!(s["totals"]["uploaded"], json!(2));
    assert_eq!(s["totals"]["failed"], json!(1));
    assert_eq!(s["totals"]["skipped"], json!(1));
    assert_eq!(s["folders"]["Sega_2"]["uploaded"], json!(1));
    assert_eq!(s["uploaded_today"], json!(2));
    assert_eq!(s["errors_24h"][0]["cause"], json!("HTTP 400"));
    assert!(s["last_error"]["path"]
        .as_str()
        .unwrap()
        .ends_with("bad.jpg"));
    let human = env.run(&["status"]);
    assert!(human.stdout.contains("running (pid"), "{}", human.stdout);
    assert!(human.stdout.contains("HTTP 400"), "{}", human.stdout);

    let o = env.run(&["list", "--json", "--status", "failed"]);
    let rows: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["filename"], json!("bad.jpg"));
    assert_eq!(rows[0]["last_error"], json!("HTTP 400"));
    let all = env.run(&["list", "--json", "--limit", "0"]);
    assert_eq!(all.stdout.lines().count(), env.rows().len());
    let sega2 = env.run(&["list", "--json", "--folder", "Sega_2"]);
    assert_eq!(sega2.stdout.lines().count(), 2);

    // check: a failure in the last hour is a WARNING with the default thresholds.
    let c = env.run(&["check"]);
    assert_eq!(c.code, 1, "{}", c.stdout);
    assert!(
        c.stdout
            .starts_with("SEGA WARNING - 1 failed in the last hour |"),
        "{}",
        c.stdout
    );
    let c = env.run(&["check", "--crit-failed", "1"]);
    assert_eq!(c.code, 2, "{}", c.stdout);

    // retry: the daemon picks the re-queued file up by itself.
    env.server.set_mode(Mode::Ok);
    let r = env.run(&["retry", "--failed"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("re-queued 1"), "{}", r.stdout);
    wait_until("the retried file", DEADLINE, || {
        env.count_status("uploaded") == 3
    });
    let c = env.run(&["check", "--warn-failed", "5", "--crit-failed", "9"]);
    assert_eq!(c.code, 0, "{}", c.stdout);
    assert!(
        c.stdout
            .starts_with("SEGA OK - 0 pending, 3 uploaded today, endpoint up |"),
        "{}",
        c.stdout
    );

    // Metrics: parse the text format and compare with the database.
    wait_until("metrics with 3 uploaded", DEADLINE, || {
        std::fs::read_to_string(&metrics).is_ok_and(|t| {
            t.contains("status=\"uploaded\"} 1")
                && parse_prom(&t)
                    .iter()
                    .filter(|(k, _)| k.starts_with("sega_files{") && k.contains("uploaded"))
                    .map(|(_, v)| *v)
                    .sum::<f64>()
                    == 3.0
        })
    });
    let m = parse_prom(&std::fs::read_to_string(&metrics).unwrap());
    let get = |k: &str| {
        m.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {k} in metrics"))
    };
    assert_eq!(
        get("sega_files{folder=\"Sega_3\",status=\"uploaded\"}"),
        1.0
    );
    assert_eq!(get("sega_files{folder=\"Sega_2\",status=\"skipped\"}"), 1.0);
    assert_eq!(get("sega_endpoint_up"), 1.0);
    assert!(get("sega_uploads_total{outcome=\"success\"}") >= 3.0);
    assert_eq!(get("sega_uploads_total{outcome=\"failed\"}"), 1.0);

    // check says CRITICAL once the daemon is gone.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    let c = env.run(&["check"]);
    assert_eq!(c.code, 2, "{}", c.stdout);
    assert!(c.stdout.contains("daemon not running"), "{}", c.stdout);
    let c = env.run(&["check", "--warn-bogus", "1"]);
    assert_eq!(c.code, 3, "{}", c.stdout);
    assert!(c.stdout.starts_with("SEGA UNKNOWN"), "{}", c.stdout);
}

/// A status written by hand (`UPDATE files SET status = 'weird'`) is the operator's: `list`
/// shows it, `status` (table and JSON) and the metrics count it under its own word, `retry`
/// leaves it, and the daemon neither sends the file nor fails on the row, though the row is
/// due and its file is on disk.
fn a_status_set_by_hand_is_shown_counted_and_never_sent(backend: Backend) {
    let env = Env::with_backend("by-hand", backend);
    let metrics = env.dir.join("metrics.prom");
    env.set("/metrics/textfile", json!(metrics));
    env.set("/watch/scan_interval_secs", json!(2));
    let sent = |name: &str| {
        env.server
            .requests()
            .iter()
            .filter(|r| {
                r.file
                    .as_ref()
                    .is_some_and(|f| f.filename == name.as_bytes())
            })
            .count()
    };
    // Recorded and tried once by a one-shot scan, which leaves it pending.
    env.server.set_mode(Mode::Status {
        code: 503,
        fraction: 1.0,
    });
    let p = env.put("Sega_1", "hand.jpg", &jpeg(1));
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 1, "left pending: {}{}", o.stdout, o.stderr);
    assert_eq!(sent("hand.jpg"), 1);
    let row = env.row("hand.jpg");
    assert_eq!(row.status, "pending", "{row:?}");
    // Due at once, were it pending.
    let edit = format!(
        "UPDATE files SET status = 'weird', next_attempt_at = detected_at WHERE id = {}",
        row.id
    );
    match backend {
        Backend::Sqlite => assert_eq!(env.sqlite_writer().execute(&edit, []).unwrap(), 1),
        Backend::Postgres => {
            let l = env.pg();
            l.pg.psql(&l.db, &edit);
        }
    }
    assert_eq!(env.row("hand.jpg").status, "weird");

    let o = env.run(&["list"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("weird ") && l.ends_with("hand.jpg")),
        "{}",
        o.stdout
    );
    let o = env.run(&["list", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{}", o.stdout);
    assert_eq!(rows[0]["status"], json!("weird"));
    assert_eq!(rows[0]["filename"], json!("hand.jpg"));

    let s = status_json(&env);
    assert_eq!(s["totals"]["weird"], json!(1), "{s}");
    assert_eq!(s["folders"]["Sega_1"]["weird"], json!(1), "{s}");
    assert_eq!(s["totals"]["pending"], json!(0), "{s}");
    let human = env.run(&["status"]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with("other status:") && l.contains("1 row(s) with status \"weird\"")),
        "{}",
        human.stdout
    );

    let r = env.run(&["retry", "--force", p.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("not re-queued"), "{}", r.stdout);
    assert_eq!(env.row("hand.jpg").status, "weird");

    // The daemon: its catch-up scan and rescans see hand.jpg on disk, its claims run while
    // the row is due, its heartbeats count it; it sends another file and not this one.
    env.server.set_mode(Mode::Ok);
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    env.put("Sega_1", "next.jpg", &jpeg(2));
    wait_until("next.jpg uploaded", DEADLINE, || {
        env.count_status("uploaded") == 1
    });
    wait_until("the metrics to count the row set by hand", DEADLINE, || {
        std::fs::read_to_string(&metrics).is_ok_and(|t| {
            parse_prom(&t)
                .iter()
                .any(|(k, v)| k == "sega_files{folder=\"Sega_1\",status=\"weird\"}" && *v == 1.0)
                && t.contains("status=\"uploaded\"} 1")
        })
    });
    assert!(d.alive(), "the daemon runs on");
    assert_eq!(sent("hand.jpg"), 1, "hand.jpg was never sent again");
    assert_eq!(sent("next.jpg"), 1);
    assert_eq!(env.row("hand.jpg").status, "weird");
    let c = env.run(&["check"]);
    assert_eq!(c.code, 0, "{}{}", c.stdout, c.stderr);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    assert_eq!(env.row("hand.jpg").status, "weird");
}

/// Times a SQLite ledger holds as text that is not a time (rows edited by hand: its columns
/// take any text; PostgreSQL's are typed): the daemon starts and uploads, and `list`,
/// `show`, `status` and `check` show them as not a time instead of failing.
#[test]
fn times_edited_into_text_that_is_not_a_time_stop_nothing() {
    let env = Env::new("bad-times");
    let a = env.put("Sega_1", "a.jpg", &jpeg(1));
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    env.server.set_mode(Mode::Status {
        code: 503,
        fraction: 1.0,
    });
    env.put("Sega_1", "b.jpg", &jpeg(2));
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 1, "b.jpg left pending: {}{}", o.stdout, o.stderr);
    let w = env.sqlite_writer();
    let edit = |sql: &str| assert!(w.execute(sql, []).unwrap() > 0, "{sql}");
    edit("UPDATE files SET detected_at = 'x', updated_at = 'garbage', uploaded_at = '?'");
    edit("UPDATE files SET next_attempt_at = 'later' WHERE status = 'pending'");
    edit("UPDATE upload_results SET started_at = 'never'");
    edit("INSERT INTO state(key, value, updated_at) VALUES ('by_hand', 'v', 'x')");
    drop(w);

    let o = env.run(&["list"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("(not a time)"), "{}", o.stdout);
    let o = env.run(&["list", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for line in o.stdout.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        assert_eq!(row["detected_at"], Value::Null, "{line}");
        assert_eq!(row["updated_at"], Value::Null, "{line}");
    }
    let o = env.run(&["show", a.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("detected:      (not a time)"),
        "{}",
        o.stdout
    );
    let s = status_json(&env);
    assert_eq!(s["oldest_pending"]["at"], Value::Null, "{s}");
    assert_eq!(s["last_error"]["at"], Value::Null, "{s}");
    let o = env.run(&["status"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("(not a time)"), "{}", o.stdout);
    // Not running: CRITICAL, not UNKNOWN (a ledger it could not read).
    let c = env.run(&["check"]);
    assert_eq!(c.code, 2, "{}{}", c.stdout, c.stderr);

    env.server.set_mode(Mode::Ok);
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    wait_until("b.jpg uploaded", DEADLINE, || {
        env.count_status("uploaded") == 2
    });
    assert!(d.alive());
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Parses Prometheus text format strictly enough: `# HELP`/`# TYPE` lines, and
/// `name{labels} value` samples whose value is a float.
fn parse_prom(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(name.starts_with("sega_"), "{line}");
        out.push((name.to_string(), v));
    }
    out
}

#[test]
fn upload_test_prints_the_response() {
    let env = Env::new("uploadtest");
    let p = env.put("Sega_1", "probe.jpg", &jpeg(1));
    let o = env.run(&["upload-test", p.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("HTTP 200"), "{}", o.stdout);
    assert!(
        o.stdout.contains("content-type: application/json"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("\"ok\":true"), "{}", o.stdout);
    assert!(o.stdout.contains("Idempotency-Key: "), "{}", o.stdout);
    assert_eq!(env.server.request_count(), 1);
    assert!(!env.db.exists(), "upload-test does not touch the database");
    env.server.set_mode(Mode::Status {
        code: 500,
        fraction: 1.0,
    });
    let o = env.run(&["upload-test", p.to_str().unwrap()]);
    assert_eq!(o.code, 1);
    assert!(o.stdout.contains("HTTP 500"), "{}", o.stdout);
}

#[test]
fn webhook_alerts_once_down_and_once_up_and_never_slow_uploads() {
    let env = Env::new("alerts");
    let hook = Server::start("127.0.0.1:0").unwrap();
    env.set(
        "/alerts",
        json!({ "webhook_url": hook.url(), "after_secs": 2 }),
    );
    env.set("/upload/retry", json!({ "initial_secs": 1, "max_secs": 1 }));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    let events = |h: &Server| -> Vec<String> {
        h.requests()
            .iter()
            .filter_map(|r| r.body.as_ref())
            .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
            .map(|v| v["event"].as_str().unwrap_or("").to_string())
            .collect()
    };
    // A short outage (under after_secs): no alert.
    env.server.set_mode(Mode::Refuse);
    for i in 0..3 {
        env.put("Sega_1", format!("s{i}.jpg"), &jpeg(i));
    }
    d.wait_log("is down");
    env.server.set_mode(Mode::Ok);
    d.wait_log("endpoint is back");
    wait_until("the short outage's files", DEADLINE, || {
        env.count_status("uploaded") == 3
    });
    // A long one: one "down", then one "up".
    env.server.set_mode(Mode::Refuse);
    for i in 10..14 {
        env.put("Sega_2", format!("l{i}.jpg"), &jpeg(i));
    }
    wait_until("the down alert", DEADLINE, || {
        events(&hook).contains(&"endpoint_down".to_string())
    });
    std::thread::sleep(Duration::from_secs(2));
    env.server.set_mode(Mode::Ok);
    wait_until("the up alert", DEADLINE, || {
        events(&hook).contains(&"endpoint_up".to_string())
    });
    wait_until("everything uploaded", DEADLINE, || {
        env.count_status("uploaded") == 7
    });
    assert_eq!(events(&hook), vec!["endpoint_down", "endpoint_up"]);
    let body: Value = serde_json::from_slice(hook.requests()[0].body.as_ref().unwrap()).unwrap();
    assert!(body["message"].as_str().unwrap().contains("down"), "{body}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);

    // A webhook that hangs never slows the uploads.
    hook.set_mode(Mode::Hang);
    env.set("/alerts/after_secs", json!(1));
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    env.server.set_mode(Mode::Refuse);
    env.put("Sega_3", "x.jpg", &jpeg(30));
    wait_until("the alert to be attempted", DEADLINE, || {
        hook.request_count() >= 1
    });
    env.server.set_mode(Mode::Ok);
    let t0 = Instant::now();
    for i in 40..45 {
        env.put("Sega_3", format!("h{i}.jpg"), &jpeg(i));
    }
    wait_until("uploads while the webhook hangs", DEADLINE, || {
        env.count_status("uploaded") == 13
    });
    eprintln!("5 uploads took {:?} with a hanging webhook", t0.elapsed());
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

#[test]
fn check_config_reports_an_unreadable_folder_and_a_refusing_endpoint() {
    let env = Env::new("diagnose");
    // The test tree must be reachable by `nobody` for the check to be about one folder.
    if !env.open_to_nobody() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        env.db.parent().unwrap(),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    std::fs::set_permissions(
        env.root.join("Sega_2"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    env.server.set_mode(Mode::Refuse);
    let o = out(env.nobody_cmd(&["check-config"]).output().unwrap());
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    let fails: Vec<&str> = o.stdout.lines().filter(|l| l.starts_with("fail")).collect();
    assert_eq!(fails.len(), 2, "{}", o.stdout);
    assert!(
        fails[0].contains("folder Sega_2") && fails[0].contains("not readable"),
        "{}",
        o.stdout
    );
    assert!(
        fails[1].contains("endpoint") && fails[1].contains("refused"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("ok   folder Sega_1"), "{}", o.stdout);
}

fn rows_older_than_keep_days_are_pruned(backend: Backend) {
    let env = Env::with_backend("prune", backend);
    env.put_in("Sega_1", "2020-01-01", "ancient.jpg", &jpeg(1));
    assert_eq!(env.run(&["scan", "--date", "2020-01-01"]).code, 0);
    env.put("Sega_1", "today.jpg", &jpeg(2));
    assert_eq!(env.run(&["scan"]).code, 0);
    assert_eq!(env.rows().len(), 2);
    assert_eq!(env.results().len(), 2);
    let mut d = env.start_daemon();
    d.wait_log("pruned 1 row(s)");
    let names: Vec<String> = env.rows().iter().map(Row::name).collect();
    assert_eq!(
        names,
        vec!["today.jpg"],
        "the old date's row and its results are gone"
    );
    assert_eq!(env.results().len(), 1);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}
