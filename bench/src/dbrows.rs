//! The rows that are about the database's size rather than uploads: a rescan of a date
//! folder holding 100,000 already-uploaded files, start-up to READY with 1,000,000 rows, and
//! memory with 1,000,000 pending rows while the endpoint is down. Rows are inserted straight
//! into the schema the daemon created (it is run once on an empty tree first).

use std::fs::{self, File};
use std::io;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::ctx::{Ctx, Scene, FOLDERS};
use crate::report::{n, Row, Target};
use crate::stats::Summary;
use crate::sys::local_date;
use crate::tree::{self, Contents};

fn db_err(e: rusqlite::Error) -> io::Error {
    io::Error::other(format!("filling the database: {e}"))
}

fn db_bytes(scene: &Scene) -> u64 {
    fs::metadata(&scene.db).map_or(0, |m| m.len())
}

/// `… scan: N file(s) in M date folder(s), X ms` → X.
fn listing_ms(line: &str) -> Option<f64> {
    line.rsplit(", ")
        .next()?
        .strip_suffix(" ms")?
        .trim()
        .parse()
        .ok()
}

pub fn rescan(ctx: &Ctx) -> io::Result<Row> {
    let count = ctx.p.rescan_files;
    let scene = Scene::new(&ctx.work, "rescan")?;
    let date = local_date(0);
    let dirs = tree::date_dirs(&scene.root, &FOLDERS, &date)?;
    // The daemon's own minute rescan, every 2 s here so that runs come quickly. (Not SIGHUP:
    // a reload also re-lists every folder from the watcher, which is a different cost.)
    scene.configure(&ctx.url(), ctx.workers, 5, 2)?;
    ctx.init_db(&scene)?;
    // Empty files: a rescan only lists and lstats, and these rows say they were uploaded.
    let now = SystemTime::now();
    let mut rows = Vec::with_capacity(count);
    for i in 0..count {
        let path = dirs[0].join(tree::name("SCAN", i));
        File::create(&path)?;
        rows.push(tree::row_for_file(
            &path, FOLDERS[0], &date, "uploaded", now,
        )?);
    }
    tree::insert_rows(&scene.db, rows.into_iter()).map_err(db_err)?;

    ctx.server.clear();
    let mut d = ctx.start(&scene, true, &[("SEGA_LOG", "debug")])?;
    let ready = d.wait_ready(Duration::from_secs(60))?;
    let catch_up = d
        .wait_line("rescan:", Duration::from_secs(120))
        .ok_or_else(|| d.failure("no catch-up rescan"))?;
    let catch_up_ms = (catch_up.0 - d.spawned).saturating_sub(ready).as_secs_f64() * 1000.0;
    let (mut total, mut listing, mut compare, mut cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        let s0 = d.stats();
        // The ticker logs its listing time once it has listed and sent every date folder; the
        // owner logs "rescan:" once it has compared them all with the database. Both lines
        // come down the same pipe, so the gap between their arrivals is the owner's part.
        let (scan_at, scan_line) = d
            .wait_line("periodic scan:", Duration::from_secs(60))
            .ok_or_else(|| d.failure("no periodic scan"))?;
        let (end, _) = d
            .wait_line("rescan:", Duration::from_secs(60))
            .ok_or_else(|| d.failure("no rescan line"))?;
        let s1 = d.stats();
        let listed = listing_ms(&scan_line).unwrap_or(f64::NAN);
        let after = (end - scan_at).as_secs_f64() * 1000.0;
        total.push(listed + after);
        listing.push(listed);
        compare.push(after);
        cpu.push(s1.cpu_ns.saturating_sub(s0.cpu_ns) as f64 / 1e6);
    }
    let st = d.stats();
    d.stop();
    if ctx.server.request_count() != 0 {
        return Err(io::Error::other(
            "rescan: known files were uploaded again (the rows did not match the files)",
        ));
    }
    let mut row = Row::new(
        "rescan",
        &format!("rescan of a date folder holding {count} uploaded files"),
        "ms",
        Target::AtMost(200.0),
        Summary::of(&total),
    );
    row.detail = json!({
        "how": format!("the daemon's periodic rescan (scan_interval_secs 2): the ticker's own \
                        listing time (its debug line 'periodic scan: … ms') plus the time until \
                        the owner's 'rescan:' line, which follows the comparison with the \
                        database; the window holds 9 date folders, one with {count} files; \
                        warm cache; {}", ctx.runs_label()),
        "listing_ms": Summary::of(&listing).to_json(),
        "compare_ms": Summary::of(&compare).to_json(),
        "cpu_ms_per_2s_cycle": Summary::of(&cpu).to_json(),
        "catch_up_after_ready_ms": n(catch_up_ms),
        "daemon_hwm_mib": n(st.hwm_kib as f64 / 1024.0),
        "daemon_rss_mib": n(st.rss_kib as f64 / 1024.0),
    });
    Ok(row)
}

