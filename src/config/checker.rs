//! The checker: typed getters over the config's JSON that record a problem instead of
//! stopping, so the walk goes on and every problem is reported in one go; the absolute-path
//! rule they share; and how a problem reads (its dotted location, "did you mean", a value's
//! kind where the value may be a secret).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::Problem;

/// Upper bound for every `*_secs` value (ten years): `Instant + Duration` panics on overflow,
/// so a typo such as 1e15 must be refused here rather than crash a timer later.
const MAX_SECS: u64 = 10 * 365 * 86_400;
const ABSOLUTE: &str = "must be an absolute path (a relative one would depend on the working \
                        directory, which under systemd is `/`)";

/// Collects problems while the walk goes on. Getters return the default (or `None`) when a
/// value is wrong; the config is only built when no problem was recorded.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

/// One JSON object of the config and its dotted location (`None`: absent or not an object).
pub(super) struct Obj<'a> {
    loc: String,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Obj<'a> {
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key))
    }

    pub(super) fn loc(&self, key: &str) -> String {
        join(&self.loc, key)
    }
}

impl Checker {
    pub(super) fn report(&mut self, location: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(location, message));
    }

    /// No problem was recorded at `location`: cross-key rules use this to avoid piling a
    /// second, derived complaint onto a value already reported as wrong.
    pub(super) fn ok(&self, location: &str) -> bool {
        !self.problems.iter().any(|p| p.location == location)
    }

    pub(super) fn check<T>(&mut self, location: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| self.report(location, message))
            .ok()
    }

    /// A config section: absent means every key takes its default; unknown keys are reported.
    /// `known` lists the section's keys, separated by spaces.
    pub(super) fn object<'a>(&mut self, loc: &str, v: Option<&'a Value>, known: &str) -> Obj<'a> {
        let map = v.and_then(|v| self.map(loc, v));
        for key in map.into_iter().flat_map(|m| m.keys()) {
            if !known.split_whitespace().any(|k| k == key) {
                self.report(&join(loc, key), unknown_key(key, known));
            }
        }
        Obj {
            loc: loc.to_string(),
            map,
        }
    }

    /// Type errors for objects and arrays name only the kind of value found: a secret put one
    /// level too high (`"headers": "Bearer …"`) must not be echoed.
    pub(super) fn map<'a>(&mut self, loc: &str, v: &'a Value) -> Option<&'a Map<String, Value>> {
        let map = v.as_object();
        if map.is_none() {
            self.report(loc, format!("expected an object {{…}}, got {}", kind(v)));
        }
        map
    }

    pub(super) fn array<'a>(&mut self, loc: &str, v: &'a Value) -> Option<&'a Vec<Value>> {
        let array = v.as_array();
        if array.is_none() {
            self.report(loc, format!("expected an array […], got {}", kind(v)));
        }
        array
    }

    pub(super) fn str_value<'a>(&mut self, loc: &str, v: &'a Value) -> Option<&'a str> {
        let s = v.as_str();
        if s.is_none() {
            self.report(loc, format!("expected a string, got {}", describe(v)));
        }
        s
    }

    pub(super) fn string<'a>(
        &mut self,
        o: &Obj<'a>,
        key: &str,
        default: &'a str,
    ) -> Option<&'a str> {
        match o.get(key) {
            None => Some(default),
            Some(v) => self.str_value(&o.loc(key), v),
        }
    }

    /// A string that may be `null` (absent means `null`).
    pub(super) fn opt_string<'a>(&mut self, o: &Obj<'a>, key: &str) -> Option<&'a str> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(v) => {
                self.report(
                    &o.loc(key),
                    format!("expected a string or null, got {}", describe(v)),
                );
                None
            }
        }
    }

    pub(super) fn path(&mut self, o: &Obj, key: &str, default: &str) -> PathBuf {
        let s = self.string(o, key, default).unwrap_or(default);
        self.check(&o.loc(key), absolute(s))
            .unwrap_or_else(|| PathBuf::from(default))
    }

    pub(super) fn opt_path(&mut self, o: &Obj, key: &str) -> Option<PathBuf> {
        let s = self.opt_string(o, key)?;
        self.check(&o.loc(key), absolute(s))
    }

    pub(super) fn secs(&mut self, o: &Obj, key: &str, default: u64, min: u64) -> Duration {
        let secs = match o.get(key) {
            None => default,
            Some(v) => self
                .whole(&o.loc(key), v, "a whole number of seconds", min, MAX_SECS)
                .unwrap_or(default),
        };
        Duration::from_secs(secs)
    }

    pub(super) fn number(&mut self, o: &Obj, key: &str, default: u64, min: u64, max: u64) -> u64 {
        match o.get(key) {
            None => default,
            Some(v) => self
                .whole(&o.loc(key), v, "a whole number", min, max)
                .unwrap_or(default),
        }
    }

    pub(super) fn opt_number(&mut self, o: &Obj, key: &str, min: u64, max: u64) -> Option<u64> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.whole(&o.loc(key), v, "a whole number or null", min, max),
        }
    }

    fn whole(&mut self, loc: &str, v: &Value, expected: &str, min: u64, max: u64) -> Option<u64> {
        let n = match v {
            Value::Number(n) if n.is_u64() => n.as_u64(),
            Value::Number(n) if n.is_i64() => {
                self.report(loc, format!("must not be negative, got {n}"));
                None
            }
            other => {
                self.report(loc, format!("expected {expected}, got {}", describe(other)));
                None
            }
        }?;
        if n < min {
            self.report(loc, format!("must be at least {min}"));
            None
        } else if n > max {
            self.report(loc, format!("must be at most {max}"));
            None
        } else {
            Some(n)
        }
    }
}

