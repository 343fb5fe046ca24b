//! HTTP/1.1 framing, with no policy: the connection buffer (`Conn`), the strict request-head
//! parser, body framing (Content-Length or chunked) and response heads. The `server` and
//! `control` modules decide what to answer.

use crate::multipart::find;
use std::fmt::{self, Write as _};
use std::io::{self, Read};

/// Reads from the socket go in pieces of up to this size.
pub(crate) const BUF_SIZE: usize = 64 * 1024;
/// The request head (request line and headers) must fit in this.
pub(crate) const HEAD_MAX: usize = 64 * 1024;

/// A connection's read side with its buffer, so that bytes read past one request's head
/// (body, or the next request on a kept-alive connection) are not lost.
pub(crate) struct Conn<S> {
    pub(crate) stream: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes read from the stream since the last `take_bytes_read`.
    bytes_read: u64,
}

/// Why no request head could be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    TooLarge,
    Closed,
    Io(io::Error),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => write!(f, "request head exceeds 64 KiB"),
            HeadError::Closed => write!(f, "connection closed inside the request head"),
            HeadError::Io(e) => write!(f, "reading the request head: {e}"),
        }
    }
}

impl<S: Read> Conn<S> {
    pub(crate) fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            bytes_read: 0,
        }
    }

    /// Bytes read but not yet consumed.
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn take_bytes_read(&mut self) -> u64 {
        std::mem::take(&mut self.bytes_read)
    }

    /// Reads more into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(io::Error::other("connection buffer full"));
            }
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    self.bytes_read += n as u64;
                    return Ok(n);
                }
                // EINTR: retry.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next request head including its final CRLF CRLF; `Ok(None)` if the peer closed
    /// (or the read failed) before sending a byte of it, which is the normal end of a
    /// kept-alive connection.
    pub(crate) fn read_head(&mut self) -> Result<Option<Vec<u8>>, HeadError> {
        let mut scanned: usize = 0;
        loop {
            let avail = &self.buf[self.start..self.end];
            let from = scanned.saturating_sub(3);
            if let Some(p) = find(&avail[from..], b"\r\n\r\n") {
                let head = avail[..from + p + 4].to_vec();
                self.start += head.len();
                return Ok(Some(head));
            }
            scanned = avail.len();
            if scanned >= HEAD_MAX {
                return Err(HeadError::TooLarge);
            }
            match self.fill() {
                Ok(n) if n > 0 => {}
                Ok(_) if self.buffered() == 0 => return Ok(None),
                Ok(_) => return Err(HeadError::Closed),
                Err(_) if self.buffered() == 0 => return Ok(None),
                Err(e) => return Err(HeadError::Io(e)),
            }
        }
    }

    /// Up to `max` buffered bytes, reading if none are; empty at end of stream.
    fn take(&mut self, max: usize) -> io::Result<&[u8]> {
        if self.start == self.end && self.fill()? == 0 {
            return Ok(&[]);
        }
        let n = max.min(self.end - self.start);
        self.start += n;
        Ok(&self.buf[self.start - n..self.start])
    }

    /// A CRLF-terminated line (chunked framing), without the CRLF.
    fn read_line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(p) = find(&self.buf[self.start..self.end], b"\r\n") {
                let line = self.buf[self.start..self.start + p].to_vec();
                self.start += p + 2;
                return Ok(line);
            }
            match self.fill() {
                Ok(0) => return Err("connection closed inside chunked framing".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading chunked framing: {e}")),
            }
        }
    }
}

/// A parsed request head.
#[derive(Debug, Default)]
pub(crate) struct Head {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
}

