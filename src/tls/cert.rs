//! What a certificate says about itself, for messages: its subject, its issuer and its
//! validity, read straight from the DER (RFC 5280 §4.1). rustls checks certificates but
//! does not show them; this small reader saves a general X.509 crate for three fields.
//! Anything it does not understand makes it return `None`: it never decides trust.

use std::fmt::Write as _;

use rustls::pki_types::UnixTime;

/// A certificate's names and validity as text fit for a log line (control characters
/// escaped: a certificate is the server's words).
#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    /// `CN=up.example, O=Example`: the attributes in the certificate's own order.
    pub subject: String,
    pub issuer: String,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
}

impl CertInfo {
    /// Reads a DER certificate; `None` if it is not one this reader understands.
    pub fn read(der: &[u8]) -> Option<CertInfo> {
        let (cert, _) = expect(der, SEQUENCE)?;
        let (tbs, _) = expect(cert, SEQUENCE)?;
        let mut rest = tbs;
        // version [0] EXPLICIT, optional.
        if let Some((0xa0, _, after)) = tlv(rest) {
            rest = after;
        }
        let (_serial, rest) = expect(rest, INTEGER)?;
        let (_algorithm, rest) = expect(rest, SEQUENCE)?;
        let (issuer, rest) = expect(rest, SEQUENCE)?;
        let (validity, rest) = expect(rest, SEQUENCE)?;
        let (subject, _) = expect(rest, SEQUENCE)?;
        let (not_before, after) = time_of(validity)?;
        let (not_after, _) = time_of(after)?;
        Some(CertInfo {
            subject: name(subject)?,
            issuer: name(issuer)?,
            not_before,
            not_after,
        })
    }

    /// `subject CN=up.example, issuer CN=Example CA, expires 2027-01-31 12:00:00 UTC`.
    pub fn summary(&self) -> String {
        format!(
            "subject {}, issuer {}, expires {}",
            self.subject,
            self.issuer,
            super::explain::utc(self.not_after)
        )
    }
}

const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;

