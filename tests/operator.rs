//! Small truths an operator reads first (issue 16): the daemon's `ready:` line counts what
//! the ledger holds, and the catch-up scan says what it added.

use crate::util::*;
use serde_json::json;

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(16, 16, seed)
}

/// 200 files left pending by a scan against an endpoint that refuses connections, 50 more
/// written while no daemon ran: the `ready:` line says 200 pending (the ledger's count, not
/// the zero of a count not yet made), and the catch-up scan then says it recorded the 50
/// and that 250 are pending.
fn the_ready_line_counts_what_the_ledger_holds(backend: Backend) {
    let env = Env::with_backend("ready-count", backend);
    env.set("/upload/url", json!("http://127.0.0.1:9/upload"));
    for i in 0..200 {
        env.put(
            ["Sega_1", "Sega_2"][i % 2],
            format!("p{i:03}.jpg"),
            &jpeg(i as u64),
        );
    }
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 1, "left pending: {}{}", o.stdout, o.stderr);
    assert_eq!(env.count_status("pending"), 200);
    for i in 0..50 {
        env.put("Sega_3", format!("n{i:03}.jpg"), &jpeg(1000 + i));
    }
    let d = env.start_daemon();
    // The INFO line (the ticker's own DEBUG line starts the same way).
    d.wait_log("INFO  catch-up scan:");
    let log = d.log_text();
    let ready = log
        .lines()
        .find(|l| l.contains("INFO  ready: "))
        .unwrap_or_else(|| panic!("no ready line: {log}"));
    assert!(
        ready.contains("; 200 pending; ") && ready.ends_with("; catch-up scan running"),
        "{ready}"
    );
    let catch_up = log
        .lines()
        .find(|l| l.contains("INFO  catch-up scan:"))
        .unwrap();
    assert!(
        catch_up.contains(", 50 newly recorded; 250 pending"),
        "{catch_up}"
    );
}

both_backends!(the_ready_line_counts_what_the_ledger_holds);
