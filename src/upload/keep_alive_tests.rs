//! The vendored attohttpc's kept connections (`attohttpc::KeepAlive`, vendor patch 5),
//! against a scripted HTTP/1.1 server on 127.0.0.1 that counts the connections it accepts
//! and the requests it reads on each.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use attohttpc::KeepAlive;

/// What the server does with the `n`th request (from 0) read on connection `c`.
enum Act {
    /// Answer with these bytes and keep reading the connection.
    Answer(&'static str),
    /// Answer, then close.
    AnswerThenClose(&'static str),
    /// Close without answering.
    Close,
    /// Hold the connection open without answering until the client goes.
    Silent,
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

struct Server {
    url: String,
    /// Per connection accepted, the heads of the requests read on it.
    seen: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Server {
    fn start(script: impl Fn(usize, usize) -> Act + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/u", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let (script, log) = (Arc::new(script), seen.clone());
        thread::spawn(move || {
            for (c, conn) in listener.incoming().enumerate() {
                let Ok(conn) = conn else { return };
                log.lock().unwrap().push(Vec::new());
                let (script, log) = (script.clone(), log.clone());
                thread::spawn(move || serve(conn, c, &*script, &log));
            }
        });
        Server { url, seen }
    }

    fn connections(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().iter().map(Vec::len).sum()
    }

    fn heads(&self) -> Vec<String> {
        self.seen.lock().unwrap().concat()
    }
}

fn serve(
    conn: TcpStream,
    c: usize,
    script: &(dyn Fn(usize, usize) -> Act + Send + Sync),
    log: &Mutex<Vec<Vec<String>>>,
) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    for n in 0.. {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<u64>().ok())?
            })
            .unwrap_or(0);
        if std::io::copy(&mut (&mut r).take(len), &mut std::io::sink()).ok() != Some(len) {
            return;
        }
        log.lock().unwrap()[c].push(head);
        match script(c, n) {
            Act::Answer(a) => {
                if w.write_all(a.as_bytes()).is_err() {
                    return;
                }
            }
            Act::AnswerThenClose(a) => {
                let _ = w.write_all(a.as_bytes());
                return;
            }
            Act::Close => return,
            Act::Silent => {
                let _ = r.read(&mut [0u8; 1]);
                return;
            }
        }
    }
}

fn post(url: &str, keep: &KeepAlive) -> attohttpc::Result<(u16, String)> {
    post_within(url, keep, Duration::from_secs(20))
}

fn post_within(url: &str, keep: &KeepAlive, timeout: Duration) -> attohttpc::Result<(u16, String)> {
    let resp = attohttpc::post(url)
        .keep_alive(keep.clone())
        .read_timeout(Duration::from_secs(30))
        .timeout(timeout)
        .bytes(vec![0x5au8; 20 << 10])
        .send()?;
    let status = resp.status().as_u16();
    Ok((status, resp.text()?))
}

/// `n` requests one after another, each answered 200 `ok`.
fn posts_ok(url: &str, keep: &KeepAlive, n: usize) {
    for i in 0..n {
        assert_eq!(post(url, keep).unwrap(), (200, "ok".into()), "request {i}");
    }
}

#[test]
fn requests_one_after_another_share_one_connection() {
    let server = Server::start(|_, _| Act::Answer(OK));
    let keep = KeepAlive::new();
    posts_ok(&server.url, &keep, 5);
    assert_eq!(server.requests(), 5);
    assert_eq!(
        server.connections(),
        1,
        "every request opened its own connection"
    );
    assert!(
        server
            .heads()
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("connection: close")),
        "a kept request asked to close: {:?}",
        server.heads()
    );
}

#[test]
fn without_keep_alive_every_request_closes_its_connection() {
    let server = Server::start(|_, _| Act::Answer(OK));
    for _ in 0..2 {
        let r = attohttpc::post(&server.url)
            .bytes(b"x".to_vec())
            .send()
            .unwrap();
        assert_eq!(r.text().unwrap(), "ok");
    }
    assert_eq!(server.connections(), 2);
    assert!(server
        .heads()
        .iter()
        .all(|h| h.to_ascii_lowercase().contains("connection: close")));
}

/// Answers that do not leave the connection reusable: the server says it closes, an
/// HTTP/1.0 answer, a chunked body (never kept: where it ends is not checked), a
/// `Transfer-Encoding` beside the length, an error answer (it may have come before the
/// server read the whole request), a body read only in part. Each next request opens a new
/// connection, and gets its answer.
#[test]
fn answers_that_end_their_connection_are_not_reused() {
    for (what, answer, status) in [
        (
            "Connection: close",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            200,
        ),
        (
            "HTTP/1.0",
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            200,
        ),
        (
            "chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            200,
        ),
        (
            "Transfer-Encoding",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok",
            200,
        ),
        (
            "an error",
            "HTTP/1.1 413 Too Large\r\nContent-Length: 2\r\n\r\nok",
            413,
        ),
    ] {
        let server = Server::start(move |_, _| Act::Answer(answer));
        let keep = KeepAlive::new();
        for i in 0..3 {
            assert_eq!(
                post(&server.url, &keep).unwrap(),
                (status, "ok".into()),
                "{what}: request {i}"
            );
        }
        assert_eq!(server.connections(), 3, "{what}");
    }
    let server =
        Server::start(|_, _| Act::Answer("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nokok"));
    let keep = KeepAlive::new();
    for _ in 0..2 {
        let resp = attohttpc::post(&server.url)
            .keep_alive(keep.clone())
            .bytes(b"x".to_vec())
            .send()
            .unwrap();
        let mut two = [0u8; 2];
        let (_, _, mut body) = resp.split();
        body.read_exact(&mut two).unwrap();
        assert!(!keep.holds_one());
    }
    assert_eq!(
        server.connections(),
        2,
        "a body read in part left its connection kept"
    );
}

