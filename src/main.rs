//! sega-uploader: watches camera image folders and uploads every new image once.
//!
//! This file parses the command line, dispatches to `cli`, and maps errors to the exit
//! codes of DESIGN §7 (0 ok, 1 runtime failure, 64 usage, 78 configuration).

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

use error::{Error, EXIT_USAGE};

fn main() {
    let code = match cli::Cli::parse(std::env::args_os().skip(1)) {
        Ok(cli::Parsed::Help(text)) => {
            println!("{text}");
            0
        }
        Ok(cli::Parsed::Version) => {
            println!("{}", build_info::version_line());
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
