//! The one-shot `scan`: file rules end to end, what arrives at the endpoint, the rows and
//! results it leaves, and each failure class.

use crate::util::*;
use serde_json::json;
use std::collections::BTreeMap;

both_backends!(
    scan_uploads_exactly_the_images_once_each,
    the_idempotency_key_survives_a_lost_database,
    transient_failures_leave_the_file_pending_with_its_result,
    permanent_failures_and_redirects,
    hostile_entries_are_never_opened_or_sent,
    dry_run_changes_nothing,
    scan_with_dates_backfills_outside_the_window,
    scan_records_only_while_the_daemon_holds_the_lock,
    upload_order_follows_the_config,
);

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(64, 48, seed)
}

fn scan_uploads_exactly_the_images_once_each(backend: Backend) {
    let env = Env::with_backend("decoys", backend);
    let yesterday = utc_date(-1);
    let korean = "사진 2.jpg";
    let raw_name: &[u8] = b"\xbb\xe7\xc1\xf8.jpg"; // CP949, not UTF-8
    let mut expected: BTreeMap<Vec<u8>, (String, String, String, &str)> = BTreeMap::new();
    let mut expect = |folder: &str, date: &str, name: &[u8], bytes: Vec<u8>, ct: &'static str| {
        use std::os::unix::ffi::OsStrExt;
        env.put_in(folder, date, std::ffi::OsStr::from_bytes(name), &bytes);
        expected.insert(
            name.to_vec(),
            (folder.to_string(), date.to_string(), sha256_hex(&bytes), ct),
        );
    };
    expect(
        "Sega_1",
        &env.today.clone(),
        b"a.jpg",
        jpeg(1),
        "image/jpeg",
    );
    // Awkward names, checked by the endpoint's strict multipart parser.
    expect(
        "Sega_1",
        &env.today.clone(),
        b"say \"cheese\" 100%.jpg",
        jpeg(20),
        "image/jpeg",
    );
    expect(
        "Sega_2",
        &env.today.clone(),
        b"two\nlines\r.jpg",
        jpeg(21),
        "image/jpeg",
    );
    expect(
        "Sega_1",
        &env.today.clone(),
        b"B.JPG",
        jpeg(2),
        "image/jpeg",
    );
    expect(
        "Sega_1",
        &env.today.clone(),
        b"c.png",
        images::png(20, 10, 3),
        "image/png",
    );
    expect(
        "Sega_2",
        &env.today.clone(),
        korean.as_bytes(),
        jpeg(4),
        "image/jpeg",
    );
    expect(
        "Sega_2",
        &env.today.clone(),
        raw_name,
        jpeg(5),
        "image/jpeg",
    );
    expect("Sega_3", &yesterday, b"y.jpeg", jpeg(6), "image/jpeg");
    // Decoys: no row, nothing sent.
    env.put("Sega_1", ".hidden.jpg", &jpeg(7));
    env.put("Sega_1", "d.jpg.part", &jpeg(8));
    env.put("Sega_1", "e.txt", b"hello");
    std::fs::write(env.root.join("Sega_1").join("direct.jpg"), jpeg(9)).unwrap();
    let deep = env.dir_of("Sega_1", &env.today).join("sub");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("deep.jpg"), jpeg(10)).unwrap();
    env.put_in("Sega_1", "notadate", "x.jpg", &jpeg(11));
    env.put_in("Sega_1", "2020-01-01", "old.jpg", &jpeg(12));
    env.put_in("Other", &env.today.clone(), "o.jpg", &jpeg(13));
    // Candidates whose content is wrong: a row, skipped, nothing sent.
    env.put("Sega_3", "note.jpg", b"this is text, not a JPEG");
    env.put("Sega_3", "empty.jpg", b"");

    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);

    let got = env.server.requests();
    assert_eq!(
        got.len(),
        expected.len(),
        "exactly the images: {:#?}",
        got.iter()
            .map(|r| r
                .file
                .as_ref()
                .map(|f| String::from_utf8_lossy(&f.filename).into_owned()))
            .collect::<Vec<_>>()
    );
    let mut keys = std::collections::HashSet::new();
    for r in &got {
        assert_eq!(r.status, Some(200), "{r:?}");
        assert!(r.error.is_none(), "strict multipart: {:?}", r.error);
        assert!(
            !r.chunked && r.content_length.is_some(),
            "Content-Length, never chunked"
        );
        let f = r.file.as_ref().unwrap();
        let (folder, date, sha, ct) = expected
            .get(&f.filename)
            .unwrap_or_else(|| panic!("unexpected upload {:?}", f.filename));
        assert_eq!(
            &f.sha256,
            sha,
            "bytes of {:?}",
            String::from_utf8_lossy(&f.filename)
        );
        assert_eq!(f.content_type, *ct);
        assert_eq!(f.field, "file");
        assert_eq!(
            r.fields,
            vec![
                ("folder".to_string(), folder.clone()),
                ("date".to_string(), date.clone())
            ]
        );
        assert!(r
            .header("User-Agent")
            .unwrap()
            .starts_with("sega-uploader/"));
        let key = r.header("Idempotency-Key").unwrap().to_string();
        assert!(
            key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()),
            "{key}"
        );
        assert!(keys.insert(key), "one key per file");
    }
    let raw = got
        .iter()
        .find(|r| r.file.as_ref().unwrap().filename == raw_name)
        .unwrap();
    assert_eq!(raw.file.as_ref().unwrap().filename_raw, "%BB%E7%C1%F8.jpg");
    let quoted = got
        .iter()
        .find(|r| r.file.as_ref().unwrap().filename.starts_with(b"say"))
        .unwrap();
    assert_eq!(
        quoted.file.as_ref().unwrap().filename_raw,
        "say %22cheese%22 100%25.jpg"
    );
    let korean_req = got
        .iter()
        .find(|r| r.file.as_ref().unwrap().filename == korean.as_bytes())
        .unwrap();
    assert_eq!(
        korean_req.file.as_ref().unwrap().filename_raw,
        korean,
        "valid UTF-8 goes as is"
    );

    let rows = env.rows();
    let mut by_status: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &rows {
        by_status
            .entry(r.status.clone())
            .or_default()
            .push(r.name());
    }
    assert_eq!(by_status["uploaded"].len(), expected.len(), "{by_status:?}");
    assert_eq!(by_status["skipped"].len(), 2, "{by_status:?}");
    assert_eq!(
        rows.len(),
        expected.len() + 2,
        "no rows for decoys: {by_status:?}"
    );
    assert_eq!(
        env.row("note.jpg").last_error.as_deref(),
        Some("not an image")
    );
    let raw_row = rows.iter().find(|r| r.filename == raw_name).unwrap();
    assert!(raw_row.path.ends_with(raw_name), "stored losslessly");
    for r in rows.iter().filter(|r| r.status == "uploaded") {
        assert_eq!(r.attempts, 1);
        assert!(
            r.uploaded_at
                .as_deref()
                .is_some_and(|t| t.len() == 24 && t.ends_with('Z')),
            "{:?}",
            r.uploaded_at
        );
    }
    let results = env.results();
    assert_eq!(
        results.len(),
        expected.len(),
        "one result per attempt, none for skips"
    );
    for res in &results {
        assert_eq!(
            (res.outcome.as_str(), res.http_status, res.attempt),
            ("success", Some(200), 1)
        );
        assert!(
            res.response_json
                .as_deref()
                .is_some_and(|j| j.contains("\"ok\":true")),
            "{res:?}"
        );
    }

    // A second scan sends nothing.
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(env.server.request_count(), expected.len());

    // A rewritten file is a new version: sent again, with a new key.
    let first_key = env.uploads_of(b"a.jpg")[0]
        .header("Idempotency-Key")
        .unwrap()
        .to_string();
    env.put("Sega_1", "a.jpg", &images::jpeg(80, 60, 99));
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let again = env.uploads_of(b"a.jpg");
    assert_eq!(again.len(), 2);
    assert_ne!(again[1].header("Idempotency-Key").unwrap(), first_key);
    assert_eq!(env.server.request_count(), expected.len() + 1);
}

