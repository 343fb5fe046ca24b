//! What a long command (`scan`, `migrate-db`) shows while it works, and how much it says.
//!
//! On a terminal: one line at the bottom of stderr, redrawn in place a few times a second
//! with the counts so far and the rate (`logging::live_line`, which keeps log lines above
//! it), erased at the end. Anywhere else (a pipe, a file, the journal) nothing while it
//! works, so a backfill of thousands of files is not thousands of lines: the command prints
//! its one summary line at the end. `--quiet` drops both, leaving errors only; `--verbose`
//! (scan) adds a log line per file, as the daemon logs them.
//!
//! Hand-written rather than a progress-bar crate: one line of counts needs a carriage
//! return, an erase-line sequence and the terminal's width, and must share stderr with our
//! own logger; a crate would bring its own terminal layer for that.

use std::time::{Duration, Instant};

use crate::logging;

/// How much a command says: `-q`, nothing but errors; default, a progress line on a
/// terminal and a summary line; `-v`, also a log line per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// How often the live line is redrawn at most: often enough to look alive, rarely enough
/// to cost nothing next to the work it reports.
const REDRAW_EVERY: Duration = Duration::from_millis(150);

/// The live line of one command; shown only on a terminal and unless `--quiet`.
pub struct Progress {
    shown: bool,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    pub fn new(verbosity: Verbosity) -> Progress {
        // SAFETY: isatty only looks at the descriptor.
        let tty = unsafe { libc::isatty(libc::STDERR_FILENO) } == 1;
        Progress {
            shown: tty && verbosity != Verbosity::Quiet,
            started: Instant::now(),
            last: None,
        }
    }

    /// Whether a live line is shown at all (the callers skip building its text otherwise).
    pub fn shown(&self) -> bool {
        self.shown
    }

    /// Since the command started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Redraws the line with what `text` says now, unless it was redrawn less than
    /// [`REDRAW_EVERY`] ago (`force` redraws anyway: the first and the last state).
    pub fn update(&mut self, force: bool, text: impl FnOnce() -> String) {
        if !self.shown {
            return;
        }
        let now = Instant::now();
        if !force && self.last.is_some_and(|t| now - t < REDRAW_EVERY) {
            return;
        }
        self.last = Some(now);
        logging::live_line(Some(&fit(&text(), columns())));
    }

    /// Erases the line: what follows (the summary) starts on a clean line.
    pub fn finish(&mut self) {
        if self.shown {
            logging::live_line(None);
        }
    }
}

impl Drop for Progress {
    /// An early return (an error) must not leave a half line behind the error message.
    fn drop(&mut self) {
        self.finish();
    }
}

/// `n` `unit`s per second over `d`: "52 files/s", "0.4 files/s", "- files/s" before there
/// is a rate.
pub fn rate(n: usize, d: Duration, unit: &str) -> String {
    let secs = d.as_secs_f64();
    if n == 0 || secs < 0.05 {
        return format!("- {unit}/s");
    }
    let r = n as f64 / secs;
    if r >= 10.0 {
        format!("{r:.0} {unit}/s")
    } else {
        format!("{r:.1} {unit}/s")
    }
}

/// A short "about how long is left" from `done` of `total` at the rate so far.
pub fn eta(done: usize, total: usize, d: Duration) -> Option<String> {
    if done == 0 || done >= total {
        return None;
    }
    let left = d.mul_f64((total - done) as f64 / done as f64);
    Some(crate::clock::human_duration(Duration::from_secs(
        left.as_secs().max(1),
    )))
}

/// The terminal's width (stderr's), 80 if it cannot be asked.
fn columns() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize we own; an all-zero one is valid to start from.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// `line` cut to fit in `width - 1` columns: a line that wraps can no longer be redrawn in
/// place with a carriage return. Our lines are ASCII but for names, counted by characters.
fn fit(line: &str, width: usize) -> String {
    let max = width.saturating_sub(1).max(10);
    if line.chars().count() <= max {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_never_wraps_the_terminal() {
        assert_eq!(fit("scan: 12/300", 80), "scan: 12/300");
        let long = "x".repeat(200);
        assert_eq!(fit(&long, 80).chars().count(), 79);
        assert!(fit(&long, 80).ends_with('…'));
    }

    #[test]
    fn rates_and_time_left_read_plainly() {
        assert_eq!(rate(0, Duration::from_secs(3), "files"), "- files/s");
        assert_eq!(rate(150, Duration::from_secs(3), "files"), "50 files/s");
        assert_eq!(rate(3, Duration::from_secs(10), "rows"), "0.3 rows/s");
        assert_eq!(eta(0, 10, Duration::from_secs(1)), None);
        assert_eq!(eta(10, 10, Duration::from_secs(1)), None);
        assert_eq!(
            eta(100, 400, Duration::from_secs(10)).as_deref(),
            Some(crate::clock::human_duration(Duration::from_secs(30)).as_str())
        );
    }
}
