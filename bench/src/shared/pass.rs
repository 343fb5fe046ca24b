//! One measured run of a shared-ledger variant: each daemon's directory and config (a
//! fresh SQLite file or a new database), the daemons started together, timed to the last
//! distinct file at the endpoint, stopped; then the ledger's check, the split between the
//! hosts, the daemons' CPU and the server's, and their logs' warnings.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cap::CpuCap;
use super::pg::Pg;
use super::{Backend, Pass, Variant, SCOPE};
use crate::ctx::{Ctx, Scene, FOLDERS};
use crate::daemon::{self, Daemon, Settings};
use crate::tree;

/// One daemon's directory: its config, SQLite database, notify socket and log.
pub(super) struct Node {
    host: String,
    dir: PathBuf,
    config: PathBuf,
    db: PathBuf,
}

impl Node {
    pub(super) fn new(scene_dir: &Path, host: &str) -> io::Result<Node> {
        let dir = scene_dir.join(host);
        fs::create_dir_all(&dir)?;
        Ok(Node {
            host: host.into(),
            config: dir.join("config.json"),
            db: dir.join("sega.db"),
            dir,
        })
    }

    fn reset_db(&self) -> io::Result<()> {
        for ext in ["", "-wal", "-shm", ".lock"] {
            let mut p = self.db.clone().into_os_string();
            p.push(ext);
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// The bench's usual config, plus the shared-ledger keys (`url` None: SQLite).
    fn configure(&self, ctx: &Ctx, root: &Path, url: Option<&str>) -> io::Result<()> {
        daemon::write_config(
            &self.config,
            &Settings {
                root,
                folders: &FOLDERS,
                db: &self.db,
                url: &ctx.url(),
                workers: ctx.workers,
                settle_secs: 0,
                scan_interval_secs: 60,
                log_level: "info",
            },
        )?;
        let mut cfg: Value = serde_json::from_slice(&fs::read(&self.config)?)?;
        let db = &mut cfg["database"];
        db["scope"] = json!(SCOPE);
        db["host"] = json!(self.host);
        if let Some(url) = url {
            db["url"] = json!(url);
        }
        fs::write(&self.config, format!("{cfg:#}\n"))
    }

    fn start(&self, ctx: &Ctx) -> io::Result<Daemon> {
        let env: Vec<(&str, &str)> = ctx
            .daemon_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Daemon::start(&ctx.daemon, &self.config, &self.dir, false, &env)
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn one_run(
    ctx: &Ctx,
    scene: &Scene,
    nodes: &[Node],
    caps: &[CpuCap],
    pg: &Pg,
    v: &Variant,
    db_no: usize,
    count: usize,
    size: u64,
) -> io::Result<Pass> {
    let who = v.id.as_str();
    let nodes = &nodes[..v.daemons];
    let cluster = match v.backend {
        Backend::Pg(i) => Some(&pg.clusters[i]),
        Backend::Sqlite => None,
    };
    let dbname = format!("bench_{db_no}");
    let url = match cluster {
        Some(c) => {
            c.psql("postgres", &format!("CREATE DATABASE {dbname}"))?;
            Some(match v.link {
                Some(port) => format!("host=127.0.0.1 port={port} user=postgres dbname={dbname}"),
                None => c.conninfo(&dbname),
            })
        }
        None => None,
    };
    for node in nodes {
        node.reset_db()?;
        node.configure(ctx, &scene.root, url.as_deref())?;
    }
    if let Some(c) = cluster {
        c.reset_statements()?;
    }
    let server_before = cluster.map(|c| c.cpu_ns());
    ctx.server.clear();

    let failure = |daemons: &[Daemon], e: io::Error| {
        let logs: Vec<String> = daemons.iter().map(|d| d.failure(who).to_string()).collect();
        io::Error::other(format!("{e}\n{}", logs.join("\n")))
    };
    let mut daemons = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let d = node.start(ctx)?;
        if let Some(cap) = caps.get(i) {
            if let Err(e) = cap.add(d.pid()) {
                return Err(failure(
                    &[d],
                    io::Error::other(format!("{who}: capping its CPU: {e}")),
                ));
            }
        }
        daemons.push(d);
    }
    let t0 = daemons[0].spawned;
    let done = match wait_distinct(ctx, count, Duration::from_secs(600), who) {
        Ok(t) => t,
        Err(e) => return Err(failure(&daemons, e)),
    };
    let secs = (done - t0).as_secs_f64();

    let mut cpu = Duration::ZERO;
    for d in &mut daemons {
        let exit = d
            .stop()
            .ok_or_else(|| io::Error::other(format!("{who}: a daemon did not exit")))?;
        if exit.code() != 0 {
            return Err(d.failure(&format!(
                "{who}: the daemon exited {} on SIGTERM",
                exit.code()
            )));
        }
        cpu += exit.cpu();
    }
    let reqs = ctx.checked_uploads(count, size, who)?;
    let duplicates = reqs.len() - count;
    let (mut log_lines, mut log_warnings, mut timeline) = (Vec::new(), 0, Vec::new());
    for (d, node) in daemons.iter().zip(nodes) {
        let log = d.log_text();
        timeline.push((
            node.host.clone(),
            log_span(&log, true),
            log_span(&log, false),
        ));
        for line in log.lines() {
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                log_warnings += 1;
                if log_lines.len() < 8 {
                    log_lines.push(format!("{}: {line}", node.host));
                }
            }
        }
    }

    let (mut split, mut split_source, mut server_cpu) = (Vec::new(), None, None);
    let mut statements = None;
    match cluster {
        None => {
            let by_status = tree::count_by_status(&nodes[0].db)
                .map_err(|e| io::Error::other(format!("{who}: reading the ledger: {e}")))?;
            check_ledger(who, &by_status, count)?;
        }
        Some(c) => {
            // Backends end when the daemons disconnect; the postmaster reaps them (and
            // their CPU time joins its children's) within a moment.
            std::thread::sleep(Duration::from_millis(200));
            if let Some(before) = server_before {
                server_cpu = Some((c.cpu_ns().saturating_sub(before)) as f64 / 1e3 / count as f64);
            }
            // Before the bench's own queries on the database below.
            statements = c.statements(&dbname)?;
            let files = c.table_schema(&dbname, "files")?.ok_or_else(|| {
                io::Error::other(format!("{who}: no table `files` in database {dbname}"))
            })?;
            let by_status = c.pairs(
                &dbname,
                &format!("SELECT status, count(*) FROM {files}.files GROUP BY 1 ORDER BY 1"),
            )?;
            check_ledger(who, &by_status, count)?;
            if v.daemons > 1 {
                if let Some((src, mut s)) = c.host_split(&dbname, &files)? {
                    // Every daemon of the run is named, a host that uploaded nothing with 0.
                    for node in nodes {
                        if !s.iter().any(|(h, _)| *h == node.host) {
                            s.push((node.host.clone(), 0));
                        }
                    }
                    s.sort();
                    split = s;
                    split_source = Some(src);
                }
            }
            c.psql("postgres", &format!("DROP DATABASE {dbname} WITH (FORCE)"))?;
        }
    }
    if duplicates > 0 {
        eprintln!(
            "  {who}: {duplicates} duplicate upload(s): {} requests for {count} files",
            reqs.len()
        );
    }
    Ok(Pass {
        rate: count as f64 / secs,
        secs,
        cpu_us_per_file: cpu.as_secs_f64() * 1e6 / count as f64,
        server_cpu_us_per_file: server_cpu,
        statements_per_file: statements.as_ref().map(|s| s.calls as f64 / count as f64),
        server_top: statements.map(|s| s.top).unwrap_or_default(),
        split,
        split_source,
        duplicates,
        log_lines,
        log_warnings,
        timeline,
    })
}

/// Seconds from a daemon's `ready:` log line to its first (or last) `uploaded` line; the
/// log's local timestamps, `YYYY-MM-DD HH:MM:SS.mmm` (a run does not cross midnight).
fn log_span(log: &str, first: bool) -> Option<f64> {
    let secs = |line: &str| -> Option<f64> {
        let t = line.get(11..23)?;
        let mut it = t.split(':');
        let h: f64 = it.next()?.parse().ok()?;
        let m: f64 = it.next()?.parse().ok()?;
        let s: f64 = it.next()?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let ready = secs(log.lines().find(|l| l.contains(" INFO  ready: "))?)?;
    let mut uploads = log.lines().filter(|l| l.contains(" INFO  uploaded "));
    let line = if first {
        uploads.next()
    } else {
        uploads.next_back()
    }?;
    Some(secs(line)? - ready)
}

/// Every ledger row must be `uploaded`, one per file.
fn check_ledger(who: &str, by_status: &[(String, i64)], count: usize) -> io::Result<()> {
    let uploaded = by_status
        .iter()
        .find(|(s, _)| s == "uploaded")
        .map_or(0, |(_, k)| *k);
    let total: i64 = by_status.iter().map(|(_, k)| k).sum();
    if uploaded as usize != count || total as usize != count {
        return Err(io::Error::other(format!(
            "{who}: the ledger holds {by_status:?}, expected {count} uploaded rows"
        )));
    }
    Ok(())
}

/// Waits until `count` distinct files have been settled at the endpoint since the last
/// `clear` (a duplicate does not count toward it); the instant it saw the last one.
fn wait_distinct(ctx: &Ctx, count: usize, timeout: Duration, who: &str) -> io::Result<Instant> {
    let deadline = Instant::now() + timeout;
    let mut want = count;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let done = ctx.wait_uploads(want, left, who)?;
        let reqs = ctx.server.requests();
        let settled = reqs.iter().filter(|r| r.status.is_some()).count();
        let mut names: Vec<&[u8]> = reqs
            .iter()
            .filter(|r| r.status.is_some())
            .filter_map(|r| r.file.as_ref().map(|f| f.filename.as_slice()))
            .collect();
        names.sort_unstable();
        names.dedup();
        if names.len() >= count {
            return Ok(done);
        }
        want = settled + (count - names.len());
    }
}
