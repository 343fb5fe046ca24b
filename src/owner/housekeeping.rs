//! The owner's periodic work, once a heartbeat: the heartbeat row, claims of dead hosts
//! taken over, the STATUS numbers and the backlog alert, the metrics file, and the daily
//! prune (never by a wall clock that just jumped). After database trouble, at once: the
//! rows a lost answer left claimed go back to `pending`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{AlertEvent, Mode, Owner};
use crate::clock::human_duration;
use crate::layout::{self, Show};
use crate::metrics;
use crate::timestamp::Timestamp;

/// How far the wall clock may drift from the monotonic clock before it counts as a jump.
const CLOCK_JUMP: Duration = Duration::from_secs(300);
/// After a jump, how long the wall clock must keep pace before pruning trusts its date.
const CLOCK_STEADY: Duration = Duration::from_secs(3600);

/// Whether the wall clock can be trusted for the daily prune. A wall clock that jumps (a
/// bad NTP or GPS answer, an RTC corrected after boot) would prune by a date that is not
/// today: the prune waits until the clock has kept pace with the monotonic one for
/// `CLOCK_STEADY` after any jump.
#[derive(Debug)]
pub(super) struct WallClock {
    base: (OffsetDateTime, Instant),
    unsteady_until: Option<Instant>,
}

impl WallClock {
    pub(super) fn new(wall: OffsetDateTime, mono: Instant) -> WallClock {
        WallClock {
            base: (wall, mono),
            unsteady_until: None,
        }
    }

    /// Compares the two clocks; returns how far the wall clock jumped, if it did.
    fn observe(&mut self, wall: OffsetDateTime, mono: Instant) -> Option<time::Duration> {
        let expected = self.base.0 + mono.saturating_duration_since(self.base.1);
        let skew = wall - expected;
        self.base = (wall, mono);
        if skew.unsigned_abs() > CLOCK_JUMP {
            self.unsteady_until = Some(mono + CLOCK_STEADY);
            return Some(skew);
        }
        None
    }

    fn steady(&self, mono: Instant) -> bool {
        self.unsteady_until.is_none_or(|t| mono >= t)
    }
}

impl Owner {
    /// After database trouble: rows this process holds `uploading` that no job, claim
    /// ahead or give-back stands for go back to `pending`. A claim whose answer was lost
    /// after the server committed it leaves such rows, and they would wait, unsent, until a
    /// restart. Only while nothing else is between the owner and the ledger: results not
    /// yet committed (held, or out on the committer) are for rows still `uploading` whose
    /// jobs are over.
    pub(super) fn put_back_unknown_claims(&mut self) {
        let committing = self
            .committer
            .as_ref()
            .is_some_and(|c| c.out_since().is_some());
        let waiting = self.claims_check_at.is_some_and(|t| Instant::now() < t);
        if !self.unsaved.is_empty() || self.unsure || committing || waiting {
            return;
        }
        // A failure here is not database trouble of its own: the calls that matter say so.
        // Declared, it would end at the next heartbeat and start again at the next look,
        // a WARN and an INFO every second for as long as this one query fails.
        let retry_later = |owner: &mut Owner, e: crate::error::Error| {
            log::debug!("looking for claims a lost answer left: {e}; again in 10 s");
            owner.claims_check_at = Some(Instant::now() + Duration::from_secs(10));
        };
        let here = match self.store.claimed_here() {
            Ok(Some(ids)) => ids,
            // Not yet (a lost PostgreSQL session of ours may still be committing a claim).
            Ok(None) => return,
            Err(e) => return retry_later(self, e),
        };
        let known: HashSet<i64> = self
            .in_flight
            .keys()
            .copied()
            .chain(self.claimed_ahead.iter().map(|c| c.id))
            .chain(self.not_given_back.iter().copied())
            .chain(self.solo_in_flight)
            .collect();
        let unknown: Vec<i64> = here.into_iter().filter(|id| !known.contains(id)).collect();
        if !unknown.is_empty() {
            let now = self.now();
            if let Err(e) = self.store.unclaim(&unknown, now) {
                return retry_later(self, e);
            }
            log::warn!(
                "{} file(s) were left claimed by a database call whose answer was lost: they are pending again",
                unknown.len()
            );
            self.maybe_due = true;
        }
        self.claims_unsure = false;
    }