/// One DER element: tag, content, what follows. Definite lengths up to 4 bytes only.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (t, content, rest) if t == tag => Some((content, rest)),
        _ => None,
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`, 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time_of(input: &[u8]) -> Option<(UnixTime, &[u8])> {
    let (tag, content, rest) = tlv(input)?;
    let text = std::str::from_utf8(content).ok()?.strip_suffix('Z')?;
    let (year, text) = match tag {
        0x17 => {
            let yy: i32 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 => (text.get(..4)?.parse().ok()?, &text[4..]),
        _ => return None,
    };
    if text.len() != 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let two = |i: usize| text[i..i + 2].parse::<u8>().ok();
    let month = time::Month::try_from(two(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, two(2)?).ok()?;
    let at = date.with_hms(two(4)?, two(6)?, two(8)?).ok()?.assume_utc();
    let secs = u64::try_from(at.unix_timestamp()).ok()?;
    Some((
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        rest,
    ))
}

/// A Name (RDNSequence) as `CN=…, O=…`, in the order it is encoded.
fn name(mut rdns: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (mut set, rest) = expect(rdns, SET)?;
        rdns = rest;
        while !set.is_empty() {
            let (pair, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = expect(pair, OID)?;
            let (tag, value, _) = tlv(value)?;
            parts.push(format!("{}={}", attribute(oid), string(tag, value)));
        }
    }
    Some(if parts.is_empty() {
        "(empty)".into()
    } else {
        parts.join(", ")
    })
}

/// The short name of a Name attribute, or its dotted OID.
fn attribute(oid: &[u8]) -> String {
    #[rustfmt::skip]
    const KNOWN: &[(&[u8], &str)] = &[
        (&[85, 4, 3], "CN"), (&[85, 4, 6], "C"), (&[85, 4, 7], "L"), (&[85, 4, 8], "ST"),
        (&[85, 4, 10], "O"), (&[85, 4, 11], "OU"), (&[85, 4, 5], "serialNumber"),
        (&[42, 134, 72, 134, 247, 13, 1, 9, 1], "emailAddress"),
        (&[9, 146, 38, 137, 147, 242, 44, 100, 1, 25], "DC"),
    ];
    if let Some((_, short)) = KNOWN.iter().find(|(o, _)| *o == oid) {
        return (*short).into();
    }
    let mut arcs = Vec::new();
    let mut n: u64 = 0;
    for &b in oid {
        n = n << 7 | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (n / 40).min(2);
                arcs.push(first);
                arcs.push(n - first * 40);
            } else {
                arcs.push(n);
            }
            n = 0;
        }
    }
    let dotted: Vec<String> = arcs.iter().map(u64::to_string).collect();
    dotted.join(".")
}

/// A directory string as text: UTF8String, PrintableString, IA5String, TeletexString
/// (read as Latin-1) and BMPString; anything else as `#hex`.
fn string(tag: u8, value: &[u8]) -> String {
    let text: String = match tag {
        0x0c | 0x13 | 0x16 => String::from_utf8_lossy(value).into_owned(),
        0x14 => value.iter().map(|&b| char::from(b)).collect(),
        0x1e => char::decode_utf16(
            value
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        _ => {
            let mut hex = String::from("#");
            for b in value {
                let _ = write!(hex, "{b:02x}");
            }
            return hex;
        }
    };
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_validity_of_a_real_certificate() {
        let ca = sega_testsrv::tls::Ca::new("Test Root CA");
        let leaf = ca.server_cert(&["up.example"], sega_testsrv::tls::Validity::Current);
        let info = CertInfo::read(&leaf.cert_der).unwrap();
        assert_eq!(info.subject, "CN=up.example");
        assert_eq!(info.issuer, "O=sega-uploader tests, CN=Test Root CA");
        let now = UnixTime::now().as_secs();
        assert!(info.not_before.as_secs() < now && now < info.not_after.as_secs());
        assert!(info.summary().starts_with(
            "subject CN=up.example, issuer O=sega-uploader tests, CN=Test Root CA, expires 2"
        ));
        let expired = ca.server_cert(&["up.example"], sega_testsrv::tls::Validity::Expired);
        let info = CertInfo::read(&expired.cert_der).unwrap();
        assert!(info.not_after.as_secs() < UnixTime::now().as_secs());
        assert_eq!(CertInfo::read(b"\x30\x03\x02\x01\x01"), None);
        assert_eq!(CertInfo::read(b""), None);
    }

    #[test]
    fn times_names_and_odd_strings() {
        let (t, rest) = time_of(b"\x17\x0d491231235959Z!").unwrap();
        assert_eq!((t.as_secs(), rest), (2_524_607_999, &b"!"[..]));
        let (t, _) = time_of(b"\x17\x0d700101000000Z").unwrap();
        assert_eq!(t.as_secs(), 0);
        // 1950: before what a UnixTime holds.
        assert_eq!(time_of(b"\x17\x0d500101000000Z"), None);
        let (t, _) = time_of(b"\x18\x0f20380119031408Z").unwrap();
        assert_eq!(t.as_secs(), 2_147_483_648);
        assert_eq!(time_of(b"\x17\x0d491331235959Z"), None);
        assert_eq!(attribute(&[85, 4, 3]), "CN");
        assert_eq!(attribute(&[85, 4, 65]), "2.5.4.65");
        assert_eq!(attribute(&[43, 6, 1, 4, 1, 130, 55]), "1.3.6.1.4.1.311");
        assert_eq!(string(0x0c, b"a\nb"), "a\\nb");
        assert_eq!(string(0x1e, &[0, b'h', 0xd5, 0x5c]), "h\u{d55c}");
        assert_eq!(string(0x14, &[0xe9]), "\u{e9}");
        assert_eq!(string(0x04, &[1, 0xab]), "#01ab");
    }
}
