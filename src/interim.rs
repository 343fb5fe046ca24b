//! Interim (1xx) answers, which attohttpc takes for the final one.
//!
//! RFC 9110 §15.2 lets a server send `100 Continue`, `102 Processing` or `103 Early Hints`
//! before its final answer, even unasked. attohttpc returns the first status line it reads;
//! a 1xx carries no length, so what it hands over as that answer's body is the rest of the
//! connection: more interim answers, then the final one. [`final_answer`] reads past them
//! and frames the final answer's body (none for 204 and 304, `Content-Length`, `chunked`,
//! or until the close, which a server that frames it no other way must make). A connection
//! that gave an interim answer is never kept for another request. Bounded everywhere: a
//! line is at most 16 KiB,
//! an answer at most 100 headers, and at most 16 interim answers are skipped.

use std::io::{self, BufRead, BufReader, Read};

const MAX_LINE: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_INTERIM: usize = 16;

/// The final answer behind interim ones: its status, headers and body.
pub struct Final {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn Read>,
}

/// Reads past the interim answers on `rest` (the "body" of the 1xx attohttpc returned) to
/// the final answer. An error when the stream does not hold one (a malformed line, too
/// many interim answers, the connection closed first): the caller treats it like a
/// transport error, never as an answer.
pub fn final_answer(rest: impl Read + 'static) -> io::Result<Final> {
    let mut r = BufReader::new(rest);
    for _ in 0..MAX_INTERIM {
        let status = status_line(&mut r)?;
        let headers = header_lines(&mut r)?;
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(bad("101 Switching Protocols to an upload"));
            }
            continue;
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        };
        let chunked = header("transfer-encoding").is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("chunked"))
        });
        // 204 and 304 have no body whatever their headers say (RFC 9112 §6.3); read to the
        // close, they would wait for the read timeout on a connection the server keeps.
        let body: Box<dyn Read> = if status == 204 || status == 304 {
            Box::new(io::empty())
        } else if chunked {
            Box::new(Chunked {
                r,
                left: 0,
                done: false,
            })
        } else if let Some(len) = header("content-length") {
            let len: u64 = len.parse().map_err(|_| bad("a bad Content-Length"))?;
            Box::new(r.take(len))
        } else {
            Box::new(r)
        };
        return Ok(Final {
            status,
            headers,
            body,
        });
    }
    Err(bad("more than 16 interim (1xx) answers"))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("after an interim answer: {what}"),
    )
}

fn line(r: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    let n = r.take(MAX_LINE as u64).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed before the final answer",
        ));
    }
    if !buf.ends_with(b"\n") {
        return Err(bad("a line longer than 16 KiB"));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    // As attohttpc's own parser: no control bytes but tab in a status or header line (they
    // would reach logs and `list` through a Location).
    if buf.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(bad("a control character in a line"));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `HTTP/1.1 200 OK` → 200.
fn status_line(r: &mut impl BufRead) -> io::Result<u16> {
    let l = line(r)?;
    let mut parts = l.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && (100..600).contains(&code) => Ok(code),
        _ => Err(bad("a malformed status line")),
    }
}

fn header_lines(r: &mut impl BufRead) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let l = line(r)?;
        if l.is_empty() {
            return Ok(headers);
        }
        if headers.len() == MAX_HEADERS {
            return Err(bad("more than 100 headers"));
        }
        let (k, v) = l.split_once(':').ok_or_else(|| bad("a malformed header"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
}

/// A `chunked` body, decoded.
struct Chunked<R> {
    r: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let size = line(&mut self.r)?;
            let size = size.split(';').next().unwrap_or("").trim();
            self.left = u64::from_str_radix(size, 16).map_err(|_| bad("a bad chunk size"))?;
            if self.left == 0 {
                // Trailers, then the blank line.
                while !line(&mut self.r)?.is_empty() {}
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed inside a chunk",
            ));
        }
        self.left -= n as u64;
        if self.left == 0 {
            line(&mut self.r)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(mut f: Final) -> String {
        let mut s = String::new();
        f.body.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn interim_answers_are_skipped_to_the_final_one() {
        let stream = "HTTP/1.1 102 Processing\r\n\r\n\
                      HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
                      HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n\
                      {\"ok\":true}trailing";
        let f = final_answer(io::Cursor::new(stream.as_bytes().to_vec())).unwrap();
        assert_eq!(f.status, 200);
        assert!(f
            .headers
            .iter()
            .any(|(k, v)| k == "Content-Type" && v == "application/json"));
        assert_eq!(body(f), "{\"ok\":true}");
    }

    #[test]
    fn chunked_and_close_delimited_bodies_are_framed() {
        let chunked = "HTTP/1.1 503 Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
                       4\r\nbusy\r\n6;x=y\r\n, wait\r\n0\r\nX-T: 1\r\n\r\n";
        let f = final_answer(io::Cursor::new(chunked.as_bytes().to_vec())).unwrap();
        assert_eq!(f.status, 503);
        assert_eq!(body(f), "busy, wait");
        let close = "HTTP/1.0 201 Created\r\n\r\nuntil the end";
        let f = final_answer(io::Cursor::new(close.as_bytes().to_vec())).unwrap();
        assert_eq!((f.status, body(f)), (201, "until the end".to_string()));
        // No body at all, whatever follows on the connection.
        let none = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nnext answer";
        let f = final_answer(io::Cursor::new(none.as_bytes().to_vec())).unwrap();
        assert_eq!((f.status, body(f)), (204, String::new()));
    }

    #[test]
    fn a_stream_without_a_final_answer_is_an_error() {
        for stream in [
            "",
            "HTTP/1.1 100 Continue\r\n\r\n",
            "garbage\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 302 Found\r\nLocation: http://x/\x1b[31mRED\rFORGED\r\n\r\n",
        ] {
            assert!(
                final_answer(io::Cursor::new(stream.as_bytes().to_vec())).is_err(),
                "{stream:?}"
            );
        }
        let many = "HTTP/1.1 100 Continue\r\n\r\n".repeat(17);
        assert!(final_answer(io::Cursor::new(many.into_bytes())).is_err());
    }
}
