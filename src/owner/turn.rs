//! One transaction for what a busy turn writes, where the ledger can (SQLite,
//! `Ledger::write_turn`): the new files and the results held for the group commit, and the
//! claim that follows them.
//!
//! Apart, they were up to three transactions a turn (a record, a completion, a claim), each
//! with its begin and its commit, each writing to the WAL the pages it touched, the
//! counters, the index pages and the header among them, which the others wrote again a
//! moment later. Now the claim `dispatch` makes takes the new files held with it (they are
//! recorded first, and take their place in upload order among the due rows), and the
//! window's end, or a new file recorded at once, writes new files and results together.
//! The owner does after each part what it did after its own call.
//!
//! A failure writes none of it: the results are kept (claims wait for them,
//! `keep_unsaved`), the new files are left to the next rescan, no row is claimed. A failure
//! of one part that need not be the others' (one file or result the database refuses, a
//! statement it cannot run: an index dropped by hand) would take them with it every time:
//! the parts are then written apart, each with its own way with its failure. While results
//! are kept through database trouble, new files are recorded apart (`commit_held_together`).

use super::Owner;
use crate::error::Result;
use crate::store::{ClaimOrder, Claimed, Turn, Turned};
use crate::timestamp::Timestamp;

impl Owner {
    /// The new files held written together with a claim of up to `claim` due rows in
    /// `order`: the claim `dispatch` was about to make alone. `None` when it was not made
    /// (no new file held, a ledger that writes no turn as one, the committer's results, or
    /// the record just written apart): the caller claims by itself. The new files are
    /// recorded `pending` and the claim takes them with the due rows, in upload order.
    /// Results held stay held for the window's end: claims come more often than the window
    /// ends, and each would write the results' pages (their table, its index, the rows'
    /// counters) again for a few results each (BENCHMARKS.md, "One transaction a turn").
    pub(super) fn claim_with_held(
        &mut self,
        now: Timestamp,
        far: Timestamp,
        claim: usize,
        order: ClaimOrder,
    ) -> Option<Result<Vec<Claimed>>> {
        if self.unrecorded.is_empty() {
            return None;
        }
        Some(
            self.write_held(now, far, 0, claim, order, false)?
                .map(|t| t.claimed),
        )
    }

    /// The new files and the results held, in one transaction: at the end of the group
    /// commit's window, or when a new file is recorded at once. False when they were not
    /// written so (only one kind held, a ledger that writes no turn as one, the committer's
    /// results), for the caller to write them apart.
    pub(super) fn commit_held_together(&mut self) -> bool {
        // Results kept through trouble are `housekeeping`'s to retry: a new file's record,
        // tied to them, would fail with them (and wait for the rescan) as long as they do.
        if self.unrecorded.is_empty()
            || self.unsaved.is_empty()
            || self.db_trouble.is_some()
            || self.unsure
        {
            return false;
        }
        let (room, order) = self.room_for_new();
        let now = self.now();
        let far = self.far(self.clock.now_utc());
        match self.write_held(now, far, room, 0, order, true) {
            Some(Ok(_)) => true,
            Some(Err(e)) => {
                self.trouble(e);
                true
            }
            // Not written together; after a refusal, already written apart (then what is
            // held is empty, and the caller's writes find nothing).
            None => false,
        }
    }

    /// Writes the new files held (`room` of them may be written claimed, as `record`
    /// does), the results held (`with_results`), and a claim of up to `claim` rows, in one
    /// transaction, and carries out what each part's own call would have: `Some(Ok)`, all
    /// of it committed;
    /// `Some(Err)`, none of it (the results kept, the new files left to the next rescan),
    /// for the caller's `trouble`; `None`, not written together (what is held stays held),
    /// or one part refused and everything written apart here.
    fn write_held(
        &mut self,
        now: Timestamp,
        far: Timestamp,
        room: usize,
        claim: usize,
        order: ClaimOrder,
        with_results: bool,
    ) -> Option<Result<Turned>> {
        if self.committer.is_some() {
            return None;
        }
        let turn = Turn {
            record: &self.unrecorded,
            record_claiming: room,
            complete: if with_results { &self.unsaved } else { &[] },
            claim,
            order,
        };
        let result = self.store.write_turn(turn, now, far)?;
        if with_results || self.unsaved.is_empty() {
            self.held_since = None;
        }
        if let Err(e) = &result {
            if e.is_item_problem() || e.is_statement_problem() {
                log::debug!("writing a turn at once: {e}; writing its parts apart");
                // Results first: should they fail, the record that follows writes no row
                // claimed (`room_for_new`, in trouble), which claims waiting for the
                // results would leave without a job.
                if with_results {
                    self.flush_unsaved();
                }
                self.record_held();
                return None;
            }
        }
        let records = std::mem::take(&mut self.unrecorded);
        let results = if with_results {
            std::mem::take(&mut self.unsaved)
        } else {
            Vec::new()
        };
        Some(match result {
            Ok(mut turned) => {
                if !records.is_empty() {
                    let claimed_new = std::mem::take(&mut turned.claimed_new);
                    self.recorded(turned.recorded, claimed_new);
                }
                if !results.is_empty() {
                    let gone = std::mem::take(&mut turned.gone);
                    self.settle(results, Ok(gone), true);
                }
                Ok(turned)
            }
            Err(e) => {
                if !results.is_empty() {
                    self.keep_unsaved(results);
                }
                Err(e)
            }
        })
    }
}