fn the_idempotency_key_survives_a_lost_database(backend: Backend) {
    let env = Env::with_backend("idem", backend);
    env.put("Sega_1", "a.jpg", &jpeg(1));
    assert_eq!(env.run(&["scan"]).code, 0);
    env.lose_database();
    assert_eq!(env.run(&["scan"]).code, 0);
    let sent = env.uploads_of(b"a.jpg");
    assert_eq!(sent.len(), 2, "a lost database means a re-send…");
    assert_eq!(
        sent[0].header("Idempotency-Key"),
        sent[1].header("Idempotency-Key"),
        "…with the same key"
    );
}

/// One scan against the endpoint in `mode`; returns the env for inspection.
fn scan_against(name: &str, mode: Mode, backend: Backend) -> (Env, Out) {
    let env = Env::with_backend(name, backend);
    env.put("Sega_1", "a.jpg", &jpeg(1));
    env.server.set_mode(mode);
    let o = env.run(&["scan"]);
    (env, o)
}

fn transient_failures_leave_the_file_pending_with_its_result(backend: Backend) {
    for (name, mode, status, err) in [
        (
            "503",
            Mode::Status {
                code: 503,
                fraction: 1.0,
            },
            Some(503),
            "HTTP 503",
        ),
        (
            "429",
            Mode::RetryAfter { code: 429, secs: 1 },
            Some(429),
            "HTTP 429",
        ),
        ("reset", Mode::ResetMidBody { after_bytes: 100 }, None, ""),
        ("hang", Mode::Hang, None, "timed out"),
    ] {
        let (env, o) = scan_against(name, mode, backend);
        assert_eq!(
            o.code, 1,
            "{name}: a pending file makes scan exit 1: {}",
            o.stderr
        );
        let row = env.row("a.jpg");
        assert_eq!(
            (row.status.as_str(), row.attempts),
            ("pending", 1),
            "{name}"
        );
        assert!(row.last_error.is_some(), "{name}");
        let res = env.results();
        assert_eq!(res.len(), 1, "{name}");
        assert_eq!(
            (res[0].outcome.as_str(), res[0].http_status),
            ("retry", status),
            "{name}: {res:?}"
        );
        assert!(
            res[0].error.as_deref().unwrap_or("").contains(err),
            "{name}: {res:?}"
        );
        env.server.set_mode(Mode::Ok);
    }
}

