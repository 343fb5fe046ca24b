//! Backlog (issue 17, target 3): what a daemon costs while 1,000,000 rows wait through a
//! long outage, on SQLite and on PostgreSQL. The rows are pending and due, in today's three
//! date folders, inserted straight into the schema the daemon created; the oldest are real
//! files (what the first attempts and the probes open), the rest are not on disk (the minute
//! rescan lists only the real ones: the row is about the ledger, not the listing; see
//! [`REAL_PER_FOLDER`]). The
//! endpoint refuses connections, the daemon declares it down and settles into its probes;
//! then one-minute windows, one after the other: CPU per minute of the daemon's threads (and
//! of the PostgreSQL server), then the wall time of `sega-uploader status` against the same
//! ledger while the daemon runs. The metrics textfile is on, so the heartbeat's counts are
//! all made (STATUS, the backlog alert, the metrics file).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::ctx::{Ctx, Scene, FOLDERS};
use crate::daemon::{self, Settings};
use crate::report::{Check, Row, Target};
use crate::shared::pg::{preflight, Cluster, ClusterKind, Pg};
use crate::stats::Summary;
use crate::sys::{db_timestamp, local_date};
use crate::tree::{self, Contents};

/// Scope and host of the PostgreSQL ledger.
const SCOPE: &str = "bench";
const HOST: &str = "bench-a";
/// Idle CPU with the backlog, and `status`, at most (issue 17).
const CPU_TARGET_MS_PER_MIN: f64 = 50.0;
const STATUS_TARGET_MS: f64 = 1000.0;
/// Real files per date folder, at most. A rescan compares a listing of up to 256 files with
/// the ledger path by path, a longer one by streaming the date folder's rows; with 333,000
/// rows per folder that have no file on disk, the stream would measure this artificial tree
/// (in a real outage the files are there, and the rescan costs what their listing costs: the
/// rescan row).
const REAL_PER_FOLDER: usize = 200;
/// `status` runs timed per backend.
const STATUS_RUNS: usize = 5;

/// The rows, the same on both backends: row `g` is `PEND_<g>.jpg` in folder `g % 3`, its
/// mtime `base_ns + g µs`, due a minute ago; rows `g < real` are files on disk.
struct Backlog {
    count: usize,
    real: usize,
    date: String,
    base_ns: i64,
    due: SystemTime,
    size: usize,
}

impl Backlog {
    fn new(ctx: &Ctx) -> Backlog {
        let now = SystemTime::now();
        let base_ns = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64)
            - 3_600_000_000_000;
        Backlog {
            count: ctx.p.db_rows,
            real: ctx
                .p
                .pending_real_files
                .min(REAL_PER_FOLDER * FOLDERS.len())
                .min(ctx.p.db_rows),
            date: local_date(0),
            base_ns,
            due: now - Duration::from_secs(60),
            size: ctx.p.image_size,
        }
    }

    fn folder(g: usize) -> &'static str {
        FOLDERS[g % FOLDERS.len()]
    }

    fn mtime_ns(&self, g: usize) -> i64 {
        self.base_ns + g as i64 * 1000
    }

    /// The real files, each with exactly the size and mtime of its row.
    fn write_files(&self, scene: &Scene) -> io::Result<()> {
        let dirs = tree::date_dirs(&scene.root, &FOLDERS, &self.date)?;
        let contents = Contents::new(self.size, 4, 4000);
        for g in 0..self.real {
            let path = dirs[g % FOLDERS.len()].join(tree::name("PEND", g));
            fs::write(&path, contents.get(g))?;
            let want = self.mtime_ns(g);
            let at = UNIX_EPOCH + Duration::from_nanos(want as u64);
            File::options().write(true).open(&path)?.set_modified(at)?;
            let m = fs::symlink_metadata(&path)?;
            let got = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            if got != want || m.size() != self.size as u64 {
                return Err(io::Error::other(format!(
                    "{}: mtime {got} ns and {} bytes, wanted {want} ns and {} (a filesystem \
                     without nanosecond times?)",
                    path.display(),
                    m.size(),
                    self.size
                )));
            }
        }
        Ok(())
    }

    fn sqlite_rows<'a>(&'a self, root: &'a str) -> impl Iterator<Item = tree::Row> + 'a {
        (0..self.count).map(move |g| {
            let folder = Backlog::folder(g);
            let filename = tree::name("PEND", g);
            tree::Row {
                path: format!("{root}/{folder}/{}/{filename}", self.date),
                folder: folder.to_string(),
                date: self.date.clone(),
                filename,
                size: self.size as i64,
                mtime_ns: self.mtime_ns(g),
                status: "pending",
                at: self.due,
            }
        })
    }

    /// The same rows for PostgreSQL, generated by the server (as `tree::insert_rows` writes
    /// them for SQLite: detected a second before they were due).
    fn pg_insert(&self, root: &str) -> String {
        let lit = sega_testsrv::pg::lit;
        let folders: Vec<String> = FOLDERS.iter().map(|f| lit(f)).collect();
        format!(
            "INSERT INTO files(scope, folder, date, filename, path, size, mtime_ns, status, \
                 attempts, next_attempt_at, detected_at, updated_at, recorded_by)
             SELECT {scope}, x.folder, {date}, convert_to(x.name, 'UTF8'),
                 convert_to({root} || '/' || x.folder || '/' || {date} || '/' || x.name, 'UTF8'),
                 {size}, {base}::bigint + g * 1000, 'pending', 0, {due}::timestamptz,
                 {detected}::timestamptz, {due}::timestamptz, {host}
             FROM generate_series(0, {last}) AS g,
                 LATERAL (SELECT (ARRAY[{folders}])[g % {nf} + 1] AS folder,
                                 'PEND_' || lpad(g::text, 7, '0') || '.jpg' AS name) AS x
             ORDER BY g",
            scope = lit(SCOPE),
            date = lit(&self.date),
            root = lit(root),
            size = self.size,
            base = self.base_ns,
            due = lit(&db_timestamp(self.due)),
            detected = lit(&db_timestamp(self.due - Duration::from_secs(1))),
            host = lit(HOST),
            last = self.count as i64 - 1,
            folders = folders.join(", "),
            nf = FOLDERS.len(),
        )
    }
}

