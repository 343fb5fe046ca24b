//! One client connection, on its own thread: read each request, record it, apply the
//! fault mode, answer. Ends when the client closes, a request asks for `Connection:
//! close`, something goes wrong, or the server stops (which shuts the socket down).

use crate::http::{self, Body, Conn, Framing, Head, BUF_SIZE};
use crate::mode::{status_fails, Mode};
use crate::multipart::{self, Parser};
use crate::server::Shared;
use crate::{hex, Request};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

/// A vanished client must not pin a connection thread forever.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Bodies of non-multipart requests are kept up to this size.
const BODY_CAP: usize = 1024 * 1024;
/// The length of a `TrickleResponse` body.
const TRICKLE_LEN: usize = 1024 * 1024;
/// Filler for `HugeBody`, streamed piece by piece.
static FILL: [u8; 64 * 1024] = [b'x'; 64 * 1024];

pub(crate) fn serve(sh: &Shared, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    loop {
        let keep_alive = serve_one(sh, &mut conn);
        sh.add_bytes_received(conn.take_bytes_read());
        if !keep_alive {
            return;
        }
    }
}

pub(crate) fn add_error(req: &mut Request, msg: impl Into<String>) {
    let msg = msg.into();
    req.error = Some(match req.error.take() {
        Some(e) => format!("{e}; {msg}"),
        None => msg,
    });
}

fn wants_close(req: &Request) -> bool {
    let close = |t: &str| t.trim().eq_ignore_ascii_case("close");
    req.header("connection")
        .is_some_and(|v| v.split(',').any(close))
}

