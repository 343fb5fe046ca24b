//! A forward proxy on loopback for the tests: `CONNECT host:port` tunnels (how https goes
//! through a proxy) and absolute-form requests (`POST http://host:port/path`, how plain
//! http does). Host names resolve only here, from the names the test gives it, so a request
//! that reaches the endpoint by its name has been through the proxy. It logs what it was
//! asked ([`Asked`]) and may require credentials (`407` without them).
//!
//! Threads: `testsrv-proxy-accept`, and per connection one that reads the head and then
//! carries client → upstream, plus one for upstream → client. Dropping the proxy stops
//! accepting and shuts every open socket down.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

/// One request the proxy read, whatever came of it.
#[derive(Clone, Debug)]
pub struct Asked {
    /// `CONNECT`, `POST`, …
    pub method: String,
    /// As asked: `host:port` for CONNECT, the absolute URL otherwise.
    pub target: String,
    /// Its `Proxy-Authorization` header, if any.
    pub proxy_authorization: Option<String>,
    /// What the proxy answered itself (200 to a CONNECT, 407, 502…); `None` when it
    /// forwarded the request and the endpoint answered.
    pub status: Option<u16>,
}

/// The running proxy. Stops on drop.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    names: HashMap<String, SocketAddr>,
    /// `Basic …` that requests must carry, if any.
    credentials: Option<String>,
    stopping: AtomicBool,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Vec<TcpStream>>>,
    asked: Mutex<Vec<Asked>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proxy {
    /// Listens on 127.0.0.1. `names`: host name → address, the only names it resolves.
    /// `credentials`: the whole `Proxy-Authorization` value required (`Basic …`), if any.
    pub fn start(names: &[(&str, SocketAddr)], credentials: Option<&str>) -> io::Result<Proxy> {
        let listener = crate::bind_loopback("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            names: names
                .iter()
                .map(|(n, a)| (n.to_ascii_lowercase(), *a))
                .collect(),
            credentials: credentials.map(str::to_string),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            asked: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let acceptor = thread::Builder::new()
            .name("testsrv-proxy-accept".into())
            .spawn(move || accept(listener, sh))?;
        Ok(Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything it was asked, in order.
    pub fn asked(&self) -> Vec<Asked> {
        lock(&self.shared.asked).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        for socks in lock(&self.shared.conns).values() {
            for s in socks {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn accept(listener: TcpListener, sh: Arc<Shared>) {
    for sock in listener.incoming() {
        if sh.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(sock) = sock else { continue };
        let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = sock.try_clone() {
            lock(&sh.conns).insert(id, vec![clone]);
        }
        let sh2 = sh.clone();
        let spawned = thread::Builder::new()
            .name(format!("testsrv-proxy-{id}"))
            .spawn(move || {
                let _ = serve(sock, &sh2, id);
                lock(&sh2.conns).remove(&id);
            });
        if spawned.is_err() {
            lock(&sh.conns).remove(&id);
        }
    }
}

/// Reads the head a byte at a time (nothing of the body or the tunnel is taken).
fn read_head(sock: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || sock.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// The proxy's own answer (407, 400, 502), before it has read the request's body. Then it
/// reads what the client still sends, for up to 2 s, before closing, as a server's
/// lingering close does: closed with unread bytes, the socket would send a reset, and the
/// client, still writing its body, would see "connection reset" instead of the answer (a
/// race the 407 test lost now and then).
fn answer(sock: &mut TcpStream, status: u16, reason: &str, extra: &str) -> io::Result<()> {
    write!(
        sock,
        "HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let _ = sock.shutdown(Shutdown::Write);
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let mut sink = [0u8; 16 * 1024];
    while matches!(sock.read(&mut sink), Ok(n) if n > 0) {}
    Ok(())
}

fn serve(mut sock: TcpStream, sh: &Shared, id: u64) -> io::Result<()> {
    let head = read_head(&mut sock)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let proxy_authorization = header("Proxy-Authorization");
    let record = |status: Option<u16>| {
        lock(&sh.asked).push(Asked {
            method: method.clone(),
            target: target.clone(),
            proxy_authorization: proxy_authorization.clone(),
            status,
        })
    };
    if sh.credentials.is_some() && proxy_authorization != sh.credentials {
        record(Some(407));
        return answer(
            &mut sock,
            407,
            "Proxy Authentication Required",
            "Proxy-Authenticate: Basic realm=\"sega tests\"\r\n",
        );
    }
    // Where to, and the head to send there (none for a tunnel).
    let (authority, upstream_head) = if method == "CONNECT" {
        (target.clone(), None)
    } else if let Some(rest) = target.strip_prefix("http://") {
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = (&rest[..split], &rest[split..]);
        let path = if path.is_empty() { "/" } else { path };
        let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n");
        for (k, v) in &headers {
            let hop = ["host", "proxy-authorization", "proxy-connection"];
            if !hop.iter().any(|h| k.eq_ignore_ascii_case(h)) {
                out += &format!("{k}: {v}\r\n");
            }
        }
        out += "\r\n";
        (authority.to_string(), Some(out))
    } else {
        record(Some(400));
        return answer(&mut sock, 400, "Bad Request", "");
    };
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .to_ascii_lowercase();
    let Some(addr) = sh.names.get(&host).copied() else {
        record(Some(502));
        return answer(&mut sock, 502, "Bad Gateway", "");
    };
    let mut up = match TcpStream::connect(addr) {
        Ok(up) => up,
        Err(_) => {
            record(Some(502));
            return answer(&mut sock, 502, "Bad Gateway", "");
        }
    };
    if let Ok(c) = up.try_clone() {
        lock(&sh.conns).entry(id).or_default().push(c);
    }
    match upstream_head {
        None => {
            record(Some(200));
            sock.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        }
        Some(h) => {
            record(None);
            up.write_all(h.as_bytes())?;
        }
    }
    let (mut down, mut up_read) = (sock.try_clone()?, up.try_clone()?);
    let back = thread::Builder::new()
        .name(format!("testsrv-proxy-{id}-back"))
        .spawn(move || {
            let _ = io::copy(&mut up_read, &mut down);
            let _ = down.shutdown(Shutdown::Write);
        })?;
    let _ = io::copy(&mut sock, &mut up);
    let _ = up.shutdown(Shutdown::Write);
    let _ = back.join();
    Ok(())
}