/// Parses a head as returned by `read_head`. Always returns what it could make of it,
/// plus the first violation, if any.
pub(crate) fn parse_head(raw: &[u8]) -> (Head, Option<String>) {
    let text = String::from_utf8_lossy(raw);
    let text = text.strip_suffix("\r\n\r\n").unwrap_or(&text);
    let mut lines = text.split("\r\n");
    let mut head = Head::default();
    let mut error = None;
    let mut fail = |msg: String| {
        error.get_or_insert(msg);
    };
    let line = lines.next().unwrap_or("");
    match line.split(' ').collect::<Vec<_>>()[..] {
        [method, path, version] => {
            head.method = method.to_string();
            head.path = path.to_string();
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                fail(format!("bad method {method:?}"));
            }
            if !path.starts_with('/') {
                fail(format!("bad request target {path:?}"));
            }
            if version != "HTTP/1.1" {
                fail(format!(
                    "unsupported version {version:?} (HTTP/1.1 expected)"
                ));
            }
        }
        _ => fail(format!("malformed request line {line:?}")),
    }
    for line in lines {
        if line.contains(['\r', '\n']) {
            fail("bare CR or LF in the request head".into());
        } else if line.starts_with([' ', '\t']) {
            fail("obsolete header line folding".into());
        }
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains([' ', '\t']) => {
                head.headers.push((
                    name.to_string(),
                    value.trim_matches([' ', '\t']).to_string(),
                ));
            }
            _ => fail(format!("malformed header line {line:?}")),
        }
    }
    (head, error)
}

/// How a request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Unparseable: the connection cannot be read further.
    Unknown,
}

/// The framing, the Content-Length, whether chunked was used, and a violation.
pub(crate) fn framing(
    headers: &[(String, String)],
) -> (Framing, Option<u64>, bool, Option<String>) {
    fn values<'h>(headers: &'h [(String, String)], name: &'h str) -> impl Iterator<Item = &'h str> {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    let mut length = None;
    for v in values(headers, "content-length") {
        match v.parse::<u64>() {
            Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) && length.is_none_or(|l| l == n) => {
                length = Some(n)
            }
            _ => {
                return (
                    Framing::Unknown,
                    None,
                    false,
                    Some(format!("bad Content-Length {v:?}")),
                )
            }
        }
    }
    let te: Vec<&str> = values(headers, "transfer-encoding").collect();
    if te.is_empty() {
        return (
            length.map_or(Framing::Empty, Framing::Length),
            length,
            false,
            None,
        );
    }
    let te = te.join(", ").to_ascii_lowercase();
    if te != "chunked" {
        let chunked = te.contains("chunked");
        return (
            Framing::Unknown,
            length,
            chunked,
            Some(format!("unsupported Transfer-Encoding {te:?}")),
        );
    }
    let error = length.map(|_| "both Content-Length and Transfer-Encoding: chunked".to_string());
    (Framing::Chunked, length, true, error)
}

#[derive(Debug)]
enum ChunkPhase {
    Size,
    Data(u64),
    DataEnd,
    Done,
}

/// Reads one request's body from a `Conn`, piece by piece.
pub(crate) struct Body {
    framing: Framing,
    total: u64,
    received: u64,
    phase: ChunkPhase,
}

impl Body {
    pub(crate) fn new(framing: Framing) -> Body {
        let total = if let Framing::Length(n) = framing {
            n
        } else {
            0
        };
        Body {
            framing,
            total,
            received: 0,
            phase: ChunkPhase::Size,
        }
    }

    /// The next piece of the body (at most `max` bytes); `Ok(None)` at its end.
    pub(crate) fn next<'c, S: Read>(
        &mut self,
        conn: &'c mut Conn<S>,
        max: usize,
    ) -> Result<Option<&'c [u8]>, String> {
        let (total, received) = (self.total, self.received);
        let want = match self.framing {
            Framing::Empty | Framing::Unknown => return Ok(None),
            Framing::Length(_) if received == total => return Ok(None),
            Framing::Length(_) => total - received,
            Framing::Chunked => loop {
                match self.phase {
                    ChunkPhase::Size => {
                        let line = String::from_utf8_lossy(&conn.read_line()?).into_owned();
                        let size = line.split(';').next().unwrap_or("").trim();
                        let size = u64::from_str_radix(size, 16)
                            .map_err(|_| format!("bad chunk size line {line:?}"))?;
                        if size == 0 {
                            // Trailer fields, up to an empty line.
                            while !conn.read_line()?.is_empty() {}
                            self.phase = ChunkPhase::Done;
                        } else {
                            self.phase = ChunkPhase::Data(size);
                        }
                    }
                    ChunkPhase::Data(0) => self.phase = ChunkPhase::DataEnd,
                    ChunkPhase::Data(left) => break left,
                    ChunkPhase::DataEnd => {
                        if !conn.read_line()?.is_empty() {
                            return Err("chunk data not followed by CRLF".into());
                        }
                        self.phase = ChunkPhase::Size;
                    }
                    ChunkPhase::Done => return Ok(None),
                }
            },
        };
        let piece = conn
            .take(max.min(usize::try_from(want).unwrap_or(usize::MAX)))
            .map_err(|e| format!("reading the body: {e}"))?;
        if piece.is_empty() {
            return Err(match self.framing {
                Framing::Length(_) => format!(
                    "connection closed after {received} of {total} body bytes (Content-Length)"
                ),
                _ => "connection closed inside a chunk".into(),
            });
        }
        self.received += piece.len() as u64;
        if let ChunkPhase::Data(left) = &mut self.phase {
            *left -= piece.len() as u64;
        }
        Ok(Some(piece))
    }
}

