//! Endpoint faults: the test endpoint's mode switched for a while, calm gaps between; left
//! `Ok` when the episode stops.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{Ctx, Deck};
use crate::rng::Rng;
use crate::soak::daemon::TIMEOUT_SECS;
use crate::soak::kinds::Kind;
use crate::Mode;

/// The deck: the eight endpoint modes (503 for a fraction twice), poison, interim.
fn deck(ctx: &Ctx) -> Deck {
    let on = |k| u64::from(ctx.faults.has(k));
    let e = on(Kind::Endpoint);
    Deck::new(&[
        e * 2,
        e,
        e,
        e,
        e,
        e,
        e,
        e,
        on(Kind::Poison),
        on(Kind::Interim),
    ])
}

/// Endpoint fault `card`: its label, the mode, how long it lasts.
fn pick(ctx: &Ctx, card: usize, rng: &mut Rng) -> (&'static str, Mode, Duration) {
    let (lo, hi) = ctx.pace.endpoint_len;
    let len = rng.secs(lo, hi);
    match card {
        8 => {
            // A digit before the dot: a tenth of the names (s0000047.jpg for "7.").
            let needle = format!("{}.", rng.range(0, 9));
            let code = *rng.pick(&[500, 502, 503]);
            ("endpoint poison", Mode::Poison { needle, code }, len)
        }
        9 => {
            let codes = match rng.below(3) {
                0 => vec![100],
                1 => vec![100, 103],
                _ => vec![102, 103, 103],
            };
            ("endpoint interim 1xx", Mode::Interim(codes), len)
        }
        _ => match card {
            0 => {
                let fraction = rng.range(20, 80) as f64 / 100.0;
                let mode = Mode::Status {
                    code: 503,
                    fraction,
                };
                ("endpoint 503 for a fraction", mode, len)
            }
            1 => {
                let code = if rng.chance(0.5) { 429 } else { 503 };
                let mode = Mode::RetryAfter {
                    code,
                    secs: rng.range(1, 15),
                };
                ("endpoint Retry-After", mode, len)
            }
            2 => {
                // Past timeout_secs now and then: some arrive but look failed and are re-sent.
                let ms = rng.range(200, (TIMEOUT_SECS + 3) * 1000);
                (
                    "endpoint delay",
                    Mode::Delay(Duration::from_millis(ms)),
                    len,
                )
            }
            3 => ("endpoint hang", Mode::Hang, len / 2),
            4 => {
                let mode = Mode::ResetMidBody {
                    after_bytes: rng.range(0, 64 * 1024),
                };
                ("endpoint reset mid-body", mode, len)
            }
            5 => ("endpoint refused (outage)", Mode::Refuse, len.mul_f64(1.5)),
            6 => {
                let mode = Mode::TrickleResponse {
                    bytes_per_sec: rng.range(500, 20_000),
                };
                ("endpoint trickled answer", mode, len)
            }
            _ => {
                let mode = Mode::HugeBody {
                    bytes: rng.range(1 << 20, 16 << 20) as usize,
                };
                ("endpoint huge answer", mode, len)
            }
        },
    }
}

pub fn spawn(ctx: Arc<Ctx>, mut rng: Rng) -> JoinHandle<Result<(), String>> {
    thread::Builder::new()
        .name("endpoint-faults".into())
        .spawn(move || {
            let (glo, ghi) = ctx.pace.endpoint_gap;
            let mut deck = deck(&ctx);
            let mut gap = rng.secs(glo / 2.0, ghi / 2.0);
            while ctx.nap(gap) {
                let Some(card) = deck.draw(&mut rng) else {
                    // Nothing of ours is on: wait for the end like the others.
                    gap = Duration::from_secs(1);
                    continue;
                };
                let (kind, mode, dur) = pick(&ctx, card, &mut rng);
                ctx.tally
                    .fault(kind, &format!("{mode} for {:.1}s", dur.as_secs_f64()));
                ctx.ledger.disruption(true);
                ctx.server.set_mode(mode);
                ctx.nap(dur);
                ctx.server.set_mode(Mode::Ok);
                ctx.ledger.disruption(false);
                ctx.tally.log("endpoint ok");
                gap = rng.secs(glo, ghi);
            }
            ctx.server.set_mode(Mode::Ok);
            Ok(())
        })
        .expect("spawning the endpoint injector")
}
