//! A failed TLS connection in an operator's words: what is wrong with the server's
//! certificate (not trusted, the wrong name, expired), or that the server refused ours. One
//! sentence, used by the attempt's stored error (and so by the endpoint-down WARN and the
//! alert) and by `check-config`.

use std::io;

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError, Error};

/// The rustls error inside an I/O error, explained: attohttpc hands over the handshake's
/// errors (and those of a TLS record later on) as I/O errors that wrap it.
pub fn explain_io(e: &io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<Error>()?;
    Some(explain(inner))
}

/// A rustls error as one sentence, starting with "TLS: ".
pub fn explain(e: &Error) -> String {
    match e {
        Error::InvalidCertificate(c) => format!("TLS: the server's certificate {}", certificate(c)),
        Error::AlertReceived(a) => alert(*a),
        Error::NoCertificatesPresented => "TLS: the server presented no certificate".into(),
        Error::PeerIncompatible(p) => {
            format!("TLS: no protocol version or cipher suite in common with the server ({p:?})")
        }
        // What a plain-http server's "HTTP/1.1 400 …" looks like to a TLS client.
        Error::InvalidMessage(_) | Error::PeerSentOversizedRecord => {
            "TLS: the server did not answer in TLS (is the endpoint http:// rather than https://?)"
                .into()
        }
        e => format!("TLS: {e}"),
    }
}

fn certificate(c: &CertificateError) -> String {
    use CertificateError::*;
    match c {
        UnknownIssuer => "is not trusted (unknown issuer): if the endpoint uses a private CA, \
                          name its certificate in upload.tls.ca_file"
            .into(),
        NotValidForName => "does not match the endpoint's host name (name mismatch)".into(),
        NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "is not valid for {} (name mismatch: it is for {})",
            expected.to_str(),
            if presented.is_empty() {
                "no name".into()
            } else {
                presented
                    .iter()
                    .map(|p| bare(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        Expired => "has expired".into(),
        ExpiredContext { not_after, .. } => format!("expired on {}", utc(*not_after)),
        NotValidYet => "is not valid yet (is this host's clock right?)".into(),
        NotValidYetContext { not_before, .. } => format!(
            "is not valid before {} (is this host's clock right?)",
            utc(*not_before)
        ),
        Revoked => "has been revoked".into(),
        BadSignature => "has a bad signature".into(),
        InvalidPurpose | InvalidPurposeContext { .. } => "is not meant for a TLS server".into(),
        other => format!("is refused: {other}"),
    }
}

/// `other.example` out of webpki's `DnsName("other.example")`, `127.0.0.1` out of
/// `IpAddress(127.0.0.1)`; anything else as it is.
fn bare(presented: &str) -> &str {
    let inner = match (presented.find('('), presented.strip_suffix(')')) {
        (Some(open), Some(body)) => &body[open + 1..],
        _ => return presented,
    };
    inner
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(inner)
}

/// An alert the server sent: mostly its verdict on our client certificate.
fn alert(a: AlertDescription) -> String {
    use AlertDescription::*;
    match a {
        CertificateRequired => "TLS: the server requires a client certificate \
                                (upload.tls.client_cert and upload.tls.client_key)"
            .into(),
        BadCertificate
        | UnsupportedCertificate
        | CertificateUnknown
        | UnknownCA
        | CertificateExpired
        | CertificateRevoked
        | AccessDenied => format!(
            "TLS: the server refused our client certificate ({a:?}): it wants one from a CA \
             it trusts (upload.tls.client_cert)"
        ),
        HandshakeFailure => "TLS: the server ended the handshake (HandshakeFailure): no \
                             protocol or cipher in common, or it wants a client certificate"
            .into(),
        a => format!("TLS: the server ended the connection with alert {a:?}"),
    }
}

/// `2027-01-31 12:00:00 UTC`: a certificate's time, as openssl shows it (in UTC).
pub(super) fn utc(t: UnixTime) -> String {
    let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => format!("{secs} s after 1970"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;

    #[test]
    fn each_certificate_problem_names_its_cause() {
        let name = ServerName::try_from("up.example").unwrap().to_owned();
        #[rustfmt::skip]
        let cases = [
            (CertificateError::UnknownIssuer, "not trusted (unknown issuer)"),
            (CertificateError::NotValidForName, "name mismatch"),
            (CertificateError::NotValidForNameContext {
                expected: name,
                presented: vec!["DnsName(\"other.example\")".into(), "IpAddress(10.0.0.1)".into()],
            }, "is not valid for up.example (name mismatch: it is for other.example, 10.0.0.1)"),
            (CertificateError::Expired, "has expired"),
            (CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000)),
                not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_700_000_000)),
            }, "expired on 2023-11-14 22:13:20 UTC"),
        ];
        for (c, words) in cases {
            let text = explain(&Error::InvalidCertificate(c));
            assert!(text.starts_with("TLS: the server's certificate "), "{text}");
            assert!(text.contains(words), "{text}");
        }
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            Error::AlertReceived(AlertDescription::CertificateRequired),
        );
        assert!(explain_io(&io)
            .unwrap()
            .contains("requires a client certificate"));
        assert_eq!(explain_io(&io::Error::from(io::ErrorKind::TimedOut)), None);
    }
}
