//! The hand-out: due rows claimed into the free slots of the job channel (or one probe, or
//! one attempt alone, while the endpoint is failing), each checked against the rules before
//! it becomes a `Job`; and claimed rows given back when they cannot be sent.

use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use time::OffsetDateTime;

use super::endpoint::Pause;
use super::judge;
use super::{Mode, Owner};
use crate::layout::Show;
use crate::store::{in_upload_order, ClaimOrder, Claimed};
use crate::timestamp::Timestamp;
use crate::upload::{Item, Job};

impl Owner {
    /// Whether `dispatch` could hand out ordinary jobs now (not a probe): the next due row
    /// only matters then. While it cannot, reports wake the loop.
    pub(super) fn can_claim(&self) -> bool {
        let Some(tx) = &self.jobs_tx else {
            return false;
        };
        if self.claims_wait() || self.endpoint.is_down() || self.endpoint.next_wake().is_some() {
            return false;
        }
        if self.gate.failing() {
            return self.solo_in_flight.is_none();
        }
        self.refill(tx.len()) > 0
    }

    /// Whether a row of the ledger may be due at `now`: something made one due since the
    /// last claim came back short, or the next due time has come.
    pub(super) fn rows_due(&self, now: OffsetDateTime) -> bool {
        self.maybe_due || self.next_due.is_some_and(|t| t <= now)
    }

    /// The order of `upload.order` among due files.
    pub(super) fn file_order(&self) -> ClaimOrder {
        if self.policy.newest_first {
            ClaimOrder::NewestFile
        } else {
            ClaimOrder::OldestFile
        }
    }

    /// How many rows a claim may take with `queued` jobs in the channel: none while it is
    /// more than half full, else the free slots, in whole quarters of the channel. At a
    /// busy time a claim (a transaction, rows and indexes written) then takes half a
    /// channel of rows or more, not one per report, and the workers still have half a
    /// channel queued meanwhile. Whole quarters: PostgreSQL plans a claim once per limit
    /// and session (`claim_due`), three plans instead of one for every free count up to
    /// the channel (at 64 workers, 257 plans, 18 MB of one backend's memory).
    pub(super) fn refill(&self, queued: usize) -> usize {
        if queued > self.capacity / 2 {
            return 0;
        }
        let free = self.capacity.saturating_sub(queued);
        let quarter = (self.capacity / 4).max(1);
        free / quarter * quarter
    }

