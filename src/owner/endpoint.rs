//! The endpoint's health as the DB owner tracks it: consecutive failures, the outage and its
//! probes, and a Retry-After pause. A state machine on the monotonic clock (callers pass
//! the `Instant`), with no I/O: the owner logs, alerts and writes state from what the
//! methods return, and sleeps until [`Endpoint::next_wake`].
//!
//! An outage is declared after [`DOWN_AFTER`] consecutive failures that came from at least
//! two different files: one file the endpoint cannot process (a "poison" image that always
//! gets a 500) backs off on its own and never holds the others back. During an outage one
//! probe goes at a time, each after the one before has ended, `probe_wait` apart whatever
//! the probe found (answered, refused, or a file that was not there); the wait doubles with
//! each failed probe up to `retry.max_secs`. Any answer other than a 5xx, 408 or 429 ends
//! the outage.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// Consecutive endpoint failures that declare an outage (from two files at least).
pub const DOWN_AFTER: u32 = 3;

#[derive(Debug)]
pub struct Endpoint {
    failures: u32,
    /// Files among the current run of failures; two are enough to call it an outage.
    failing_files: Vec<i64>,
    down_since: Option<(Instant, OffsetDateTime)>,
    pub last_error: String,
    probe_wait: Duration,
    next_probe: Instant,
    probe_in_flight: bool,
    paused_until: Option<Instant>,
}

/// A change the owner must tell the operator about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The outage begins; the first probe goes after `probe_wait`.
    Down { failures: u32, probe_wait: Duration },
    /// The outage is over.
    Up { down_for: Duration },
}

impl Endpoint {
    pub fn new(now: Instant) -> Endpoint {
        Endpoint {
            failures: 0,
            failing_files: Vec::new(),
            down_since: None,
            last_error: String::new(),
            probe_wait: Duration::ZERO,
            next_probe: now,
            probe_in_flight: false,
            paused_until: None,
        }
    }

    pub fn is_down(&self) -> bool {
        self.down_since.is_some()
    }

    /// When the outage began (monotonic, and the wall clock then).
    pub fn down_since(&self) -> Option<(Instant, OffsetDateTime)> {
        self.down_since
    }

    /// One piece of evidence: `file`'s request got no answer, or a 5xx/408/429.
    #[allow(clippy::too_many_arguments)] // the evidence, the two clocks and the backoff bounds
    pub fn failed(
        &mut self,
        file: i64,
        error: &str,
        probe: bool,
        now: Instant,
        wall: OffsetDateTime,
        initial: Duration,
        max: Duration,
    ) -> Option<Change> {
        self.failures += 1;
        self.last_error = error.to_owned();
        if self.failing_files.len() < 2 && !self.failing_files.contains(&file) {
            self.failing_files.push(file);
        }
        if self.is_down() {
            if probe {
                self.probe_wait = (self.probe_wait * 2).clamp(initial, max.max(initial));
            }
            return None;
        }
        if self.failures >= DOWN_AFTER && self.failing_files.len() >= 2 {
            self.down_since = Some((now, wall));
            self.probe_wait = initial;
            self.next_probe = now + initial;
            return Some(Change::Down {
                failures: self.failures,
                probe_wait: initial,
            });
        }
        None
    }

    /// The endpoint answered (anything but a 5xx, 408 or 429): failures are forgotten and
    /// an outage ends.
    pub fn answered(&mut self, now: Instant) -> Option<Change> {
        self.failures = 0;
        self.failing_files.clear();
        self.probe_in_flight = false;
        self.down_since.take().map(|(since, _)| Change::Up {
            down_for: now.saturating_duration_since(since),
        })
    }

    /// Whether a probe may go now (the outage is on, none is out, its time has come).
    pub fn may_probe(&self, now: Instant) -> bool {
        self.is_down() && !self.probe_in_flight && now >= self.next_probe
    }

    pub fn probe_started(&mut self) {
        self.probe_in_flight = true;
    }

    /// A probe ended, or found no file to try: the next goes `probe_wait` from now, however
    /// this one ended. (Without this a probe that got no answer at all, or whose file was
    /// gone, would be followed by the next one at once, and the next.)
    pub fn probe_ended(&mut self, now: Instant) {
        self.probe_in_flight = false;
        self.next_probe = now + self.probe_wait;
    }

    /// The probe that was started never went out (its row was refused by the rules): the
    /// next may go at once.
    pub fn probe_abandoned(&mut self) {
        self.probe_in_flight = false;
    }

    /// How long a failed probe's file waits at least: past the next probe, so that one
    /// tries another file.
    pub fn probe_gap(&self) -> Duration {
        if self.is_down() {
            self.probe_wait
        } else {
            Duration::ZERO
        }
    }

