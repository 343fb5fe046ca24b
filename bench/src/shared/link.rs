//! A link with a round trip between a daemon and a cluster on this box, as when the server
//! is a network hop away (how a shared ledger is used): a TCP port on 127.0.0.1 that
//! forwards to the cluster's unix socket, each direction's bytes held `one_way` before they
//! are passed on, in order. This kernel has no netem (`tc qdisc … netem`: unknown qdisc),
//! and a network namespace would need it too, so the delay is done here; its threads run
//! on the same cores as everything else (a few per cent of one).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// The one-way delay: a 1 ms round trip, a server in the same rack.
pub(super) const ONE_WAY: Duration = Duration::from_micros(500);

pub(super) struct Link {
    pub(super) port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Link {
    /// Listens on 127.0.0.1 (a free port) and forwards each connection to `socket`.
    pub(super) fn start(socket: PathBuf, one_way: Duration) -> io::Result<Link> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let accept = thread::Builder::new()
            .name("link-accept".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    if let Err(e) = join(client, &socket, one_way) {
                        eprintln!("  link: a connection to {} failed: {e}", socket.display());
                    }
                }
            })?;
        Ok(Link {
            port,
            stop,
            accept: Some(accept),
        })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop, which then sees `stop`. Connections still open end when
        // either side closes.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// One connection: the client's TCP stream to a new session on the socket, both ways.
fn join(client: TcpStream, socket: &PathBuf, one_way: Duration) -> io::Result<()> {
    client.set_nodelay(true)?;
    let server = UnixStream::connect(socket)?;
    let (c2, s2) = (client.try_clone()?, server.try_clone()?);
    let (c3, s3) = (client.try_clone()?, server.try_clone()?);
    forward(
        client,
        server,
        move || drop(s3.shutdown(Shutdown::Write)),
        one_way,
    )?;
    forward(s2, c2, move || drop(c3.shutdown(Shutdown::Write)), one_way)
}

/// Bytes read from `from` are written to `to` `one_way` later; at the end of `from` (or a
/// failed write), `close` tells the other side.
fn forward(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    close: impl FnOnce() + Send + 'static,
    one_way: Duration,
) -> io::Result<()> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::Builder::new()
        .name("link-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                // An empty chunk is the end, passed on after the same delay.
                if tx
                    .send((Instant::now() + one_way, buf[..n].to_vec()))
                    .is_err()
                    || n == 0
                {
                    break;
                }
            }
        })?;
    thread::Builder::new()
        .name("link-write".into())
        .spawn(move || {
            for (due, bytes) in rx {
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                if bytes.is_empty() || to.write_all(&bytes).is_err() {
                    break;
                }
            }
            close();
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Bytes go both ways through the link, in order, each way at least `one_way` late; the
    /// end of one side reaches the other.
    #[test]
    fn forwards_both_ways_late_and_in_order() {
        let dir = std::env::temp_dir().join(format!("sega-bench-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("s");
        let server = UnixListener::bind(&socket).unwrap();
        let echo = thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            s.write_all(&all).unwrap();
        });
        let one_way = Duration::from_millis(20);
        let link = Link::start(socket, one_way).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", link.port)).unwrap();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let t = Instant::now();
        c.write_all(&sent).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert!(t.elapsed() >= 2 * one_way, "a round trip of two delays");
        assert_eq!(back, sent);
        echo.join().unwrap();
        drop(link);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
