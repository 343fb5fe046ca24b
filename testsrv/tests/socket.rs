//! The server over real sockets, one test per fault mode, with a hand-written HTTP client.
//! Waits are on conditions with deadlines; the only timing checks are generous lower bounds.

use sega_testsrv::{serve_control, Mode, Server};
use sha2::{Digest, Sha256};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const B: &str = "----sega7f3a";

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

fn multipart(filename_param: &str, data: &[u8]) -> Vec<u8> {
    let mut b = format!(
        "--{B}\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nSega_1\r\n\
         --{B}\r\nContent-Disposition: form-data; name=\"date\"\r\n\r\n2026-11-26\r\n\
         --{B}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename_param}\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(format!("\r\n--{B}--\r\n").as_bytes());
    b
}

/// A complete upload request with `extra` header lines (each ending in CRLF).
fn upload(body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={B}\r\n\
         Content-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s
}

/// Reads one response: head, then `Content-Length` bytes, or up to EOF without it.
fn read_reply(s: &mut TcpStream) -> io::Result<Reply> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "EOF in the response head",
            ));
        }
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).expect("UTF-8 head");
    let mut lines = head.trim_end().split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    match reply
        .header("content-length")
        .map(|v| v.parse::<usize>().expect("length"))
    {
        Some(n) => {
            reply.body = vec![0; n];
            s.read_exact(&mut reply.body)?;
        }
        None => {
            s.read_to_end(&mut reply.body)?;
        }
    }
    Ok(reply)
}

fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = connect(addr);
    s.write_all(request).expect("write");
    read_reply(&mut s).expect("reply")
}

fn send_upload(srv: &Server, data: &[u8]) -> Reply {
    exchange(
        srv.addr(),
        &upload(&multipart("IMG_0001.jpg", data), "Connection: close\r\n"),
    )
}

#[test]
fn ok_records_the_upload() {
    let srv = Server::start("127.0.0.1:0").expect("start");
    assert!(srv.url().starts_with("http://127.0.0.1:") && srv.url().ends_with("/upload"));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let name = "%22a%22 %B0%A1 사진.jpg";
    let r = exchange(
        srv.addr(),
        &upload(
            &multipart(name, &data),
            "Connection: close\r\nX-Key: abc\r\n",
        ),
    );
    assert_eq!(r.status, 200);
    let sha = format!("{:x}", Sha256::digest(&data));
    let j = r.json();
    assert_eq!(
        (j["ok"].as_bool(), j["size"].as_u64(), j["sha256"].as_str()),
        (Some(true), Some(300_000), Some(&*sha))
    );
    assert!(srv.wait_for_requests(1, WAIT));
    let req = &srv.requests()[0];
    assert_eq!(
        (
            req.method.as_str(),
            req.path.as_str(),
            req.status,
            req.error.as_deref()
        ),
        ("POST", "/upload", Some(200), None)
    );
    assert_eq!(req.header("x-KEY"), Some("abc"));
    assert!(!req.chunked && req.content_length.is_some() && req.completed_at.is_some());
    assert_eq!(
        (req.field("folder"), req.field("date")),
        (Some("Sega_1"), Some("2026-11-26"))
    );
    let f = req.file.as_ref().expect("file");
    assert_eq!(
        (f.field.as_str(), f.filename_raw.as_str(), f.size, &f.sha256),
        ("file", name, 300_000, &sha)
    );
    assert_eq!(
        f.filename,
        [&b"\"a\" \xb0\xa1 "[..], "사진.jpg".as_bytes()].concat()
    );
    assert_eq!(
        req.to_json()["file"]["filename_hex"].as_str().map(str::len),
        Some(f.filename.len() * 2)
    );
    assert_eq!((srv.request_count(), srv.connection_count()), (1, 1));
    srv.clear();
    assert_eq!((srv.request_count(), srv.requests().len()), (0, 0));
}

