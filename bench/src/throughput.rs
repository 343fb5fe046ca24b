//! Throughput: the endpoint's own ceiling first, then sega-uploader against
//! `xargs -P<workers> curl -F` on the same files and endpoint, in the same run, runs
//! interleaved (ours, theirs, ours, …) so that load from elsewhere hits both alike.
//!
//! - present: the images are in the date folder before the daemon starts; timed from the
//!   daemon's fork/exec (or xargs') to the last request settled at the endpoint.
//! - arriving: the daemon (or `inotifywait | xargs curl`) is watching; the writer then
//!   writes the images as fast as it can; timed from the first write to the last request.

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::ctx::{Ctx, Scene, FOLDERS};
use crate::load;
use crate::report::{n, Check, Row, Target};
use crate::stats::Summary;
use crate::sys::local_date;
use crate::tree::{self, Contents};
use crate::writer::{write_files, Tool, Watcher};
use sega_testsrv::daemon as harness;

/// The endpoint's ceiling in uploads/s (the best median over the concurrencies tried).
pub struct Ceiling {
    pub files_per_sec: f64,
    pub rows: Vec<Row>,
}

pub fn ceiling(ctx: &Ctx) -> io::Result<Ceiling> {
    let p = &ctx.p;
    let addr = ctx.server.addr();
    let date = local_date(0);
    let content = Contents::new(p.image_size, 1, 5);
    let req = Arc::new(load::upload_request(addr, content.get(0), &date));
    let mut rows = Vec::new();
    let mut best = 0.0f64;
    for conc in [ctx.workers, 2 * ctx.workers] {
        let mut v = Vec::new();
        for _ in 0..ctx.runs {
            ctx.server.clear();
            v.push(load::requests_per_sec(
                addr,
                req.clone(),
                p.ceiling_requests,
                conc,
            )?);
        }
        let s = Summary::of(&v);
        best = best.max(s.median);
        let mut row = Row::new(
            &format!("ceiling_{conc}"),
            &format!(
                "endpoint ceiling: {} KiB uploads, new connection each, {conc} clients",
                p.image_size / 1024
            ),
            "files/s",
            Target::None,
            s,
        );
        row.detail = json!({"requests_per_run": p.ceiling_requests});
        rows.push(row);
    }
    let mut v = Vec::new();
    for _ in 0..ctx.runs {
        ctx.server.clear();
        v.push(load::stream_mb_per_sec(addr, p.big_size, &date)?);
    }
    let mut row = Row::new(
        "ceiling_stream",
        &format!("endpoint ceiling: one {} upload", human_size(p.big_size)),
        "MB/s",
        Target::None,
        Summary::of(&v),
    );
    row.detail = json!({"how": "one connection, body from a 1 MiB buffer sent repeatedly"});
    rows.push(row);
    ctx.server.clear();
    Ok(Ceiling {
        files_per_sec: best,
        rows,
    })
}

pub fn human_size(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b >> 20)
    }
}

/// The NUL-separated list xargs reads.
pub fn list_file(scene: &Scene, paths: &[std::path::PathBuf]) -> io::Result<std::path::PathBuf> {
    let list = scene.dir.join("files.list");
    let mut bytes = Vec::new();
    for p in paths {
        bytes.extend_from_slice(p.as_os_str().as_bytes());
        bytes.push(0);
    }
    fs::write(&list, bytes)?;
    Ok(list)
}

/// One measured pass: files/s, the tool's CPU per file (µs) and peak RSS (KiB).
pub struct Pass {
    pub rate: f64,
    cpu_us_per_file: f64,
    /// The daemon's DB owner thread alone (`ProcStats::owner_cpu_ns`); none for others.
    owner_cpu_us_per_file: Option<f64>,
    maxrss_kib: u64,
}

fn pass_json(v: &[Pass]) -> Value {
    json!(v
        .iter()
        .map(|p| {
            let mut v = json!({"files_per_sec": n(p.rate), "cpu_us_per_file": n(p.cpu_us_per_file), "max_rss_kib": p.maxrss_kib});
            if let Some(owner) = p.owner_cpu_us_per_file {
                v["owner_cpu_us_per_file"] = n(owner);
            }
            v
        })
        .collect::<Vec<_>>())
}

