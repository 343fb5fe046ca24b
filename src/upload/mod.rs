//! One upload and the worker pool that runs them. A worker takes a `Job` from the owner,
//! does the file checks that need the file open (type, version, magic bytes, completeness),
//! sends the request and reports a `Report` back; the request itself is built in
//! `multipart` and sent, under its deadlines and the shared rate limit, in `send`, after
//! the `{sha256}` pass of `checksum` when a field asks for the content's checksum.
//!
//! Workers never touch the database: they receive `Job`s from the DB owner over a bounded
//! channel, and what they know of a file is what the job carries. The pool ends when the
//! job channel is closed: each worker finishes the request it is in and returns.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use attohttpc::KeepAlive;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::config::{Config, Endpoint, SuccessRule, Template};
use crate::layout::{self, Content, Kind, OpenError, Show, Target, Version};
use crate::secret::Secret;
use crate::timestamp::Timestamp;
use crate::tls::{self, ClientTls};
use crate::work::{classify_status, is_endpoint_failure, Class, Outcome, Sent};

mod checksum;
#[cfg(test)]
mod keep_alive_tests;
mod multipart;
mod route;
mod send;
mod success;

use multipart::COPY_CHUNK;
pub use multipart::{encode_filename, idempotency_key};
pub use route::Route;
pub use send::{form_fields, headers, send, HeaderText, RateLimiter};

pub const USER_AGENT: &str = concat!("sega-uploader/", env!("CARGO_PKG_VERSION"));

/// Everything a worker needs to build the request, fixed for one configuration. Jobs carry
/// an `Arc` of it, so a reload takes effect from the next job on.
#[derive(Debug)]
pub struct RequestSettings {
    /// Where requests go, as configured: messages show `redacted()`.
    pub endpoint: Endpoint,
    /// What `send` puts on the wire: the URL without its credentials, which go as Basic
    /// auth (`auth`), never in a request line a proxy could log.
    pub wire_url: Secret<String>,
    pub file_field: String,
    pub fields: Vec<(String, Template)>,
    /// A field says `{sha256}`: every file is read once before its request to hash it.
    pub hash_content: bool,
    pub headers: Vec<(String, Secret<String>)>,
    /// `Authorization: Basic …` from the URL's credentials, unless `headers` sets its own
    /// `Authorization` (which wins).
    pub auth: Option<Secret<String>>,
    /// How requests get there: TLS and the proxy (shared with the webhook).
    pub route: Route,
    /// What a 2xx must say to be a success (`upload.success`).
    pub success: Option<SuccessRule>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// The slowest rate a request may go at before it counts as stalled: `min_rate_kib_s`,
    /// or less when `max_kib_s` shared by every worker leaves each less than that.
    pub min_rate_bytes_s: u64,
    /// `max_kib_s` is set: the limiter may hold a request back by up to one copy chunk.
    pub limited: bool,
    pub scope: String,
    pub incomplete_max_wait: Duration,
    /// `upload.keep_alive`: the worker's connection is kept for its next upload.
    pub keep_alive: bool,
}

impl RequestSettings {
    /// Reads the TLS files when an https URL needs them: that is the one way this fails.
    pub fn new(config: &Config, scope: String) -> Result<RequestSettings, tls::LoadError> {
        let u = &config.upload;
        let own_authorization = u
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        let webhook_https = config
            .alerts
            .webhook_url
            .as_ref()
            .is_some_and(|w| Route::is_https(w.expose()));
        let tls = if u.url.is_https() || webhook_https {
            Some(Arc::new(ClientTls::load(&u.tls)?))
        } else {
            None
        };
        Ok(RequestSettings {
            endpoint: u.url.clone(),
            wire_url: u.url.without_credentials(),
            file_field: u.file_field.clone(),
            fields: u.fields.clone(),
            hash_content: u.fields.iter().any(|(_, t)| t.uses_sha256()),
            headers: u.headers.clone(),
            auth: u.url.basic_auth().filter(|_| !own_authorization),
            route: Route::new(tls, u.proxy.as_ref()),
            success: u.success.clone(),
            connect_timeout: u.connect_timeout,
            timeout: u.timeout,
            min_rate_bytes_s: min_rate(u.min_rate_kib_s, u.max_kib_s, u.workers),
            limited: u.max_kib_s.is_some(),
            scope,
            incomplete_max_wait: config.watch.incomplete_max_wait,
            keep_alive: u.keep_alive,
        })
    }

