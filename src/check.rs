//! `sega-uploader check`: a Nagios/Icinga plugin, following the monitoring-plugins
//! guidelines. One line of text, perfdata after `|`, and the plugin exit codes: 0 OK,
//! 1 WARNING, 2 CRITICAL, 3 UNKNOWN (usage and configuration errors too, and a ledger that
//! does not answer within `-t`). A value that cannot be known (the heartbeat of a daemon that
//! never ran, the endpoint while no daemon runs) is `U` in the perfdata, never a made-up 0;
//! a counter carries the unit `c`. It reads what `status --json` reads: the database through
//! its own read-only connection, and the daemon's heartbeat row.

use std::time::Duration;

use serde_json::Value;

use crate::clock::human_duration;

pub const OK: i32 = 0;
pub const WARNING: i32 = 1;
pub const CRITICAL: i32 = 2;
pub const UNKNOWN: i32 = 3;

/// How long `check` waits for the ledger before it gives up with UNKNOWN (`-t`), as the
/// monitoring plugins do by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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

// No `\` line continuation after the opening quote: it would eat the first line's indent.
pub const FLAGS: &str =
    "  -t, --timeout SECS           give up with UNKNOWN when the database has not answered
                               within SECS (default 10)
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

    /// Every pair in order: a warning threshold above its critical one could never warn (the
    /// critical level is reached first), so it is a usage error, not a silent surprise.
    pub fn validate(&self) -> Result<(), String> {
        for (what, p) in [
            ("pending-age", self.pending_age),
            ("failed", self.failed),
            ("down", self.down),
            ("heartbeat", self.heartbeat),
        ] {
            if p.warn > p.crit {
                return Err(format!(
                    "--warn-{what} {} is above --crit-{what} {}: a level is reached when the value is at or above its threshold, so the warning threshold must not be above the critical one",
                    p.warn, p.crit
                ));
            }
        }
        Ok(())
    }
}

/// `-t SECS`: whole seconds, at least 1.
pub fn parse_timeout(value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "--timeout {value}: expected a whole number of seconds, at least 1"
        )),
    }
}

