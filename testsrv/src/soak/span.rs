//! Sets of time intervals, in seconds since an episode's start: when a file was in its date
//! folder, when a folder was unmounted, when a date was inside the daemon's window. The
//! oracle intersects and subtracts them to learn when a version was there to be uploaded.

/// Disjoint, sorted, half-open intervals `[from, to)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spans(Vec<(f64, f64)>);

impl Spans {
    pub fn empty() -> Spans {
        Spans(Vec::new())
    }

    /// One interval (empty if `to <= from`).
    pub fn one(from: f64, to: f64) -> Spans {
        if to > from {
            Spans(vec![(from, to)])
        } else {
            Spans::empty()
        }
    }

    /// The union of any intervals, in any order.
    pub fn of(mut v: Vec<(f64, f64)>) -> Spans {
        v.retain(|(a, b)| b > a);
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut out: Vec<(f64, f64)> = Vec::with_capacity(v.len());
        for (a, b) in v {
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Spans(out)
    }

    pub fn intervals(&self) -> &[(f64, f64)] {
        &self.0
    }

    pub fn contains(&self, t: f64) -> bool {
        self.0.iter().any(|&(a, b)| a <= t && t < b)
    }

    pub fn intersect(&self, other: &Spans) -> Spans {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.0.len() && j < other.0.len() {
            let (a1, b1) = self.0[i];
            let (a2, b2) = other.0[j];
            let (a, b) = (a1.max(a2), b1.min(b2));
            if b > a {
                out.push((a, b));
            }
            if b1 < b2 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Spans(out)
    }

    /// Everything in `self` that is not in `other`.
    pub fn minus(&self, other: &Spans) -> Spans {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            let mut from = a;
            for &(c, d) in &other.0 {
                if d <= from || c >= b {
                    continue;
                }
                if c > from {
                    out.push((from, c));
                }
                from = from.max(d);
                if from >= b {
                    break;
                }
            }
            if from < b {
                out.push((from, b));
            }
        }
        Spans(out)
    }

    /// Each interval grown by `after` at its end (and merged).
    pub fn extended(&self, after: f64) -> Spans {
        Spans::of(self.0.iter().map(|&(a, b)| (a, b + after)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_intersection_and_difference() {
        let a = Spans::of(vec![(5.0, 7.0), (0.0, 2.0), (1.0, 3.0)]);
        assert_eq!(a.intervals(), &[(0.0, 3.0), (5.0, 7.0)]);
        let b = Spans::of(vec![(2.0, 6.0)]);
        assert_eq!(a.intersect(&b).intervals(), &[(2.0, 3.0), (5.0, 6.0)]);
        assert_eq!(a.minus(&b).intervals(), &[(0.0, 2.0), (6.0, 7.0)]);
        assert_eq!(b.minus(&a).intervals(), &[(3.0, 5.0)]);
        assert_eq!(a.minus(&Spans::one(-1.0, 10.0)), Spans::empty());
        assert!(a.contains(0.0) && !a.contains(3.0) && a.contains(6.5));
        assert_eq!(a.extended(2.5).intervals(), &[(0.0, 9.5)]);
    }
}
