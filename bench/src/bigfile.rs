//! One 1 GiB image: sega-uploader's MB/s against curl's on the same file and endpoint, and
//! the daemon's peak RSS (VmHWM) while it streams it. MB/s is 10^6 bytes of file content
//! over the endpoint's time from the request head to the end of the body, the same clock
//! for both tools.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::ctx::{Ctx, Scene, FOLDERS};
use crate::report::{Check, Row, Target};
use crate::stats::Summary;
use crate::sys::local_date;
use crate::throughput::human_size;
use crate::tree;
use sega_testsrv::daemon as harness;

const NAME: &str = "BIG_0000001.jpg";

/// MB/s of the one request the endpoint holds, and its content hash.
pub fn measured(ctx: &Ctx, size: u64, who: &str) -> io::Result<(f64, String)> {
    let reqs = ctx.checked_uploads(1, size, who)?;
    let r = &reqs[0];
    let took = r
        .completed_at
        .and_then(|c| c.duration_since(r.received_at).ok())
        .ok_or_else(|| io::Error::other(format!("{who}: no completion time")))?;
    let sha = r
        .file
        .as_ref()
        .map(|f| f.sha256.clone())
        .unwrap_or_default();
    Ok((size as f64 / 1e6 / took.as_secs_f64(), sha))
}

