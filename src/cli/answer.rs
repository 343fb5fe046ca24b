//! An endpoint's answer as the ledger stores it (an `upload_results` row: the status, the
//! error, the body as text of at most 64 KiB) made into human output: whole for `show`
//! (JSON pretty-printed, every line made safe for a terminal, a long answer cut with what was
//! left out said), or one line for `list -v`.

use serde_json::Value;

use crate::layout::text_line;
use crate::store::ResultRow;
use crate::work::RESPONSE_CAP;

/// What `show` prints of one answer without `--full`: any error document fits; a 60 KiB
/// HTML error page repeated over 20 attempts would bury the row.
const SHOWN_LINES: usize = 60;
const SHOWN_BYTES: usize = 4096;

/// `list -v`'s line stops here, with an ellipsis.
const LINE_CHARS: usize = 160;

/// The stored body as lines for a terminal, after a header line saying what it is.
/// `indent` starts every line.
pub fn body_lines(body: &str, full: bool, indent: &str) -> Vec<String> {
    if body.is_empty() {
        return vec![format!("{indent}answer: empty")];
    }
    let parsed = serde_json::from_str::<Value>(body).ok();
    let mut about = vec![format!("{} bytes as stored", body.len())];
    let text = match &parsed {
        Some(v) => {
            about.push("JSON, pretty-printed".into());
            serde_json::to_string_pretty(v).unwrap_or_else(|_| body.to_owned())
        }
        None => body.to_owned(),
    };
    if body.contains(char::REPLACEMENT_CHARACTER) {
        about.push("bytes that were not UTF-8 show as \u{fffd}".into());
    }
    // The worker stores at most RESPONSE_CAP bytes (a little less when invalid bytes grew
    // into U+FFFD at the edge): a body that long was probably cut before it was stored.
    if body.len() + 3 > RESPONSE_CAP {
        about.push(format!(
            "the ledger keeps the first {} KiB of an answer: it may have been longer",
            RESPONSE_CAP / 1024
        ));
    }
    let mut out = vec![format!("{indent}answer ({}):", about.join("; "))];
    // A final newline ends the last line; it starts no empty one.
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let all: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut bytes = 0;
    for (i, line) in all.iter().enumerate() {
        let room = SHOWN_BYTES.saturating_sub(bytes);
        if !full && (i == SHOWN_LINES || room == 0) {
            let left: usize = all[i..].iter().map(|l| l.len() + 1).sum();
            out.push(cut_note(indent, all.len() - i, left));
            return out;
        }
        if !full && line.len() > room {
            let end = floor_char_boundary(line, room);
            out.push(format!("{indent}  {}…", text_line(&line[..end])));
            let left: usize =
                line.len() - end + all[i + 1..].iter().map(|l| l.len() + 1).sum::<usize>();
            out.push(cut_note(indent, all.len() - i - 1, left));
            return out;
        }
        bytes += line.len() + 1;
        out.push(format!("{indent}  {}", text_line(line)));
    }
    out
}

fn cut_note(indent: &str, lines: usize, bytes: usize) -> String {
    format!(
        "{indent}  … cut here: {bytes} more byte(s), {lines} more line(s); \
         `show --full` (or `--json`) prints the whole answer"
    )
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The latest answer in one line (`list -v`): `HTTP 422 {"detail":"missing field camera_id"}`
/// (a JSON body compacted, else its first non-blank line), with the error when it says more
/// than the status (`HTTP 200 (answer /ok is false) …`); the error alone when nothing
/// answered (`connection refused`).
pub fn one_line(r: &ResultRow) -> String {
    let line = match r.http_status {
        Some(st) => {
            let mut s = format!("HTTP {st}");
            if let Some(e) = r.error.as_deref().filter(|e| *e != s) {
                s += &format!(" ({e})");
            }
            match r.response_body.as_deref().and_then(first_line) {
                Some(b) => s + " " + &b,
                None => s + " (empty answer)",
            }
        }
        None => r
            .error
            .clone()
            .unwrap_or_else(|| r.outcome.as_str().to_owned()),
    };
    let line = match line.char_indices().nth(LINE_CHARS) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    };
    text_line(&line)
}