    /// Each turn: held results through database trouble, and the look for claims a lost
    /// answer left; once a heartbeat: the heartbeat row, take-overs, STATUS, metrics and
    /// the daily prune.
    pub(super) fn housekeeping(&mut self) {
        if !matches!(self.mode, Mode::Daemon) {
            return;
        }
        if self.db_trouble.is_some() {
            // Held results first; with none held, a heartbeat write tells whether the
            // database takes writes again.
            self.flush_unsaved();
            if self.unsaved.is_empty() && self.db_trouble.is_some() {
                let now = self.now();
                match self.store.set_state(&[("heartbeat", now.to_string())], now) {
                    Ok(()) => self.recovered(),
                    Err(e) => self.trouble(e),
                }
            }
        }
        if self.claims_unsure && self.db_trouble.is_none() {
            self.put_back_unknown_claims();
        }
        if self
            .last_heartbeat
            .is_some_and(|t| t.elapsed() < self.policy.heartbeat)
        {
            return;
        }
        self.last_heartbeat = Some(Instant::now());
        if let Err(e) = self.store.watch_files() {
            self.fatal = Some(e);
            return;
        }
        // Rows re-queued by another process (`retry`), or recorded by another host, become
        // due without telling us.
        match self.store.next_due() {
            Ok(due) => self.due_in_ledger(due),
            Err(e) => return self.trouble(e),
        }
        let now = self.now();
        let endpoint = if self.endpoint.is_down() {
            "down"
        } else {
            "up"
        };
        if let Err(e) = self.store.set_state(
            &[
                ("heartbeat", now.to_string()),
                ("endpoint", endpoint.into()),
            ],
            now,
        ) {
            return self.trouble(e);
        }
        // A host of a shared ledger that died holding claims: its rows become ours to send.
        match self.store.take_over_stale(now) {
            Ok(0) => {}
            Ok(_) => self.maybe_due = true,
            Err(e) => return self.trouble(e),
        }
        if let Err(e) = self.store.fold_counts() {
            return self.trouble(e);
        }
        self.publish();
        self.write_metrics();
        self.prune();
    }

    /// The ledger's next due time, as the heartbeat reads it from the index: a row due now
    /// (or set due before the wall clock was stepped back) makes the next dispatch claim; a
    /// later one wakes the owner then. Not a claim attempt on every heartbeat: with nothing
    /// due, a claim in upload order walks every pending row of a backlog to find none.
    fn due_in_ledger(&mut self, due: Option<Timestamp>) {
        let Some(due) = due.map(Timestamp::utc) else {
            return;
        };
        let now = self.clock.now_utc();
        if due <= now || due > now + self.policy.horizon() {
            self.maybe_due = true;
        } else {
            self.next_due = Some(self.next_due.map_or(due, |n| n.min(due)));
        }
    }

    /// Once a day: finished rows of date folders older than `keep_days` go. Never by a wall
    /// clock that just jumped, and never past the newest date folder in the ledger: a clock
    /// 200 days ahead must not delete what the rescans would then upload again.
    fn prune(&mut self) {
        let (wall, mono) = (self.clock.now_utc(), Instant::now());
        if let Some(jump) = self.wall.observe(wall, mono) {
            log::warn!(
                "the wall clock jumped by {}{} (against the monotonic clock): pruning waits until it has kept time for {}",
                if jump.is_negative() { "-" } else { "+" },
                human_duration(jump.unsigned_abs()),
                human_duration(CLOCK_STEADY)
            );
        }
        let today = self.clock.today_local();
        if self.last_prune_day == Some(today) || !self.wall.steady(mono) {
            return;
        }
        let newest = match self.store.newest_date() {
            Ok(d) => d
                .as_deref()
                .and_then(|d| layout::parse_date_dir(d.as_ref())),
            Err(e) => return self.trouble(e),
        };
        let reference = newest.map_or(today, |n| n.min(today));
        let cutoff = reference - time::Duration::days(i64::from(self.policy.keep_days));
        match self.store.prune(&layout::format_date(cutoff)) {
            Ok(0) => {}
            Ok(n) => log::info!(
                "pruned {n} row(s) of date folders before {} (finished ones only)",
                layout::format_date(cutoff)
            ),
            Err(e) => return self.trouble(e),
        }
        self.last_prune_day = Some(today);
    }

