//! The soak's randomness: a small xorshift generator, seeded from the run's seed. Every
//! thread that draws gets its own stream (`Rng::stream`), so what one thread draws does not
//! depend on how the others were scheduled: a seed repeats the same fault schedule and the
//! same files (the timing between them still varies with the machine).

use std::time::Duration;

pub struct Rng(u64);

/// SplitMix64: spreads a seed (and a stream number) over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// Stream `n` of the run seeded with `seed`.
    pub fn stream(seed: u64, n: u64) -> Rng {
        Rng(mix(seed ^ mix(n)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }

    /// Uniform in `lo..=hi` seconds, to the millisecond.
    pub fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        let ms = self.range((lo * 1000.0) as u64, (hi * 1000.0) as u64);
        Duration::from_millis(ms)
    }

    /// An index into `weights`, chosen in proportion to them.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.next() % total.max(1);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}
