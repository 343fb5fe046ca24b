//! The one seeded random generator of the tests, the soak and the model test: a small
//! xorshift, seeded through SplitMix64. Every thread that draws gets its own stream
//! ([`Rng::stream`]), so what one thread draws does not depend on how the others were
//! scheduled: a seed repeats the same choices (the timing between them still varies with
//! the machine).
//!
//! The seed comes from `SEGA_TEST_SEED` when set, else from the clock, and is always
//! printed ([`seed_from_env`]), so that any failure can be replayed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The environment variable that fixes the seed of a test run.
pub const SEED_ENV: &str = "SEGA_TEST_SEED";

/// A seeded generator. Not for cryptography.
#[derive(Clone, Debug)]
pub struct Rng(u64);

/// SplitMix64: spreads a seed (and a stream number) over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed from the clock: different on every run.
pub fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000)
}

/// `SEGA_TEST_SEED` if set (a number), else a seed from the clock; printed on stderr with
/// the line that replays it.
pub fn seed_from_env(name: &str) -> u64 {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(clock_seed);
    eprintln!("{name}: seed {seed} (rerun with {SEED_ENV}={seed})");
    seed
}

impl Rng {
    /// Stream `n` of the run seeded with `seed`.
    pub fn stream(seed: u64, n: u64) -> Rng {
        Rng(mix(seed ^ mix(n)) | 1)
    }

    /// Stream 0 of a seed from `SEGA_TEST_SEED` or the clock, logged (see
    /// [`seed_from_env`]).
    pub fn seeded(name: &str) -> Rng {
        Rng::stream(seed_from_env(name), 0)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }

    /// Uniform in `lo..=hi` seconds, to the millisecond.
    pub fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        let ms = self.range((lo * 1000.0) as u64, (hi * 1000.0) as u64);
        Duration::from_millis(ms)
    }

    /// An index into `weights`, chosen in proportion to them.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.next_u64() % total.max(1);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_and_streams_differ() {
        let a: Vec<u64> = (0..5).map(|_| Rng::stream(7, 1).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut s1 = Rng::stream(7, 1);
        let mut s2 = Rng::stream(7, 2);
        assert_ne!(s1.next_u64(), s2.next_u64());
        let mut r = Rng::stream(1, 0);
        for _ in 0..1000 {
            assert!((3..=5).contains(&r.range(3, 5)));
            assert!(r.below(4) < 4);
            assert!(r.weighted(&[0, 1, 0]) == 1);
        }
    }
}