/// `parent.key`; an empty key is shown as `""` so the location still points somewhere.
pub(super) fn join(parent: &str, key: &str) -> String {
    match (parent.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => format!("{parent}.\"\""),
        (false, false) => format!("{parent}.{key}"),
    }
}

/// An absolute path, normalised (`//`, `.` and a trailing `/` dropped) so that identity
/// comparisons on paths built from it hold. `..` is refused: it would hide what is watched.
pub(super) fn absolute(s: &str) -> Result<PathBuf, String> {
    let path = Path::new(s);
    if !path.is_absolute() {
        return Err(ABSOLUTE.into());
    }
    if s.contains('\0') {
        return Err("must not contain a NUL character".into());
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("must not contain `..`".into());
    }
    Ok(path.components().collect())
}

fn unknown_key(key: &str, known: &str) -> String {
    let known: Vec<&str> = known.split_whitespace().collect();
    // `scan_interval` for `scan_interval_secs` is the typo a newcomer makes most.
    let hint = known
        .iter()
        .copied()
        .find(|k| k.strip_suffix("_secs") == Some(key))
        .or_else(|| {
            let mut close: Vec<(usize, &str)> =
                known.iter().map(|k| (edit_distance(key, k), *k)).collect();
            close.retain(|&(d, _)| d <= 2);
            close.into_iter().min_by_key(|&(d, _)| d).map(|(_, k)| k)
        });
    match hint {
        Some(k) => format!("unknown key (did you mean `{k}`?)"),
        None => format!("unknown key (known: {})", known.join(", ")),
    }
}

/// Levenshtein distance, on chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A value as shown in a type error: short JSON, or its kind when it is long.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => kind(v).into(),
        Value::String(s) if s.chars().count() > 40 => kind(v).into(),
        other => other.to_string(),
    }
}

/// A value's kind only, for places where the value may be a secret.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message without its " at line L column C" tail: the location carries that.
pub(super) fn json_problem(e: &serde_json::Error) -> Problem {
    let full = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&tail).unwrap_or(&full).to_string();
    Problem::new(format!("line {}, column {}", e.line(), e.column()), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_hints() {
        let known = "root folders settle_secs";
        let cases = [
            ("folder", "unknown key (did you mean `folders`?)"),
            ("settle", "unknown key (did you mean `settle_secs`?)"),
            ("zzz", "unknown key (known: root, folders, settle_secs)"),
        ];
        for (key, message) in cases {
            assert_eq!(unknown_key(key, known), message);
        }
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
