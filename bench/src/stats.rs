//! Medians, extremes and percentiles of measured runs.

use serde_json::{json, Value};

/// One measured quantity over several runs.
#[derive(Debug, Clone)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

impl Summary {
    /// The median (the mean of the middle two for an even count), min and max of `runs`.
    /// An empty slice gives NaN everywhere, which the report prints as "n/a".
    pub fn of(runs: &[f64]) -> Summary {
        let mut v: Vec<f64> = runs.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let median = match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Summary {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            runs: runs.to_vec(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "median": num(self.median),
            "min": num(self.min),
            "max": num(self.max),
            "runs": self.runs.iter().map(|x| num(*x)).collect::<Vec<_>>(),
        })
    }
}

/// A JSON number rounded to 3 decimals, or null for NaN.
pub fn num(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// The nearest-rank percentile (`p` in 0..=100) of an ascending slice: the smallest value
/// with at least p % of the samples at or below it. NaN for an empty slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(Summary::of(&[]).median.is_nan());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
