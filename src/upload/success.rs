//! `upload.success`: whether a 2xx answer says what the endpoint's success looks like (a
//! value at a JSON pointer), and if not, why, in the words the stored result keeps
//! ("answer /success is false"). Judged here, where the answer is read; the owner's judge
//! then treats the mismatch as the rule's `on_mismatch` says.

use serde_json::Value;

use crate::config::{OnMismatch, SuccessRule};
use crate::layout::text_line;
use crate::work::Mismatch;

/// The longest quoted value in a reason.
const QUOTE: usize = 80;

/// `None` when `answer` (the parsed body; `None` if it is not JSON) holds `rule.equals` at
/// `rule.json_pointer`. `cut`: the body was longer than what was read (the cap), or its
/// reading failed, so it could not be judged whole.
pub(super) fn mismatch(rule: &SuccessRule, answer: Option<&Value>, cut: bool) -> Option<Mismatch> {
    let why = match (answer, cut) {
        (_, true) => "answer could not be read whole (over 64 KiB, or cut short): \
                      upload.success cannot tell"
            .to_string(),
        (None, false) => "answer is not JSON".into(),
        (Some(doc), false) => match doc.pointer(&rule.json_pointer) {
            Some(v) if *v == rule.equals => return None,
            Some(v) => format!("answer {}is {}", at(rule), quote(v)),
            None => format!("answer has no {}", rule.json_pointer),
        },
    };
    Some(Mismatch {
        why,
        fail: rule.on_mismatch == OnMismatch::Fail,
    })
}

fn at(rule: &SuccessRule) -> String {
    if rule.json_pointer.is_empty() {
        String::new()
    } else {
        format!("{} ", rule.json_pointer)
    }
}

/// A JSON value as compact JSON, at most `QUOTE` characters, safe for one line of a log or a
/// terminal: serde_json escapes control characters (`\n`, `\u0000`) but writes the ones
/// that move text as they are (a bidi override that makes the reason read backwards, U+2028
/// that some viewers break the line at), so `text_line` escapes those too.
fn quote(v: &Value) -> String {
    let text = v.to_string();
    let text = match text.char_indices().nth(QUOTE) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    };
    text_line(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(pointer: &str, equals: Value, on_mismatch: OnMismatch) -> SuccessRule {
        SuccessRule {
            json_pointer: pointer.into(),
            equals,
            on_mismatch,
        }
    }

    #[test]
    fn a_two_hundred_is_judged_by_its_answer() {
        let r = rule("/success", json!(true), OnMismatch::Retry);
        let why = |body: &str| {
            let doc = serde_json::from_str::<Value>(body).ok();
            mismatch(&r, doc.as_ref(), false).map(|m| m.why)
        };
        assert_eq!(why(r#"{"success": true, "id": 7}"#), None);
        assert_eq!(
            why(r#"{"success": false, "error": "camera_id missing"}"#).as_deref(),
            Some("answer /success is false")
        );
        assert_eq!(
            why(r#"{"success": "true"}"#).as_deref(),
            Some("answer /success is \"true\"")
        );
        assert_eq!(
            why(r#"{"ok": true}"#).as_deref(),
            Some("answer has no /success")
        );
        assert_eq!(why("OK").as_deref(), Some("answer is not JSON"));
        assert_eq!(why("").as_deref(), Some("answer is not JSON"));
        let long = format!(r#"{{"success": "{}"}}"#, "x".repeat(500));
        let text = why(&long).unwrap();
        assert!(text.ends_with('…') && text.len() < 120, "{text}");
        let doc = json!({"success": true});
        let cut = mismatch(&r, Some(&doc), true).unwrap();
        assert!(cut.why.contains("could not be read whole") && !cut.fail);
    }

    /// Review finding: serde_json leaves the characters that move text as they are, and the
    /// endpoint chooses the value quoted: the reason went raw into the log and `status`.
    #[test]
    fn a_quoted_value_cannot_move_text() {
        let r = rule("/success", json!(true), OnMismatch::Fail);
        let doc = json!({"success": "\u{202e}gpj.live\u{2028}forged\u{1b}[2J"});
        let m = mismatch(&r, Some(&doc), false).unwrap();
        assert_eq!(
            m.why,
            r#"answer /success is "\u{202e}gpj.live\u{2028}forged\u001b[2J""#
        );
    }

    #[test]
    fn pointers_and_modes() {
        let nested = rule("/result/0/a~1b", json!("ok"), OnMismatch::Fail);
        let doc = json!({"result": [{"a/b": "ok"}]});
        assert_eq!(mismatch(&nested, Some(&doc), false), None);
        let doc = json!({"result": [{"a/b": "no"}]});
        let m = mismatch(&nested, Some(&doc), false).unwrap();
        assert_eq!(
            (m.why.as_str(), m.fail),
            ("answer /result/0/a~1b is \"no\"", true)
        );
        let whole = rule("", json!(0), OnMismatch::Retry);
        assert_eq!(mismatch(&whole, Some(&json!(0)), false), None);
        let m = mismatch(&whole, Some(&json!(1)), false).unwrap();
        assert_eq!(m.why, "answer is 1");
    }
}
