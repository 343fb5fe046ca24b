//! Idle: 3 folders with 1,000 uploaded files each in today's folder. The daemon uploads them
//! (a fresh database), settles, and is then watched for consecutive one-minute windows, each
//! holding one periodic rescan: CPU per minute (the live threads' schedstat, in ns) and RSS
//! at the end of the window.

use std::io;
use std::time::Duration;

use serde_json::json;

use crate::ctx::{Ctx, Scene, FOLDERS};
use crate::report::{n, Row, Target};
use crate::stats::Summary;
use crate::sys::local_date;
use crate::tree::{self, Contents};

pub fn run(ctx: &Ctx) -> io::Result<Vec<Row>> {
    let p = &ctx.p;
    let scene = Scene::new(&ctx.work, "idle")?;
    let date = local_date(0);
    let dirs = tree::date_dirs(&scene.root, &FOLDERS, &date)?;
    let contents = Contents::new(p.image_size, 16, 3000);
    for (i, dir) in dirs.iter().enumerate() {
        tree::write_images(dir, &format!("IDLE{i}"), p.idle_files, &contents)?;
    }
    let total = p.idle_files * FOLDERS.len();
    scene.configure(&ctx.url(), ctx.workers, 0, 60)?;
    ctx.server.clear();
    let mut d = ctx.start(&scene, false, &[])?;
    ctx.wait_uploads(total, Duration::from_secs(300), "sega-uploader")
        .map_err(|e| io::Error::other(format!("{e}\n{}", d.failure("idle catch-up"))))?;
    ctx.checked_uploads(total, p.image_size as u64, "sega-uploader")?;
    // The last results are committed within a moment; then nothing is left to do.
    std::thread::sleep(Duration::from_secs(3));

    let window = p.idle_window;
    let per_min = 60.0 / window.as_secs_f64();
    let (mut cpu, mut cpu_ticks, mut rss, mut hwm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        let s0 = d.stats();
        std::thread::sleep(window);
        let s1 = d.stats();
        cpu.push(s1.cpu_ns.saturating_sub(s0.cpu_ns) as f64 / 1e6 * per_min);
        cpu_ticks.push(s1.cpu_ticks_ns.saturating_sub(s0.cpu_ticks_ns) as f64 / 1e6 * per_min);
        rss.push(s1.rss_kib as f64 / 1024.0);
        hwm.push(s1.hwm_kib as f64 / 1024.0);
    }
    let requests_after = ctx.server.request_count();
    d.stop();
    if requests_after != total {
        return Err(io::Error::other(format!(
            "idle: {requests_after} requests, expected {total}: something was uploaded twice"
        )));
    }
    let how = format!(
        "{} windows of {} s, one after the other, on one daemon after it uploaded {total} files \
         (3 folders, today's date folder); scan_interval_secs 60, WATCHDOG_USEC 30 s, log level info",
        ctx.runs,
        window.as_secs()
    );
    let mut c = Row::new(
        "idle_cpu",
        &format!("idle, 3 folders × {} uploaded files: CPU", p.idle_files),
        "ms/min",
        Target::AtMost(20.0),
        Summary::of(&cpu),
    );
    c.detail = json!({
        "how": how,
        "utime_stime_ms_per_min": Summary::of(&cpu_ticks).to_json(),
        "window_secs": n(window.as_secs_f64()),
    });
    let mut r = Row::new(
        "idle_rss",
        &format!("idle, 3 folders × {} uploaded files: RSS", p.idle_files),
        "MiB",
        Target::AtMost(10.0),
        Summary::of(&rss),
    );
    r.detail =
        json!({"hwm_mib": Summary::of(&hwm).to_json(), "how": "VmRSS at the end of each window"});
    Ok(vec![c, r])
}