    /// Refreshes what the supervisor shows in STATUS, and the backlog alert.
    pub(super) fn publish(&mut self) {
        // What `status` says about directories only the rescan covers (the watch limit).
        let unwatched = self.live.watch().unwatched;
        if self.unwatched_written != Some(unwatched) {
            let now = self.now();
            match self
                .store
                .set_state(&[("unwatched_dirs", unwatched.to_string())], now)
            {
                Ok(()) => self.unwatched_written = Some(unwatched),
                Err(e) => return self.trouble(e),
            }
        }
        let local = self.clock.now_local();
        if self.uploaded_today.0 != Some(local.date()) {
            let midnight = Timestamp::new(local.replace_time(time::Time::MIDNIGHT));
            match self.store.uploaded_since(midnight) {
                Ok(n) => self.uploaded_today = (Some(local.date()), n),
                Err(e) => return self.trouble(e),
            }
        }
        let (pending, oldest) = match self.store.queue_overview() {
            Ok(x) => x,
            Err(e) => return self.trouble(e),
        };
        let oldest_age =
            oldest.and_then(|t| Duration::try_from(self.clock.now_utc() - t.utc()).ok());
        match oldest_age {
            Some(age) if age >= self.policy.backlog_alert => {
                self.alerts.send(AlertEvent::Backlog {
                    oldest_age: age,
                    pending,
                })
            }
            _ => self.alerts.send(AlertEvent::BacklogCleared),
        }
        let mut q = self.live.queue();
        q.pending = pending;
        q.uploaded_today = self.uploaded_today.1;
        if let (Some((since, _)), Some(down)) =
            (self.endpoint.down_since(), q.endpoint_down.as_mut())
        {
            down.0 = since.elapsed();
        }
    }

    pub(super) fn write_metrics(&mut self) {
        let Some(path) = self.metrics_path.clone() else {
            return;
        };
        let files = match self.store.counts() {
            Ok(f) => f,
            Err(e) => return self.trouble(e),
        };
        let now = self.clock.now_utc();
        let unix = |t: OffsetDateTime| t.unix_timestamp_nanos() as f64 / 1e9;
        let oldest = self.store.queue_overview().ok().and_then(|(_, o)| o);
        let snapshot = metrics::Snapshot {
            files: &files,
            counters: self.counters.clone(),
            heartbeat_unix: unix(Timestamp::new(now).utc()),
            oldest_pending_unix: oldest.map(|t| unix(t.utc())),
            oldest_pending_age: oldest.and_then(|t| Duration::try_from(now - t.utc()).ok()),
            endpoint_up: !self.endpoint.is_down(),
            last_scan_unix: self.last_scan.map(|(t, _)| unix(t)),
            last_scan_duration: self.last_scan.map(|(_, d)| d),
            overflows: self.live.watch().overflows,
            rescans: self.live.rescans.load(std::sync::atomic::Ordering::Relaxed),
        };
        if let Err(e) = metrics::write_atomic(&path, &metrics::render(&snapshot)) {
            log::warn!(
                "writing metrics to {}: {}",
                path.shown(),
                crate::error::describe_io(&e)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_wall_clock_is_trusted_again_an_hour_after_a_jump() {
        let t0 = datetime!(2026-11-26 12:00 UTC);
        let m0 = Instant::now();
        let mut w = WallClock::new(t0, m0);
        let s = |n: u64| Duration::from_secs(n);
        assert!(w.steady(m0), "trusted from the start");
        assert_eq!(w.observe(t0 + s(10), m0 + s(10)), None);
        // 200 days ahead for 15 s, then back.
        let jump = w.observe(t0 + time::Duration::days(200), m0 + s(20));
        assert!(jump.is_some_and(|j| j.whole_days() >= 199), "{jump:?}");
        assert!(!w.steady(m0 + s(20)));
        assert!(w.observe(t0 + s(35), m0 + s(35)).is_some(), "and back");
        assert!(!w.steady(m0 + s(35) + CLOCK_STEADY - s(1)));
        assert!(w.steady(m0 + s(35) + CLOCK_STEADY));
        // NTP's small steps are not jumps.
        assert_eq!(w.observe(t0 + s(100) + s(2), m0 + s(100)), None);
    }
}
