//! What the workers report: each `Report` judged (the endpoint's health first, then the
//! row's next state), logged, counted and alerted on, and its completion saved, or held
//! while the database is in trouble.

use std::time::{Duration, Instant};

use super::committer::{Answer, Gone};
use super::endpoint::Change;
use super::judge::{self, Facts, Health, Tally, Verdict};
use super::{AlertEvent, Mode, Owner, GROUP_COMMIT, GROUP_COMMIT_MAX};
use crate::clock::human_duration;
use crate::error::Result;
use crate::layout::Show;
use crate::store::{Claimed, Completion, Disposition};
use crate::upload::{Job, Report};
use crate::work::Outcome;

/// A file whose attempts fail this many times in a row while the endpoint is not down is
/// reported (one WARN, an alert): the endpoint cannot take it, the others go on.
const REPORT_RETRYING_AT: i64 = 5;

impl Owner {
    pub(super) fn on_reports(&mut self, batch: Vec<Report>) {
        let mut judged = 0;
        let mut handed_back = Vec::new();
        for r in batch {
            // A row made `pending` by a new version while this job was out may have been
            // claimed again: then the entry is that later job's, still out.
            let latest = self
                .in_flight
                .get(&r.job.id)
                .is_some_and(|c| c.attempt == r.job.attempt && c.version == r.job.file.version);
            if latest {
                self.in_flight.remove(&r.job.id);
            }
            if r.job.solo && self.solo_in_flight == Some(r.job.id) {
                self.solo_in_flight = None;
            }
            if matches!(r.outcome, Outcome::NotStarted) {
                if r.job.probe {
                    // A probe handed back unsent (claimed under rules a reload replaced)
                    // found nothing out: without this the outage would wait for its
                    // answer forever, and no probe would ever go again.
                    self.endpoint.probe_abandoned();
                }
                if latest {
                    handed_back.push(r.job.id);
                }
                continue;
            }
            if let Some(note) = &r.note {
                log::warn!("{note}");
            }
            let file = claimed(&r.job);
            let verdict = self.decide(&file, &r);
            let completion = self.carry_out(verdict, &file.path);
            // Among those held at once, not in a list of this batch: a later report of the
            // batch that ends an outage commits it before the outage's backoffs are
            // released (`endpoint_up`), or it would keep its backoff.
            self.unsaved.push(completion);
            judged += 1;
        }
        if judged > 0 {
            self.hold_or_commit();
        }
        if !handed_back.is_empty() {
            self.give_back(&handed_back);
        }
    }

    /// The endpoint's side of a report first (its state and the probe gap), then the row's.
    fn decide(&mut self, file: &Claimed, r: &Report) -> Verdict {
        let now_i = Instant::now();
        let now = self.clock.now_utc();
        let probe = r.job.probe;
        match judge::health(&r.outcome) {
            Health::Answered => {
                if let Some(Change::Up { down_for }) = self.endpoint.answered(now_i) {
                    self.endpoint_up(down_for);
                }
            }
            Health::Failing(error) => {
                let change = self.endpoint.failed(
                    file.id,
                    &error,
                    probe,
                    now_i,
                    now,
                    self.policy.initial,
                    self.policy.max,
                );
                if let Some(Change::Down {
                    failures,
                    probe_wait,
                }) = change
                {
                    self.endpoint_down(&error, failures, probe_wait);
                }
            }
            Health::Silent => {}
        }
        if probe {
            // Every probe paces the next, whatever it found.
            self.endpoint.probe_ended(now_i);
        }
        let facts = Facts {
            file,
            started_at: r.started_at,
            duration: r.duration,
            probe,
            max_attempts: self.policy.max_attempts,
            backoff: self.policy.backoff(file.attempt, &mut self.rng),
            retry_max: self.policy.max,
            probe_gap: self.endpoint.probe_gap(),
            settle: self.policy.settle,
            now,
        };
        let verdict = judge::judge(&facts, &r.outcome);
        if let Some(pause) = verdict.pause {
            log::warn!(
                "endpoint answered {} with Retry-After {}: pausing all uploads",
                verdict.completion.http_status.unwrap_or(0),
                human_duration(pause)
            );
            self.endpoint.pause(now_i + pause);
            self.take_back_queued();
        }
        verdict
    }

