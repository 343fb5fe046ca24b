//! Every command's output into a pipe whose reader has gone (`status | head`, issue 16): the
//! command ends by SIGPIPE, as `cat` would (the shell's 141), with no panic text and no
//! abort; the daemon, which keeps SIGPIPE ignored, goes on uploading with nobody reading
//! its stderr; and a socket closed under an upload is an error the upload handles, not a
//! SIGPIPE that kills the command (src/cli/sigpipe.rs says why both hold).

use std::io::{pipe, PipeWriter};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

use crate::util::*;
use sega_testsrv::daemon::{signal, try_wait_child, wait_child};
use sega_testsrv::tls::{Ca, TlsFront, Validity};
use serde_json::json;

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(16, 16, seed)
}

/// The write end of a pipe whose read end is already closed: every write to it fails with
/// EPIPE and raises SIGPIPE, at once and every time, so the test does not depend on how much
/// a reader like `head` happens to read before it exits.
fn gone_reader() -> PipeWriter {
    let (reader, writer) = pipe().unwrap();
    drop(reader);
    writer
}

/// Runs `c` with its stdout into a pipe whose reader has gone; its status and its stderr.
fn with_stdout_gone(mut c: Command) -> (ExitStatus, String) {
    c.stdout(gone_reader()).stderr(Stdio::piped());
    let o = c.output().unwrap();
    (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Ended by SIGPIPE (what a shell reports as 141), without a core, and said nothing of it.
fn assert_quiet_sigpipe(what: &str, status: ExitStatus, stderr: &str) {
    assert_eq!(
        status.signal(),
        Some(libc::SIGPIPE),
        "`{what}` into a pipe with no reader ends by SIGPIPE (141 in the shell), not {status:?}: {stderr}"
    );
    assert!(!status.core_dumped(), "`{what}`: no core dump");
    for noise in ["panicked", "failed printing", "Broken pipe", "aborted"] {
        assert!(
            !stderr.contains(noise),
            "`{what}`: nothing said about the pipe ({noise:?}): {stderr}"
        );
    }
}

/// Each command, with something to print, into a pipe whose reader has gone.
fn every_command_ends_quietly_when_its_reader_goes(backend: Backend) {
    let env = Env::with_backend("pipes", backend);
    let image = env.put("Sega_1", "a.jpg", &jpeg(1));
    // A ledger with rows: one uploaded, one failed (for `retry --failed`).
    assert_eq!(env.run(&["scan"]).code, 0);
    env.server.set_mode(Mode::Status {
        code: 422,
        fraction: 1.0,
    });
    env.put("Sega_1", "b.jpg", &jpeg(2));
    assert_eq!(env.run(&["scan"]).code, 1, "b.jpg failed for good");
    env.server.set_mode(Mode::Ok);
    env.put("Sega_2", "c.jpg", &jpeg(3));
    let image_arg = image.to_str().unwrap();
    let commands: &[&[&str]] = &[
        &["--help"],
        &["--version"],
        &["scan", "--help"],
        &["check-config", "--offline"],
        &["status"],
        &["status", "--json"],
        &["list"],
        &["list", "--json"],
        &["check"],
        &["scan", "--dry-run"],
        // Uploads c.jpg, then dies at its summary line: the work is done first.
        &["scan"],
        &["upload-test", image_arg],
        &["retry", "--failed"],
    ];
    for args in commands {
        let (status, stderr) = with_stdout_gone(env.cmd(args));
        assert_quiet_sigpipe(&args.join(" "), status, &stderr);
    }
    assert_eq!(
        env.row("c.jpg").status,
        "uploaded",
        "the scan's work was saved"
    );
    assert_eq!(env.row("b.jpg").status, "pending", "retry re-queued it");
}

both_backends!(every_command_ends_quietly_when_its_reader_goes);

/// `migrate-db` (PostgreSQL only) into a pipe whose reader has gone, after its copy.
#[test]
fn migrate_db_ends_quietly_when_its_reader_goes() {
    if !crate::pg::available() {
        return;
    }
    let env = Env::with_backend("pipes-migrate", Backend::Postgres);
    env.put("Sega_1", "a.jpg", &jpeg(1));
    // The same tree and config with an SQLite ledger, to copy from.
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env.config_path).unwrap()).unwrap();
    config["database"].as_object_mut().unwrap().remove("url");
    let sqlite = env.dir.join("config-sqlite.json");
    std::fs::write(&sqlite, config.to_string()).unwrap();
    let o = env.capture(out(env
        .cmd_with_config(&sqlite, &["scan"])
        .output()
        .unwrap()));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let (status, stderr) = with_stdout_gone(env.cmd(&["migrate-db"]));
    assert_quiet_sigpipe("migrate-db", status, &stderr);
    assert_eq!(
        env.rows().len(),
        1,
        "the row was copied before the summary line"
    );
}

