//! What the threads hand each other about a file, owned by none of them: an `Observation`
//! (the watcher or a scan saw a file; the owner records it in the ledger) and an `Outcome`
//! (what an upload worker's attempt came to; the owner's judge turns it into the row's next
//! state), with how an answer's status is classified (DESIGN §5). The ledger and the upload
//! workers both speak these, so neither imports the other.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use crate::layout::Version;
use crate::timestamp::Timestamp;

/// A file seen on disk (by inotify or a scan) that passed the shape, name and type rules.
#[derive(Debug, Clone)]
pub struct Observation {
    pub path: PathBuf,
    pub folder: String,
    pub date: String,
    pub filename: OsString,
    pub version: Version,
    /// When the row should first be tried: now for a file reported complete by
    /// IN_CLOSE_WRITE / IN_MOVED_TO, the settle time for one found by a scan.
    pub ready_at: Timestamp,
    /// Found through an inotify completion event (makes a settling row due now).
    pub via_event: bool,
}

/// `response_body` is capped at this many bytes (DESIGN §4).
pub const RESPONSE_CAP: usize = 64 * 1024;

/// How a response status is treated (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    Retry,
    Failed,
}

pub fn classify_status(status: u16) -> Class {
    match status {
        200..=299 => Class::Success,
        // 407 comes from `upload.proxy`, never from the endpoint: not the file's fault.
        407 | 408 | 425 | 429 | 500..=599 => Class::Retry,
        _ => Class::Failed,
    }
}

/// What the server said.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub json: Option<String>,
    pub retry_after: Option<Duration>,
    pub location: Option<String>,
    /// The body could not be read to the end (timeout, reset): what arrived is kept.
    pub body_error: Option<String>,
    /// A 2xx answer that does not say what `upload.success` asks for.
    pub mismatch: Option<Mismatch>,
}

/// Why a 2xx answer is not a success after all (`upload.success`, DESIGN §5).
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// For the stored result and the log: "answer /success is false".
    pub why: String,
    /// `on_mismatch` is `"fail"`: the file is failed, as on a 4xx; else it is retried with
    /// backoff, as on a 5xx but without counting toward the outage.
    pub fail: bool,
}

/// What one job came to, before the DB owner turns it into a status.
#[derive(Debug)]
pub enum Outcome {
    /// The server answered.
    Answered(Response),
    /// No answer: refused, reset, timed out, DNS…
    Transport(String),
    /// The file could not be opened or read (EACCES, EIO): retry with backoff.
    Unreadable(String),
    /// Its folder or date folder is missing or empty (a share not mounted): unreadable for
    /// now, retried without counting against `max_attempts`.
    Unavailable(String),
    /// Gone from a date folder that is still there: skipped until it is seen again.
    Vanished,
    /// A directory on the way is a symbolic link (or not a directory): never followed.
    NotBeneath(String),
    /// Became a symlink, FIFO, directory… since it was recorded.
    NotRegular(String),
    /// Wrong magic bytes (or empty).
    NotAnImage,
    /// A JPEG without its end marker or a PNG without IEND: still being written.
    Incomplete { since: OffsetDateTime },
    /// The file on disk is not the version that was claimed: before the send (`sent` None)
    /// or while it was sent (what the endpoint received was a mix; its answer is kept).
    Changed {
        version: Version,
        sent: Option<Sent>,
    },
    /// Handed back without trying: the endpoint is failing, or the job was claimed under
    /// rules a reload has since replaced (see `Gate`).
    NotStarted,
    /// The file got shorter while its body was being sent (the request was cut short);
    /// `attempt` turns this into `Changed` or what the file's absence means.
    Shrank,
}

/// What became of a request whose file changed under it.
#[derive(Debug)]
pub enum Sent {
    Answered(Response),
    Transport(String),
}

/// Answers that say the endpoint (not this file) is in trouble (407: the way to it).
pub fn is_endpoint_failure(status: u16) -> bool {
    status >= 500 || status == 407 || status == 408 || status == 429
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_designed() {
        for (s, c) in [
            (200, Class::Success),
            (201, Class::Success),
            (204, Class::Success),
            (301, Class::Failed),
            (302, Class::Failed),
            (400, Class::Failed),
            (401, Class::Failed),
            (404, Class::Failed),
            (407, Class::Retry),
            (408, Class::Retry),
            (413, Class::Failed),
            (425, Class::Retry),
            (429, Class::Retry),
            (500, Class::Retry),
            (503, Class::Retry),
            (599, Class::Retry),
        ] {
            assert_eq!(classify_status(s), c, "status {s}");
        }
    }
}
