//! Backfills (issue 16, item 4): `scan --since/--until` and `today`/`yesterday` wherever a
//! date is taken, judged by the local date as the daemon's window is; what a long scan
//! says (one summary line off a terminal, a live progress line on one, `-q`, `-v`), and
//! `migrate-db` the same; `scan --dry-run` predicting what the real scan then does.

use std::collections::BTreeMap;
use std::process::Command;

use crate::util::*;

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(16, 16, seed)
}

/// The `date` field of every upload the endpoint received, sorted.
fn sent_dates(env: &Env) -> Vec<String> {
    let mut d: Vec<String> = env
        .server
        .requests()
        .iter()
        .filter_map(|r| r.field("date").map(str::to_owned))
        .collect();
    d.sort();
    d
}

/// One file in each of these days' folders (0 = today, -1 = yesterday…), in `Sega_1`.
fn one_file_per_day(env: &Env, days: &[i64]) {
    for &d in days {
        env.put_in(
            "Sega_1",
            &utc_date(d),
            format!("day{}.jpg", -d),
            &jpeg((d + 50) as u64),
        );
    }
}

fn since_and_until_take_every_date_folder_of_the_range(backend: Backend) {
    let env = Env::with_backend("since", backend);
    one_file_per_day(&env, &[-12, -10, -6, -5, -1, 0]);
    let (from, to) = (utc_date(-10), utc_date(-5));
    let o = env.run(&["scan", "--since", &from, "--until", &to]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        sent_dates(&env),
        vec![from.clone(), utc_date(-6), to.clone()]
    );
    assert!(
        o.stdout.contains("in 3 date folder(s)") && o.stdout.contains(&format!("({from} to {to})")),
        "the summary names the date folders of the range that exist: {}",
        o.stdout
    );
    // `yesterday`, and --until defaulting to today.
    let o = env.run(&["scan", "--since", "yesterday"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        sent_dates(&env),
        vec![from, utc_date(-6), to, utc_date(-1), utc_date(0)]
    );
}

fn since_after_until_is_a_usage_error_naming_both(backend: Backend) {
    let env = Env::with_backend("since-after", backend);
    one_file_per_day(&env, &[-1]);
    let later = utc_date(-1);
    let o = env.run(&["scan", "--since", &later, "--until", &utc_date(-3)]);
    assert_eq!(o.code, 64, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "--since {later} is after --until {}",
            utc_date(-3)
        )),
        "{}",
        o.stderr
    );
    let o = env.run(&["scan", "--since", "today", "--until", "yesterday"]);
    assert_eq!(o.code, 64, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "--since today ({}) is after --until yesterday ({})",
            utc_date(0),
            utc_date(-1)
        )),
        "{}",
        o.stderr
    );
    for args in [
        &["scan", "--until", "today"][..],
        &["scan", "--date", "today", "--since", "yesterday"],
        &["scan", "--since", "tomorrow"],
        &["list", "--date", "last-week"],
    ] {
        let o = env.run(args);
        assert_eq!(o.code, 64, "{args:?}: {}", o.stderr);
    }
    assert_eq!(env.server.request_count(), 0, "nothing scanned");
}

/// Review finding: a range with no date folder in it left the scan with an empty list of
/// dates, which the ledger's due_ids reads as "every date": `scan --since 2001-01-01
/// --until 2001-01-02` sent what was pending in today's folder.
fn a_range_without_date_folders_sends_nothing(backend: Backend) {
    let env = Env::with_backend("since-empty", backend);
    env.server.set_mode(Mode::Status {
        code: 503,
        fraction: 1.0,
    });
    one_file_per_day(&env, &[0]);
    assert_eq!(env.run(&["scan"]).code, 1, "left pending");
    env.server.set_mode(Mode::Ok);
    let sent = env.server.request_count();
    let (from, to) = (utc_date(-400), utc_date(-390));
    // An hour on, so that its retry is due: a scan of every date would send it.
    let later = utc_now_plus(time::Duration::hours(1));
    let mut c = env.cmd(&["scan", "--since", &from, "--until", &to]);
    c.env("SEGA_TEST_NOW", &later);
    let o = env.capture(out(c.output().unwrap()));
    assert_eq!(
        env.server.request_count(),
        sent,
        "nothing sent: {}",
        o.stdout
    );
    assert_eq!(env.row("day0.jpg").status, "pending");
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains(&format!(
            "no date folder from {from} to {to} in the watched folders: nothing to do"
        )),
        "{}",
        o.stdout
    );
}