/// What the server does once it has read a request.
enum Reply {
    Fixed {
        status: u16,
        content_type: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    Huge(usize),
    Trickle(u64, Vec<u8>),
    Hang,
    Reset,
    /// The server stopped while this request waited: close without an answer.
    Abandon,
}

fn fixed(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
    Reply::Fixed {
        status,
        content_type,
        headers: Vec::new(),
        body: body.into(),
    }
}

fn text(status: u16, body: String) -> Reply {
    fixed(status, "text/plain; charset=utf-8", body)
}

fn json_reply(status: u16, value: Value) -> Reply {
    fixed(status, "application/json", value.to_string())
}

/// Where body bytes go: the multipart parser, or a capped capture for other requests.
enum Sink {
    Multipart(Box<Parser>),
    Capture {
        data: Vec<u8>,
        total: u64,
        hasher: Sha256,
    },
}

impl Sink {
    fn feed(&mut self, piece: &[u8]) -> Result<(), String> {
        match self {
            Sink::Multipart(p) => p.feed(piece),
            Sink::Capture {
                data,
                total,
                hasher,
            } => {
                let room = BODY_CAP.saturating_sub(data.len()).min(piece.len());
                data.extend_from_slice(&piece[..room]);
                *total += piece.len() as u64;
                hasher.update(piece);
                Ok(())
            }
        }
    }
}

/// Serves one request; returns whether to keep the connection for another.
fn serve_one(sh: &Shared, conn: &mut Conn<TcpStream>) -> bool {
    let (head, head_error) = match conn.read_head() {
        Ok(None) => return false,
        // A server that is down refuses new connections and has none open: a request on a
        // connection kept from before is closed unanswered, and not recorded.
        Ok(Some(_)) if sh.refusing() => return false,
        Ok(Some(raw)) => http::parse_head(&raw),
        Err(e) => (Head::default(), Some(e.to_string())),
    };
    let (framing, content_length, chunked, framing_error) = http::framing(&head.headers);
    let mut req = Request {
        seq: 0,
        method: head.method,
        path: head.path,
        headers: head.headers,
        content_length,
        chunked,
        fields: Vec::new(),
        file: None,
        body: None,
        error: None,
        status: None,
        received_at: SystemTime::now(),
        completed_at: None,
    };
    // A bad head, or framing we cannot follow, leaves no way to find the body.
    let head_bad = head_error.is_some() || framing == Framing::Unknown;
    let is_upload = !head_bad && req.method == "POST";
    let (mode, k) = if is_upload {
        sh.take_mode()
    } else {
        (Mode::Ok, 0)
    };
    for e in [head_error, framing_error].into_iter().flatten() {
        add_error(&mut req, e);
    }
    let generation = sh.arrive(&mut req);
    if head_bad {
        let msg = format!("bad request: {}\n", req.error.as_deref().unwrap_or(""));
        return finish(sh, conn, generation, req, text(400, msg), false);
    }

    if let Mode::Early { code } = mode {
        // Refused by its head: no byte of the body is read, and the close on it resets.
        let body = json!({"ok": false, "error": format!("refused before the body ({code})")});
        return finish(sh, conn, generation, req, json_reply(code, body), false);
    }
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        // curl asks before sending a large body and would otherwise wait a second for this.
        let _ = conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let read = read_body(sh, conn, &mut req, framing, &mode);
    let (got, broken) = (read.got, read.broken);
    let reset = matches!(mode, Mode::ResetMidBody { .. });
    if !broken && !reset && wants_close(&req) && framing == Framing::Length(got) {
        // One request per connection: anything more means the Content-Length was too small.
        let extra = conn.buffered() + pending_bytes(&conn.stream);
        if extra > 0 {
            let msg =
                format!("{extra}+ bytes after the {got}-byte body (Content-Length too small?)");
            add_error(&mut req, msg);
        }
    }

    if let Mode::Interim(codes) = &mode {
        for c in codes {
            let head = match c {
                103 => {
                    format!("HTTP/1.1 {c} Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
                }
                _ => format!("HTTP/1.1 {c} Interim\r\n\r\n"),
            };
            let _ = conn.stream.write_all(head.as_bytes());
        }
    }
    let mut reply = match (req.method.as_str(), req.path.as_str()) {
        _ if is_upload => decide(&req, &mode, k, &read),
        ("GET", "/health") if req.error.is_none() => text(200, "ok".into()),
        ("GET", path) => text(
            404,
            format!("not found: {path} (POST uploads; GET /health)\n"),
        ),
        (method, _) => text(405, format!("method {method} not allowed\n")),
    };
    if let (Mode::Delay(d), Reply::Fixed { .. }) = (&mode, &reply) {
        if !sh.sleep_until(Instant::now() + *d) {
            reply = Reply::Abandon;
        }
    }
    let keep = !broken && req.error.is_none() && !wants_close(&req);
    finish(sh, conn, generation, req, reply, keep)
}

struct BodyRead {
    /// Body bytes read.
    got: u64,
    /// The connection failed (or the server stopped) while reading.
    broken: bool,
    /// SHA-256 of a captured (non-multipart) body, all of it, not just the kept 1 MiB.
    captured: Option<String>,
}

/// Reads the body into `req` (multipart parts, or the capped body) through the fault modes
/// that act on reading.
fn read_body(
    sh: &Shared,
    conn: &mut Conn<TcpStream>,
    req: &mut Request,
    framing: Framing,
    mode: &Mode,
) -> BodyRead {
    let mut sink = Sink::Capture {
        data: Vec::new(),
        total: 0,
        hasher: Sha256::new(),
    };
    match req.header("content-type").map(multipart::boundary) {
        Some(Ok(Some(b))) => {
            sink = Sink::Multipart(Box::new(Parser::new(&b)));
            if req.chunked {
                add_error(req, "chunked Transfer-Encoding on a multipart upload");
            } else if req.content_length.is_none() {
                add_error(req, "multipart upload without Content-Length");
            }
        }
        Some(Err(e)) => add_error(req, e),
        _ => {}
    }
    let reset_at = match *mode {
        Mode::ResetMidBody { after_bytes } => after_bytes,
        _ => u64::MAX,
    };
    let pace = match *mode {
        Mode::SlowRead { bytes_per_sec } => Some(bytes_per_sec.max(1)),
        _ => None,
    };
    let mut body = Body::new(framing);
    let started = Instant::now();
    let (mut got, mut broken, mut captured) = (0u64, false, None);
    while got < reset_at {
        let mut max = (BUF_SIZE as u64).min(reset_at - got);
        if let Some(bps) = pace {
            max = max.min((bps / 10).max(1));
        }
        match body.next(conn, max as usize) {
            Ok(Some(piece)) => {
                got += piece.len() as u64;
                if let Err(e) = sink.feed(piece) {
                    add_error(req, e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                add_error(req, e);
                broken = true;
                break;
            }
        }
        if let Some(bps) = pace {
            // Never ahead of `bps` on average since the body began.
            if !sh.sleep_until(started + Duration::from_secs_f64(got as f64 / bps as f64)) {
                add_error(req, "server stopped while reading the body");
                broken = true;
                break;
            }
        }
    }
    match sink {
        Sink::Multipart(mut p) => {
            if !broken && got < reset_at {
                if let Err(e) = p.finish() {
                    add_error(req, e);
                }
            }
            req.fields = std::mem::take(&mut p.fields);
            req.file = p.file.take();
        }
        Sink::Capture {
            data,
            total,
            hasher,
        } => {
            if req.method == "POST" || total > 0 {
                req.body = Some(data);
                captured = Some(hex(&hasher.finalize()));
            }
        }
    }
    BodyRead {
        got,
        broken,
        captured,
    }
}

/// The answer to an upload, by mode. Faults decided without the body win over a strictness
/// error; otherwise an error gets 400.
fn decide(req: &Request, mode: &Mode, k: u64, read: &BodyRead) -> Reply {
    let injected = |code: u16| json!({"ok": false, "error": format!("injected {code}")});
    match mode {
        Mode::ResetMidBody { .. } => return Reply::Reset,
        Mode::Hang => return Reply::Hang,
        Mode::RetryAfter { code, secs } => {
            let mut r = json_reply(*code, injected(*code));
            if let Reply::Fixed { headers, .. } = &mut r {
                headers.push(("Retry-After", secs.to_string()));
            }
            return r;
        }
        Mode::Status { code, fraction } if status_fails(*fraction, k) => {
            return json_reply(*code, injected(*code))
        }
        Mode::Answer { code, body } => {
            let json = serde_json::from_str::<Value>(body).is_ok();
            let ct = if json {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            return fixed(*code, ct, body.as_bytes());
        }
        Mode::Redirect { code, location } => {
            let mut r = text(*code, format!("redirect to {location}\n"));
            if let Reply::Fixed { headers, .. } = &mut r {
                headers.push(("Location", location.clone()));
            }
            return r;
        }
        _ => {}
    }
    if let Some(e) = &req.error {
        return text(400, format!("bad request: {e}\n"));
    }
    let ok = ok_json(req, read);
    if let Mode::Poison { needle, code } = mode {
        let name = req
            .file
            .as_ref()
            .map(|f| String::from_utf8_lossy(&f.filename));
        if name.is_some_and(|n| n.contains(needle.as_str())) {
            return json_reply(
                *code,
                json!({"ok": false, "error": "cannot process this image"}),
            );
        }
    }
    match mode {
        Mode::NonJson => fixed(200, "text/html", "<html>ok</html>"),
        Mode::HugeBody { bytes } => Reply::Huge(*bytes),
        Mode::TrickleResponse { bytes_per_sec } => {
            // Valid JSON once complete: the usual answer with a long "pad" member.
            let mut body = ok.to_string().into_bytes();
            body.pop(); // the closing brace
            body.extend_from_slice(b",\"pad\":\"");
            body.resize(TRICKLE_LEN.max(body.len() + 2) - 2, b'x');
            body.extend_from_slice(b"\"}");
            Reply::Trickle(*bytes_per_sec, body)
        }
        _ => json_reply(200, ok),
    }
}

/// `{"ok":true,"id":…,"filename":…,"size":…,"sha256":…}`; for a non-multipart POST, the
/// body's size and hash.
fn ok_json(req: &Request, read: &BodyRead) -> Value {
    let (filename, size, sha256) = match &req.file {
        Some(f) => (
            Some(String::from_utf8_lossy(&f.filename)),
            Some(f.size),
            Some(&f.sha256),
        ),
        None => (
            None,
            read.captured.as_ref().map(|_| read.got),
            read.captured.as_ref(),
        ),
    };
    json!({"ok": true, "id": req.seq, "filename": filename, "size": size, "sha256": sha256})
}

/// Settles the request, then carries out the reply; returns whether to keep the connection.
fn finish(
    sh: &Shared,
    conn: &mut Conn<TcpStream>,
    generation: u64,
    mut req: Request,
    reply: Reply,
    keep: bool,
) -> bool {
    let (seq, had_error) = (req.seq, req.error.is_some());
    req.status = match &reply {
        Reply::Fixed { status, .. } => Some(*status),
        Reply::Huge(_) | Reply::Trickle(..) => Some(200),
        Reply::Hang | Reply::Reset | Reply::Abandon => None,
    };
    req.completed_at = req.status.map(|_| SystemTime::now());
    sh.settle(generation, req);
    let written = match reply {
        Reply::Hang => {
            sh.hang();
            return false;
        }
        Reply::Reset => {
            set_linger_zero(&conn.stream);
            return false;
        }
        Reply::Abandon => return false,
        reply => write_reply(sh, &mut conn.stream, reply, !keep),
    };
    match written {
        Err(e) => sh.amend(generation, seq, format!("writing the response: {e}")),
        Ok(()) if keep => return true,
        Ok(()) => close_gracefully(&conn.stream, had_error),
    }
    false
}

fn write_reply(sh: &Shared, s: &mut TcpStream, reply: Reply, close: bool) -> io::Result<()> {
    match reply {
        Reply::Fixed {
            status,
            content_type,
            headers,
            body,
        } => {
            let len = body.len() as u64;
            let mut out = http::response_head(status, content_type, &headers, len, close);
            out.extend_from_slice(&body);
            s.write_all(&out)
        }
        Reply::Huge(n) => {
            let head = http::response_head(200, "application/octet-stream", &[], n as u64, close);
            s.write_all(&head)?;
            let mut left = n;
            while left > 0 {
                let k = left.min(FILL.len());
                s.write_all(&FILL[..k])?;
                left -= k;
            }
            Ok(())
        }
        Reply::Trickle(bps, body) => {
            let len = body.len() as u64;
            s.write_all(&http::response_head(
                200,
                "application/json",
                &[],
                len,
                close,
            ))?;
            let start = Instant::now();
            let mut sent = 0u64;
            for piece in body.chunks((bps / 10).clamp(1, BUF_SIZE as u64) as usize) {
                s.write_all(piece)?;
                sent += piece.len() as u64;
                if !sh.sleep_until(start + Duration::from_secs_f64(sent as f64 / bps as f64)) {
                    return Err(io::Error::other("server stopped"));
                }
            }
            Ok(())
        }
        Reply::Hang | Reply::Reset | Reply::Abandon => Ok(()),
    }
}

/// Ends a connection after an answer. After an error, unread request bytes may remain, and
/// closing on them makes the kernel send RST, which can destroy the answer before the
/// client reads it: so stop writing, then read what is left first (bounded).
fn close_gracefully(s: &TcpStream, drain: bool) {
    let _ = s.shutdown(Shutdown::Write);
    if drain {
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        while total < 64 << 20 {
            match (&*s).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
}

/// SO_LINGER with a zero timeout: the close that follows sends RST instead of FIN.
fn set_linger_zero(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    // SAFETY: the fd is an open socket owned by `s`; the value is a `linger` of `len` bytes.
    unsafe {
        let value = (&linger as *const libc::linger).cast();
        libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, value, len);
    }
}

/// How many bytes (up to 64) are waiting to be read, without reading or blocking.
fn pending_bytes(s: &TcpStream) -> usize {
    let mut buf = [0u8; 64];
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    // SAFETY: the fd is an open socket owned by `s`; `buf` is writable for `buf.len()` bytes.
    let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    usize::try_from(n).unwrap_or(0)
}
