//! The DB owner's row-state decisions, as pure functions: what a worker's report means for
//! the file's row (its next status, when it is tried again, the error and result stored),
//! and what it says about the endpoint. No I/O, no clock, no randomness: the owner passes
//! `now` and the backoff it drew, and carries out the verdict (writes, endpoint state,
//! logs, alerts). Every transition has a row in the table of the tests below.
//!
//! The terminal statuses and who may set them (docs/RELIABILITY.md, "Invariants"):
//! - `uploaded`: only a 2xx answer to a request for the claimed version.
//! - `failed`: a 3xx or a 4xx other than 408/425/429; `max_attempts` spent on counted
//!   attempts; a ledger row that names no file of the tree ([`Refusal::Hostile`]).
//! - `skipped`: the file is not an image; it vanished from a date folder that is still
//!   there, or is not a regular file, or lies behind a symbolic link, or the config no
//!   longer covers it. All but "not an image" are `absent`: seen again as a candidate, the
//!   row is sent after all.
//!
//! Never terminal: anything about the endpoint (transport errors, 5xx, 408, 425, 429),
//! an unreadable file, a missing or empty folder (a share not mounted), a file still being
//! written, a file that changed.

use std::time::Duration;

use time::OffsetDateTime;

use crate::layout::{Refusal, Show};
use crate::store::{Attempted, Claimed, Completion, Disposition};
use crate::timestamp::Timestamp;
use crate::work::{classify_status, is_endpoint_failure, Class, Outcome, Response, Sent};

/// What a report says about the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// It answered with something other than a 5xx, 408 or 429: it is up.
    Answered,
    /// No answer, or a 5xx/408/429: one piece of evidence of an outage.
    Failing(String),
    /// The attempt never reached it (the file was the problem).
    Silent,
}

/// What the report is about, beside the outcome.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub file: &'a Claimed,
    pub started_at: OffsetDateTime,
    pub duration: Duration,
    pub probe: bool,
    /// `upload.retry.max_attempts` (0: forever).
    pub max_attempts: u32,
    /// The backoff drawn for this attempt (jittered).
    pub backoff: Duration,
    /// `upload.retry.max_secs`: Retry-After is capped at it.
    pub retry_max: Duration,
    /// For a probe during an outage: how long until the next probe may go. A failed probe's
    /// file waits at least that long, so the next probe tries another file.
    pub probe_gap: Duration,
    /// `watch.settle_secs`.
    pub settle: Duration,
    pub now: OffsetDateTime,
}

/// The decision, for the owner to carry out.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub completion: Completion,
    /// Retry-After on a 429 or 503: the whole pool pauses this long.
    pub pause: Option<Duration>,
    /// What the operator reads about this file, if anything.
    pub log: Option<(log::Level, String)>,
    pub tally: Tally,
}

/// Which counter a verdict adds to (the one-shot summary, the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    Uploaded,
    Retry,
    Failed,
    Skipped,
    NotReady,
}

/// What the outcome says about the endpoint. Decided before [`judge`], so the owner can
/// update the endpoint's state (and the probe gap) first.
pub fn health(outcome: &Outcome) -> Health {
    match outcome {
        Outcome::Answered(r) => answered(r),
        Outcome::Transport(e) => Health::Failing(e.clone()),
        Outcome::Changed {
            sent: Some(Sent::Answered(r)),
            ..
        } => answered(r),
        _ => Health::Silent,
    }
}

fn answered(r: &Response) -> Health {
    if is_endpoint_failure(r.status) {
        Health::Failing(format!("HTTP {}", r.status))
    } else {
        Health::Answered
    }
}

/// When a file found by a scan may be sent: `settle` after its mtime, but never later than
/// `settle` from now (a camera clock running ahead must not park a file for hours).
pub fn settle_time(now: OffsetDateTime, mtime_ns: i64, settle: Duration) -> OffsetDateTime {
    let mtime = OffsetDateTime::from_unix_timestamp_nanos(i128::from(mtime_ns)).unwrap_or(now);
    (mtime + settle).clamp(now, now + settle)
}

