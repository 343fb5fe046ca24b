//! Nothing secret printed, nothing forged (DESIGN §10): credentials in the URL, header values
//! and a database password never reach a log line or a command's output, and a file name
//! cannot write a log line of its own. (Every test's config also carries seeded secrets that
//! `Env` looks for in everything it captured: see `util::SECRETS`.)

use crate::util::*;
use serde_json::json;

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(16, 16, seed)
}

/// Review item 8a: the WARN "endpoint … is down" printed `upload.url` as configured,
/// `user:password@` included.
#[test]
fn url_credentials_stay_out_of_the_outage_warning() {
    let env = Env::new("secret-url");
    env.set(
        "/upload/url",
        json!(format!(
            "http://bob:hunter2-pw@{}/upload",
            env.server.addr()
        )),
    );
    env.server.set_mode(Mode::Status {
        code: 503,
        fraction: 1.0,
    });
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    for i in 0..3 {
        env.put("Sega_1", format!("a{i}.jpg"), &jpeg(i));
    }
    d.wait_log("is down");
    let log = d.log_text();
    assert!(!log.contains("hunter2"), "{log}");
    assert!(
        log.contains("endpoint http://<redacted>@127.0.0.1"),
        "the URL is shown redacted: {log}"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

/// Review item 8b: libpq's parse errors quote the token they stop at, which was the password.
#[test]
fn an_unparsable_database_url_is_refused_without_quoting_it() {
    let env = Env::new("secret-dburl");
    env.set(
        "/database/url",
        json!("postgres://sega:Sup3r%zzSecret@127.0.0.1:1/sega"),
    );
    for args in [
        &["check-config"][..],
        &["check-config", "--offline"],
        &["run"],
        &["status"],
    ] {
        let o = env.run(args);
        assert_eq!(o.code, 78, "{args:?}: {}\n{}", o.stdout, o.stderr);
        assert!(
            o.stderr.contains("database.url") && o.stderr.contains("cannot parse"),
            "{args:?}: names the key and the problem: {}",
            o.stderr
        );
        assert!(
            !o.stdout.contains("Sup3r") && !o.stderr.contains("Sup3r"),
            "{args:?}: {}\n{}",
            o.stdout,
            o.stderr
        );
    }
}

/// Review item 9: a file name with a newline and a syslog priority wrote a standalone
/// priority-2 line under journald.
#[test]
fn a_file_name_cannot_forge_a_log_line() {
    let env = Env::new("forge");
    let mut d = env.start_daemon_with(|c| {
        c.env("JOURNAL_STREAM", "8:12345");
    });
    d.wait_log("ready:");
    let name = "cam1\n<2>sshd[1]: FORGED.jpg";
    env.put("Sega_1", name, &jpeg(1));
    wait_until("the first version", DEADLINE, || {
        env.count_status("uploaded") == 1
    });
    // A new version: its log line names the file too.
    env.put("Sega_1", name, &jpeg(2));
    wait_until("the second version", DEADLINE, || {
        env.uploads_of(name.as_bytes()).len() == 2
    });
    d.wait_log("FORGED.jpg (");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    let log = d.log_text();
    for line in log.lines() {
        assert!(
            ["<3>", "<4>", "<5>", "<6>", "<7>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "a line the daemon did not write: {line:?}"
        );
    }
    assert!(log.contains(r"cam1\x0a<2>sshd[1]: FORGED.jpg"), "{log}");
}

/// Adversarial review: at log level debug, the HTTP client's own lines named the webhook's
/// path and query ("POST /hook/<token>?token=… HTTP/1.1"), a secret as a whole.
#[test]
fn the_webhook_url_stays_out_of_debug_logs() {
    let env = Env::new("secret-hook");
    let hook = Server::start("127.0.0.1:0").unwrap();
    env.set(
        "/alerts/webhook_url",
        json!(format!(
            "{}/hook/{}?token=tok-{}",
            hook.url(),
            SECRETS[2],
            SECRETS[2]
        )),
    );
    // A 400 fails the file for good: a `file_failed` alert goes to the webhook.
    env.server.set_mode(Mode::Status {
        code: 400,
        fraction: 1.0,
    });
    let mut d = env.start_daemon();
    d.wait_log("ready:");
    env.put("Sega_1", "bad.jpg", &jpeg(1));
    wait_until("the alert delivered", DEADLINE, || {
        hook.request_count() >= 1
    });
    d.wait_log("alert sent: file_failed");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
    // The env's drop looks for the token in the log, as in every test.
}