both_backends!(
    since_and_until_take_every_date_folder_of_the_range,
    since_after_until_is_a_usage_error_naming_both,
    a_range_without_date_folders_sends_nothing,
    dry_run_predicts_what_the_scan_does,
);

/// `today` is the host's local date, as the daemon's window judges it, not UTC's: at
/// 23:30 UTC it is already tomorrow in Seoul.
#[test]
fn today_and_yesterday_are_the_local_dates() {
    let env = Env::new("local-today");
    let name = |d: time::Date| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
    let utc_today = time::OffsetDateTime::now_utc().date();
    let now = format!("{}T23:30:00Z", name(utc_today));
    let seoul = utc_today.next_day().unwrap();
    let (today, yesterday) = (name(seoul), name(seoul.previous_day().unwrap()));
    env.put_in("Sega_1", &today, "seoul-today.jpg", &jpeg(1));
    env.put_in("Sega_1", &yesterday, "seoul-yesterday.jpg", &jpeg(2));
    let run = |args: &[&str]| {
        let mut c = env.cmd(args);
        // A POSIX TZ string: no zone database needed.
        c.env("TZ", "KST-9").env("SEGA_TEST_NOW", &now);
        env.capture(out(c.output().unwrap()))
    };
    let o = run(&["scan", "--date", "today"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(sent_dates(&env), vec![today.clone()]);
    let o = run(&["list", "--date", "yesterday"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("(0 row(s))"), "{}", o.stdout);
    let o = run(&["scan", "--date", "yesterday"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run(&["list", "--date", "yesterday"]);
    assert!(
        o.stdout.contains("seoul-yesterday.jpg") && o.stdout.contains("(1 row(s))"),
        "{}",
        o.stdout
    );
}

/// A few hundred files across three date folders.
fn backfill_tree(env: &Env, per_day: u64) {
    for d in [-4i64, -3, -2] {
        for i in 0..per_day {
            env.put_in(
                ["Sega_1", "Sega_2", "Sega_3"][i as usize % 3],
                &utc_date(d),
                format!("b{}-{i:04}.jpg", -d),
                &jpeg(i * 10 + d.unsigned_abs()),
            );
        }
    }
}

/// Off a terminal (a pipe, the journal): one summary line, no line per file; `-v` brings
/// the per-file lines back; `-q` says nothing at all.
#[test]
fn off_a_terminal_a_backfill_is_one_summary_line() {
    let env = Env::new("summary");
    env.set("/log/level", serde_json::json!("info"));
    backfill_tree(&env, 100);
    let o = env.run(&["scan", "--since", &utc_date(-4), "--until", "yesterday"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {}", o.stdout);
    let summary = lines[0];
    for part in [
        "scan: 300 candidate(s) in 3 date folder(s)",
        &format!("({} to {})", utc_date(-4), utc_date(-2)),
        "300 newly recorded, 300 uploaded, 0 to retry, 0 failed, 0 skipped in ",
        " files/s); 0 pending, 0 failed in these dates",
    ] {
        assert!(summary.contains(part), "{part:?} in {summary}");
    }
    assert_eq!(
        o.stderr.lines().count(),
        0,
        "no line per file, no progress off a terminal: {}",
        o.stderr
    );

    // -v: the daemon's line per file.
    for f in ["Sega_1", "Sega_2", "Sega_3"] {
        env.put_in(f, &utc_date(-3), "more.jpg", &jpeg(999));
    }
    let o = env.run(&["scan", "-v", "--since", &utc_date(-4)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stderr
            .lines()
            .filter(|l| l.contains(" uploaded "))
            .count(),
        3,
        "{}",
        o.stderr
    );

    // -q: errors only, and nothing went wrong.
    env.put_in("Sega_1", &utc_date(-2), "last.jpg", &jpeg(1000));
    let o = env.run(&["scan", "-q", "--since", &utc_date(-4)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("", ""));
    assert_eq!(env.count_status("uploaded"), 304);
}

/// `cmd` run on a terminal of its own (util-linux `script` with a pseudo-terminal): what
/// the terminal showed, raw. None when `script` is not installed.
fn on_a_terminal(cmd: &Command) -> Option<Out> {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_str().unwrap().replace('\'', r"'\''"));
    let mut line = quote(cmd.get_program());
    for a in cmd.get_args() {
        line += " ";
        line += &quote(a);
    }
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    match script.output() {
        Ok(o) => Some(out(o)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: `script` (util-linux) is not installed");
            None
        }
        Err(e) => panic!("running script: {e}"),
    }
}

/// The live line's draws (`\r` + erase-line + text) and what follows the last one.
fn live_lines(screen: &str) -> (Vec<&str>, &str) {
    let draws: Vec<&str> = screen.split("\r\x1b[K").skip(1).collect();
    let last = draws.last().copied().unwrap_or("");
    (draws, last)
}

/// On a terminal, a live line with the counts and the rate, redrawn in place, and erased
/// before the summary, which ends on a clean line.
#[test]
fn on_a_terminal_a_progress_line_then_the_summary() {
    let env = Env::new("progress");
    env.set("/log/level", serde_json::json!("info"));
    backfill_tree(&env, 100);
    let range = ["scan", "--since", &utc_date(-4), "--until", "yesterday"];
    let Some(o) = on_a_terminal(&env.cmd(&range)) else {
        return;
    };
    assert_eq!(o.code, 0, "{}", o.stdout);
    let (draws, last) = live_lines(&o.stdout);
    assert!(
        draws.iter().any(|d| d.starts_with("scan: listing")),
        "the listing shows: {draws:?}"
    );
    let progress: Vec<&&str> = draws.iter().filter(|d| d.contains("/300 done")).collect();
    assert!(!progress.is_empty(), "a progress line: {draws:?}");
    let final_draw = progress.last().unwrap();
    assert!(
        final_draw.starts_with("scan: 300/300 done · 300 uploaded · ")
            && final_draw.contains("files/s"),
        "the last progress line has the full counts and the rate: {final_draw:?}"
    );
    for d in &progress {
        assert!(d.chars().count() < 80, "fits the terminal: {d:?}");
    }
    // The line was erased (`\r\x1b[K` once more) and the summary written on it, ending the
    // output with a newline and nothing after.
    assert!(
        last.starts_with("scan: 300 candidate(s) in 3 date folder(s)") && last.ends_with("\r\n"),
        "the summary on a clean line at the end: {last:?}"
    );
    assert_eq!(last.matches('\r').count(), 1, "{last:?}");
    assert_eq!(env.count_status("uploaded"), 300);
}

/// `migrate-db`: a live line while it copies on a terminal, one summary line otherwise,
/// nothing with `-q`.
#[test]
fn migrate_db_shows_progress_and_one_summary_line() {
    if !crate::pg::available() {
        return;
    }
    let env = Env::with_backend("migrate-progress", Backend::Postgres);
    backfill_tree(&env, 100);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env.config_path).unwrap()).unwrap();
    config["database"].as_object_mut().unwrap().remove("url");
    let sqlite = env.dir.join("config-sqlite.json");
    std::fs::write(&sqlite, config.to_string()).unwrap();
    let o = env.capture(out(env
        .cmd_with_config(&sqlite, &["scan", "--since", &utc_date(-4)])
        .output()
        .unwrap()));
    assert_eq!(o.code, 0, "{}", o.stderr);

    let o = env.run(&["migrate-db", "-q"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "", "-q: nothing but errors");
    assert_eq!(env.rows().len(), 300);
    let o = env.run(&["migrate-db"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout.lines().count(), 1, "{}", o.stdout);
    assert!(
        o.stdout.contains("300 row(s) read from")
            && o.stdout.contains("0 added to")
            && o.stdout.contains("300 already there; in ")
            && o.stdout.contains(" rows/s)"),
        "{}",
        o.stdout
    );
    let Some(t) = on_a_terminal(&env.cmd(&["migrate-db"])) else {
        return;
    };
    assert_eq!(t.code, 0, "{}", t.stdout);
    let (draws, last) = live_lines(&t.stdout);
    assert!(
        draws
            .iter()
            .any(|d| d.starts_with("migrate-db: 300/300 row(s) read, 0 added · ")),
        "{draws:?}"
    );
    assert!(
        last.starts_with("migrate-db: 300 row(s) read from"),
        "{last:?}"
    );
}

/// What `scan --dry-run` predicts for each file is what the real scan then does: a real
/// image uploaded, a fake `.jpg` skipped as not an image (its content checked, not just its
/// name), a JPEG still being written left waiting, a FIFO and a symlink never opened and
/// never recorded.
fn dry_run_predicts_what_the_scan_does(backend: Backend) {
    let env = Env::with_backend("dry-agrees", backend);
    let dir = env.dir_of("Sega_1", &env.today);
    env.put("Sega_1", "real.jpg", &jpeg(1));
    env.put("Sega_1", "notes.jpg", b"meeting notes, not a photo\n");
    env.put("Sega_1", "half.jpg", &images::truncated_jpeg(3));
    let fifo = std::ffi::CString::new(dir.join("pipe.jpg").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let outside = Sentinel::new(env.dir.join("outside.jpg"), jpeg(4));
    std::os::unix::fs::symlink(&outside.path, dir.join("link.jpg")).unwrap();

    let o = env.run(&["scan", "--dry-run"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let predicted: BTreeMap<String, String> = o
        .stdout
        .lines()
        .filter_map(|l| {
            let (what, path) = l.rsplit_once(' ')?;
            let name = path.rsplit('/').next()?.to_owned();
            Some((name, what.split(' ').next()?.to_owned()))
        })
        .filter(|(name, _)| name.ends_with(".jpg"))
        .collect();
    let expected: BTreeMap<String, String> = [
        ("real.jpg", "upload"),
        ("notes.jpg", "skip"),
        ("half.jpg", "wait"),
        ("pipe.jpg", "ignore"),
        ("link.jpg", "ignore"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(predicted, expected, "{}", o.stdout);
    assert!(
        o.stdout.contains("skip (not an image)") && o.stdout.contains("notes.jpg"),
        "{}",
        o.stdout
    );
    assert!(env.ledger_untouched(), "the dry run changed nothing");
    assert_eq!(env.server.request_count(), 0);

    let o = env.run(&["scan"]);
    assert_eq!(o.code, 1, "half.jpg is left pending: {}", o.stderr);
    let real: BTreeMap<String, String> = env
        .rows()
        .iter()
        .map(|r| (r.name(), r.status.clone()))
        .collect();
    // What each prediction means once the scan has run.
    for (name, action) in &predicted {
        let status = real.get(name).map(String::as_str);
        let agrees = match action.as_str() {
            "upload" => status == Some("uploaded"),
            "skip" => status == Some("skipped"),
            "wait" => status == Some("pending"),
            "ignore" => status.is_none(),
            _ => false,
        };
        assert!(
            agrees,
            "{name}: predicted {action}, the scan left {status:?}"
        );
    }
    assert_eq!(
        env.row("notes.jpg").last_error.as_deref(),
        Some("not an image")
    );
    assert_eq!(env.sent_names(), vec!["real.jpg".to_string()]);
    assert!(
        outside.untouched(&env),
        "the symlink's target was never read"
    );

    // Again, after the scan: the finished rows are left alone, the waiting one still waits.
    let o = env.run(&["scan", "--dry-run"]);
    let line = |name: &str| {
        o.stdout
            .lines()
            .find(|l| l.ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("no line for {name}: {}", o.stdout))
    };
    assert!(
        line("real.jpg").starts_with("nothing (uploaded)"),
        "{}",
        o.stdout
    );
    assert!(
        line("notes.jpg").starts_with("nothing (skipped)"),
        "{}",
        o.stdout
    );
    assert!(line("half.jpg").starts_with("wait ("), "{}", o.stdout);
}