/// The bench's usual config, the dead endpoint, a metrics textfile, and (PostgreSQL) the
/// shared ledger's keys.
fn configure(ctx: &Ctx, scene: &Scene, url: Option<&str>) -> io::Result<()> {
    daemon::write_config(
        &scene.config,
        &Settings {
            root: &scene.root,
            folders: &FOLDERS,
            db: &scene.db,
            url: &ctx.dead_url(),
            workers: ctx.workers,
            settle_secs: 5,
            scan_interval_secs: 60,
            log_level: "info",
        },
    )?;
    let mut cfg: Value = serde_json::from_slice(&fs::read(&scene.config)?)?;
    cfg["metrics"] = json!({ "textfile": scene.dir.join("sega.prom") });
    if let Some(url) = url {
        cfg["database"]["url"] = json!(url);
        cfg["database"]["scope"] = json!(SCOPE);
        cfg["database"]["host"] = json!(HOST);
    }
    fs::write(&scene.config, format!("{cfg:#}\n"))
}

/// What one backend measured.
struct Measured {
    cpu: Vec<f64>,
    cpu_ticks: Vec<f64>,
    server_cpu: Vec<f64>,
    /// The server's CPU over all the windows by process (title → ms per minute), largest
    /// first.
    server_by_process: Vec<(String, f64)>,
    status_ms: Vec<f64>,
    status_out: String,
    how: String,
}

