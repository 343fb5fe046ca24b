//! `sega-uploader check`: a Nagios/Icinga plugin. One line of text, perfdata after `|`, and
//! the plugin exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (usage and configuration
//! errors too). It reads what `status --json` reads: the database through its own read-only
//! connection, and the daemon's heartbeat row.

use std::time::Duration;

use serde_json::Value;

use crate::clock::human_duration;

pub const OK: i32 = 0;
pub const WARNING: i32 = 1;
pub const CRITICAL: i32 = 2;
pub const UNKNOWN: i32 = 3;

/// One threshold pair: warn at or above `warn`, critical at or above `crit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub warn: u64,
    pub crit: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Age of the oldest file not yet uploaded, seconds.
    pub pending_age: Pair,
    /// Files marked failed in the last hour.
    pub failed: Pair,
    /// How long the endpoint has been down, seconds.
    pub down: Pair,
    /// Age of the daemon's heartbeat, seconds (the daemon writes it every 10 s).
    pub heartbeat: Pair,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            pending_age: Pair {
                warn: 900,
                crit: 3600,
            },
            failed: Pair { warn: 1, crit: 10 },
            down: Pair {
                warn: 300,
                crit: 1800,
            },
            heartbeat: Pair { warn: 30, crit: 60 },
        }
    }
}

pub const FLAGS: &str = "\
      --warn-pending-age SECS  oldest file not yet uploaded (default 900)
      --crit-pending-age SECS  (default 3600)
      --warn-failed N          files failed in the last hour (default 1)
      --crit-failed N          (default 10)
      --warn-down SECS         endpoint down for (default 300)
      --crit-down SECS         (default 1800)
      --warn-heartbeat SECS    daemon heartbeat older than (default 30); with a shared
                               PostgreSQL ledger, also any other host of the scope
      --crit-heartbeat SECS    (default 60)
";

impl Thresholds {
    /// Sets one `--warn-…`/`--crit-…` flag; Err names what is wrong.
    pub fn set(&mut self, flag: &str, value: &str) -> Result<(), String> {
        let n: u64 = value
            .parse()
            .map_err(|_| format!("--{flag} {value}: expected a whole number"))?;
        let (level, what) = flag
            .split_once('-')
            .ok_or_else(|| format!("unknown option --{flag}"))?;
        let pair = match what {
            "pending-age" => &mut self.pending_age,
            "failed" => &mut self.failed,
            "down" => &mut self.down,
            "heartbeat" => &mut self.heartbeat,
            _ => return Err(format!("unknown option --{flag}")),
        };
        match level {
            "warn" => pair.warn = n,
            "crit" => pair.crit = n,
            _ => return Err(format!("unknown option --{flag}")),
        }
        Ok(())
    }
}

fn level(v: u64, p: Pair) -> i32 {
    if v >= p.crit {
        CRITICAL
    } else if v >= p.warn {
        WARNING
    } else {
        OK
    }
}

/// Whether a `daemon` or `hosts[]` entry of `status --json` stopped cleanly: its stop time is
/// at or after its last heartbeat.
pub fn stopped_cleanly(entry: &Value) -> bool {
    match (entry["stopped_at"].as_str(), entry["heartbeat_at"].as_str()) {
        (Some(stop), Some(hb)) => stop >= hb,
        _ => false,
    }
}