#[test]
fn health_keep_alive_and_other_requests() {
    let srv = Server::start("127.0.0.1:0").expect("start");
    let mut s = connect(srv.addr());
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let r = read_reply(&mut s).expect("reply");
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    // A load generator may reuse the connection.
    s.write_all(&upload(&multipart("a.jpg", b"x"), ""))
        .expect("write");
    assert_eq!(read_reply(&mut s).expect("reply").status, 200);
    let hook = "POST /hook HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n";
    s.write_all(format!("{hook}{{\"a\":1}}").as_bytes())
        .expect("write");
    assert_eq!(read_reply(&mut s).expect("reply").status, 200);
    assert!(srv.wait_for_requests(3, WAIT));
    assert_eq!(srv.connection_count(), 1);
    assert_eq!(srv.requests()[2].body.as_deref(), Some(&b"{\"a\":1}"[..]));
    assert_eq!(
        exchange(
            srv.addr(),
            b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        .status,
        404
    );
    assert!(!srv.wait_for_requests(5, Duration::from_millis(50)));
}

#[test]
fn strictness_violations_get_400() {
    let srv = Server::start("127.0.0.1:0").expect("start");
    let body = multipart("a.jpg", b"data");
    // Chunked: recorded, and an error for multipart.
    let mut chunked = format!(
        "POST /upload HTTP/1.1\r\nContent-Type: multipart/form-data; boundary={B}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    chunked.extend_from_slice(&body);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = exchange(srv.addr(), &chunked);
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("chunked"));
    // Content-Length two bytes short (the final CRLF left out): caught by the peek.
    let short = upload(&body[..body.len() - 2], "Connection: close\r\n");
    let short = [&short[..], b"\r\n"].concat();
    assert_eq!(exchange(srv.addr(), &short).status, 400);
    // Content-Length too large: the client stops sending and half-closes.
    let mut long = upload(&body, "Connection: close\r\n");
    long = String::from_utf8(long)
        .expect("utf8")
        .replace(&format!("Length: {}", body.len()), "Length: 999")
        .into_bytes();
    let mut s = connect(srv.addr());
    s.write_all(&long).expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(read_reply(&mut s).expect("reply").status, 400);
    // A bare quote inside the filename.
    assert_eq!(
        exchange(
            srv.addr(),
            &upload(&multipart("a\"b.jpg", b"x"), "Connection: close\r\n")
        )
        .status,
        400
    );
    assert_eq!(
        exchange(
            srv.addr(),
            b"POST /upload HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
        )
        .status,
        400
    );
    assert!(srv.wait_for_requests(5, WAIT));
    let reqs = srv.requests();
    assert!(
        reqs[0].chunked && reqs[0].file.is_some(),
        "chunked body still parsed: {:?}",
        reqs[0]
    );
    for (req, needle) in
        reqs.iter()
            .zip(["chunked", "after the", "closed after", "bare", "version"])
    {
        let e = req.error.as_deref().unwrap_or("");
        assert!(e.contains(needle), "{needle:?} not in {e:?}");
        assert_eq!(req.status, Some(400));
    }
}

#[test]
fn status_fraction_and_retry_after() {
    let srv = Server::start("127.0.0.1:0").expect("start");
    srv.set_mode(Mode::Status {
        code: 500,
        fraction: 0.5,
    });
    let got: Vec<u16> = (0..4).map(|_| send_upload(&srv, b"x").status).collect();
    assert_eq!(got, [200, 500, 200, 500]);
    srv.set_mode("status:503".parse().expect("mode"));
    assert_eq!(send_upload(&srv, b"x").status, 503);
    srv.set_mode(Mode::RetryAfter { code: 429, secs: 7 });
    let r = send_upload(&srv, b"x");
    assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));
    assert!(srv.wait_for_requests(6, WAIT));
    assert_eq!(srv.stats().by_status.get(&500), Some(&2));
}

#[test]
fn refuse_then_the_same_port_again() {
    let srv = Server::start("127.0.0.1:0").expect("start");
    srv.set_mode(Mode::Refuse);
    let err = TcpStream::connect(srv.addr()).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    srv.set_mode(Mode::Ok);
    assert_eq!(send_upload(&srv, b"x").status, 200);
    assert_eq!(srv.connection_count(), 1);
}

