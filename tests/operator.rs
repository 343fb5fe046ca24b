//! What an operator reads when a file failed (issue 16): `show` (the row and every stored
//! attempt with the endpoint's answer, pretty-printed, made safe, cut with its stored
//! length), `list`'s time column and `-v`, human times in local time with their offset
//! (`TZ=Asia/Seoul`, `TZ=UTC`) while JSON stays UTC, and `upload-test`'s printed request and
//! its refusal of a file from outside the watched folders.

use crate::util::*;
use serde_json::Value;

both_backends!(show_prints_each_attempt_with_the_answer_as_stored);

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(16, 16, seed)
}

const DETAIL: &str = r#"{"detail":"missing field camera_id"}"#;

/// `list -v` reads the latest answers a chunk of rows at a time (500): every row of a list
/// longer than a chunk still gets its own answer, in the table and in JSON.
#[test]
fn list_v_gives_every_row_its_answer_past_a_chunk() {
    let env = Env::new("list-chunks");
    for i in 0..520 {
        env.put("Sega_1", format!("f{i:03}.jpg"), &jpeg(i));
    }
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let o = env.run(&["list", "-v", "--limit", "0"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let answers = o
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("> HTTP 200 "))
        .count();
    assert_eq!(answers, 520, "{}", o.stdout);
    assert!(o.stdout.ends_with("(520 row(s))\n"), "{}", o.stdout);
    let o = env.run(&["list", "-v", "--json", "--limit", "0"]);
    let rows: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 520);
    for row in &rows {
        let answer = row["last_answer"].as_str().unwrap_or_default();
        assert!(answer.starts_with("HTTP 200 "), "{row}");
        // Each row's own answer: the endpoint echoes the file name.
        let name = row["filename"].as_str().unwrap_or_default();
        assert!(answer.contains(name), "{row}");
    }
}

/// An endpoint (or a proxy) that refuses a request from its head alone and closes with the
/// body unread makes the write of a large body fail; the answer it sent is what the row and
/// the stored attempt say, not "connection reset" or "broken pipe" (a 413 fails the file, as
/// any 4xx does, where a network error would have retried it for ever).
#[test]
fn an_answer_sent_before_the_body_was_read_is_what_the_operator_reads() {
    let env = Env::new("early-answer");
    let big = env.scan_a_big_file_refused_by_its_head();
    let asked = env.server.requests();
    assert_eq!(asked.len(), 1, "one request, refused by its head");
    assert_eq!(asked[0].status, Some(413));
    let o = env.run(&["show", big.to_str().unwrap()]);
    assert!(o.stdout.contains("HTTP 413  failed"), "{}", o.stdout);
    assert!(o.stdout.contains("refused before the body"), "{}", o.stdout);

    // A 2xx before the body was written cannot mean the file arrived: the failed write
    // stands, and the file waits for another attempt.
    env.server.set_mode(Mode::Early { code: 200 });
    env.put("Sega_1", "other.jpg", &images::jpeg_of_size(48 << 20, 2));
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    let row = env.row("other.jpg");
    assert_eq!(row.status, "pending", "{}", o.stderr);
    let error = row.last_error.unwrap_or_default();
    assert!(!error.starts_with("HTTP"), "{error}");
}