/// A response head. `Content-Length` is always sent: no chunked responses.
pub(crate) fn response_head(
    status: u16,
    content_type: &str,
    extra: &[(&str, String)],
    content_length: u64,
    close: bool,
) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nServer: sega-testsrv\r\nContent-Type: {content_type}\r\n\
         Content-Length: {content_length}\r\n",
        reason(status)
    );
    for (name, value) in extra {
        let _ = write!(h, "{name}: {value}\r\n");
    }
    h.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    h.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn read_all(conn: &mut Conn<Trickle>, framing: Framing) -> Result<Vec<u8>, String> {
        let mut body = Body::new(framing);
        let mut out = Vec::new();
        while let Some(piece) = body.next(conn, 5)? {
            out.extend_from_slice(piece);
        }
        Ok(out)
    }

    #[test]
    fn heads_and_bodies_across_small_reads() {
        let wire = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length:  5 \r\n\r\nhello\
                     POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                     3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\n";
        for step in 1..20 {
            let mut conn = Conn::new(Trickle(wire, step));
            let (head, err) = parse_head(&conn.read_head().expect("head").expect("some"));
            assert_eq!(
                (head.method.as_str(), head.path.as_str(), err),
                ("POST", "/upload", None)
            );
            assert_eq!(head.headers[1], ("Content-Length".into(), "5".into()));
            let (f, cl, chunked, err) = framing(&head.headers);
            assert_eq!(
                (f, cl, chunked, err),
                (Framing::Length(5), Some(5), false, None)
            );
            assert_eq!(read_all(&mut conn, f).expect("body"), b"hello");
            let (head, _) = parse_head(&conn.read_head().expect("head").expect("some"));
            let (f, _, chunked, err) = framing(&head.headers);
            assert!(chunked && err.is_none());
            assert_eq!(
                read_all(&mut conn, f).expect("body"),
                b"abc0123456789abcdef"
            );
            assert!(conn.read_head().expect("clean end").is_none());
        }
    }

    #[test]
    fn short_body_and_bad_heads() {
        let mut conn = Conn::new(Trickle(b"abc", 2));
        let err = read_all(&mut conn, Framing::Length(10)).expect_err("short");
        assert!(err.contains("3 of 10"), "{err}");
        let mut conn = Conn::new(Trickle(b"POST / HTTP/1.1\r\nHost", 4));
        assert!(matches!(conn.read_head(), Err(HeadError::Closed)));
        let big = vec![b'a'; HEAD_MAX + 10];
        assert!(matches!(
            Conn::new(Trickle(&big, 9000)).read_head(),
            Err(HeadError::TooLarge)
        ));
        for bad in [
            "POST /upload HTTP/1.0\r\n\r\n",
            "post /upload HTTP/1.1\r\n\r\n",
            "POST  /upload HTTP/1.1\r\n\r\n",
            "POST upload HTTP/1.1\r\n\r\n",
            "POST /upload HTTP/1.1\r\nNo colon\r\n\r\n",
            "POST /upload HTTP/1.1\r\nBad Name: v\r\n\r\n",
            "POST /upload HTTP/1.1\r\nA: b\nC: d\r\n\r\n",
            "POST /upload HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).1.is_some(), "{bad:?}");
        }
        let h = |name: &str, v: &str| vec![(name.to_string(), v.to_string())];
        assert_eq!(framing(&h("content-length", "+5")).0, Framing::Unknown);
        assert_eq!(framing(&h("Transfer-Encoding", "gzip")).0, Framing::Unknown);
        let both = [h("Content-Length", "5"), h("Transfer-Encoding", "chunked")].concat();
        assert!(framing(&both).3.is_some());
    }
}