/// 204 and 304 have no body whatever their headers say: on a kept connection, such an
/// answer read to a close would wait for the read timeout (30 s here, the deadline 20 s:
/// the request would fail), and the connection is reused after it.
#[test]
fn a_204_with_no_length_is_over_at_its_head() {
    let server = Server::start(|_, _| Act::Answer("HTTP/1.1 204 No Content\r\n\r\n"));
    let keep = KeepAlive::new();
    for _ in 0..2 {
        assert_eq!(post(&server.url, &keep).unwrap(), (204, String::new()));
    }
    assert_eq!(server.connections(), 1);
}

/// A server that closed the connection after its answer: the next request gets its answer
/// on a new connection (the close seen before sending, or the request sent once more after
/// the kept connection failed). The server reads two requests either way.
#[test]
fn a_connection_the_server_closed_is_not_used_again() {
    let server = Server::start(|_, _| Act::AnswerThenClose(OK));
    let keep = KeepAlive::new();
    posts_ok(&server.url, &keep, 3);
    assert_eq!(server.connections(), 3);
    assert_eq!(server.requests(), 3);
}

/// The race a kept connection has: the server closes it just as the request goes (here: it
/// reads the second request and closes without answering). The request goes once more on
/// a new connection, within its deadline; on a new connection, a close is an error and
/// nothing goes again.
#[test]
fn a_kept_connection_closed_unanswered_sends_once_more_on_a_new_one() {
    let server = Server::start(|c, n| {
        if c == 0 && n == 1 {
            Act::Close
        } else {
            Act::Answer(OK)
        }
    });
    let keep = KeepAlive::new();
    posts_ok(&server.url, &keep, 2);
    assert_eq!(server.connections(), 2);
    assert_eq!(
        server.requests(),
        3,
        "the second request went once on each connection"
    );

    let server = Server::start(|_, _| Act::Close);
    let keep = KeepAlive::new();
    assert!(
        post(&server.url, &keep).is_err(),
        "a closed connection answered"
    );
    assert_eq!(
        server.requests(),
        1,
        "a request on a new connection went again"
    );
}

/// A 408 on a kept connection is the server timing it out just as the request came: the
/// request goes once more on a new connection. On a new connection a 408 is the answer.
#[test]
fn a_408_on_a_kept_connection_sends_once_more_on_a_new_one() {
    const TIMEOUT: &str =
        "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let server = Server::start(|c, n| match (c, n) {
        (0, 1) | (2, _) => Act::AnswerThenClose(TIMEOUT),
        _ => Act::Answer(OK),
    });
    let keep = KeepAlive::new();
    posts_ok(&server.url, &keep, 2);
    assert_eq!((server.connections(), server.requests()), (2, 3));
    keep.close();
    assert_eq!(post(&server.url, &keep).unwrap().0, 408);
    assert_eq!((server.connections(), server.requests()), (3, 4));
}

/// A kept connection takes the new request's deadline: a request with a 0.5 s deadline on a
/// reused connection whose server never answers fails by its deadline (not the 30 s read
/// timeout), and a timeout never sends the request again.
#[test]
fn a_reused_connection_keeps_the_new_request_s_deadline() {
    let server = Server::start(|_, n| if n == 0 { Act::Answer(OK) } else { Act::Silent });
    let keep = KeepAlive::with_max_idle(Duration::from_secs(60));
    posts_ok(&server.url, &keep, 1);
    let started = Instant::now();
    let r = post_within(&server.url, &keep, Duration::from_millis(500));
    let took = started.elapsed();
    assert!(r.is_err(), "the silent server answered");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(15),
        "cut after {took:?}"
    );
    assert_eq!(server.connections(), 1);
    assert_eq!(server.requests(), 2, "a request that timed out went again");
}

/// The first request's deadline (1 s) is disarmed when its connection is kept: the next
/// request on it, with a 20 s deadline and an answer 1.3 s late, gets its answer.
#[test]
fn a_kept_connection_s_old_deadline_cuts_nothing() {
    let server = Server::start(|_, n| {
        if n == 1 {
            thread::sleep(Duration::from_millis(1300));
        }
        Act::Answer(OK)
    });
    let keep = KeepAlive::with_max_idle(Duration::from_secs(60));
    assert_eq!(
        post_within(&server.url, &keep, Duration::from_secs(1))
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        post_within(&server.url, &keep, Duration::from_secs(20))
            .unwrap()
            .0,
        200
    );
    assert_eq!(server.connections(), 1);
}

/// A connection idle for longer than the keep's limit is closed, not reused; one kept for
/// another place is never used for this one.
#[test]
fn an_old_or_elsewhere_connection_is_not_reused() {
    let server = Server::start(|_, _| Act::Answer(OK));
    let keep = KeepAlive::with_max_idle(Duration::from_millis(50));
    post(&server.url, &keep).unwrap();
    assert!(keep.holds_one());
    thread::sleep(Duration::from_millis(100));
    post(&server.url, &keep).unwrap();
    assert_eq!(
        server.connections(),
        2,
        "a connection idle past its limit was reused"
    );

    let (a, b) = (
        Server::start(|_, _| Act::Answer(OK)),
        Server::start(|_, _| Act::Answer(OK)),
    );
    let keep = KeepAlive::new();
    for url in [&a.url, &b.url, &a.url] {
        post(url, &keep).unwrap();
    }
    assert_eq!(
        (a.requests(), b.requests()),
        (2, 1),
        "a request went to the other server"
    );
    assert_eq!((a.connections(), b.connections()), (2, 1));
}
