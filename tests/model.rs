//! The randomized model test at the daemon's boundary: the engine of `make soak`
//! (`sega_testsrv::soak`) for about a minute. Files keep arriving while endpoint, process,
//! tree, clock and config faults are mixed at random from one logged seed; at the end of
//! each episode the oracle checks that every version owed arrived with its
//! Idempotency-Key, that nothing outside the tree was opened and that no secret was printed
//! (see the engine's `oracle` for the rules). One SQLite episode and, where PostgreSQL can
//! run, a short PostgreSQL one.
//!
//! Every fault kind is on, the deleted WAL included (the daemon notices it and stops, and
//! refuses a database that lost its schema). `SEGA_TEST_SEED=N` replays a run;
//! `SEGA_MODEL_FAULTS` changes the kinds (`-wal`, or `kill,stop` for only those).

use std::time::Duration;

use sega_testsrv::rng;
use sega_testsrv::soak::{self, Faults, Options, Pace};

use crate::util::BIN;

#[test]
fn random_faults_at_the_boundary() {
    let seed = rng::seed_from_env("model");
    let faults = match std::env::var("SEGA_MODEL_FAULTS") {
        Ok(spec) => {
            Faults::parse(&spec, Faults::all()).unwrap_or_else(|e| panic!("SEGA_MODEL_FAULTS: {e}"))
        }
        Err(_) => Faults::all(),
    };
    let postgres = crate::pg::available();
    let work = std::env::temp_dir().join(format!("sega-it-model-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let opts = Options {
        daemon: BIN.into(),
        seed,
        // 30 s on SQLite, then 10 s on PostgreSQL; each episode adds its drain (a few
        // seconds when nothing is wrong).
        duration: Duration::from_secs(if postgres { 40 } else { 35 }),
        episode: Duration::from_secs(30),
        pace: Pace::test(),
        workers: 2,
        faults,
        postgres,
        work: Some(work.clone()),
        keep: false,
        label: "model",
    };
    let outcome = soak::run(&opts).unwrap_or_else(|e| {
        panic!(
            "model: the run could not go on: {e}\nseed {seed} (rerun with SEGA_TEST_SEED={seed}); \
             faults.log: {}",
            work.join("faults.log").display()
        )
    });
    assert!(
        outcome.passed(),
        "{}\n{}\nseed {seed} (rerun with SEGA_TEST_SEED={seed}); faults.log: {}",
        outcome.verdict_line(),
        outcome.failures().join("\n"),
        outcome.faults_log().display()
    );
}