    /// Retry-After: nothing goes out until `until`.
    pub fn pause(&mut self, until: Instant) {
        self.paused_until = Some(until);
    }

    /// Whether the pool is paused at `now`; a pause that has run out is cleared (true once
    /// then: the caller looks for due files again).
    pub fn paused(&mut self, now: Instant) -> Pause {
        match self.paused_until {
            Some(until) if now < until => Pause::Paused,
            Some(_) => {
                self.paused_until = None;
                Pause::JustEnded
            }
            None => Pause::No,
        }
    }

    /// The next moment the endpoint's state wants the owner awake: a pause's end, or the
    /// next probe while down and none is out. None: nothing to wait for.
    pub fn next_wake(&self) -> Option<Instant> {
        let probe = (self.is_down() && !self.probe_in_flight).then_some(self.next_probe);
        match (self.paused_until, probe) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    No,
    Paused,
    JustEnded,
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn wall() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH
    }

    #[test]
    fn one_file_failing_alone_never_declares_an_outage() {
        let t = Instant::now();
        let mut e = Endpoint::new(t);
        for _ in 0..10 {
            assert_eq!(
                e.failed(7, "HTTP 500", false, t, wall(), 5 * S, 600 * S),
                None
            );
        }
        assert!(!e.is_down());
        // A second file failing too is evidence of an outage.
        let c = e.failed(8, "HTTP 500", false, t, wall(), 5 * S, 600 * S);
        assert_eq!(
            c,
            Some(Change::Down {
                failures: 11,
                probe_wait: 5 * S
            })
        );
        assert!(e.is_down());
    }

    #[test]
    fn three_failures_of_two_files_declare_it_and_an_answer_ends_it() {
        let t = Instant::now();
        let mut e = Endpoint::new(t);
        assert_eq!(
            e.failed(1, "refused", false, t, wall(), 5 * S, 600 * S),
            None
        );
        assert_eq!(
            e.failed(2, "refused", false, t, wall(), 5 * S, 600 * S),
            None
        );
        assert!(e
            .failed(1, "refused", false, t, wall(), 5 * S, 600 * S)
            .is_some());
        assert!(!e.may_probe(t), "the first probe waits");
        assert!(e.may_probe(t + 5 * S));
        assert_eq!(e.next_wake(), Some(t + 5 * S));
        assert_eq!(
            e.answered(t + 30 * S),
            Some(Change::Up { down_for: 30 * S })
        );
        assert!(!e.is_down());
        assert_eq!(e.next_wake(), None);
    }

    #[test]
    fn an_answer_between_failures_starts_the_count_again() {
        let t = Instant::now();
        let mut e = Endpoint::new(t);
        e.failed(1, "x", false, t, wall(), S, S);
        e.failed(2, "x", false, t, wall(), S, S);
        e.answered(t);
        assert_eq!(e.failed(3, "x", false, t, wall(), S, S), None);
        assert_eq!(e.failed(4, "x", false, t, wall(), S, S), None);
        assert!(e.failed(3, "x", false, t, wall(), S, S).is_some());
    }

    #[test]
    fn every_probe_paces_the_next_and_failed_probes_double_the_wait() {
        let t = Instant::now();
        let mut e = Endpoint::new(t);
        for f in [1, 2, 3] {
            e.failed(f, "x", false, t, wall(), 5 * S, 40 * S);
        }
        let mut now = t + 5 * S;
        let mut gaps = Vec::new();
        for _ in 0..5 {
            assert!(e.may_probe(now));
            e.probe_started();
            assert!(!e.may_probe(now), "one probe at a time");
            assert_eq!(e.next_wake(), None, "nothing to wake for while it is out");
            e.failed(9, "x", true, now, wall(), 5 * S, 40 * S);
            gaps.push(e.probe_gap());
            e.probe_ended(now);
            assert!(!e.may_probe(now), "never the next probe at once");
            now += e.probe_gap();
        }
        assert_eq!(gaps, [10 * S, 20 * S, 40 * S, 40 * S, 40 * S]);
        // A probe that found nothing to send, or whose file was gone, paces the next too.
        e.probe_started();
        e.probe_ended(now);
        assert!(!e.may_probe(now));
        assert!(e.may_probe(now + 40 * S));
    }

    #[test]
    fn a_pause_holds_until_its_end_and_is_cleared_once() {
        let t = Instant::now();
        let mut e = Endpoint::new(t);
        assert_eq!(e.paused(t), Pause::No);
        e.pause(t + 3 * S);
        assert_eq!(e.next_wake(), Some(t + 3 * S));
        assert_eq!(e.paused(t + S), Pause::Paused);
        assert_eq!(e.paused(t + 3 * S), Pause::JustEnded);
        assert_eq!(e.paused(t + 4 * S), Pause::No);
    }
}
