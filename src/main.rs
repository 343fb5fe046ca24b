//! sega-uploader: watches camera image folders and uploads every new image once.
//!
//! This file parses the command line, dispatches to `cli`, and maps errors to the exit
//! codes of DESIGN §7 (0 ok, 1 runtime failure, 64 usage, 78 configuration).

mod alerts;
mod check;
mod cli;
mod clock;
mod config;
mod daemon;
mod db;
mod dburl;
mod endpoint;
mod error;
mod health;
mod interim;
mod judge;
mod layout;
#[cfg(feature = "postgres")]
mod libpq;
mod live;
mod lock;
mod logging;
mod metrics;
mod notify;
mod scanner;
mod secret;
mod store;
mod ticker;
mod upload;
mod watch;

use error::{Error, EXIT_USAGE};

const VERSION_LINE: &str = concat!("sega-uploader ", env!("CARGO_PKG_VERSION"));

const USAGE: &str = "\
Usage: sega-uploader [-c FILE] <COMMAND> [OPTIONS]

Watches <root>/<folder>/<YYYY-MM-DD>/ for new images and uploads each one once.

Commands:
  run            the daemon, in the foreground (systemd Type=notify)
  check-config   validate the config, print it (secrets redacted), check the environment
  scan           one pass: record, one attempt per due file, exit (cron, backfill)
  status         counts per folder and status, endpoint state, daemon alive
  list           list recorded files
  retry          re-queue failed files or given paths
  upload-test    upload one file now and print the full response
  check          Nagios/Icinga plugin: OK/WARNING/CRITICAL from the database and heartbeat
  migrate-db     copy an SQLite ledger into the PostgreSQL one at database.url

Options:
  -c, --config FILE   config file (default: $SEGA_CONFIG, else /etc/sega/config.json)
  -h, --help          this help; `sega-uploader COMMAND --help` for a command's options
  -V, --version       print the version

Exit codes: 0 success, 1 runtime failure, 64 usage error, 78 configuration error.";

fn main() {
    let code = match cli::Cli::parse(std::env::args_os().skip(1)) {
        Ok(cli::Parsed::Help(text)) => {
            println!("{text}");
            0
        }
        Ok(cli::Parsed::Version) => {
            println!("{VERSION_LINE}");
            0
        }
        Ok(cli::Parsed::Run(cli)) => match cli.execute() {
            Ok(code) => code,
            Err(e) => report(&e),
        },
        // The Nagios plugin speaks on stdout, in one line, and exits 3.
        Err(e @ Error::Plugin(_)) => {
            println!("{e}");
            e.exit_code()
        }
        Err(e) => {
            eprintln!("sega-uploader: {e}");
            eprintln!("Try 'sega-uploader --help'.");
            EXIT_USAGE
        }
    };
    std::process::exit(code);
}

fn report(e: &Error) -> i32 {
    match e {
        Error::Config(c) => eprintln!("sega-uploader: invalid configuration:\n{c}"),
        _ => {
            // Once the logger is up, the error goes through it (journald priority); before
            // that, straight to stderr.
            if log::max_level() != log::LevelFilter::Off {
                log::error!("{e}");
            } else {
                eprintln!("sega-uploader: {e}");
            }
        }
    }
    e.exit_code()
}

/// Used by `cli` for the usage text.
pub fn usage() -> &'static str {
    USAGE
}
