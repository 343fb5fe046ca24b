//! Test support: one throwaway PostgreSQL cluster per test process, started on first use,
//! and a fresh database per test so tests are independent and run in parallel.
//!
//! The cluster lives in a temp dir and listens only on a unix socket there (no TCP port,
//! nothing to collide with). As root, `initdb`/`pg_ctl` run through `runuser -u postgres`
//! (the server refuses to run as root); as anyone else, as that user. A detached watcher
//! stops the cluster and removes the dir when the test process exits, however it exits.
//!
//! Without the server binaries the PostgreSQL tests pass vacuously with a note on stderr,
//! except under `CI=true`, where that is a failure: CI must never skip them silently.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::Connection;

struct Cluster {
    /// The socket directory (and the cluster's home).
    dir: PathBuf,
    /// A connection to the `postgres` database, to create test databases one at a time.
    admin: Mutex<PgConnection>,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

/// A conninfo for a new, empty database, or None when PostgreSQL is not installed here (and
/// this is not CI).
pub fn database() -> Option<String> {
    let cluster = CLUSTER.get_or_init(|| match start() {
        Ok(c) => Some(c),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("PostgreSQL tests cannot run in CI: {why}")
        }
        Err(why) => {
            eprintln!("skipping PostgreSQL tests: {why}");
            None
        }
    });
    let cluster = cluster.as_ref()?;
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("t_{}", N.fetch_add(1, Ordering::Relaxed));
    cluster
        .admin
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("creating a test database");
    Some(format!(
        "host={} user=postgres dbname={name}",
        cluster.dir.display()
    ))
}

/// The newest installed server's bin directory.
fn server_bin() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no /usr/lib/postgresql ({e}); install postgresql"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| "no /usr/lib/postgresql/*/bin/initdb; install postgresql".into())
}

/// Runs `program args…` as the cluster's owner: postgres when we are root.
fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn start() -> Result<Cluster, String> {
    let bin = server_bin()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    // Short: the socket path (dir + "/.s.PGSQL.5432") must fit in sun_path (108 bytes).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = PathBuf::from(format!("/tmp/sega-pg-{}-{nanos:x}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // 0755: the server (postgres) owns it; the tests' user must reach the socket.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    if root {
        let mut c = Command::new("chown");
        c.arg("postgres:").arg(&dir);
        run(c, "chown postgres")?;
    }
    // Stop and remove the cluster when this process is gone. Its own process group, so a
    // signal to the test run's group does not take the watcher down before it cleans up.
    let pg_ctl = bin.join("pg_ctl");
    let stop = if root {
        format!(
            "runuser -u postgres -- '{}' -D '{}/data' -m immediate stop",
            pg_ctl.display(),
            dir.display()
        )
    } else {
        format!(
            "'{}' -D '{}/data' -m immediate stop",
            pg_ctl.display(),
            dir.display()
        )
    };
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{}'",
            std::process::id(),
            dir.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("spawning the cluster's watcher: {e}"))?;

    let data = dir.join("data");
    let mut initdb = as_owner(root, &bin.join("initdb"));
    initdb.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "--no-sync",
        "-E",
        "UTF8",
        "--no-locale",
    ]);
    run(initdb, "initdb")?;
    let mut ctl = as_owner(root, &pg_ctl);
    ctl.arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-w", "-t", "60", "-o"])
        .arg(format!(
            "-k {} -c listen_addresses= -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            dir.display()
        ))
        .arg("start");
    run(ctl, "pg_ctl start")?;
    let admin = PgConnection::establish(&format!(
        "host={} user=postgres dbname=postgres",
        dir.display()
    ))
    .map_err(|e| format!("connecting to the test cluster: {e}"))?;
    Ok(Cluster {
        dir,
        admin: Mutex::new(admin),
    })
}
