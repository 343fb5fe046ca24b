//! The end of a run: the summary (counts, faults, restarts, peak memory, the daemon log's
//! notable lines), warnings, and for each lost file or multi-key duplicate its story: the
//! versions written, the daemon's rows for it, its log lines and the faults around it.

use std::fs;
use std::path::Path;

use crate::daemon::Life;
use crate::faults::{self, Tally};
use crate::ledger::Verdict;
use crate::mib;

pub struct SummaryIn<'a> {
    pub seed: u64,
    pub run_secs: u64,
    pub drain_secs: f64,
    pub drain_end: &'a str,
    pub verdict: &'a Verdict,
    pub counts: &'a faults::Counts,
    pub starts: u32,
    pub lives: &'a [Life],
    pub max_hwm_kib: u64,
    pub final_stop: &'a str,
    pub daemon_log: &'a Path,
    pub db: &'a Path,
    pub tally: &'a Tally,
    pub aborted: Option<&'a str>,
}

/// Prints the summary; true if nothing was lost and no duplicate had two keys.
pub fn summary(s: &SummaryIn<'_>) -> bool {
    let v = s.verdict;
    let c = s.counts;
    let log = fs::read_to_string(s.daemon_log).unwrap_or_default();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let extra: usize = v.duplicates.iter().map(|d| d.copies - 1).sum();
    let multi_key: Vec<_> = v.duplicates.iter().filter(|d| d.keys > 1).collect();
    let restarts: u32 = s.starts.saturating_sub(1);

    println!();
    println!(
        "== sega-soak summary: seed {}, {} s run + {:.0} s drain ({}) ==",
        s.seed, s.run_secs, s.drain_secs, s.drain_end
    );
    let how: Vec<String> = v
        .by_how
        .iter()
        .map(|(h, n)| format!("{n} {}", h.label()))
        .collect();
    println!(
        "files written:      {} ({} versions: {})",
        v.files,
        v.versions,
        how.join(", ")
    );
    println!(
        "arrived (unique):   {} ({} accepted uploads in all)",
        v.arrived, v.accepted
    );
    println!("lost:               {}", v.lost.len());
    println!(
        "duplicated:         {} file version(s), {extra} extra upload(s): {} with one Idempotency-Key, {} with several",
        v.duplicates.len(),
        v.duplicates.len() - multi_key.len(),
        multi_key.len()
    );
    let faults: Vec<String> = c.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "faults injected:    {} ({})",
        c.faults.values().sum::<u64>(),
        faults.join(", ")
    );
    let why: Vec<String> = c
        .restarts
        .iter()
        .map(|(k, n)| format!("{n} after {k}"))
        .collect();
    if why.is_empty() {
        println!("daemon restarts:    {restarts}");
    } else {
        println!("daemon restarts:    {restarts} ({})", why.join(", "));
    }
    println!(
        "max RSS:            {} (max VmHWM over {} daemon processes)",
        mib(s.max_hwm_kib),
        s.starts
    );
    // The processes that peaked highest: when they ran tells which faults drove memory up.
    let mut lives: Vec<&Life> = s.lives.iter().collect();
    lives.sort_by_key(|l| std::cmp::Reverse(l.peak_kib));
    for l in lives.iter().take(3) {
        println!(
            "  peak {} in pid {} ({:.0}–{:.0} s, ended by {})",
            mib(l.peak_kib),
            l.pid,
            l.from,
            l.to,
            l.end
        );
    }
    println!(
        "daemon log:         {} inotify overflow(s), {} unclean-start notice(s), {} database-trouble episode(s), {} endpoint-down episode(s), {} ERROR line(s)",
        count("inotify queue overflowed"),
        count("did not stop cleanly"),
        count("database trouble:"),
        count(" is down ("),
        count(" ERROR "),
    );
    println!(
        "final SIGTERM:      {}; slowest SIGTERM stop during the run {:.1}s",
        s.final_stop,
        c.slowest_stop.as_secs_f64()
    );
    let mut refused: Vec<String> = v.refused.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    if refused.is_empty() {
        refused.push("0".into());
    }
    println!(
        "not accepted:       {} (by status; none = hang/reset/cut)",
        refused.join(", ")
    );

    let mut warnings = Vec::new();
    if let Some(a) = s.aborted {
        warnings.push(format!("the run ended early: {a}"));
    }
    for e in &c.unexpected_exits {
        warnings.push(format!("the daemon exited on its own: {e}"));
    }
    if !s.final_stop.contains(": exit 0 after") {
        warnings.push(format!(
            "the final SIGTERM stop was not clean: {}",
            s.final_stop
        ));
    }
    for b in &c.bad_stops {
        warnings.push(format!("SIGTERM stop not clean: {b}"));
    }
    for n in &c.notes {
        warnings.push(n.clone());
    }
    if v.strangers > 0 {
        warnings.push(format!(
            "{} upload(s) of names the soak never wrote",
            v.strangers
        ));
    }
    for (name, size) in v.wrong_content.iter().take(10) {
        warnings.push(format!("{name}: an upload of {size} bytes matching no written version (read while being rewritten?)"));
    }
    for m in &v.malformed {
        warnings.push(format!("malformed request: {m}"));
    }
    for w in &warnings {
        println!("WARNING: {w}");
    }

    for dup in multi_key.iter().take(20) {
        println!(
            "DUPLICATE WITH {} KEYS: {} ({} copies)",
            dup.keys, dup.name, dup.copies
        );
        for l in log.lines().filter(|l| l.contains(&dup.name)).take(10) {
            println!("    {l}");
        }
    }
    for lost in v.lost.iter().take(20) {
        println!("LOST: {} ({})", lost.path.display(), lost.story);
        for row in db_rows(s.db, &lost.path) {
            println!("    db: {row}");
        }
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&lost.name)).collect();
        if lines.is_empty() {
            println!("    daemon log: no line names it");
        }
        for l in &lines[lines.len().saturating_sub(8)..] {
            println!("    log: {l}");
        }
        let t = lost.last_written.as_secs_f64();
        for e in s.tally.events_between(t - 15.0, t + 60.0) {
            println!("    fault {e}");
        }
    }
    if v.lost.len() > 20 {
        println!("… and {} more lost", v.lost.len() - 20);
    }
    let passed = v.lost.is_empty() && multi_key.is_empty();
    println!(
        "result: {}",
        if passed && s.aborted.is_none() {
            "PASS"
        } else {
            "FAIL"
        }
    );
    passed
}

/// The daemon's rows for a path (one per version), for a lost file's report.
fn db_rows(db: &Path, path: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    let rows = (|| -> rusqlite::Result<Vec<String>> {
        let c =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut st = c.prepare(
            "SELECT id, status, size, attempts, last_error FROM files \
             WHERE CAST(path AS BLOB) = CAST(?1 AS BLOB) ORDER BY id",
        )?;
        let rows = st.query_map([path.as_os_str().as_bytes()], |r| {
            Ok(format!(
                "row {} {} size {} attempts {} last_error {:?}",
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?
            ))
        })?;
        rows.collect()
    })();
    match rows {
        Ok(r) if r.is_empty() => vec!["no row".into()],
        Ok(r) => r,
        Err(e) => vec![format!("cannot read the database: {e}")],
    }
}