    /// The overall limit: `timeout_secs` + size / the minimum rate, so a large file on a
    /// slow link is not cut off while a stalled one is. With a shared `max_kib_s`, the
    /// limiter hands out at most one copy chunk at a time, so a chunk's worth is added.
    pub fn overall_timeout(&self, size: u64) -> Duration {
        let slack = if self.limited { COPY_CHUNK as u64 } else { 0 };
        self.timeout + Duration::from_secs((size + slack) / self.min_rate_bytes_s)
    }

    /// How long a whole job may take before the supervisor calls its worker stuck: opening
    /// and checking the file, the `{sha256}` pass if there is one (a read of the file,
    /// allowed the time a send of it is), connecting, the request, reading the answer, and
    /// a margin.
    pub fn job_limit(&self, size: u64) -> Duration {
        let pass = if self.hash_content {
            Duration::from_secs(size / self.min_rate_bytes_s)
        } else {
            Duration::ZERO
        };
        self.connect_timeout + pass + self.overall_timeout(size) + self.timeout + JOB_MARGIN
    }
}

/// Slack in `job_limit` for opening and checking the file and for a busy machine.
const JOB_MARGIN: Duration = Duration::from_secs(30);

/// The rate below which a request counts as stalled: `min_rate_kib_s`, unless `max_kib_s`,
/// shared by `workers` uploading at once, leaves each worker less than that (then every
/// request would be cut off by its deadline while the limiter made it wait, and a healthy
/// endpoint would look down).
fn min_rate(min_rate_kib_s: u64, max_kib_s: Option<u64>, workers: usize) -> u64 {
    let per_worker = max_kib_s.map_or(u64::MAX, |m| m / (workers.max(1) as u64));
    min_rate_kib_s.min(per_worker).max(1) * 1024
}

/// A job as the DB owner hands it out: one file to open, check and send, with what the
/// owner needs to map the report back to the ledger's row (`id`, `attempt`).
#[derive(Debug, Clone)]
pub struct Job {
    /// The row's id in the ledger, for the owner.
    pub id: i64,
    /// This attempt's number, for the owner's judgement of the report (a row may be claimed
    /// again, as a new version, while a worker still sends the old one).
    pub attempt: i64,
    /// What the request carries.
    pub file: Item,
    /// When the file was first found still being written (no end-of-image marker), if it was.
    pub incomplete_since: Option<Timestamp>,
    /// Where the file is, checked by the owner against the rules and the config in force.
    pub target: Target,
    /// A probe during an endpoint outage: its failure does not count toward max_attempts.
    pub probe: bool,
    /// Sent even while the gate says the endpoint is failing (probes, and the one-at-a-time
    /// attempts that decide whether an outage has begun).
    pub solo: bool,
    /// The generation of the owner's rules the job was checked under (`Gate::rules`).
    pub rules: u64,
    pub settings: Arc<RequestSettings>,
}

/// A file as a request carries it: what its form fields, its file name and its
/// Idempotency-Key say, and the version that was claimed.
#[derive(Debug, Clone)]
pub struct Item {
    pub path: PathBuf,
    pub folder: String,
    pub date: String,
    pub filename: OsString,
    pub version: Version,
}

/// What the workers know about the endpoint between two decisions of the DB owner: how
/// many requests in a row have just failed for endpoint reasons (transport error, 5xx,
/// 408, 429). While that is not zero, a worker hands back an ordinary job unstarted
/// instead of sending it, so the jobs already queued when an outage begins do not all turn
/// into failed requests before the owner has even heard of the first one.
///
/// It also carries the generation of the owner's rules: a reload that narrows the folders or
/// extensions bumps it, and a worker hands back unstarted a job claimed under older rules, so
/// that the owner checks it again under the new ones.
#[derive(Debug, Default)]
pub struct Gate {
    failures: AtomicU32,
    rules: AtomicU64,
}