/// Starts the daemon on the seeded ledger, waits for the outage and its probes to settle,
/// measures the windows, then times `status`.
fn measure(ctx: &Ctx, scene: &Scene, server: Option<&Cluster>) -> io::Result<Measured> {
    let p = &ctx.p;
    let mut d = ctx.start(scene, false, &[])?;
    d.wait_ready(Duration::from_secs(120))?;
    let end = Instant::now() + Duration::from_secs(120);
    while !d.log_text().contains("is down") {
        if Instant::now() > end {
            return Err(d.failure("backlog: the endpoint was never declared down"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Past the first heartbeat and daily prune, into the probes' backoff.
    std::thread::sleep(p.outage_settle);
    let window = p.idle_window;
    let per_min = 60.0 / window.as_secs_f64();
    let mut m = Measured {
        cpu: Vec::new(),
        cpu_ticks: Vec::new(),
        server_cpu: Vec::new(),
        server_by_process: Vec::new(),
        status_ms: Vec::new(),
        status_out: String::new(),
        how: String::new(),
    };
    let procs = || server.map(Cluster::cpu_by_process).unwrap_or_default();
    let mut by_title: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..ctx.runs {
        let (s0, v0) = (d.stats(), procs());
        std::thread::sleep(window);
        let (s1, v1) = (d.stats(), procs());
        m.cpu
            .push(s1.cpu_ns.saturating_sub(s0.cpu_ns) as f64 / 1e6 * per_min);
        m.cpu_ticks
            .push(s1.cpu_ticks_ns.saturating_sub(s0.cpu_ticks_ns) as f64 / 1e6 * per_min);
        let mut window_ns = 0;
        for (pid, title, ns) in &v1 {
            let before = v0.iter().find(|(p, _, _)| p == pid).map_or(0, |v| v.2);
            let used = ns.saturating_sub(before);
            window_ns += used;
            *by_title.entry(process_kind(title)).or_default() += used;
        }
        m.server_cpu.push(window_ns as f64 / 1e6 * per_min);
    }
    let minutes = ctx.runs as f64 * window.as_secs_f64() / 60.0;
    m.server_by_process = by_title
        .into_iter()
        .map(|(t, ns)| (t, ns as f64 / 1e6 / minutes))
        .collect();
    m.server_by_process.sort_by(|a, b| b.1.total_cmp(&a.1));
    for _ in 0..STATUS_RUNS {
        let t = Instant::now();
        let out = sega_testsrv::daemon::command(&ctx.daemon, &scene.config)
            .arg("status")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()?;
        m.status_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        m.status_out = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "backlog: `status` exited {:?}: {}",
                out.status.code(),
                m.status_out
            )));
        }
    }
    let exit = d.stop();
    if exit.is_none_or(|e| e.code() != 0) {
        return Err(d.failure("backlog: the daemon did not exit 0 on SIGTERM"));
    }
    m.how = format!(
        "{} windows of {} s, one after the other, {} s after the endpoint ({}, refused) was \
         declared down; retry initial 5 s, max 600 s; scan_interval_secs 60; metrics textfile \
         on; WATCHDOG_USEC 30 s; then `sega-uploader status` {STATUS_RUNS} times while the \
         daemon runs",
        ctx.runs,
        window.as_secs(),
        p.outage_settle.as_secs(),
        ctx.dead_url()
    );
    Ok(m)
}

/// A server process's title without what changes while it lives (a backend's state).
fn process_kind(title: &str) -> String {
    match title.find("[local]") {
        Some(i) => title[..i + "[local]".len()].to_string(),
        None => title.to_string(),
    }
}

/// The rows still pending afterwards must be (nearly) all: the figures are about a backlog.
fn check_pending(who: &str, count: usize, by_status: &[(String, i64)]) -> io::Result<()> {
    let pending = by_status
        .iter()
        .find(|(s, _)| s == "pending")
        .map_or(0, |(_, c)| *c);
    if pending < (count as i64) * 99 / 100 {
        return Err(io::Error::other(format!(
            "{who}: only {pending} of {count} rows still pending afterwards: {by_status:?}"
        )));
    }
    Ok(())
}

fn rows(id: &str, label: &str, b: &Backlog, m: &Measured, server: bool) -> Vec<Row> {
    let count = crate::shared::thousands(b.count);
    let mut cpu = Row::new(
        &format!("{id}_cpu"),
        &format!("{count} pending rows ({label}), endpoint down: daemon CPU"),
        "ms/min",
        Target::AtMost(CPU_TARGET_MS_PER_MIN),
        Summary::of(&m.cpu),
    );
    cpu.detail = json!({
        "how": m.how,
        "utime_stime_ms_per_min": Summary::of(&m.cpu_ticks).to_json(),
        "real_files": b.real,
    });
    let mut out = vec![cpu];
    if server {
        let mut s = Row::new(
            &format!("{id}_server_cpu"),
            &format!("{count} pending rows ({label}), endpoint down: PostgreSQL server CPU"),
            "ms/min",
            Target::None,
            Summary::of(&m.server_cpu),
        );
        // The daemon's own session (the only backend during the windows), apart from what
        // the server does by itself (autovacuum workers, the WAL writer…).
        let (session, own): (Vec<_>, Vec<_>) = m
            .server_by_process
            .iter()
            .partition(|(title, _)| title.contains("[local]"));
        let sum = |v: &[&(String, f64)]| v.iter().map(|(_, ms)| ms).sum::<f64>();
        s.checks.push(Check {
            text: format!(
                "the daemon's session {} ms/min, the server's own processes {} ms/min",
                crate::report::fmt(sum(&session)),
                crate::report::fmt(sum(&own))
            ),
            ok: Some(sum(&session) <= CPU_TARGET_MS_PER_MIN),
        });
        s.detail = json!({
            "how": "the postmaster, its background processes and backends (utime + stime from \
                    /proc, reaped children included) over the same windows",
            "ms_per_min_by_process": m.server_by_process.iter()
                .map(|(t, ms)| json!([t, crate::report::n(*ms)]))
                .collect::<Vec<_>>(),
        });
        out.push(s);
    }
    let mut st = Row::new(
        &format!("{id}_status"),
        &format!("`status` with {count} pending rows ({label})"),
        "ms",
        Target::AtMost(STATUS_TARGET_MS),
        Summary::of(&m.status_ms),
    );
    st.detail = json!({
        "how": format!("wall time of `sega-uploader -c … status`, fork/exec to exit, \
                        {STATUS_RUNS} runs while the daemon runs"),
        "output": m.status_out,
    });
    out.push(st);
    out
}

