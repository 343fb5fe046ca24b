//! The control endpoint the binary serves on its own loopback listener, so that it keeps
//! working while the upload listener is closed (`refuse`) or its connections hang.
//!
//! Requests are served one at a time on the caller's thread (they are rare and quick);
//! `POST /quit` makes `serve_control` return. Routes: `POST /mode` (body: a mode spec),
//! `GET /mode`, `GET /requests` (JSON lines), `GET /stats`, `POST /clear`, `POST /quit`,
//! `GET /health`.

use crate::http::{self, Body, Conn, BUF_SIZE};
use crate::{Mode, Server};
use serde_json::json;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Serves control requests for `server` on `listener` until `POST /quit`.
pub fn serve_control(server: &Server, listener: &TcpListener) -> io::Result<()> {
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                if handle(server, s) {
                    return Ok(());
                }
            }
            // The client gave up before we accepted, or a signal: not our problem.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Serves one control connection; returns true on `POST /quit`.
fn handle(server: &Server, stream: TcpStream) -> bool {
    // A stuck control client must not block the next one for long.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut conn = Conn::new(stream);
    let Ok(Some(raw)) = conn.read_head() else {
        return false;
    };
    let (head, _) = http::parse_head(&raw);
    let mut body = Vec::new();
    let mut reader = Body::new(http::framing(&head.headers).0);
    while let Ok(Some(piece)) = reader.next(&mut conn, BUF_SIZE) {
        if body.len() < 64 * 1024 {
            body.extend_from_slice(piece);
        }
    }
    let (status, content_type, answer, quit) = route(server, &head.method, &head.path, &body);
    let mut out = http::response_head(status, content_type, &[], answer.len() as u64, true);
    out.extend_from_slice(answer.as_bytes());
    let _ = conn.stream.write_all(&out);
    quit
}

fn route(
    server: &Server,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, &'static str, String, bool) {
    const TEXT: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    match (method, path) {
        ("GET", "/health") => (200, TEXT, "ok".into(), false),
        ("GET", "/mode") => (200, TEXT, format!("{}\n", server.mode()), false),
        ("POST", "/mode") => match String::from_utf8_lossy(body).trim().parse::<Mode>() {
            Ok(mode) => {
                let answer = format!("mode {mode}\n");
                server.set_mode(mode);
                (200, TEXT, answer, false)
            }
            Err(e) => (400, TEXT, format!("{e}\n"), false),
        },
        ("GET", "/requests") => {
            let lines: String = server
                .requests()
                .iter()
                .map(|r| format!("{}\n", r.to_json()))
                .collect();
            (200, "application/x-ndjson", lines, false)
        }
        ("GET", "/stats") => {
            let s = server.stats();
            let by_status: serde_json::Map<String, serde_json::Value> = s
                .by_status
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            let stats = json!({
                "request_count": s.request_count,
                "connection_count": s.connection_count,
                "by_status": by_status,
                "unanswered": s.unanswered,
                "bytes_received": s.bytes_received,
                "mode": server.mode().to_string(),
            });
            (200, JSON, format!("{stats}\n"), false)
        }
        ("POST", "/clear") => {
            server.clear();
            (200, TEXT, "cleared\n".into(), false)
        }
        ("POST", "/quit") => (200, TEXT, "bye\n".into(), true),
        _ => (
            404,
            TEXT,
            format!("no such control request: {method} {path}\n"),
            false,
        ),
    }
}