/// The big image in today's folder of the `big` scene (shared with the https rows), its
/// path and today's date. The image is kept between bench runs (writing a gigabyte takes a
/// while): moved into today's folder if an earlier run left it under another date.
pub fn image(ctx: &Ctx) -> io::Result<(Scene, PathBuf, String)> {
    let size = ctx.p.big_size;
    let scene = Scene::reuse(&ctx.work, "big")?;
    let date = local_date(0);
    let dir = tree::date_dirs(&scene.root, &FOLDERS[..1], &date)?.remove(0);
    let path = dir.join(NAME);
    for e in fs::read_dir(scene.root.join(FOLDERS[0]))?.flatten() {
        let old = e.path().join(NAME);
        if old != path && old.exists() {
            fs::rename(&old, &path)?;
        }
        if e.path() != dir {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    tree::write_big_image(&path, size)?;
    Ok((scene, path, date))
}

pub fn run(ctx: &Ctx) -> io::Result<Vec<Row>> {
    let size = ctx.p.big_size;
    let timeout = Duration::from_secs(600);
    let (scene, path, date) = image(ctx)?;
    let (mut ours, mut hwm, mut rss, mut theirs, mut curl_rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut hashes = Vec::new();
    // Daemon start → answer, without and with `{sha256}` in a field (its pass before the
    // send), and the wire speed and peak RSS of the latter.
    let (mut plain_secs, mut summed_secs, mut summed_mbps, mut summed_hwm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        scene.reset_db()?;
        scene.configure(&ctx.url(), ctx.workers, 0, 60)?;
        ctx.server.clear();
        let mut d = ctx.start(&scene, false, &[])?;
        let done = ctx
            .wait_uploads(1, timeout, "sega-uploader")
            .map_err(|e| io::Error::other(format!("{e}\n{}", d.failure("1 GiB run"))))?;
        plain_secs.push((done - d.spawned).as_secs_f64());
        let st = d.stats();
        d.stop();
        let (mbps, sha) = measured(ctx, size, "sega-uploader")?;
        ours.push(mbps);
        hwm.push(st.hwm_kib as f64 / 1024.0);
        rss.push(st.rss_kib as f64 / 1024.0);
        hashes.push(sha);

        scene.reset_db()?;
        scene.configure(&ctx.url(), ctx.workers, 0, 60)?;
        scene.set_upload("fields", checksum_fields())?;
        ctx.server.clear();
        let mut d = ctx.start(&scene, false, &[])?;
        let done = ctx
            .wait_uploads(1, timeout, "sega-uploader {sha256}")
            .map_err(|e| io::Error::other(format!("{e}\n{}", d.failure("1 GiB {sha256} run"))))?;
        summed_secs.push((done - d.spawned).as_secs_f64());
        let st = d.stats();
        d.stop();
        let (mbps, sha) = measured(ctx, size, "sega-uploader {sha256}")?;
        checksum_field_matches(ctx, &sha)?;
        summed_mbps.push(mbps);
        summed_hwm.push(st.hwm_kib as f64 / 1024.0);
        hashes.push(sha);

        let Some(args) = ctx.curl_base(FOLDERS[0], &date) else {
            continue;
        };
        ctx.server.clear();
        let pid = Command::new(&args[0])
            .args(&args[1..])
            .arg("-F")
            .arg(format!("file=@{};type=image/jpeg", path.display()))
            .arg(ctx.url())
            .stdin(Stdio::null())
            .spawn()?
            .id() as i32;
        let waited = ctx.wait_uploads(1, timeout, "curl");
        let exit = harness::wait_child(pid, Duration::from_secs(60));
        waited?;
        let (mbps, sha) = measured(ctx, size, "curl")?;
        theirs.push(mbps);
        curl_rss.push(exit.map_or(f64::NAN, |e| e.maxrss_kib as f64 / 1024.0));
        hashes.push(sha);
    }
    one_content(&mut hashes)?;
    let label = human_size(size);
    let mut speed = Row::new(
        "big_mbps",
        &format!("one {label} image: upload speed"),
        "MB/s",
        Target::None,
        Summary::of(&ours),
    );
    versus_curl(&mut speed, &theirs, 0.9, "curl", "curl -F");
    speed.detail = json!({
        "how": format!("file content bytes / (endpoint completed_at - received_at); the daemon \
                        finds the file at start (settle_secs 0, fresh database); runs alternate \
                        daemon and curl; {}", ctx.runs_label()),
        "sha256": hashes.first(),
        "curl_max_rss_mib": Summary::of(&curl_rss).to_json(),
    });
    let mut peak = Row::new(
        "big_hwm",
        &format!("one {label} image: daemon peak RSS (VmHWM)"),
        "MiB",
        Target::AtMost(16.0),
        Summary::of(&hwm),
    );
    peak.detail = json!({
        "rss_after_mib": Summary::of(&rss).to_json(),
        "curl_max_rss_mib": Summary::of(&curl_rss).to_json(),
        "how": "VmHWM of the daemon read once the upload has settled, before it is stopped",
    });
    if !curl_rss.is_empty() {
        peak.others
            .push(("curl (ru_maxrss)".into(), Summary::of(&curl_rss)));
    }
    let summed_peak = Summary::of(&summed_hwm);
    let mut summed = Row::new(
        "big_sha256",
        &format!("one {label} image, `{{sha256}}` in upload.fields: daemon start → answer"),
        "s",
        Target::None,
        Summary::of(&summed_secs),
    );
    summed
        .others
        .push(("without `{sha256}`".into(), Summary::of(&plain_secs)));
    summed.checks.push(Check {
        text: format!(
            "peak RSS ≤ 16 MiB: {} MiB",
            crate::report::fmt(summed_peak.median)
        ),
        ok: Some(summed_peak.median <= 16.0),
    });
    summed.detail = json!({
        "how": format!("fork/exec of the daemon to the request settled at the endpoint, a fresh \
                        database each run; with `{{sha256}}` the file is read and hashed once \
                        before the request (its field goes before the file part); {}",
                        ctx.runs_label()),
        "wire_mbps_with_sha256": Summary::of(&summed_mbps).to_json(),
        "hwm_mib_with_sha256": summed_peak.to_json(),
    });
    Ok(vec![speed, peak, summed])
}

/// `upload.fields` with the content's checksum in a field of its own.
/// Every upload of the image reached the endpoint with the same content (runs, tools and
/// transports alike); `hashes` in the order received.
pub fn one_content(hashes: &mut Vec<String>) -> io::Result<()> {
    hashes.dedup();
    if hashes.len() > 1 {
        return Err(io::Error::other(format!(
            "the endpoint received different contents for the same file: {hashes:?}"
        )));
    }
    Ok(())
}

/// The speed row's check against curl's runs (`theirs`, MB/s), at least `at_least` times
/// curl's median; `curl` names it in the check, `label` beside the row.
pub fn versus_curl(speed: &mut Row, theirs: &[f64], at_least: f64, curl: &str, label: &str) {
    if theirs.is_empty() {
        speed.checks.push(Check {
            text: format!("≥ {at_least}× {curl}: not measured (curl not installed)"),
            ok: Some(false),
        });
        return;
    }
    let c = Summary::of(theirs);
    let ratio = speed.value.median / c.median;
    speed.checks.push(Check {
        text: format!("≥ {at_least}× {curl}: {ratio:.2}×"),
        ok: Some(ratio >= at_least),
    });
    speed.others.push((label.into(), c));
}

pub fn checksum_fields() -> serde_json::Value {
    json!({"folder": "{folder}", "date": "{date}", "sha256": "{sha256}"})
}

/// The one request the endpoint holds has a `sha256` field equal to the endpoint's own
/// hash of the file part it received.
pub fn checksum_field_matches(ctx: &Ctx, received: &str) -> io::Result<()> {
    let reqs = ctx.server.requests();
    let field = reqs.first().and_then(|r| r.field("sha256"));
    if field == Some(received) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the sha256 field {field:?} is not the hash of the content received ({received})"
        )))
    }
}
