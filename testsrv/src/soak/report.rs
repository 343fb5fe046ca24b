//! What a run prints: each episode's summary (counts, faults, restarts, peak memory, the
//! daemon log's notable lines), its warnings, and for each lost version or failed check its
//! story (the versions written, the daemon's row as `show` prints it, its log lines, the
//! faults around it); then the run's one-line verdict.

use super::daemon::Life;
use super::episode::Episode;
use super::Outcome;

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Prints an episode's summary.
pub fn episode(e: &Episode) {
    let v = &e.verdict;
    let c = &e.counts;
    let log = &e.daemon_log;
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    println!();
    println!(
        "== episode {} ({}{}): {:.0} s of faults + {:.0} s drain ({}) ==",
        e.n,
        e.backend,
        if e.midnight { ", across midnight" } else { "" },
        e.fault_secs,
        e.drain_secs,
        e.drain_end
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
        "versions expected:  {} ({} arrived; {} accepted uploads in all)",
        v.expected, v.arrived, v.accepted
    );
    println!("lost:               {}", v.lost.len());
    println!(
        "duplicated:         {} version(s), {} extra upload(s): {} with several keys",
        v.duplicates.len(),
        v.extra_uploads(),
        v.multi_key()
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
    println!(
        "daemon restarts:    {} ({})",
        e.starts.saturating_sub(1),
        why.join(", ")
    );
    println!(
        "max RSS:            {} (max VmHWM over {} daemon processes)",
        mib(e.max_hwm_kib),
        e.starts
    );
    let mut lives: Vec<&Life> = e.lives.iter().collect();
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
        "daemon log:         {} inotify overflow(s), {} deleted-WAL notice(s), {} unclean-start notice(s), {} database-trouble episode(s), {} endpoint-down episode(s), {} clock-jump warning(s), {} reload(s), {} ERROR line(s)",
        count("inotify queue overflowed"),
        count("-wal was deleted"),
        count("did not stop cleanly"),
        count("database trouble:"),
        count(" is down ("),
        count("wall clock jumped"),
        count("configuration reloaded"),
        count(" ERROR "),
    );
    println!(
        "sentinels:          {} planted outside the tree; opened: {}",
        e.sentinels,
        v.outside_opens.len()
    );
    println!(
        "final SIGTERM:      {}; slowest SIGTERM stop during the run {:.1}s",
        e.final_stop,
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
    if let Some(a) = &e.aborted {
        warnings.push(format!("the episode ended early: {a}"));
    }
    for x in &c.unexpected_exits {
        warnings.push(format!("the daemon exited on its own: {x}"));
    }
    if !e.final_stop.contains(": exit 0 after") {
        warnings.push(format!(
            "the final SIGTERM stop was not clean: {}",
            e.final_stop
        ));
    }
    for b in &c.bad_stops {
        warnings.push(format!("SIGTERM stop not clean: {b}"));
    }
    warnings.extend(c.notes.iter().cloned());
    if !v.strangers.is_empty() {
        warnings.push(format!("uploads of names never written: {:?}", v.strangers));
    }
    for (name, size) in v.wrong_content.iter().take(10) {
        warnings.push(format!(
            "{name}: an upload of {size} bytes matching no written version (read while being rewritten?)"
        ));
    }
    for m in &v.malformed {
        warnings.push(format!("malformed request: {m}"));
    }
    for w in &warnings {
        println!("WARNING: {w}");
    }
    for line in v.failures() {
        println!("{line}");
    }
    for d in &e.details {
        println!("{d}");
    }
    if !e.passed() {
        println!("episode directory kept: {}", e.dir.display());
    }
}

/// The run's one line: episodes, files, versions expected, lost, duplicated, outside-tree
/// opens, secrets printed, seed, wall time, and PASS or FAIL.
pub fn verdict_line(o: &Outcome) -> String {
    let sum = |f: &dyn Fn(&Episode) -> usize| o.episodes.iter().map(f).sum::<usize>();
    format!(
        "{} verdict: {} (episodes {}, files {}, versions expected {}, lost {}, duplicated {} ({} extra uploads, {} with several keys), wrong keys {}, outside-tree opens {}, secrets printed {}, uploads while removed {}, prunes {}, faults {}; seed {}, wall {:.1}s)",
        o.label,
        if o.passed() { "PASS" } else { "FAIL" },
        o.episodes.len(),
        sum(&|e| e.verdict.files),
        sum(&|e| e.verdict.expected as usize),
        sum(&|e| e.verdict.lost.len()),
        sum(&|e| e.verdict.duplicates.len()),
        sum(&|e| e.verdict.extra_uploads()),
        sum(&|e| e.verdict.multi_key()),
        sum(&|e| e.verdict.wrong_keys.len()),
        sum(&|e| e.verdict.outside_opens.len()),
        sum(&|e| e.verdict.secrets.len()),
        sum(&|e| e.verdict.excluded_uploads.len()),
        sum(&|e| e.verdict.prunes.len()),
        sum(&|e| e.counts.faults.values().sum::<u64>() as usize),
        o.seed,
        o.wall.as_secs_f64()
    )
}