/// Turns a worker's report into the row's next state.
pub fn judge(f: &Facts, outcome: &Outcome) -> Verdict {
    let file = f.file;
    let name = file.path.shown().to_string();
    let mut v = Verdict {
        completion: Completion {
            file_id: file.id,
            attempt: file.attempt,
            version: file.version,
            started_at: Timestamp::new(f.started_at),
            duration_ms: i64::try_from(f.duration.as_millis()).unwrap_or(i64::MAX),
            http_status: None,
            response_body: None,
            response_json: None,
            error: None,
            result: None,
            disposition: Disposition::Skipped { absent: false },
        },
        pause: None,
        log: None,
        tally: Tally::Skipped,
    };
    // Probes do not count toward max_attempts (DESIGN §5), nor does a folder that is not
    // there: a share unmounted for a day must not fail its files.
    let exhausted =
        |counted: bool| counted && f.max_attempts > 0 && file.attempt >= i64::from(f.max_attempts);
    match outcome {
        Outcome::Answered(resp) => {
            keep_answer(&mut v.completion, resp);
            if resp.status == 429 || resp.status == 503 {
                v.pause = resp.retry_after.map(|ra| ra.min(f.retry_max));
            }
            match classify_status(resp.status) {
                // A 2xx whose answer `upload.success` refuses (DESIGN §5): failed as a
                // 4xx, or retried as a 5xx (its health stays "answered": no outage).
                Class::Success if resp.mismatch.as_ref().is_some_and(|m| m.fail) => {
                    let why = resp.mismatch.as_ref().map(|m| m.why.clone());
                    fail(&mut v, why.unwrap_or_default(), &name);
                }
                Class::Success if resp.mismatch.is_some() => {
                    let why = resp.mismatch.as_ref().map(|m| m.why.clone());
                    let (counted, wait) = (!f.probe, f.backoff);
                    retry(
                        &mut v,
                        f,
                        wait,
                        counted,
                        exhausted(counted),
                        why.unwrap_or_default(),
                    );
                }
                Class::Success => {
                    v.completion.result = Some(Attempted::Success);
                    v.completion.disposition = Disposition::Uploaded;
                    v.tally = Tally::Uploaded;
                    v.log = Some((
                        log::Level::Info,
                        format!(
                            "uploaded {name} ({} bytes, HTTP {}, {} ms)",
                            file.version.size, resp.status, v.completion.duration_ms
                        ),
                    ));
                }
                Class::Retry => {
                    let wait = v.pause.unwrap_or(f.backoff);
                    let err = format!("HTTP {}", resp.status);
                    retry(&mut v, f, wait, !f.probe, exhausted(!f.probe), err);
                }
                Class::Failed => {
                    let err = if (300..400).contains(&resp.status) {
                        format!(
                            "HTTP {}: redirect to {} not followed",
                            resp.status,
                            // The endpoint's text: shown escaped, as names are.
                            resp.location
                                .as_deref()
                                .map_or("(no Location)".into(), |l| std::ffi::OsStr::new(l)
                                    .shown()
                                    .to_string())
                        )
                    } else {
                        format!("HTTP {}", resp.status)
                    };
                    fail(&mut v, err, &name);
                }
            }
            if let Some(e) = &resp.body_error {
                let joined = match v.completion.error.take() {
                    Some(err) => format!("{err}; response body cut short: {e}"),
                    None => format!("response body cut short: {e}"),
                };
                v.completion.error = Some(joined);
            }
        }
        Outcome::Transport(e) => {
            let counted = !f.probe;
            retry(&mut v, f, f.backoff, counted, exhausted(counted), e.clone())
        }
        Outcome::Unreadable(e) => {
            // About the file, not the endpoint: counted even for a probe.
            let err = format!("cannot read the file: {e}");
            retry(&mut v, f, f.backoff, true, exhausted(true), err);
        }
        Outcome::Unavailable(why) => {
            let err = format!("unreadable for now: {why}");
            retry(&mut v, f, f.backoff, false, false, err);
            v.completion.result = None;
            v.log = Some((
                log::Level::Info,
                format!(
                    "{name}: unreadable for now ({why}); trying again in {}",
                    crate::clock::human_duration(f.backoff)
                ),
            ));
        }
        Outcome::Vanished => skip(
            &mut v,
            true,
            "vanished before upload".into(),
            log::Level::Info,
            format!("{name}: vanished before it was uploaded: skipped until it is seen again"),
        ),
        Outcome::NotRegular(t) => skip(
            &mut v,
            true,
            format!("not a regular file ({t})"),
            log::Level::Warn,
            format!("{name}: no longer a regular file ({t}): skipped, never opened"),
        ),
        Outcome::NotBeneath(why) => skip(
            &mut v,
            true,
            why.clone(),
            log::Level::Warn,
            format!("{name}: {why}: skipped, never opened"),
        ),
        Outcome::NotAnImage => skip(
            &mut v,
            false,
            "not an image".into(),
            log::Level::Warn,
            format!("{name}: not an image (content does not match its extension): skipped"),
        ),
        Outcome::Incomplete { since } => {
            v.tally = Tally::NotReady;
            v.completion.error = Some("incomplete: no end-of-image marker yet".into());
            v.completion.disposition = Disposition::NotReady {
                at: Timestamp::new(f.now + f.settle.max(Duration::from_secs(1))),
                incomplete_since: Some(Timestamp::new(*since)),
            };
            v.log = Some((
                log::Level::Debug,
                format!("{name}: no end-of-image marker yet, looking again later"),
            ));
        }
        Outcome::Changed { version, sent } => {
            v.tally = Tally::NotReady;
            v.completion.disposition = Disposition::Changed {
                version: *version,
                at: Timestamp::new(settle_time(f.now, version.mtime_ns, f.settle)),
            };
            let when = match sent {
                None => "changed while queued",
                Some(Sent::Answered(r)) => {
                    keep_answer(&mut v.completion, r);
                    "changed while it was sent"
                }
                Some(Sent::Transport(e)) => {
                    v.completion.error = Some(e.clone());
                    "changed while it was sent"
                }
            };
            if sent.is_some() {
                v.completion.result = Some(Attempted::Changed);
                let err = v.completion.error.take();
                v.completion.error = Some(match err {
                    Some(e) => format!("the file changed while it was sent ({e})"),
                    None => "the file changed while it was sent".into(),
                });
            }
            v.log = Some((
                log::Level::Info,
                format!(
                    "{name}: {when} ({} bytes now): will send the new version",
                    version.size
                ),
            ));
        }
        // Filtered out by the owner before judging: nothing was tried. `Shrank` never
        // leaves a worker (it becomes `Changed`, or what the file's absence means).
        Outcome::NotStarted | Outcome::Shrank => {
            v.tally = Tally::NotReady;
            v.completion.disposition = Disposition::Retry {
                at: Timestamp::new(f.now),
                counted: false,
            };
        }
    }
    v
}

