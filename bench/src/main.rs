//! `sega-bench`: measures sega-uploader's speed and footprint against curl on a loopback
//! endpoint embedded in this process (`sega_testsrv::Server`), and prints the table that
//! BENCHMARKS.md holds. `make bench` runs it at full size; `make bench-smoke` runs every
//! scenario tiny, so CI knows it still works (it asserts that it ran, never how fast).
//!
//! Each scenario owns a directory under `--work` and runs the daemon binary given by
//! `--daemon` as a child process; the rows are the table, each the median of
//! `--runs` runs with min and max. The exit code is 0 when every scenario ran, whatever the
//! numbers; 1 when one failed (an upload missing or wrong, the daemon not starting…).

mod backlog;
mod bigfile;
mod ctx;
mod daemon;
mod dbrows;
mod idle;
mod latency;
mod load;
mod outage;
mod report;
mod shared;
mod stats;
mod sys;
mod throughput;
mod tls;
mod tree;
mod writer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use serde_json::json;

use crate::ctx::{Ctx, Params};
use crate::report::Row;

const USAGE: &str = "\
usage: sega-bench [--smoke] [--runs N] [--workers N] [--daemon BIN] [--work DIR]
                  [--out FILE.json] [--table FILE.md] [--only ID,ID...] [--daemon-env K=V]...

  --smoke        tiny sizes, one run: checks that every scenario works (seconds)
  --runs N       runs per row, the median is reported          [3; smoke 1]
  --workers N    upload.workers for the daemon, -P for xargs   [4]
  --daemon BIN   the sega-uploader binary                      [target/release/sega-uploader]
  --work DIR     scratch directory (scenario trees, databases) [target/bench]
  --out FILE     results as JSON                               [DIR/results.json]
  --table FILE   the Markdown table                            [DIR/table.md]
  --only IDS     some of: ceiling latency present arriving big tls idle outage rescan startup
                 pending backlog backlog-pg shared
  --daemon-env K=V  set in the daemon's environment (repeatable), for experiments
  --keep         keep each scenario's tree and database (deleted after a scenario that
                 ran, except the 1 GiB image, which later runs reuse)";

const ALL: [&str; 14] = [
    "ceiling",
    "latency",
    "present",
    "arriving",
    "big",
    "tls",
    "idle",
    "outage",
    "rescan",
    "startup",
    "pending",
    "backlog",
    "backlog-pg",
    "shared",
];

struct Args {
    smoke: bool,
    runs: Option<usize>,
    workers: usize,
    daemon: PathBuf,
    work: PathBuf,
    out: Option<PathBuf>,
    table: Option<PathBuf>,
    only: Vec<String>,
    daemon_env: Vec<(String, String)>,
    keep: bool,
}

