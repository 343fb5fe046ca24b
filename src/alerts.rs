//! Alerts: a small JSON POST to `alerts.webhook_url` for each event an operator must hear
//! about: the endpoint down for longer than `alerts.after_secs` (and back up), a file marked
//! `failed` for good, the daemon started after an unclean stop, the backlog older than
//! `alerts.backlog_secs`.
//!
//! Sent from a thread of its own: producers `try_send` into a bounded channel and never
//! wait, so a dead or slow webhook can never delay an upload. Each alert is tried a few
//! times; at most `RATE_PER_MIN` are sent a minute, the rest are counted and summarised.
//! The webhook URL is a secret: it is never logged.

use std::collections::VecDeque;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use serde_json::{json, Value};

use crate::clock::{format_ts, human_duration, Clock};
use crate::secret::Secret;
use crate::upload::Route;

#[derive(Debug, Clone)]
pub enum Event {
    /// The endpoint just went down (the alert goes out only if it stays down `after`).
    EndpointDown {
        error: String,
    },
    EndpointUp {
        down_for: Duration,
    },
    FileFailed {
        path: String,
        error: String,
    },
    /// One file keeps failing while the endpoint is not down (a "poison" file the endpoint
    /// cannot process): it is retried with backoff and holds nothing else back.
    FileRetrying {
        path: String,
        attempts: i64,
        error: String,
    },
    UncleanStop {
        last_heartbeat: Option<String>,
        interrupted: usize,
    },
    /// The oldest pending file is older than the threshold (sent again only after it clears).
    Backlog {
        oldest_age: Duration,
        pending: i64,
    },
    BacklogCleared,
}

/// The producers' handle. Cheap to clone; `send` never blocks.
#[derive(Debug, Clone, Default)]
pub struct Alerts {
    tx: Option<Sender<Event>>,
}

const RATE_PER_MIN: usize = 10;
const TRIES: u32 = 3;
/// Room for bursts; beyond it events are dropped (and the drop is logged), never waited on.
const QUEUE: usize = 256;

impl Alerts {
    pub fn disabled() -> Alerts {
        Alerts { tx: None }
    }

    /// `route`: the endpoint's TLS configuration and proxy, which the webhook uses too.
    pub fn spawn(
        url: Secret<String>,
        route: Route,
        after: Duration,
        clock: Clock,
    ) -> std::io::Result<(Alerts, thread::JoinHandle<()>)> {
        let (tx, rx) = bounded(QUEUE);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let handle = thread::Builder::new()
            .name("alerts".into())
            .spawn(move || Dispatcher::new(url, route, after, host, clock).run(rx))?;
        Ok((Alerts { tx: Some(tx) }, handle))
    }

    pub fn send(&self, e: Event) {
        if let Some(tx) = &self.tx {
            if tx.try_send(e).is_err() {
                log::debug!("alert queue full: an alert was dropped");
            }
        }
    }
}

struct Dispatcher {
    url: Secret<String>,
    route: Route,
    after: Duration,
    host: String,
    clock: Clock,
    down_since: Option<(Instant, String)>,
    down_alerted: bool,
    backlog_alerted: bool,
    sent: VecDeque<Instant>,
    suppressed: usize,
}

impl Dispatcher {
    fn new(
        url: Secret<String>,
        route: Route,
        after: Duration,
        host: String,
        clock: Clock,
    ) -> Dispatcher {
        Dispatcher {
            url,
            route,
            after,
            host,
            clock,
            down_since: None,
            down_alerted: false,
            backlog_alerted: false,
            sent: VecDeque::new(),
            suppressed: 0,
        }
    }

