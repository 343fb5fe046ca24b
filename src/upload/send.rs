//! The send: the request with its headers and three timeouts (connect, read, and an overall
//! one that grows with the file), the shared rate limit its body is streamed under, and the
//! answer read back into a `Response`, at most `RESPONSE_CAP` of it.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use attohttpc::header::{HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use attohttpc::KeepAlive;
use time::OffsetDateTime;

use super::checksum::{self, PassError};
use super::multipart::{
    boundary, encode_filename, idempotency_key, FileProblem, MultipartBody, Part,
};
use super::{success, Item, RequestSettings, USER_AGENT};
use crate::config::{SuccessRule, TemplateVars};
use crate::layout::{self, Kind};
use crate::secret::Secret;
use crate::work::{classify_status, Class, Outcome, Response, Sent, RESPONSE_CAP};

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
    pub(super) fn take(&self, n: usize) {
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

/// The form fields of one file's request, in `upload.fields` order, as `send` renders them
/// (and `upload-test` prints them). `sha256` is the content's hash when a template uses
/// `{sha256}` (`RequestSettings::hash_content`).
pub fn form_fields(
    settings: &RequestSettings,
    f: &Item,
    size: u64,
    sha256: Option<&str>,
) -> Vec<(String, String)> {
    let filename_text = encode_filename(f.filename.as_bytes());
    let path_text = encode_filename(f.path.as_os_str().as_bytes());
    let vars = TemplateVars {
        folder: &f.folder,
        date: &f.date,
        filename: &filename_text,
        path: &path_text,
        size,
        sha256,
    };
    settings
        .fields
        .iter()
        .map(|(k, t)| (k.clone(), t.render(&vars)))
        .collect()
}

/// A header value of the upload request: plain, or a secret (an `upload.headers` value, the
/// URL's credentials as Basic auth) that only `send` exposes.
pub enum HeaderText<'a> {
    Plain(&'a str),
    Secret(&'a Secret<String>),
}

/// A header as `send` puts it on the request.
pub struct Header<'a> {
    pub name: &'a str,
    pub value: HeaderText<'a>,
    /// Set, replacing an earlier value of the same name; else added beside it.
    pub set: bool,
}

/// The request's own headers, in the order `send` puts them on it (attohttpc adds
/// `Content-Type` from the body, `Content-Length`, `Host`, and `Connection: close` when the
/// connection is not kept, as for `upload-test`): the one list `send` sends and
/// `upload-test` prints.
pub fn headers<'a>(settings: &'a RequestSettings, idempotency_key: &'a str) -> Vec<Header<'a>> {
    let mut out = vec![Header {
        name: "User-Agent",
        value: HeaderText::Plain(USER_AGENT),
        set: true,
    }];
    for (k, v) in &settings.headers {
        out.push(Header {
            name: k,
            value: HeaderText::Secret(v),
            set: false,
        });
    }
    if let Some(auth) = &settings.auth {
        out.push(Header {
            name: "Authorization",
            value: HeaderText::Secret(auth),
            set: true,
        });
    }
    out.push(Header {
        name: "Idempotency-Key",
        value: HeaderText::Plain(idempotency_key),
        set: true,
    });
    out
}

/// Builds and sends the request for one file (also used by `upload-test`). `f.version` is
/// the version the request is for: with `{sha256}` in a field, a file that is no longer
/// that version is not sent (`Outcome::Changed`), and one that changes during the send
/// leaves its request unfinished. With `keep`, the request goes on the connection kept there
/// if it can and leaves its own there after a complete answer (`attohttpc::KeepAlive`).
pub fn send(
    settings: &RequestSettings,
    f: &Item,
    kind: Kind,
    file: File,
    size: u64,
    limiter: Option<&Arc<RateLimiter>>,
    keep: Option<&KeepAlive>,
) -> Outcome {
    let name_bytes = f.filename.as_bytes();
    let sha256 = if settings.hash_content {
        match checksum::content_sha256(&file, f.version) {
            Ok(hex) => Some(hex),
            Err(PassError::Changed(version)) => {
                return Outcome::Changed {
                    version,
                    sent: None,
                }
            }
            Err(PassError::Read(e)) => {
                return Outcome::Unreadable(format!("reading: {}", crate::error::describe_io(&e)))
            }
        }
    } else {
        None
    };
    let rendered = form_fields(settings, f, size, sha256.as_deref());
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
    let body = match sha256 {
        Some(_) => body.unless_changed_from(f.version),
        None => body,
    };
    let key = idempotency_key(&settings.scope, &f.folder, &f.date, name_bytes, f.version);
    let url = settings.wire_url.expose();
    let builder = attohttpc::post(url).follow_redirects(false);
    let mut builder = settings
        .route
        .apply(builder, super::Route::is_https(url))
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.timeout)
        .timeout(settings.overall_timeout(size));
    if let Some(keep) = keep.filter(|_| settings.keep_alive) {
        builder = builder.keep_alive(keep.clone());
    }
    for h in headers(settings, &key) {
        let value = match h.value {
            HeaderText::Plain(v) => v,
            HeaderText::Secret(v) => v.expose().as_str(),
        };
        builder = match (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(k), Ok(v)) if h.set => builder.header(k, v),
            (Ok(k), Ok(v)) => builder.header_append(k, v),
            // config validation rejects these; never send a half-configured request.
            _ => return Outcome::Transport(format!("header {} is not valid HTTP", h.name)),
        };
    }
    let mut prepared = match builder.body(body).try_prepare() {
        Ok(p) => p,
        Err(e) => return Outcome::Transport(format!("preparing request: {e}")),
    };
    let result = prepared.send();
    let body = prepared.body();
    if let Some(problem) = &body.file_problem {
        return match problem {
            FileProblem::Shrank => Outcome::Shrank,
            FileProblem::Changed(version) => Outcome::Changed {
                version: *version,
                sent: Some(Sent::Transport(
                    "the request was ended before its last boundary: the {sha256} field no longer matched the file"
                        .into(),
                )),
            },
            FileProblem::Read(e) => {
                Outcome::Unreadable(format!("reading: {}", crate::error::describe_io(e)))
            }
        };
    }
    match result {
        Ok(resp) => read_response(resp, settings.success.as_ref()),
        Err(e) => Outcome::Transport(describe_http_error(&e)),
    }
}

