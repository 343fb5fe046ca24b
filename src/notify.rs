//! systemd notifications (sd_notify): READY, STATUS, WATCHDOG, STOPPING, RELOADING.
//!
//! Every function is a silent no-op when `NOTIFY_SOCKET` is unset, so the daemon runs the
//! same outside systemd. A failed send is logged at debug and otherwise ignored: losing a
//! STATUS line must not stop uploads (a lost WATCHDOG ping gets us restarted, as it should
//! when the socket is broken).

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("sd_notify: {e}");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// systemd ≥ 253 wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload); older ones
/// ignore it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(m) => send(&[
            NotifyState::Reloading,
            m,
            NotifyState::Status("reloading configuration"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading configuration"),
        ]),
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this PID), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}
