//! The daemon's stderr as a file: what it gained since an offset (one file can hold several
//! lives of the daemon), waiting for a line, and its last lines for a failure message.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use super::child::poll;

/// The size of a log file (0 if missing): an offset to read new lines from.
pub fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// What a log file gained after `offset`.
pub fn log_since(path: &Path, offset: u64) -> String {
    let mut seen = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut seen);
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Waits until a log gains, after `offset`, a line holding one of `needles`; false after
/// `timeout`.
pub fn wait_log(path: &Path, offset: u64, needles: &[&str], timeout: Duration) -> bool {
    poll(timeout, Duration::from_millis(50), || {
        let text = log_since(path, offset);
        needles.iter().any(|n| text.contains(n))
    })
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    last_lines(&String::from_utf8_lossy(&text), n)
}

/// The last `n` lines of a text.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