/// The answer to a request. An interim 1xx is read past to the final answer (attohttpc
/// takes the first status line for the answer); a stream that holds none is a transport
/// problem, never an answer.
fn read_response(resp: attohttpc::Response, rule: Option<&SuccessRule>) -> Outcome {
    let (status, headers, reader) = resp.split();
    let status = status.as_u16();
    if (100..200).contains(&status) {
        return match crate::interim::final_answer(reader) {
            Ok(f) => Outcome::Answered(answer(f.status, f.headers, f.body, rule)),
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
    Outcome::Answered(answer(status, headers, reader, rule))
}

/// The answer as stored: at most `RESPONSE_CAP` of its body, and whether a 2xx is what
/// `upload.success` calls a success.
fn answer(
    status: u16,
    headers: Vec<(String, String)>,
    body: impl Read,
    rule: Option<&SuccessRule>,
) -> Response {
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
    // the connection), so a 5 MB answer costs no memory. One byte more says whether there
    // was more.
    let body_error = body
        .take(RESPONSE_CAP as u64 + 1)
        .read_to_end(&mut raw)
        .err()
        .map(|e| e.to_string());
    let over_cap = raw.len() > RESPONSE_CAP;
    raw.truncate(RESPONSE_CAP);
    let parsed = serde_json::from_slice::<serde_json::Value>(&raw).ok();
    let json = parsed.is_some();
    let mismatch = match rule {
        Some(rule) if classify_status(status) == Class::Success => {
            success::mismatch(rule, parsed.as_ref(), over_cap || body_error.is_some())
        }
        _ => None,
    };
    let body = capped_text(&raw);
    Response {
        status,
        json: json.then(|| body.clone()),
        headers,
        body,
        retry_after,
        location,
        body_error,
        mismatch,
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

/// attohttpc's errors, said plainly ("connection refused", "timed out", "TLS: the server's
/// certificate is not trusted …").
fn describe_http_error(e: &attohttpc::Error) -> String {
    match e.kind() {
        attohttpc::ErrorKind::Tls(tls) => crate::tls::explain(tls),
        attohttpc::ErrorKind::Io(io) if crate::tls::explain_io(io).is_some() => {
            crate::tls::explain_io(io).unwrap_or_default()
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_binary_answer_is_stored_within_the_cap() {
        let raw = vec![0xffu8; RESPONSE_CAP];
        let text = capped_text(&raw);
        assert!(text.len() <= RESPONSE_CAP, "{}", text.len());
        assert!(text.chars().all(|c| c == char::REPLACEMENT_CHARACTER));
        assert_eq!(capped_text(b"{\"ok\":true}"), "{\"ok\":true}");
    }

    /// attohttpc's deadlines (vendor patch 4) are kept by one timer thread: a connection
    /// armed after another but due first must be cut at its own deadline, while the other
    /// still runs, not when the timer would have woken for the other (it must be woken).
    /// The server accepts and never answers. The deadlines are 0.3 s and 10 s: the order
    /// asserted cannot come from jitter.
    #[test]
    fn a_later_connection_due_first_is_cut_first() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (accepted_tx, accepted) = std::sync::mpsc::channel();
        let held = thread::spawn(move || {
            let mut conns = Vec::new();
            for c in listener.incoming().take(2) {
                conns.push(c.unwrap());
                let _ = accepted_tx.send(());
            }
            conns
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let request = |timeout: Duration, name: &'static str| {
            let (url, tx) = (url.clone(), tx.clone());
            thread::spawn(move || {
                let r = attohttpc::get(url).timeout(timeout).send();
                let _ = tx.send((name, r.is_err()));
            })
        };
        let slow = request(Duration::from_secs(10), "slow");
        accepted.recv_timeout(Duration::from_secs(20)).unwrap();
        let quick = request(Duration::from_millis(300), "quick");
        let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(first, ("quick", true));
        assert!(
            !slow.is_finished(),
            "the quick connection was cut only when the slow one's deadline came"
        );
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(40)).unwrap(),
            ("slow", true)
        );
        quick.join().unwrap();
        slow.join().unwrap();
        drop(held.join().unwrap());
    }

    /// A server that accepts and never reads (vendor patch 4): the body's write blocks once
    /// the socket buffers are full, and only the deadline's shutdown frees the worker, as
    /// upstream's thread per connection did. 64 MiB is far past loopback's buffers; the
    /// read timeout (60 s) is not what ends it.
    #[test]
    fn a_write_blocked_on_a_server_that_stops_reading_ends_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let held = thread::spawn(move || {
            let conn = listener.accept();
            // Held unread until the request is over, or 30 s if its deadline never comes:
            // the test fails then, it does not hang.
            let _ = done.recv_timeout(Duration::from_secs(30));
            drop(conn);
        });
        let started = Instant::now();
        let r = attohttpc::post(url)
            .read_timeout(Duration::from_secs(60))
            .timeout(Duration::from_secs(1))
            .bytes(vec![0x5au8; 64 << 20])
            .send();
        let took = started.elapsed();
        assert!(r.is_err(), "a body nobody read was sent");
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(20),
            "the blocked write ended after {took:?}, not at its 1 s deadline"
        );
        drop(done_tx);
        held.join().unwrap();
    }

    /// Connections that ended before their deadline are disarmed: their deadline passing
    /// later cuts nothing, though a later connection is likely to get the same descriptor
    /// number (the timer holds a socket of its own, never a number). 4 rounds of: a request
    /// with a 1 s deadline answered at once, then one with a 20 s deadline whose answer
    /// comes 1.3 s later, past the first one's deadline; each must get its answer.
    #[test]
    fn a_finished_connection_s_deadline_never_cuts_a_later_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = thread::spawn(move || {
            for (i, c) in listener.incoming().take(8).enumerate() {
                let mut c = c.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match c.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                if i % 2 == 1 {
                    thread::sleep(Duration::from_millis(1300));
                }
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        for round in 0..4 {
            let quick = attohttpc::get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .and_then(|r| r.text());
            assert_eq!(
                quick.ok().as_deref(),
                Some("ok"),
                "round {round}: the quick one"
            );
            let slow = attohttpc::get(&url)
                .timeout(Duration::from_secs(20))
                .send()
                .and_then(|r| r.text());
            assert_eq!(
                slow.as_ref().ok().map(String::as_str),
                Some("ok"),
                "round {round}: cut by an earlier connection's deadline? {slow:?}"
            );
        }
        server.join().unwrap();
    }

    /// Many connections at once, as the webhook and a large pool make them, to a server that
    /// never answers: each is cut at its own deadline (0.2 s to 2.1 s), never before it,
    /// and not long after it (the bound allows a loaded machine).
    #[test]
    fn many_concurrent_connections_are_each_cut_at_their_own_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        const N: usize = 40;
        let held = thread::spawn(move || {
            listener
                .incoming()
                .take(N)
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        });
        let requests: Vec<_> = (0..N)
            .map(|i| {
                let url = url.clone();
                // Interleaved: arming order is not deadline order.
                let timeout = Duration::from_millis(200 + ((i * 7) % N) as u64 * 50);
                thread::spawn(move || {
                    let started = Instant::now();
                    let r = attohttpc::get(url)
                        .read_timeout(Duration::from_secs(60))
                        .timeout(timeout)
                        .send();
                    (timeout, started.elapsed(), r.is_err())
                })
            })
            .collect();
        for t in requests {
            let (timeout, took, failed) = t.join().unwrap();
            assert!(failed, "a request to a silent server succeeded");
            assert!(
                took >= timeout && took < timeout + Duration::from_secs(10),
                "deadline {timeout:?}, cut after {took:?}"
            );
        }
        drop(held.join().unwrap());
    }

    /// The timer keeps a second descriptor of every armed socket (vendor patch 4): a child
    /// started meanwhile (exec) must inherit neither it nor the connection's own. The
    /// child lists what it holds while a request waits on a silent server.
    #[test]
    fn a_child_started_during_a_request_inherits_no_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (accepted_tx, accepted) = std::sync::mpsc::channel();
        let held = thread::spawn(move || {
            let conn = listener.accept();
            let _ = accepted_tx.send(());
            conn
        });
        let request = thread::spawn(move || {
            attohttpc::get(url)
                .timeout(Duration::from_millis(1500))
                .send()
                .is_err()
        });
        accepted.recv_timeout(Duration::from_secs(20)).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", "for f in /proc/self/fd/*; do readlink \"$f\"; done"])
            .output()
            .unwrap();
        let fds = String::from_utf8_lossy(&out.stdout);
        assert!(
            !fds.contains("socket:"),
            "the child inherited a socket:\n{fds}"
        );
        assert!(request.join().unwrap(), "the silent server answered");
        drop(held.join().unwrap());
    }

    /// A deadline already past when the connection is armed (a tiny timeout, or a request
    /// that took its whole time to connect) cuts it at once: the silent server's request
    /// fails in far less than its 60 s read timeout.
    #[test]
    fn a_deadline_already_past_cuts_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let held = thread::spawn(move || {
            listener
                .incoming()
                .take(3)
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        });
        for timeout in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(100),
        ] {
            let started = Instant::now();
            let r = attohttpc::get(&url)
                .read_timeout(Duration::from_secs(60))
                .timeout(timeout)
                .send();
            let took = started.elapsed();
            assert!(r.is_err(), "{timeout:?}: the silent server answered");
            assert!(
                took < Duration::from_secs(10),
                "{timeout:?}: cut after {took:?}"
            );
        }
        drop(held.join().unwrap());
    }

    /// Vendor patch 6: an answer read after the body's write failed is never a success, and
    /// a 1xx is not one either (the caller reads past it, to a 2xx here). The server reads
    /// the head only and closes on the unread body (a reset): 16 MiB cannot have arrived.
    #[test]
    fn an_interim_answer_then_a_2xx_before_the_body_is_not_an_answer() {
        for early in [
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        ] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/", listener.local_addr().unwrap());
            let server = thread::spawn(move || {
                let (mut c, _) = listener.accept().unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && c.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = c.write_all(early.as_bytes());
            });
            let r = attohttpc::post(url)
                .timeout(Duration::from_secs(20))
                .bytes(vec![0x5au8; 16 << 20])
                .send();
            server.join().unwrap();
            assert!(
                r.is_err(),
                "{early:?} taken as the answer: {:?}",
                r.map(|r| r.status())
            );
        }
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
}
