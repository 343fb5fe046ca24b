//! Small truths an operator reads first (issue 16): the daemon's `ready:` line counts what
//! the ledger holds, and the catch-up scan says what it added; a config readable only by
//! group `sega` says what to do about it, naming the file.

use std::os::unix::fs::PermissionsExt;

use crate::util::*;
use serde_json::json;

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(16, 16, seed)
}

/// 200 files left pending by a scan against an endpoint that refuses connections, 50 more
/// written while no daemon ran: the `ready:` line says 200 pending (the ledger's count, not
/// the zero of a count not yet made), and the catch-up scan then says it recorded the 50
/// and that 250 are pending.
fn the_ready_line_counts_what_the_ledger_holds(backend: Backend) {
    let env = Env::with_backend("ready-count", backend);
    env.set("/upload/url", json!("http://127.0.0.1:9/upload"));
    for i in 0..200 {
        env.put(
            ["Sega_1", "Sega_2"][i % 2],
            format!("p{i:03}.jpg"),
            &jpeg(i as u64),
        );
    }
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 1, "left pending: {}{}", o.stdout, o.stderr);
    assert_eq!(env.count_status("pending"), 200);
    for i in 0..50 {
        env.put("Sega_3", format!("n{i:03}.jpg"), &jpeg(1000 + i));
    }
    let d = env.start_daemon();
    // The INFO line (the ticker's own DEBUG line starts the same way).
    d.wait_log("INFO  catch-up scan:");
    let log = d.log_text();
    let ready = log
        .lines()
        .find(|l| l.contains("INFO  ready: "))
        .unwrap_or_else(|| panic!("no ready line: {log}"));
    assert!(
        ready.contains("; 200 pending; ") && ready.ends_with("; catch-up scan running"),
        "{ready}"
    );
    let catch_up = log
        .lines()
        .find(|l| l.contains("INFO  catch-up scan:"))
        .unwrap();
    assert!(
        catch_up.contains(", 50 newly recorded; 250 pending"),
        "{catch_up}"
    );
}

both_backends!(the_ready_line_counts_what_the_ledger_holds);

/// A group of the system's that `nobody` is not in (nor root's): its id and name.
fn a_group_nobody_is_not_in() -> Option<(u32, String)> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let gid: u32 = f.get(2)?.parse().ok()?;
        let members = f.get(3).copied().unwrap_or("");
        ((1..1000).contains(&gid) && !members.split(',').any(|m| m == "nobody"))
            .then(|| (gid, f[0].to_owned()))
    })
}

/// The package installs the config root:sega 0640: a user outside the group is told to use
/// sudo or join the group, with the command, and the file is named.
#[test]
fn a_config_readable_by_a_group_only_says_how_to_get_in() {
    let env = Env::new("config-group");
    if !env.open_to_nobody() {
        return;
    }
    let Some((gid, group)) = a_group_nobody_is_not_in() else {
        eprintln!("skipped: no group in /etc/group to give the config to");
        return;
    };
    std::os::unix::fs::chown(&env.config_path, Some(0), Some(gid)).unwrap();
    std::fs::set_permissions(&env.config_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    for cmd in ["status", "check-config", "run"] {
        let o = env.capture(out(env.nobody_cmd(&[cmd]).output().unwrap()));
        assert_eq!(o.code, 78, "{cmd}: {}", o.stderr);
        let expected = format!(
            "sega-uploader: {}: cannot read: permission denied; it is readable by group {group} (mode 0640), which this user is not in: run with sudo, or add yourself to group {group}: sudo usermod -aG {group} $USER (then log in again)\n",
            env.config_path.display()
        );
        assert_eq!(o.stderr, expected, "{cmd}");
    }
    // Readable by its owner alone: sudo is the answer.
    std::fs::set_permissions(&env.config_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = env.capture(out(env.nobody_cmd(&["status"]).output().unwrap()));
    assert_eq!(o.code, 78, "{}", o.stderr);
    assert!(
        o.stderr
            .ends_with(": cannot read: permission denied; run with sudo\n"),
        "{}",
        o.stderr
    );
    // The plugin says it in its one line, as UNKNOWN.
    let o = env.capture(out(env.nobody_cmd(&["check"]).output().unwrap()));
    assert_eq!(o.code, 3, "{}", o.stdout);
    assert!(
        o.stdout.contains("permission denied; run with sudo"),
        "{}",
        o.stdout
    );
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and a mode.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "{path:?}");
}

/// A FIFO where the database or its lock file should be (a slip of the operator's, or a
/// trap): every command says so and ends, none waits for a writer that never comes.
#[test]
fn a_fifo_in_place_of_the_database_or_its_lock_blocks_nothing() {
    let env = Env::new("fifo-db");
    env.put("Sega_1", "a.jpg", &jpeg(1));
    mkfifo(&env.db);
    for args in [&["status"][..], &["list"], &["scan"], &["run"]] {
        let mut d = env.spawn(env.cmd(args), |_| {});
        let code = d.wait_exit(DEADLINE);
        assert_ne!(code, 0, "{args:?}: {}", d.log_text());
        assert!(
            d.log_text().contains("not a regular file (FIFO)"),
            "{args:?}: {}",
            d.log_text()
        );
    }
    std::fs::remove_file(&env.db).unwrap();

    // The lock file: the daemon refuses it, `status` reads the ledger without it.
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let mut lock = env.db.clone().into_os_string();
    lock.push(".lock");
    let lock = std::path::PathBuf::from(lock);
    std::fs::remove_file(&lock).unwrap();
    mkfifo(&lock);
    let mut d = env.spawn(env.cmd(&["status"]), |_| {});
    assert_eq!(d.wait_exit(DEADLINE), 0, "{}", d.log_text());
    let mut d = env.start_daemon();
    assert_ne!(d.wait_exit(DEADLINE), 0, "{}", d.log_text());
    assert!(
        d.log_text().contains("not a regular file (FIFO)"),
        "{}",
        d.log_text()
    );
}

/// `log.file` naming a FIFO nothing reads: the daemon says so and ends, where it waited in
/// the open for ever, before READY and without a word (review of 2026-12-04).
#[test]
fn a_fifo_as_the_log_file_is_refused_not_waited_on() {
    let env = Env::new("fifo-log");
    let log = env.dir.join("sega.log");
    mkfifo(&log);
    env.set("/log/file", json!(log));
    let mut d = env.spawn(env.cmd(&["run"]), |_| {});
    let code = d.wait_exit(DEADLINE);
    let text = d.log_text();
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("opening log file") && text.contains("not a regular file (FIFO)"),
        "{text}"
    );
}
