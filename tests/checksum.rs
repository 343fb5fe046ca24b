//! `{sha256}` in `upload.fields` (issue 15, item 5): the field on the wire is the SHA-256 of
//! the file as it arrives (computed here by `sha256sum`, and by the endpoint from the bytes
//! it received), and a file that changes after it was hashed is never sent as a complete
//! form with the stale checksum: a change during the hash pass sends nothing, a change
//! during the send ends the request before its last boundary; either way the new version
//! follows with its own checksum.
//!
//! The moment of the change is made exact with real signals: the one-shot `scan` is
//! stopped (SIGSTOP) at the point the test wants (told by its read count in
//! `/proc/PID/io` and by what the endpoint has seen), the file is rewritten in place, and
//! the process continues (SIGCONT). The 1 GiB flat-memory test (`scan.rs`) runs with
//! `{sha256}` too.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::util::*;
use serde_json::json;

/// The fields every test here sends: the checksum between the others, twice (alone and
/// inside text), so its place and its rendering both show.
fn with_checksum_fields(env: &Env) {
    env.set(
        "/upload/fields",
        json!({
            "folder": "{folder}",
            "sha256": "{sha256}",
            "date": "{date}",
            "note": "sha256={sha256} size={size} {{sha256}}"
        }),
    );
}

/// `sha256sum FILE`: the checksum by a tool that shares no code with ours.
fn sha256sum(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(o.status.success(), "sha256sum {path:?}: {o:?}");
    let text = String::from_utf8(o.stdout).unwrap();
    let hex = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(hex.len(), 64, "{text}");
    hex
}

/// Asserts that a request carries the file it should, with its checksum in both fields.
fn assert_checksum_fields(r: &Request, want: &str) {
    let f = r.file.as_ref().expect("a complete file part");
    assert_eq!(f.sha256, want, "the endpoint's hash of what arrived");
    assert_eq!(r.field("sha256"), Some(want), "{:?}", r.fields);
    assert_eq!(
        r.field("note"),
        Some(format!("sha256={want} size={} {{sha256}}", f.size).as_str())
    );
    let names: Vec<&str> = r.fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["folder", "sha256", "date", "note"],
        "in config order"
    );
}

#[test]
fn the_sha256_field_is_the_checksum_of_the_file_sent() {
    let env = Env::new("sha256");
    with_checksum_fields(&env);
    let files = [
        env.put("Sega_1", "small.jpg", &images::jpeg(16, 16, 1)),
        env.put("Sega_2", "사진.png", &images::png_of_size(200 * 1024, 2)),
        // Over the 64 KiB pieces the pass and the body read in, and not a multiple of them.
        env.put(
            "Sega_3",
            "odd.jpg",
            &images::jpeg_of_size(3 * 65536 + 17, 3),
        ),
    ];
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(env.server.request_count(), 3);
    for path in &files {
        let name = path.file_name().unwrap().as_encoded_bytes();
        let sent = env.uploads_of(name);
        assert_eq!(sent.len(), 1, "{path:?}");
        assert_checksum_fields(&sent[0], &sha256sum(path));
    }
}

/// `rchar` of `/proc/PID/io`: the bytes the process has read with read(2) and its kin,
/// all threads together.
fn read_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Stops `child` with SIGSTOP and waits until every one of its threads is stopped, so
/// that what it has read and sent can no longer move.
fn stop(child: &Child) {
    let pid = child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    wait_until("every thread of the scan stopped", DEADLINE, || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(") ").and_then(|(_, s)| s.chars().next());
            matches!(state, Some('T' | 't'))
        })
    });
}

fn resume(child: &Child) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGCONT) }, 0);
}

/// Rewrites 4 KiB in the middle of the file in place (same inode, same size, the JPEG
/// markers at both ends untouched): the scan's open descriptor sees it. Its mtime must
/// change for the test to mean anything, and that is checked.
fn rewrite_middle(path: &Path) {
    let before = std::fs::metadata(path).unwrap().modified().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(&[0x5a; 4096], len / 2).unwrap();
    drop(f);
    let after = std::fs::metadata(path).unwrap().modified().unwrap();
    assert_ne!(before, after, "the rewrite gave the file a new mtime");
}

