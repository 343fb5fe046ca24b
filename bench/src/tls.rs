//! HTTPS: the same endpoint behind a TLS front (`sega_testsrv::tls::TlsFront`: rustls with
//! *ring*, a certificate for 127.0.0.1 from a CA made for this run, trusted through
//! `upload.tls.ca_file` and `curl --cacert`).
//!
//! - One big image over https: sega-uploader's MB/s against `curl --cacert … -F` through the
//!   same front in the same run (runs alternate), its peak RSS, and the daemon over plain
//!   http in the same runs for the cost of TLS.
//! - Files/s over https with kept connections (the default: a handshake per worker), beside
//!   the same files over https with `upload.keep_alive: false` (a connection and a handshake
//!   per file), over plain http, and `xargs -P curl --cacert` over https, runs alternating.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use sega_testsrv::daemon as harness;
use sega_testsrv::tls::{Ca, TlsFront, Validity};
use sega_testsrv::Server;

use crate::bigfile::{self, measured};
use crate::ctx::{Ctx, Scene, FOLDERS};
use crate::report::{fmt, Check, Row, Target};
use crate::stats::Summary;
use crate::sys::local_date;
use crate::throughput::{self, human_size};
use crate::tree::{self, Contents};

/// The TLS front before the bench's endpoint, and the CA file that trusts it.
pub struct Https {
    front: TlsFront,
    pub ca_file: PathBuf,
}

impl Https {
    /// A CA of this run, a certificate for 127.0.0.1, the front before `server`; the CA's
    /// PEM in `work/ca/ca.pem` (not a scenario's directory, so it stays for the run).
    pub fn start(server: &Server, work: &Path) -> io::Result<Https> {
        let ca = Ca::new("sega-bench CA");
        let cert = ca.server_cert(&["127.0.0.1"], Validity::Current);
        let front = TlsFront::start(server.addr(), &cert, None)?;
        let dir = work.join("ca");
        fs::create_dir_all(&dir)?;
        let ca_file = dir.join("ca.pem");
        fs::write(&ca_file, &ca.pem)?;
        Ok(Https { front, ca_file })
    }

    pub fn url(&self) -> String {
        self.front.url("127.0.0.1")
    }

    /// TLS handshakes the front has completed: all of them, and those that resumed a
    /// session.
    pub fn handshakes(&self) -> (u64, u64) {
        (self.front.handshakes(), self.front.resumed_handshakes())
    }
}

/// The scene's config for https: the front's URL and the CA in `upload.tls.ca_file`.
fn configure_https(ctx: &Ctx, scene: &Scene, workers: usize) -> io::Result<()> {
    scene.configure(&ctx.https.url(), workers, 0, 60)?;
    scene.set_upload("tls", json!({ "ca_file": ctx.https.ca_file }))
}

pub fn run(ctx: &Ctx) -> io::Result<Vec<Row>> {
    let mut rows = big(ctx)?;
    rows.push(files(ctx)?);
    Ok(rows)
}