pub fn startup(ctx: &Ctx) -> io::Result<Row> {
    let count = ctx.p.db_rows;
    let scene = Scene::new(&ctx.work, "startup")?;
    tree::date_dirs(&scene.root, &FOLDERS, &local_date(0))?;
    scene.configure(&ctx.url(), ctx.workers, 5, 60)?;
    ctx.init_db(&scene)?;
    // 89 days × 3 folders of uploaded files (inside keep_days 90, so nothing is pruned),
    // generated in path order.
    let days = 89usize;
    let per_dir = count.div_ceil(days * FOLDERS.len());
    let now = SystemTime::now();
    let root = scene.root.to_string_lossy().into_owned();
    let mut left = count;
    let rows = FOLDERS.iter().flat_map(|folder| {
        (0..days).rev().flat_map(move |back| {
            let date = local_date(-(back as i64));
            let at = now - Duration::from_secs(back as u64 * 86_400);
            (0..per_dir).map(move |j| (folder, date.clone(), at, j))
        })
    });
    let rows = rows
        .take_while(|_| {
            let go = left > 0;
            left = left.saturating_sub(1);
            go
        })
        .map(|(folder, date, at, j)| {
            let filename = tree::name("IMG", j);
            let mtime_ns = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64)
                + j as i64;
            tree::Row {
                path: format!("{root}/{folder}/{date}/{filename}"),
                folder: folder.to_string(),
                date,
                filename,
                size: 100 * 1024,
                mtime_ns,
                status: "uploaded",
                at,
            }
        });
    let inserted = tree::insert_rows(&scene.db, rows).map_err(db_err)?;
    let (mut ready, mut rss) = (Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        ctx.server.clear();
        let mut d = ctx.start(&scene, false, &[])?;
        ready.push(d.wait_ready(Duration::from_secs(60))?.as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_secs(1));
        rss.push(d.stats().rss_kib as f64 / 1024.0);
        d.stop();
    }
    let mut row = Row::new(
        "startup",
        &format!("start-up to READY with {inserted} rows in the DB"),
        "ms",
        Target::AtMost(300.0),
        Summary::of(&ready),
    );
    row.detail = json!({
        "how": format!("fork/exec → READY=1 on our NOTIFY_SOCKET; rows 'uploaded' over 89 days × 3 \
                        folders; database in the page cache (warm); {}", ctx.runs_label()),
        "db_bytes": db_bytes(&scene),
        "rss_1s_after_ready_mib": Summary::of(&rss).to_json(),
    });
    Ok(row)
}

pub fn pending(ctx: &Ctx) -> io::Result<Row> {
    let p = &ctx.p;
    let count = p.db_rows;
    let scene = Scene::new(&ctx.work, "pending")?;
    let date = local_date(0);
    let dirs = tree::date_dirs(&scene.root, &FOLDERS, &date)?;
    let url = ctx.dead_url();
    scene.configure(&url, ctx.workers, 5, 60)?;
    ctx.init_db(&scene)?;
    // The oldest rows are real images (the ones the first attempts and the probes open); the
    // rest are a backlog in today's folders whose files are not looked at while it is down.
    let contents = Contents::new(p.image_size, 4, 4000);
    let real = p.pending_real_files.min(count);
    let due = SystemTime::now() - Duration::from_secs(60);
    let base_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
        + 10_000_000_000;
    let root = scene.root.to_string_lossy().into_owned();
    let mut rows = Vec::with_capacity(count);
    for (fi, folder) in FOLDERS.iter().enumerate() {
        for i in (fi..count).step_by(FOLDERS.len()) {
            let filename = tree::name("PEND", i);
            if i < real {
                let path = dirs[fi].join(&filename);
                fs::write(&path, contents.get(i))?;
                rows.push(tree::row_for_file(&path, folder, &date, "pending", due)?);
            } else {
                rows.push(tree::Row {
                    path: format!("{root}/{folder}/{date}/{filename}"),
                    folder: folder.to_string(),
                    date: date.clone(),
                    filename,
                    size: p.image_size as i64,
                    mtime_ns: base_ns + i as i64 * 1000,
                    status: "pending",
                    at: due,
                });
            }
        }
    }
    tree::insert_rows(&scene.db, rows.into_iter()).map_err(db_err)?;
    let (mut hwm, mut rss) = (Vec::new(), Vec::new());
    let mut down_seen = 0;
    for _ in 0..ctx.runs {
        let mut d = ctx.start(&scene, false, &[])?;
        d.wait_ready(Duration::from_secs(60))?;
        std::thread::sleep(p.pending_window);
        let st = d.stats();
        d.stop();
        if d.log_text().contains("is down") {
            down_seen += 1;
        }
        hwm.push(st.hwm_kib as f64 / 1024.0);
        rss.push(st.rss_kib as f64 / 1024.0);
    }
    let counts = tree::count_by_status(&scene.db).map_err(db_err)?;
    let pending_left = counts
        .iter()
        .find(|(s, _)| s == "pending")
        .map_or(0, |(_, c)| *c);
    if pending_left < (count as i64) * 99 / 100 {
        return Err(io::Error::other(format!(
            "pending: only {pending_left} of {count} rows still pending afterwards: {counts:?}"
        )));
    }
    if down_seen == 0 {
        return Err(io::Error::other(format!(
            "pending: the daemon never declared {url} down"
        )));
    }
    let mut row = Row::new(
        "pending_rss",
        &format!("peak RSS with {count} pending rows, endpoint down"),
        "MiB",
        Target::AtMost(32.0),
        Summary::of(&hwm),
    );
    row.detail = json!({
        "how": format!("VmHWM after READY + {} s against {url} (refused); rows pending and due, \
                        in today's 3 date folders; the oldest {real} are real files (the first \
                        attempts and probes open them); {}", p.pending_window.as_secs(), ctx.runs_label()),
        "rss_end_mib": Summary::of(&rss).to_json(),
        "runs_that_saw_endpoint_down": down_seen,
        "status_counts_after": counts.iter().map(|(s, c)| json!([s, c])).collect::<Vec<_>>(),
        "db_bytes": db_bytes(&scene),
    });
    Ok(row)
}