/// A row the rules refuse to open (see [`Refusal`]), decided without a worker.
pub fn refuse(file: &Claimed, refusal: &Refusal, now: OffsetDateTime) -> Verdict {
    let name = file.path.shown().to_string();
    let (disposition, tally, level) = match refusal {
        Refusal::Hostile(_) => (Disposition::Failed, Tally::Failed, log::Level::Error),
        Refusal::OutOfScope(_) => (
            Disposition::Skipped { absent: true },
            Tally::Skipped,
            log::Level::Warn,
        ),
    };
    Verdict {
        completion: Completion {
            file_id: file.id,
            attempt: file.attempt,
            version: file.version,
            started_at: Timestamp::new(now),
            duration_ms: 0,
            http_status: None,
            response_body: None,
            response_json: None,
            error: Some(refusal.to_string()),
            result: None,
            disposition,
        },
        pause: None,
        log: Some((level, format!("{name}: {refusal}; nothing was opened"))),
        tally,
    }
}

fn keep_answer(c: &mut Completion, r: &Response) {
    c.http_status = Some(r.status);
    c.response_body = Some(r.body.clone());
    c.response_json = r.json.clone();
}

/// Tried again after `wait` (past the next probe, for a probe); `counted` toward
/// `max_attempts`, `exhausted` when that was the last one.
fn retry(
    v: &mut Verdict,
    f: &Facts,
    wait: Duration,
    counted: bool,
    exhausted: bool,
    error: String,
) {
    let name = f.file.path.shown().to_string();
    if exhausted {
        v.completion.result = Some(Attempted::Failed);
        v.completion.disposition = Disposition::Failed;
        v.tally = Tally::Failed;
        v.log = Some((
            log::Level::Error,
            format!(
                "{name}: giving up after {} attempts ({error}): marked failed",
                f.max_attempts
            ),
        ));
        v.completion.error = Some(error);
        return;
    }
    let wait = if f.probe { wait.max(f.probe_gap) } else { wait };
    v.completion.result = Some(Attempted::Retry);
    v.completion.disposition = Disposition::Retry {
        at: Timestamp::new(f.now + wait),
        counted,
    };
    v.tally = Tally::Retry;
    v.log = Some((
        log::Level::Info,
        format!(
            "{name}: {error}; retrying in {}",
            crate::clock::human_duration(wait)
        ),
    ));
    v.completion.error = Some(error);
}