/// One perfdata item, `label=value[unit][;warn;crit]`, with `U` for a value that is not known
/// (then without the unit, as the guidelines write it).
fn perf(label: &str, value: Option<u64>, unit: &str, pair: Option<Pair>) -> String {
    let mut item = match value {
        Some(v) => format!("{label}={v}{unit}"),
        None => format!("{label}=U"),
    };
    if let Some(p) = pair {
        item.push_str(&format!(";{};{}", p.warn, p.crit));
    }
    item
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
    // None: no heartbeat was ever written (no daemon ran on this database), or its time is
    // not readable. Unknown, not 0 s.
    let heartbeat_age = status["daemon"]["heartbeat_age_secs"].as_u64();
    let pending = n(&status["totals"]["pending"]) + n(&status["totals"]["uploading"]);
    // Nothing pending: no age to report, 0. Something pending whose age cannot be computed
    // (detected "in the future" by a clock that was stepped back): unknown.
    let oldest = if pending > 0 {
        status["oldest_pending"]["age_secs"].as_u64()
    } else {
        Some(0)
    };
    let failed = n(&status["failed_last_hour"]);
    // Only a running daemon knows the endpoint's state ("unknown" otherwise).
    let down_for = match status["endpoint"]["state"].as_str() {
        Some("up") => Some(0),
        Some("down") => status["endpoint"]["down_for_secs"].as_u64(),
        _ => None,
    };
    let today = n(&status["uploaded_today"]);
    let total = status["uploaded_total"].as_u64();

    let mut problems: Vec<(i32, String)> = Vec::new();
    match heartbeat_age {
        // Not alive but holding its lock: running, and unable to write its ledger.
        _ if !alive => problems.push((
            CRITICAL,
            match status["daemon"]["pid"].as_str() {
                Some(pid) => format!(
                    "daemon (pid {pid}) not writing its ledger, heartbeat {}",
                    heartbeat_age.map_or_else(
                        || "never written".to_owned(),
                        |a| format!("{} old", human_duration(Duration::from_secs(a)))
                    )
                ),
                None => "daemon not running".into(),
            },
        )),
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
    if let Some(down) = down_for.filter(|d| level(*d, t.down) > OK) {
        problems.push((
            level(down, t.down),
            format!(
                "endpoint down for {}",
                human_duration(Duration::from_secs(down))
            ),
        ));
    }
    if let Some(age) = oldest.filter(|a| level(*a, t.pending_age) > OK) {
        problems.push((
            level(age, t.pending_age),
            format!(
                "{pending} pending, oldest {}",
                human_duration(Duration::from_secs(age))
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
        let endpoint = if status["endpoint"]["state"].as_str() == Some("down") {
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
    // Gauges without a unit or in seconds; `uploaded_total` is the one counter (`c`): it only
    // grows, so a grapher can derive a rate from it. `uploaded_today` stays for the checks
    // that already read it: a gauge that starts again from 0 at local midnight.
    let perf = [
        perf("pending", Some(pending), "", None),
        perf("oldest_pending_age", oldest, "s", Some(t.pending_age)),
        perf("failed_last_hour", Some(failed), "", Some(t.failed)),
        perf("endpoint_down", down_for, "s", Some(t.down)),
        perf("heartbeat_age", heartbeat_age, "s", Some(t.heartbeat)),
        perf("uploaded_today", Some(today), "", None),
        perf("uploaded_total", total, "c", None),
        perf("stale_hosts", Some(stale_hosts), "", None),
    ]
    .join(" ");
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
            "uploaded_total": 4242,
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
            (
                {
                    let mut s = status(false, 500, 0, 0, 0, None);
                    s["daemon"]["pid"] = json!("4242");
                    s
                },
                CRITICAL,
                "daemon (pid 4242) not writing its ledger, heartbeat 8m20s old",
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
    fn unknown_values_are_u_and_the_counter_is_c() {
        let t = Thresholds::default();
        let (_, line) = evaluate(&status(true, 5, 0, 0, 0, None), &t);
        assert!(
            line.ends_with(
                "| pending=0 oldest_pending_age=0s;900;3600 failed_last_hour=0;1;10 \
                 endpoint_down=0s;300;1800 heartbeat_age=5s;30;60 uploaded_today=42 \
                 uploaded_total=4242c stale_hosts=0"
            ),
            "{line}"
        );
        // A database no daemon ever ran on: no heartbeat, the endpoint's state unknown.
        let never = json!({
            "daemon": { "alive": false, "heartbeat_age_secs": null },
            "endpoint": { "state": "unknown", "down_for_secs": null },
            "totals": { "pending": 2, "uploading": 0 },
            "oldest_pending": { "age_secs": 30 },
            "failed_last_hour": 0,
            "uploaded_today": 0,
            "uploaded_total": 0,
        });
        let (code, line) = evaluate(&never, &t);
        assert_eq!(code, CRITICAL, "{line}");
        assert!(
            line.starts_with("SEGA CRITICAL - daemon not running |"),
            "{line}"
        );
        assert!(line.contains(" endpoint_down=U;300;1800 "), "{line}");
        assert!(line.contains(" heartbeat_age=U;30;60 "), "{line}");
        assert!(line.contains(" oldest_pending_age=30s;900;3600 "), "{line}");
        // Pending files whose age cannot be computed: unknown too, and no alarm made of it.
        let mut skewed = status(true, 5, 3, 0, 0, None);
        skewed["oldest_pending"]["age_secs"] = Value::Null;
        let (code, line) = evaluate(&skewed, &t);
        assert_eq!(code, OK, "{line}");
        assert!(line.contains(" oldest_pending_age=U;900;3600 "), "{line}");
    }

    #[test]
    fn a_warning_threshold_above_the_critical_one_is_refused() {
        let mut t = Thresholds::default();
        assert_eq!(t.validate(), Ok(()));
        t.set("warn-failed", "5").unwrap();
        t.set("crit-failed", "2").unwrap();
        let e = t.validate().unwrap_err();
        assert!(
            e.starts_with("--warn-failed 5 is above --crit-failed 2"),
            "{e}"
        );
        t.set("crit-failed", "5").unwrap();
        assert_eq!(t.validate(), Ok(()), "equal: straight to CRITICAL");
        assert_eq!(parse_timeout("7"), Ok(Duration::from_secs(7)));
        for bad in ["0", "-1", "1.5", "x"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
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