fn big(ctx: &Ctx) -> io::Result<Vec<Row>> {
    let size = ctx.p.big_size;
    let timeout = Duration::from_secs(600);
    let (scene, path, date) = bigfile::image(ctx)?;
    let (mut ours, mut hwm, mut theirs, mut curl_rss, mut plain) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut hashes = Vec::new();
    for _ in 0..ctx.runs {
        // sega-uploader over https.
        scene.reset_db()?;
        configure_https(ctx, &scene, ctx.workers)?;
        ctx.server.clear();
        let mut d = ctx.start(&scene, false, &[])?;
        ctx.wait_uploads(1, timeout, "sega-uploader https")
            .map_err(|e| io::Error::other(format!("{e}\n{}", d.failure("1 GiB https run"))))?;
        let st = d.stats();
        d.stop();
        let (mbps, sha) = measured(ctx, size, "sega-uploader https")?;
        ours.push(mbps);
        hwm.push(st.hwm_kib as f64 / 1024.0);
        hashes.push(sha);

        // curl through the same front.
        if let Some(args) = ctx.curl_base(FOLDERS[0], &date) {
            ctx.server.clear();
            let pid = Command::new(&args[0])
                .args(&args[1..])
                .arg("--cacert")
                .arg(&ctx.https.ca_file)
                .arg("-F")
                .arg(format!("file=@{};type=image/jpeg", path.display()))
                .arg(ctx.https.url())
                .stdin(Stdio::null())
                .spawn()?
                .id() as i32;
            let waited = ctx.wait_uploads(1, timeout, "curl https");
            let exit = harness::wait_child(pid, Duration::from_secs(60));
            waited?;
            let (mbps, sha) = measured(ctx, size, "curl https")?;
            theirs.push(mbps);
            curl_rss.push(exit.map_or(f64::NAN, |e| e.maxrss_kib as f64 / 1024.0));
            hashes.push(sha);
        }

        // sega-uploader over plain http, for the cost of TLS.
        scene.reset_db()?;
        scene.configure(&ctx.url(), ctx.workers, 0, 60)?;
        ctx.server.clear();
        let mut d = ctx.start(&scene, false, &[])?;
        ctx.wait_uploads(1, timeout, "sega-uploader http")
            .map_err(|e| io::Error::other(format!("{e}\n{}", d.failure("1 GiB http run"))))?;
        d.stop();
        let (mbps, sha) = measured(ctx, size, "sega-uploader http")?;
        plain.push(mbps);
        hashes.push(sha);
    }
    bigfile::one_content(&mut hashes)?;
    let label = human_size(size);
    let mut speed = Row::new(
        "tls_big_mbps",
        &format!("one {label} image over https: upload speed"),
        "MB/s",
        Target::None,
        Summary::of(&ours),
    );
    bigfile::versus_curl(
        &mut speed,
        &theirs,
        0.8,
        "curl --cacert",
        "curl --cacert -F",
    );
    speed
        .others
        .push(("sega-uploader over http".into(), Summary::of(&plain)));
    speed.detail = json!({
        "how": format!("file content bytes / (endpoint completed_at - received_at), through a \
                        rustls TLS front on 127.0.0.1 with a certificate from a CA made for the \
                        run (upload.tls.ca_file; curl --cacert); runs alternate https daemon, \
                        https curl, http daemon; {}", ctx.runs_label()),
        "sha256": hashes.first(),
        "curl_max_rss_mib": Summary::of(&curl_rss).to_json(),
    });
    let mut peak = Row::new(
        "tls_big_hwm",
        &format!("one {label} image over https: daemon peak RSS (VmHWM)"),
        "MiB",
        Target::AtMost(16.0),
        Summary::of(&hwm),
    );
    if !curl_rss.is_empty() {
        peak.others
            .push(("curl (ru_maxrss)".into(), Summary::of(&curl_rss)));
    }
    peak.detail = json!({
        "how": "VmHWM of the daemon read once the https upload has settled, before it is stopped",
    });
    Ok(vec![speed, peak])
}

/// How the daemon reaches the endpoint in one of the files/s runs.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// https with kept connections (the default): a handshake per worker, not per file.
    Kept,
    /// https with `upload.keep_alive: false`: a connection and a handshake per file.
    Closed,
    /// Plain http, kept connections.
    Plain,
}

impl Way {
    const ALL: [Way; 3] = [Way::Kept, Way::Closed, Way::Plain];

    fn label(self) -> &'static str {
        match self {
            Way::Kept => "sega-uploader https",
            Way::Closed => "sega-uploader https, keep_alive off",
            Way::Plain => "sega-uploader http",
        }
    }
}

/// One way's figures over the runs.
#[derive(Default)]
struct Runs {
    rate: Vec<f64>,
    cpu_us: Vec<f64>,
    /// The endpoint's side: this process (the endpoint, and the TLS front for https).
    endpoint_us: Vec<f64>,
    handshakes: Vec<u64>,
    resumed: Vec<u64>,
}