/// SQLite: the daemon's own database file.
pub fn sqlite(ctx: &Ctx) -> io::Result<Vec<Row>> {
    let scene = Scene::new(&ctx.work, "backlog")?;
    let b = Backlog::new(ctx);
    tree::date_dirs(&scene.root, &FOLDERS, &b.date)?;
    configure(ctx, &scene, None)?;
    ctx.init_db(&scene)?;
    b.write_files(&scene)?;
    let root = scene.root.to_string_lossy().into_owned();
    let t = Instant::now();
    tree::insert_rows(&scene.db, b.sqlite_rows(&root))
        .map_err(|e| io::Error::other(format!("filling the database: {e}")))?;
    eprintln!(
        "  {} rows inserted in {:.1} s",
        b.count,
        t.elapsed().as_secs_f64()
    );
    let m = measure(ctx, &scene, None)?;
    let by_status = tree::count_by_status(&scene.db)
        .map_err(|e| io::Error::other(format!("reading the ledger: {e}")))?;
    check_pending("backlog", b.count, &by_status)?;
    Ok(rows("backlog", "SQLite", &b, &m, false))
}

/// PostgreSQL: a throwaway cluster (fsync off: the figures are CPU, not disk), one database.
pub fn postgres(ctx: &Ctx) -> io::Result<Vec<Row>> {
    let scene = Scene::new(&ctx.work, "backlog-pg")?;
    preflight(ctx, &scene)?;
    let b = Backlog::new(ctx);
    tree::date_dirs(&scene.root, &FOLDERS, &b.date)?;
    let pg = Pg::start(&[ClusterKind::Fast], &scene.dir)?;
    let c = &pg.clusters[0];
    let db = "backlog";
    c.psql("postgres", &format!("CREATE DATABASE {db}"))?;
    configure(ctx, &scene, Some(&c.conninfo(db)))?;
    // The daemon creates its schema.
    {
        let mut d = ctx.start(&scene, false, &[])?;
        d.wait_ready(Duration::from_secs(60))?;
        d.stop();
    }
    let schema = c
        .table_schema(db, "files")?
        .ok_or_else(|| io::Error::other("backlog-pg: the daemon created no `files` table"))?;
    b.write_files(&scene)?;
    let root = scene.root.to_string_lossy().into_owned();
    let t = Instant::now();
    c.psql(
        db,
        &format!("SET search_path TO {schema}; {}", b.pg_insert(&root)),
    )?;
    // As a long-lived database is: vacuumed and analysed (autovacuum would have been by
    // then), the load's pages written out (a checkpoint would have been).
    c.psql(db, &format!("VACUUM ANALYZE {schema}.files"))?;
    c.psql(db, "CHECKPOINT")?;
    eprintln!(
        "  {} rows inserted and vacuumed in {:.1} s",
        b.count,
        t.elapsed().as_secs_f64()
    );
    let m = measure(ctx, &scene, Some(c))?;
    for (title, ms) in m.server_by_process.iter().take(4) {
        eprintln!("  server: {title}: {ms:.1} ms/min");
    }
    let by_status = c.pairs(
        db,
        &format!("SELECT status, count(*) FROM {schema}.files GROUP BY 1 ORDER BY 1"),
    )?;
    check_pending("backlog-pg", b.count, &by_status)?;
    Ok(rows("backlog_pg", "PostgreSQL", &b, &m, true))
}
