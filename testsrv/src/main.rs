//! `sega-testsrv`: the test endpoint as a program, for `make demo`, the fault/soak suite
//! and the benchmarks.
//!
//! The main thread parses the flags, starts the server (behind a TLS front of its own CA
//! with `--tls-dir`: deb-check's https endpoint), announces the URLs (stdout and
//! `--addr-file`) and then serves the control endpoint until `POST /quit`. One `log`
//! thread owns the output: it receives every settled request and writes the JSON-lines log
//! and the human line on stderr. SIGTERM/SIGINT keep their default action (terminate).

use sega_testsrv::tls::{Ca, TlsFront, Validity};
use sega_testsrv::{bind_loopback, serve_control, Mode, Request, Server};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::Receiver;
use std::thread;

const USAGE: &str = "\
usage: sega-testsrv [--listen 127.0.0.1:0] [--control 127.0.0.1:0] [--addr-file FILE]
                    [--log FILE.jsonl] [--mode MODE] [--keep N] [--quiet] [--tls-dir DIR]

  --listen ADDR     upload listener (loopback only)                 [127.0.0.1:0]
  --tls-dir DIR     serve https on --listen: a CA made at start signs a certificate for
                    127.0.0.1 and localhost; DIR/ca.pem is that CA, for the client to trust
  --control ADDR    control listener (loopback only)                [127.0.0.1:0]
  --addr-file FILE  write the upload URL and the control URL, one per line, atomically
  --log FILE        one JSON line per settled request (the file is truncated first)
  --mode MODE       initial fault mode                              [ok]
  --keep N          keep at most N request records in memory, 0 = all [100000]
  --quiet           no human line per request on stderr

MODE: ok | status:CODE[:FRACTION] | retry-after:CODE:SECS | delay:Nms|Ns | hang |
      reset:BYTES | refuse | nonjson | huge:BYTES | slowread:BPS | trickle:BPS |
      redirect:CODE:LOCATION | poison:NEEDLE:CODE | interim:CODES | answer:CODE:BODY |
      early:CODE
control: POST /mode (body: MODE), GET /mode, GET /requests, GET /stats, POST /clear, POST /quit";

struct Args {
    listen: String,
    control: String,
    addr_file: Option<PathBuf>,
    log: Option<PathBuf>,
    mode: Mode,
    keep: usize,
    quiet: bool,
    tls_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("sega-testsrv: {msg}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sega-testsrv: {e}");
            ExitCode::from(1)
        }
    }
}

/// `Ok(None)` for `--help`.
fn parse_args() -> Result<Option<Args>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        listen: "127.0.0.1:0".into(),
        control: "127.0.0.1:0".into(),
        addr_file: None,
        log: None,
        mode: Mode::Ok,
        keep: 100_000,
        quiet: false,
        tls_dir: None,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("listen") => args.listen = p.value()?.parse()?,
            Long("control") => args.control = p.value()?.parse()?,
            Long("addr-file") => args.addr_file = Some(p.value()?.into()),
            Long("log") => args.log = Some(p.value()?.into()),
            Long("mode") => args.mode = p.value()?.parse()?,
            Long("keep") => args.keep = p.value()?.parse()?,
            Long("quiet") => args.quiet = true,
            Long("tls-dir") => args.tls_dir = Some(p.value()?.into()),
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(args))
}

fn run(args: Args) -> io::Result<()> {
    // With --tls-dir the endpoint listens on a port of its own and the TLS front on
    // --listen; the front lives until the program ends.
    let (server, front) = match &args.tls_dir {
        None => (Server::start(&args.listen)?, None),
        Some(dir) => {
            let server = Server::start("127.0.0.1:0")?;
            let front = https_front(&server, &args.listen, dir)?;
            (server, Some(front))
        }
    };
    let url = match &front {
        Some(f) => f.url("127.0.0.1"),
        None => server.url(),
    };
    server.set_max_records(args.keep);
    server.set_mode(args.mode);
    let control = bind_loopback(&args.control)?;
    let control_url = format!("http://{}", control.local_addr()?);
    let log = match &args.log {
        Some(p) => Some(File::create(p).map_err(|e| with_path(p, e))?),
        None => None,
    };
    let rx = server.subscribe();
    let quiet = args.quiet;
    let logger = thread::Builder::new()
        .name("log".into())
        .spawn(move || log_requests(rx, log, quiet))?;

    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {url} control {control_url}")?;
    stdout.flush()?;
    drop(stdout);
    if let Some(p) = &args.addr_file {
        write_atomically(p, &format!("{url}\n{control_url}\n")).map_err(|e| with_path(p, e))?;
    }

    serve_control(&server, &control)?;
    drop(front);
    // Stopping the server ends the subscription, which ends the log thread.
    drop(server);
    let _ = logger.join();
    Ok(())
}

/// A throwaway CA, its PEM written to `dir/ca.pem`, and a TLS front on `listen` with a
/// certificate it signed for 127.0.0.1 and localhost, forwarding to `server`.
fn https_front(server: &Server, listen: &str, dir: &Path) -> io::Result<TlsFront> {
    let ca = Ca::new("sega-testsrv CA");
    let cert = ca.server_cert(&["127.0.0.1", "localhost"], Validity::Current);
    fs::create_dir_all(dir).map_err(|e| with_path(dir, e))?;
    let pem = dir.join("ca.pem");
    write_atomically(&pem, &ca.pem).map_err(|e| with_path(&pem, e))?;
    TlsFront::start_at(listen, server.addr(), &cert, None)
}

fn with_path(p: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// Temp file in the same directory, then rename: a script polling for the file never
/// sees it half-written.
fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

fn log_requests(rx: Receiver<Request>, file: Option<File>, quiet: bool) {
    let mut file = file.map(BufWriter::new);
    for req in rx {
        if let Some(f) = &mut file {
            if let Err(e) = writeln!(f, "{}", req.to_json()).and_then(|()| f.flush()) {
                eprintln!("sega-testsrv: writing the log: {e}; logging to the file stops");
                file = None;
            }
        }
        if !quiet {
            eprintln!("{}", human_line(&req));
        }
    }
}

/// `#12 200 Sega_1/2026-11-26 IMG_0001.jpg 102400 B sha256=ab12cd34ef56…`
fn human_line(req: &Request) -> String {
    let status = req
        .status
        .map_or_else(|| "---".to_string(), |s| s.to_string());
    let mut line = match &req.file {
        Some(f) => format!(
            "#{} {status} {}/{} {} {} B sha256={}…",
            req.seq,
            req.field("folder").unwrap_or("-"),
            req.field("date").unwrap_or("-"),
            String::from_utf8_lossy(&f.filename),
            f.size,
            f.sha256.get(..12).unwrap_or(&f.sha256),
        ),
        None => {
            let size = req
                .body
                .as_ref()
                .map_or(String::new(), |b| format!(" {} B", b.len()));
            format!("#{} {status} {} {}{size}", req.seq, req.method, req.path)
        }
    };
    if let Some(e) = &req.error {
        line.push_str(" error: ");
        line.push_str(e);
    }
    line
}
