//! `database.url`, read the way libpq reads it: a `postgres://` URL or a keyword/value
//! conninfo. One parser for everything that looks inside it: the config check, the
//! redacted form every message shows, and the PostgreSQL ledger (where the server is, and
//! the session settings it adds). It never prints a password: [`redacted`] hides the
//! URL's whole userinfo password and every `password`/`sslpassword` value, and a string it
//! cannot follow to the end is shown only as far as it could.

/// What a redacted secret prints as.
use crate::secret::REDACTED;

/// A `postgres://` URL split as libpq splits it: the userinfo ends at the first `@` before
/// any `/`; the query starts at the first `?` after the userinfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Url<'a> {
    pub scheme: &'a str,
    pub userinfo: Option<&'a str>,
    /// `host[:port][,host…][/dbname]`.
    pub hostpath: &'a str,
    pub query: Option<&'a str>,
}

pub fn url(s: &str) -> Option<Url<'_>> {
    let (scheme, rest) = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|p| s.strip_prefix(p).map(|r| (*p, r)))?;
    let (userinfo, after) = match rest.find(['@', '/']) {
        Some(i) if rest.as_bytes()[i] == b'@' => (Some(&rest[..i]), &rest[i + 1..]),
        _ => (None, rest),
    };
    let (hostpath, query) = match after.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (after, None),
    };
    Some(Url {
        scheme,
        userinfo,
        hostpath,
        query,
    })
}

/// The `key=value` pairs of a conninfo (values unquoted), and whether the whole string was
/// understood (false: it stopped at something that is not `key = value`).
pub fn conninfo_pairs(s: &str) -> (Vec<(String, String)>, bool) {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return (out, true);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if key.is_empty() || chars.next() != Some('=') {
            return (out, false);
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return (out, false);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

fn is_password(key: &str) -> bool {
    key == "password" || key == "sslpassword"
}

/// The URL or conninfo with every password replaced by `<redacted>`: what messages show.
pub fn redacted(s: &str) -> String {
    if let Some(u) = url(s) {
        let mut out = u.scheme.to_owned();
        if let Some(info) = u.userinfo {
            match info.split_once(':') {
                Some((user, _)) => out += &format!("{user}:{REDACTED}@"),
                None => out += &format!("{info}@"),
            }
        }
        // A second `@` before the path would be read as part of the host: its text may be
        // the rest of a password.
        if u.hostpath.split('/').next().unwrap_or("").contains('@') {
            return out + REDACTED;
        }
        out += u.hostpath;
        if let Some(q) = u.query {
            let params: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if is_password(k) => format!("{k}={REDACTED}"),
                    Some(_) => kv.to_owned(),
                    // A parameter without `=` is malformed: show nothing of it.
                    None => REDACTED.to_owned(),
                })
                .collect();
            out += "?";
            out += &params.join("&");
        }
        return out;
    }
    let (pairs, complete) = conninfo_pairs(s);
    let mut shown: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            if is_password(k) {
                format!("{k}={REDACTED}")
            } else if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    if !complete {
        shown.push(REDACTED.to_owned());
    }
    shown.join(" ")
}

/// Problems with a URL that libpq would accept but misread, said without quoting it.
pub fn check(s: &str) -> Result<(), String> {
    if let Some(u) = url(s) {
        if u.hostpath.split('/').next().unwrap_or("").contains('@') {
            return Err(
                "has more than one `@` before its path: write an `@` in a user name \
                        or password as %40"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_however_they_are_written() {
        for (url, shown) in [
            (
                "postgres://sega:hunter2@db:5432/sega",
                "postgres://sega:<redacted>@db:5432/sega",
            ),
            // A `?` in the password: libpq reads the userinfo up to the `@`.
            (
                "postgres://sega:hunter2?x@127.0.0.1:5432/sega",
                "postgres://sega:<redacted>@127.0.0.1:5432/sega",
            ),
            (
                "postgresql://db/sega?password=hunter2&sslmode=disable",
                "postgresql://db/sega?password=<redacted>&sslmode=disable",
            ),
            (
                "postgres://db/sega?sslpassword=KEYPASS",
                "postgres://db/sega?sslpassword=<redacted>",
            ),
            (
                "postgres://u:p@ss@host/db",
                "postgres://u:<redacted>@<redacted>",
            ),
            (
                "host=db user=sega password=hunter2 dbname=sega",
                "host=db user=sega password=<redacted> dbname=sega",
            ),
            (
                "host=127.0.0.1 dbname=sega\tpassword=TABSECRET user=sega",
                "host=127.0.0.1 dbname=sega password=<redacted> user=sega",
            ),
            (
                "host=db password = 'it''s secret' dbname=x",
                "host=db password=<redacted> <redacted>",
            ),
            ("host=db password='unterminated", "host=db <redacted>"),
            ("host=db sslpassword=KEY", "host=db sslpassword=<redacted>"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }

    #[test]
    fn urls_split_as_libpq_splits_them() {
        let u = url("postgres://a:b?c@h1:5432,h2/db?sslmode=require").unwrap();
        assert_eq!(u.userinfo, Some("a:b?c"));
        assert_eq!(u.hostpath, "h1:5432,h2/db");
        assert_eq!(u.query, Some("sslmode=require"));
        let u = url("postgresql://h/db").unwrap();
        assert_eq!((u.userinfo, u.hostpath, u.query), (None, "h/db", None));
        assert!(check("postgres://u:p@ss@host/db").is_err());
        assert!(check("postgres://u:p%40ss@host/db").is_ok());
    }
}
