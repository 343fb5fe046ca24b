//! The minute ticker: the safety net under inotify. Every `watch.scan_interval_secs` (and at
//! once on request: start-up catch-up, inotify queue overflow, a reload) it lists every date
//! folder in the window and sends the listings to the DB owner, which records what is new.
//!
//! It wakes at least every `health::max_sleep()` (2 s, or a quarter of the systemd watchdog
//! interval, at most 7.5 s) so the watchdog sees it alive, and stops when its control
//! channel closes.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{select, Receiver, Sender};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::Result;
use crate::health::Beat;
use crate::layout::Window;
use crate::owner::Input;
use crate::scanner;

pub enum TickerControl {
    Reload(Arc<Config>),
}

/// The ticker's loop, on the calling thread. Returns when `control` closes or the DB
/// owner is gone.
pub fn run(
    mut config: Arc<Config>,
    clock: Clock,
    inputs: Sender<Input>,
    rescan: Receiver<&'static str>,
    control: Receiver<TickerControl>,
    beat: Beat,
) -> Result<()> {
    // The catch-up scan runs first, right after READY.
    let mut next_scan = Instant::now();
    let mut why = "catch-up";
    loop {
        beat.beat();
        if Instant::now() >= next_scan {
            let window = Window::new(clock.today_local(), config.watch.lookback_days);
            let Some(s) = scanner::scan_window(
                &config.watch.folders,
                &window,
                &config.watch.extensions,
                &inputs,
            ) else {
                return Ok(());
            };
            log::debug!(
                "{why} scan: {} file(s) in {} date folder(s), {} ms",
                s.files,
                s.date_dirs,
                s.took.as_millis()
            );
            if inputs
                .send(Input::ScanFinished {
                    files: s.files,
                    took: s.took,
                })
                .is_err()
            {
                return Ok(());
            }
            next_scan = Instant::now() + config.watch.scan_interval;
            why = "periodic";
        }
        let wait = next_scan
            .saturating_duration_since(Instant::now())
            .min(crate::health::max_sleep());
        select! {
            recv(rescan) -> r => match r {
                Ok(reason) => {
                    // Several requests queued while scanning need one more scan, not many.
                    while rescan.try_recv().is_ok() {}
                    why = reason;
                    next_scan = Instant::now();
                }
                Err(_) => return Ok(()),
            },
            recv(control) -> c => match c {
                Ok(TickerControl::Reload(c)) => {
                    config = c;
                    why = "reload";
                    next_scan = Instant::now();
                }
                Err(_) => return Ok(()),
            },
            default(wait) => {}
        }
    }
}
