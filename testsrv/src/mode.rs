//! The fault modes and their spec strings (`status:500:0.3`, `delay:2s`, …).
//!
//! One parser (`FromStr`) serves both `--mode` and the control endpoint's `POST /mode`;
//! `Display` prints the same syntax back, so a mode round-trips through its spec.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How the server answers upload requests (any `POST`). Switchable while it runs; a change
/// applies from the next request (and, for `Refuse`, the next connection and the next
/// request on one already open).
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// 200, `application/json` `{"ok":true,"id":…,"filename":…,"size":…,"sha256":…}`.
    Ok,
    /// Answer `code` for a deterministic `fraction` of requests, else as `Ok`: request `k`
    /// (counted from 0 since the mode was set) fails iff `floor((k+1)f) > floor(kf)`.
    Status {
        /// The injected status.
        code: u16,
        /// 0.0 ..= 1.0.
        fraction: f64,
    },
    /// Always `code` (429 or 503 in practice) with `Retry-After: secs`.
    RetryAfter {
        /// The status.
        code: u16,
        /// The `Retry-After` value.
        secs: u64,
    },
    /// Read the request, wait this long, then answer as `Ok`.
    Delay(Duration),
    /// Read the request and never answer; close once the mode changes or the server stops.
    Hang,
    /// Read this many body bytes (or the whole body, if shorter), then close with RST.
    ResetMidBody {
        /// Body bytes read before the reset.
        after_bytes: u64,
    },
    /// Close the listening socket (connects get ECONNREFUSED); re-bind the same port when
    /// the mode changes away. A request on a connection kept open from before is closed
    /// unanswered and not recorded, as by a server that went away.
    Refuse,
    /// 200 with `text/html` body `<html>ok</html>`.
    NonJson,
    /// 200 with a body of this many bytes, streamed.
    HugeBody {
        /// Body length.
        bytes: usize,
    },
    /// Read the request body at this rate, then answer as `Ok`.
    SlowRead {
        /// Read rate.
        bytes_per_sec: u64,
    },
    /// Answer 200 with a 1 MiB JSON body sent at this rate.
    TrickleResponse {
        /// Send rate.
        bytes_per_sec: u64,
    },
    /// A 3xx with `Location`.
    Redirect {
        /// 300..=399.
        code: u16,
        /// The `Location` header.
        location: String,
    },
    /// `code` for uploads whose file name contains `needle` (an image the endpoint cannot
    /// process), 200 for every other.
    Poison {
        /// Matched against the decoded file name.
        needle: String,
        /// The answer for those files.
        code: u16,
    },
    /// Interim 1xx answers (`100 Continue`, `102 Processing`, `103 Early Hints`), in this
    /// order, before the final 200: RFC 9110 lets a server send them unasked.
    Interim(Vec<u16>),
    /// Always `code` with this body (`application/json` when it parses as JSON, else
    /// `text/plain`): an endpoint that explains its refusal, e.g.
    /// `answer:422:{"detail":"missing field camera_id"}`.
    Answer {
        /// The status.
        code: u16,
        /// The body, as is.
        body: String,
    },
    /// Answer `code` with `Connection: close` from the head alone, before reading any of the
    /// body, and close with the body unread (the kernel resets the connection): a proxy's
    /// 407 or a server's 413 as some send them, which a client still writing a large body
    /// meets as a failed write.
    Early {
        /// The status.
        code: u16,
    },
}

/// Whether request `k` (0-based since the mode was set) gets the injected status. The
/// sum over the first `n` requests telescopes to `floor(n * fraction)`: exact, no drift.
pub(crate) fn status_fails(fraction: f64, k: u64) -> bool {
    ((k + 1) as f64 * fraction).floor() > (k as f64 * fraction).floor()
}

const SYNTAX: &str = "ok, status:CODE[:FRACTION], retry-after:CODE:SECS, delay:Nms|Ns, hang, \
                      reset:BYTES, refuse, nonjson, huge:BYTES, slowread:BPS, trickle:BPS, \
                      redirect:CODE:LOCATION, poison:NEEDLE:CODE, interim:CODE[,CODE…], \
                      answer:CODE:BODY";