    /// Logs, counts and alerts what a verdict about `path` says; its completion is what
    /// gets saved.
    pub(super) fn carry_out(&mut self, v: Verdict, path: &std::path::Path) -> Completion {
        let c = v.completion;
        if let Some((level, line)) = v.log {
            // During an outage the probes' retries would be a line each: the WARN that it is
            // down and the INFO that it is back say it all.
            let level = if v.tally == Tally::Retry && self.endpoint.is_down() {
                log::Level::Debug
            } else if level == log::Level::Info {
                self.file_lines
            } else {
                level
            };
            log::log!(level, "{line}");
        }
        self.alert_file(&c, path);
        match v.tally {
            Tally::Uploaded => {
                self.stats.uploaded += 1;
                self.counters.success += 1;
                self.counters.uploaded_bytes += c.version.size;
                self.uploaded_today.1 += 1;
            }
            Tally::Retry => {
                self.stats.retry += 1;
                self.counters.retry += 1;
            }
            Tally::Failed => {
                self.stats.failed += 1;
                self.counters.failed += 1;
            }
            Tally::Skipped => self.stats.skipped += 1,
            Tally::NotReady => self.stats.not_ready += 1,
        }
        if c.result.is_some() {
            self.counters
                .observe(Duration::from_millis(c.duration_ms.max(0) as u64));
        }
        c
    }

    /// Alerts about one file's completion: failed for good, or failing again and again
    /// while the endpoint is not down (a file the endpoint cannot take).
    fn alert_file(&mut self, c: &Completion, path: &std::path::Path) {
        match &c.disposition {
            Disposition::Failed => self.alerts.send(AlertEvent::FileFailed {
                path: path.shown().to_string(),
                error: c.error.clone().unwrap_or_default(),
            }),
            Disposition::Retry { counted: true, .. }
                if c.attempt == REPORT_RETRYING_AT && !self.endpoint.is_down() =>
            {
                let error = c.error.clone().unwrap_or_default();
                log::warn!(
                    "{}: {} attempts failed in a row ({error}) while the endpoint takes other files: still retrying it with backoff, the others are not held back",
                    path.shown(),
                    c.attempt
                );
                self.alerts.send(AlertEvent::FileRetrying {
                    path: path.shown().to_string(),
                    attempts: c.attempt,
                    error,
                });
            }
            _ => {}
        }
    }

    /// Saves completions: in the daemon's normal run held for a group commit (committed by
    /// `commit_held` with those that come meanwhile), else now; held while the database
    /// is in trouble.
    pub(super) fn save(&mut self, completions: Vec<Completion>) {
        self.unsaved.extend(completions);
        self.hold_or_commit();
    }

    /// The completions in `unsaved`: held for the group commit when it may hold them, else
    /// committed now.
    fn hold_or_commit(&mut self) {
        if !self.unsaved.is_empty() && self.may_hold(self.unsaved.len()) {
            self.hold();
            return;
        }
        self.commit_now();
    }

    /// Whether a group commit may hold `n` files or results: in the daemon's normal run.
    /// Not in a one-shot scan (its summary counts what was saved), nor once shutdown began
    /// (the job channel is closed), nor while the database is in trouble (`housekeeping`
    /// retries what it holds then).
    pub(super) fn may_hold(&self, n: usize) -> bool {
        matches!(self.mode, Mode::Daemon)
            && self.jobs_tx.is_some()
            && self.db_trouble.is_none()
            && n < GROUP_COMMIT_MAX
    }

    /// Starts the group commit's window, unless something held already started it.
    pub(super) fn hold(&mut self) {
        self.held_since.get_or_insert_with(Instant::now);
    }

    /// Commits what is held for the group commit once the oldest has waited `GROUP_COMMIT`:
    /// new files and results in one transaction where the ledger can (`turn`); else new
    /// files here, results on the committer's connection when there is one.
    pub(super) fn commit_held(&mut self) {
        if self
            .held_since
            .is_some_and(|since| since.elapsed() >= GROUP_COMMIT)
        {
            self.held_since = None;
            if !self.commit_held_together() {
                self.record_held();
                self.send_unsaved();
            }
        }
    }

    /// Commits what is held, and waits for it: new files first (a result never refers to
    /// them, but a claim after this should see them), then results, after the batch out on
    /// the committer, if any. For what must follow the commit (the end of an outage, a
    /// re-check, shutdown).
    pub(super) fn commit_now(&mut self) {
        self.held_since = None;
        self.record_held();
        self.flush_unsaved();
    }

    /// Hands the results held to the committer when it has no batch out (one out takes them
    /// next: `on_committed`); without a committer, or through database trouble, commits
    /// them here.
    fn send_unsaved(&mut self) {
        if self.unsaved.is_empty() {
            return;
        }
        let now = self.now();
        match &mut self.committer {
            Some(c) if self.db_trouble.is_none() => {
                if c.out_since().is_some() {
                    return;
                }
                let batch = std::mem::take(&mut self.unsaved);
                let leaves = batch.iter().any(leaves_pending);
                if let Err(batch) = c.send(batch, now, leaves) {
                    self.keep_unsaved(batch);
                    self.committer_gone();
                }
            }
            _ => self.flush_unsaved(),
        }
    }

