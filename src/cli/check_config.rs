//! `sega-uploader check-config`: the config validated and printed with its secrets redacted,
//! then the environment checked line by line (folders readable, the database writable,
//! inotify limits, the endpoint reachable, its TLS in `tls`): the first thing to run after
//! an install.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use crate::cli::out::outln;
use crate::clock::Clock;
use crate::config;
use crate::error::{Error, Result, EXIT_FAILURE, EXIT_OK};
use crate::layout::{self, Show};
use crate::store::{self, Role};

mod tls;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

fn line(v: Verdict, what: &str, detail: &str) -> Verdict {
    let tag = match v {
        Verdict::Ok => "ok  ",
        Verdict::Warn => "warn",
        Verdict::Fail => "fail",
    };
    outln!("{tag} {what}: {detail}");
    v
}

fn access(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; access() reads it and nothing else.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

pub(super) fn check_config(path: &Path, offline: bool) -> Result<i32> {
    let config = config::load(path)?;
    let clock = Clock::from_env().map_err(Error::Other)?;
    outln!("# {} (effective, secrets redacted)", path.shown());
    outln!(
        "{}",
        serde_json::to_string_pretty(&config.redacted_json()).unwrap_or_default()
    );
    outln!();
    let mut worst = Verdict::Ok;
    let mut note = |v: Verdict| worst = worst.max(v);

    let root = &config.watch.root;
    if !root.is_dir() {
        note(line(
            Verdict::Warn,
            "root",
            &format!(
                "{} is missing (it may be mounted later; the daemon waits for it)",
                root.shown()
            ),
        ));
    }
    let today = clock.today_local();
    for f in &config.watch.folders {
        let what = format!(
            "folder {} ({})",
            std::ffi::OsStr::new(&f.label).shown(),
            f.path.shown()
        );
        if !f.path.exists() {
            note(line(
                Verdict::Warn,
                &what,
                "missing (it may be created or mounted later)",
            ));
            continue;
        }
        if !access(&f.path, libc::R_OK | libc::X_OK) {
            note(line(
                Verdict::Fail,
                &what,
                "not readable by this user: give it read access (group or ACL)",
            ));
            continue;
        }
        let today_dir = f.path.join(layout::format_date(today));
        if today_dir.is_dir() && !access(&today_dir, libc::R_OK | libc::X_OK) {
            note(line(
                Verdict::Fail,
                &what,
                &format!(
                    "today's folder {} is not readable by this user",
                    today_dir.shown()
                ),
            ));
            continue;
        }
        match crate::watch::fs_kind(&f.path) {
            Some(kind) if !kind.gives_events => note(line(
                Verdict::Warn,
                &what,
                &format!("readable, but on {} which gives no inotify events: the minute scan is the detector", kind.name),
            )),
            _ => note(line(Verdict::Ok, &what, "readable")),
        }
    }

    let db = &config.database.path;
    let dir = db.parent().unwrap_or(Path::new("/"));
    if let (Some(url), true) = (&config.database.url, offline) {
        note(line(
            Verdict::Ok,
            "database",
            &format!(
                "PostgreSQL {}: not contacted (--offline)",
                config::redact_db_url(url.expose())
            ),
        ));
    } else if config.database.url.is_some() {
        // A shared ledger: connecting (and migrating, as the daemon would) is the check.
        match store::open(&config, Role::Write) {
            Ok(o) => note(line(
                Verdict::Ok,
                "database",
                &format!("{} reachable", o.ledger.describe()),
            )),
            Err(e) => note(line(Verdict::Fail, "database", &e.to_string())),
        }
    } else if !dir.is_dir() {
        note(line(
            Verdict::Fail,
            "database",
            &format!("directory {} does not exist", dir.shown()),
        ));
    } else if !access(dir, libc::W_OK | libc::X_OK)
        || (db.exists() && !access(db, libc::W_OK | libc::R_OK))
    {
        note(line(
            Verdict::Fail,
            "database",
            &format!("{} is not writable by this user", db.shown()),
        ));
    } else {
        note(line(
            Verdict::Ok,
            "database",
            &format!("{} writable", db.shown()),
        ));
    }

    let needed = 1 + config.watch.folders.len() * (config.watch.lookback_days as usize + 3);
    match std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches").ok().and_then(|s| s.trim().parse::<usize>().ok()) {
        Some(limit) if limit < needed * 2 => note(line(
            Verdict::Warn,
            "inotify",
            &format!("max_user_watches is {limit}, this config needs about {needed}: raise it with sysctl fs.inotify.max_user_watches=524288"),
        )),
        Some(limit) => note(line(Verdict::Ok, "inotify", &format!("max_user_watches {limit}, this config needs about {needed}"))),
        None => note(line(Verdict::Warn, "inotify", "cannot read /proc/sys/fs/inotify/max_user_watches")),
    }

    let ep = &config.upload.url;
    let what = format!("endpoint {}:{}", ep.host, ep.port);
    if offline {
        line(Verdict::Ok, &what, "not checked (--offline)");
    } else if let Some(p) = &config.upload.proxy {
        // Through a proxy the endpoint's name may resolve only there: check the proxy.
        let what = format!("proxy {}:{}", p.host, p.port);
        note(
            match connect(&p.host, p.port, config.upload.connect_timeout) {
                Ok(addr) => line(
                    Verdict::Ok,
                    &what,
                    &format!(
                        "accepts TCP connections ({addr}); {} is reached through it",
                        ep.host
                    ),
                ),
                Err(e) => line(Verdict::Fail, &what, &e),
            },
        );
    } else {
        note(
            match connect(&ep.host, ep.port, config.upload.connect_timeout) {
                Ok(addr) => line(
                    Verdict::Ok,
                    &what,
                    &format!("accepts TCP connections ({addr})"),
                ),
                Err(e) => line(Verdict::Fail, &what, &e),
            },
        );
    }
    tls::check_tls(&config, offline, &mut note);
    Ok(if worst == Verdict::Fail {
        EXIT_FAILURE
    } else {
        EXIT_OK
    })
}

fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> std::result::Result<std::net::SocketAddr, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = crate::tls::connect(host, port, timeout)?;
    stream
        .peer_addr()
        .map_err(|e| crate::error::describe_io(&e))
}
