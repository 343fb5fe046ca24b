//! The fault injectors, two threads mixing faults at random from the seed until told to
//! stop: `endpoint` switches the test endpoint's mode (errors, Retry-After, delays, hangs,
//! resets, outages, slow and huge answers), `process` hits the daemon (SIGKILL, SIGSTOP with
//! a burst of files, SIGTERM, a database write lock). Each fault is counted in the `Tally`
//! and written to `faults.log` with its time, so a lost file can be put next to what
//! happened around it.
//!
//! The process injector also stands in for systemd: a daemon that ends on its own is
//! recorded (it never should) and started again.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sega_testsrv::{Mode, Server};

use crate::daemon::Daemon;
use crate::rng::Rng;
use crate::tree::Tree;

/// What happened, for the summary.
#[derive(Clone, Default)]
pub struct Counts {
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Restarts by cause.
    pub restarts: BTreeMap<&'static str, u64>,
    /// Daemon exits nobody asked for, with the end of its stderr.
    pub unexpected_exits: Vec<String>,
    /// SIGTERM stops that did not end with exit 0 within the grace.
    pub bad_stops: Vec<String>,
    pub slowest_stop: Duration,
    /// Trouble in the soak's own machinery (a lock it could not take, a start that failed).
    pub notes: Vec<String>,
}

pub struct Tally {
    started: Instant,
    counts: Mutex<Counts>,
    /// faults.log, and the same lines in memory (a few hundred an hour) for the summary.
    log: Mutex<(File, Vec<(f64, String)>)>,
}

impl Tally {
    pub fn new(started: Instant, log: File) -> Tally {
        Tally {
            started,
            counts: Mutex::new(Counts::default()),
            log: Mutex::new((log, Vec::new())),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A line in faults.log, stamped with the run's clock.
    pub fn log(&self, msg: &str) {
        let t = self.started.elapsed().as_secs_f64();
        let mut g = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(g.0, "[{t:8.1}s] {msg}");
        g.1.push((t, msg.to_owned()));
    }

    /// The faults.log lines between `from` and `to` seconds into the run.
    pub fn events_between(&self, from: f64, to: f64) -> Vec<String> {
        let g = self.log.lock().unwrap_or_else(|e| e.into_inner());
        g.1.iter()
            .filter(|(t, _)| (from..=to).contains(t))
            .map(|(t, m)| format!("[{t:8.1}s] {m}"))
            .collect()
    }

    fn fault(&self, kind: &'static str, detail: &str) {
        *self.counts().faults.entry(kind).or_default() += 1;
        self.log(&format!("{kind}: {detail}"));
    }

    fn note(&self, msg: String) {
        self.log(&format!("NOTE {msg}"));
        self.counts().notes.push(msg);
    }

    pub fn total(&self) -> u64 {
        self.counts().faults.values().sum()
    }

    pub fn snapshot(&self) -> Counts {
        self.counts().clone()
    }
}

/// Sleeps `d` in small steps; false if `stop` was set meanwhile.
fn nap(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
        );
    }
    !stop.load(Ordering::Relaxed)
}

/// One endpoint fault: its kind, the mode, how long it lasts.
fn pick_endpoint(rng: &mut Rng) -> (&'static str, Mode, Duration) {
    let kinds = [3, 2, 2, 2, 2, 2, 1, 1];
    match rng.weighted(&kinds) {
        0 => {
            let fraction = rng.range(20, 80) as f64 / 100.0;
            let mode = Mode::Status {
                code: 503,
                fraction,
            };
            ("endpoint 503 for a fraction", mode, rng.secs(20.0, 60.0))
        }
        1 => {
            let code = if rng.chance(0.5) { 429 } else { 503 };
            let mode = Mode::RetryAfter {
                code,
                secs: rng.range(1, 15),
            };
            ("endpoint Retry-After", mode, rng.secs(10.0, 40.0))
        }
        2 => {
            // Up to 8 s: past timeout_secs (5), so some arrive but look failed and are re-sent.
            let mode = Mode::Delay(Duration::from_millis(rng.range(200, 8000)));
            ("endpoint delay", mode, rng.secs(20.0, 60.0))
        }
        3 => ("endpoint hang", Mode::Hang, rng.secs(5.0, 30.0)),
        4 => {
            let mode = Mode::ResetMidBody {
                after_bytes: rng.range(0, 64 * 1024),
            };
            ("endpoint reset mid-body", mode, rng.secs(10.0, 40.0))
        }
        5 => (
            "endpoint refused (outage)",
            Mode::Refuse,
            rng.secs(10.0, 90.0),
        ),
        6 => {
            let mode = Mode::TrickleResponse {
                bytes_per_sec: rng.range(500, 20_000),
            };
            ("endpoint trickled answer", mode, rng.secs(10.0, 40.0))
        }
        _ => {
            let mode = Mode::HugeBody {
                bytes: rng.range(1 << 20, 16 << 20) as usize,
            };
            ("endpoint huge answer", mode, rng.secs(10.0, 40.0))
        }
    }
}

