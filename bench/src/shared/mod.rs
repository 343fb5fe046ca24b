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
//!
//! The `*_capped` variants run SQLite ×1, PostgreSQL ×1 and ×2 again with each daemon held
//! to a share of one core (`cap`): hosts limited by their own CPU, as on separate machines,
//! where on this box one uncapped daemon already keeps the shared cores busy.
//!
//! Who owns what: this file the scenario (its variants, the runs interleaved, the rows);
//! `pass` one measured run (the daemons' directories, starting them, the timing, the
//! ledger's check and split); `pg` the throwaway clusters and the queries on them; `cap`
//! the cgroups that hold a daemon to its share.

mod cap;
mod link;
mod pass;
pub(crate) mod pg;

use std::fmt;
use std::io;
use std::time::Instant;

use serde_json::{json, Value};

use crate::ctx::{Ctx, Scene, FOLDERS};
use crate::report::{n, Check, Row, Target};
use crate::stats::Summary;
use crate::sys::local_date;
use crate::tree::{self, Contents};
use cap::CpuCap;
use pass::{one_run, Node};
use pg::{preflight, ClusterKind, Pg};

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

/// The share of one core each daemon of a capped variant may use (`cap`): with two such
/// hosts, the server and the endpoint, the box's 2 cores are not yet the limit.
const HOST_SHARE: f64 = 0.25;

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
    /// Each daemon held to `HOST_SHARE` of a core (`cap`).
    capped: bool,
    /// The variant its rate is compared with ("× SQLite"): the SQLite row of its kind.
    base: usize,
    /// For two daemons: the one-daemon variant of the same cluster ("× one host").
    one_host: Option<usize>,
    /// The daemons reach the cluster through a [`link::Link`] with a round trip, not its
    /// socket: the port and its conninfo.
    link: Option<u16>,
}