#[test]
fn reset_mid_body_resets_the_client() {
    let srv = Server::start("127.0.0.1:0").expect("start");
    srv.set_mode(Mode::ResetMidBody { after_bytes: 4096 });
    let mut s = connect(srv.addr());
    let request = upload(
        &multipart("a.jpg", &vec![7u8; 4 << 20]),
        "Connection: close\r\n",
    );
    let outcome = match s.write_all(&request) {
        Err(e) => Err(e),
        Ok(()) => read_reply(&mut s).map(|r| r.status),
    };
    let kind = outcome.expect_err("no answer").kind();
    assert!(
        matches!(kind, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "{kind:?}"
    );
    assert!(srv.wait_for_requests(1, WAIT));
    assert_eq!(srv.requests()[0].status, None);
}

#[test]
fn hang_ends_on_mode_change_and_on_drop() {
    let srv = Server::start("127.0.0.1:0").expect("start");
    srv.set_mode(Mode::Hang);
    let mut a = connect(srv.addr());
    a.write_all(&upload(&multipart("a.jpg", b"x"), "Connection: close\r\n"))
        .expect("write");
    assert!(srv.wait_for_requests(1, WAIT));
    srv.set_mode(Mode::Ok);
    let mut rest = Vec::new();
    assert_eq!(
        a.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0),
        0,
        "closed, no answer"
    );

    srv.set_mode(Mode::Hang);
    let mut b = connect(srv.addr());
    b.write_all(&upload(&multipart("a.jpg", b"x"), "Connection: close\r\n"))
        .expect("write");
    assert!(srv.wait_for_requests(2, WAIT));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        drop(srv);
        let _ = tx.send(());
    });
    rx.recv_timeout(WAIT).expect("drop returned");
    let r = b.read(&mut [0u8; 16]);
    assert!(matches!(r, Ok(0)) || r.is_err_and(|e| e.kind() == ErrorKind::ConnectionReset));
}

#[test]
fn huge_nonjson_redirect_delay_trickle_slowread() {
    let srv = Server::start("[::1]:0")
        .or_else(|_| Server::start("127.0.0.1:0"))
        .expect("start");
    srv.set_mode(Mode::HugeBody { bytes: 5_000_000 });
    let r = send_upload(&srv, b"x");
    assert_eq!(
        (r.status, r.body.len(), r.header("content-length")),
        (200, 5_000_000, Some("5000000"))
    );
    srv.set_mode(Mode::NonJson);
    let r = send_upload(&srv, b"x");
    assert_eq!(
        (r.header("content-type"), &r.body[..]),
        (Some("text/html"), &b"<html>ok</html>"[..])
    );
    srv.set_mode(
        "redirect:302:http://127.0.0.1:9/elsewhere"
            .parse()
            .expect("mode"),
    );
    let r = send_upload(&srv, b"x");
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("http://127.0.0.1:9/elsewhere"))
    );
    srv.set_mode(Mode::Delay(Duration::from_millis(300)));
    let t = Instant::now();
    assert_eq!(send_upload(&srv, b"x").status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    srv.set_mode(Mode::TrickleResponse {
        bytes_per_sec: 20_000_000,
    });
    let r = send_upload(&srv, b"x");
    assert_eq!(
        (r.status, r.body.len(), r.json()["ok"].as_bool()),
        (200, 1 << 20, Some(true))
    );
    srv.set_mode(Mode::SlowRead {
        bytes_per_sec: 200_000,
    });
    let t = Instant::now();
    assert_eq!(send_upload(&srv, &vec![1u8; 100_000]).status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn loopback_only() {
    for addr in ["0.0.0.0:0", "8.8.8.8:0"] {
        assert_eq!(
            Server::start(addr).err().map(|e| e.kind()),
            Some(ErrorKind::InvalidInput),
            "{addr}"
        );
    }
}

#[test]
fn control_endpoint() {
    let srv = Server::start("127.0.0.1:0").expect("start");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ctl = listener.local_addr().expect("addr");
    thread::scope(|scope| {
        let serving = scope.spawn(|| serve_control(&srv, &listener));
        let post = |path: &str, body: &str| {
            let req = format!(
                "POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            exchange(ctl, req.as_bytes())
        };
        assert_eq!(post("/mode", "status:500:0.3\n").status, 200);
        assert_eq!(
            srv.mode(),
            Mode::Status {
                code: 500,
                fraction: 0.3
            }
        );
        assert_eq!(post("/mode", "bogus").status, 400);
        post("/mode", "refuse");
        assert!(TcpStream::connect(srv.addr()).is_err());
        post("/mode", "ok");
        send_upload(&srv, b"abc");
        let stats = exchange(ctl, b"GET /stats HTTP/1.1\r\n\r\n").json();
        assert_eq!(
            (
                stats["request_count"].as_u64(),
                stats["by_status"]["200"].as_u64()
            ),
            (Some(1), Some(1))
        );
        let lines = exchange(ctl, b"GET /requests HTTP/1.1\r\n\r\n").body;
        let first: serde_json::Value =
            serde_json::from_slice(lines.split(|&b| b == b'\n').next().expect("line"))
                .expect("json");
        assert_eq!(first["file"]["size"].as_u64(), Some(3));
        assert_eq!(post("/clear", "").status, 200);
        assert_eq!(srv.request_count(), 0);
        assert_eq!(post("/quit", "").status, 200);
        serving.join().expect("no panic").expect("served");
    });
}
