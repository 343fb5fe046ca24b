//! What a monitoring system reads, read the way it reads it: `check` as Nagios/NRPE runs it
//! (the monitoring-plugins rules: `U` for what is not known, a warning threshold above the
//! critical one refused, the counter's `c`, `-t` against a ledger that does not answer, run
//! as a member of the daemon's group rather than as its user), and the Prometheus textfile
//! as node_exporter reads it (the build, the bytes counter, timestamps rather than ages).

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::*;
use serde_json::{json, Value};

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(32, 24, seed)
}

/// The perfdata after `|`, label → value as printed (`12s`, `U`, `3c`), thresholds dropped.
fn perfdata(line: &str) -> HashMap<String, String> {
    let (_, perf) = line
        .trim_end()
        .split_once(" | ")
        .unwrap_or_else(|| panic!("no perfdata in {line:?}"));
    perf.split(' ')
        .map(|item| {
            let (label, rest) = item
                .split_once('=')
                .unwrap_or_else(|| panic!("bad perfdata item {item:?} in {line:?}"));
            let value = rest.split(';').next().unwrap_or("");
            (label.to_owned(), value.to_owned())
        })
        .collect()
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn check_follows_the_monitoring_plugins_guidelines() {
    let env = Env::new("check-rules");
    // No database yet: nothing can be judged.
    let c = env.run(&["check"]);
    assert_eq!(c.code, 3, "{}", c.stdout);
    assert!(c.stdout.starts_with("SEGA UNKNOWN - "), "{}", c.stdout);

    // A ledger filled by a one-shot scan: no daemon ever ran on it.
    env.put("Sega_1", "a.jpg", &jpeg(1));
    env.put("Sega_2", "b.jpg", &jpeg(2));
    let s = env.run(&["scan"]);
    assert_eq!(s.code, 0, "{}\n{}", s.stdout, s.stderr);
    let c = env.run(&["check"]);
    assert_eq!(c.code, 2, "{}", c.stdout);
    assert_eq!(c.stdout.lines().count(), 1, "one line: {}", c.stdout);
    assert!(
        c.stdout
            .starts_with("SEGA CRITICAL - daemon not running | "),
        "{}",
        c.stdout
    );
    // Unknown is U, with the thresholds still given; the counter carries `c`.
    assert!(
        c.stdout.contains(" heartbeat_age=U;30;60 ")
            && c.stdout.contains(" endpoint_down=U;300;1800 "),
        "{}",
        c.stdout
    );
    let p = perfdata(&c.stdout);
    assert_eq!(p["uploaded_total"], "2c", "{}", c.stdout);
    assert_eq!(p["uploaded_today"], "2", "{}", c.stdout);
    assert_eq!(p["pending"], "0", "{}", c.stdout);

    // Usage errors are the plugin's UNKNOWN, on stdout, one line.
    for (args, says) in [
        (
            &["check", "--warn-failed", "5", "--crit-failed", "2"][..],
            "SEGA UNKNOWN - --warn-failed 5 is above --crit-failed 2",
        ),
        (
            &["check", "--crit-pending-age", "60"][..],
            "SEGA UNKNOWN - --warn-pending-age 900 is above --crit-pending-age 60",
        ),
        (&["check", "-t", "0"][..], "SEGA UNKNOWN - --timeout 0"),
        (
            &["check", "--timeout", "soon"][..],
            "SEGA UNKNOWN - --timeout soon",
        ),
    ] {
        let c = env.run(args);
        assert_eq!(c.code, 3, "{args:?}: {}", c.stdout);
        assert!(c.stdout.starts_with(says), "{args:?}: {}", c.stdout);
        assert_eq!(c.stdout.lines().count(), 1, "{args:?}: {}", c.stdout);
    }
    // Equal thresholds are allowed: the level goes straight to CRITICAL.
    let c = env.run(&[
        "check",
        "--warn-failed",
        "3",
        "--crit-failed",
        "3",
        "-t",
        "30",
    ]);
    assert_eq!(c.code, 2, "{}", c.stdout);
    assert!(
        c.stdout
            .starts_with("SEGA CRITICAL - daemon not running | "),
        "{}",
        c.stdout
    );

    // With the daemon running every value is known.
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    env.put("Sega_3", "c.jpg", &jpeg(3));
    wait_until("c.jpg uploaded", DEADLINE, || {
        env.count_status("uploaded") == 3
    });
    let c = env.run(&["check"]);
    assert_eq!(c.code, 0, "{}", c.stdout);
    assert!(
        c.stdout
            .starts_with("SEGA OK - 0 pending, 3 uploaded today, endpoint up | "),
        "{}",
        c.stdout
    );
    let p = perfdata(&c.stdout);
    assert_eq!(p["endpoint_down"], "0s", "{}", c.stdout);
    assert!(
        p["heartbeat_age"]
            .strip_suffix('s')
            .is_some_and(|n| n.parse::<u64>().is_ok()),
        "{}",
        c.stdout
    );
    assert_eq!(p["uploaded_total"], "3c", "{}", c.stdout);
    assert!(!c.stdout.contains("=U"), "{}", c.stdout);

    // Stopped: its last heartbeat is known, the endpoint's state no longer is; the counter
    // stays where it was.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    let c = env.run(&["check"]);
    assert_eq!(c.code, 2, "{}", c.stdout);
    let p = perfdata(&c.stdout);
    assert_ne!(p["heartbeat_age"], "U", "{}", c.stdout);
    assert_eq!(p["endpoint_down"], "U", "{}", c.stdout);
    assert_eq!(p["uploaded_total"], "3c", "{}", c.stdout);
    let status: Value = serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["uploaded_total"], json!(3), "{status}");
}