/// One measured run of a variant.
struct Pass {
    rate: f64,
    secs: f64,
    /// The daemons' user + system time (summed), per file.
    cpu_us_per_file: f64,
    /// The PostgreSQL server's (postmaster, background processes, backends), per file.
    server_cpu_us_per_file: Option<f64>,
    /// Statements the daemons ran (`pg_stat_statements`), per file: the round trips.
    statements_per_file: Option<f64>,
    /// The statements that took the server's time: (calls, total ms, the statement's start).
    server_top: Vec<(i64, f64, String)>,
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
        capped: false,
        base: 0,
        one_host: None,
        link: None,
    }];
    for (i, c) in pg.clusters.iter().enumerate() {
        let (suffix, label) = match c.kind {
            ClusterKind::Fast => ("", "fsync=off"),
            ClusterKind::Durable => ("_durable", "server defaults, fsync=on"),
        };
        let one = variants.len();
        variants.push(Variant {
            id: format!("shared_pg{suffix}"),
            what: what(&format!("1 daemon, PostgreSQL ({label})")),
            backend: Backend::Pg(i),
            daemons: 1,
            capped: false,
            base: 0,
            one_host: None,
            link: None,
        });
        variants.push(Variant {
            id: format!("shared_pg2{suffix}"),
            what: what(&format!(
                "2 daemons, PostgreSQL ({label}), same scope, same tree"
            )),
            backend: Backend::Pg(i),
            daemons: 2,
            capped: false,
            base: 0,
            one_host: Some(one),
            link: None,
        });
    }
    // One host whose server is a network hop away: the fast cluster through a link with a
    // 1 ms round trip (`link`), where each commit's wait is the daemon's to hide.
    let fast = pg
        .clusters
        .iter()
        .position(|c| c.kind == ClusterKind::Fast)
        .unwrap_or(0);
    let link = link::Link::start(
        pg.clusters[fast].pg.dir.join(".s.PGSQL.5432"),
        link::ONE_WAY,
    )?;
    variants.push(Variant {
        id: "shared_pg_link".into(),
        what: what(&format!(
            "1 daemon, PostgreSQL (fsync=off) over a link of {} ms round trip",
            2.0 * link::ONE_WAY.as_secs_f64() * 1000.0
        )),
        backend: Backend::Pg(fast),
        daemons: 1,
        capped: false,
        base: 0,
        one_host: None,
        link: Some(link.port),
    });
    // The same on hosts of their own CPU (`cap`): each daemon held to a share of a core.
    let caps: Vec<CpuCap> = match HOSTS
        .iter()
        // Named for this process: two benches at once must not share a quota, nor one
        // remove the other's cgroup.
        .map(|h| CpuCap::new(&format!("sega-{h}-{}", std::process::id()), HOST_SHARE))
        .collect::<io::Result<Vec<_>>>()
    {
        Ok(caps) => caps,
        Err(e) => {
            eprintln!("  the variants with a CPU share per host are skipped: {e}");
            Vec::new()
        }
    };
    if !caps.is_empty() {
        let share = format!("each daemon held to {:.0} % of a core", HOST_SHARE * 100.0);
        let base = variants.len();
        variants.push(Variant {
            id: "shared_sqlite_capped".into(),
            what: what(&format!("1 daemon, SQLite, {share}")),
            backend: Backend::Sqlite,
            daemons: 1,
            capped: true,
            base,
            one_host: None,
            link: None,
        });
        variants.push(Variant {
            id: "shared_pg_capped".into(),
            what: what(&format!("1 daemon, PostgreSQL (fsync=off), {share}")),
            backend: Backend::Pg(fast),
            daemons: 1,
            capped: true,
            base,
            one_host: None,
            link: None,
        });
        variants.push(Variant {
            id: "shared_pg2_capped".into(),
            what: what(&format!(
                "2 daemons, PostgreSQL (fsync=off), same scope, same tree, {share}"
            )),
            backend: Backend::Pg(fast),
            daemons: 2,
            capped: true,
            base,
            one_host: Some(base + 1),
            link: None,
        });
    }

    let mut passes: Vec<Vec<Pass>> = variants.iter().map(|_| Vec::new()).collect();
    let mut db_no = 0;
    for run in 0..ctx.runs {
        for (v, out) in variants.iter().zip(passes.iter_mut()) {
            db_no += 1;
            let caps = if v.capped { &caps[..] } else { &[] };
            let pass = one_run(ctx, &scene, &nodes, caps, &pg, v, db_no, count, size)?;
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
                "  run {}: {}: {:.0} files/s ({:.2} s){}{}{}",
                run + 1,
                v.id,
                pass.rate,
                pass.secs,
                pass.statements_per_file
                    .map(|s| format!(", {s:.2} statements/file"))
                    .unwrap_or_default(),
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
    let medians: Vec<f64> = passes
        .iter()
        .map(|runs| Summary::of(&runs.iter().map(|p| p.rate).collect::<Vec<_>>()).median)
        .collect();
    let rows = variants
        .iter()
        .zip(&passes)
        .map(|(v, runs)| {
            let one_host = v.one_host.map(|i| medians[i]);
            row(ctx, v, runs, medians[v.base], one_host, count)
        })
        .collect();
    if dupes > 0 {
        return Err(io::Error::other(format!(
            "{dupes} duplicate upload(s): a file was uploaded more than once (see the runs above)"
        )));
    }
    Ok(rows)
}

fn row(
    ctx: &Ctx,
    v: &Variant,
    runs: &[Pass],
    baseline: f64,
    one_host: Option<f64>,
    count: usize,
) -> Row {
    let rates = Summary::of(&runs.iter().map(|p| p.rate).collect::<Vec<_>>());
    let mut row = Row::new(&v.id, &v.what, "files/s", Target::None, rates.clone());
    if v.backend != Backend::Sqlite && baseline.is_finite() && baseline > 0.0 {
        row.checks.push(Check {
            text: format!("{:.2}× SQLite", rates.median / baseline),
            ok: None,
        });
    }
    if let Some(one) = one_host.filter(|r| r.is_finite() && *r > 0.0) {
        row.checks.push(Check {
            text: format!("{:.2}× one host", rates.median / one),
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
    let statements = median_of(&|p| p.statements_per_file);
    if statements.is_finite() {
        row.checks.push(Check {
            text: format!("{statements:.2} statements (round trips) per file"),
            ok: None,
        });
    }
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
             the endpoint; {}{}; {}",
            ctx.workers,
            fsync_note,
            if let Some(port) = v.link {
                format!(
                    "; through a TCP link on 127.0.0.1:{port} to the cluster's socket that holds \
                     each direction's bytes {} µs (this bench's own forwarder, whose threads \
                     run on the same cores)",
                    link::ONE_WAY.as_micros()
                )
            } else if v.capped {
                format!(
                    "; each daemon in a cgroup of its own allowed {:.0} % of one core (a host \
                     whose own CPU is the limit; the server and the endpoint are not held)",
                    HOST_SHARE * 100.0
                )
            } else {
                String::new()
            },
            ctx.runs_label()
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
        "statements_per_file": p.statements_per_file.map(n),
        "server_top_statements": p.server_top.iter().map(|(calls, ms, q)| json!({
            "calls": calls, "total_ms": n(*ms), "query": q,
        })).collect::<Vec<_>>(),
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
pub(crate) fn thousands(x: usize) -> String {
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
}