impl FromStr for Mode {
    type Err = String;

    fn from_str(spec: &str) -> Result<Mode, String> {
        let (kind, arg) = match spec.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (spec, None),
        };
        let mode = match (kind, arg) {
            ("ok", None) => Mode::Ok,
            ("hang", None) => Mode::Hang,
            ("refuse", None) => Mode::Refuse,
            ("nonjson", None) => Mode::NonJson,
            ("status", Some(a)) => {
                let (code, fraction) = match a.split_once(':') {
                    Some((c, f)) => (c, f.parse::<f64>().map_err(|_| bad(spec, f))?),
                    None => (a, 1.0),
                };
                if !(0.0..=1.0).contains(&fraction) {
                    return Err(format!("mode {spec:?}: fraction must be within 0..=1"));
                }
                let code = code_in(spec, code, 100..=599)?;
                Mode::Status { code, fraction }
            }
            ("retry-after", Some(a)) => {
                let (code, secs) = a.split_once(':').ok_or_else(|| bad(spec, a))?;
                Mode::RetryAfter {
                    code: code_in(spec, code, 100..=599)?,
                    secs: num(spec, secs)?,
                }
            }
            ("delay", Some(a)) => Mode::Delay(duration(spec, a)?),
            ("early", Some(a)) => Mode::Early {
                code: code_in(spec, a, 200..=599)?,
            },
            ("reset", Some(a)) => Mode::ResetMidBody {
                after_bytes: num(spec, a)?,
            },
            ("huge", Some(a)) => Mode::HugeBody {
                bytes: num(spec, a)? as usize,
            },
            ("slowread", Some(a)) => Mode::SlowRead {
                bytes_per_sec: rate(spec, a)?,
            },
            ("trickle", Some(a)) => Mode::TrickleResponse {
                bytes_per_sec: rate(spec, a)?,
            },
            ("redirect", Some(a)) => {
                let (code, location) = a.split_once(':').ok_or_else(|| bad(spec, a))?;
                // A CR or LF would let the spec inject headers into the response.
                if location.is_empty() || location.contains(['\r', '\n']) {
                    return Err(bad(spec, location));
                }
                let code = code_in(spec, code, 300..=399)?;
                Mode::Redirect {
                    code,
                    location: location.to_string(),
                }
            }
            ("poison", Some(a)) => {
                let (needle, code) = a.rsplit_once(':').ok_or_else(|| bad(spec, a))?;
                if needle.is_empty() {
                    return Err(bad(spec, a));
                }
                Mode::Poison {
                    needle: needle.to_string(),
                    code: code_in(spec, code, 100..=599)?,
                }
            }
            ("answer", Some(a)) => {
                let (code, body) = a.split_once(':').ok_or_else(|| bad(spec, a))?;
                Mode::Answer {
                    code: code_in(spec, code, 200..=599)?,
                    body: body.to_string(),
                }
            }
            ("interim", Some(a)) => Mode::Interim(
                a.split(',')
                    .map(|c| code_in(spec, c, 100..=199))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(format!("unknown mode {spec:?}; expected one of: {SYNTAX}")),
        };
        Ok(mode)
    }
}

fn bad(spec: &str, part: &str) -> String {
    format!("mode {spec:?}: bad value {part:?}; expected one of: {SYNTAX}")
}

fn num(spec: &str, s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| bad(spec, s))
}

fn rate(spec: &str, s: &str) -> Result<u64, String> {
    match num(spec, s)? {
        0 => Err(format!("mode {spec:?}: the rate must be at least 1 byte/s")),
        n => Ok(n),
    }
}

fn code_in(spec: &str, s: &str, range: std::ops::RangeInclusive<u16>) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(c) if range.contains(&c) => Ok(c),
        _ => Err(format!("mode {spec:?}: status must be within {range:?}")),
    }
}