/// The plugin's verdict over a `status --json` document: (exit code, the line).
pub fn evaluate(status: &Value, t: &Thresholds) -> (i32, String) {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let alive = status["daemon"]["alive"].as_bool() == Some(true);
    let heartbeat_age = status["daemon"]["heartbeat_age_secs"].as_u64();
    let pending = n(&status["totals"]["pending"]) + n(&status["totals"]["uploading"]);
    let oldest = if pending > 0 {
        n(&status["oldest_pending"]["age_secs"])
    } else {
        0
    };
    let failed = n(&status["failed_last_hour"]);
    let down_for = status["endpoint"]["down_for_secs"].as_u64().unwrap_or(0);
    let today = n(&status["uploaded_today"]);

    let mut problems: Vec<(i32, String)> = Vec::new();
    match heartbeat_age {
        _ if !alive => problems.push((CRITICAL, "daemon not running".into())),
        Some(age) if level(age, t.heartbeat) > OK => problems.push((
            level(age, t.heartbeat),
            format!(
                "daemon heartbeat {} old",
                human_duration(Duration::from_secs(age))
            ),
        )),
        _ => {}
    }
    // The other hosts of a shared ledger: one that stopped heart-beating without a clean stop
    // has died (its claims are taken over after the lease, but its own folders go unwatched).
    let mut stale_hosts = 0;
    for h in status["hosts"].as_array().into_iter().flatten() {
        if h["this_host"].as_bool() == Some(true) {
            continue;
        }
        let Some(age) = h["heartbeat_age_secs"].as_u64() else {
            continue;
        };
        if stopped_cleanly(h) || level(age, t.heartbeat) == OK {
            continue;
        }
        stale_hosts += 1;
        problems.push((
            level(age, t.heartbeat),
            format!(
                "host {} heartbeat {} old",
                h["host"].as_str().unwrap_or("?"),
                human_duration(Duration::from_secs(age))
            ),
        ));
    }
    if level(down_for, t.down) > OK {
        problems.push((
            level(down_for, t.down),
            format!(
                "endpoint down for {}",
                human_duration(Duration::from_secs(down_for))
            ),
        ));
    }
    if level(oldest, t.pending_age) > OK {
        problems.push((
            level(oldest, t.pending_age),
            format!(
                "{pending} pending, oldest {}",
                human_duration(Duration::from_secs(oldest))
            ),
        ));
    }
    if level(failed, t.failed) > OK {
        problems.push((
            level(failed, t.failed),
            format!("{failed} failed in the last hour"),
        ));
    }
    let code = problems.iter().map(|(c, _)| *c).max().unwrap_or(OK);
    let word = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code as usize];
    let text = if problems.is_empty() {
        let endpoint = if down_for > 0 {
            "endpoint down"
        } else {
            "endpoint up"
        };
        format!("{pending} pending, {today} uploaded today, {endpoint}")
    } else {
        problems
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let perf = format!(
        "pending={pending} oldest_pending_age={oldest}s;{};{} failed_last_hour={failed};{};{} endpoint_down={down_for}s;{};{} heartbeat_age={}s;{};{} uploaded_today={today} stale_hosts={stale_hosts}",
        t.pending_age.warn,
        t.pending_age.crit,
        t.failed.warn,
        t.failed.crit,
        t.down.warn,
        t.down.crit,
        heartbeat_age.unwrap_or(0),
        t.heartbeat.warn,
        t.heartbeat.crit,
    );
    (code, format!("SEGA {word} - {text} | {perf}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(
        alive: bool,
        hb: u64,
        pending: u64,
        oldest: u64,
        failed: u64,
        down: Option<u64>,
    ) -> Value {
        json!({
            "daemon": { "alive": alive, "heartbeat_age_secs": hb },
            "endpoint": { "state": if down.is_some() { "down" } else { "up" }, "down_for_secs": down },
            "totals": { "pending": pending, "uploading": 0 },
            "oldest_pending": { "age_secs": oldest },
            "failed_last_hour": failed,
            "uploaded_today": 42,
        })
    }

    #[test]
    fn each_condition_sets_its_level() {
        let t = Thresholds::default();
        let cases = [
            (
                status(true, 5, 0, 0, 0, None),
                OK,
                "0 pending, 42 uploaded today, endpoint up",
            ),
            (
                status(false, 500, 0, 0, 0, None),
                CRITICAL,
                "daemon not running",
            ),
            (status(true, 40, 0, 0, 0, None), WARNING, "heartbeat"),
            (
                status(true, 5, 3, 1000, 0, None),
                WARNING,
                "3 pending, oldest 16m40s",
            ),
            (status(true, 5, 3, 4000, 0, None), CRITICAL, "oldest"),
            (
                status(true, 5, 0, 0, 1, None),
                WARNING,
                "1 failed in the last hour",
            ),
            (status(true, 5, 0, 0, 10, None), CRITICAL, "10 failed"),
            (
                status(true, 5, 0, 0, 0, Some(400)),
                WARNING,
                "endpoint down for 6m40s",
            ),
            (
                status(true, 5, 0, 0, 0, Some(2000)),
                CRITICAL,
                "endpoint down",
            ),
        ];
        let mut hosts = status(true, 5, 0, 0, 0, None);
        hosts["hosts"] = json!([
            { "host": "cam-1", "this_host": true, "heartbeat_age_secs": 5 },
            { "host": "cam-2", "heartbeat_at": "2026-11-26T10:00:00.000Z", "heartbeat_age_secs": 45 },
            { "host": "cam-3", "heartbeat_at": "2026-11-26T10:00:00.000Z",
              "stopped_at": "2026-11-26T10:00:00.000Z", "heartbeat_age_secs": 9000 },
        ]);
        let mut dead = hosts.clone();
        dead["hosts"][1]["heartbeat_age_secs"] = json!(600);
        let cases = cases.into_iter().chain([
            (hosts, WARNING, "host cam-2 heartbeat 45s old"),
            (dead, CRITICAL, "host cam-2 heartbeat 10m00s old"),
        ]);
        for (s, code, text) in cases {
            let (c, line) = evaluate(&s, &t);
            assert!(
                !line.contains("cam-3"),
                "a host stopped cleanly is no alarm: {line}"
            );
            assert_eq!(c, code, "{line}");
            assert!(line.contains(text), "{line}");
            assert!(line.contains(" | pending="), "{line}");
        }
    }

    #[test]
    fn thresholds_come_from_flags() {
        let mut t = Thresholds::default();
        t.set("warn-failed", "5").unwrap();
        t.set("crit-down", "60").unwrap();
        assert_eq!(t.failed, Pair { warn: 5, crit: 10 });
        assert_eq!(t.down.crit, 60);
        assert!(t.set("warn-bogus", "1").is_err());
        assert!(t.set("crit-failed", "x").is_err());
    }
}
