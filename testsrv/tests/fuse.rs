//! The hanging FUSE filesystem on its own, with plain tools as its clients: the tree reads
//! as written, a READ of a hanging file holds its reader until released (then EIO) or until
//! the reader is killed, and nothing is mounted outside the reader's namespace.
//!
//! Root and /dev/fuse are needed: elsewhere each test says "skipped: …" (under CI=true, a
//! failure: the suite must not pass by skipping the hung-mount tests).

use sega_testsrv::fuse::{self, HangingFs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A fresh empty directory to mount on, removed when dropped (out here it stays an empty
/// directory: the mounts are in the readers' namespaces).
struct Mountpoint(PathBuf);

impl Drop for Mountpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A mount point; None (the reason printed) when FUSE cannot be mounted here.
fn mountpoint(name: &str) -> Option<Mountpoint> {
    let dir = std::env::temp_dir().join(format!("sega-fuse-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dir = Mountpoint(dir);
    match fuse::check(&dir.0) {
        Ok(()) => Some(dir),
        Err(why) if sega_testsrv::pg::ci() => panic!("CI=true but {why}"),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < end, "timeout waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exited(c: &mut Child) -> bool {
    c.try_wait().unwrap().is_some()
}

fn tree() -> HangingFs {
    HangingFs::new(
        &[
            ("d/2026-01-02/ok.jpg", b"ok bytes"),
            ("d/2026-01-02/hang.jpg", b"hang bytes"),
        ],
        &["d/2026-01-02/hang.jpg"],
    )
    .unwrap()
}

/// `sh -c script` in a namespace where the filesystem is mounted on `$MNT`.
fn sh(fs: &HangingFs, mnt: &Mountpoint, script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]).current_dir("/");
    c.env("MNT", &mnt.0);
    fs.mount_for(&mut c, &mnt.0);
    c
}

#[test]
fn the_tree_reads_as_written_and_only_inside_its_namespace() {
    let Some(mnt) = mountpoint("tree") else {
        return;
    };
    let fs = tree();
    let o = sh(
        &fs,
        &mnt,
        "cd \"$MNT\" && find . | sort && cat d/2026-01-02/ok.jpg && stat -f -c ' %t' . && \
         stat -c ' %s %F' d/2026-01-02/hang.jpg",
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        stdout,
        ".\n./d\n./d/2026-01-02\n./d/2026-01-02/hang.jpg\n./d/2026-01-02/ok.jpg\n\
         ok bytes 65735546\n 10 regular file\n",
        "the listing, ok.jpg's bytes, FUSE's statfs magic, hang.jpg's lstat"
    );
    // Out here the mount point is the empty directory it was.
    assert_eq!(std::fs::read_dir(&mnt.0).unwrap().count(), 0);
    assert_eq!(fs.held(), 0, "lstat and listing never read");
}

#[test]
fn a_hanging_read_holds_its_reader_until_released() {
    let Some(mnt) = mountpoint("release") else {
        return;
    };
    let fs = tree();
    let reader = sh(
        &fs,
        &mnt,
        "f=\"$MNT/d/2026-01-02/hang.jpg\"; cat \"$f\"; echo \"first: $?\" >&2; cat \"$f\"",
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until("the READ to be held", || fs.held() == 1);
    fs.release();
    let o = reader.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("Input/output error") && stderr.contains("first: 1"),
        "the held READ fails: {stderr}"
    );
    // Released, the file reads.
    assert_eq!(o.stdout, b"hang bytes", "{stderr}");
}

#[test]
fn a_reader_held_by_a_hanging_read_gives_way_to_sigkill_only() {
    let Some(mnt) = mountpoint("kill") else {
        return;
    };
    let fs = tree();
    // The shell reads the file itself (`read`), and handles SIGUSR1.
    let mut reader = sh(
        &fs,
        &mnt,
        "trap 'echo usr1 >&2' USR1; read -r x < \"$MNT/d/2026-01-02/hang.jpg\"",
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_until("the READ to be held", || fs.held() == 1);
    // A signal that does not kill waits, as on a hard mount (the kernel's one INTERRUPT for
    // this request is spent on it).
    unsafe { libc::kill(reader.id() as i32, libc::SIGUSR1) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!exited(&mut reader), "a held READ gave way to SIGUSR1");
    assert_eq!(fs.held(), 1);
    reader.kill().unwrap();
    wait_until("the killed reader to end", || exited(&mut reader));
    assert_eq!(fs.held(), 0);
}