pub fn present(ctx: &Ctx, ceiling: f64) -> io::Result<Row> {
    let p = &ctx.p;
    let count = p.tput_files;
    let size = p.image_size as u64;
    let timeout = Duration::from_secs(600);
    let scene = Scene::new(&ctx.work, "present")?;
    let date = local_date(0);
    let dir = tree::date_dirs(&scene.root, &FOLDERS[..1], &date)?.remove(0);
    let files = tree::write_images(&dir, "PRE", count, &Contents::new(p.image_size, 16, 1000))?;
    let list = list_file(&scene, &files)?;
    let (mut ours, mut theirs, mut python) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        // sega-uploader, a fresh database each run: every file is new to it.
        scene.reset_db()?;
        scene.configure(&ctx.url(), ctx.workers, 0, 60)?;
        ctx.server.clear();
        let mut d = ctx.start(&scene, false, &[])?;
        let done = ctx
            .wait_uploads(count, timeout, "sega-uploader")
            .map_err(|e| io::Error::other(format!("{e}\n{}", d.failure("present run"))))?;
        let secs = (done - d.spawned).as_secs_f64();
        let owner_ns = d.stats().owner_cpu_ns;
        ctx.checked_uploads(count, size, "sega-uploader")?;
        let exit = d
            .stop()
            .ok_or_else(|| io::Error::other("daemon did not exit"))?;
        if exit.code() != 0 {
            return Err(d.failure(&format!("the daemon exited {} on SIGTERM", exit.code())));
        }
        ours.push(Pass {
            rate: count as f64 / secs,
            cpu_us_per_file: exit.cpu().as_secs_f64() * 1e6 / count as f64,
            owner_cpu_us_per_file: Some(owner_ns as f64 / 1e3 / count as f64),
            maxrss_kib: exit.maxrss_kib,
        });

        // xargs -P<workers> curl over the same files.
        if let Some(mut cmd) = ctx.xargs_curl(FOLDERS[0], &date, Stdio::from(File::open(&list)?)) {
            ctx.server.clear();
            let t0 = Instant::now();
            let pid = cmd.spawn()?.id() as i32;
            theirs.push(external(ctx, pid, t0, count, size, "xargs curl")?);
        }

        // The Python script, listing the folder and uploading from a pool.
        if let Some(py) = &ctx.python {
            ctx.server.clear();
            let t0 = Instant::now();
            let pid = Command::new(py)
                .arg(crate::ctx::watchdog_script())
                .args(["present", &ctx.url(), FOLDERS[0], &date])
                .arg(&dir)
                .arg(ctx.workers.to_string())
                .stdin(Stdio::null())
                .spawn()?
                .id() as i32;
            python.push(external(ctx, pid, t0, count, size, "python")?);
        }
    }
    Ok(throughput_row(
        ctx,
        "tput_present",
        &format!(
            "throughput: {count} × {} KiB images present at start",
            p.image_size / 1024
        ),
        (format!("xargs -P{} curl -F", ctx.workers), theirs),
        ours,
        vec![(Tool::Python.label(ctx.workers), python)],
        ceiling,
        "from the daemon's fork/exec (xargs' for curl) to the last request settled at the endpoint; \
         a fresh database each run; settle_secs 0",
    ))
}

pub fn arriving(ctx: &Ctx, ceiling: f64) -> io::Result<Row> {
    let p = &ctx.p;
    let count = p.tput_files;
    let size = p.image_size as u64;
    let timeout = Duration::from_secs(600);
    let contents = Contents::new(p.image_size, 16, 2000);
    let mut ours = Vec::new();
    let mut theirs: Vec<(Tool, Vec<Pass>)> =
        vec![(Tool::Shell, Vec::new()), (Tool::Python, Vec::new())];
    let mut write_secs = Vec::new();
    for run in 0..ctx.runs {
        let date = local_date(0);
        let scene = Scene::new(&ctx.work, "arriving")?;
        let dirs = tree::date_dirs(&scene.root, &FOLDERS[..1], &date)?;
        scene.configure(&ctx.url(), ctx.workers, 5, 60)?;
        let mut d = ctx.start(&scene, false, &[])?;
        d.wait_ready(Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_millis(500)); // the (empty) catch-up scan
        let before = d.stats();
        ctx.server.clear();
        let t0 = Instant::now();
        write_files(&dirs, &format!("ARR{run}"), count, &contents, None)?;
        write_secs.push(t0.elapsed().as_secs_f64());
        let done = ctx
            .wait_uploads(count, timeout, "sega-uploader")
            .map_err(|e| io::Error::other(format!("{e}\n{}", d.failure("arriving run"))))?;
        let after = d.stats();
        ctx.checked_uploads(count, size, "sega-uploader")?;
        d.stop();
        ours.push(Pass {
            rate: count as f64 / (done - t0).as_secs_f64(),
            // utime + stime of the whole process over the pass (ended threads included).
            cpu_us_per_file: (after.cpu_ticks_ns.saturating_sub(before.cpu_ticks_ns)) as f64
                / 1e3
                / count as f64,
            owner_cpu_us_per_file: Some(
                after.owner_cpu_ns.saturating_sub(before.owner_cpu_ns) as f64 / 1e3 / count as f64,
            ),
            maxrss_kib: after.hwm_kib,
        });

        for (i, (tool, passes)) in theirs.iter_mut().enumerate() {
            let scene = Scene::new(&ctx.work, &format!("arriving-other{i}"))?;
            let dirs = tree::date_dirs(&scene.root, &FOLDERS[..1], &date)?;
            let Some(w) = Watcher::start(ctx, *tool, &dirs[0], FOLDERS[0], &date)? else {
                continue;
            };
            let who = tool.label(ctx.workers);
            ctx.server.clear();
            let t0 = Instant::now();
            write_files(&dirs, &format!("ARRO{i}R{run}"), count, &contents, None)?;
            let done = ctx.wait_uploads(count, timeout, &who);
            let exit = w.stop();
            let done = done?;
            ctx.checked_uploads(count, size, &who)?;
            passes.push(Pass {
                rate: count as f64 / (done - t0).as_secs_f64(),
                cpu_us_per_file: exit
                    .map_or(f64::NAN, |e| e.cpu().as_secs_f64() * 1e6 / count as f64),
                owner_cpu_us_per_file: None,
                maxrss_kib: exit.map_or(0, |e| e.maxrss_kib),
            });
        }
    }
    let mut theirs = theirs.into_iter();
    let shell = theirs
        .next()
        .map(|(t, p)| (t.label(ctx.workers), p))
        .unwrap_or_default();
    let others: Vec<(String, Vec<Pass>)> = theirs.map(|(t, p)| (t.label(ctx.workers), p)).collect();
    let mut row = throughput_row(
        ctx,
        "tput_arriving",
        &format!(
            "throughput: {count} × {} KiB images arriving while running",
            p.image_size / 1024
        ),
        shell,
        ours,
        others,
        ceiling,
        "the watcher is ready; from the first write (files written back to back by this process) \
         to the last request settled",
    );
    row.detail["writer_secs"] = Summary::of(&write_secs).to_json();
    Ok(row)
}