    /// Commits the results held on the owner's session, once the batch out on the
    /// committer (older than they are) has its answer: what follows, releasing the
    /// outage's backoffs or resetting interrupted uploads at shutdown, must see them all.
    pub(super) fn flush_unsaved(&mut self) {
        self.await_committer();
        if self.unsaved.is_empty() {
            return;
        }
        let now = self.now();
        let batch = std::mem::take(&mut self.unsaved);
        let result = self.store.complete(&batch, now);
        self.settle(batch, result, true);
    }

    /// Waits for the committer's batch out, if any, and settles its answer (a batch it
    /// could not save is back in `unsaved`, for the caller to commit).
    pub(super) fn await_committer(&mut self) {
        let Some(c) = &mut self.committer else {
            return;
        };
        match c.wait() {
            Ok(Some(answer)) => {
                self.beat();
                self.settle_answer(answer);
            }
            Ok(None) => {}
            Err(Gone) => self.committer_gone(),
        }
    }

    /// The committer answered: its batch settled as the owner's own call would have been;
    /// one it could not save is committed here at once, else the results that came
    /// meanwhile go, unless a group commit holds them still.
    pub(super) fn on_committed(&mut self, answer: Answer) {
        if let Some(c) = &mut self.committer {
            c.took();
        }
        // Its wait aged the beat (`beat`); what follows is the owner's own.
        self.beat();
        if !self.settle_answer(answer) {
            self.flush_unsaved();
        } else if self.held_since.is_none() && self.db_trouble.is_none() {
            self.send_unsaved();
        }
    }

    /// Settles the committer's answer; false when its session failed (lost, and not yet
    /// reconnected: each session waits out its own backoff). The owner's may not have: the
    /// batch goes back to `unsaved`, for the owner to commit at once, and only a failure
    /// there is database trouble (its WARN, its retries). No claim was made while such a
    /// batch was out if it makes rows `pending` (`claims_wait`), so a commit that took
    /// effect with its answer lost is found done and not applied to a newer claim. A
    /// refused result or a damaged database is settled as the owner's own call would be.
    fn settle_answer(&mut self, answer: Answer) -> bool {
        match answer.result {
            Err(e) if !e.is_item_problem() && !e.is_corrupt() => {
                log::debug!(
                    "saving results on the second session failed: {e}; saving them on the owner's"
                );
                self.keep_unsaved(answer.batch);
                false
            }
            result => {
                self.settle(answer.batch, result, false);
                true
            }
        }
    }

    /// The committer's thread ended without an answer (a panic, where panics unwind): as
    /// with any thread of the daemon that dies, it stops (exit 1, systemd restarts it). The
    /// batch it held stays `uploading` in the ledger: the next start sends those files
    /// again, with the same Idempotency-Key.
    pub(super) fn committer_gone(&mut self) {
        self.committer = None;
        if self.fatal.is_none() {
            self.fatal = Some(crate::error::Error::Other(
                "thread db-results (saves upload results) ended unexpectedly: stopping".into(),
            ));
        }
    }

    /// Results whose commit failed go back ahead of those that came meanwhile; claims wait
    /// until they are committed (`unsure`).
    pub(super) fn keep_unsaved(&mut self, mut batch: Vec<Completion>) {
        batch.append(&mut self.unsaved);
        self.unsaved = batch;
        self.unsure = true;
    }

    /// Whether claims wait: while results are kept through database trouble, while results
    /// whose commit failed are not yet committed (`unsure`), and for the committer's batch
    /// out:
    /// - while it makes rows `pending`: were its commit to take effect with its answer
    ///   lost (the session gone after COMMIT), such a row could be claimed again and sent,
    ///   and the batch, tried again on the owner's session, would apply the old result to
    ///   the new claim, which would then be sent a third time;
    /// - while two channels' worth of results wait behind it: the workers would otherwise
    ///   go on uploading with nothing saved while its session hangs (up to the statement
    ///   timeout), each such result sent again after a crash.
    pub(super) fn claims_wait(&self) -> bool {
        (self.db_trouble.is_some() && !self.unsaved.is_empty())
            || self.unsure
            || self.committer.as_ref().is_some_and(|c| {
                c.out_leaves_pending()
                    || (c.out_since().is_some() && self.unsaved.len() >= 2 * self.capacity)
            })
    }