/// The options; `None` for `--help`.
fn parse_args() -> Result<Option<Args>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        smoke: false,
        runs: None,
        workers: 4,
        daemon: PathBuf::from("target/release/sega-uploader"),
        work: PathBuf::from("target/bench"),
        out: None,
        table: None,
        only: Vec::new(),
        daemon_env: Vec::new(),
        keep: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("smoke") => a.smoke = true,
            Long("runs") => a.runs = Some(p.value()?.parse()?),
            Long("workers") => a.workers = p.value()?.parse()?,
            Long("daemon") => a.daemon = p.value()?.into(),
            Long("work") => a.work = p.value()?.into(),
            Long("out") => a.out = Some(p.value()?.into()),
            Long("table") => a.table = Some(p.value()?.into()),
            Long("only") => {
                let ids: String = p.value()?.parse()?;
                a.only = ids.split(',').map(str::to_string).collect();
                if let Some(bad) = a.only.iter().find(|id| !ALL.contains(&id.as_str())) {
                    return Err(format!("--only: unknown scenario {bad:?}").into());
                }
            }
            Long("daemon-env") => {
                let kv: String = p.value()?.parse()?;
                let (k, v) = kv.split_once('=').ok_or("--daemon-env: K=V")?;
                a.daemon_env.push((k.to_string(), v.to_string()));
            }
            Long("keep") => a.keep = true,
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sega-bench: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sega-bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// Returns whether every scenario ran.
fn run(a: Args) -> std::io::Result<bool> {
    let started = Instant::now();
    std::fs::create_dir_all(&a.work)?;
    let work = std::fs::canonicalize(&a.work)?;
    let daemon = std::fs::canonicalize(&a.daemon)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", a.daemon.display())))?;
    let server = sega_testsrv::Server::start("127.0.0.1:0")?;
    server.set_max_records(0);
    let https = tls::Https::start(&server, &work)?;
    let ctx = Ctx {
        p: if a.smoke {
            Params::smoke()
        } else {
            Params::full()
        },
        smoke: a.smoke,
        runs: a.runs.unwrap_or(if a.smoke { 1 } else { 3 }).max(1),
        workers: a.workers.max(1),
        daemon,
        work: work.clone(),
        server,
        https,
        curl: sys::which("curl"),
        xargs: sys::which("xargs"),
        inotifywait: sys::which("inotifywait"),
        python: ctx::find_python(),
        daemon_env: a.daemon_env.clone(),
    };
    let load_before = sys::loadavg();
    let wanted = |id: &str| a.only.is_empty() || a.only.iter().any(|o| o == id);
    eprintln!(
        "sega-bench: {} size, {} run(s) per row, {} workers, daemon {}, endpoint {} (https: {}); load {load_before}",
        if ctx.smoke { "smoke" } else { "full" },
        ctx.runs,
        ctx.workers,
        ctx.daemon.display(),
        ctx.url(),
        ctx.https.url()
    );
    for (tool, found) in [
        ("curl", &ctx.curl),
        ("xargs", &ctx.xargs),
        ("inotifywait", &ctx.inotifywait),
    ] {
        if found.is_none() {
            eprintln!("sega-bench: {tool} not found: its comparisons are skipped (apt-get install curl inotify-tools)");
        }
    }
    if ctx.python.is_none() {
        eprintln!("sega-bench: python3 with watchdog and requests not found: that comparison is skipped (pip install watchdog requests)");
    }

    let mut rows: Vec<Row> = Vec::new();
    let mut errors: Vec<(String, String)> = Vec::new();
    // Scenarios that cannot run on this machine (shared: no PostgreSQL); errors under CI.
    let mut skipped: Vec<(String, String)> = Vec::new();
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let mut timings = serde_json::Map::new();
    let mut ceiling = 0.0;
    let mut step =
        |id: &str, rows: &mut Vec<Row>, f: &mut dyn FnMut() -> std::io::Result<Vec<Row>>| {
            if !wanted(id) {
                return;
            }
            eprintln!("sega-bench: {id}… (load {})", sys::loadavg());
            let t0 = Instant::now();
            match f() {
                Ok(new) => {
                    for r in &new {
                        eprintln!(
                            "  {}: {} {} (median)",
                            r.what,
                            report::fmt(r.value.median),
                            r.unit
                        );
                    }
                    rows.extend(new);
                    // A full run leaves gigabytes of trees and databases: drop them once
                    // they have served (a failed scenario keeps its tree for a look).
                    if !a.keep && id != "big" {
                        remove_scenario_dirs(&work, id);
                    }
                }
                Err(e) => match e.get_ref().and_then(|r| r.downcast_ref::<shared::Skip>()) {
                    Some(why) if !ci => {
                        eprintln!("sega-bench: {id} SKIPPED: {why}");
                        skipped.push((id.to_string(), why.to_string()));
                        if !a.keep {
                            remove_scenario_dirs(&work, id);
                        }
                    }
                    _ => {
                        eprintln!("sega-bench: {id} FAILED: {e}");
                        errors.push((id.to_string(), e.to_string()));
                    }
                },
            }
            timings.insert(id.into(), json!(report::n(t0.elapsed().as_secs_f64())));
        };
    step("ceiling", &mut rows, &mut || {
        let c = throughput::ceiling(&ctx)?;
        ceiling = c.files_per_sec;
        Ok(c.rows)
    });
    step("latency", &mut rows, &mut || latency::run(&ctx));
    step("present", &mut rows, &mut || {
        Ok(vec![throughput::present(&ctx, ceiling)?])
    });
    step("arriving", &mut rows, &mut || {
        Ok(vec![throughput::arriving(&ctx, ceiling)?])
    });
    step("big", &mut rows, &mut || bigfile::run(&ctx));
    step("tls", &mut rows, &mut || tls::run(&ctx));
    step("idle", &mut rows, &mut || idle::run(&ctx));
    step("outage", &mut rows, &mut || outage::run(&ctx));
    step("rescan", &mut rows, &mut || Ok(vec![dbrows::rescan(&ctx)?]));
    step("startup", &mut rows, &mut || {
        Ok(vec![dbrows::startup(&ctx)?])
    });
    step("pending", &mut rows, &mut || {
        Ok(vec![dbrows::pending(&ctx)?])
    });
    step("backlog", &mut rows, &mut || backlog::sqlite(&ctx));
    step("backlog-pg", &mut rows, &mut || backlog::postgres(&ctx));
    step("shared", &mut rows, &mut || shared::run(&ctx));

    let load_after = sys::loadavg();
    let mut table = report::table(&rows);
    for (id, e) in &errors {
        table.push_str(&format!(
            "\n**{id} did not run:** {}\n",
            e.replace('\n', " ")
        ));
    }
    for (id, why) in &skipped {
        table.push_str(&format!("\n**{id} skipped:** {why}\n"));
    }
    let header = json!({
        "bench": "sega-uploader",
        "size": if ctx.smoke { "smoke" } else { "full" },
        "finished_at": sys::db_timestamp(SystemTime::now()),
        "duration_secs": report::n(started.elapsed().as_secs_f64()),
        "scenario_secs": timings,
        "runs_per_row": ctx.runs,
        "workers": ctx.workers,
        "daemon": ctx.daemon.display().to_string(),
        "daemon_env": ctx.daemon_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "machine": {
            "cpu": sys::cpu_model(),
            "cpus": sys::cpus(),
            "mem_gib": report::n(sys::mem_total_gib()),
            "kernel": sys::kernel(),
            "work_fs": sys::fs_type(&work),
            "load_before": load_before,
            "load_after": load_after,
        },
        "params": format!("{:?}", ctx.p),
        "errors": errors.iter().map(|(id, e)| json!({"scenario": id, "error": e})).collect::<Vec<_>>(),
        "skipped": skipped.iter().map(|(id, why)| json!({"scenario": id, "reason": why})).collect::<Vec<_>>(),
    });
    let doc = report::results_json(&rows, header);
    let out = a.out.unwrap_or_else(|| work.join("results.json"));
    let table_path = a.table.unwrap_or_else(|| work.join("table.md"));
    std::fs::write(&out, format!("{doc:#}\n"))?;
    std::fs::write(&table_path, &table)?;
    println!("{table}");
    println!(
        "machine: {} × {}, load {load_before} before, {load_after} after; {:.0} s in all",
        sys::cpus(),
        sys::cpu_model(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "results: {}; table: {}",
        out.display(),
        table_path.display()
    );
    let missed: Vec<&str> = rows
        .iter()
        .filter(|r| r.met() == Some(false))
        .map(|r| r.id.as_str())
        .collect();
    if !missed.is_empty() {
        println!("targets missed: {}", missed.join(", "));
    }
    Ok(errors.is_empty())
}

/// Deletes `work/<id>` and `work/<id>-…`.
fn remove_scenario_dirs(work: &std::path::Path, id: &str) {
    let Ok(entries) = std::fs::read_dir(work) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name == id || name.starts_with(&format!("{id}-"));
        if ours && e.path().is_dir() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
