//! What the watcher and the scanner tell the owner (`Input`): new files recorded in the
//! ledger, a date folder's listing compared with it, a permission change, a rescan's end.

use std::os::unix::ffi::OsStrExt;

use super::judge::settle_time;
use super::{Input, Mode, Owner};
use crate::clock::human_duration;
use crate::layout::{display_name, EntryType, Seen, Version};
use crate::store::{ClaimOrder, Claimed, RecordStats};
use crate::timestamp::Timestamp;
use crate::work::Observation;

impl Owner {
    /// Takes one message from the watcher or the scanner (also used by the one-shot scan).
    pub fn ingest(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Observed(batch) => {
                self.unrecorded.extend(batch);
                // Held only while jobs wait in the channel: a new file then waits for a
                // worker anyway, and files arriving together share one transaction (on
                // SQLite, the next claim's: `claim_with_held`). With none waiting it could go
                // now, and is recorded now: held, the group commit's window was in every
                // file's latency at a trickle (p50 1.7 ms became 7 ms at 40 files/s).
                // On SQLite also while every worker has a job and rows are due: then the
                // claim `dispatch` makes in this same turn records it (in upload order
                // after the due rows) in its own transaction, where a record alone is a
                // transaction more (it cannot write it claimed: older rows are due).
                let queued = self.jobs_tx.as_ref().is_some_and(|tx| !tx.is_empty());
                let backlog = self.in_flight.len() >= self.workers
                    && self.committer.is_none()
                    && self.store.writes_turns()
                    && self.rows_due(self.clock.now_utc());
                if (queued || backlog) && self.may_hold(self.unrecorded.len()) {
                    self.hold();
                } else if !self.commit_held_together() {
                    // (Results held for the group commit go with it where they can.)
                    self.record_held();
                }
            }
            Input::ListingStarted { folder, date } => {
                self.listings.insert((folder, date), now);
            }
            Input::Listing {
                folder,
                date,
                entries,
            } => {
                // What inotify saw first is recorded first: the listing is compared with
                // the ledger, and a file of both is then one row, recorded once.
                self.record_held();
                // A row recorded or changed since the listing began is newer than what the
                // listing saw of it: a file rewritten while the folder was being listed was
                // set back to the version listed, and its new version then sent again.
                // (Up to now: a change stamped later came before a step back of the clock.)
                let during = self
                    .listings
                    .remove(&(folder.clone(), date.clone()))
                    .map(|since| (since, self.now()));
                // Borrowed from `entries`, in their order: `known` lines up with them.
                let listed: Vec<(&[u8], Version)> = entries
                    .iter()
                    .filter(|s| s.entry == EntryType::Regular)
                    .filter_map(|s| Some((s.path.as_os_str().as_bytes(), s.version?)))
                    .collect();
                let known = match self.store.known_among(&folder, &date, &listed, during) {
                    Ok(k) => k,
                    Err(e) => return self.trouble(e),
                };
                let mut known = known.into_iter();
                let now_t = self.clock.now_utc();
                let mut batch = Vec::new();
                for s in entries {
                    if s.entry != EntryType::Regular {
                        self.warn_hostile(&s);
                        continue;
                    }
                    let Some(version) = s.version else { continue };
                    if known.next() == Some(true) {
                        continue;
                    }
                    batch.push(Observation {
                        ready_at: Timestamp::new(settle_time(
                            now_t,
                            version.mtime_ns,
                            self.policy.settle,
                        )),
                        path: s.path,
                        folder: folder.clone(),
                        date: date.clone(),
                        filename: s.location.name,
                        version,
                        via_event: false,
                    });
                }
                if !batch.is_empty() {
                    // Oldest first, as files arrive: row ids then follow the age the claim
                    // orders by, so a claim and its completions touch neighbouring rows and
                    // index entries (a few pages) rather than one page per row, which a
                    // listing in directory order (hash order on ext4) would cost.
                    batch.sort_by(|a, b| {
                        (a.version.mtime_ns, &a.filename).cmp(&(b.version.mtime_ns, &b.filename))
                    });
                    self.record(&batch, now);
                }
                // Files already recorded may be due: in a shared ledger another host may have
                // recorded them a moment ago (a claim that finds nothing costs microseconds).
                self.maybe_due = true;
            }
            Input::Attrib(path) => {
                // What is held for the group commit first: the file may be one of the new
                // files held, or the attempt that could not open it may be among the
                // results held, its row still `uploading`, which the re-check passes by.
                self.commit_now();
                match self.store.recheck(&path, now) {
                    Ok(true) => {
                        log::info!(
                            "{}: permissions changed, checking it again now",
                            display_name(path.as_os_str())
                        );
                        self.maybe_due = true;
                    }
                    Ok(false) => {}
                    Err(e) => self.trouble(e),
                }
            }
            Input::ScanFinished { files, took } => {
                log::debug!("rescan: {files} candidate(s) in {}", human_duration(took));
                // Starts whose listing never came (the folder could not be listed).
                self.listings.clear();
                let catch_up = self.last_scan.is_none();
                self.last_scan = Some((self.clock.now_utc(), took));
                self.live.rescan_done();
                let _ = self.store.set_state(
                    &[
                        ("last_scan_at", now.to_string()),
                        ("last_scan_ms", took.as_millis().to_string()),
                    ],
                    now,
                );
                if catch_up {
                    // The `ready:` line counted what the ledger held before this scan: say
                    // what it found, and the count now, so the log tells the whole story.
                    self.publish();
                    log::info!(
                        "catch-up scan: {files} candidate(s) in {}, {} newly recorded; {} pending",
                        human_duration(took),
                        self.stats.recorded,
                        self.live.queue().pending
                    );
                }
            }
        }
    }

    /// Records the new files held for the group commit.
    pub(super) fn record_held(&mut self) {
        if !self.unrecorded.is_empty() {
            let batch = std::mem::take(&mut self.unrecorded);
            let now = self.now();
            self.record(&batch, now);
        }
    }

    fn record(&mut self, batch: &[Observation], now: Timestamp) {
        let (room, order) = self.room_for_new();
        let far = self.far(self.clock.now_utc());
        match self.store.record_claiming(batch, now, far, room, order) {
            Ok((st, claimed)) => self.recorded(st, claimed),
            // Not lost: the next rescan finds these files again and records them.
            Err(e) => self.trouble(e),
        }
    }

    /// A record committed: `claimed`, the new rows it wrote claimed, go out with the next
    /// `dispatch`.
    pub(super) fn recorded(&mut self, st: RecordStats, claimed: Vec<Claimed>) {
        self.recovered();
        // Unchanged rows count too: in a shared ledger they may have just been recorded by
        // another host, and be due without this host knowing. New rows written claimed are
        // not due: they are this process's already.
        if st.new - claimed.len() + st.new_versions + st.made_due + st.unchanged > 0 {
            self.maybe_due = true;
        }
        self.claimed_ahead.extend(claimed);
        self.stats.recorded += st.new + st.new_versions;
        if st.new > 0 {
            log::debug!("recorded {} new file(s)", st.new);
        }
    }

    /// How many of the new files a record may write claimed, and in which order: as many
    /// as `dispatch` would claim next, but only when it would make an ordinary claim and
    /// no row of the ledger is due (the last claim came back short, nothing made a row due
    /// since, and the next due time is still ahead). Then the new files due now are the
    /// very rows that claim would take, and taking them at their record saves the row
    /// version and the transaction of the claim (`Ledger::record_claiming`). Otherwise
    /// none: a row waiting longer must go first.
    pub(super) fn room_for_new(&self) -> (usize, ClaimOrder) {
        let order = self.file_order();
        let Some(tx) = &self.jobs_tx else {
            return (0, order);
        };
        let nothing_due = !self.rows_due(self.clock.now_utc());
        let ordinary = matches!(self.mode, Mode::Daemon)
            && self.db_trouble.is_none()
            && !self.endpoint.is_down()
            && self.endpoint.next_wake().is_none()
            && !self.gate.failing()
            && self.solo_in_flight.is_none();
        if !(nothing_due && ordinary) {
            return (0, order);
        }
        let room = self.refill(tx.len());
        (room.saturating_sub(self.claimed_ahead.len()), order)
    }

    fn warn_hostile(&mut self, s: &Seen) {
        if self.warned_hostile.len() > 10_000 {
            self.warned_hostile.clear();
        }
        if self.warned_hostile.insert(s.path.clone()) {
            log::warn!(
                "{}: not a regular file ({:?}): ignored, never opened",
                display_name(s.path.as_os_str()),
                s.entry
            );
        }
    }
}