impl Gate {
    pub fn failing(&self) -> bool {
        self.failures.load(Ordering::Relaxed) > 0
    }

    /// The generation of the rules in force, for the jobs claimed from now on.
    pub fn rules(&self) -> u64 {
        self.rules.load(Ordering::Acquire)
    }

    /// The owner took new rules (a reload): jobs claimed before are stale.
    pub fn rules_changed(&self) {
        self.rules.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether a worker must hand a job back unstarted: the endpoint is failing (unless the
    /// job is one of the one-at-a-time attempts, `solo`), or the job was claimed under older
    /// rules than those in force.
    fn holds_back(&self, solo: bool, rules: u64) -> bool {
        (!solo && self.failing()) || rules != self.rules()
    }

    fn record(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Transport(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Answered(r) if is_endpoint_failure(r.status) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Answered(_) => self.failures.store(0, Ordering::Relaxed),
            _ => {}
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub job: Job,
    pub started_at: OffsetDateTime,
    pub duration: Duration,
    pub outcome: Outcome,
    /// WARN-worthy facts for the log (an incomplete file sent after the wait).
    pub note: Option<String>,
}

/// Runs one job: file checks, then the request, on the worker's kept connection if it has
/// one (`keep`).
pub fn run_job(
    job: Job,
    limiter: Option<&Arc<RateLimiter>>,
    keep: &KeepAlive,
    clock: &Clock,
) -> Report {
    let started_at = clock.now_utc();
    let t0 = Instant::now();
    let mut note = None;
    let outcome = attempt(&job, limiter, keep, clock, &mut note);
    Report {
        job,
        started_at,
        duration: t0.elapsed(),
        outcome,
        note,
    }
}

/// A file a worker has opened and checked, ready to be sent.
#[derive(Debug)]
pub struct Checked {
    pub file: File,
    /// The date folder it was opened in: what the file is after the send is looked up
    /// there.
    pub date: layout::DateDir,
    pub kind: Kind,
    /// A WARN for the log: an incomplete file sent after the wait.
    pub note: Option<String>,
}

/// The checks a worker makes before it sends anything, in order: the file opened beneath
/// its folder, following no link and never blocking on a FIFO (`layout::open_beneath`); the
/// version it was claimed at; the content rule (magic bytes, then the end marker, with the
/// wait of `watch.incomplete_max_wait_secs` for a file still being written). The `Err` is
/// what the attempt comes to without a request. Shared with `scan --dry-run`, so that what
/// it predicts is what a worker would do.
// The error is the attempt's whole `Outcome`, made at most once per job: boxing it would
// buy nothing.
#[allow(clippy::result_large_err)]
pub fn check_file(
    target: &Target,
    claimed: Version,
    incomplete_since: Option<Timestamp>,
    max_wait: Duration,
    now: OffsetDateTime,
) -> Result<Checked, Outcome> {
    let layout::Opened { file, meta, date } =
        layout::open_beneath_in(target).map_err(open_outcome)?;
    let on_disk = Version::of(&meta);
    if on_disk != claimed {
        return Err(Outcome::Changed {
            version: on_disk,
            sent: None,
        });
    }
    let kind = layout::kind_of(&target.name);
    let mut note = None;
    match layout::check_content(&file, on_disk.size, kind) {
        Ok(Content::Image) => {}
        Ok(Content::NotAnImage) => return Err(Outcome::NotAnImage),
        Ok(Content::Incomplete) => {
            // Never later than now: a wall clock stepped back past it would stretch the
            // wait by the step (an hour back held the file an hour; review of 2026-12-04).
            let since = incomplete_since.map_or(now, Timestamp::utc).min(now);
            if now - since < max_wait {
                return Err(Outcome::Incomplete { since });
            }
            note = Some(format!(
                "{} has no end-of-image marker but has not changed for {}: uploading it anyway",
                target.path.shown(),
                crate::clock::human_duration(max_wait)
            ));
        }
        Err(e) => return Err(Outcome::Unreadable(crate::error::describe_io(&e))),
    }
    Ok(Checked {
        file,
        date,
        kind,
        note,
    })
}

fn attempt(
    job: &Job,
    limiter: Option<&Arc<RateLimiter>>,
    keep: &KeepAlive,
    clock: &Clock,
    note: &mut Option<String>,
) -> Outcome {
    let f = &job.file;
    let checked = check_file(
        &job.target,
        f.version,
        job.incomplete_since,
        job.settings.incomplete_max_wait,
        clock.now_utc(),
    );
    let Checked {
        file,
        date,
        kind,
        note: n,
    } = match checked {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    *note = n;
    let on_disk = f.version;
    let outcome = send(
        &job.settings,
        f,
        kind,
        file,
        on_disk.size,
        limiter,
        Some(keep),
    );
    // The file may have been rewritten while it was sent: then what arrived was a mix and a
    // new version must follow. (An answer that is not a success is judged as it is; the
    // next claim finds the new version.)
    let changed = match &outcome {
        Outcome::Answered(r)
            if classify_status(r.status) != Class::Success || r.mismatch.is_some() =>
        {
            None
        }
        Outcome::Answered(_) | Outcome::Transport(_) => {
            date.version_of(&job.target.name).filter(|v| *v != on_disk)
        }
        _ => None,
    };
    if let Outcome::Shrank = outcome {
        return match layout::open_beneath(&job.target) {
            Ok((_, m)) => Outcome::Changed {
                version: Version::of(&m),
                sent: Some(Sent::Transport("the file shrank while it was sent".into())),
            },
            Err(e) => open_outcome(e),
        };
    }
    match (changed, outcome) {
        (Some(version), Outcome::Answered(r)) => Outcome::Changed {
            version,
            sent: Some(Sent::Answered(r)),
        },
        (Some(version), Outcome::Transport(e)) => Outcome::Changed {
            version,
            sent: Some(Sent::Transport(e)),
        },
        (_, outcome) => outcome,
    }
}

/// What a failed open means for the attempt.
fn open_outcome(e: OpenError) -> Outcome {
    match e {
        OpenError::Vanished => Outcome::Vanished,
        OpenError::Unavailable(why) => Outcome::Unavailable(why),
        OpenError::NotBeneath(why) => Outcome::NotBeneath(why),
        OpenError::NotRegular(t) => Outcome::NotRegular(t.to_string()),
        OpenError::Unreadable(e) => Outcome::Unreadable(crate::error::describe_io(&e)),
    }
}

/// A worker's next job; `None` once the channel is closed. A kept connection is closed once
/// it is too old to be reused, not left open (half-closed by the server, say) until the
/// next job comes.
fn next_job(jobs: &Receiver<Job>, keep: &KeepAlive) -> Option<Job> {
    if keep.holds_one() {
        match jobs.recv_timeout(attohttpc::DEFAULT_MAX_IDLE) {
            Ok(job) => return Some(job),
            Err(RecvTimeoutError::Timeout) => keep.close(),
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
    jobs.recv().ok()
}

/// Starts `n` named workers (`upload-1`…) that run jobs until the job channel closes; each
/// tells `watch` when it takes a job and by when it must be over.
pub fn spawn_workers(
    n: usize,
    jobs: Receiver<Job>,
    reports: Sender<Report>,
    limiter: Option<Arc<RateLimiter>>,
    gate: Arc<Gate>,
    clock: Clock,
    watch: Arc<crate::health::Workers>,
) -> io::Result<Vec<thread::JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let (jobs, reports, limiter, clock) = (
                jobs.clone(),
                reports.clone(),
                limiter.clone(),
                clock.clone(),
            );
            let (gate, watch) = (gate.clone(), watch.clone());
            thread::Builder::new()
                .name(format!("upload-{}", i + 1))
                .spawn(move || {
                    // One connection per worker, kept between its uploads.
                    let keep = KeepAlive::new();
                    while let Some(job) = next_job(&jobs, &keep) {
                        let report = if gate.holds_back(job.solo, job.rules) {
                            Report {
                                started_at: clock.now_utc(),
                                duration: Duration::ZERO,
                                outcome: Outcome::NotStarted,
                                note: None,
                                job,
                            }
                        } else {
                            let limit = job.settings.job_limit(job.file.version.size);
                            watch.busy(i, &job.target.path, limit);
                            let r = run_job(job, limiter.as_ref(), &keep, &clock);
                            watch.idle(i);
                            gate.record(&r.outcome);
                            r
                        };
                        if reports.send(report).is_err() {
                            // The DB owner is gone (shutdown past the grace): nobody to tell.
                            return;
                        }
                    }
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file without its end-of-image marker waits `max_wait` from when it was first
    /// found so; a wall clock stepped back past that moment restarts the wait at the new
    /// now instead of stretching it by the step.
    #[test]
    fn an_incomplete_file_waits_from_no_later_than_now() {
        let dir = std::env::temp_dir().join(format!("sega-incomplete-{}", std::process::id()));
        let date_dir = dir.join("Sega_1").join("2026-11-26");
        std::fs::create_dir_all(&date_dir).unwrap();
        let mut jpeg = sega_testsrv::images::jpeg(8, 8, 1);
        jpeg.truncate(jpeg.len() - 2);
        let path = date_dir.join("x.jpg");
        std::fs::write(&path, &jpeg).unwrap();
        let target = Target {
            anchor: dir.join("Sega_1"),
            below: None,
            date: "2026-11-26".into(),
            name: "x.jpg".into(),
            path: path.clone(),
        };
        let version = Version::of(&std::fs::metadata(&path).unwrap());
        let now = time::macros::datetime!(2026-11-26 10:00:00 UTC);
        let wait = Duration::from_secs(6);
        let since = |first: OffsetDateTime| match check_file(
            &target,
            version,
            Some(Timestamp::new(first)),
            wait,
            now,
        ) {
            Err(Outcome::Incomplete { since }) => since,
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("sent"),
        };
        let earlier = now - Duration::from_secs(2);
        assert_eq!(since(earlier), earlier, "still waiting since then");
        let stepped_back = now + Duration::from_secs(3600);
        assert_eq!(since(stepped_back), now, "the wait starts again now");
        assert!(
            check_file(
                &target,
                version,
                Some(Timestamp::new(now - wait)),
                wait,
                now
            )
            .is_ok(),
            "sent once the wait is over"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn request_settings_never_print_their_secrets() {
        let c = crate::config::parse(
            r#"{"upload": {"url": "http://bob:hunter2@up.example/u",
                           "headers": {"Authorization": "Bearer s3cret"}}}"#,
        )
        .unwrap();
        let s = RequestSettings::new(&c, "scope".into()).unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(s.endpoint.redacted(), "http://<redacted>@up.example/u");
    }

    #[test]
    fn url_credentials_are_sent_unless_a_header_says_otherwise() {
        let c = crate::config::parse(r#"{"upload": {"url": "http://bob:hunter2@up.example/u"}}"#)
            .unwrap();
        let s = RequestSettings::new(&c, "scope".into()).unwrap();
        let auth = s.auth.as_ref().map(|a| a.expose().as_str());
        assert_eq!(auth, Some("Basic Ym9iOmh1bnRlcjI="));
        assert!(s.route.tls.is_none(), "plain http loads no TLS");
        let c = crate::config::parse(
            r#"{"upload": {"url": "http://bob:hunter2@up.example/u",
                           "headers": {"authorization": "Bearer s3cret"}}}"#,
        )
        .unwrap();
        let s = RequestSettings::new(&c, "scope".into()).unwrap();
        assert!(s.auth.is_none());
    }

    /// A job claimed before a reload is never sent under the rules it no longer passes:
    /// the worker hands it back for the owner to check again (trust, narrowing on SIGHUP).
    #[test]
    fn a_job_claimed_under_replaced_rules_is_held_back() {
        let gate = Gate::default();
        let claimed_under = gate.rules();
        assert!(!gate.holds_back(false, claimed_under));
        gate.rules_changed();
        assert!(
            gate.holds_back(false, claimed_under),
            "ordinary job, old rules"
        );
        assert!(gate.holds_back(true, claimed_under), "a probe too");
        assert!(
            !gate.holds_back(false, gate.rules()),
            "claimed under the new rules"
        );
        gate.record(&Outcome::Transport("refused".into()));
        assert!(
            gate.holds_back(false, gate.rules()),
            "the endpoint is failing"
        );
        assert!(
            !gate.holds_back(true, gate.rules()),
            "the one-at-a-time attempt goes"
        );
    }

    #[test]
    fn overall_timeout_grows_with_size() {
        let s = RequestSettings {
            endpoint: Endpoint::parse("http://h/u").unwrap(),
            wire_url: Secret::new("http://h/u".into()),
            file_field: "file".into(),
            fields: vec![],
            hash_content: false,
            headers: vec![],
            auth: None,
            route: Route::default(),
            success: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            min_rate_bytes_s: 64 * 1024,
            limited: false,
            scope: "s".into(),
            incomplete_max_wait: Duration::from_secs(600),
            keep_alive: true,
        };
        assert_eq!(s.overall_timeout(0), Duration::from_secs(60));
        assert_eq!(s.overall_timeout(1 << 30), Duration::from_secs(60 + 16384));
    }

    /// Review item 4: 4 workers sharing `max_kib_s` 8 each get 2 KiB/s; a 48 KiB file must
    /// not be cut off after `timeout_secs` + 48 / 8 (the limiter makes it wait longer).
    #[test]
    fn a_shared_rate_limit_lengthens_the_deadline() {
        let c = crate::config::parse(
            r#"{"upload": {"url": "http://h/u", "workers": 4, "max_kib_s": 8,
                           "min_rate_kib_s": 8, "timeout_secs": 2}}"#,
        )
        .unwrap();
        let s = RequestSettings::new(&c, "scope".into()).unwrap();
        assert!(!s.hash_content);
        assert_eq!(s.min_rate_bytes_s, 2 * 1024);
        assert!(s.overall_timeout(48 * 1024) >= Duration::from_secs(2 + 24 + 32));
        assert!(s.job_limit(48 * 1024) > s.overall_timeout(48 * 1024));
        let free =
            crate::config::parse(r#"{"upload": {"url": "http://h/u", "min_rate_kib_s": 8}}"#)
                .unwrap();
        let s = RequestSettings::new(&free, "scope".into()).unwrap();
        assert_eq!(s.min_rate_bytes_s, 8 * 1024);
    }

    /// `{sha256}` reads the whole file before the send: the job may take that much longer
    /// before its worker is called stuck.
    #[test]
    fn a_checksum_field_hashes_and_lengthens_the_job_limit() {
        let plain =
            crate::config::parse(r#"{"upload": {"url": "http://h/u", "min_rate_kib_s": 8}}"#)
                .unwrap();
        let plain = RequestSettings::new(&plain, "scope".into()).unwrap();
        let hashed = crate::config::parse(
            r#"{"upload": {"url": "http://h/u", "min_rate_kib_s": 8,
                           "fields": {"date": "{date}", "sum": "sha256:{sha256}"}}}"#,
        )
        .unwrap();
        let hashed = RequestSettings::new(&hashed, "scope".into()).unwrap();
        assert!(hashed.hash_content && !plain.hash_content);
        let size = 8 * 1024 * 100;
        assert_eq!(
            hashed.job_limit(size),
            plain.job_limit(size) + Duration::from_secs(100)
        );
    }
}
