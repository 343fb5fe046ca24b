//! Integration tests: the real binary on a real temp tree, with real inotify, a real SQLite
//! file and the loopback test endpoint. One test binary keeps the build short.

mod util;

mod cli;
mod daemon;
mod faults;
mod scan;
mod service;
