//! The Prometheus text-format metrics file (`metrics.textfile`), for node_exporter's
//! textfile collector. The DB owner renders it on each tick and writes it atomically (a
//! temporary file in the same directory, then rename), so a scraper never reads half a file.
//!
//! A daemon that dies leaves its last file behind, still saying what was true then (the
//! endpoint up, say). So times are exported as timestamps, not ages: `time() - …` keeps
//! growing in a file that is no longer rewritten, where an age would stay frozen.
//! `sega_heartbeat_timestamp_seconds` (and node_exporter's own `node_textfile_mtime_seconds`)
//! is what an alert on a dead daemon watches.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::build_info;
use crate::store::Status;

/// Upper bounds of the upload-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Counters kept by the DB owner since start.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub success: u64,
    pub retry: u64,
    pub failed: u64,
    /// Bytes of the file versions uploaded (successful attempts only).
    pub uploaded_bytes: u64,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Counters {
    /// Records one finished attempt's duration.
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// Everything one metrics file shows.
#[derive(Debug, Default)]
pub struct Snapshot<'a> {
    /// (folder, status, count)
    pub files: &'a [(String, Status, i64)],
    pub counters: Counters,
    /// When this file is written: the daemon's heartbeat (Unix time).
    pub heartbeat_unix: f64,
    /// When the oldest file not yet uploaded was detected (Unix time); None if none waits.
    pub oldest_pending_unix: Option<f64>,
    pub oldest_pending_age: Option<Duration>,
    pub endpoint_up: bool,
    pub last_scan_unix: Option<f64>,
    pub last_scan_duration: Option<Duration>,
    pub overflows: u64,
    pub rescans: u64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub fn render(s: &Snapshot<'_>) -> String {
    let mut o = String::new();
    head(
        &mut o,
        "sega_build_info",
        "gauge",
        "Always 1; the version and the compiled features (comma-separated) as labels.",
    );
    let _ = writeln!(
        o,
        "sega_build_info{{version=\"{}\",features=\"{}\"}} 1",
        escape(build_info::VERSION),
        escape(&build_info::FEATURES.join(","))
    );
    head(
        &mut o,
        "sega_heartbeat_timestamp_seconds",
        "gauge",
        "When the daemon last wrote its heartbeat and this file (Unix time). Alert on time() minus this: it keeps growing after the daemon is gone.",
    );
    let _ = writeln!(o, "sega_heartbeat_timestamp_seconds {}", s.heartbeat_unix);
    head(
        &mut o,
        "sega_files",
        "gauge",
        "Recorded files by folder and status.",
    );
    for (folder, status, n) in s.files {
        let _ = writeln!(
            o,
            "sega_files{{folder=\"{}\",status=\"{}\"}} {n}",
            escape(folder),
            escape(status.as_str())
        );
    }
    head(
        &mut o,
        "sega_uploads_total",
        "counter",
        "Upload attempts since start, by outcome.",
    );
    let c = &s.counters;
    for (outcome, n) in [
        ("success", c.success),
        ("retry", c.retry),
        ("failed", c.failed),
    ] {
        let _ = writeln!(o, "sega_uploads_total{{outcome=\"{outcome}\"}} {n}");
    }
    head(
        &mut o,
        "sega_uploaded_bytes_total",
        "counter",
        "Bytes of the files uploaded since start (successful attempts).",
    );
    let _ = writeln!(o, "sega_uploaded_bytes_total {}", c.uploaded_bytes);
    head(
        &mut o,
        "sega_upload_duration_seconds",
        "histogram",
        "Duration of upload attempts since start.",
    );
    for (le, n) in BUCKETS.iter().zip(c.buckets) {
        let _ = writeln!(o, "sega_upload_duration_seconds_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "sega_upload_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        c.count
    );
    let _ = writeln!(o, "sega_upload_duration_seconds_sum {}", c.sum);
    let _ = writeln!(o, "sega_upload_duration_seconds_count {}", c.count);
    head(
        &mut o,
        "sega_oldest_pending_timestamp_seconds",
        "gauge",
        "When the oldest file not yet uploaded was detected (Unix time); no sample while none waits.",
    );
    if let Some(t) = s.oldest_pending_unix {
        let _ = writeln!(o, "sega_oldest_pending_timestamp_seconds {t}");
    }
    head(
        &mut o,
        "sega_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest file not yet uploaded (0 if none), as of the heartbeat; prefer time() - sega_oldest_pending_timestamp_seconds.",
    );
    let _ = writeln!(
        o,
        "sega_oldest_pending_age_seconds {}",
        s.oldest_pending_age.map(|d| d.as_secs_f64()).unwrap_or(0.0)
    );
    head(
        &mut o,
        "sega_endpoint_up",
        "gauge",
        "1 while the endpoint answers, 0 during an outage.",
    );
    let _ = writeln!(o, "sega_endpoint_up {}", u8::from(s.endpoint_up));
    head(
        &mut o,
        "sega_last_scan_timestamp_seconds",
        "gauge",
        "When the last full rescan finished (Unix time).",
    );
    let _ = writeln!(
        o,
        "sega_last_scan_timestamp_seconds {}",
        s.last_scan_unix.unwrap_or(0.0)
    );
    head(
        &mut o,
        "sega_last_scan_duration_seconds",
        "gauge",
        "How long the last full rescan took.",
    );
    let _ = writeln!(
        o,
        "sega_last_scan_duration_seconds {}",
        s.last_scan_duration.map(|d| d.as_secs_f64()).unwrap_or(0.0)
    );
    head(
        &mut o,
        "sega_inotify_overflows_total",
        "counter",
        "inotify queue overflows since start (each triggers a rescan).",
    );
    let _ = writeln!(o, "sega_inotify_overflows_total {}", s.overflows);
    head(
        &mut o,
        "sega_rescans_total",
        "counter",
        "Full rescans since start.",
    );
    let _ = writeln!(o, "sega_rescans_total {}", s.rescans);
    o
}

/// Writes `text` to `path` so that a reader sees the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = create_new(&tmp)
        .or_else(|e| {
            // Left by a crash, or planted (a symlink to a file of someone else's): unlink
            // removes the entry itself, never what a link points to; then create afresh.
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                std::fs::remove_file(&tmp)?;
                create_new(&tmp)
            } else {
                Err(e)
            }
        })
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new file, never an existing one and never through a symlink (O_EXCL|O_NOFOLLOW): the
/// metrics directory may be writable by others (a node exporter's textfile directory).
fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_exposition_text() {
        let files = vec![
            ("Sega_1".to_string(), Status::Uploaded, 3),
            ("Se\"ga".to_string(), Status::Pending, 1),
        ];
        let mut counters = Counters {
            success: 3,
            uploaded_bytes: 12345,
            ..Counters::default()
        };
        counters.observe(Duration::from_millis(20));
        counters.observe(Duration::from_secs(3));
        let text = render(&Snapshot {
            files: &files,
            counters,
            endpoint_up: true,
            heartbeat_unix: 1_795_000_000.5,
            ..Snapshot::default()
        });
        assert!(text.contains("sega_files{folder=\"Sega_1\",status=\"uploaded\"} 3\n"));
        assert!(text.contains("sega_files{folder=\"Se\\\"ga\",status=\"pending\"} 1\n"));
        assert!(text.contains("sega_upload_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("sega_upload_duration_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("sega_upload_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("sega_endpoint_up 1\n"));
        assert!(text.starts_with(&format!(
            "# HELP sega_build_info Always 1; the version and the compiled features (comma-separated) as labels.\n\
             # TYPE sega_build_info gauge\n\
             sega_build_info{{version=\"{}\",features=\"{}\"}} 1\n",
            build_info::VERSION,
            build_info::FEATURES.join(",")
        )));
        assert!(text.contains("sega_heartbeat_timestamp_seconds 1795000000.5\n"));
        assert!(text.contains(
            "# TYPE sega_uploaded_bytes_total counter\nsega_uploaded_bytes_total 12345\n"
        ));
        assert!(
            !text.contains("\nsega_oldest_pending_timestamp_seconds "),
            "no sample while nothing waits"
        );
        let waiting = render(&Snapshot {
            oldest_pending_unix: Some(1_794_999_000.25),
            ..Snapshot::default()
        });
        assert!(waiting.contains("\nsega_oldest_pending_timestamp_seconds 1794999000.25\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn the_temp_file_is_never_opened_through_a_planted_symlink() {
        let dir = std::env::temp_dir().join(format!("sega-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let target = dir.join("sega.prom");
        let tmp = dir.join(format!(".sega.prom.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_atomic(&target, "sega_up 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "sega_up 1\n");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "no temp file left"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