fn first_line(body: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return serde_json::to_string(&v).ok();
    }
    body.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Attempted;
    use crate::timestamp::Timestamp;

    fn result(status: Option<i64>, body: Option<&str>, error: Option<&str>) -> ResultRow {
        ResultRow {
            id: 1,
            attempt: 1,
            started_at: Timestamp::parse("2026-12-01T17:10:05.000Z"),
            duration_ms: 12,
            http_status: status,
            response_body: body.map(str::to_owned),
            response_json: None,
            error: error.map(str::to_owned),
            outcome: Attempted::Failed,
            host: None,
        }
    }

    #[test]
    fn a_json_answer_is_pretty_printed() {
        let lines = body_lines(r#"{"detail":"missing field camera_id"}"#, false, "  ");
        assert_eq!(
            lines,
            [
                "  answer (36 bytes as stored; JSON, pretty-printed):",
                "    {",
                r#"      "detail": "missing field camera_id""#,
                "    }",
            ]
        );
        assert_eq!(body_lines("", false, ""), ["answer: empty"]);
    }

    #[test]
    fn text_is_shown_safely_and_cut_with_a_note() {
        let lines = body_lines("bad\u{1b}[2J\r\nsecond \u{fffd}\n", false, "");
        assert_eq!(
            lines[0],
            "answer (20 bytes as stored; bytes that were not UTF-8 show as \u{fffd}):"
        );
        assert_eq!(&lines[1..], ["  bad\\x1b[2J", "  second \u{fffd}"]);

        let many: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let lines = body_lines(&many, false, "");
        assert_eq!(lines.len(), 1 + SHOWN_LINES + 1);
        assert_eq!(lines[SHOWN_LINES], "  line 59");
        assert!(
            lines[SHOWN_LINES + 1].contains("40 more line(s)"),
            "{}",
            lines[SHOWN_LINES + 1]
        );
        assert_eq!(body_lines(&many, true, "").len(), 1 + 100);

        let long = "é".repeat(RESPONSE_CAP / 2);
        let lines = body_lines(&long, false, "");
        assert!(lines[0].contains("it may have been longer"), "{}", lines[0]);
        assert_eq!(lines.len(), 3);
        assert!(lines[1].ends_with('…') && lines[1].len() <= SHOWN_BYTES + 8);
        assert!(
            lines[2].contains(&format!(
                "{} more byte(s), 0 more line(s)",
                RESPONSE_CAP - SHOWN_BYTES
            )),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn the_last_answer_in_one_line() {
        let r = result(
            Some(422),
            Some("{\n  \"detail\": \"missing field camera_id\"\n}\n"),
            Some("HTTP 422"),
        );
        assert_eq!(
            one_line(&r),
            r#"HTTP 422 {"detail":"missing field camera_id"}"#
        );
        let r = result(
            Some(200),
            Some(r#"{"ok":false}"#),
            Some("answer /ok is false"),
        );
        assert_eq!(
            one_line(&r),
            r#"HTTP 200 (answer /ok is false) {"ok":false}"#
        );
        let r = result(
            Some(502),
            Some("\n\n<html>\u{1b}]0;x\n<body>"),
            Some("HTTP 502"),
        );
        assert_eq!(one_line(&r), "HTTP 502 <html>\\x1b]0;x");
        assert_eq!(
            one_line(&result(Some(204), None, None)),
            "HTTP 204 (empty answer)"
        );
        let r = result(None, None, Some("connection refused"));
        assert_eq!(one_line(&r), "connection refused");
        let r = result(Some(500), Some(&"x".repeat(500)), Some("HTTP 500"));
        assert_eq!(one_line(&r).chars().count(), LINE_CHARS + 1);
    }
}
