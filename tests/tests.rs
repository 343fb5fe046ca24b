//! Integration tests: the real binary on a real temp tree, with real inotify, a real SQLite
//! file or a throwaway PostgreSQL server, and the loopback test endpoint. One test binary
//! keeps the build short.

#[macro_use]
mod util;
// Throwaway PostgreSQL clusters (shared with the store's unit tests and the bench).
use sega_testsrv::pg;

mod backfill;
mod checksum;
mod cli;
mod completion;
mod daemon;
mod faults;
mod model;
mod monitoring;
mod operator;
mod pipes;
mod proxy;
mod scan;
mod secrets;
mod service;
mod shared;
mod startup;
mod success;
mod tls;
mod trust;
