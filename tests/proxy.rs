//! `upload.proxy` (issue 15): every request goes through the configured forward proxy —
//! absolute-form for http, a `CONNECT` tunnel for https — to an endpoint whose host name
//! resolves only at the proxy; the proxy's credentials go to the proxy alone; proxy
//! environment variables stay ignored.

use crate::tls::base64;
use crate::util::*;
use sega_testsrv::proxy::Proxy;
use sega_testsrv::tls::{Ca, TlsFront, Validity};
use serde_json::json;

fn jpeg(seed: u64) -> Vec<u8> {
    images::jpeg(16, 16, seed)
}

/// A name no resolver knows: only the proxy does.
const NAME: &str = "uploads.sega.test";

/// `Basic base64(px:<the seeded URL password>)`: the proxy's credentials.
fn proxy_basic() -> String {
    format!("Basic {}", base64(&format!("px:{}", SECRETS[0])))
}

fn proxy_url(p: &Proxy) -> String {
    format!("http://px:{}@{}", SECRETS[0], p.addr())
}

#[test]
fn http_goes_through_the_proxy_to_a_name_only_it_resolves() {
    let env = Env::new("proxy-http");
    let port = env.server.addr().port();
    let proxy = Proxy::start(&[(NAME, env.server.addr())], Some(&proxy_basic())).unwrap();
    env.set(
        "/upload/url",
        json!(format!("http://sega:{}@{NAME}:{port}/upload", SECRETS[0])),
    );
    env.set("/upload/proxy", json!(proxy_url(&proxy)));
    // One worker for four files: a connection to the proxy is never kept (a proxy that
    // only relays bytes after its first request would pass the rest straight to the
    // endpoint, its credentials with them).
    env.set("/upload/workers", json!(1));
    for (i, folder) in ["Sega_1", "Sega_2", "Sega_3", "Sega_1"].iter().enumerate() {
        env.put(
            folder,
            format!("{}.jpg", ["a", "b", "c", "d"][i]),
            &jpeg(1 + i as u64),
        );
    }
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(env.count_status("uploaded"), 4);
    let asked = proxy.asked();
    assert_eq!(asked.len(), 4, "{asked:?}");
    for a in &asked {
        assert_eq!(a.method, "POST");
        // The URL's own credentials never go into the request line.
        assert_eq!(a.target, format!("http://{NAME}:{port}/upload"));
        assert_eq!(
            a.proxy_authorization.as_deref(),
            Some(proxy_basic().as_str())
        );
    }
    for r in env.successful_uploads() {
        assert_eq!(
            r.header("Proxy-Authorization"),
            None,
            "the proxy's, not the endpoint's"
        );
        assert!(r
            .header("Authorization")
            .is_some_and(|a| a.starts_with("Basic ")));
    }
    let o = env.run(&["check-config"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains(&format!("ok   proxy {}: accepts TCP", proxy.addr())),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("\"proxy\": \"http://<redacted>@127.0.0.1:"),
        "{}",
        o.stdout
    );
}

#[test]
fn https_goes_through_a_connect_tunnel() {
    let env = Env::new("proxy-https");
    let ca = Ca::new("proxy test CA");
    let front = TlsFront::start(
        env.server.addr(),
        &ca.server_cert(&[NAME], Validity::Current),
        None,
    )
    .unwrap();
    let port = front.addr().port();
    let proxy = Proxy::start(&[(NAME, front.addr())], Some(&proxy_basic())).unwrap();
    let ca_file = env.dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    env.set("/upload/tls/ca_file", json!(ca_file));
    env.set(
        "/upload/url",
        json!(format!("https://sega:{}@{NAME}:{port}/upload", SECRETS[0])),
    );
    env.set("/upload/proxy", json!(proxy_url(&proxy)));
    env.put("Sega_1", "a.jpg", &jpeg(1));
    let o = env.run(&["scan"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(env.count_status("uploaded"), 1);
    let asked = proxy.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        (
            asked[0].method.as_str(),
            asked[0].target.as_str(),
            asked[0].status
        ),
        ("CONNECT", format!("{NAME}:{port}").as_str(), Some(200))
    );
    assert_eq!(
        asked[0].proxy_authorization.as_deref(),
        Some(proxy_basic().as_str())
    );
    let r = &env.successful_uploads()[0];
    assert_eq!(
        r.header("Proxy-Authorization"),
        None,
        "nothing of the proxy's in the tunnel"
    );
    // check-config shakes hands through the same tunnel.
    let o = env.run(&["check-config"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.lines().any(
            |l| l.starts_with(&format!("ok   TLS {NAME}:{port}: TLSv1."))
                && l.contains(&format!("certificate subject CN={NAME}"))
        ),
        "{}",
        o.stdout
    );
}

#[test]
fn a_proxy_refusing_our_credentials_keeps_files_pending() {
    let env = Env::new("proxy-407");
    let port = env.server.addr().port();
    let proxy = Proxy::start(&[(NAME, env.server.addr())], Some("Basic c29tZW9uZTplbHNl")).unwrap();
    env.set("/upload/url", json!(format!("http://{NAME}:{port}/upload")));
    env.set("/upload/proxy", json!(proxy_url(&proxy)));
    env.put("Sega_1", "a.jpg", &jpeg(1));
    assert_eq!(env.run(&["scan"]).code, 1);
    let row = env.row("a.jpg");
    assert_eq!(
        (row.status.as_str(), row.last_error.as_deref()),
        ("pending", Some("HTTP 407"))
    );
    assert_eq!(env.server.request_count(), 0);
}

#[test]
fn proxy_environment_variables_are_ignored() {
    let env = Env::new("proxy-env");
    let proxy = Proxy::start(&[], None).unwrap();
    let via = format!("http://{}", proxy.addr());
    env.put("Sega_1", "a.jpg", &jpeg(1));
    let mut c = env.cmd(&["scan"]);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        c.env(var, &via);
    }
    c.env_remove("no_proxy").env_remove("NO_PROXY");
    let o = env.capture(out(c.output().unwrap()));
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(env.count_status("uploaded"), 1);
    assert!(proxy.asked().is_empty(), "{:?}", proxy.asked());
}
