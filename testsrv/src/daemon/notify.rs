//! A `NOTIFY_SOCKET` to hand to the daemon: a unix datagram socket we bind, and a `notify`
//! thread that receives every message (READY=1, STATUS=…, WATCHDOG=1, RELOADING=1,
//! STOPPING=1), stamps it on arrival and passes it on, so the daemon never waits on a full
//! socket however seldom its reader looks. Dropping the [`Notify`] stops the thread (within
//! its 100 ms receive timeout) and removes the socket file.

use std::fs;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// A timestamped message: a notify datagram or a log line.
pub type Stamped = (Instant, String);

/// The socket, and every message received so far.
pub struct Notify {
    /// The socket's path: the daemon's `NOTIFY_SOCKET`.
    pub path: PathBuf,
    /// Every message read so far ([`Notify::pump`], [`Notify::wait_for`]), stamped when the
    /// thread received it.
    pub got: Vec<Stamped>,
    rx: Receiver<Stamped>,
    stop: Arc<AtomicBool>,
}

impl Notify {
    /// Binds `path` (a stale socket file there is removed first) and starts the thread.
    pub fn bind(path: &Path) -> io::Result<Notify> {
        let _ = fs::remove_file(path);
        let sock = UnixDatagram::bind(path)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stopped = stop.clone();
        thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                let mut buf = vec![0u8; 8192];
                while !stopped.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                        if tx.send((Instant::now(), msg)).is_err() {
                            break;
                        }
                    }
                }
            })?;
        Ok(Notify {
            path: path.to_path_buf(),
            got: Vec::new(),
            rx,
            stop,
        })
    }

    /// Reads every message into `got` until none has come for 100 ms.
    pub fn pump(&mut self) {
        while let Ok(m) = self.rx.recv_timeout(Duration::from_millis(100)) {
            self.got.push(m);
        }
    }

    /// Waits for a message containing `needle` that arrived after index `from`; its index, or
    /// a "timeout waiting for …" error naming every message received.
    pub fn wait_for(
        &mut self,
        needle: &str,
        from: usize,
        timeout: Duration,
    ) -> Result<usize, String> {
        let end = Instant::now() + timeout;
        loop {
            self.got.extend(self.rx.try_iter());
            if let Some(i) = self
                .got
                .iter()
                .skip(from)
                .position(|(_, m)| m.contains(needle))
            {
                return Ok(from + i);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "timeout waiting for {needle:?} on NOTIFY_SOCKET; got {:?}",
                    self.got
                ));
            }
            if let Ok(m) = self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                self.got.push(m);
            }
        }
    }

    /// Reads what was sent so far, then listens for `window`: how many WATCHDOG=1 came in it.
    pub fn pings_in_next(&mut self, window: Duration) -> usize {
        self.pump();
        let from = self.got.len();
        let end = Instant::now() + window;
        while Instant::now() < end {
            self.pump();
        }
        self.got[from..]
            .iter()
            .filter(|(_, m)| m.contains("WATCHDOG=1"))
            .count()
    }

    /// The arrival times of the WATCHDOG=1 pings read so far between `a` and `b`.
    pub fn pings_between(&self, a: Instant, b: Instant) -> Vec<Instant> {
        self.got
            .iter()
            .filter(|(t, m)| *t >= a && *t <= b && m.contains("WATCHDOG=1"))
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_stamped_and_in_order() {
        let dir = std::env::temp_dir().join(format!("sega-notify-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut n = Notify::bind(&dir.join("notify.sock")).unwrap();
        let tx = UnixDatagram::unbound().unwrap();
        let t0 = Instant::now();
        for m in ["STATUS=starting", "READY=1\nSTATUS=idle", "WATCHDOG=1"] {
            tx.send_to(m.as_bytes(), &n.path).unwrap();
        }
        let ready = n.wait_for("READY=1", 0, Duration::from_secs(10)).unwrap();
        assert_eq!(ready, 1);
        assert!(n.got[ready].1.contains("STATUS=idle"));
        assert_eq!(
            n.wait_for("WATCHDOG", ready + 1, Duration::from_secs(10)),
            Ok(2)
        );
        assert_eq!(n.pings_between(t0, Instant::now()).len(), 1);
        let e = n.wait_for("STOPPING=1", 0, Duration::from_millis(50));
        assert!(e
            .unwrap_err()
            .starts_with("timeout waiting for \"STOPPING=1\""));
        drop(n);
        assert!(!dir.join("notify.sock").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
