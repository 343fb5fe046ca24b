//! What the daemon's commands print: one command's output ([`Out`]), and every output kept
//! for the secrets check ([`Captured`]).

use std::process::Output;
use std::sync::{Arc, Mutex};

/// A finished command's exit code and output, as text.
pub struct Out {
    /// The exit code, -1 if a signal ended it.
    pub code: i32,
    /// Stdout, lossily decoded.
    pub stdout: String,
    /// Stderr, lossily decoded.
    pub stderr: String,
}

/// A finished command's [`Out`].
pub fn out(o: Output) -> Out {
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Everything commands printed (stdout and stderr, one entry each), shared between the
/// threads that run them and the check at the end: no seeded secret may show in any of it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    /// Keeps `o`'s output; returns it.
    pub fn keep(&self, o: Out) -> Out {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.push(o.stdout.clone());
        c.push(o.stderr.clone());
        o
    }

    /// Every output kept so far.
    pub fn texts(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
