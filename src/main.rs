//! sega-uploader: watches camera image folders and uploads every new image once.
//!
//! This file parses the command line, dispatches to `cli`, and maps errors to the exit
//! codes of DESIGN §7 (0 ok, 1 runtime failure, 64 usage, 78 configuration).

// Command output goes through `cli::out` (`outln!`): `println!` and `eprintln!` panic when a
// write fails (`status > /dev/full`). Tests may print.
#![cfg_attr(not(test), warn(clippy::print_stdout, clippy::print_stderr))]

mod alerts;
mod build_info;
mod check;
mod cli;
mod clock;
mod config;
mod daemon;
mod dburl;
mod error;
mod health;
mod identity;
mod interim;
mod layout;
#[cfg(feature = "postgres")]
mod libpq;
mod live;
mod lock;
mod logging;
mod metrics;
mod notify;
mod owner;
mod scanner;
mod secret;
mod store;
mod ticker;
mod timestamp;
mod tls;
mod upload;
mod watch;
mod work;

use std::io::Write;

use cli::out::outln;
use error::{Error, EXIT_USAGE};

fn main() {
    store::sqlite::configure_process();
    let parsed = cli::Cli::parse(std::env::args_os().skip(1));
    // A check whose output cannot be written is UNKNOWN, as any check that cannot say.
    let is_check = matches!(&parsed, Ok(cli::Parsed::Run(c)) if c.is_check())
        || matches!(&parsed, Err(Error::Plugin(_)));
    // Every command but the daemon ends quietly, by SIGPIPE, when the reader of its output
    // goes away (`cli::sigpipe` says how, and why the daemon keeps SIGPIPE ignored).
    if !matches!(&parsed, Ok(cli::Parsed::Run(c)) if c.is_daemon()) {
        if let Err(e) = cli::sigpipe::install() {
            let _ = writeln!(
                std::io::stderr(),
                "sega-uploader: installing a SIGPIPE handler: {e}"
            );
            std::process::exit(error::EXIT_FAILURE);
        }
    }
    let code = match parsed {
        Ok(cli::Parsed::Help(text)) => {
            outln!("{text}");
            0
        }
        Ok(cli::Parsed::Version) => {
            outln!("{}", build_info::version_line());
            0
        }
        Ok(cli::Parsed::Run(cli)) => match cli.execute() {
            Ok(code) => code,
            Err(e) => report(&e),
        },
        // The Nagios plugin speaks on stdout, in one line, and exits 3.
        Err(e @ Error::Plugin(_)) => {
            outln!("{e}");
            e.exit_code()
        }
        Err(e) => {
            // Not eprintln!, which panics when stderr cannot be written (`2>/dev/full`).
            let _ = writeln!(
                std::io::stderr(),
                "sega-uploader: {e}\nTry 'sega-uploader --help'."
            );
            EXIT_USAGE
        }
    };
    std::process::exit(output_written(code, is_check));
}

/// `code`, unless the command's output could not be written (`cli::out`): then a message on
/// stderr, and a failing exit code in place of success (UNKNOWN for the plugin).
fn output_written(code: i32, is_check: bool) -> i32 {
    let Some(e) = cli::out::failure() else {
        return code;
    };
    let _ = writeln!(
        std::io::stderr(),
        "sega-uploader: writing to standard output: {e}"
    );
    match code {
        _ if is_check => check::UNKNOWN,
        error::EXIT_OK => error::EXIT_FAILURE,
        code => code,
    }
}

/// Says why the command stopped. Written with `writeln!`, not `eprintln!`: the daemon keeps
/// SIGPIPE ignored, and a closed stderr must not turn its exit code into a panic's abort.
fn report(e: &Error) -> i32 {
    let mut stderr = std::io::stderr();
    match e {
        // "PATH: cannot read: …" says it all; it is not the config's content that is wrong.
        Error::Config(c) if c.unreadable() => {
            let _ = writeln!(stderr, "sega-uploader: {c}");
        }
        Error::Config(c) => {
            let _ = writeln!(stderr, "sega-uploader: invalid configuration:\n{c}");
        }
        _ => {
            // Once the logger is up, the error goes through it (journald priority); before
            // that, straight to stderr.
            if log::max_level() != log::LevelFilter::Off {
                log::error!("{e}");
            } else {
                let _ = writeln!(stderr, "sega-uploader: {e}");
            }
        }
    }
    e.exit_code()
}
