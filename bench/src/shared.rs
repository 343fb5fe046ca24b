//! Shared ledger (issue 8): the claim throughput of a PostgreSQL ledger, one daemon and two
//! daemons of one scope splitting the same tree, against one daemon on SQLite, in the same
//! run, runs interleaved (SQLite, PostgreSQL ×1, PostgreSQL ×2, …).
//!
//! N images are in one date folder before the daemon(s) start; timed from the first
//! daemon's fork/exec to the last distinct file settled at the endpoint (as "present").
//! Each run gets a fresh ledger: a new SQLite file, or a new `CREATE DATABASE bench_<n>`.
//! For two daemons the split between the hosts comes from the ledger (psql), and every file
//! must have arrived exactly once: a duplicate fails the scenario.
//!
//! PostgreSQL is a throwaway cluster this scenario starts itself ([`sega_testsrv::pg`], the
//! tests' harness: as root, through `runuser -u postgres`), on a unix socket only, with
//! fsync=off, synchronous_commit=off and full_page_writes=off; the full run also starts a
//! second cluster with the server's defaults (fsync and synchronous_commit on) and measures
//! the PostgreSQL variants on it too. Both are stopped (`-m immediate`) and deleted when the
//! scenario ends, also on failure (and by the harness's watcher if this process dies).
//!
//! Needs a daemon built with `--features postgres` and the PostgreSQL server binaries
//! (/usr/lib/postgresql/*/bin): without them the scenario is skipped ([`Skip`]), or fails
//! under CI.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sega_testsrv::pg as harness;
use serde_json::{json, Value};

use crate::ctx::{Ctx, Scene, FOLDERS};
use crate::daemon::{self, Daemon, Settings};
use crate::report::{n, Check, Row, Target};
use crate::stats::Summary;
use crate::sys::local_date;
use crate::tree::{self, Contents};

/// The scenario cannot run here (no PostgreSQL server binaries, a daemon without the
/// `postgres` feature, not root): reported as skipped, or as a failure under CI.
#[derive(Debug)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

fn skip(why: impl Into<String>) -> io::Error {
    io::Error::other(Skip(why.into()))
}

const SCOPE: &str = "bench";

/// Files per host, from the ledger.
type Split = Vec<(String, i64)>;
const HOSTS: [&str; 2] = ["bench-a", "bench-b"];

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    /// PostgreSQL, on cluster `i` of [`Pg::clusters`].
    Pg(usize),
}

struct Variant {
    id: String,
    what: String,
    backend: Backend,
    daemons: usize,
}

/// One measured run of a variant.
struct Pass {
    rate: f64,
    secs: f64,
    /// The daemons' user + system time (summed), per file.
    cpu_us_per_file: f64,
    /// The PostgreSQL server's (postmaster, background processes, backends), per file.
    server_cpu_us_per_file: Option<f64>,
    /// Files per host, from the ledger (two daemons).
    split: Split,
    split_source: Option<String>,
    /// Requests beyond one per file.
    duplicates: usize,
    /// WARN/ERROR lines of the daemons' logs (the first few), and how many there were.
    log_lines: Vec<String>,
    log_warnings: usize,
    /// Per daemon, from its log: seconds from READY to its first and to its last upload.
    timeline: Vec<(String, Option<f64>, Option<f64>)>,
}