    fn run(mut self, rx: Receiver<Event>) {
        loop {
            let wait = match &self.down_since {
                Some((at, _)) if !self.down_alerted => {
                    (*at + self.after).saturating_duration_since(Instant::now())
                }
                _ => Duration::from_secs(60),
            };
            match rx.recv_timeout(wait) {
                Ok(e) => self.on_event(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if let Some((at, error)) = self.down_since.clone() {
                if !self.down_alerted && at.elapsed() >= self.after {
                    self.down_alerted = true;
                    self.post(
                        "endpoint_down",
                        format!(
                            "upload endpoint down for {} ({error})",
                            human_duration(at.elapsed())
                        ),
                        json!({ "down_for_secs": at.elapsed().as_secs(), "error": error }),
                    );
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::EndpointDown { error } => {
                if self.down_since.is_none() {
                    self.down_since = Some((Instant::now(), error));
                }
            }
            Event::EndpointUp { down_for } => {
                self.down_since = None;
                if std::mem::take(&mut self.down_alerted) {
                    self.post(
                        "endpoint_up",
                        format!("upload endpoint back after {}", human_duration(down_for)),
                        json!({ "down_for_secs": down_for.as_secs() }),
                    );
                }
            }
            Event::FileFailed { path, error } => self.post(
                "file_failed",
                format!("{path}: failed permanently ({error})"),
                json!({ "path": path, "error": error }),
            ),
            Event::FileRetrying { path, attempts, error } => self.post(
                "file_retrying",
                format!("{path}: {attempts} attempts failed in a row ({error}); still retrying"),
                json!({ "path": path, "attempts": attempts, "error": error }),
            ),
            Event::UncleanStop { last_heartbeat, interrupted } => self.post(
                "unclean_stop",
                format!("sega-uploader restarted after an unclean stop; {interrupted} upload(s) were interrupted and will be sent again"),
                json!({ "last_heartbeat": last_heartbeat, "interrupted": interrupted }),
            ),
            Event::Backlog { oldest_age, pending } => {
                if !std::mem::replace(&mut self.backlog_alerted, true) {
                    self.post(
                        "backlog",
                        format!("{pending} file(s) waiting; the oldest for {}", human_duration(oldest_age)),
                        json!({ "pending": pending, "oldest_age_secs": oldest_age.as_secs() }),
                    );
                }
            }
            Event::BacklogCleared => self.backlog_alerted = false,
        }
    }

    fn post(&mut self, event: &str, message: String, extra: Value) {
        let now = Instant::now();
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= RATE_PER_MIN {
            self.suppressed += 1;
            log::debug!("alert {event} suppressed by the rate limit");
            return;
        }
        self.sent.push_back(now);
        let mut body = json!({
            "event": event,
            "host": self.host,
            "time": format_ts(self.clock.now_utc()),
            "message": message,
            "suppressed_before": std::mem::take(&mut self.suppressed),
        });
        if let (Some(b), Some(x)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in x {
                b.insert(k.clone(), v.clone());
            }
        }
        let text = body.to_string();
        for attempt in 1..=TRIES {
            let url = self.url.expose();
            let request = attohttpc::post(url).follow_redirects(false);
            let request = self
                .route
                .apply(request, Route::is_https(url))
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(15))
                .header(attohttpc::header::CONTENT_TYPE, "application/json")
                .header(attohttpc::header::USER_AGENT, crate::upload::USER_AGENT);
            let result = request.text(&text).send();
            match result {
                Ok(r) if r.is_success() => {
                    log::info!("alert sent: {event}");
                    return;
                }
                Ok(r) => log::warn!(
                    "alert {event}: webhook answered HTTP {} (try {attempt}/{TRIES})",
                    r.status().as_u16()
                ),
                Err(e) => log::warn!(
                    "alert {event}: webhook not reached (try {attempt}/{TRIES}): {}",
                    short(&e)
                ),
            }
            if attempt < TRIES {
                thread::sleep(Duration::from_secs(1 << attempt));
            }
        }
    }
}

/// attohttpc's error text without the URL (which may carry the webhook's token).
fn short(e: &attohttpc::Error) -> String {
    match e.kind() {
        attohttpc::ErrorKind::Tls(tls) => crate::tls::explain(tls),
        attohttpc::ErrorKind::Io(io) => {
            crate::tls::explain_io(io).unwrap_or_else(|| crate::error::describe_io(io))
        }
        _ => "request failed".into(),
    }
}
