//! Standard output for every command (`outln!`), so that output that cannot be written ends
//! the command with a message and a failing exit code, as a good Unix tool does
//! (`status > /dev/full`, a full disk under `list > report.txt`, an I/O error on a dead
//! terminal): never a panic (`println!` panics when a write fails, an abort with
//! `panic = "abort"`, and a crash report on Ubuntu), and never a silent exit 0 with the
//! output lost (`let _ = writeln!`).
//!
//! The first error is kept and later lines are skipped (the command still finishes its work:
//! a `scan` does not stop uploading because its summary could not be printed); `main` asks
//! [`failure`] once the command is done. A reader that went away is not an error here:
//! the process ends by SIGPIPE before the write returns (`sigpipe`).

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

static FAILED: OnceLock<io::Error> = OnceLock::new();

/// Writes one line (`outln!` is the way to call it).
pub fn line(args: fmt::Arguments<'_>) {
    if FAILED.get().is_some() {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}") {
        let _ = FAILED.set(e);
    }
}

/// Flushes standard output; the first error any line met, or the flush, if one did.
pub fn failure() -> Option<&'static io::Error> {
    if FAILED.get().is_none() {
        if let Err(e) = io::stdout().lock().flush() {
            let _ = FAILED.set(e);
        }
    }
    FAILED.get()
}

/// `println!` for command output: see the module doc.
macro_rules! outln {
    () => {
        $crate::cli::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