pub fn run(ctx: &Ctx) -> io::Result<Vec<Row>> {
    let p = &ctx.p;
    let count = p.shared_files;
    let size = p.shared_image_size as u64;
    let scene = Scene::new(&ctx.work, "shared")?;
    preflight(ctx, &scene)?;

    let date = local_date(0);
    // Every configured folder exists (no "does not exist (yet)" warnings); the images are in
    // the first one's date folder.
    let dir = tree::date_dirs(&scene.root, &FOLDERS, &date)?.remove(0);
    let t = Instant::now();
    tree::write_images(
        &dir,
        "SHR",
        count,
        &Contents::new(p.shared_image_size, 16, 4000),
    )?;
    eprintln!(
        "  {count} images written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let nodes: Vec<Node> = HOSTS
        .iter()
        .map(|h| Node::new(&scene.dir, h))
        .collect::<io::Result<_>>()?;

    // The fast cluster always; the durable one (server defaults) in full runs only.
    let mut kinds = vec![ClusterKind::Fast];
    if !ctx.smoke {
        kinds.push(ClusterKind::Durable);
    }
    let t = Instant::now();
    let pg = Pg::start(&kinds, &scene.dir)?;
    let dirs: Vec<String> = pg
        .clusters
        .iter()
        .map(|c| c.pg.dir.display().to_string())
        .collect();
    eprintln!(
        "  PostgreSQL {} cluster(s) up in {:.1} s ({})",
        pg.clusters.len(),
        t.elapsed().as_secs_f64(),
        dirs.join(", ")
    );

    let what = |tail: &str| {
        format!(
            "shared ledger: {} × {} KiB present, {tail}",
            thousands(count),
            p.shared_image_size / 1024
        )
    };
    let mut variants = vec![Variant {
        id: "shared_sqlite".into(),
        what: what("1 daemon, SQLite (baseline)"),
        backend: Backend::Sqlite,
        daemons: 1,
    }];
    for (i, c) in pg.clusters.iter().enumerate() {
        let (suffix, label) = match c.kind {
            ClusterKind::Fast => ("", "fsync=off"),
            ClusterKind::Durable => ("_durable", "server defaults, fsync=on"),
        };
        variants.push(Variant {
            id: format!("shared_pg{suffix}"),
            what: what(&format!("1 daemon, PostgreSQL ({label})")),
            backend: Backend::Pg(i),
            daemons: 1,
        });
        variants.push(Variant {
            id: format!("shared_pg2{suffix}"),
            what: what(&format!(
                "2 daemons, PostgreSQL ({label}), same scope, same tree"
            )),
            backend: Backend::Pg(i),
            daemons: 2,
        });
    }

    let mut passes: Vec<Vec<Pass>> = variants.iter().map(|_| Vec::new()).collect();
    let mut db_no = 0;
    for run in 0..ctx.runs {
        for (v, out) in variants.iter().zip(passes.iter_mut()) {
            db_no += 1;
            let pass = one_run(ctx, &scene, &nodes, &pg, v, db_no, count, size)?;
            let split: Vec<String> = pass
                .split
                .iter()
                .map(|(h, k)| {
                    let span = pass.timeline.iter().find(|(t, _, _)| t == h);
                    match span {
                        Some((_, Some(a), Some(b))) => {
                            format!("{h} {k} (uploading {a:.1}–{b:.1} s after READY)")
                        }
                        _ => format!("{h} {k}"),
                    }
                })
                .collect();
            eprintln!(
                "  run {}: {}: {:.0} files/s ({:.2} s){}{}",
                run + 1,
                v.id,
                pass.rate,
                pass.secs,
                if split.is_empty() {
                    String::new()
                } else {
                    format!(", split {}", split.join(" / "))
                },
                if pass.log_lines.is_empty() {
                    String::new()
                } else {
                    format!("; daemon log WARN/ERROR: {}", pass.log_lines.join(" | "))
                }
            );
            out.push(pass);
        }
    }

    let dupes: usize = passes.iter().flatten().map(|p| p.duplicates).sum();
    let baseline = Summary::of(&passes[0].iter().map(|p| p.rate).collect::<Vec<_>>()).median;
    let rows = variants
        .iter()
        .zip(&passes)
        .map(|(v, runs)| row(ctx, v, runs, baseline, count))
        .collect();
    if dupes > 0 {
        return Err(io::Error::other(format!(
            "{dupes} duplicate upload(s): a file was uploaded more than once (see the runs above)"
        )));
    }
    Ok(rows)
}

fn row(ctx: &Ctx, v: &Variant, runs: &[Pass], baseline: f64, count: usize) -> Row {
    let rates = Summary::of(&runs.iter().map(|p| p.rate).collect::<Vec<_>>());
    let mut row = Row::new(&v.id, &v.what, "files/s", Target::None, rates.clone());
    if v.backend != Backend::Sqlite && baseline.is_finite() && baseline > 0.0 {
        row.checks.push(Check {
            text: format!("{:.2}× SQLite", rates.median / baseline),
            ok: None,
        });
    }
    let median_of = |f: &dyn Fn(&Pass) -> Option<f64>| {
        Summary::of(&runs.iter().filter_map(f).collect::<Vec<_>>()).median
    };
    let daemon_cpu = median_of(&|p| Some(p.cpu_us_per_file));
    let server_cpu = median_of(&|p| p.server_cpu_us_per_file);
    row.checks.push(Check {
        text: if server_cpu.is_finite() {
            format!("CPU/file: daemon(s) {daemon_cpu:.0} µs, PostgreSQL {server_cpu:.0} µs")
        } else {
            format!("CPU/file: daemon {daemon_cpu:.0} µs")
        },
        ok: None,
    });
    let warnings: usize = runs.iter().map(|p| p.log_warnings).sum();
    if warnings > 0 {
        row.checks.push(Check {
            text: format!("{warnings} WARN/ERROR line(s) in the daemon logs"),
            ok: None,
        });
    }
    if v.daemons == 2 {
        // The split of the run with the median rate.
        let mut by_rate: Vec<&Pass> = runs.iter().collect();
        by_rate.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        if let Some(mid) = by_rate.get(by_rate.len() / 2) {
            let parts: Vec<String> = mid
                .split
                .iter()
                .map(|(h, k)| {
                    format!(
                        "{h} {} ({:.0} %)",
                        thousands(*k as usize),
                        100.0 * *k as f64 / count as f64
                    )
                })
                .collect();
            row.checks.push(Check {
                text: if parts.is_empty() {
                    "host split: unknown (no host column found)".into()
                } else {
                    format!("split {}", parts.join(" / "))
                },
                ok: None,
            });
        }
        let dupes: usize = runs.iter().map(|p| p.duplicates).sum();
        row.checks.push(Check {
            text: if dupes == 0 {
                "every file exactly once".into()
            } else {
                format!("{dupes} duplicate upload(s)")
            },
            ok: Some(dupes == 0),
        });
    }
    let fsync_note = match v.backend {
        Backend::Sqlite => "SQLite WAL, synchronous=NORMAL (the daemon's own settings)",
        Backend::Pg(_) if v.id.ends_with("_durable") => {
            "PostgreSQL with the server's defaults (fsync=on, synchronous_commit=on, \
             full_page_writes=on); this VM's fdatasync takes ~0.13 ms, a real disk's more"
        }
        Backend::Pg(_) => {
            "PostgreSQL with fsync=off, synchronous_commit=off, full_page_writes=off: \
             faster than a production server"
        }
    };
    row.detail = json!({
        "how": format!(
            "from the first daemon's fork/exec to the last file settled at the endpoint; a fresh \
             ledger each run (a new SQLite file or CREATE DATABASE); settle_secs 0; {} workers \
             per daemon; PostgreSQL on a unix socket, on the same 2 cores as the daemons and \
             the endpoint; {}; {}",
            ctx.workers, fsync_note, ctx.runs_label()
        ),
        "daemons": v.daemons,
        "runs": runs.iter().map(pass_json).collect::<Vec<_>>(),
    });
    row
}

fn pass_json(p: &Pass) -> Value {
    json!({
        "files_per_sec": n(p.rate),
        "secs": n(p.secs),
        "daemon_cpu_us_per_file": n(p.cpu_us_per_file),
        "server_cpu_us_per_file": p.server_cpu_us_per_file.map(n),
        "split": p.split.iter().map(|(h, k)| json!({"host": h, "files": k})).collect::<Vec<_>>(),
        "split_source": p.split_source,
        "duplicates": p.duplicates,
        "ready_to_uploads_secs": p.timeline.iter().map(|(h, first, last)| json!({
            "host": h, "first": first.map(n), "last": last.map(n),
        })).collect::<Vec<_>>(),
        "daemon_log_warning_count": p.log_warnings,
        "daemon_log_warnings": p.log_lines,
    })
}

/// 20000 → "20,000".
fn thousands(x: usize) -> String {
    let s = x.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One daemon's directory: its config, SQLite database, notify socket and log.
struct Node {
    host: String,
    dir: PathBuf,
    config: PathBuf,
    db: PathBuf,
}

impl Node {
    fn new(scene_dir: &Path, host: &str) -> io::Result<Node> {
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
fn one_run(
    ctx: &Ctx,
    scene: &Scene,
    nodes: &[Node],
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
            Some(c.conninfo(&dbname))
        }
        None => None,
    };
    for node in nodes {
        node.reset_db()?;
        node.configure(ctx, &scene.root, url.as_deref())?;
    }
    let server_before = cluster.map(|c| c.cpu_ns());
    ctx.server.clear();

    let mut daemons = Vec::new();
    for node in nodes {
        daemons.push(node.start(ctx)?);
    }
    let t0 = daemons[0].spawned;
    let failure = |daemons: &[Daemon], e: io::Error| {
        let logs: Vec<String> = daemons.iter().map(|d| d.failure(who).to_string()).collect();
        io::Error::other(format!("{e}\n{}", logs.join("\n")))
    };
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

// PostgreSQL

/// The newest PostgreSQL's server binaries, root, the postgres user, runuser, and a daemon
/// that can use `database.url`: or a [`Skip`] naming what is missing.
fn preflight(ctx: &Ctx, scene: &Scene) -> io::Result<()> {
    // The daemon first: a build without the feature refuses database.url in its config check.
    let probe = scene.dir.join("probe.json");
    let cfg = json!({
        "watch": {"root": scene.root, "folders": FOLDERS},
        "upload": {"url": ctx.url()},
        "database": {"path": scene.dir.join("probe.db"), "url": "host=/nonexistent dbname=probe"},
    });
    fs::write(&probe, format!("{cfg:#}\n"))?;
    let out = Command::new(&ctx.daemon)
        .arg("-c")
        .arg(&probe)
        .args(["check-config", "--offline"])
        .env_remove("SEGA_CONFIG")
        .stdin(Stdio::null())
        .output()?;
    let text = output_text(&out);
    if text.contains("no PostgreSQL support") {
        return Err(skip(format!(
            "{} has no PostgreSQL support: build it with --features postgres \
             (make bench does)",
            ctx.daemon.display()
        )));
    }
    if !text.contains("PostgreSQL") {
        return Err(io::Error::other(format!(
            "`{} check-config --offline` with database.url set did not mention PostgreSQL \
             (exit {:?}): {}",
            ctx.daemon.display(),
            out.status.code(),
            text.trim()
        )));
    }
    if harness::server_bin().is_none() {
        return Err(skip(
            "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl, \
             postgres, psql): apt-get install postgresql",
        ));
    }
    if !harness::is_root() {
        return Err(skip(
            "starting a throwaway PostgreSQL cluster needs root (runuser -u postgres)",
        ));
    }
    let has_user = Command::new("id")
        .args(["-u", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_user {
        return Err(skip(
            "no `postgres` user (the postgresql package creates it)",
        ));
    }
    if crate::sys::which("runuser").is_none() {
        return Err(skip("runuser not found (util-linux)"));
    }
    Ok(())
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[derive(Clone, Copy, PartialEq)]
enum ClusterKind {
    /// fsync=off, synchronous_commit=off, full_page_writes=off.
    Fast,
    /// The server's defaults.
    Durable,
}

/// One throwaway cluster of the harness, and the scenario's queries on it.
struct Cluster {
    kind: ClusterKind,
    /// Its socket directory (`dir`), with `data/` and `log` inside.
    pg: harness::Cluster,
}

/// The throwaway clusters (short directories under /tmp: a unix socket path must stay under
/// 108 bytes). Dropping it stops every cluster, copies the server logs to the scenario
/// directory, and deletes the clusters.
struct Pg {
    clusters: Vec<Cluster>,
    logs_to: PathBuf,
}

impl Pg {
    fn start(kinds: &[ClusterKind], logs_to: &Path) -> io::Result<Pg> {
        let mut pg = Pg {
            clusters: Vec::new(),
            logs_to: logs_to.to_path_buf(),
        };
        for kind in kinds {
            // A cluster that fails to start removes itself; the ones before it go with `pg`.
            let c = harness::Cluster::builder()
                .durable(*kind == ClusterKind::Durable)
                .start()
                .map_err(io::Error::other)?;
            pg.clusters.push(Cluster { kind: *kind, pg: c });
        }
        Ok(pg)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        for (i, c) in self.clusters.iter().enumerate() {
            c.pg.stop_now();
            let _ = fs::copy(
                c.pg.dir.join("log"),
                self.logs_to.join(format!("postgres-{i}.log")),
            );
        }
        // Then each harness::Cluster deletes its directory.
    }
}

impl Cluster {
    fn conninfo(&self, db: &str) -> String {
        self.pg.conninfo(db)
    }

    /// `psql -At` as the postgres role over the socket: the output, trimmed.
    fn psql(&self, db: &str, sql: &str) -> io::Result<String> {
        self.pg
            .try_psql(db, sql)
            .map(|s| s.trim().to_string())
            .map_err(|e| io::Error::other(format!("psql {sql:?}: {}", e.trim())))
    }

    /// `SELECT text, count` rows.
    fn pairs(&self, db: &str, sql: &str) -> io::Result<Vec<(String, i64)>> {
        let out = self.psql(db, sql)?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (a, b) = l.rsplit_once('|')?;
                Some((a.to_string(), b.trim().parse().ok()?))
            })
            .collect())
    }

    /// The schema holding `table` (the daemon may not use `public`), quoted.
    fn table_schema(&self, db: &str, table: &str) -> io::Result<Option<String>> {
        let s = self.psql(
            db,
            &format!(
                "SELECT quote_ident(table_schema) FROM information_schema.tables \
                 WHERE table_name = '{table}' \
                 AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 LIMIT 1"
            ),
        )?;
        Ok((!s.is_empty()).then_some(s))
    }

    fn has_column(&self, db: &str, schema: &str, table: &str, column: &str) -> io::Result<bool> {
        let s = self.psql(
            db,
            &format!(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = '{table}' \
                 AND column_name = '{column}' AND quote_ident(table_schema) = '{}'",
                schema.replace('\'', "''")
            ),
        )?;
        Ok(s != "0")
    }

    /// Files per host: `files.claimed_host` (who held the claim that uploaded each row), or
    /// the hosts of the successful `upload_results`. When both are there they must agree.
    fn host_split(&self, db: &str, schema: &str) -> io::Result<Option<(String, Split)>> {
        let results = self.results_split(db, schema)?;
        if self.has_column(db, schema, "files", "claimed_host")? {
            let rows = self.pairs(
                db,
                &format!(
                    "SELECT coalesce(claimed_host, '(none)'), count(*) FROM {schema}.files \
                     GROUP BY 1 ORDER BY 1"
                ),
            )?;
            if let Some(r) = results.filter(|r| *r != rows) {
                return Err(io::Error::other(format!(
                    "host split: files.claimed_host says {rows:?}, upload_results.host {r:?}"
                )));
            }
            return Ok(Some(("files.claimed_host".into(), rows)));
        }
        Ok(results.map(|r| ("upload_results.host".into(), r)))
    }

    /// Files per host among the successful `upload_results`.
    fn results_split(&self, db: &str, schema: &str) -> io::Result<Option<Split>> {
        if self.has_column(db, schema, "upload_results", "host")? {
            let success = if self.has_column(db, schema, "upload_results", "outcome")? {
                "WHERE outcome = 'success'"
            } else {
                ""
            };
            let rows = self.pairs(
                db,
                &format!(
                    "SELECT coalesce(host, '(none)'), count(DISTINCT file_id) \
                     FROM {schema}.upload_results {success} GROUP BY 1 ORDER BY 1"
                ),
            )?;
            return Ok(Some(rows));
        }
        Ok(None)
    }

    /// CPU time of the whole cluster so far, ns: the postmaster, its live children, and
    /// the children it has reaped (backends that ended).
    fn cpu_ns(&self) -> u64 {
        let pid_file =
            fs::read_to_string(self.pg.dir.join("data/postmaster.pid")).unwrap_or_default();
        let Some(pm) = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return 0;
        };
        let mut ticks = proc_ticks(pm, true).map_or(0, |(own, _)| own);
        if let Ok(entries) = fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if let Some((own, ppid)) = proc_ticks(pid, false) {
                    if ppid == pm {
                        ticks += own;
                    }
                }
            }
        }
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        ticks * 1_000_000_000 / hz
    }
}

