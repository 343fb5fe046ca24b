//! `sega-soak` (`make soak`): the model engine ([`sega_testsrv::soak`]) run for a long time:
//! sega-uploader against every fault kind mixed at random while files keep arriving; at the
//! end of each episode the oracle's checks, and a one-line verdict for the run.
//!
//! This file only parses the flags, runs the engine and maps the outcome to an exit code:
//! 0 if every check passed; 1 if one failed (or the run could not go on); 64 for a usage
//! error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sega_testsrv::rng;
use sega_testsrv::soak::{self, Faults, Options, Pace, FAULTS_SYNTAX};

const USAGE: &str = "\
usage: sega-soak --daemon PATH [--minutes 60 | --seconds N] [--episode-minutes N]
                 [--seed N] [--faults LIST] [--postgres] [--rate FILES_PER_SEC (20)]
                 [--workers N (4)] [--pace soak|test] [--work DIR] [--keep]

  --episode-minutes N  the longest episode [half the run, from 1 to 10 minutes]
  --faults LIST   default | all | none | KIND,... | +KIND,-KIND,...   [default: all but wal]
  --postgres      every other episode on a throwaway PostgreSQL cluster
  --pace test     the model test's pace (few small files, faults close together)
  --seed N        replay a run (SEGA_TEST_SEED works too)";

/// The options; `None` for `--help`.
fn parse_args() -> Result<Option<Options>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Options {
        daemon: PathBuf::new(),
        seed: std::env::var(rng::SEED_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rng::clock_seed),
        duration: Duration::from_secs(3600),
        episode: Duration::ZERO,
        pace: Pace::soak(),
        workers: 4,
        faults: Faults::default_set(),
        postgres: false,
        work: None,
        keep: false,
        label: "sega-soak",
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("daemon") => o.daemon = p.value()?.into(),
            Long("minutes") => o.duration = Duration::from_secs(60 * p.value()?.parse::<u64>()?),
            Long("seconds") => o.duration = Duration::from_secs(p.value()?.parse()?),
            Long("episode-minutes") => {
                o.episode = Duration::from_secs(60 * p.value()?.parse::<u64>()?)
            }
            Long("seed") => o.seed = p.value()?.parse()?,
            Long("faults") => {
                let spec: String = p.value()?.parse()?;
                o.faults = Faults::parse(&spec, Faults::default_set())?;
            }
            Long("postgres") => o.postgres = true,
            Long("rate") => {
                o.pace.rate = p.value()?.parse()?;
                if !(o.pace.rate > 0.0 && o.pace.rate <= 10_000.0) {
                    return Err("--rate: must be within (0, 10000]".into());
                }
            }
            Long("workers") => {
                o.workers = p.value()?.parse()?;
                if o.workers == 0 {
                    return Err("--workers: at least 1".into());
                }
            }
            Long("pace") => {
                let rate = o.pace.rate;
                o.pace = match p.value()?.to_str() {
                    Some("soak") => Pace::soak(),
                    Some("test") => Pace::test(),
                    _ => return Err("--pace: soak or test".into()),
                };
                // A --rate given earlier stands.
                if rate != Pace::soak().rate {
                    o.pace.rate = rate;
                }
            }
            Long("work") => o.work = Some(p.value()?.into()),
            Long("keep") => o.keep = true,
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected()),
        }
    }
    if o.daemon.as_os_str().is_empty() {
        return Err("--daemon PATH is required".into());
    }
    if o.episode.is_zero() {
        // Two episodes at least (the second on PostgreSQL with --postgres), 10 min at most.
        o.episode = (o.duration / 2).clamp(Duration::from_secs(60), Duration::from_secs(600));
    }
    Ok(Some(o))
}

fn main() -> ExitCode {
    let mut opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}\n\nLIST: {FAULTS_SYNTAX}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sega-soak: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    match std::fs::canonicalize(&opts.daemon) {
        Ok(p) => opts.daemon = p,
        Err(e) => {
            eprintln!("sega-soak: {}: {e}", opts.daemon.display());
            return ExitCode::from(64);
        }
    }
    match soak::run(&opts) {
        Ok(outcome) if outcome.passed() => ExitCode::SUCCESS,
        Ok(outcome) => {
            eprintln!(
                "sega-soak: FAILED (seed {}); faults.log: {}",
                opts.seed,
                outcome.faults_log().display()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("sega-soak: {e} (seed {})", opts.seed);
            ExitCode::from(1)
        }
    }
}
