//! sega-testsrv: the loopback HTTP/1.1 endpoint that sega-uploader's integration tests,
//! `make demo`, the fault/soak suite and the benchmarks upload to.
//!
//! It parses multipart/form-data strictly, records every request ([`Request`]) and injects
//! faults ([`Mode`]) that can be switched while it runs. It binds loopback addresses only.
//!
//! Who owns what: `server` the shared state, the acceptor thread and stopping ([`Server`]);
//! `conn` one connection: reading, recording and answering requests under the fault mode;
//! `http` request heads, body framing and response heads;
//! `multipart` the streaming parser; `mode` the fault modes and their spec strings;
//! `control` the binary's control endpoint ([`serve_control`]). This file: the request
//! record and the loopback bind.
//!
//! Also here for the same users: [`daemon`], the one harness that starts sega-uploader
//! (its notify socket, READY, signals, reaping, peak memory); [`pg`], throwaway PostgreSQL
//! clusters (unix socket only);
//! [`fuse`], a FUSE filesystem whose reads of chosen files hang (a hung network mount);
//! [`rng`], the one seeded random generator of the tests and the soak; [`soak`], the
//! randomized model test that `tests/model.rs` and `sega-soak` both drive; [`tls`], a
//! throwaway CA and a TLS front that puts the endpoint behind https; and [`proxy`], a
//! forward proxy (CONNECT and absolute-form) whose host names resolve only there.

#![deny(missing_docs)]

mod conn;
mod control;
pub mod daemon;
pub mod fuse;
mod http;
pub mod images;
mod mode;
mod multipart;
pub mod pg;
pub mod proxy;
pub mod rng;
mod server;
pub mod soak;
pub mod tls;

pub use control::serve_control;
pub use mode::Mode;
pub use server::{Server, Stats};

use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io;
use std::net::{TcpListener, ToSocketAddrs};
use std::time::{SystemTime, UNIX_EPOCH};

/// One request as the server saw it. Recorded when its head has arrived (then `status`
/// and `completed_at` are `None`) and completed when the server has decided its fate.
#[derive(Clone, Debug)]
pub struct Request {
    /// 1, 2, … over the server's life (not reset by `clear`); also the `id` in the answer.
    pub seq: u64,
    /// `POST`, `GET`, …
    pub method: String,
    /// The request target, e.g. `/upload`.
    pub path: String,
    /// In order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The `Content-Length` header.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` was used (the uploader must never do this).
    pub chunked: bool,
    /// Multipart text parts, in order.
    pub fields: Vec<(String, String)>,
    /// The multipart file part, once it was complete.
    pub file: Option<FilePart>,
    /// For requests that are not multipart (e.g. a JSON webhook): the body, capped at 1 MiB.
    pub body: Option<Vec<u8>>,
    /// Every strictness violation or I/O problem, `; `-separated.
    pub error: Option<String>,
    /// What the server answered; `None` if it hung, reset or never answered.
    pub status: Option<u16>,
    /// When the request head finished arriving.
    pub received_at: SystemTime,
    /// When the server decided the answer (just before sending it).
    pub completed_at: Option<SystemTime>,
}

/// The file part of a multipart upload. Its content is hashed, never kept.
#[derive(Clone, Debug)]
pub struct FilePart {
    /// The part's `name`.
    pub field: String,
    /// Exactly the `filename` parameter text on the wire (or `filename*` if only that).
    pub filename_raw: String,
    /// Decoded: every `%XX` is one byte (RFC 7578 §4.2); `filename*=UTF-8''…` wins if present.
    pub filename: Vec<u8>,
    /// The part's `Content-Type`.
    pub content_type: String,
    /// Content bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

impl Request {
    /// The first header of that name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of the multipart text part `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// One JSON object for the binary's log and `GET /requests`. Filenames appear three
    /// ways: raw from the wire, decoded as hex (exact bytes) and decoded lossily as text.
    pub fn to_json(&self) -> Value {
        let pairs =
            |v: &[(String, String)]| v.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>();
        json!({
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "headers": pairs(&self.headers),
            "content_length": self.content_length,
            "chunked": self.chunked,
            "fields": pairs(&self.fields),
            "file": self.file.as_ref().map(|f| json!({
                "field": f.field,
                "filename_raw": f.filename_raw,
                "filename": String::from_utf8_lossy(&f.filename),
                "filename_hex": hex(&f.filename),
                "content_type": f.content_type,
                "size": f.size,
                "sha256": f.sha256,
            })),
            "body_len": self.body.as_ref().map(Vec::len),
            "body": self.body.as_ref().map(|b| String::from_utf8_lossy(b)),
            "error": self.error,
            "status": self.status,
            "received_at_ms": unix_ms(self.received_at),
            "completed_at_ms": self.completed_at.map(unix_ms),
        })
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Binds a TCP listener, refusing any address that is not loopback: a test endpoint that
/// logs uploads and misbehaves on purpose must not be reachable from the network.
pub fn bind_loopback(addr: &str) -> io::Result<TcpListener> {
    let addrs: Vec<_> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to bind {addr}: loopback addresses only (127.0.0.1, [::1])"),
        ));
    }
    TcpListener::bind(&addrs[..])
}
