//! `check-config`'s TLS lines: the trust store and the client certificate loaded as the
//! daemon would load them (readable, valid PEM, the key belongs to the certificate), and,
//! online, a handshake with the endpoint showing the certificate it presents.

use std::time::Duration;

use rustls::pki_types::UnixTime;

use super::{line, Verdict};
use crate::config::{self, Config};
use crate::layout::Show;
use crate::tls::{self, CertInfo, ClientTls};

/// A certificate that ends sooner than this gets a warning.
const SOON: Duration = Duration::from_secs(14 * 86_400);

/// Runs the TLS checks when an https URL or `upload.tls` asks for them; each line's
/// verdict goes to `note`.
pub(super) fn check_tls(config: &Config, offline: bool, note: &mut dyn FnMut(Verdict)) {
    let u = &config.upload;
    let webhook_https = config.alerts.webhook_url.as_ref().is_some_and(|w| {
        w.expose()
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    });
    let needed = u.url.is_https() || webhook_https;
    if !needed && u.tls == config::Tls::default() {
        return;
    }
    if !needed {
        note(line(
            Verdict::Warn,
            "upload.tls",
            "set, but neither upload.url nor alerts.webhook_url is https://: not used",
        ));
    }
    let tls = match ClientTls::load(&u.tls) {
        Ok(t) => t,
        Err(e) => {
            note(line(
                Verdict::Fail,
                e.key,
                &format!("{}: {}", e.path.shown(), e.why),
            ));
            return;
        }
    };
    trust(&tls, needed, note);
    if let (Some(id), Some(cert)) = (&u.tls.client, &tls.client) {
        let (v, when) = validity(cert);
        let detail = format!(
            "{}: {}{when}; its key {} belongs to it",
            id.cert.shown(),
            cert.summary(),
            id.key.shown()
        );
        note(line(v, "TLS client certificate", &detail));
    }
    if !u.url.is_https() {
        return;
    }
    let what = format!("TLS {}:{}", u.url.host, u.url.port);
    if offline {
        line(Verdict::Ok, &what, "handshake not tried (--offline)");
        return;
    }
    let proxy = u.proxy.as_ref();
    let hs = match tls::handshake(&tls, &u.url.host, u.url.port, proxy, u.connect_timeout) {
        Ok(hs) => hs,
        // Through a proxy, the tunnel may be what failed; else the TCP line said it all.
        Err(e) if proxy.is_some() => {
            note(line(Verdict::Fail, &what, &e));
            return;
        }
        Err(_) => {
            note(Verdict::Fail);
            return;
        }
    };
    let presented = hs.cert.as_ref().map(|c| (c.summary(), validity(c)));
    match (hs.result, presented) {
        (Ok(proto), Some((summary, (v, when)))) => note(line(
            v,
            &what,
            &format!("{proto}; certificate {summary}{when}"),
        )),
        (Ok(proto), None) => note(line(Verdict::Ok, &what, &proto)),
        (Err(e), Some((summary, _))) => note(line(
            Verdict::Fail,
            &what,
            &format!("{e}; it presented {summary}"),
        )),
        (Err(e), None) => note(line(Verdict::Fail, &what, &e)),
    }
}

/// How many CA certificates are trusted, and from where.
fn trust(tls: &ClientTls, needed: bool, note: &mut dyn FnMut(Verdict)) {
    let from: Vec<String> = tls
        .system_from
        .iter()
        .map(|p| p.shown().to_string())
        .collect();
    let mut detail = format!(
        "{} CA certificate(s) from the system store ({})",
        tls.system_roots,
        if from.is_empty() {
            "none found".into()
        } else {
            from.join(", ")
        }
    );
    if tls.extra_roots > 0 {
        detail += &format!(", {} from upload.tls.ca_file", tls.extra_roots);
    }
    let v = if tls.system_roots + tls.extra_roots > 0 {
        Verdict::Ok
    } else if needed {
        detail += ": no https connection can be verified";
        Verdict::Fail
    } else {
        Verdict::Warn
    };
    note(line(v, "TLS trust", &detail));
    for p in tls.system_problems.iter().take(3) {
        note(line(Verdict::Warn, "TLS trust", p));
    }
}

/// Warn when a certificate has ended, has not begun or ends within `SOON`.
fn validity(c: &CertInfo) -> (Verdict, String) {
    let now = UnixTime::now().as_secs();
    let (start, end) = (c.not_before.as_secs(), c.not_after.as_secs());
    if now > end {
        (Verdict::Warn, " (EXPIRED)".into())
    } else if now < start {
        (Verdict::Warn, " (NOT VALID YET)".into())
    } else if end - now < SOON.as_secs() {
        let days = (end - now) / 86_400;
        (Verdict::Warn, format!(" (expires in {days} day(s))"))
    } else {
        (Verdict::Ok, String::new())
    }
}
