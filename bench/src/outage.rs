//! Outage idle: the endpoint answers 503 to everything (production retry settings: backoff
//! from 5 s to 600 s) with 1 file pending, then with many (10,000 at full size). Once the
//! daemon has settled into its backoff or its outage probes, it is watched for one-minute
//! windows: CPU per minute, next to the idle row. Outages last hours on real sites; a daemon
//! that polls its queue while it waits would burn a core for nothing.

use std::io;
use std::time::{Duration, Instant};

use sega_testsrv::Mode;
use serde_json::json;

use crate::ctx::{Ctx, Scene, FOLDERS};
use crate::report::{n, Row, Target};
use crate::stats::Summary;
use crate::sys::local_date;
use crate::tree::{self, Contents};

pub fn run(ctx: &Ctx) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for pending in [1, ctx.p.outage_pending] {
        rows.push(one(ctx, pending)?);
    }
    Ok(rows)
}

fn one(ctx: &Ctx, pending: usize) -> io::Result<Row> {
    let p = &ctx.p;
    let scene = Scene::new(&ctx.work, &format!("outage-{pending}"))?;
    let date = local_date(0);
    let dirs = tree::date_dirs(&scene.root, &FOLDERS, &date)?;
    let contents = Contents::new(16 * 1024, 16, 4000);
    let per = pending.div_ceil(dirs.len());
    let mut left = pending;
    for (i, dir) in dirs.iter().enumerate() {
        let k = per.min(left);
        tree::write_images(dir, &format!("OUT{i}"), k, &contents)?;
        left -= k;
    }
    scene.configure(&ctx.url(), ctx.workers, 0, 60)?;
    ctx.server.clear();
    ctx.server.set_mode(Mode::Status {
        code: 503,
        fraction: 1.0,
    });
    let result = (|| {
        let mut d = ctx.start(&scene, false, &[])?;
        // Every file recorded and tried at least once (one at a time once the outage is
        // declared), then the waits have grown past the window: the steady state.
        let tried = pending.min(3);
        let end = Instant::now() + Duration::from_secs(120);
        while ctx.server.request_count() < tried {
            if Instant::now() > end {
                return Err(io::Error::other(format!(
                    "outage ({pending} pending): {} requests after 2 min, expected {tried}\n{}",
                    ctx.server.request_count(),
                    d.failure("outage")
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(p.outage_settle);
        let window = p.idle_window;
        let per_min = 60.0 / window.as_secs_f64();
        let mut cpu = Vec::new();
        let requests_before = ctx.server.request_count();
        for _ in 0..ctx.runs {
            let s0 = d.stats();
            std::thread::sleep(window);
            let s1 = d.stats();
            cpu.push(s1.cpu_ns.saturating_sub(s0.cpu_ns) as f64 / 1e6 * per_min);
        }
        let requests = ctx.server.request_count() - requests_before;
        d.stop();
        let mut r = Row::new(
            &format!("outage_cpu_{pending}"),
            &format!("endpoint down (503), {pending} pending: CPU"),
            "ms/min",
            Target::AtMost(20.0),
            Summary::of(&cpu),
        );
        r.detail = json!({
            "how": format!(
                "{} windows of {} s after {} s of outage; retry initial 5 s, max 600 s; \
                 WATCHDOG_USEC 30 s; {requests} requests (probes and retries) in the windows",
                ctx.runs,
                window.as_secs(),
                p.outage_settle.as_secs()
            ),
            "requests_in_windows": requests,
            "window_secs": n(window.as_secs_f64()),
        });
        Ok(r)
    })();
    ctx.server.set_mode(Mode::Ok);
    result
}