/// The scan as a child process, its stderr kept in the test tree for a failure's report.
fn spawn_scan(env: &Env, log: &str) -> Child {
    let err = std::fs::File::create(env.dir.join(log)).unwrap();
    env.cmd(&["scan"])
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child) -> i32 {
    let mut code = None;
    wait_until("the scan to exit", DEADLINE, || {
        code = child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1));
        code.is_some()
    });
    code.unwrap_or(-1)
}

#[test]
fn a_file_changed_while_it_is_hashed_is_not_sent_with_the_old_checksum() {
    let env = Env::new("sha256-pass");
    with_checksum_fields(&env);
    env.set("/upload/timeout_secs", json!(60));
    let size: u64 = 256 << 20;
    let path = env.dir_of("Sega_1", &env.today).join("big.jpg");
    {
        let f = std::fs::File::create(&path).unwrap();
        images::write_jpeg_of_size(std::io::BufWriter::with_capacity(1 << 20, f), size, 5).unwrap();
    }
    let old = sha256sum(&path);
    let mut scan = spawn_scan(&env, "scan-1.log");
    // The first 4 MiB read can only be the pass (the config, the database and the image
    // checks read a few KiB); the send opens a connection only once the pass is over.
    let pid = scan.id();
    wait_until("the scan to be hashing the file", DEADLINE, || {
        read_bytes(pid) >= 4 << 20
    });
    stop(&scan);
    let read = read_bytes(pid);
    assert!(
        read < size && env.server.connection_count() == 0,
        "stopped too late to test the pass (read {read} of {size} bytes, {} connection(s)): \
         the machine is too loaded for this test",
        env.server.connection_count()
    );
    rewrite_middle(&path);
    resume(&scan);
    assert_eq!(wait_exit(&mut scan), 1, "the new version is left pending");
    assert_eq!(
        env.server.connection_count(),
        0,
        "nothing was sent for the version that was hashed: {:?}",
        env.server.requests()
    );
    let row = env.row("big.jpg");
    assert_eq!(row.status, "pending", "{row:?}");
    // The next scan sends the new version, with the new checksum.
    let new = sha256sum(&path);
    assert_ne!(new, old);
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let sent = env.server.requests();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_checksum_fields(&sent[0], &new);
}

#[test]
fn a_file_changed_while_it_is_sent_never_completes_a_form_with_the_old_checksum() {
    let env = Env::new("sha256-send");
    with_checksum_fields(&env);
    env.set("/upload/timeout_secs", json!(60));
    // 32 MiB read by the endpoint at 8 MiB/s: the send takes about 4 s, long past the
    // moment the test stops it (the socket buffers let the body run a few MiB ahead).
    let size: u64 = 32 << 20;
    let path = env.put("Sega_1", "big.jpg", &images::jpeg_of_size(size as usize, 6));
    let old = sha256sum(&path);
    env.server.set_mode(Mode::SlowRead {
        bytes_per_sec: 8 << 20,
    });
    let mut scan = spawn_scan(&env, "scan-1.log");
    let pid = scan.id();
    wait_until("the request to be on its way", DEADLINE, || {
        env.server.request_count() == 1
    });
    stop(&scan);
    // The pass read the file once; the body has not read all of it again, so the check
    // after its last byte is still to come.
    let read = read_bytes(pid);
    assert!(
        read >= size && read < 2 * size,
        "the scan has read {read} bytes of 2 × {size}"
    );
    assert!(env.server.requests()[0].completed_at.is_none());
    rewrite_middle(&path);
    resume(&scan);
    assert_eq!(wait_exit(&mut scan), 1, "the new version is left pending");
    assert!(env.server.wait_for_requests(1, DEADLINE));
    let first = &env.server.requests()[0];
    // The body stopped short of its closing boundary and the connection closed: the
    // endpoint holds no file part and refused what it got.
    assert!(
        first.file.is_none()
            && first.status != Some(200)
            && first
                .error
                .as_deref()
                .is_some_and(|e| e.contains("connection closed")),
        "the form was never completed: {first:?}"
    );
    assert_eq!(first.field("sha256"), Some(old.as_str()));
    let row = env.row("big.jpg");
    assert_eq!(row.status, "pending", "{row:?}");
    let results = env.results();
    assert_eq!(results.len(), 1, "{results:?}");
    let error = results[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("changed while it was sent") && error.contains("{sha256}"),
        "{error}"
    );
    env.server.set_mode(Mode::Ok);
    env.server.clear();
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let sent = env.server.requests();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_checksum_fields(&sent[0], &sha256sum(&path));
}
