//! Latency from a writer's close() to the request's arrival at the endpoint, files written
//! at 40/s. The writer, the endpoint and both clocks are in this process: the writer notes
//! `SystemTime` just before close(), the endpoint notes `received_at` when the request head
//! has arrived, and the two are matched by file name.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::ctx::{Ctx, Scene, FOLDERS};
use crate::report::{n, Row, Target};
use crate::stats::{percentile, Summary};
use crate::sys::local_date;
use crate::tree::{self, Contents};
use crate::writer::{write_files, Tool, Watcher, Written};

/// Per run: (p50, p99, max) in ms, and the sample count.
struct Run {
    p50: f64,
    p99: f64,
    max: f64,
    samples: usize,
    /// The daemon's CPU (user + system) over the pass, per file: at a trickle, what a file
    /// costs when the daemon keeps up (each arrives to an empty queue). Ours only.
    cpu_us_per_file: Option<f64>,
}

fn latencies(ctx: &Ctx, written: &[Written], who: &str) -> io::Result<Run> {
    let want = written.len();
    ctx.wait_uploads(want, Duration::from_secs(60), who)?;
    let reqs = ctx.checked_uploads(want, ctx.p.image_size as u64, who)?;
    let closing: HashMap<&str, SystemTime> = written
        .iter()
        .map(|w| (w.name.as_str(), w.closing))
        .collect();
    let mut ms: Vec<f64> = reqs
        .iter()
        .filter_map(|r| {
            let name = String::from_utf8_lossy(&r.file.as_ref()?.filename).into_owned();
            let c = closing.get(name.as_str())?;
            Some(match r.received_at.duration_since(*c) {
                Ok(d) => d.as_secs_f64() * 1000.0,
                Err(e) => -e.duration().as_secs_f64() * 1000.0,
            })
        })
        .collect();
    if ms.len() != want {
        return Err(io::Error::other(format!(
            "{who}: matched {} of {want} arrivals by name",
            ms.len()
        )));
    }
    ms.sort_by(f64::total_cmp);
    Ok(Run {
        p50: percentile(&ms, 50.0),
        p99: percentile(&ms, 99.0),
        max: *ms.last().unwrap_or(&f64::NAN),
        samples: ms.len(),
        cpu_us_per_file: None,
    })
}

pub fn run(ctx: &Ctx) -> io::Result<Vec<Row>> {
    let p = &ctx.p;
    let contents = Contents::new(p.image_size, 8, 100);
    let mut ours = Vec::new();
    let mut theirs: Vec<(Tool, Vec<Run>)> =
        vec![(Tool::Shell, Vec::new()), (Tool::Python, Vec::new())];
    for run in 0..ctx.runs {
        // sega-uploader, default settle (files reported by IN_CLOSE_WRITE go at once).
        let scene = Scene::new(&ctx.work, "latency")?;
        let date = local_date(0);
        let dirs = tree::date_dirs(&scene.root, &FOLDERS, &date)?;
        scene.configure(&ctx.url(), ctx.workers, 5, 60)?;
        let mut d = ctx.start(&scene, false, &[])?;
        d.wait_ready(Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_millis(500)); // the (empty) catch-up scan
        ctx.server.clear();
        let before = d.stats();
        let written = write_files(
            &dirs,
            &format!("LAT{run}"),
            p.latency_files,
            &contents,
            Some(p.latency_rate),
        )?;
        let mut r = latencies(ctx, &written, "sega-uploader")
            .map_err(|e| io::Error::other(format!("{e}\n{}", d.failure("latency run"))))?;
        let after = d.stats();
        r.cpu_us_per_file = Some(
            after.cpu_ticks_ns.saturating_sub(before.cpu_ticks_ns) as f64
                / 1e3
                / written.len().max(1) as f64,
        );
        d.stop();
        ours.push(r);

        // The competitors on one date folder, same writer.
        for (i, (tool, runs)) in theirs.iter_mut().enumerate() {
            let scene = Scene::new(&ctx.work, &format!("latency-other{i}"))?;
            let dirs = tree::date_dirs(&scene.root, &FOLDERS[..1], &date)?;
            let Some(w) = Watcher::start(ctx, *tool, &dirs[0], FOLDERS[0], &date)? else {
                continue;
            };
            ctx.server.clear();
            let written = write_files(
                &dirs,
                &format!("LATO{i}R{run}"),
                p.latency_files,
                &contents,
                Some(p.latency_rate),
            )?;
            let r = latencies(ctx, &written, &tool.label(ctx.workers));
            w.stop();
            runs.push(r?);
        }
    }
    let pick =
        |runs: &[Run], f: fn(&Run) -> f64| Summary::of(&runs.iter().map(f).collect::<Vec<_>>());
    let detail = json!({
        "how": format!(
            "{} files of {} bytes per run written at {}/s round-robin into 3 date folders; \
             latency = endpoint received_at (request head arrived) - SystemTime just before the \
             writer's close(), same process; {}",
            p.latency_files, p.image_size, p.latency_rate, ctx.runs_label()
        ),
        "runs": ours.iter().map(|r| json!({"p50_ms": n(r.p50), "p99_ms": n(r.p99), "max_ms": n(r.max), "samples": r.samples,
            "cpu_us_per_file": r.cpu_us_per_file.map(n)})).collect::<Vec<_>>(),
        "other_runs": theirs.iter().map(|(t, runs)| json!({
            "tool": t.label(ctx.workers),
            "runs": runs.iter().map(|r| json!({"p50_ms": n(r.p50), "p99_ms": n(r.p99), "max_ms": n(r.max), "samples": r.samples})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let mut p50 = Row::new(
        "latency_p50",
        "latency close() → request arrival, 40 files/s: p50",
        "ms",
        Target::AtMost(2.0),
        pick(&ours, |r| r.p50),
    );
    let mut p99 = Row::new(
        "latency_p99",
        "latency close() → request arrival, 40 files/s: p99",
        "ms",
        Target::AtMost(5.0),
        pick(&ours, |r| r.p99),
    );
    for (tool, runs) in theirs.iter().filter(|(_, r)| !r.is_empty()) {
        p50.others
            .push((tool.label(ctx.workers), pick(runs, |r| r.p50)));
        p99.others
            .push((tool.label(ctx.workers), pick(runs, |r| r.p99)));
    }
    p50.detail = detail.clone();
    p99.detail = json!({"max_ms": pick(&ours, |r| r.max).to_json()});
    Ok(vec![p50, p99])
}