/// A process's utime + stime (with `reaped`, plus cutime + cstime) in ticks, and its ppid.
fn proc_ticks(pid: i32, reaped: bool) -> Option<(u64, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3) is index 0, ppid (4) 1, utime (14) 11 … cstime (17) 14.
    let ppid = f.get(1)?.parse().ok()?;
    let last = if reaped { 14 } else { 12 };
    let mut t = 0u64;
    for i in 11..=last {
        t += f.get(i)?.parse::<u64>().ok()?;
    }
    Some((t, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(200), "200");
        assert_eq!(thousands(20000), "20,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    /// Starts and removes a throwaway cluster, and reads a host split through psql (root and
    /// the PostgreSQL server binaries needed: `cargo test -p sega-bench -- --ignored`).
    #[test]
    #[ignore]
    fn throwaway_cluster() {
        let logs = std::env::temp_dir().join(format!("sgb-test-{}", std::process::id()));
        fs::create_dir_all(&logs).unwrap();
        let dir;
        {
            let pg = Pg::start(&[ClusterKind::Fast], &logs).unwrap();
            let c = &pg.clusters[0];
            dir = c.pg.dir.clone();
            c.psql("postgres", "CREATE DATABASE bench_t").unwrap();
            c.psql(
                "bench_t",
                "CREATE TABLE files (id int, status text, claimed_host text); \
                 INSERT INTO files VALUES (1, 'uploaded', 'bench-a'), (2, 'uploaded', 'bench-b'), \
                 (3, 'uploaded', 'bench-a')",
            )
            .unwrap();
            let schema = c.table_schema("bench_t", "files").unwrap().unwrap();
            assert_eq!(schema, "public");
            let (src, split) = c.host_split("bench_t", &schema).unwrap().unwrap();
            assert_eq!(src, "files.claimed_host");
            assert_eq!(split, vec![("bench-a".into(), 2), ("bench-b".into(), 1)]);
            assert!(c.cpu_ns() > 0);
            c.psql("postgres", "DROP DATABASE bench_t WITH (FORCE)")
                .unwrap();
        }
        assert!(!dir.exists());
        assert!(logs.join("postgres-0.log").exists());
        fs::remove_dir_all(&logs).unwrap();
    }
}
