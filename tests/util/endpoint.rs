//! What reached the loopback endpoint: the requests for a file, their names, the successful
//! uploads, and the check that every written file arrived with the right bytes and one
//! `Idempotency-Key`.

use std::collections::{HashMap, HashSet};

use super::{Env, Request, Written};

impl Env {
    /// The endpoint answers 413 from a request's head and closes on its body (`early:413`);
    /// a 48 MiB image, far larger than a loopback connection's socket buffers (the write
    /// must fail), is scanned: it is `failed`, "HTTP 413". Its path.
    pub fn scan_a_big_file_refused_by_its_head(&self) -> std::path::PathBuf {
        self.server.set_mode(super::Mode::Early { code: 413 });
        let big = self.put(
            "Sega_1",
            "big.jpg",
            &super::images::jpeg_of_size(48 << 20, 1),
        );
        let o = self.run(&["scan"]);
        assert_eq!(o.code, 1, "a file failed: {}\n{}", o.stdout, o.stderr);
        let row = self.row("big.jpg");
        assert_eq!(
            (row.status.as_str(), row.last_error.as_deref()),
            ("failed", Some("HTTP 413")),
            "{}",
            o.stderr
        );
        big
    }

    /// Requests that carried a file, by decoded file name.
    pub fn uploads_of(&self, name: &[u8]) -> Vec<Request> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.file.as_ref().is_some_and(|f| f.filename == name))
            .collect()
    }

    /// The file names of every request that reached the endpoint, in arrival order.
    pub fn sent_names(&self) -> Vec<String> {
        self.server
            .requests()
            .iter()
            .filter_map(|r| r.file.as_ref())
            .map(|f| String::from_utf8_lossy(&f.filename).into_owned())
            .collect()
    }

    pub fn successful_uploads(&self) -> Vec<Request> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.status == Some(200) && r.file.is_some())
            .collect()
    }
}

/// Every written file arrived (right bytes) at least once; returns the duplicate count.
pub fn check_all_arrived(env: &Env, written: &Written) -> usize {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut keys: HashMap<String, HashSet<String>> = HashMap::new();
    for r in env.successful_uploads() {
        let f = r.file.as_ref().unwrap();
        let name = String::from_utf8_lossy(&f.filename).into_owned();
        if let Some(sha) = written.get(&name) {
            assert_eq!(&f.sha256, sha, "{name}: wrong bytes");
            *seen.entry(name.clone()).or_default() += 1;
            keys.entry(name)
                .or_default()
                .insert(r.header("Idempotency-Key").unwrap().to_string());
        }
    }
    let missing: Vec<_> = written
        .keys()
        .filter(|n| !seen.contains_key(*n))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "never arrived: {missing:?} ({} of {})",
        written.len() - seen.len(),
        written.len()
    );
    for (name, k) in &keys {
        assert_eq!(
            k.len(),
            1,
            "{name}: every re-send carries the same Idempotency-Key"
        );
    }
    seen.values().map(|n| n - 1).sum()
}
