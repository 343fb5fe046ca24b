//! sega-uploader patch: HTTP/1.1 persistent connections (`RequestBuilder::keep_alive`).
//!
//! Upstream sends `Connection: close` on every request and so opens a connection for each:
//! for small uploads on loopback, the kernel's work to open and close it was most of the
//! upload workers' CPU (`perf`, issue 17). A `KeepAlive` holds at most one idle connection,
//! for one thread's requests one after another; a request made with it sends no
//! `Connection: close`, takes the idle connection when it goes to the same place, and gives
//! its connection back once the answer has been read to its end.
//!
//! A connection is given back only when nothing is left unclear about where the next answer
//! starts: a 2xx HTTP/1.1 answer (an error answer may have come before the server read the
//! whole request), no `Connection: close`, no `Transfer-Encoding`, a body framed by
//! `Content-Length` (or none: 204) read to its last byte with no byte beyond it, in the
//! socket's buffer or the TLS session's. It is taken again only if it went to the same
//! origin with the same TLS configuration, has been idle for at most
//! `max_idle`, and has nothing to read (a server that closed it has sent its FIN). A request
//! whose reused connection turns out closed before any byte of its answer, or answers 408,
//! is sent once more on a new connection (`PreparedRequest::send`), within the same deadline:
//! a server may close an idle connection just as the request goes. A connection through a
//! proxy is never kept (a proxy that relays bytes after its first request would pass the
//! next one to the origin with the proxy's credentials).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use url::Url;

use crate::request::BaseSettings;
use crate::streams::BaseStream;

/// How long an idle connection is kept by default: under the idle timeouts of common
/// servers (gunicorn's async workers 2 s, Node and Apache 5 s, nginx 75 s), so a server
/// rarely closes one just as it is reused, and far under the minutes after which NAT and
/// firewalls forget a connection without telling either end. A backlog keeps its workers'
/// connections busy far more often than this.
pub const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(1);

/// At most one idle connection kept for reuse. Clones share it.
#[derive(Clone, Debug)]
pub struct KeepAlive {
    idle: Arc<Mutex<Option<Idle>>>,
    max_idle: Duration,
}

#[derive(Debug)]
struct Idle {
    origin: Origin,
    stream: BaseStream,
    since: Instant,
}

/// Where a connection goes and how it was set up: a connection is reused only for a request
/// that would have opened the same one.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    key: String,
    #[cfg(all(any(feature = "__rustls", feature = "__rustls-ring"), not(feature = "tls-native")))]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Origin {
    /// (Never through a proxy: such a connection is not kept.)
    pub(crate) fn new(url: &Url, settings: &BaseSettings) -> Origin {
        Origin {
            key: format!(
                "{}://{}:{}|{}{}",
                url.scheme(),
                url.host_str().unwrap_or(""),
                url.port_or_known_default().unwrap_or(0),
                settings.accept_invalid_certs,
                settings.accept_invalid_hostnames,
            ),
            #[cfg(all(any(feature = "__rustls", feature = "__rustls-ring"), not(feature = "tls-native")))]
            tls: settings.tls_config.clone(),
        }
    }

    fn same(&self, other: &Origin) -> bool {
        #[cfg(all(any(feature = "__rustls", feature = "__rustls-ring"), not(feature = "tls-native")))]
        let same_tls = match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        #[cfg(not(all(any(feature = "__rustls", feature = "__rustls-ring"), not(feature = "tls-native"))))]
        let same_tls = true;
        same_tls && self.key == other.key
    }
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive::new()
    }
}

impl KeepAlive {
    /// Keeps an idle connection for `DEFAULT_MAX_IDLE`.
    pub fn new() -> KeepAlive {
        KeepAlive::with_max_idle(DEFAULT_MAX_IDLE)
    }

    /// Keeps an idle connection for at most `max_idle` (zero: never reuses one).
    pub fn with_max_idle(max_idle: Duration) -> KeepAlive {
        KeepAlive {
            idle: Arc::new(Mutex::new(None)),
            max_idle,
        }
    }

    /// Closes the idle connection, if any.
    pub fn close(&self) {
        drop(self.lock().take());
    }

    /// Whether a connection is kept now (for tests and diagnostics).
    pub fn holds_one(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Idle>> {
        // Only an `Option` is swapped under the lock: a panic cannot leave it torn.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The idle connection, if it goes to `origin`, is fresh enough and still open; any
    /// other is closed.
    pub(crate) fn take(&self, origin: &Origin) -> Option<BaseStream> {
        let idle = self.lock().take()?;
        let usable = idle.origin.same(origin) && idle.since.elapsed() <= self.max_idle && idle.stream.open_and_quiet();
        usable.then_some(idle.stream)
    }

    /// Keeps `stream` (its deadline disarmed) in place of any other, unless it holds more
    /// than the answer it gave (bytes a TLS session has already decrypted, or its close).
    pub(crate) fn put(&self, origin: Origin, mut stream: BaseStream) {
        if self.max_idle.is_zero() || !stream.nothing_buffered() {
            return;
        }
        stream.disarm();
        *self.lock() = Some(Idle {
            origin,
            stream,
            since: Instant::now(),
        });
    }
}

/// Whether a failed write of a request on a reused connection says the server had closed
/// it: the peer is gone. (A write cut by the request's deadline says `TimedOut`.)
pub(crate) fn peer_gone(e: &crate::Error) -> bool {
    matches!(e.kind(), crate::ErrorKind::Io(io) if io_peer_gone(io))
}

pub(crate) fn io_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}
