//! The http(s) URLs of the config, `upload.url` and `alerts.webhook_url`: parsed once into
//! an [`Endpoint`] (scheme, host, port), with any credentials kept out of what is printed.

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

    /// The URL without its `user:password@` (sent as Basic auth instead): what the request
    /// is made to. Still a secret: a query may hold a token.
    pub fn without_credentials(&self) -> Secret<String> {
        let url = self.url.expose();
        let start = url.find("://").map_or(0, |i| i + 3);
        let rest = &url[start..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        let host = authority.rfind('@').map_or(0, |at| at + 1);
        Secret::new(format!("{}{}", &url[..start], &rest[host..]))
    }

    /// Whether connections to it are made with TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// The `Authorization` header that the URL's `user:password@` stands for: HTTP Basic
    /// (RFC 7617), user and password percent-decoded, joined by `:` and base64-encoded, as
    /// curl sends them. `None` when the URL has no credentials.
    pub fn basic_auth(&self) -> Option<Secret<String>> {
        if !self.has_credentials {
            return None;
        }
        let url = self.url.expose();
        let rest = &url[url.find("://")? + 3..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        let userinfo = &authority[..authority.rfind('@')?];
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let mut pair = percent_decode(user);
        pair.push(b':');
        pair.extend(percent_decode(password));
        Some(Secret::new(format!("Basic {}", base64(&pair))))
    }
}

/// `%XX` as the byte it stands for; anything else (a lone `%` included) as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648 §4): the one place it is needed.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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

    #[test]
    fn credentials_can_be_left_out() {
        for (url, bare) in [
            ("http://u:p@h:1/x?q=1", "http://h:1/x?q=1"),
            ("https://user:p@ss@[::1]/", "https://[::1]/"),
            ("http://h/u?x=a@b", "http://h/u?x=a@b"),
        ] {
            let e = Endpoint::parse(url).unwrap();
            assert_eq!(e.without_credentials().expose(), bare, "{url}");
        }
    }

    #[test]
    fn url_credentials_become_basic_auth() {
        #[rustfmt::skip]
        let cases = [
            // RFC 7617's example.
            ("http://Aladdin:open%20sesame@h/u", Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")),
            // The last `@` ends the userinfo; `%40` and `%3A` are decoded.
            ("https://user:p@ss@h:8443/x", Some("Basic dXNlcjpwQHNz")),
            ("http://us%3Aer:p%40ss@h/", Some("Basic dXM6ZXI6cEBzcw==")),
            // A user without a password is sent with an empty one, as curl does.
            ("http://token@[::1]/", Some("Basic dG9rZW46")),
            ("http://a:@h/", Some("Basic YTo=")),
            // A lone or broken `%` stays as it is.
            ("http://a:100%@h/", Some("Basic YToxMDAl")),
            ("http://h/u?x=a@b", None),
            ("http://h/u", None),
        ];
        for (url, expected) in cases {
            let e = Endpoint::parse(url).unwrap_or_else(|m| panic!("{url}: {m}"));
            let auth = e.basic_auth();
            assert_eq!(
                auth.as_ref().map(|a| a.expose().as_str()),
                expected,
                "{url}"
            );
            if let Some(a) = auth {
                assert_eq!(format!("{a:?} {a}"), "<redacted> <redacted>");
            }
        }
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }
}
