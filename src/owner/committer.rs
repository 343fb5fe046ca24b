//! Results committed beside the owner's loop: a second connection to the ledger, on a
//! thread of its own (`db-results`), saves one batch of results at a time while the owner
//! goes on claiming and recording on its own connection.
//!
//! Why: on PostgreSQL a batch of results is a round trip and the server's commit, and the
//! owner waited for each while its job channel ran dry (it waited on the server about half
//! its time; BENCHMARKS.md, "Results on a second connection"). Over a link with a 1 ms
//! round trip this made 1.3× the files per second. SQLite has one writer at a time, so
//! the daemon uses it only with a PostgreSQL ledger.
//!
//! What does not change: a result is saved only once its commit returned, and the owner
//! settles the answer as it settled its own call (`Owner::settle`): errors, a refused
//! result, rows gone. One batch is out at a time; results that come meanwhile wait for its
//! answer and go next. A row cannot be in two batches: it is claimed again only after its
//! result's commit made it `pending`. The two connections never wait on each other in a
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

/// The owner's end of the committing thread.
pub struct Committer {
    batches: Sender<(Vec<Completion>, Timestamp)>,
    answers: Receiver<Answer>,
    /// A copy of the batch out and when it went, kept until its answer: if the thread dies
    /// without one, the owner saves it itself (its rows would otherwise stay `uploading`
    /// with no job until a restart).
    out: Option<(Vec<Completion>, Instant)>,
}

impl Committer {
    /// Starts the thread on `ledger`, a connection of its own.
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
        self.out.as_ref().map(|(_, since)| *since)
    }

    /// Hands `batch` to the thread; gives it back if the thread is gone.
    pub fn send(
        &mut self,
        batch: Vec<Completion>,
        now: Timestamp,
    ) -> std::result::Result<(), Vec<Completion>> {
        debug_assert!(self.out.is_none(), "one batch out at a time");
        let copy = batch.clone();
        match self.batches.send((batch, now)) {
            Ok(()) => {
                self.out = Some((copy, Instant::now()));
                Ok(())
            }
            Err(e) => Err(e.into_inner().0),
        }
    }

    /// The answer, if it came.
    pub fn try_answer(&self) -> Option<Answer> {
        self.answers.try_recv().ok()
    }

    /// The receiver the owner's loop selects on.
    pub fn answers(&self) -> Receiver<Answer> {
        self.answers.clone()
    }

    /// The loop received an answer: no batch is out now.
    pub fn took(&mut self) {
        self.out = None;
    }

    /// Waits for the answer to the batch out, if any. `Err(batch)`: the thread is gone
    /// without answering, and the batch is the owner's to save.
    pub fn wait(&mut self) -> std::result::Result<Option<Answer>, Vec<Completion>> {
        let Some((copy, _)) = self.out.take() else {
            return Ok(None);
        };
        self.answers.recv().map(Some).map_err(|_| copy)
    }

    /// The batch out when the thread was found gone (its channel closed): the owner's to
    /// save.
    pub fn lost(&mut self) -> Option<Vec<Completion>> {
        self.out.take().map(|(batch, _)| batch)
    }
}
