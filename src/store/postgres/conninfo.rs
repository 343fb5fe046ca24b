//! What a database URL or libpq conninfo says about where the server is (for messages:
//! never the user or password), and the session settings the daemon adds to it unless the
//! operator set them.

use std::collections::HashSet;

use crate::dburl;

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What a URL or conninfo says about where the server is: (host, port, dbname), each None
/// when libpq's default applies. Never the user or password.
pub(super) fn server_of(url: &str) -> (Option<String>, Option<String>, Option<String>) {
    let (mut host, mut port, mut db) = (None, None, None);
    let params: Vec<(String, String)> = if let Some(u) = dburl::url(url) {
        let (hostport, path) = u.hostpath.split_once('/').unwrap_or((u.hostpath, ""));
        if !hostport.is_empty() {
            // `[::1]:5432`, `db.example:5432`, `h1:5432,h2:5433`
            match hostport.rsplit_once(':') {
                Some((h, p)) if !p.contains(']') && !p.contains(',') && !h.is_empty() => {
                    host = Some(percent_decode(h));
                    port = Some(p.to_owned());
                }
                _ => host = Some(percent_decode(hostport)),
            }
        }
        if !path.is_empty() {
            db = Some(percent_decode(path));
        }
        u.query
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect()
    } else {
        dburl::conninfo_pairs(url).0
    };
    for (k, v) in params {
        match k.as_str() {
            "host" | "hostaddr" => host = Some(v),
            "port" => port = Some(v),
            "dbname" => db = Some(v),
            _ => {}
        }
    }
    (host, port, db)
}

/// The URL or conninfo with the session settings the daemon needs added: keepalives so a
/// dead peer is noticed in seconds (the watchdog is 30 s), not after the kernel's two hours;
/// a connect timeout; a name in `pg_stat_activity`. What the operator set wins.
pub(super) fn session_conninfo(url: &str, host: &str) -> String {
    let mut wanted: Vec<(&str, String)> = vec![
        ("connect_timeout", "5".into()),
        ("keepalives", "1".into()),
        ("keepalives_idle", "5".into()),
        ("keepalives_interval", "2".into()),
        ("keepalives_count", "3".into()),
    ];
    // tcp_user_timeout (unacknowledged data, e.g. a link down mid-query) is libpq 12+; an
    // older libpq (Ubuntu 18.04 has 10) refuses the whole conninfo over an unknown key.
    if crate::libpq::version() >= 120000 {
        wanted.push(("tcp_user_timeout", "10000".into()));
    }
    wanted.push(("application_name", format!("sega-uploader/{host}")));
    let parsed = dburl::url(url);
    let given: HashSet<String> = match parsed {
        Some(u) => u
            .query
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
            .collect(),
        None => dburl::conninfo_pairs(url)
            .0
            .into_iter()
            .map(|(k, _)| k)
            .collect(),
    };
    let mut out = url.to_owned();
    // The query begins at the first `?` after the userinfo (a password may hold one).
    let mut has_query = parsed.is_some_and(|u| u.query.is_some());
    for (k, v) in wanted {
        if given.contains(k) {
            continue;
        }
        if parsed.is_some() {
            out.push(if has_query { '&' } else { '?' });
            has_query = true;
            out.push_str(&format!("{k}={}", percent_encode(&v)));
        } else {
            let v = v.replace('\\', "\\\\").replace('\'', "\\'");
            out.push_str(&format!(" {k}='{v}'"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_settings_are_added_unless_given() {
        let v = crate::libpq::version() >= 120000;
        let u = session_conninfo("postgres://u:pw@db.example:5432/sega", "cam 1");
        assert!(
            u.starts_with("postgres://u:pw@db.example:5432/sega?connect_timeout=5&keepalives=1"),
            "{u}"
        );
        assert!(
            u.contains("application_name=sega-uploader%2Fcam%201"),
            "{u}"
        );
        assert_eq!(u.contains("tcp_user_timeout=10000"), v);
        let u = session_conninfo(
            "postgresql://db/sega?keepalives_idle=30&sslmode=disable",
            "h",
        );
        assert!(
            u.contains("?keepalives_idle=30&sslmode=disable&connect_timeout=5"),
            "{u}"
        );
        assert_eq!(u.matches("keepalives_idle").count(), 1, "{u}");
        let c = session_conninfo("host=/tmp dbname = sega connect_timeout=2", "h");
        assert!(
            c.starts_with("host=/tmp dbname = sega connect_timeout=2 keepalives='1'"),
            "{c}"
        );
        assert_eq!(c.matches("connect_timeout").count(), 1, "{c}");
        assert!(c.contains("application_name='sega-uploader/h'"), "{c}");
    }

    #[test]
    fn server_of_never_shows_the_password() {
        assert_eq!(
            server_of("postgres://u:secret@db.example:6543/sega?sslmode=require"),
            (
                Some("db.example".into()),
                Some("6543".into()),
                Some("sega".into())
            )
        );
        assert_eq!(
            server_of("postgresql://%2Frun%2Fpg/sega"),
            (Some("/run/pg".into()), None, Some("sega".into()))
        );
        assert_eq!(
            server_of("host=db password='x y' dbname=sega"),
            (Some("db".into()), None, Some("sega".into()))
        );
        assert_eq!(server_of(""), (None, None, None));
    }
}