    /// What a commit of `batch` said, carried out: rows gone are logged, rows left pending
    /// make a claim worth its while, a result the database refuses is dropped (the others
    /// saved one by one), and trouble keeps them all to try again. `own`: on the owner's
    /// session, whose success alone ends database trouble (the committer's says nothing of
    /// the owner's session).
    pub(super) fn settle(&mut self, batch: Vec<Completion>, result: Result<Vec<i64>>, own: bool) {
        match result {
            Ok(gone) => {
                if !gone.is_empty() {
                    log::warn!(
                        "{} result(s) dropped: their rows were removed meanwhile (pruned or deleted by hand); ids {:?}",
                        gone.len(),
                        &gone[..gone.len().min(10)]
                    );
                }
                // Only a row left pending can be due; rows that are done leave nothing
                // to claim, and a claim after each batch of them would find nothing (a
                // transaction, and a look for the next due time, per group commit). After
                // database trouble, what was not claimed meanwhile may be.
                if self.db_trouble.is_some() || batch.iter().any(leaves_pending) {
                    self.maybe_due = true;
                }
                // Results whose commit failed go first in the next batch, and nothing else
                // is out meanwhile: this was it.
                self.unsure = false;
                if own {
                    self.recovered();
                }
            }
            // One completion the database refuses (a constraint it breaks) must not hold the
            // others, nor every later result, in memory: save them one by one and drop it.
            Err(e) if e.is_item_problem() && batch.len() > 1 => {
                let now = self.now();
                let mut kept = Vec::new();
                for c in batch {
                    match self.store.complete(std::slice::from_ref(&c), now) {
                        Ok(_) => {}
                        Err(e) if e.is_item_problem() => log::warn!(
                            "the result of file id {} was dropped: the database refuses it: {e}",
                            c.file_id
                        ),
                        Err(e) => {
                            kept.push(c);
                            self.trouble(e);
                        }
                    }
                }
                if kept.is_empty() {
                    self.maybe_due = true;
                    self.unsure = false;
                    self.recovered();
                } else {
                    self.keep_unsaved(kept);
                }
            }
            Err(e) if e.is_item_problem() => {
                if let Some(c) = batch.first() {
                    log::warn!(
                        "the result of file id {} was dropped: the database refuses it: {e}",
                        c.file_id
                    );
                }
            }
            Err(e) => {
                self.keep_unsaved(batch);
                self.trouble(e);
            }
        }
    }

    fn endpoint_down(&mut self, error: &str, failures: u32, probe_wait: Duration) {
        self.alerts.send(AlertEvent::EndpointDown {
            error: error.to_owned(),
        });
        self.live.queue().endpoint_down = Some((Duration::ZERO, error.to_owned()));
        log::warn!(
            "endpoint {} is down ({failures} consecutive failures from more than one file, last: {error}): pausing uploads, one probe every {} or longer",
            self.settings.endpoint.redacted(),
            human_duration(probe_wait)
        );
        self.take_back_queued();
        let now = self.now();
        let _ = self.store.set_state(
            &[
                ("endpoint", "down".into()),
                ("endpoint_down_since", now.to_string()),
                ("endpoint_error", error.to_owned()),
            ],
            now,
        );
    }

    fn endpoint_up(&mut self, down_for: Duration) {
        // Results held for the group commit first: a retry among them saved after the
        // release below would keep the backoff of the outage.
        self.commit_now();
        self.alerts.send(AlertEvent::EndpointUp { down_for });
        self.live.queue().endpoint_down = None;
        log::info!(
            "endpoint is back after {}: resuming uploads",
            human_duration(down_for)
        );
        let now = self.now();
        match self.store.release_backoff(now) {
            Ok(n) if n > 0 => {
                log::info!("{n} file(s) that failed during the outage are due now")
            }
            Ok(_) => {}
            Err(e) => self.trouble(e),
        }
        let _ = self.store.set_state(
            &[
                ("endpoint", "up".into()),
                ("endpoint_down_since", String::new()),
            ],
            now,
        );
        self.maybe_due = true;
    }
}

/// The claimed row a job was made from (`dispatch`), as the judge sees it: taken from the
/// job, not from `in_flight`, which holds only the latest claim of a row.
fn claimed(job: &Job) -> Claimed {
    Claimed {
        id: job.id,
        path: job.file.path.clone(),
        folder: job.file.folder.clone(),
        date: job.file.date.clone(),
        filename: job.file.filename.clone(),
        version: job.file.version,
        attempt: job.attempt,
        incomplete_since: job.incomplete_since,
    }
}

/// Whether a completion leaves its row pending, to be claimed again.
fn leaves_pending(c: &Completion) -> bool {
    match c.disposition {
        Disposition::Retry { .. } | Disposition::NotReady { .. } | Disposition::Changed { .. } => {
            true
        }
        Disposition::Uploaded | Disposition::Failed | Disposition::Skipped { .. } => false,
    }
}