/// Waits for `count` uploads by an external tool started at `t0` as `pid`, and its exit.
pub fn external(
    ctx: &Ctx,
    pid: i32,
    t0: Instant,
    count: usize,
    size: u64,
    who: &str,
) -> io::Result<Pass> {
    let done = ctx.wait_uploads(count, Duration::from_secs(600), who);
    let exit = harness::wait_child(pid, Duration::from_secs(60));
    if exit.is_none() {
        harness::signal(pid, libc::SIGKILL);
        let _ = harness::wait_child(pid, Duration::from_secs(5));
    }
    let done = done?;
    ctx.checked_uploads(count, size, who)?;
    Ok(Pass {
        rate: count as f64 / (done - t0).as_secs_f64(),
        cpu_us_per_file: exit.map_or(f64::NAN, |e| e.cpu().as_secs_f64() * 1e6 / count as f64),
        owner_cpu_us_per_file: None,
        maxrss_kib: exit.map_or(0, |e| e.maxrss_kib),
    })
}

#[allow(clippy::too_many_arguments)] // one row's parts, named at its two call sites
fn throughput_row(
    ctx: &Ctx,
    id: &str,
    what: &str,
    curl: (String, Vec<Pass>),
    ours: Vec<Pass>,
    others: Vec<(String, Vec<Pass>)>,
    ceiling: f64,
    how: &str,
) -> Row {
    let rates = |v: &[Pass]| Summary::of(&v.iter().map(|p| p.rate).collect::<Vec<_>>());
    let mut row = Row::new(id, what, "files/s", Target::AtLeast(3000.0), rates(&ours));
    let median = row.value.median;
    let (tool, theirs) = curl;
    if theirs.is_empty() {
        row.checks.push(Check {
            text: format!("≥ 5× {tool}: not measured (not installed)"),
            ok: Some(false),
        });
    } else {
        let s = rates(&theirs);
        let ratio = median / s.median;
        row.checks.push(Check {
            text: format!("≥ 5× {tool}: {ratio:.1}×"),
            ok: Some(ratio >= 5.0),
        });
        row.others.push((tool.clone(), s));
    }
    for (name, passes) in others.iter().filter(|(_, p)| !p.is_empty()) {
        row.others.push((name.clone(), rates(passes)));
    }
    if ceiling > 0.0 {
        row.checks.push(Check {
            text: format!(
                "{:.0} % of the endpoint's ceiling",
                100.0 * median / ceiling
            ),
            ok: None,
        });
    }
    let mut other_runs = vec![json!({"tool": tool, "runs": pass_json(&theirs)})];
    other_runs.extend(
        others
            .iter()
            .map(|(name, p)| json!({"tool": name, "runs": pass_json(p)})),
    );
    row.detail = json!({
        "how": format!("{how}; {} workers; {}", ctx.workers, ctx.runs_label()),
        "runs": pass_json(&ours),
        "other_runs": other_runs,
        "endpoint_ceiling_files_per_sec": n(ceiling),
    });
    row
}