fn duration(spec: &str, s: &str) -> Result<Duration, String> {
    if let Some(ms) = s.strip_suffix("ms") {
        Ok(Duration::from_millis(num(spec, ms)?))
    } else if let Some(secs) = s.strip_suffix('s') {
        Ok(Duration::from_secs(num(spec, secs)?))
    } else {
        Err(format!("mode {spec:?}: a delay needs a unit: 500ms or 2s"))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Ok => write!(f, "ok"),
            Mode::Status { code, fraction } if *fraction == 1.0 => write!(f, "status:{code}"),
            Mode::Status { code, fraction } => write!(f, "status:{code}:{fraction}"),
            Mode::RetryAfter { code, secs } => write!(f, "retry-after:{code}:{secs}"),
            Mode::Delay(d) if d.subsec_millis() == 0 => write!(f, "delay:{}s", d.as_secs()),
            Mode::Delay(d) => write!(f, "delay:{}ms", d.as_millis()),
            Mode::Hang => write!(f, "hang"),
            Mode::ResetMidBody { after_bytes } => write!(f, "reset:{after_bytes}"),
            Mode::Refuse => write!(f, "refuse"),
            Mode::NonJson => write!(f, "nonjson"),
            Mode::HugeBody { bytes } => write!(f, "huge:{bytes}"),
            Mode::SlowRead { bytes_per_sec } => write!(f, "slowread:{bytes_per_sec}"),
            Mode::TrickleResponse { bytes_per_sec } => write!(f, "trickle:{bytes_per_sec}"),
            Mode::Redirect { code, location } => write!(f, "redirect:{code}:{location}"),
            Mode::Poison { needle, code } => write!(f, "poison:{needle}:{code}"),
            Mode::Answer { code, body } => write!(f, "answer:{code}:{body}"),
            Mode::Early { code } => write!(f, "early:{code}"),
            Mode::Interim(codes) => {
                let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
                write!(f, "interim:{}", codes.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_spec_parses_and_round_trips() {
        for spec in [
            "ok",
            "status:503",
            "status:500:0.3",
            "retry-after:429:2",
            "delay:500ms",
            "delay:2s",
            "hang",
            "reset:4096",
            "early:413",
            "refuse",
            "nonjson",
            "huge:5000000",
            "slowread:10240",
            "trickle:100",
            "redirect:302:http://127.0.0.1:9/elsewhere",
            "poison:bad_image:500",
            "interim:100,102,103",
            r#"answer:422:{"detail":"missing field camera_id"}"#,
            "answer:500:",
        ] {
            let mode: Mode = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(mode.to_string(), spec);
        }
        assert_eq!(
            "status:503".parse(),
            Ok(Mode::Status {
                code: 503,
                fraction: 1.0
            })
        );
        assert_eq!(
            "delay:1500ms".parse(),
            Ok(Mode::Delay(Duration::from_millis(1500)))
        );
    }

    #[test]
    fn bad_specs_are_rejected() {
        for spec in [
            "",
            "okay",
            "ok:1",
            "status",
            "status:99",
            "status:500:1.5",
            "status:500:x",
            "retry-after:429",
            "delay:5",
            "reset:-1",
            "slowread:0",
            "redirect:200:/x",
            "redirect:302:",
            "redirect:302:/a\r\nX: y",
            "answer:422",
            "answer:99:x",
        ] {
            assert!(spec.parse::<Mode>().is_err(), "{spec:?} should be rejected");
        }
    }

    #[test]
    fn status_fraction_is_exact_and_deterministic() {
        let fails = |f: f64, n: u64| (0..n).filter(|&k| status_fails(f, k)).count();
        assert_eq!(fails(0.3, 10), 3);
        assert_eq!(fails(0.3, 1000), 300);
        assert_eq!(fails(1.0, 7), 7);
        assert_eq!(fails(0.0, 7), 0);
        let half: Vec<bool> = (0..4).map(|k| status_fails(0.5, k)).collect();
        assert_eq!(half, [false, true, false, true]);
    }
}