#[test]
fn check_gives_up_after_its_timeout_on_a_locked_database() {
    let env = Env::new("check-locked");
    env.put("Sega_1", "a.jpg", &jpeg(1));
    assert_eq!(env.run(&["scan"]).code, 0);
    // Another process holds the database exclusively (an sqlite3 shell in exclusive locking
    // mode, a backup tool): a reader waits for it.
    let holder = env.sqlite_writer();
    holder
        .execute_batch(
            "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;
             UPDATE state SET value = value WHERE key = 'nothing';",
        )
        .unwrap();
    let t0 = Instant::now();
    let c = env.run(&["check", "-t", "1"]);
    let took = t0.elapsed();
    assert_eq!(c.code, 3, "{}", c.stdout);
    let db = env.db.to_str().unwrap();
    assert_eq!(
        c.stdout.trim_end(),
        format!(
            "SEGA UNKNOWN - no answer from the database {db} within 1s (-t): is it locked by another process?"
        )
    );
    // The database's own busy timeout (5 s) would have answered later, with another line.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    let c = env.run(&["check", "-t", "1"]);
    assert_eq!(c.code, 2, "readable again: {}", c.stdout);
}

/// A PostgreSQL server that accepts the connection and never answers (a hung server, a
/// firewall that drops the replies): the kernel completes the handshake, nobody reads.
#[cfg(feature = "postgres")]
#[test]
fn check_gives_up_after_its_timeout_on_a_postgresql_server_that_does_not_answer() {
    let env = Env::new("check-pg-hung");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    env.set(
        "/database/url",
        json!(format!(
            "postgresql://sega:{}@127.0.0.1:{port}/sega",
            SECRETS[3]
        )),
    );
    let t0 = Instant::now();
    let c = env.run(&["check", "-t", "1"]);
    let took = t0.elapsed();
    assert_eq!(c.code, 3, "{}", c.stdout);
    assert!(
        c.stdout
            .starts_with("SEGA UNKNOWN - no answer from the PostgreSQL ledger (")
            && c.stdout.contains(&format!("127.0.0.1:{port}"))
            && c.stdout
                .trim_end()
                .ends_with("within 1s (-t): is the server reachable and answering?"),
        "{}",
        c.stdout
    );
    // libpq's own connect_timeout (5 s, set by the daemon) would have answered later.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(silent);
}