fn files(ctx: &Ctx) -> io::Result<Row> {
    let p = &ctx.p;
    let count = p.tput_files;
    let size = p.image_size as u64;
    let timeout = Duration::from_secs(600);
    let scene = Scene::new(&ctx.work, "tls-files")?;
    let date = local_date(0);
    let dir = tree::date_dirs(&scene.root, &FOLDERS[..1], &date)?.remove(0);
    let paths = tree::write_images(&dir, "TLS", count, &Contents::new(p.image_size, 16, 1000))?;
    let list = throughput::list_file(&scene, &paths)?;
    let mut runs: [Runs; 3] = Default::default();
    let mut curl = Vec::new();
    let own_cpu_ns =
        || crate::sys::proc_stats(std::process::id() as i32).map_or(0, |s| s.cpu_ticks_ns);
    for _ in 0..ctx.runs {
        for (i, way) in Way::ALL.into_iter().enumerate() {
            scene.reset_db()?;
            if way == Way::Plain {
                scene.configure(&ctx.url(), ctx.workers, 0, 60)?;
            } else {
                configure_https(ctx, &scene, ctx.workers)?;
            }
            if way == Way::Closed {
                scene.set_upload("keep_alive", json!(false))?;
            }
            ctx.server.clear();
            let before = ctx.https.handshakes();
            let own_before = own_cpu_ns();
            let who = way.label();
            let mut d = ctx.start(&scene, false, &[])?;
            let done = ctx
                .wait_uploads(count, timeout, who)
                .map_err(|e| io::Error::other(format!("{e}\n{}", d.failure(who))))?;
            let secs = (done - d.spawned).as_secs_f64();
            ctx.checked_uploads(count, size, who)?;
            let exit = d
                .stop()
                .ok_or_else(|| io::Error::other("daemon did not exit"))?;
            let after = ctx.https.handshakes();
            let r = &mut runs[i];
            r.rate.push(count as f64 / secs);
            r.cpu_us.push(exit.cpu().as_secs_f64() * 1e6 / count as f64);
            r.endpoint_us
                .push(own_cpu_ns().saturating_sub(own_before) as f64 / 1e3 / count as f64);
            r.handshakes.push(after.0 - before.0);
            r.resumed.push(after.1 - before.1);
        }
        // The usual one-liner over https: a curl process, a full handshake, per file.
        let cacert = ["--cacert".as_ref(), ctx.https.ca_file.as_os_str()];
        let stdin = Stdio::from(fs::File::open(&list)?);
        if let Some(mut cmd) =
            ctx.xargs_curl_to(&ctx.https.url(), &cacert, FOLDERS[0], &date, stdin)
        {
            ctx.server.clear();
            let t0 = Instant::now();
            let pid = cmd.spawn()?.id() as i32;
            curl.push(throughput::external(
                ctx,
                pid,
                t0,
                count,
                size,
                "xargs curl https",
            )?);
        }
    }
    let [kept, closed, plain] = &runs;
    // Each https way must be what it says: with keep_alive off a handshake per file (a
    // resumed session is still a handshake, a shorter one); kept, at most one handshake for
    // two files (a worker's connection carries many; one idle past 1 s is opened again).
    if let Some(n) = closed.handshakes.iter().find(|&&n| n < count as u64) {
        return Err(io::Error::other(format!(
            "{n} TLS handshakes for {count} files over https with keep_alive off"
        )));
    }
    if let Some(n) = kept
        .handshakes
        .iter()
        .find(|&&n| n == 0 || n > count as u64 / 2)
    {
        return Err(io::Error::other(format!(
            "{n} TLS handshakes for {count} files over https with kept connections"
        )));
    }
    let mut row = Row::new(
        "tls_files",
        &format!(
            "throughput over https: {count} × {} KiB images present at start, kept connections",
            p.image_size / 1024
        ),
        "files/s",
        Target::None,
        Summary::of(&kept.rate),
    );
    let median = |v: &[f64]| Summary::of(v).median;
    row.checks.push(Check {
        text: format!(
            "{:.0} % of plain http; {:.2}× https with a handshake per file",
            100.0 * median(&kept.rate) / median(&plain.rate),
            median(&kept.rate) / median(&closed.rate),
        ),
        ok: None,
    });
    row.others
        .push((Way::Closed.label().into(), Summary::of(&closed.rate)));
    row.others
        .push((Way::Plain.label().into(), Summary::of(&plain.rate)));
    if !curl.is_empty() {
        let rates: Vec<f64> = curl.iter().map(|p| p.rate).collect();
        row.others.push((
            format!("xargs -P{} curl --cacert -F", ctx.workers),
            Summary::of(&rates),
        ));
    }
    row.detail = json!({
        "how": format!("from the daemon's fork/exec to the last request settled at the endpoint; \
                        a fresh database each run; settle_secs 0; {} workers; runs alternate \
                        https (kept connections), https with upload.keep_alive false, http, \
                        xargs curl https (timed from xargs' start); {}", ctx.workers, ctx.runs_label()),
        "cpu_us_per_file_https": Summary::of(&kept.cpu_us).to_json(),
        "cpu_us_per_file_https_closed": Summary::of(&closed.cpu_us).to_json(),
        "cpu_us_per_file_http": Summary::of(&plain.cpu_us).to_json(),
        "endpoint_cpu_us_per_file_https": Summary::of(&kept.endpoint_us).to_json(),
        "endpoint_cpu_us_per_file_https_closed": Summary::of(&closed.endpoint_us).to_json(),
        "endpoint_cpu_us_per_file_http": Summary::of(&plain.endpoint_us).to_json(),
        "handshakes_per_run": kept.handshakes,
        "handshakes_per_run_closed": closed.handshakes,
        "resumed_handshakes_per_run_closed": closed.resumed,
    });
    row.checks.push(Check {
        text: format!(
            "CPU/file https kept / https a handshake each / http: daemon {} / {} / {} µs, \
             endpoint with the TLS front {} / {} / {} µs; handshakes per run {} kept, {} \
             closed ({} of them resumed)",
            fmt(median(&kept.cpu_us)),
            fmt(median(&closed.cpu_us)),
            fmt(median(&plain.cpu_us)),
            fmt(median(&kept.endpoint_us)),
            fmt(median(&closed.endpoint_us)),
            fmt(median(&plain.endpoint_us)),
            kept.handshakes.iter().max().unwrap_or(&0),
            closed.handshakes.iter().max().unwrap_or(&0),
            closed.resumed.iter().max().unwrap_or(&0),
        ),
        ok: None,
    });
    Ok(row)
}
