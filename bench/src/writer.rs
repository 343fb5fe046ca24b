//! The camera stand-in: writes image files into date folders, paced or flat out, and notes
//! the moment just before each close(); and the usual alternatives that watch a folder the
//! same way: `inotifywait -m | xargs -P<workers> curl` and a Python watchdog + requests script.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::ctx::Ctx;
use crate::tree::{self, Contents};
use sega_testsrv::daemon::{self as harness, Exit};

/// A written file: its name and the time just before its close() (so the latency measured
/// from it includes the close itself).
pub struct Written {
    pub name: String,
    pub closing: SystemTime,
}

/// Writes `n` images named `prefix_NNNNNNN.jpg` round-robin into `dirs`: the i-th at
/// `start + i / rate` when paced, else as fast as possible.
pub fn write_files(
    dirs: &[PathBuf],
    prefix: &str,
    n: usize,
    contents: &Contents,
    rate: Option<f64>,
) -> io::Result<Vec<Written>> {
    let start = Instant::now();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(rate) = rate {
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
        }
        let name = tree::name(prefix, i);
        let mut f = File::create(dirs[i % dirs.len()].join(&name))?;
        f.write_all(contents.get(i))?;
        let closing = SystemTime::now();
        drop(f);
        out.push(Written { name, closing });
    }
    Ok(out)
}

/// A competitor that watches a date folder and uploads each closed file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tool {
    /// `inotifywait -m -e close_write --format %w%f DIR | xargs -d '\n' -P<workers> -I{} curl …`
    Shell,
    /// scripts/bench_watchdog.py: watchdog + requests with a pool of <workers> threads.
    Python,
}

impl Tool {
    pub fn label(self, workers: usize) -> String {
        match self {
            Tool::Shell => format!("inotifywait | xargs -P{workers} curl -F"),
            Tool::Python => format!("python watchdog + requests ({workers} threads)"),
        }
    }
}

/// A running competitor, started by us without a shell so that each process can be stopped
/// by its own pid.
pub struct Watcher {
    tool: Tool,
    /// Shell: inotifywait then xargs. Python: the interpreter.
    pids: Vec<i32>,
    stdin: Option<std::process::ChildStdin>,
}

impl Watcher {
    /// None when the tool is not installed. Returns once the watch is in place.
    pub fn start(
        ctx: &Ctx,
        tool: Tool,
        dir: &std::path::Path,
        folder: &str,
        date: &str,
    ) -> io::Result<Option<Watcher>> {
        let (tx, rx) = mpsc::channel();
        let watcher = match tool {
            Tool::Shell => {
                let (Some(iw), Some(xargs), Some(curl)) =
                    (&ctx.inotifywait, &ctx.xargs, ctx.curl_base(folder, date))
                else {
                    return Ok(None);
                };
                let mut iw = Command::new(iw)
                    .args(["-m", "-e", "close_write", "--format", "%w%f"])
                    .arg(dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()?;
                let events = iw
                    .stdout
                    .take()
                    .ok_or_else(|| io::Error::other("no stdout"))?;
                let xargs = Command::new(xargs)
                    .args(["-d", "\n", &format!("-P{}", ctx.workers), "-I{}"])
                    .args(curl)
                    .args(["-F", "file=@{};type=image/jpeg", &ctx.url()])
                    .stdin(Stdio::from(events))
                    .stdout(Stdio::null())
                    .spawn()?;
                // inotifywait says "Watches established." on stderr once it is watching.
                notice(iw.stderr.take(), "Watches established", tx);
                Watcher {
                    tool,
                    pids: vec![iw.id() as i32, xargs.id() as i32],
                    stdin: None,
                }
            }
            Tool::Python => {
                let Some(python) = &ctx.python else {
                    return Ok(None);
                };
                let mut py = Command::new(python)
                    .arg(crate::ctx::watchdog_script())
                    .args(["watch", &ctx.url(), folder, date])
                    .arg(dir)
                    .arg(ctx.workers.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()?;
                notice(py.stdout.take(), "READY", tx);
                Watcher {
                    tool,
                    pids: vec![py.id() as i32],
                    stdin: py.stdin.take(),
                }
            }
        };
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            watcher.stop();
            return Err(io::Error::other(format!(
                "{}: did not start watching",
                tool.label(ctx.workers)
            )));
        }
        Ok(Some(watcher))
    }

    /// Stops watching; the uploads in flight finish. Returns the exit of the process whose
    /// resource usage covers the uploads (xargs, with every curl it ran; or the interpreter).
    pub fn stop(mut self) -> Option<Exit> {
        let last = *self.pids.last()?;
        match self.tool {
            Tool::Shell => {
                harness::signal(self.pids[0], libc::SIGTERM);
                let _ = harness::wait_child(self.pids[0], Duration::from_secs(10));
            }
            Tool::Python => drop(self.stdin.take()),
        }
        let exit = harness::wait_child(last, Duration::from_secs(30));
        if exit.is_none() {
            harness::signal(last, libc::SIGKILL);
            let _ = harness::wait_child(last, Duration::from_secs(5));
        }
        exit
    }
}

/// Sends on `tx` once a line of `from` contains `needle`; keeps draining it afterwards.
fn notice(
    from: Option<impl io::Read + Send + 'static>,
    needle: &'static str,
    tx: mpsc::Sender<()>,
) {
    let Some(from) = from else { return };
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if line.contains(needle) {
                let _ = tx.send(());
            }
        }
    });
}