/// The NRPE set-up the README gives: the monitoring user is not `sega` but a member of its
/// group, and the database is group-readable as the unit's UMask=0027 leaves it. The check
/// must work with the daemon running, after it crashed, and after a clean stop (when SQLite
/// has removed the `-wal` and `-shm` files a group member could not create again); without
/// the group it says why.
#[test]
fn check_runs_as_a_member_of_the_daemons_group() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new("check-group");
    if !env.open_to_nobody() {
        return;
    }
    // As the package sets it up: the state directory the daemon's user's, 0750.
    let state = env.db.parent().unwrap();
    std::os::unix::fs::chown(state, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o750)).unwrap();
    let start = || {
        env.start_daemon_wrapped(|c| {
            // The unit's User=sega and UMask=0027, with nobody as sega.
            let mut w = Command::new("sh");
            w.args([
                "-c",
                "umask 027 && exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"",
                "sh",
            ])
            .arg(c.get_program())
            .args(c.get_args());
            for (k, v) in c.get_envs() {
                match v {
                    Some(v) => w.env(k, v),
                    None => w.env_remove(k),
                };
            }
            w
        })
    };
    // uid 65533 ("nagios"), with nobody's group as a supplementary group, or without it.
    let check_as = |in_group: bool| {
        let c = env.nobody_cmd(&["check"]);
        let mut w = Command::new("setpriv");
        w.args(["--reuid=65533", "--regid=65533"]);
        if in_group {
            w.arg("--groups=65534");
        } else {
            w.arg("--clear-groups");
        }
        w.arg(c.get_program()).args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => w.env(k, v),
                None => w.env_remove(k),
            };
        }
        env.capture(out(w.output().unwrap()))
    };

    let mut d = start();
    d.wait_log("ready:");
    let mode = std::fs::metadata(&env.db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the database as UMask=0027 leaves it");
    let c = check_as(true);
    assert_eq!(c.code, 0, "running: {}{}", c.stdout, c.stderr);

    d.kill();
    let c = check_as(true);
    assert_eq!(c.code, 2, "crashed: {}{}", c.stdout, c.stderr);
    assert!(c.stdout.contains("daemon not running"), "{}", c.stdout);

    let mut d = start();
    d.wait_log("ready:");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    let wal = env.db.with_extension("db-wal");
    assert!(!wal.exists(), "a clean stop removes the -wal");
    let c = check_as(true);
    assert_eq!(c.code, 2, "stopped cleanly: {}{}", c.stdout, c.stderr);
    assert!(
        c.stdout
            .starts_with("SEGA CRITICAL - daemon not running | "),
        "{}",
        c.stdout
    );
    assert!(!wal.exists(), "the reader created nothing");

    let c = check_as(false);
    assert_eq!(c.code, 3, "{}", c.stdout);
    assert!(
        c.stdout.contains("cannot be read by this user") && c.stdout.contains("group sega"),
        "{}",
        c.stdout
    );
}

/// The samples of a Prometheus text file: `name{labels}` → value; every line a comment or a
/// sample whose value parses.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(name.to_owned(), v);
    }
    out
}