/// The daemon keeps SIGPIPE ignored: with nobody reading its stdout or stderr (a journal
/// stream gone, `run 2>&1 | head -1`), it still uploads, and stops cleanly on SIGTERM.
#[test]
fn the_daemon_uploads_on_with_nobody_reading_its_output() {
    let env = Env::new("pipes-daemon");
    let mut notify = Notify::new(&env);
    let mut c = env.cmd(&["run"]);
    c.env("NOTIFY_SOCKET", &notify.path)
        .stdout(gone_reader())
        .stderr(gone_reader());
    let mut daemon = Child {
        pid: c.spawn().unwrap().id() as i32,
        reaped: false,
    };
    notify.wait_for("READY=1", 0);
    // Its log lines (debug level in tests) all fail to be written from the first one on.
    for i in 0..3 {
        env.put("Sega_1", format!("d{i}.jpg"), &jpeg(i));
    }
    wait_until("three uploads by the daemon", DEADLINE, || {
        env.count_status("uploaded") == 3
    });
    assert!(daemon.running(), "the daemon is still running");
    let exit = daemon.stop();
    assert_eq!(exit.code(), 0, "{}", exit.describe());
}

/// A child the harness did not start: killed and reaped on drop unless it was reaped
/// already (a reaped pid may belong to someone else by then).
struct Child {
    pid: i32,
    reaped: bool,
}

impl Child {
    fn running(&mut self) -> bool {
        match try_wait_child(self.pid) {
            Some(_) => {
                self.reaped = true;
                false
            }
            None => true,
        }
    }

    fn stop(&mut self) -> sega_testsrv::daemon::Exit {
        signal(self.pid, libc::SIGTERM);
        let exit = wait_child(self.pid, DEADLINE).expect("the daemon stops on SIGTERM");
        self.reaped = true;
        exit
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            signal(self.pid, libc::SIGKILL);
            let _ = wait_child(self.pid, DEADLINE);
        }
    }
}

/// An https endpoint that closes the connection mid-upload: TLS records go out with
/// `writev`, which raises SIGPIPE on a closed socket. That must stay an upload error
/// (exit 1, the answer explained), never kill `upload-test` by SIGPIPE, even though
/// SIGPIPE is no longer ignored for the commands.
#[test]
fn a_connection_closed_mid_upload_is_an_error_not_a_sigpipe() {
    let env = Env::new("pipes-tls");
    let ca = Ca::new("sega test CA");
    let cert = ca.server_cert(&["127.0.0.1"], Validity::Current);
    let front = TlsFront::start(env.server.addr(), &cert, None).unwrap();
    std::fs::write(env.dir.join("ca.pem"), &ca.pem).unwrap();
    env.set("/upload/url", json!(front.url("127.0.0.1")));
    env.set("/upload/tls/ca_file", json!(env.dir.join("ca.pem")));
    env.server
        .set_mode(Mode::ResetMidBody { after_bytes: 1000 });
    // Big enough that many records are still to be written after the reset.
    let big = images::jpeg_of_size(8 << 20, 7);
    let file = env.put("Sega_1", "big.jpg", &big);
    for _ in 0..5 {
        let o = env.capture(out(env
            .cmd(&["upload-test", file.to_str().unwrap()])
            .output()
            .unwrap()));
        assert_eq!(
            o.code, 1,
            "a failed upload, not a death by signal (code -1): {}{}",
            o.stdout, o.stderr
        );
    }
}

/// Review finding: output that cannot be written (`status > /dev/full`, a full disk under
/// `list > report.txt`) made most commands panic ("failed printing to stdout", an abort in
/// the release build) and `list` and `show` exit 0 with the output lost. Each now says so
/// on stderr and fails: 1, or UNKNOWN (3) for the plugin, after doing its work.
#[test]
fn every_command_fails_plainly_when_its_output_cannot_be_written() {
    let env = Env::new("pipes-full");
    let image = env.put("Sega_1", "a.jpg", &jpeg(1));
    assert_eq!(env.run(&["scan"]).code, 0);
    env.put("Sega_2", "c.jpg", &jpeg(3));
    let image_arg = image.to_str().unwrap();
    let commands: &[(&[&str], i32)] = &[
        (&["--help"], 1),
        (&["--version"], 1),
        (&["check-config", "--offline"], 1),
        (&["status"], 1),
        (&["status", "--json"], 1),
        (&["list"], 1),
        (&["list", "-v"], 1),
        (&["list", "--json"], 1),
        (&["show", "1"], 1),
        (&["show", "1", "--json"], 1),
        (&["check"], 3),
        (&["check", "--warn-failed", "x"], 3),
        (&["scan", "--dry-run"], 1),
        // Uploads c.jpg, then cannot print its summary line: the work is done first.
        (&["scan"], 1),
        (&["upload-test", image_arg], 1),
    ];
    for (args, code) in commands {
        let what = args.join(" ");
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut c = env.cmd(args);
        c.stdout(full).stderr(Stdio::piped());
        let o = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(*code),
            "`{what} > /dev/full` fails plainly, not {:?}: {stderr}",
            o.status
        );
        assert!(
            stderr.contains("writing to standard output: No space left on device"),
            "`{what}` says why: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "`{what}`: no panic: {stderr}");
    }
    assert_eq!(
        env.row("c.jpg").status,
        "uploaded",
        "the scan's work was saved"
    );
    // A usage error whose message cannot be written either: still exit 64, no panic.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut c = env.cmd(&["no-such-command"]);
    c.stderr(full);
    let status = c.status().unwrap();
    assert_eq!(status.code(), Some(64), "{status:?}");
}