/// Endpoint faults, with calm gaps of 5–25 s between them, until `stop`; leaves it `Ok`.
pub fn spawn_endpoint(
    server: Arc<Server>,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> JoinHandle<()> {
    thread::Builder::new()
        .name("endpoint-faults".into())
        .spawn(move || {
            let mut gap = rng.secs(2.0, 8.0);
            while nap(&stop, gap) {
                let (kind, mode, dur) = pick_endpoint(&mut rng);
                tally.fault(kind, &format!("{mode} for {:.1}s", dur.as_secs_f64()));
                server.set_mode(mode);
                nap(&stop, dur);
                server.set_mode(Mode::Ok);
                tally.log("endpoint ok");
                gap = rng.secs(5.0, 25.0);
            }
            server.set_mode(Mode::Ok);
        })
        .expect("spawning the endpoint injector")
}

/// What the process injector works on.
pub struct Process {
    pub daemon: Arc<Mutex<Daemon>>,
    pub tree: Arc<Tree>,
    pub db: PathBuf,
    pub stderr: PathBuf,
    /// /proc/sys/fs/inotify/max_queued_events: an overflow burst writes more files than this.
    pub max_queued: usize,
    pub rng: Rng,
    pub stop: Arc<AtomicBool>,
    pub tally: Arc<Tally>,
}

/// Process faults every 10–50 s until `stop`; leaves the daemon running. Ends with an error
/// if the daemon cannot be started again.
pub fn spawn_process(p: Process) -> JoinHandle<Result<(), String>> {
    thread::Builder::new()
        .name("process-faults".into())
        .spawn(move || p.run())
        .expect("spawning the process injector")
}

impl Process {
    fn daemon(&self) -> MutexGuard<'_, Daemon> {
        lock(&self.daemon)
    }

    fn run(mut self) -> Result<(), String> {
        let mut gap = self.rng.secs(5.0, 15.0);
        while self.watch(gap)? {
            match self.rng.weighted(&[3, 3, 2, 2]) {
                0 => self.kill()?,
                1 => self.pause()?,
                2 => self.terminate()?,
                _ => self.lock_db(),
            }
            gap = self.rng.secs(10.0, 50.0);
        }
        Ok(())
    }

    /// Waits `d`, restarting a daemon that ended on its own; false once `stop` is set.
    fn watch(&mut self, d: Duration) -> Result<bool, String> {
        let end = Instant::now() + d;
        loop {
            revive(&self.daemon, &self.tally, &self.stderr)?;
            if self.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            if Instant::now() >= end {
                return Ok(true);
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    fn restart(&mut self, why: &'static str) -> Result<(), String> {
        start_again(&self.daemon, &self.tally, why)
    }

    fn kill(&mut self) -> Result<(), String> {
        let down = self.rng.secs(0.5, 5.0);
        let pid = self.daemon().pid();
        self.tally.fault(
            "SIGKILL + restart",
            &format!("pid {pid}, restart after {:.1}s", down.as_secs_f64()),
        );
        let life = {
            let mut d = self.daemon();
            d.kill();
            d.last_life()
        };
        self.tally.log(&life);
        thread::sleep(down);
        self.restart("SIGKILL")
    }

    fn terminate(&mut self) -> Result<(), String> {
        let down = self.rng.secs(0.5, 3.0);
        let pid = self.daemon().pid();
        self.tally.fault("SIGTERM + restart", &format!("pid {pid}"));
        let r = self.daemon().terminate(Duration::from_secs(30));
        let life = self.daemon().last_life();
        self.tally.log(&life);
        match r {
            Ok((how, took)) => {
                self.tally.log(&format!(
                    "pid {pid} stopped: {how} after {:.1}s",
                    took.as_secs_f64()
                ));
                let mut c = self.tally.counts();
                c.slowest_stop = c.slowest_stop.max(took);
                // shutdown_grace_secs is 5: past it the daemon must exit anyway.
                if how != "exit 0" || took > Duration::from_secs(8) {
                    c.bad_stops
                        .push(format!("pid {pid}: {how} after {:.1}s", took.as_secs_f64()));
                }
            }
            Err(e) => {
                self.tally.log(&format!("pid {pid}: {e}"));
                self.tally
                    .counts()
                    .bad_stops
                    .push(format!("pid {pid}: {e}"));
            }
        }
        thread::sleep(down);
        self.restart("SIGTERM")
    }

    /// SIGSTOP for 2–10 s with a burst written meanwhile: sometimes more files than the
    /// inotify queue holds, so the kernel drops events and the daemon must rescan.
    fn pause(&mut self) -> Result<(), String> {
        let overflow = self.rng.chance(0.25);
        let n = if overflow {
            self.max_queued + self.rng.range(1000, 3000) as usize
        } else {
            self.rng.range(50, 800) as usize
        };
        let hold = self.rng.secs(2.0, 10.0);
        let kind = if overflow {
            "SIGSTOP + inotify-overflow burst"
        } else {
            "SIGSTOP + burst"
        };
        // The field, not `self.daemon()`: the burst below borrows `self.rng` meanwhile.
        let d = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        self.tally.fault(
            kind,
            &format!("pid {}, {n} files, {:.1}s", d.pid(), hold.as_secs_f64()),
        );
        let t0 = Instant::now();
        d.signal(libc::SIGSTOP);
        let written = self.tree.burst(n, &mut self.rng);
        thread::sleep(hold.saturating_sub(t0.elapsed()));
        d.signal(libc::SIGCONT);
        drop(d);
        self.tally
            .log(&format!("SIGCONT after {:.1}s", t0.elapsed().as_secs_f64()));
        written.map_err(|e| format!("writing the burst: {e}"))
    }

    /// Another connection holds the database's write lock for 1–8 s (the daemon's busy
    /// timeout is 5 s: past it, it must hold results in memory and retry).
    fn lock_db(&mut self) {
        let hold = self.rng.secs(1.0, 8.0);
        self.tally
            .fault("DB write lock", &format!("{:.1}s", hold.as_secs_f64()));
        let r = (|| -> rusqlite::Result<()> {
            let c = rusqlite::Connection::open(&self.db)?;
            c.busy_timeout(Duration::from_secs(10))?;
            c.execute_batch("BEGIN EXCLUSIVE")?;
            thread::sleep(hold);
            c.execute_batch("COMMIT")
        })();
        match r {
            Ok(()) => self.tally.log("DB write lock released"),
            Err(e) => self.tally.note(format!("DB write lock: {e}")),
        }
    }
}

/// If the daemon has ended on its own (it never should), records how, with the end of its
/// stderr, and starts it again after a second, as systemd would.
pub fn revive(daemon: &Mutex<Daemon>, tally: &Tally, stderr: &Path) -> Result<(), String> {
    let exited = lock(daemon).exited();
    if let Some(how) = exited {
        let life = lock(daemon).last_life();
        tally.log(&life);
        let tail = tail(stderr, 8);
        tally.log(&format!("UNEXPECTED daemon exit ({how}):\n{tail}"));
        tally
            .counts()
            .unexpected_exits
            .push(format!("{how}; stderr ended:\n{tail}"));
        thread::sleep(Duration::from_secs(1));
        start_again(daemon, tally, "unexpected exit")?;
    }
    Ok(())
}

/// Starts the daemon (5 attempts, 2 s apart), counting the restart under `why`.
fn start_again(daemon: &Mutex<Daemon>, tally: &Tally, why: &'static str) -> Result<(), String> {
    for attempt in 1..=5 {
        let r = lock(daemon).start();
        match r {
            Ok(()) => {
                *tally.counts().restarts.entry(why).or_default() += 1;
                tally.log(&format!(
                    "daemon restarted ({why}), pid {}",
                    lock(daemon).pid()
                ));
                return Ok(());
            }
            Err(e) => {
                tally.note(format!("start after {why} failed (attempt {attempt}): {e}"));
                thread::sleep(Duration::from_secs(2));
            }
        }
    }
    Err(format!(
        "the daemon could not be started again after {why} (5 attempts): see daemon.stderr"
    ))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