    /// Claims due rows into free job slots (or one probe while the endpoint is down), checks
    /// each against the rules before a worker may open it, and hands them out.
    pub(super) fn dispatch(&mut self) {
        if self.jobs_tx.is_none() || self.claims_wait() {
            return;
        }
        if !self.not_given_back.is_empty() {
            self.unclaim(Vec::new());
            if !self.not_given_back.is_empty() {
                return;
            }
        }
        let now_i = Instant::now();
        match self.endpoint.paused(now_i) {
            Pause::Paused => return,
            Pause::JustEnded => self.maybe_due = true,
            Pause::No => {}
        }
        let probe = self.endpoint.is_down();
        let solo = probe || self.gate.failing();
        let free = if probe {
            if !self.endpoint.may_probe(now_i) || self.solo_in_flight.is_some() {
                return;
            }
            1
        } else if solo {
            // The last request failed for endpoint reasons: one at a time until one gets
            // an answer (or an outage is declared). Other jobs still out do not hold it back:
            // one may be stuck for good.
            if self.solo_in_flight.is_some() {
                return;
            }
            1
        } else {
            self.refill(self.jobs_tx.as_ref().map_or(0, Sender::len))
        };
        if free == 0 {
            return;
        }
        let now_t = self.clock.now_utc();
        if !self.claimed_ahead.is_empty() {
            let mut ahead = std::mem::take(&mut self.claimed_ahead);
            let due_meanwhile = self.rows_due(now_t);
            if solo || due_meanwhile {
                // One at a time now, or a row that waited longer goes first: an ordinary
                // claim takes them again, in order.
                let ids: Vec<i64> = ahead.iter().map(|c| c.id).collect();
                self.give_back(&ids);
            } else {
                // Written by one record or several: in upload order, as one claim.
                in_upload_order(&mut ahead, self.file_order());
                if ahead.len() > free {
                    let rest: Vec<i64> = ahead.drain(free..).map(|c| c.id).collect();
                    self.give_back(&rest);
                }
                return self.hand_out(ahead, false, false, now_t);
            }
        }
        // New files held for the group commit are most likely due: a claim now records
        // them first (`claim_with_held`), in the transaction the window's end would make.
        let due = self.rows_due(now_t);
        if !due && self.unrecorded.is_empty() {
            return;
        }
        let now = Timestamp::new(now_t);
        let far = self.far(now_t);
        let claimed = match &mut self.mode {
            Mode::Daemon => {
                let order = if probe {
                    ClaimOrder::LongestWaiting
                } else {
                    self.file_order()
                };
                match self.claim_with_held(now, far, free, order) {
                    Some(claimed) => claimed,
                    // Written apart after a refusal: rows their record wrote claimed go
                    // first, from the top (once: nothing is held any more).
                    None if !self.claimed_ahead.is_empty() => return self.dispatch(),
                    // Results written apart just now may have failed: claims wait then.
                    // (Files recorded apart may have made rows due.)
                    None if self.claims_wait() || !(due || self.maybe_due) => return,
                    None => self.store.claim_due(now, far, free, order),
                }
            }
            Mode::Oneshot { queue } => {
                let ids: Vec<i64> = (0..free).map_while(|_| queue.pop_front()).collect();
                let claimed = self.store.claim_ids(&ids, now);
                if claimed.is_err() {
                    // Not claimed: they stay this scan's to try.
                    for id in ids.into_iter().rev() {
                        queue.push_front(id);
                    }
                }
                claimed
            }
        };
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => return self.trouble(e),
        };
        if claimed.len() < free && matches!(self.mode, Mode::Daemon) {
            self.maybe_due = false;
            self.next_due = match self.store.next_due() {
                // Due rows the claim did not take (another host's meanwhile, say) are
                // looked at again in a second, not in a loop; one due beyond the horizon
                // was set before the clock was stepped back, and the claim takes it.
                Ok(t) => t.map(Timestamp::utc).map(|t| {
                    let soon = now_t + Duration::from_secs(1);
                    if t <= now_t || t > now_t + self.policy.horizon() {
                        soon
                    } else {
                        t
                    }
                }),
                // Not a return: the rows just claimed are `uploading` in the ledger and
                // must become jobs, or they would stay so, unsent, until a restart. When
                // to look again is not known: in a second.
                Err(e) => {
                    self.trouble(e);
                    Some(now_t + Duration::from_secs(1))
                }
            };
        }
        if probe {
            if claimed.is_empty() {
                // Nothing due to probe with: the probe goes when a row is due (`sleep_for`).
                return;
            }
            self.endpoint.probe_started();
        }
        self.hand_out(claimed, probe, solo, now_t);
    }

    /// Checks each claimed row against the rules in force and hands it to the workers as a
    /// job; a row the rules refuse is settled without a request.
    fn hand_out(&mut self, claimed: Vec<Claimed>, probe: bool, solo: bool, now_t: OffsetDateTime) {
        let mut refused = Vec::new();
        for c in claimed {
            let target = match self.policy.target(&c) {
                Ok(t) => t,
                Err(r) => {
                    refused.push((judge::refuse(&c, &r, now_t), c.path));
                    continue;
                }
            };
            if probe {
                log::debug!("probing the endpoint with {}", c.path.shown());
            }
            if solo {
                self.solo_in_flight = Some(c.id);
            }
            // The worker gets what it needs to send; the report brings back the row's id
            // and attempt.
            let job = Job {
                id: c.id,
                attempt: c.attempt,
                file: Item {
                    path: c.path.clone(),
                    folder: c.folder.clone(),
                    date: c.date.clone(),
                    filename: c.filename.clone(),
                    version: c.version,
                },
                incomplete_since: c.incomplete_since,
                target,
                probe,
                solo,
                rules: self.gate.rules(),
                settings: self.settings.clone(),
            };
            self.in_flight.insert(c.id, c);
            // Never blocks: only this thread sends, and it sent no more than the free slots.
            let Some(tx) = &self.jobs_tx else { return };
            if tx.send(job).is_err() {
                // Every worker is gone: that is a dead thread, which the supervisor sees.
                return;
            }
        }
        if !refused.is_empty() {
            if probe && self.solo_in_flight.is_none() {
                // Refused rows never reached the endpoint: the probe goes with another.
                self.endpoint.probe_abandoned();
            }
            let done = refused
                .into_iter()
                .map(|(v, path)| self.carry_out(v, &path))
                .collect();
            self.save(done);
        }
    }

    /// Jobs claimed but not yet picked up by a worker go back to `pending` (an outage or a
    /// pause began: sending them would only make failed requests), and so do rows written
    /// claimed and not yet handed out.
    pub(super) fn take_back_queued(&mut self) {
        let jobs: Vec<Job> = self.jobs_rx.try_iter().collect();
        if jobs.iter().any(|j| j.probe) {
            // The probe never went out (a reload took it back): the next may go at once,
            // as when its row is refused. Left in flight, it would hold every later probe
            // back, and the outage would never end.
            self.endpoint.probe_abandoned();
        }
        let mut ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        ids.extend(self.claimed_ahead.drain(..).map(|c| c.id));
        if !ids.is_empty() {
            self.give_back(&ids);
        }
    }

    /// Claimed rows that were never sent go back to `pending`, as if never claimed.
    pub(super) fn give_back(&mut self, ids: &[i64]) {
        for id in ids {
            self.in_flight.remove(id);
            if self.solo_in_flight == Some(*id) {
                self.solo_in_flight = None;
            }
        }
        if let Mode::Oneshot { queue } = &mut self.mode {
            for id in ids.iter().rev() {
                queue.push_front(*id);
            }
        }
        self.unclaim(ids.to_vec());
    }

    /// Puts claimed rows back to `pending` in the ledger. When the database refuses (locked
    /// past its busy timeout, full), they are kept and tried again before the next claim:
    /// dropped, they would stay `uploading` with no job, and since their version does not
    /// change no rescan would bring them back before a restart.
    pub(super) fn unclaim(&mut self, mut ids: Vec<i64>) {
        ids.append(&mut self.not_given_back);
        if ids.is_empty() {
            return;
        }
        let now = self.now();
        match self.store.unclaim(&ids, now) {
            Ok(()) => self.maybe_due = true,
            Err(e) => {
                self.not_given_back = ids;
                self.trouble(e);
            }
        }
    }
}
