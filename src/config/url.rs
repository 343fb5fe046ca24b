//! The http(s) URLs of the config, `upload.url` and `alerts.webhook_url`: parsed once into
//! an [`Endpoint`] (scheme, host, port), with any credentials kept out of what is printed,
//! and refused when this build could not send to them.

use std::net::Ipv6Addr;

use crate::secret::{Secret, REDACTED};

/// An http(s) URL split into the parts the uploader and `check-config` need.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// As configured: it may hold credentials. [`Endpoint::redacted`] is what to print.
    pub url: Secret<String>,
    /// The URL with any `user:password@` replaced by `<redacted>@`.
    shown: String,
    pub scheme: Scheme,
    /// Lowercase; an IPv6 literal without its brackets, ready for `(host, port)` lookups.
    pub host: String,
    /// The explicit port, else 80 or 443.
    pub port: u16,
    pub has_credentials: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Endpoint {
    /// Parses `http[s]://[userinfo@]host[:port][/path][?query]`. Error messages never quote
    /// the URL: it may hold credentials, or be a secret webhook as a whole.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        if s.contains('#') {
            return Err("must not contain a fragment (`#…`)".into());
        }
        let (scheme, rest) = match s.split_once("://") {
            Some((name, rest)) if name.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((name, rest)) if name.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            _ => return Err("must start with http:// or https://".into()),
        };
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        // The userinfo ends at the *last* `@`: a password may contain an unencoded one.
        let (has_credentials, host_port) = match authority.rfind('@') {
            Some(at) => (true, &authority[at + 1..]),
            None => (false, authority),
        };
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (addr, after) = bracketed
                .split_once(']')
                .ok_or("has an IPv6 address without its closing `]`")?;
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err("has an invalid IPv6 address in `[…]`".into());
            }
            if !after.is_empty() && !after.starts_with(':') {
                return Err("has unexpected text after the IPv6 address".into());
            }
            (addr, after)
        } else {
            let colon = host_port.rfind(':').unwrap_or(host_port.len());
            let host = &host_port[..colon];
            if host.is_empty() {
                return Err("has no host".into());
            }
            if !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~%".contains(c))
            {
                return Err(
                    "has a host with characters other than ASCII letters, digits, \
                            `-`, `.` and `_` (write an international name as xn--…)"
                        .into(),
                );
            }
            (host, &host_port[colon..])
        };
        let port = match port.strip_prefix(':') {
            None => match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            },
            // Checked for digits first: `str::parse` would also accept a leading `+`.
            Some(digits) => match digits.parse::<u16>() {
                Ok(port) if port > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return Err("has a port that is not a number from 1 to 65535".into()),
            },
        };
        Ok(Endpoint {
            url: Secret::new(s.to_string()),
            shown: redact_userinfo(s),
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            has_credentials,
        })
    }

    /// The URL with any `user:password@` replaced by `<redacted>@`: safe to print or log.
    pub fn redacted(&self) -> &str {
        &self.shown
    }
}

/// `scheme://user:password@host…` with the userinfo replaced by `<redacted>`.
fn redact_userinfo(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &url[..start], &rest[at..]),
        None => url.to_owned(),
    }
}

/// This build sends plain http only (no TLS library: the package must run on old Ubuntu
/// without libssl); an https URL would fail at every upload, so it is refused here.
pub(super) fn plain_http(e: Endpoint) -> Result<Endpoint, String> {
    match e.scheme {
        Scheme::Http => Ok(e),
        Scheme::Https => {
            Err("https is not supported by this build (no TLS); use an http:// URL".into())
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        use Scheme::*;
        #[rustfmt::skip]
        let cases = [
            ("http://211.231.137.111:18000/upload", Http, "211.231.137.111", 18000, false),
            ("https://Upload.Example.COM/u?x=1", Https, "upload.example.com", 443, false),
            ("HTTP://host", Http, "host", 80, false),
            ("http://host:65535?q", Http, "host", 65535, false),
            ("http://[::1]:8080/up", Http, "::1", 8080, false),
            ("https://[2001:db8::7]", Https, "2001:db8::7", 443, false),
            ("https://user:p@ss@host:8443/x", Https, "host", 8443, true),
            ("http://token@[::1]/", Http, "::1", 80, true),
        ];
        for (url, scheme, host, port, creds) in cases {
            let e = Endpoint::parse(url).unwrap_or_else(|m| panic!("{url}: {m}"));
            assert_eq!(e.url.expose(), url);
            assert_eq!(
                (e.scheme, &*e.host, e.port, e.has_credentials),
                (scheme, host, port, creds)
            );
        }
        #[rustfmt::skip]
        let errors = [
            ("ftp://host/", "http:// or https://"), ("host:80/upload", "http:// or https://"),
            ("http://", "no host"), ("http://:80/", "no host"), ("http://user@/x", "no host"),
            ("http://host:0/", "1 to 65535"), ("http://host:65536/", "1 to 65535"),
            ("http://host:+80/", "1 to 65535"), ("http://host:/", "1 to 65535"),
            ("http://host/a b", "spaces"), ("http://host/#top", "fragment"),
            ("http://[::1/", "closing `]`"), ("http://[nope]/", "invalid IPv6"),
            ("http://[::1]x/", "after the IPv6"), ("http://hö.st/", "xn--"),
        ];
        for (url, fragment) in errors {
            let err = Endpoint::parse(url).expect_err(url);
            assert!(err.contains(fragment), "{url}: {err}");
        }
    }
}