fn permanent_failures_and_redirects(backend: Backend) {
    let (env, o) = scan_against(
        "400",
        Mode::Status {
            code: 400,
            fraction: 1.0,
        },
        backend,
    );
    assert_eq!(o.code, 1);
    let row = env.row("a.jpg");
    assert_eq!((row.status.as_str(), row.attempts), ("failed", 1));
    assert_eq!(env.results()[0].outcome, "failed");
    assert_eq!(env.run(&["scan"]).code, 1, "failed stays failed");
    assert_eq!(
        env.server.request_count(),
        1,
        "a failed file is not retried by itself"
    );

    let elsewhere = Server::start("127.0.0.1:0").unwrap();
    let (env, o) = scan_against(
        "302",
        Mode::Redirect {
            code: 302,
            location: elsewhere.url(),
        },
        backend,
    );
    assert_eq!(o.code, 1);
    let row = env.row("a.jpg");
    assert_eq!(row.status, "failed");
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains(&elsewhere.url()),
        "{row:?}"
    );
    assert_eq!(elsewhere.request_count(), 0, "redirects are never followed");
}

fn hostile_entries_are_never_opened_or_sent(backend: Backend) {
    let env = Env::with_backend("hostile", backend);
    let dir = env.dir_of("Sega_1", &env.today);
    let good = env.put("Sega_1", "good.jpg", &jpeg(1));
    let fifo = std::ffi::CString::new(dir.join("x.jpg").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink(&good, dir.join("inside.jpg")).unwrap();
    let outside = env.dir.join("secret.jpg");
    std::fs::write(&outside, jpeg(2)).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("outside.jpg")).unwrap();
    std::fs::create_dir(dir.join("y.jpg")).unwrap();

    let mut child = env
        .cmd(&["scan"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "scan to finish without hanging on the FIFO",
        DEADLINE,
        || child.try_wait().unwrap().is_some(),
    );
    let o = out(child.wait_with_output().unwrap());
    assert_eq!(o.code, 0, "{}", o.stderr);
    let sent: Vec<Vec<u8>> = env
        .server
        .requests()
        .iter()
        .map(|r| r.file.as_ref().unwrap().filename.clone())
        .collect();
    assert_eq!(sent, vec![b"good.jpg".to_vec()]);
    let names: Vec<String> = env.rows().iter().map(Row::name).collect();
    assert_eq!(names, vec!["good.jpg"], "no rows for non-regular entries");
    assert!(
        o.stderr.contains("x.jpg") && o.stderr.contains("Fifo"),
        "the FIFO is reported: {}",
        o.stderr
    );
}

fn dry_run_changes_nothing(backend: Backend) {
    let env = Env::with_backend("dryrun", backend);
    env.put("Sega_1", "a.jpg", &jpeg(1));
    let o = env.run(&["scan", "--dry-run"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("upload (new)") && o.stdout.contains("a.jpg"),
        "{}",
        o.stdout
    );
    assert!(
        env.ledger_untouched(),
        "nothing written to the ledger: {:?}",
        env.rows()
    );
    assert_eq!(env.server.request_count(), 0);
    assert_eq!(env.run(&["scan"]).code, 0);
    env.put("Sega_1", "b.jpg", &jpeg(2));
    let o = env.run(&["scan", "--dry-run"]);
    assert!(
        o.stdout.contains("nothing (uploaded)") && o.stdout.contains("upload (new)"),
        "{}",
        o.stdout
    );
    assert_eq!(env.server.request_count(), 1);
}

fn scan_with_dates_backfills_outside_the_window(backend: Backend) {
    let env = Env::with_backend("backfill", backend);
    env.put_in("Sega_2", "2025-03-01", "old.jpg", &jpeg(1));
    env.put("Sega_2", "new.jpg", &jpeg(2));
    assert_eq!(env.run(&["scan", "--date", "2025-03-01"]).code, 0);
    let sent: Vec<_> = env
        .server
        .requests()
        .iter()
        .map(|r| r.field("date").unwrap().to_string())
        .collect();
    assert_eq!(sent, vec!["2025-03-01"]);
}

fn scan_records_only_while_the_daemon_holds_the_lock(backend: Backend) {
    let env = Env::with_backend("locked", backend);
    env.set("/upload/url", json!("http://127.0.0.1:9/upload"));
    let mut d = env.start_daemon();
    d.wait_log("ready");
    env.put("Sega_1", "a.jpg", &jpeg(1));
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("holds the lock"), "{}", o.stdout);
    let second = env.run(&["run"]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(
        second.stderr.contains(&format!("pid {}", d.pid())),
        "names the holder: {}",
        second.stderr
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0);
}

#[test]
fn a_one_gib_file_uploads_with_flat_memory() {
    let env = Env::new("big");
    let path = env.dir_of("Sega_1", &env.today).join("big.jpg");
    {
        let f = std::fs::File::create(&path).unwrap();
        images::write_jpeg_of_size(std::io::BufWriter::with_capacity(1 << 20, f), 1 << 30, 7)
            .unwrap();
    }
    env.set("/upload/timeout_secs", json!(60));
    // With the content's checksum in a field: its pass before the send is one more read of
    // the gigabyte, in the same 64 KiB pieces.
    env.set(
        "/upload/fields",
        json!({"folder": "{folder}", "date": "{date}", "sha256": "{sha256}"}),
    );
    let mut child = env
        .cmd(&["scan"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // VmHWM is the process's own peak RSS and only grows: sampled until the exit, its last
    // value is the peak of the whole upload. (wait4's ru_maxrss would also count the test
    // process's memory, inherited for a moment between fork and exec.)
    let mut peak_kib = 0u64;
    let status = loop {
        peak_kib = peak_kib.max(vm_hwm_kib(child.id() as i32));
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(status.success(), "scan: {status}");
    let r = &env.server.requests()[0];
    let f = r.file.as_ref().unwrap();
    assert_eq!(f.size, 1 << 30);
    let peak_mib = peak_kib / 1024;
    eprintln!("1 GiB upload: scan peak RSS {peak_mib} MiB");
    assert!(
        peak_mib > 0 && peak_mib < 32,
        "memory must not grow with the file: peak {peak_mib} MiB"
    );
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    std::io::copy(&mut std::fs::File::open(&path).unwrap(), &mut h).unwrap();
    let want: String = sha2::Digest::finalize(h)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(f.sha256, want, "every byte arrived");
    assert_eq!(
        r.field("sha256"),
        Some(want.as_str()),
        "and its checksum before them"
    );
}

fn upload_order_follows_the_config(backend: Backend) {
    for (order, expected) in [
        ("oldest_first", ["old.jpg", "mid.jpg", "new.jpg"]),
        ("newest_first", ["new.jpg", "mid.jpg", "old.jpg"]),
    ] {
        let env = Env::with_backend(order, backend);
        env.set("/upload/workers", json!(1));
        env.set("/upload/order", json!(order));
        let now = std::time::SystemTime::now();
        for (name, age) in [("mid.jpg", 200), ("new.jpg", 100), ("old.jpg", 300)] {
            let p = env.put("Sega_1", name, &jpeg(age));
            let f = std::fs::File::options().write(true).open(p).unwrap();
            f.set_modified(now - std::time::Duration::from_secs(age))
                .unwrap();
        }
        assert_eq!(env.run(&["scan"]).code, 0);
        assert_eq!(env.sent_names(), expected, "{order}");
    }
}

#[test]
fn max_kib_s_caps_the_upload_rate() {
    let env = Env::new("ratecap");
    env.set("/upload/max_kib_s", json!(100));
    env.put("Sega_1", "big.jpg", &images::jpeg_of_size(200 * 1024, 1));
    let t0 = std::time::Instant::now();
    assert_eq!(env.run(&["scan"]).code, 0);
    let took = t0.elapsed();
    // 200 KiB at 100 KiB/s from an empty bucket: at least ~2 s. A lower bound only: a busy
    // machine can make it slower, never faster.
    assert!(
        took >= std::time::Duration::from_millis(1500),
        "200 KiB at 100 KiB/s took {took:?}"
    );
    assert_eq!(env.successful_uploads().len(), 1);
}