#[test]
fn the_metrics_file_names_the_build_counts_bytes_and_exports_timestamps() {
    let env = Env::new("metrics");
    let prom = env.dir.join("sega-uploader.prom");
    env.set("/metrics/textfile", json!(prom));
    // The heartbeat (and so the metrics file) every lease_secs / 4 = 1.25 s.
    env.set("/database/lease_secs", json!(5));
    let (a, b) = (images::jpeg_of_size(70_000, 1), jpeg(2));
    env.put("Sega_1", "a.jpg", &a);
    env.put("Sega_2", "b.jpg", &b);
    let read = || samples(&std::fs::read_to_string(&prom).unwrap_or_default());
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    wait_until("both uploaded", DEADLINE, || {
        env.count_status("uploaded") == 2
    });
    let bytes = (a.len() + b.len()) as f64;
    wait_until("the uploaded bytes in the metrics file", DEADLINE, || {
        read().get("sega_uploaded_bytes_total") == Some(&bytes)
    });
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("# TYPE sega_uploaded_bytes_total counter\n"),
        "{text}"
    );
    let m = samples(&text);

    // The build, as --version names it.
    let v = env.run(&["--version"]).stdout;
    let (version, features) = v
        .trim_end()
        .strip_prefix("sega-uploader ")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.split_once(" (features: "))
        .unwrap_or_else(|| panic!("--version: {v}"));
    assert_eq!(
        features.split(", ").any(|f| f == "postgres"),
        cfg!(feature = "postgres"),
        "--version names the postgres feature exactly when it is built in: {v}"
    );
    let features = if features == "none" {
        String::new()
    } else {
        features.replace(", ", ",")
    };
    assert_eq!(
        m.get(&format!(
            "sega_build_info{{version=\"{version}\",features=\"{features}\"}}"
        )),
        Some(&1.0),
        "{text}"
    );

    // The heartbeat as a Unix time, moving on while the daemon lives.
    let hb = m["sega_heartbeat_timestamp_seconds"];
    assert!((now_unix() - hb).abs() < 30.0, "{hb} vs {}", now_unix());
    wait_until("a later heartbeat in the file", DEADLINE, || {
        read()
            .get("sega_heartbeat_timestamp_seconds")
            .is_some_and(|t| *t > hb)
    });
    assert!(
        !m.contains_key("sega_oldest_pending_timestamp_seconds"),
        "no sample while nothing waits: {text}"
    );

    // A file the endpoint will not take yet: when it was detected, as status says.
    env.server.set_mode(Mode::Status {
        code: 503,
        fraction: 1.0,
    });
    env.put("Sega_3", "late.jpg", &jpeg(3));
    wait_until("late.jpg pending in the metrics file", DEADLINE, || {
        read().contains_key("sega_oldest_pending_timestamp_seconds")
    });
    let s: Value = serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    let at = s["oldest_pending"]["at"].as_str().unwrap();
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
    let pending_since = read()["sega_oldest_pending_timestamp_seconds"];
    assert!(
        (pending_since - at.unix_timestamp_nanos() as f64 / 1e9).abs() < 0.002,
        "{pending_since} vs {at}"
    );
    env.server.set_mode(Mode::Ok);
    wait_until("late.jpg uploaded", DEADLINE, || {
        env.count_status("uploaded") == 3
    });
    wait_until("no pending sample once nothing waits", DEADLINE, || {
        !read().contains_key("sega_oldest_pending_timestamp_seconds")
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// A daemon that holds its ledger's lock but whose heartbeat is old (it cannot write the
/// ledger: a full disk, a write lock held elsewhere) is named by its pid as not answering,
/// by `status` and by `check`, not "not running", which sent the operator looking for a
/// crash (review of 2026-12-04). The heartbeat is made old by reading it an hour later.
#[test]
fn a_daemon_holding_its_lock_with_an_old_heartbeat_is_not_answering_not_gone() {
    let env = Env::new("not-answering");
    let d = env.start_daemon();
    d.wait_log("INFO  ready: ");
    let later = utc_now_plus(time::Duration::hours(1));
    let pid = d.pid();
    let run = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("SEGA_TEST_NOW", &later);
        env.capture(out(c.output().unwrap()))
    };
    let o = run(&["status"]);
    assert!(
        o.stdout.contains(&format!(
            "daemon:    NOT ANSWERING (pid {pid} holds the ledger's lock"
        )),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = run(&["check"]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    // (An hour ahead to the second: the heartbeat is 59m59s to 1h old.)
    assert!(
        o.stdout.starts_with(&format!(
            "SEGA CRITICAL - daemon (pid {pid}) not writing its ledger, heartbeat "
        )) && o.stdout.contains(" old | "),
        "{}",
        o.stdout
    );
}
