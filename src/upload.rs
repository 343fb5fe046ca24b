//! One upload: the multipart body streamed from disk, the request with its headers and three
//! timeouts, and the classification of what came back. Also the worker pool that runs them.
//!
//! Workers never touch the database: they receive `Job`s from the DB owner over a bounded
//! channel, do the file checks that need the file open (type, version, magic bytes,
//! completeness), send, and report a `Report` back. The pool ends when the job channel is
//! closed: each worker finishes the request it is in and returns.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use attohttpc::body::{Body, BodyKind};
use attohttpc::header::{HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use crossbeam_channel::{Receiver, Sender};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::config::{Config, Template, TemplateVars};
use crate::layout::Show;
use crate::layout::{self, Content, Kind, OpenError, Target, Version};
use crate::secret::Secret;
use crate::store::{Claimed, RESPONSE_CAP};

pub const USER_AGENT: &str = concat!("sega-uploader/", env!("CARGO_PKG_VERSION"));

/// Everything a worker needs to build the request, fixed for one configuration. Jobs carry
/// an `Arc` of it, so a reload takes effect from the next job on.
#[derive(Debug)]
pub struct RequestSettings {
    pub url: Secret<String>,
    /// The URL for messages: credentials redacted.
    pub shown_url: String,
    pub file_field: String,
    pub fields: Vec<(String, Template)>,
    pub headers: Vec<(String, Secret<String>)>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// The slowest rate a request may go at before it counts as stalled: `min_rate_kib_s`,
    /// or less when `max_kib_s` shared by every worker leaves each less than that.
    pub min_rate_bytes_s: u64,
    /// `max_kib_s` is set: the limiter may hold a request back by up to one copy chunk.
    pub limited: bool,
    pub scope: String,
    pub incomplete_max_wait: Duration,
}

impl RequestSettings {
    pub fn new(config: &Config, scope: String) -> RequestSettings {
        let u = &config.upload;
        RequestSettings {
            url: u.url.url.clone(),
            shown_url: u.url.redacted().to_owned(),
            file_field: u.file_field.clone(),
            fields: u.fields.clone(),
            headers: u.headers.clone(),
            connect_timeout: u.connect_timeout,
            timeout: u.timeout,
            min_rate_bytes_s: min_rate(u.min_rate_kib_s, u.max_kib_s, u.workers),
            limited: u.max_kib_s.is_some(),
            scope,
            incomplete_max_wait: config.watch.incomplete_max_wait,
        }
    }

    /// The overall limit: `timeout_secs` + size / the minimum rate, so a large file on a
    /// slow link is not cut off while a stalled one is. With a shared `max_kib_s`, the
    /// limiter hands out at most one copy chunk at a time, so a chunk's worth is added.
    pub fn overall_timeout(&self, size: u64) -> Duration {
        let slack = if self.limited { COPY_CHUNK as u64 } else { 0 };
        self.timeout + Duration::from_secs((size + slack) / self.min_rate_bytes_s)
    }

    /// How long a whole job may take before the supervisor calls its worker stuck: opening
    /// and checking the file, connecting, the request, reading the answer, and a margin.
    pub fn job_limit(&self, size: u64) -> Duration {
        self.connect_timeout + self.overall_timeout(size) + self.timeout + JOB_MARGIN
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

/// The idempotency scope: `database.scope`, else this host's /etc/machine-id (stable across
/// reinstalls of the package and database loss), else the host name.
pub fn resolve_scope(configured: Option<&str>) -> String {
    if let Some(s) = configured {
        return s.to_owned();
    }
    for p in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(id) = std::fs::read_to_string(p) {
            let id = id.trim();
            if !id.is_empty() {
                return id.to_owned();
            }
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    log::warn!(
        "no /etc/machine-id: using the host name as the idempotency scope; set database.scope"
    );
    host.trim().to_owned()
}

/// `Idempotency-Key`: hex SHA-256 over (scope, folder label, date, file name bytes, size,
/// mtime_ns). Each text field is prefixed by its length as 8 big-endian bytes so no two
/// different tuples hash the same input; size and mtime_ns are 8 big-endian bytes each.
pub fn idempotency_key(
    scope: &str,
    folder: &str,
    date: &str,
    filename: &[u8],
    v: Version,
) -> String {
    let mut h = Sha256::new();
    for part in [
        scope.as_bytes(),
        folder.as_bytes(),
        date.as_bytes(),
        filename,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(v.size.to_be_bytes());
    h.update(v.mtime_ns.to_be_bytes());
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file name as it goes into `filename="…"` (RFC 7578 §4.2): `"`, `\`, `%`, CR, LF,
/// other control bytes and bytes that are not valid UTF-8 are percent-encoded; valid
/// non-ASCII UTF-8 (Korean names) is sent as is. `%` is encoded too, so the encoding is
/// lossless; `\` is, because a quoted-string parser reads `\x` as `x`.
pub fn encode_filename(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '"' || c == '%' || c == '\\' || c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Shared cap on the total upload rate (`upload.max_kib_s`) across workers: a token bucket
/// holding at most one second of budget.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(bytes_per_sec: u64) -> RateLimiter {
        RateLimiter {
            rate: bytes_per_sec as f64,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Blocks until `n` bytes may be sent.
    fn take(&self, n: usize) {
        let wait = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(st.1).as_secs_f64() * self.rate;
            st.0 = (st.0 + refill).min(self.rate) - n as f64;
            st.1 = now;
            if st.0 < 0.0 {
                Duration::from_secs_f64(-st.0 / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            thread::sleep(wait);
        }
    }
}

/// The request body: text parts, the file part's header, the file streamed from disk in
/// 64 KiB pieces, the closing boundary. Its length is known up front, so attohttpc sends a
/// `Content-Length` and no chunked encoding.
pub struct MultipartBody {
    boundary: String,
    head: Vec<u8>,
    file: File,
    file_len: u64,
    tail: Vec<u8>,
    limiter: Option<Arc<RateLimiter>>,
    /// Set when the file could not be sent as advertised (shrank, or a read failed): the
    /// attempt is then about the file, not the network.
    pub file_problem: Option<FileProblem>,
    pub bytes_written: u64,
}

#[derive(Debug)]
pub enum FileProblem {
    Shrank,
    Read(io::Error),
}

pub struct Part<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

impl MultipartBody {
    #[allow(clippy::too_many_arguments)] // one argument per piece of the body
    pub fn new(
        boundary: String,
        fields: &[Part<'_>],
        file_field: &str,
        filename: &[u8],
        content_type: &str,
        file: File,
        file_len: u64,
        limiter: Option<Arc<RateLimiter>>,
    ) -> MultipartBody {
        let mut head = Vec::new();
        for p in fields {
            head.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n",
                    p.name
                )
                .as_bytes(),
            );
            head.extend_from_slice(p.value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{}\"\r\n\
                 Content-Type: {content_type}\r\n\r\n",
                encode_filename(filename)
            )
            .as_bytes(),
        );
        let tail = format!("\r\n--{boundary}--\r\n").into_bytes();
        MultipartBody {
            boundary,
            head,
            file,
            file_len,
            tail,
            limiter,
            file_problem: None,
            bytes_written: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.head.len() as u64 + self.file_len + self.tail.len() as u64
    }
}

const COPY_CHUNK: usize = 64 * 1024;

impl Body for MultipartBody {
    fn kind(&mut self) -> io::Result<BodyKind> {
        Ok(BodyKind::KnownLength(self.len()))
    }

    fn content_type(&mut self) -> io::Result<Option<String>> {
        Ok(Some(format!(
            "multipart/form-data; boundary={}",
            self.boundary
        )))
    }

    fn write<W: Write>(&mut self, mut w: W) -> io::Result<()> {
        // write() runs again if attohttpc retries after a redirect: start from the top.
        self.bytes_written = 0;
        self.file.seek(SeekFrom::Start(0)).inspect_err(|_| {})?;
        w.write_all(&self.head)?;
        self.bytes_written += self.head.len() as u64;
        let mut buf = vec![0u8; COPY_CHUNK];
        let mut left = self.file_len;
        while left > 0 {
            let want = (left as usize).min(COPY_CHUNK);
            let n = match self.file.read(&mut buf[..want]) {
                Ok(0) => {
                    self.file_problem = Some(FileProblem::Shrank);
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while uploading",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let msg = e.to_string();
                    self.file_problem = Some(FileProblem::Read(e));
                    return Err(io::Error::other(msg));
                }
            };
            if let Some(l) = &self.limiter {
                l.take(n);
            }
            w.write_all(&buf[..n])?;
            self.bytes_written += n as u64;
            left -= n as u64;
        }
        w.write_all(&self.tail)?;
        self.bytes_written += self.tail.len() as u64;
        Ok(())
    }
}

/// A fresh multipart boundary: 128 bits from the clock, the process and a counter, hashed.
/// It cannot collide with file content by accident.
fn boundary() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(std::process::id().to_be_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    h.update(format!("{:?}", Instant::now()).as_bytes());
    h.update(
        OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_be_bytes(),
    );
    format!("sega-{}", &hex(&h.finalize())[..32])
}

/// How a response status is treated (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    Retry,
    Failed,
}

pub fn classify_status(status: u16) -> Class {
    match status {
        200..=299 => Class::Success,
        408 | 425 | 429 | 500..=599 => Class::Retry,
        _ => Class::Failed,
    }
}

/// What the server said.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub json: Option<String>,
    pub retry_after: Option<Duration>,
    pub location: Option<String>,
    /// The body could not be read to the end (timeout, reset): what arrived is kept.
    pub body_error: Option<String>,
}

/// What one job came to, before the DB owner turns it into a status.
#[derive(Debug)]
pub enum Outcome {
    /// The server answered.
    Answered(Response),
    /// No answer: refused, reset, timed out, DNS…
    Transport(String),
    /// The file could not be opened or read (EACCES, EIO): retry with backoff.
    Unreadable(String),
    /// Its folder or date folder is missing or empty (a share not mounted): unreadable for
    /// now, retried without counting against `max_attempts`.
    Unavailable(String),
    /// Gone from a date folder that is still there: skipped until it is seen again.
    Vanished,
    /// A directory on the way is a symbolic link (or not a directory): never followed.
    NotBeneath(String),
    /// Became a symlink, FIFO, directory… since it was recorded.
    NotRegular(String),
    /// Wrong magic bytes (or empty).
    NotAnImage,
    /// A JPEG without its end marker or a PNG without IEND: still being written.
    Incomplete { since: OffsetDateTime },
    /// The file on disk is not the version that was claimed: before the send (`sent` None)
    /// or while it was sent (what the endpoint received was a mix; its answer is kept).
    Changed {
        version: Version,
        sent: Option<Sent>,
    },
    /// Handed back without trying: the endpoint is failing (see `Gate`).
    NotStarted,
    /// The file got shorter while its body was being sent (the request was cut short);
    /// `attempt` turns this into `Changed` or what the file's absence means.
    Shrank,
}

/// What became of a request whose file changed under it.
#[derive(Debug)]
pub enum Sent {
    Answered(Response),
    Transport(String),
}

/// A job as the DB owner hands it out.
#[derive(Debug, Clone)]
pub struct Job {
    pub file: Claimed,
    /// Where the file is, checked by the owner against the rules and the config in force.
    pub target: Target,
    /// A probe during an endpoint outage: its failure does not count toward max_attempts.
    pub probe: bool,
    /// Sent even while the gate says the endpoint is failing (probes, and the one-at-a-time
    /// attempts that decide whether an outage has begun).
    pub solo: bool,
    pub settings: Arc<RequestSettings>,
}

/// What the workers know about the endpoint between two decisions of the DB owner: how
/// many requests in a row have just failed for endpoint reasons (transport error, 5xx,
/// 408, 429). While that is not zero, a worker hands back an ordinary job unstarted
/// instead of sending it, so the jobs already queued when an outage begins do not all turn
/// into failed requests before the owner has even heard of the first one.
#[derive(Debug, Default)]
pub struct Gate {
    failures: AtomicU32,
}

impl Gate {
    pub fn failing(&self) -> bool {
        self.failures.load(Ordering::Relaxed) > 0
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

/// Answers that say the endpoint (not this file) is in trouble.
pub fn is_endpoint_failure(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
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

/// Runs one job: file checks, then the request.
pub fn run_job(job: Job, limiter: Option<&Arc<RateLimiter>>, clock: &Clock) -> Report {
    let started_at = clock.now_utc();
    let t0 = Instant::now();
    let mut note = None;
    let outcome = attempt(&job, limiter, clock, &mut note);
    Report {
        job,
        started_at,
        duration: t0.elapsed(),
        outcome,
        note,
    }
}

fn attempt(
    job: &Job,
    limiter: Option<&Arc<RateLimiter>>,
    clock: &Clock,
    note: &mut Option<String>,
) -> Outcome {
    let f = &job.file;
    let (file, meta) = match layout::open_beneath(&job.target) {
        Ok(x) => x,
        Err(e) => return open_outcome(e),
    };
    let on_disk = Version::of(&meta);
    if on_disk != f.version {
        return Outcome::Changed {
            version: on_disk,
            sent: None,
        };
    }
    let kind = layout::kind_of(&f.filename);
    match layout::check_content(&file, on_disk.size, kind) {
        Ok(Content::Image) => {}
        Ok(Content::NotAnImage) => return Outcome::NotAnImage,
        Ok(Content::Incomplete) => {
            let now = clock.now_utc();
            let since = f
                .incomplete_since
                .as_deref()
                .and_then(crate::clock::parse_ts)
                .unwrap_or(now);
            if now - since < job.settings.incomplete_max_wait {
                return Outcome::Incomplete { since };
            }
            *note = Some(format!(
                "{} has no end-of-image marker but has not changed for {}: uploading it anyway",
                job.target.path.shown(),
                crate::clock::human_duration(job.settings.incomplete_max_wait)
            ));
        }
        Err(e) => return Outcome::Unreadable(crate::error::describe_io(&e)),
    }
    let outcome = send(&job.settings, f, kind, file, on_disk.size, limiter);
    // The file may have been rewritten while it was sent: then what arrived was a mix and a
    // new version must follow. (An answer that is not a success is judged as it is; the
    // next claim finds the new version.)
    let changed = match &outcome {
        Outcome::Answered(r) if classify_status(r.status) != Class::Success => None,
        Outcome::Answered(_) | Outcome::Transport(_) => layout::open_beneath(&job.target)
            .ok()
            .map(|(_, m)| Version::of(&m))
            .filter(|v| *v != on_disk),
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

/// Builds and sends the request for one file (also used by `upload-test`).
pub fn send(
    settings: &RequestSettings,
    f: &Claimed,
    kind: Kind,
    file: File,
    size: u64,
    limiter: Option<&Arc<RateLimiter>>,
) -> Outcome {
    let name_bytes = f.filename.as_bytes();
    let filename_text = encode_filename(name_bytes);
    let path_text = encode_filename(f.path.as_os_str().as_bytes());
    let vars = TemplateVars {
        folder: &f.folder,
        date: &f.date,
        filename: &filename_text,
        path: &path_text,
        size,
    };
    let rendered: Vec<(String, String)> = settings
        .fields
        .iter()
        .map(|(k, t)| (k.clone(), t.render(&vars)))
        .collect();
    let parts: Vec<Part<'_>> = rendered
        .iter()
        .map(|(k, v)| Part { name: k, value: v })
        .collect();
    let body = MultipartBody::new(
        boundary(),
        &parts,
        &settings.file_field,
        name_bytes,
        layout::content_type(kind),
        file,
        size,
        limiter.cloned(),
    );
    let key = idempotency_key(&settings.scope, &f.folder, &f.date, name_bytes, f.version);
    let mut builder = attohttpc::post(settings.url.expose())
        .follow_redirects(false)
        .proxy_settings(attohttpc::ProxySettings::builder().build())
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.timeout)
        .timeout(settings.overall_timeout(size))
        .header(attohttpc::header::USER_AGENT, USER_AGENT);
    for (k, v) in &settings.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v.expose()),
        ) {
            (Ok(k), Ok(v)) => builder = builder.header_append(k, v),
            // config validation rejects these; never send a half-configured request.
            _ => return Outcome::Transport(format!("header {k} is not valid HTTP")),
        }
    }
    builder = builder.header("Idempotency-Key", key.as_str());
    let mut prepared = match builder.body(body).try_prepare() {
        Ok(p) => p,
        Err(e) => return Outcome::Transport(format!("preparing request: {e}")),
    };
    let result = prepared.send();
    let body = prepared.body();
    if let Some(problem) = &body.file_problem {
        return match problem {
            FileProblem::Shrank => Outcome::Shrank,
            FileProblem::Read(e) => {
                Outcome::Unreadable(format!("reading: {}", crate::error::describe_io(e)))
            }
        };
    }
    match result {
        Ok(resp) => read_response(resp),
        Err(e) => Outcome::Transport(describe_http_error(&e)),
    }
}

/// The answer to a request. An interim 1xx is read past to the final answer (attohttpc
/// takes the first status line for the answer); a stream that holds none is a transport
/// problem, never an answer.
fn read_response(resp: attohttpc::Response) -> Outcome {
    let (status, headers, reader) = resp.split();
    let status = status.as_u16();
    if (100..200).contains(&status) {
        return match crate::interim::final_answer(reader) {
            Ok(f) => Outcome::Answered(answer(f.status, f.headers, f.body)),
            Err(e) => Outcome::Transport(format!(
                "interim answer HTTP {status}, then {}",
                crate::error::describe_io(&e)
            )),
        };
    }
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Outcome::Answered(answer(status, headers, reader))
}

fn answer(status: u16, headers: Vec<(String, String)>, body: impl Read) -> Response {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let retry_after = header(RETRY_AFTER.as_str()).and_then(|v| parse_retry_after(&v));
    let location = header(LOCATION.as_str());
    let mut raw = Vec::new();
    // Only the first 64 KiB are kept; the rest is never read (dropping the reader closes
    // the connection), so a 5 MB answer costs no memory.
    let body_error = body
        .take(RESPONSE_CAP as u64)
        .read_to_end(&mut raw)
        .err()
        .map(|e| e.to_string());
    let json = serde_json::from_slice::<serde_json::Value>(&raw).is_ok();
    let body = capped_text(&raw);
    Response {
        status,
        json: json.then(|| body.clone()),
        headers,
        body,
        retry_after,
        location,
        body_error,
    }
}

/// The answer's bytes as stored text: invalid UTF-8 becomes U+FFFD, which takes 3 bytes
/// for each bad byte, so the cap applies again to the text (at a character boundary):
/// a binary answer is stored as at most `RESPONSE_CAP` bytes, like any other.
fn capped_text(raw: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(raw).into_owned();
    if text.len() > RESPONSE_CAP {
        let mut end = RESPONSE_CAP;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(v, fmt).ok()?.assume_utc();
    let d = at - OffsetDateTime::now_utc();
    Some(d.try_into().unwrap_or(Duration::ZERO))
}

/// attohttpc's errors, said plainly ("connection refused", "timed out").
fn describe_http_error(e: &attohttpc::Error) -> String {
    match e.kind() {
        attohttpc::ErrorKind::Io(io) => match io.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
            // The packaged unit allows only the loopback and the default endpoint.
            _ if io.raw_os_error() == Some(libc::EPERM) => format!(
                "{} (blocked by the service's sandbox? another endpoint needs an IPAddressAllow= drop-in, see sega-uploader(8))",
                crate::error::describe_io(io)
            ),
            _ => crate::error::describe_io(io),
        },
        _ => e
            .to_string()
            .chars()
            .take(300)
            .collect::<String>()
            .replace('\n', " "),
    }
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
                    for job in jobs {
                        let report = if !job.solo && gate.failing() {
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
                            let r = run_job(job, limiter.as_ref(), &clock);
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

    #[test]
    fn statuses_are_classified_as_designed() {
        for (s, c) in [
            (200, Class::Success),
            (201, Class::Success),
            (204, Class::Success),
            (301, Class::Failed),
            (302, Class::Failed),
            (400, Class::Failed),
            (401, Class::Failed),
            (404, Class::Failed),
            (408, Class::Retry),
            (413, Class::Failed),
            (425, Class::Retry),
            (429, Class::Retry),
            (500, Class::Retry),
            (503, Class::Retry),
            (599, Class::Retry),
        ] {
            assert_eq!(classify_status(s), c, "status {s}");
        }
    }

    #[test]
    fn filenames_are_percent_encoded_only_where_needed() {
        assert_eq!(encode_filename(b"IMG_0001.jpg"), "IMG_0001.jpg");
        assert_eq!(encode_filename("사진 1.jpg".as_bytes()), "사진 1.jpg");
        assert_eq!(encode_filename(b"a\"b.jpg"), "a%22b.jpg");
        assert_eq!(encode_filename(b"a\r\nb.jpg"), "a%0D%0Ab.jpg");
        assert_eq!(encode_filename(b"100%.jpg"), "100%25.jpg");
        assert_eq!(encode_filename(b"a\\.jpg"), "a%5C.jpg");
        assert_eq!(encode_filename(b"\xbb\xe7\xc1\xf8.jpg"), "%BB%E7%C1%F8.jpg");
    }

    #[test]
    fn idempotency_key_depends_on_every_field() {
        let v = Version {
            size: 10,
            mtime_ns: 5,
        };
        let base = idempotency_key("s", "Sega_1", "2026-11-26", b"a.jpg", v);
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            idempotency_key("s", "Sega_1", "2026-11-26", b"a.jpg", v)
        );
        assert_ne!(
            base,
            idempotency_key("t", "Sega_1", "2026-11-26", b"a.jpg", v)
        );
        assert_ne!(
            base,
            idempotency_key("s", "Sega_2", "2026-11-26", b"a.jpg", v)
        );
        assert_ne!(
            base,
            idempotency_key("s", "Sega_1", "2026-11-27", b"a.jpg", v)
        );
        assert_ne!(
            base,
            idempotency_key("s", "Sega_1", "2026-11-26", b"b.jpg", v)
        );
        assert_ne!(
            base,
            idempotency_key(
                "s",
                "Sega_1",
                "2026-11-26",
                b"a.jpg",
                Version {
                    size: 11,
                    mtime_ns: 5
                }
            )
        );
        assert_ne!(
            base,
            idempotency_key(
                "s",
                "Sega_1",
                "2026-11-26",
                b"a.jpg",
                Version {
                    size: 10,
                    mtime_ns: 6
                }
            )
        );
        // Length prefixes: moving a byte between fields changes the key.
        assert_ne!(
            idempotency_key("ab", "c", "d", b"e", v),
            idempotency_key("a", "bc", "d", b"e", v)
        );
    }

    #[test]
    fn the_body_has_fields_in_order_then_the_streamed_file_and_an_exact_length() {
        let dir = std::env::temp_dir().join(format!("sega-body-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"\xff\xd8\xffDATA\r\n--not-a-boundary\xff\xd9").unwrap();
        let file = File::open(&path).unwrap();
        let fields = [
            Part {
                name: "folder",
                value: "Sega_1",
            },
            Part {
                name: "date",
                value: "2026-11-26",
            },
        ];
        let mut body = MultipartBody::new(
            "BOUND".into(),
            &fields,
            "file",
            b"a\"b\n\xbb.jpg",
            "image/jpeg",
            file,
            27,
            None,
        );
        let mut out = Vec::new();
        body.write(&mut out).unwrap();
        assert!(matches!(body.kind().unwrap(), BodyKind::KnownLength(n) if n == out.len() as u64));
        assert_eq!(
            body.content_type().unwrap().unwrap(),
            "multipart/form-data; boundary=BOUND"
        );
        let text = String::from_utf8_lossy(&out);
        let expected_head = "--BOUND\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nSega_1\r\n\
                             --BOUND\r\nContent-Disposition: form-data; name=\"date\"\r\n\r\n2026-11-26\r\n\
                             --BOUND\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a%22b%0A%BB.jpg\"\r\n\
                             Content-Type: image/jpeg\r\n\r\n";
        assert!(text.starts_with(expected_head), "{text}");
        assert!(out.ends_with(b"\xff\xd9\r\n--BOUND--\r\n"));
        // Written twice (a redirect would do that): the same bytes again.
        let mut again = Vec::new();
        body.write(&mut again).unwrap();
        assert_eq!(again, out);
        // The file shrinking under the upload is noticed, not sent short.
        std::fs::write(&path, b"short").unwrap();
        let mut body = MultipartBody::new(
            "B".into(),
            &[],
            "file",
            b"x.jpg",
            "image/jpeg",
            File::open(&path).unwrap(),
            31,
            None,
        );
        assert!(body.write(&mut Vec::new()).is_err());
        assert!(matches!(body.file_problem, Some(FileProblem::Shrank)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_binary_answer_is_stored_within_the_cap() {
        let raw = vec![0xffu8; RESPONSE_CAP];
        let text = capped_text(&raw);
        assert!(text.len() <= RESPONSE_CAP, "{}", text.len());
        assert!(text.chars().all(|c| c == char::REPLACEMENT_CHARACTER));
        assert_eq!(capped_text(b"{\"ok\":true}"), "{\"ok\":true}");
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn request_settings_never_print_their_secrets() {
        let c = crate::config::parse(
            r#"{"upload": {"url": "http://bob:hunter2@up.example/u",
                           "headers": {"Authorization": "Bearer s3cret"}}}"#,
        )
        .unwrap();
        let s = RequestSettings::new(&c, "scope".into());
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(s.shown_url, "http://<redacted>@up.example/u");
    }

    #[test]
    fn overall_timeout_grows_with_size() {
        let s = RequestSettings {
            url: Secret::new(String::new()),
            shown_url: String::new(),
            file_field: "file".into(),
            fields: vec![],
            headers: vec![],
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            min_rate_bytes_s: 64 * 1024,
            limited: false,
            scope: "s".into(),
            incomplete_max_wait: Duration::from_secs(600),
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
        let s = RequestSettings::new(&c, "scope".into());
        assert_eq!(s.min_rate_bytes_s, 2 * 1024);
        assert!(s.overall_timeout(48 * 1024) >= Duration::from_secs(2 + 24 + 32));
        assert!(s.job_limit(48 * 1024) > s.overall_timeout(48 * 1024));
        let free =
            crate::config::parse(r#"{"upload": {"url": "http://h/u", "min_rate_kib_s": 8}}"#)
                .unwrap();
        let s = RequestSettings::new(&free, "scope".into());
        assert_eq!(s.min_rate_bytes_s, 8 * 1024);
    }
}