fn show_prints_each_attempt_with_the_answer_as_stored(backend: Backend) {
    let env = Env::with_backend("show", backend);
    env.server.set_mode(Mode::Answer {
        code: 422,
        body: DETAIL.into(),
    });
    let bad = env.put("Sega_1", "bad.jpg", &jpeg(1));
    let bad = bad.to_str().unwrap();
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 1, "a file failed: {}\n{}", o.stdout, o.stderr);

    let o = env.run(&["show", bad]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let text = &o.stdout;
    assert!(text.contains("status:        failed"), "{text}");
    assert!(text.contains("last error:    HTTP 422"), "{text}");
    assert!(text.contains("HTTP 422  failed"), "{text}");
    assert!(
        text.contains(
            "  answer (36 bytes as stored; JSON, pretty-printed):\n    {\n      \"detail\": \"missing field camera_id\"\n    }\n"
        ),
        "the body, pretty-printed: {text}"
    );

    // --json: one object, the answer parsed, times UTC.
    let o = env.run(&["show", "--json", bad]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: Value = serde_json::from_str(&o.stdout).expect("show --json is one JSON document");
    assert_eq!(v["file"]["status"], "failed", "{v}");
    assert_eq!(v["file"]["filename"], "bad.jpg", "{v}");
    let r = &v["results"][0];
    assert_eq!(v["results"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(r["http_status"], 422, "{v}");
    assert_eq!(r["outcome"], "failed", "{v}");
    assert_eq!(r["response_body"], DETAIL, "{v}");
    assert_eq!(
        r["response_json"]["detail"], "missing field camera_id",
        "{v}"
    );
    let started = r["started_at"].as_str().unwrap_or_default();
    assert!(started.ends_with('Z') && started.len() == 24, "UTC: {v}");

    // The same file by its id and by the folder/date/name `list` shows.
    let id = v["file"]["id"].as_i64().expect("an id");
    for arg in [id.to_string(), format!("Sega_1/{}/bad.jpg", env.today)] {
        let o = env.run(&["show", &arg]);
        assert_eq!(o.code, 0, "show {arg}: {}", o.stderr);
        assert!(
            o.stdout.starts_with(&format!("file {id}  ")),
            "show {arg}: {}",
            o.stdout
        );
    }
    // What is not recorded: EX_NOINPUT, saying so.
    let o = env.run(&["show", "987654321"]);
    assert_eq!(o.code, 66, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("no file with id 987654321"),
        "{}",
        o.stderr
    );
    let o = env.run(&["show", "Sega_1/2026-01-01/nope.jpg"]);
    assert_eq!(o.code, 66, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("is not recorded"), "{}", o.stderr);
    assert_eq!(env.run(&["show"]).code, 64);

    // list -v: the last answer in one line.
    let o = env.run(&["list", "-v"]);
    assert!(
        o.stdout.contains(&format!("> HTTP 422 {DETAIL}")),
        "{}",
        o.stdout
    );
    let o = env.run(&["list", "-v", "--json"]);
    let row: Value = serde_json::from_str(o.stdout.lines().next().unwrap_or("")).unwrap();
    assert_eq!(row["last_answer"], format!("HTTP 422 {DETAIL}"), "{row}");

    // An answer that tries to drive the terminal, 70 KiB long: escaped, cut, its stored
    // length said; --full prints it whole.
    let body = format!(
        "\u{1b}[2J\u{1b}]0;pwned\u{7}{}",
        "0123456789abcdef\n".repeat(70 * 1024 / 17)
    );
    env.server.set_mode(Mode::Answer { code: 500, body });
    let big = env.put("Sega_2", "big.jpg", &jpeg(2));
    let big = big.to_str().unwrap();
    assert_eq!(env.run(&["scan"]).code, 1, "left pending");
    let o = env.run(&["show", big]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        !o.stdout.contains('\u{1b}'),
        "a raw ESC reached the terminal"
    );
    assert!(
        o.stdout
            .contains("  \\x1b[2J\\x1b]0;pwned\\x070123456789abcdef\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(&format!(
            "answer ({} bytes as stored; the ledger keeps the first 64 KiB of an answer: it may have been longer)",
            64 * 1024
        )),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("… cut here: ") && o.stdout.contains("`show --full`"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.lines().count() < 100, "cut: {}", o.stdout.len());
    let o = env.run(&["show", "--full", big]);
    assert!(o.stdout.lines().count() > 3000, "whole: {}", o.stdout.len());
}

/// With `TZ=Asia/Seoul`, `status`, `list` and `show` say `02:10:… +09:00` where the ledger
/// and the JSON say `17:10:…Z` the day before; with `TZ=UTC`, `+00:00`.
#[test]
fn human_times_are_local_with_their_offset_and_json_stays_utc() {
    assert!(
        std::path::Path::new("/usr/share/zoneinfo/Asia/Seoul").exists(),
        "this test needs the zoneinfo database (the tzdata package)"
    );
    let env = Env::new("localtime");
    let day_before = utc_date(-1);
    // 17:10 UTC is 02:10 the next day in Seoul (no DST): the test's date folder. Each command's
    // clock starts there and runs in real time, so a minute's margin is in the seconds.
    let now = format!("{day_before}T17:10:00Z");
    env.server.set_mode(Mode::Answer {
        code: 422,
        body: DETAIL.into(),
    });
    let bad = env.put("Sega_1", "bad.jpg", &jpeg(1));
    let run = |tz: &str, args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("TZ", tz).env("SEGA_TEST_NOW", &now);
        env.capture(out(c.output().unwrap()))
    };
    assert_eq!(run("Asia/Seoul", &["scan"]).code, 1);

    let seoul = format!("{} 02:10:", env.today);
    let utc = format!("{day_before} 17:10:");
    for (tz, at, offset) in [("Asia/Seoul", &seoul, "+09:00"), ("UTC", &utc, "+00:00")] {
        let o = run(tz, &["status"]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let line = o
            .stdout
            .lines()
            .find(|l| l.starts_with("last error:"))
            .unwrap_or_else(|| panic!("no last error line: {}", o.stdout));
        assert!(
            line.starts_with(&format!("last error:      {at}")) && line.contains(offset),
            "TZ={tz}: {line}"
        );

        let o = run(tz, &["list"]);
        assert!(o.stdout.contains("last change"), "{}", o.stdout);
        let row = o
            .stdout
            .lines()
            .find(|l| l.ends_with("bad.jpg"))
            .unwrap_or_else(|| panic!("no row: {}", o.stdout));
        assert!(
            row.contains(at.as_str()) && row.contains(offset),
            "TZ={tz}: {row}"
        );

        let o = run(tz, &["show", bad.to_str().unwrap()]);
        let attempt = o
            .stdout
            .lines()
            .find(|l| l.starts_with("attempt 1  "))
            .unwrap_or_else(|| panic!("no attempt: {}", o.stdout));
        assert!(
            attempt.starts_with(&format!("attempt 1  {at}")) && attempt.contains(offset),
            "TZ={tz}: {attempt}"
        );
    }

    // JSON and the ledger: UTC, whatever TZ says.
    let o = run("Asia/Seoul", &["status", "--json"]);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    let at = v["last_error"]["at"].as_str().unwrap_or_default();
    assert!(
        at.starts_with(&format!("{day_before}T17:10:")) && at.ends_with('Z'),
        "{v}"
    );
    let o = run("Asia/Seoul", &["list", "--json"]);
    let row: Value = serde_json::from_str(o.stdout.lines().next().unwrap_or("")).unwrap();
    let updated = row["updated_at"].as_str().unwrap_or_default();
    assert!(
        updated.starts_with(&format!("{day_before}T17:10:")) && updated.ends_with('Z'),
        "{row}"
    );
    let stored: String = env
        .sqlite_writer()
        .query_row("SELECT updated_at FROM files", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, updated, "the ledger's own text");
}

#[test]
fn upload_test_prints_what_it_sends_and_refuses_a_file_from_elsewhere() {
    let env = Env::new("uploadtest-req");
    env.set(
        "/upload/fields",
        serde_json::json!({ "folder": "{folder}", "date": "{date}", "camera": "cam-{filename}" }),
    );
    let p = env.put("Sega_1", "probe.jpg", &jpeg(1));
    let o = env.run(&["upload-test", p.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    // Every header value from the config is a secret, and so are the URL's credentials
    // (the env checks that no secret was printed at all).
    for line in [
        "User-Agent: sega-uploader/",
        "X-Api-Key: <redacted>\n",
        "Authorization: <redacted> (Basic: the user and password in upload.url)\n",
        "Idempotency-Key: ",
        "  folder = Sega_1\n",
        &format!("  date = {}\n", env.today),
        "  camera = cam-probe.jpg\n",
        "file part \"file\": filename=\"probe.jpg\", image/jpeg, ",
    ] {
        assert!(o.stdout.contains(line), "{line:?} in:\n{}", o.stdout);
    }
    // What it printed is what the endpoint received.
    let req = env.server.requests().pop().expect("one request");
    assert_eq!(
        req.fields,
        [
            ("folder".to_string(), "Sega_1".to_string()),
            ("date".to_string(), env.today.clone()),
            ("camera".to_string(), "cam-probe.jpg".to_string()),
        ]
    );

    // A file outside the watched folders: refused, nothing sent, unless --force.
    let elsewhere = env.dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let stray = elsewhere.join("private.jpg");
    std::fs::write(&stray, jpeg(2)).unwrap();
    let sent = env.server.request_count();
    let o = env.run(&["upload-test", stray.to_str().unwrap()]);
    assert_eq!(o.code, 64, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("is not in a watched folder")
            && o.stderr
                .contains("--force sends it anyway, with folder \"\" and date \"elsewhere\""),
        "{}",
        o.stderr
    );
    assert_eq!(env.server.request_count(), sent, "nothing was sent");
    let o = env.run(&["upload-test", "--force", stray.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("outside the watched folders (--force)"),
        "{}",
        o.stdout
    );
    let req = env.server.requests().pop().expect("the forced request");
    assert_eq!(req.fields[0], ("folder".to_string(), String::new()));
}

/// Review finding: `cd` into a date folder, then `upload-test a.jpg` said "resolving a.jpg: no
/// such file or directory" (the parent of a bare name is the empty path, which does not
/// resolve), and `upload-test /` named the working directory as the file refused.
#[test]
fn upload_test_takes_a_bare_name_in_the_working_directory() {
    let env = Env::new("uploadtest-cwd");
    let p = env.put("Sega_1", "here.jpg", &jpeg(1));
    let mut c = env.cmd(&["upload-test", "here.jpg"]);
    c.current_dir(p.parent().unwrap());
    let o = env.capture(out(c.output().unwrap()));
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("  folder = Sega_1\n"),
        "located in its folder: {}",
        o.stdout
    );
    let req = env.server.requests().pop().expect("one request");
    assert_eq!(req.fields[0], ("folder".to_string(), "Sega_1".to_string()));

    let mut c = env.cmd(&["upload-test", "/"]);
    c.current_dir(p.parent().unwrap());
    let o = env.capture(out(c.output().unwrap()));
    assert_eq!(o.code, 64, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains(" / is not in a watched folder"),
        "names what was given: {}",
        o.stderr
    );
}

/// Review finding: with `watch.root` a link (`/data` → `/mnt/disk1`), an operator in a date
/// folder has the link's target as working directory, and `show a.jpg` or `retry a.jpg`
/// said "not recorded": the ledger knows the file under the configured root.
#[test]
fn show_and_retry_find_a_file_named_through_a_linked_root() {
    let env = Env::new("show-linked-root");
    let link = env.dir.join("linked-root");
    std::os::unix::fs::symlink(&env.root, &link).unwrap();
    env.set("/watch/root", serde_json::json!(link));
    let p = env.put("Sega_1", "here.jpg", &jpeg(1));
    assert_eq!(env.run(&["scan"]).code, 0);
    // The working directory as the kernel has it: the real path, not the link.
    let cwd = p.parent().unwrap().canonicalize().unwrap();
    let recorded = link.join("Sega_1").join(&env.today).join("here.jpg");
    let mut c = env.cmd(&["show", "here.jpg"]);
    c.current_dir(&cwd);
    let o = env.capture(out(c.output().unwrap()));
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains(recorded.to_str().unwrap()),
        "the row recorded under the link: {}",
        o.stdout
    );
    let mut c = env.cmd(&["retry", "--force", "here.jpg"]);
    c.current_dir(&cwd);
    let o = env.capture(out(c.output().unwrap()));
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(env.row("here.jpg").status, "pending", "re-queued");
}

/// Review finding: a ledger row at the end of time (damaged, hand-edited, or from a peer
/// whose clock ran wild) made `list` and `show` panic in any zone east of UTC: the local
/// time would be in year 10000. It is shown in UTC instead.
#[test]
fn a_time_at_the_end_of_the_calendar_is_shown_not_a_panic() {
    let env = Env::new("end-of-time");
    env.put("Sega_1", "late.jpg", &jpeg(1));
    assert_eq!(env.run(&["scan"]).code, 0);
    env.sqlite_writer()
        .execute(
            "UPDATE files SET updated_at = '9999-12-31T23:59:59.999Z', \
             next_attempt_at = '9999-12-31T23:59:59.999Z'",
            [],
        )
        .unwrap();
    for args in [&["list"][..], &["show", "1"], &["status"]] {
        let mut c = env.cmd(args);
        c.env("TZ", "KST-9");
        let o = env.capture(out(c.output().unwrap()));
        assert_eq!(o.code, 0, "{args:?}: {}\n{}", o.stdout, o.stderr);
        assert!(!o.stderr.contains("panicked"), "{args:?}: {}", o.stderr);
    }
    let mut c = env.cmd(&["list"]);
    c.env("TZ", "KST-9");
    let o = env.capture(out(c.output().unwrap()));
    assert!(
        o.stdout.contains("9999-12-31 23:59:59 +00:00"),
        "{}",
        o.stdout
    );
}