fn fail(v: &mut Verdict, error: String, name: &str) {
    v.completion.result = Some(Attempted::Failed);
    v.completion.disposition = Disposition::Failed;
    v.tally = Tally::Failed;
    v.log = Some((
        log::Level::Error,
        format!("{name}: {error}: marked failed (retry with `sega-uploader retry`)"),
    ));
    v.completion.error = Some(error);
}

fn skip(v: &mut Verdict, absent: bool, error: String, level: log::Level, line: String) {
    v.completion.disposition = Disposition::Skipped { absent };
    v.completion.error = Some(error);
    v.tally = Tally::Skipped;
    v.log = Some((level, line));
}

#[cfg(test)]
pub(in crate::owner) mod tests {
    use super::*;
    use crate::layout::Version;
    use std::path::PathBuf;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-26 12:00 UTC);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn file(attempt: i64) -> Claimed {
        Claimed {
            id: 7,
            path: PathBuf::from("/data/Sega_1/2026-11-26/a.jpg"),
            folder: "Sega_1".into(),
            date: "2026-11-26".into(),
            filename: "a.jpg".into(),
            version: Version {
                size: 10,
                mtime_ns: 1,
            },
            attempt,
            incomplete_since: None,
        }
    }

    /// An answer with an empty JSON body; the owner's tests use it too.
    pub(in crate::owner) fn answer(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: "{}".into(),
            json: Some("{}".into()),
            retry_after: None,
            location: None,
            body_error: None,
            mismatch: None,
        }
    }

    /// What a verdict comes to, in the terms of the table below.
    #[derive(Debug, PartialEq)]
    struct Seen {
        status: &'static str,
        /// Seconds from now until it is tried again (Retry, NotReady, Changed).
        wait: Option<i64>,
        counted: Option<bool>,
        absent: Option<bool>,
        result: Option<Attempted>,
        health: Health,
    }

    fn seen(v: &Verdict, h: Health) -> Seen {
        let after = |at: &Timestamp| (at.utc() - NOW).whole_seconds();
        let (status, wait, counted, absent) = match &v.completion.disposition {
            Disposition::Uploaded => ("uploaded", None, None, None),
            Disposition::Failed => ("failed", None, None, None),
            Disposition::Skipped { absent } => ("skipped", None, None, Some(*absent)),
            Disposition::Retry { at, counted } => {
                ("pending", Some(after(at)), Some(*counted), None)
            }
            Disposition::NotReady { at, .. } => ("pending", Some(after(at)), None, None),
            Disposition::Changed { at, .. } => {
                ("pending (new version)", Some(after(at)), None, None)
            }
        };
        Seen {
            status,
            wait,
            counted,
            absent,
            result: v.completion.result,
            health: h,
        }
    }

    fn run(outcome: Outcome, probe: bool, attempt: i64, max_attempts: u32) -> (Verdict, Health) {
        let f = file(attempt);
        let facts = Facts {
            file: &f,
            started_at: NOW,
            duration: Duration::from_millis(12),
            probe,
            max_attempts,
            backoff: secs(5),
            retry_max: secs(600),
            probe_gap: if probe { secs(40) } else { Duration::ZERO },
            settle: secs(5),
            now: NOW,
        };
        let h = health(&outcome);
        (judge(&facts, &outcome), h)
    }

    fn row(
        status: &'static str,
        wait: Option<i64>,
        counted: Option<bool>,
        absent: Option<bool>,
        result: Option<Attempted>,
        health: Health,
    ) -> Seen {
        Seen {
            status,
            wait,
            counted,
            absent,
            result,
            health,
        }
    }

    #[test]
    fn every_outcome_has_its_transition() {
        use Attempted as A;
        let fail = |s: &str| Health::Failing(s.into());
        let ra = |status, secs_| Response {
            retry_after: Some(secs(secs_)),
            ..answer(status)
        };
        let cut = Response {
            body_error: Some("timed out".into()),
            ..answer(200)
        };
        let redirect = Response {
            location: Some("http://elsewhere/".into()),
            ..answer(302)
        };
        let refused = |fail| Response {
            mismatch: Some(crate::work::Mismatch {
                why: "answer /success is false".into(),
                fail,
            }),
            ..answer(200)
        };
        let v1 = Version {
            size: 11,
            mtime_ns: 2,
        };
        let changed = |sent| Outcome::Changed { version: v1, sent };
        // (case, outcome, probe, attempt, max_attempts) => what the row becomes.
        #[rustfmt::skip]
        let table: Vec<(&str, Outcome, bool, i64, u32, Seen)> = vec![
            ("2xx", Outcome::Answered(answer(200)), false, 1, 0,
                row("uploaded", None, None, None, Some(A::Success), Health::Answered)),
            ("2xx as a probe", Outcome::Answered(answer(201)), true, 1, 0,
                row("uploaded", None, None, None, Some(A::Success), Health::Answered)),
            ("2xx whose body was cut short", Outcome::Answered(cut), false, 1, 0,
                row("uploaded", None, None, None, Some(A::Success), Health::Answered)),
            ("2xx that upload.success refuses, retried: backoff, counted, no outage", Outcome::Answered(refused(false)), false, 1, 0,
                row("pending", Some(5), Some(true), None, Some(A::Retry), Health::Answered)),
            ("2xx that upload.success refuses, attempts spent", Outcome::Answered(refused(false)), false, 3, 3,
                row("failed", None, None, None, Some(A::Failed), Health::Answered)),
            ("2xx that upload.success refuses, on_mismatch fail", Outcome::Answered(refused(true)), false, 1, 0,
                row("failed", None, None, None, Some(A::Failed), Health::Answered)),
            ("5xx", Outcome::Answered(answer(500)), false, 1, 0,
                row("pending", Some(5), Some(true), None, Some(A::Retry), fail("HTTP 500"))),
            ("5xx as a probe waits past the next probe, uncounted", Outcome::Answered(answer(500)), true, 1, 0,
                row("pending", Some(40), Some(false), None, Some(A::Retry), fail("HTTP 500"))),
            ("5xx with attempts spent", Outcome::Answered(answer(500)), false, 3, 3,
                row("failed", None, None, None, Some(A::Failed), fail("HTTP 500"))),
            ("5xx as a probe never spends attempts", Outcome::Answered(answer(500)), true, 3, 3,
                row("pending", Some(40), Some(false), None, Some(A::Retry), fail("HTTP 500"))),
            ("503 with Retry-After", Outcome::Answered(ra(503, 30)), false, 1, 0,
                row("pending", Some(30), Some(true), None, Some(A::Retry), fail("HTTP 503"))),
            ("429 with a Retry-After past the cap", Outcome::Answered(ra(429, 99_999)), false, 1, 0,
                row("pending", Some(600), Some(true), None, Some(A::Retry), fail("HTTP 429"))),
            ("408", Outcome::Answered(answer(408)), false, 1, 0,
                row("pending", Some(5), Some(true), None, Some(A::Retry), fail("HTTP 408"))),
            ("425 is about the request, not an outage", Outcome::Answered(answer(425)), false, 1, 0,
                row("pending", Some(5), Some(true), None, Some(A::Retry), Health::Answered)),
            ("4xx", Outcome::Answered(answer(404)), false, 1, 0,
                row("failed", None, None, None, Some(A::Failed), Health::Answered)),
            ("3xx is not followed", Outcome::Answered(redirect), false, 1, 0,
                row("failed", None, None, None, Some(A::Failed), Health::Answered)),
            ("no answer", Outcome::Transport("connection refused".into()), false, 1, 0,
                row("pending", Some(5), Some(true), None, Some(A::Retry), fail("connection refused"))),
            ("no answer to a probe", Outcome::Transport("timed out".into()), true, 2, 2,
                row("pending", Some(40), Some(false), None, Some(A::Retry), fail("timed out"))),
            ("no answer, attempts spent", Outcome::Transport("reset".into()), false, 2, 2,
                row("failed", None, None, None, Some(A::Failed), fail("reset"))),
            ("unreadable (EACCES)", Outcome::Unreadable("permission denied".into()), false, 1, 0,
                row("pending", Some(5), Some(true), None, Some(A::Retry), Health::Silent)),
            ("unreadable counts even as a probe", Outcome::Unreadable("i/o error".into()), true, 1, 0,
                row("pending", Some(40), Some(true), None, Some(A::Retry), Health::Silent)),
            ("unreadable, attempts spent", Outcome::Unreadable("i/o error".into()), false, 2, 2,
                row("failed", None, None, None, Some(A::Failed), Health::Silent)),
            ("folder not mounted: unreadable for now, never spent", Outcome::Unavailable("x is empty".into()), false, 9, 2,
                row("pending", Some(5), Some(false), None, None, Health::Silent)),
            ("vanished from its date folder", Outcome::Vanished, false, 1, 0,
                row("skipped", None, None, Some(true), None, Health::Silent)),
            ("vanished while probing", Outcome::Vanished, true, 1, 0,
                row("skipped", None, None, Some(true), None, Health::Silent)),
            ("no longer a regular file", Outcome::NotRegular("FIFO".into()), false, 1, 0,
                row("skipped", None, None, Some(true), None, Health::Silent)),
            ("behind a symbolic link", Outcome::NotBeneath("date folder x is a symbolic link".into()), false, 1, 0,
                row("skipped", None, None, Some(true), None, Health::Silent)),
            ("not an image", Outcome::NotAnImage, false, 1, 0,
                row("skipped", None, None, Some(false), None, Health::Silent)),
            ("still being written", Outcome::Incomplete { since: NOW }, false, 1, 0,
                row("pending", Some(5), None, None, None, Health::Silent)),
            ("changed before the send", changed(None), false, 1, 0,
                row("pending (new version)", Some(0), None, None, None, Health::Silent)),
            ("changed while sent, answered", changed(Some(Sent::Answered(answer(200)))), false, 1, 0,
                row("pending (new version)", Some(0), None, None, Some(A::Changed), Health::Answered)),
            ("changed while sent, no answer", changed(Some(Sent::Transport("reset".into()))), false, 1, 0,
                row("pending (new version)", Some(0), None, None, Some(A::Changed), Health::Silent)),
        ];
        for (case, outcome, probe, attempt, max, want) in table {
            let (v, h) = run(outcome, probe, attempt, max);
            assert_eq!(seen(&v, h), want, "{case}");
            assert!(v.log.is_some(), "{case}: the operator reads about it");
            let stored = v.completion.result.is_some();
            assert!(
                !stored || v.completion.error.is_some() || v.completion.http_status.is_some(),
                "{case}: a result row says what happened"
            );
        }
    }

    #[test]
    fn answers_and_errors_are_kept_as_they_came() {
        let (v, _) = run(
            Outcome::Answered(Response {
                location: Some("http://elsewhere/".into()),
                ..answer(302)
            }),
            false,
            1,
            0,
        );
        assert_eq!(
            v.completion.error.as_deref(),
            Some("HTTP 302: redirect to http://elsewhere/ not followed")
        );
        assert_eq!(v.completion.http_status, Some(302));
        let (v, _) = run(
            Outcome::Answered(Response {
                body_error: Some("timed out".into()),
                ..answer(200)
            }),
            false,
            1,
            0,
        );
        assert_eq!(
            v.completion.error.as_deref(),
            Some("response body cut short: timed out")
        );
        // upload.success: the stored result says why a 2xx is not a success.
        let (v, _) = run(
            Outcome::Answered(Response {
                mismatch: Some(crate::work::Mismatch {
                    why: "answer /success is false".into(),
                    fail: false,
                }),
                ..answer(200)
            }),
            false,
            1,
            0,
        );
        assert_eq!(
            (v.completion.error.as_deref(), v.completion.http_status),
            (Some("answer /success is false"), Some(200))
        );
        let (v, _) = run(
            Outcome::Changed {
                version: Version {
                    size: 1,
                    mtime_ns: 1,
                },
                sent: Some(Sent::Answered(answer(200))),
            },
            false,
            1,
            0,
        );
        assert_eq!(v.completion.http_status, Some(200));
        assert!(v
            .completion
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("the file changed while it was sent")));
        let (v, _) = run(Outcome::Answered(answer(503)), false, 1, 0);
        assert_eq!(v.pause, None, "a 503 without Retry-After pauses nobody");
    }

    #[test]
    fn refused_rows_are_never_tried_and_say_why() {
        let f = file(1);
        let v = refuse(
            &f,
            &Refusal::Hostile("file name /etc/passwd is not one plain path component".into()),
            NOW,
        );
        assert_eq!(v.completion.disposition, Disposition::Failed);
        assert_eq!(v.completion.result, None);
        assert!(v
            .completion
            .error
            .as_deref()
            .unwrap()
            .starts_with("refused: "));
        let v = refuse(
            &f,
            &Refusal::OutOfScope("folder Sega_9 is not in watch.folders".into()),
            NOW,
        );
        assert_eq!(
            v.completion.disposition,
            Disposition::Skipped { absent: true }
        );
        assert!(v
            .completion
            .error
            .as_deref()
            .unwrap()
            .starts_with("no longer watched: "));
    }

    #[test]
    fn settle_time_is_bounded_both_ways() {
        let now = datetime!(2026-11-26 12:00 UTC);
        let ns = |t: OffsetDateTime| t.unix_timestamp_nanos() as i64;
        let s = Duration::from_secs(5);
        assert_eq!(
            settle_time(now, ns(datetime!(2026-11-26 11:00 UTC)), s),
            now
        );
        assert_eq!(
            settle_time(now, ns(datetime!(2026-11-26 11:59:58 UTC)), s),
            datetime!(2026-11-26 12:00:03 UTC)
        );
        assert_eq!(
            settle_time(now, ns(datetime!(2026-11-27 12:00 UTC)), s),
            datetime!(2026-11-26 12:00:05 UTC)
        );
    }
}
