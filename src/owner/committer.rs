//! Results committed beside the owner's loop: a second session of the ledger, on a thread of
//! its own (`db-results`), saves one batch of results at a time while the owner goes on
//! claiming and recording on its own session.
//!
//! Why: on PostgreSQL a batch of results is a round trip and the server's commit, and the
//! owner waited for each while its job channel ran dry. With the server 1 ms away (a round
//! trip), this made 1.3× the files per second (BENCHMARKS.md, "Results on a second
//! session"). SQLite has one writer at a time: the daemon uses this only on PostgreSQL.
//!
//! The thread decides nothing: the owner settles each answer as it settled its own call
//! (`Owner::settle`). One batch is out at a time; results that come meanwhile wait for its
//! answer and go next. A row cannot be in two batches: it is claimed again only once a
//! commit made it `pending`, and while a batch that makes rows `pending` is out, the owner
//! claims nothing (`Owner::claims_wait`). The two sessions never wait on each other in a
//! cycle, as two hosts of one scope do not: results touch the rows this process holds
//! `uploading`, claims the `pending` ones (`SKIP LOCKED`), and every writer locks its rows
//! in id order.

use std::thread;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::error::Result;
use crate::store::{Completion, Ledger};
use crate::timestamp::Timestamp;

/// A batch handed back with what its commit said.
pub struct Answer {
    pub batch: Vec<Completion>,
    pub result: Result<Vec<i64>>,
}

/// The thread ended without answering (it panicked: only where panics unwind, as in
/// tests; a release build aborts the process on a panic).
#[derive(Debug)]
pub struct Gone;

/// The owner's end of the committing thread.
pub struct Committer {
    batches: Sender<(Vec<Completion>, Timestamp)>,
    answers: Receiver<Answer>,
    out: Option<Out>,
}

/// The batch out, until its answer is taken.
struct Out {
    since: Instant,
    /// Whether its commit makes a row `pending`, claimable again.
    leaves_pending: bool,
}

impl Committer {
    /// Starts the thread on `ledger`, a session of its own.
    pub fn spawn(mut ledger: Box<dyn Ledger>) -> std::io::Result<Committer> {
        Committer::start(move |todo, done| {
            for (batch, now) in todo {
                let result = ledger.complete(&batch, now);
                if done.send(Answer { batch, result }).is_err() {
                    break;
                }
            }
        })
    }

    /// Starts the thread on `body`, which takes batches from the first channel and answers
    /// each on the second (tests make it die, or answer an error).
    pub(super) fn start(
        body: impl FnOnce(Receiver<(Vec<Completion>, Timestamp)>, Sender<Answer>) + Send + 'static,
    ) -> std::io::Result<Committer> {
        let (batches, todo) = bounded::<(Vec<Completion>, Timestamp)>(1);
        let (done, answers) = bounded::<Answer>(1);
        thread::Builder::new()
            .name("db-results".into())
            .spawn(move || body(todo, done))?;
        Ok(Committer {
            batches,
            answers,
            out: None,
        })
    }

    /// Since when the batch out has been out, if one is.
    pub fn out_since(&self) -> Option<Instant> {
        self.out.as_ref().map(|o| o.since)
    }

    /// Whether the batch out makes rows `pending` once committed.
    pub fn out_leaves_pending(&self) -> bool {
        self.out.as_ref().is_some_and(|o| o.leaves_pending)
    }

    /// Hands `batch` to the thread; gives it back if the thread is gone.
    pub fn send(
        &mut self,
        batch: Vec<Completion>,
        now: Timestamp,
        leaves_pending: bool,
    ) -> std::result::Result<(), Vec<Completion>> {
        debug_assert!(self.out.is_none(), "one batch out at a time");
        match self.batches.send((batch, now)) {
            Ok(()) => {
                self.out = Some(Out {
                    since: Instant::now(),
                    leaves_pending,
                });
                Ok(())
            }
            Err(e) => Err(e.into_inner().0),
        }
    }

    /// The answer, if it came; `Err(Gone)` if the thread ended without one.
    pub fn try_answer(&mut self) -> std::result::Result<Option<Answer>, Gone> {
        match self.answers.try_recv() {
            Ok(a) => {
                self.out = None;
                Ok(Some(a))
            }
            Err(crossbeam_channel::TryRecvError::Empty) => Ok(None),
            Err(crossbeam_channel::TryRecvError::Disconnected) => Err(Gone),
        }
    }

    /// The receiver the owner's loop selects on.
    pub fn answers(&self) -> Receiver<Answer> {
        self.answers.clone()
    }

    /// The loop received an answer on `answers`: no batch is out now.
    pub fn took(&mut self) {
        self.out = None;
    }

    /// Waits for the answer to the batch out, if one is out.
    pub fn wait(&mut self) -> std::result::Result<Option<Answer>, Gone> {
        if self.out.take().is_none() {
            return Ok(None);
        }
        self.answers.recv().map(Some).map_err(|_| Gone)
    }
}
