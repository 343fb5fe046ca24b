//! The results: one `Row` per line of the table, printed as a Markdown table (the
//! same text goes into BENCHMARKS.md) and written as JSON.

use serde_json::{json, Value};

use crate::stats::{num, Summary};

/// What a row must reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    /// Informative only.
    None,
}

impl Target {
    fn met(self, x: f64) -> Option<bool> {
        match self {
            Target::AtMost(t) => Some(x <= t),
            Target::AtLeast(t) => Some(x >= t),
            Target::None => None,
        }
    }

    fn text(self, unit: &str) -> String {
        match self {
            Target::AtMost(t) => format!("≤ {} {unit}", fmt(t)),
            Target::AtLeast(t) => format!("≥ {} {unit}", fmt(t)),
            Target::None => "—".into(),
        }
    }
}

/// A further condition on a row (e.g. "≥ 5× curl"), already decided.
#[derive(Debug, Clone)]
pub struct Check {
    pub text: String,
    pub ok: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub what: String,
    pub unit: String,
    pub target: Target,
    pub value: Summary,
    /// Other tools measured the same way in the same run, e.g. ("xargs -P4 curl", …).
    pub others: Vec<(String, Summary)>,
    pub checks: Vec<Check>,
    /// How it was measured, raw numbers, anything that explains the figure.
    pub detail: Value,
}

impl Row {
    pub fn new(id: &str, what: &str, unit: &str, target: Target, value: Summary) -> Row {
        Row {
            id: id.into(),
            what: what.into(),
            unit: unit.into(),
            target,
            value,
            others: Vec::new(),
            checks: Vec::new(),
            detail: Value::Null,
        }
    }

    /// The target and every check; None when nothing is asked of this row or it did not run.
    pub fn met(&self) -> Option<bool> {
        if self.value.median.is_nan() {
            return Some(false);
        }
        let mut verdicts: Vec<bool> = self.target.met(self.value.median).into_iter().collect();
        verdicts.extend(self.checks.iter().filter_map(|c| c.ok));
        if verdicts.is_empty() {
            None
        } else {
            Some(verdicts.iter().all(|v| *v))
        }
    }

    pub fn to_json(&self) -> Value {
        let others: Vec<Value> = self
            .others
            .iter()
            .map(|(name, s)| json!({"tool": name, "value": s.to_json()}))
            .collect();
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| json!({"check": c.text, "met": c.ok}))
            .collect();
        json!({
            "id": self.id,
            "what": self.what,
            "unit": self.unit,
            "target": self.target.text(&self.unit),
            "value": self.value.to_json(),
            "others": others,
            "checks": checks,
            "met": self.met(),
            "detail": self.detail,
        })
    }
}

/// A number with sensible precision for the table.
pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn range(s: &Summary) -> String {
    format!("{}–{}", fmt(s.min), fmt(s.max))
}

/// The Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| what | target | sega-uploader: median (min–max) | same run, others | met |\n\
         |---|---|---|---|---|\n",
    );
    for r in rows {
        let mut others: Vec<String> = r
            .others
            .iter()
            .map(|(name, s)| format!("{name}: {} ({}) {}", fmt(s.median), range(s), r.unit))
            .collect();
        others.extend(r.checks.iter().map(|c| {
            let mark = match c.ok {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "",
            };
            format!("{} {mark}", c.text)
        }));
        let met = match r.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let cell = |s: &str| s.replace('|', "\\|");
        out.push_str(&format!(
            "| {} | {} | {} ({}) {} | {} | {} |\n",
            cell(&r.what),
            r.target.text(&r.unit),
            fmt(r.value.median),
            range(&r.value),
            r.unit,
            cell(&others.join("; ")),
            met
        ));
    }
    out
}

pub fn results_json(rows: &[Row], header: Value) -> Value {
    let mut doc = header;
    doc["rows"] = Value::Array(rows.iter().map(Row::to_json).collect());
    doc["missed"] = Value::Array(
        rows.iter()
            .filter(|r| r.met() == Some(false))
            .map(|r| json!(r.id))
            .collect(),
    );
    doc
}

/// `x` as a rounded JSON number (re-exported for the scenarios).
pub fn n(x: f64) -> Value {
    num(x)
}
