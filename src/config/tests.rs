//! The whole walk through [`parse`] and [`load`]: defaults, every rule at its key, every
//! problem in one go, secrets kept out of output and errors.

use super::*;

/// DESIGN §6 verbatim, plus the keys added since (`upload.keep_alive`): every key with its
/// default.
const FULL: &str = r#"{
  "watch": { "root": "/data", "folders": ["Sega_1", "Sega_2", "Sega_3"],
             "extensions": ["jpg", "jpeg", "png"], "scan_interval_secs": 60,
             "settle_secs": 5, "lookback_days": 1, "incomplete_max_wait_secs": 600 },
  "upload": { "url": "http://211.231.137.111:18000/upload", "file_field": "file",
              "fields": { "folder": "{folder}", "date": "{date}" }, "headers": {},
              "workers": 4, "connect_timeout_secs": 5, "timeout_secs": 60,
              "min_rate_kib_s": 64, "order": "oldest_first", "max_kib_s": null,
              "retry": { "initial_secs": 5, "max_secs": 600, "max_attempts": 0 },
              "tls": { "ca_file": null, "client_cert": null, "client_key": null },
              "proxy": null, "keep_alive": true, "success": null },
  "database": { "path": "/var/lib/sega/sega-uploader.db", "keep_days": 90,
                "scope": null, "url": null, "host": null, "lease_secs": 60 },
  "log": { "level": "info", "file": null },
  "metrics": { "textfile": null },
  "alerts": { "webhook_url": null, "after_secs": 300, "backlog_secs": 3600 },
  "shutdown_grace_secs": 10
}"#;
const MINIMAL: &str = r#"{"upload": {"url": "http://211.231.137.111:18000/upload"}}"#;

/// MINIMAL with `patch` merged in, object by object.
fn with(patch: &str) -> String {
    fn merge(base: &mut Value, patch: Value) {
        match (base, patch) {
            (Value::Object(b), Value::Object(p)) => {
                for (k, v) in p {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
            (b, p) => *b = p,
        }
    }
    let mut base: Value = serde_json::from_str(MINIMAL).unwrap();
    merge(&mut base, serde_json::from_str(patch).unwrap());
    base.to_string()
}

fn problems(text: &str) -> Vec<Problem> {
    parse(text).expect_err("config should be refused").problems
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn database_urls_are_shown_without_their_password() {
    let cases = [
        (
            "postgres://sega:s3cret@db:5432/sega",
            "postgres://sega:<redacted>@db:5432/sega",
        ),
        ("postgresql://sega@db/sega", "postgresql://sega@db/sega"),
        (
            "postgres://db/sega?password=s3cret&sslmode=disable",
            "postgres://db/sega?password=<redacted>&sslmode=disable",
        ),
        (
            "host=db user=sega password=s3cret dbname=sega",
            "host=db user=sega password=<redacted> dbname=sega",
        ),
        (
            "host=db password = 'se cr\\'et' dbname=sega",
            "host=db password=<redacted> dbname=sega",
        ),
        (
            "host=/run/postgresql dbname=sega",
            "host=/run/postgresql dbname=sega",
        ),
    ];
    for (url, shown) in cases {
        assert_eq!(redact_db_url(url), shown, "{url}");
    }
    let c = parse(
        r#"{"upload": {"url": "http://127.0.0.1:9/u"},
        "database": {"url": "postgres://sega:s3cret@db/sega"}}"#,
    );
    if cfg!(feature = "postgres") {
        let c = c.unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!c.redacted_json().to_string().contains("s3cret"));
    } else {
        let e = c.unwrap_err().to_string();
        assert!(
            e.contains("no PostgreSQL support") && !e.contains("s3cret"),
            "{e}"
        );
    }
}

#[test]
fn minimal_config_gets_every_default() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(
        c.redacted_json(),
        serde_json::from_str::<Value>(FULL).unwrap()
    );
    let folders: Vec<_> = c
        .watch
        .folders
        .iter()
        .map(|f| (&*f.label, &*f.path))
        .collect();
    assert_eq!(
        folders,
        [
            ("Sega_1", Path::new("/data/Sega_1")),
            ("Sega_2", Path::new("/data/Sega_2")),
            ("Sega_3", Path::new("/data/Sega_3")),
        ]
    );
    assert_eq!((c.watch.scan_interval, c.watch.settle), (secs(60), secs(5)));
    assert_eq!(
        (&*c.upload.url.host, c.upload.url.port),
        ("211.231.137.111", 18000)
    );
    assert_eq!((c.upload.workers, c.upload.order), (4, Order::OldestFirst));
    let retry = Retry {
        initial: secs(5),
        max: secs(600),
        max_attempts: 0,
    };
    assert_eq!(c.upload.retry, retry);
    assert_eq!(
        (c.log.level, c.shutdown_grace),
        (LevelFilter::Info, secs(10))
    );
}

#[test]
fn full_document_parses_and_round_trips() {
    let full = parse(FULL).unwrap();
    assert_eq!(full, parse(MINIMAL).unwrap());
    let shown = full.redacted_json();
    assert_eq!(shown, serde_json::from_str::<Value>(FULL).unwrap());
    // Keys come out in DESIGN §6 order, not alphabetically.
    let keys: Vec<_> = shown.as_object().unwrap().keys().collect();
    let order = "watch upload database log metrics alerts shutdown_grace_secs";
    assert_eq!(keys, order.split(' ').collect::<Vec<_>>());
    assert_eq!(parse(&shown.to_string()).unwrap(), full);
}

#[test]
fn accepts_edge_values() {
    let c = parse(&with(
        r#"{"watch": {"root": "/srv//img/", "folders": ["A", "/mnt/cam/B/"],
                      "extensions": [".JPG", "jpg", "Png"], "settle_secs": 0,
                      "lookback_days": 0},
            "upload": {"retry": {"max_attempts": 0}, "order": "newest_first",
                       "max_kib_s": 512},
            "database": {"keep_days": 3, "scope": "site-a"},
            "log": {"level": "DEBUG", "file": "/var/log/sega/x.log"},
            "shutdown_grace_secs": 0}"#,
    ))
    .unwrap();
    assert_eq!(c.watch.root, Path::new("/srv/img"));
    let folders: Vec<_> = c
        .watch
        .folders
        .iter()
        .map(|f| (&*f.label, &*f.path))
        .collect();
    assert_eq!(
        folders,
        [
            ("A", Path::new("/srv/img/A")),
            ("B", Path::new("/mnt/cam/B"))
        ]
    );
    assert_eq!(c.watch.extensions, ["jpg", "png"]);
    assert_eq!((c.watch.settle, c.watch.lookback_days), (Duration::ZERO, 0));
    assert_eq!(
        (c.upload.order, c.upload.max_kib_s),
        (Order::NewestFirst, Some(512))
    );
    assert_eq!(
        (c.database.keep_days, c.database.scope.as_deref()),
        (3, Some("site-a"))
    );
    assert_eq!(
        (c.log.level, c.shutdown_grace),
        (LevelFilter::Debug, Duration::ZERO)
    );
    // An absolute folder outside root is shown in full, one under root by its name.
    assert_eq!(
        c.redacted_json()["watch"]["folders"],
        json!(["A", "/mnt/cam/B"])
    );
}

#[test]
fn each_rule_is_enforced_at_its_key() {
    // (patch merged into MINIMAL, location, part of the message); exactly one problem each.
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        (r#"{"wacth": {}}"#, "wacth", "unknown key (did you mean `watch`?)"),
        (r#"{"watch": {"rootz": "/x"}}"#, "watch.rootz", "unknown key (did you mean `root`?)"),
        (r#"{"watch": {"scan_interval": 60}}"#, "watch.scan_interval", "did you mean `scan_interval_secs`?"),
        (r#"{"upload": {"retry": {"jitter": 1}}}"#, "upload.retry.jitter", "unknown key (known: initial_secs,"),
        (r#"{"watch": 5}"#, "watch", "expected an object {…}, got a number"),
        (r#"{"upload": {"headers": "Bearer s3cret"}}"#, "upload.headers", "expected an object {…}, got a string"),
        (r#"{"upload": []}"#, "upload", "expected an object {…}, got an array"),
        (r#"{"watch": {"root": "data"}}"#, "watch.root", "must be an absolute path"),
        (r#"{"watch": {"root": "/data/../etc"}}"#, "watch.root", "must not contain `..`"),
        (r#"{"watch": {"folders": []}}"#, "watch.folders", "at least one folder"),
        (r#"{"watch": {"folders": "Sega_1"}}"#, "watch.folders", "expected an array […], got a string"),
        (r#"{"watch": {"folders": ["A", "a/b"]}}"#, "watch.folders[1]", "plain folder name"),
        (r#"{"watch": {"folders": [".."]}}"#, "watch.folders[0]", "plain folder name"),
        (r#"{"watch": {"folders": [""]}}"#, "watch.folders[0]", "must not be empty"),
        (r#"{"watch": {"folders": [7]}}"#, "watch.folders[0]", "expected a string, got 7"),
        (r#"{"watch": {"folders": ["/"]}}"#, "watch.folders[0]", "no last component"),
        (r#"{"watch": {"folders": ["Sega_1", "B", "/mnt/x/Sega_1"]}}"#, "watch.folders[2]", "label `Sega_1` is used twice"),
        (r#"{"watch": {"extensions": []}}"#, "watch.extensions", "at least one extension"),
        (r#"{"watch": {"extensions": ["jpg", "."]}}"#, "watch.extensions[1]", "must not be empty"),
        (r#"{"watch": {"extensions": ["a/b"]}}"#, "watch.extensions[0]", "must not contain `/`"),
        (r#"{"watch": {"scan_interval_secs": 0}}"#, "watch.scan_interval_secs", "must be at least 1"),
        (r#"{"watch": {"scan_interval_secs": 1.5}}"#, "watch.scan_interval_secs", "expected a whole number of seconds, got 1.5"),
        (r#"{"watch": {"scan_interval_secs": "60"}}"#, "watch.scan_interval_secs", "got \"60\""),
        (r#"{"watch": {"settle_secs": -1}}"#, "watch.settle_secs", "must not be negative"),
        (r#"{"watch": {"incomplete_max_wait_secs": 0}}"#, "watch.incomplete_max_wait_secs", "at least 1"),
        (r#"{"watch": {"lookback_days": 99999}}"#, "watch.lookback_days", "must be at most 36500"),
        (r#"{"shutdown_grace_secs": 1e18}"#, "shutdown_grace_secs", "expected a whole number of seconds"),
        (r#"{"shutdown_grace_secs": 999999999999}"#, "shutdown_grace_secs", "must be at most"),
        (r#"{"upload": {"url": 5}}"#, "upload.url", "expected a string, got 5"),
        (r#"{"upload": {"url": "ftp://h/x"}}"#, "upload.url", "must start with http:// or https://"),
        (r#"{"upload": {"workers": 0}}"#, "upload.workers", "must be at least 1"),
        (r#"{"upload": {"workers": 65}}"#, "upload.workers", "must be at most 64"),
        (r#"{"upload": {"workers": "4"}}"#, "upload.workers", "expected a whole number, got \"4\""),
        (r#"{"upload": {"connect_timeout_secs": 0}}"#, "upload.connect_timeout_secs", "at least 1"),
        (r#"{"upload": {"timeout_secs": 0}}"#, "upload.timeout_secs", "at least 1"),
        (r#"{"upload": {"min_rate_kib_s": 0}}"#, "upload.min_rate_kib_s", "at least 1"),
        (r#"{"upload": {"max_kib_s": 0}}"#, "upload.max_kib_s", "at least 1"),
        (r#"{"upload": {"order": "random"}}"#, "upload.order", "expected \"oldest_first\" or \"newest_first\", got \"random\""),
        (r#"{"upload": {"keep_alive": "no"}}"#, "upload.keep_alive", "expected true or false, got \"no\""),
        (r#"{"upload": {"retry": {"initial_secs": 700}}}"#, "upload.retry.initial_secs", "must not exceed upload.retry.max_secs (600)"),
        (r#"{"upload": {"retry": {"max_secs": 0}}}"#, "upload.retry.max_secs", "at least 1"),
        (r#"{"upload": {"retry": {"max_attempts": -1}}}"#, "upload.retry.max_attempts", "must not be negative"),
        (r#"{"upload": {"file_field": ""}}"#, "upload.file_field", "must not be empty"),
        (r#"{"upload": {"file_field": "a\"b"}}"#, "upload.file_field", "must not contain `\"`"),
        (r#"{"upload": {"fields": []}}"#, "upload.fields", "expected an object"),
        (r#"{"upload": {"fields": {"": "x"}}}"#, "upload.fields.\"\"", "field name must not be empty"),
        (r#"{"upload": {"fields": {"a\nb": "x"}}}"#, "upload.fields.a\nb", "field name must not contain"),
        (r#"{"upload": {"fields": {"cam": "{nope}"}}}"#, "upload.fields.cam", "unknown placeholder `{nope}`"),
        (r#"{"upload": {"fields": {"cam": 5}}}"#, "upload.fields.cam", "expected a string"),
        (r#"{"upload": {"fields": {"file": "{path}"}}}"#, "upload.fields.file", "same name as upload.file_field"),
        (r#"{"upload": {"headers": {"Bad Name": "x"}}}"#, "upload.headers.Bad Name", "not a valid header name"),
        (r#"{"upload": {"headers": {"user-agent": "x"}}}"#, "upload.headers.user-agent", "cannot be set here: sega-uploader sends"),
        (r#"{"upload": {"headers": {"Idempotency-Key": "x"}}}"#, "upload.headers.Idempotency-Key", "computes it per file version"),
        (r#"{"upload": {"headers": {"Content-Type": "x"}}}"#, "upload.headers.Content-Type", "cannot be set here"),
        (r#"{"upload": {"headers": {"Host": "x"}}}"#, "upload.headers.Host", "cannot be set here"),
        (r#"{"upload": {"headers": {"X-A": "1", "x-a": "2"}}}"#, "upload.headers.x-a", "given twice"),
        (r#"{"database": {"path": "sega.db"}}"#, "database.path", "under systemd"),
        (r#"{"database": {"keep_days": 3}}"#, "database.keep_days", "greater than watch.lookback_days + 2 (= 3)"),
        (r#"{"database": {"keep_days": 0}}"#, "database.keep_days", "at least 1"),
        (r#"{"database": {"scope": " "}}"#, "database.scope", "non-empty string"),
        (r#"{"database": {"scope": 5}}"#, "database.scope", "expected a string or null, got 5"),
        (r#"{"database": {"url": "mysql://db/sega"}}"#, "database.url", "expected a postgres://"),
        (r#"{"database": {"url": "/var/lib/x.db"}}"#, "database.url", "libpq conninfo"),
        (r#"{"database": {"host": " "}}"#, "database.host", "non-empty string"),
        (r#"{"database": {"lease_secs": 2}}"#, "database.lease_secs", "at least 5"),
        (r#"{"log": {"level": "loud"}}"#, "log.level", "expected one of off, error"),
        (r#"{"log": {"file": "sega.log"}}"#, "log.file", "absolute"),
        (r#"{"metrics": {"textfile": "x.prom"}}"#, "metrics.textfile", "absolute"),
        (r#"{"alerts": {"webhook_url": "hooks.example/T0/secret"}}"#, "alerts.webhook_url", "must start with http://"),
        (r#"{"alerts": {"webhook_url": 5}}"#, "alerts.webhook_url", "got a number"),
        (r#"{"alerts": {"after_secs": 0}}"#, "alerts.after_secs", "at least 1"),
    ];
    for (patch, location, fragment) in cases {
        let found = problems(&with(patch));
        let p = &found[0];
        assert!(
            found.len() == 1 && p.location == *location && p.message.contains(fragment),
            "{patch}\n  expected {location}: …{fragment}…\n  got {found:#?}"
        );
    }
}

#[test]
fn missing_url_and_non_object_top_level() {
    let cases = [
        ("{}", "upload.url", "required"),
        (r#"{"upload": {}}"#, "upload.url", "required"),
        (
            "[1]",
            "(top level)",
            "expected a JSON object {…}, got an array",
        ),
    ];
    for (text, location, fragment) in cases {
        let found = problems(text);
        assert_eq!(found.len(), 1, "{text}: {found:?}");
        assert_eq!(found[0].location, location);
        assert!(found[0].message.starts_with(fragment), "{text}: {found:?}");
    }
}

#[test]
fn every_problem_is_reported_in_order() {
    let text = r#"{"watch": {"rootz": "/x", "settle_secs": "5"},
                    "upload": {"workers": 0, "headers": {"Host": "h"}},
                    "log": {"level": "loud"}, "extra": true}"#;
    let err = parse(text).unwrap_err();
    let locations: Vec<_> = err.problems.iter().map(|p| p.location.as_str()).collect();
    let expected = "extra watch.rootz watch.settle_secs upload.url upload.headers.Host \
                    upload.workers log.level";
    assert_eq!(locations, expected.split_whitespace().collect::<Vec<_>>());
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), 7);
    assert!(shown
        .lines()
        .any(|l| l == "<config>: upload.workers: must be at least 1"));
}

#[test]
fn bad_json_gives_line_and_column() {
    let found = problems("{\n  \"upload\": {\n    \"url\": \"http://h/\",,\n  }\n}");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].location, "line 3, column 24");
    assert!(!found[0].message.is_empty() && !found[0].message.contains("at line"));
}

#[test]
fn fields_and_headers_keep_config_order() {
    let c = parse(&with(
        r#"{"upload": {"fields": {"z": "{size}", "a": "lit", "m": "{date}"},
                       "headers": {"X-B": "1", "Authorization": "Bearer t", "X-A": "3"}}}"#,
    ))
    .unwrap();
    let names: Vec<_> = c.upload.fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["z", "a", "m"]);
    let names: Vec<_> = c.upload.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["X-B", "Authorization", "X-A"]);
    let shown = c.redacted_json();
    let shown: Vec<_> = shown["upload"]["fields"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(shown, ["z", "a", "m"]);
}

#[test]
fn https_and_its_tls_files_are_accepted() {
    let c = parse(&with(
        r#"{"upload": {"url": "https://up.example/u",
                       "tls": {"ca_file": "/etc/sega/ca.pem",
                               "client_cert": "/etc/sega/client.pem",
                               "client_key": "/etc/sega/client.key"}},
            "alerts": {"webhook_url": "https://h.example/x"}}"#,
    ))
    .unwrap();
    assert_eq!(c.upload.url.scheme, url::Scheme::Https);
    assert_eq!(c.upload.url.port, 443);
    let tls = Tls {
        ca_file: Some("/etc/sega/ca.pem".into()),
        client: Some(ClientIdentity {
            cert: "/etc/sega/client.pem".into(),
            key: "/etc/sega/client.key".into(),
        }),
    };
    assert_eq!(c.upload.tls, tls);
    assert_eq!(
        c.redacted_json()["upload"]["tls"],
        json!({"ca_file": "/etc/sega/ca.pem", "client_cert": "/etc/sega/client.pem",
               "client_key": "/etc/sega/client.key"})
    );
    // Round trip: what check-config prints means the same (the webhook aside: a secret).
    let mut shown = c.redacted_json();
    shown["alerts"]["webhook_url"] = Value::Null;
    assert_eq!(parse(&shown.to_string()).unwrap().upload.tls, tls);
}

#[test]
fn a_proxy_is_an_http_url_whose_credentials_are_secret() {
    let c = parse(&with(
        r#"{"upload": {"proxy": "http://px:s3cret@proxy.example:3128"}}"#,
    ))
    .unwrap();
    let p = c.upload.proxy.as_ref().unwrap();
    assert_eq!((p.host.as_str(), p.port), ("proxy.example", 3128));
    assert_eq!(
        c.redacted_json()["upload"]["proxy"],
        json!("http://<redacted>@proxy.example:3128")
    );
    assert!(!format!("{c:?}").contains("s3cret"));
    assert!(parse(&with(r#"{"upload": {"proxy": "http://proxy:3128/"}}"#)).is_ok());
    #[rustfmt::skip]
    let errors = [
        (r#""https://proxy:3128""#, "must be an http:// proxy"),
        (r#""http://u:s3cret@proxy:3128/x""#, "no path or query"),
        (r#""http://proxy:3128?a=1""#, "no path or query"),
        (r#""socks5://u:s3cret@proxy:1080""#, "must start with http:// or https://"),
        (r#"3128"#, "expected a string"),
    ];
    for (value, words) in errors {
        let p = problems(&with(&format!(r#"{{"upload": {{"proxy": {value}}}}}"#)));
        assert_eq!(p.len(), 1, "{value}: {p:?}");
        assert_eq!(p[0].location, "upload.proxy");
        assert!(p[0].message.contains(words), "{value}: {p:?}");
        assert!(!p[0].message.contains("s3cret"), "{p:?}");
    }
}

#[test]
fn a_success_rule_parses_with_its_default() {
    let c = parse(&with(
        r#"{"upload": {"success": {"json_pointer": "/success", "equals": true}}}"#,
    ))
    .unwrap();
    let rule = SuccessRule {
        json_pointer: "/success".into(),
        equals: json!(true),
        on_mismatch: OnMismatch::Retry,
    };
    assert_eq!(c.upload.success.as_ref(), Some(&rule));
    let shown = c.redacted_json();
    assert_eq!(
        shown["upload"]["success"],
        json!({"json_pointer": "/success", "equals": true, "on_mismatch": "retry"})
    );
    assert_eq!(
        parse(&shown.to_string()).unwrap().upload.success,
        Some(rule)
    );
    let c = parse(&with(
        r#"{"upload": {"success": {"json_pointer": "", "equals": {"status": "ok"},
                                   "on_mismatch": "fail"}}}"#,
    ))
    .unwrap();
    let rule = c.upload.success.unwrap();
    assert_eq!(
        (rule.json_pointer.as_str(), rule.on_mismatch),
        ("", OnMismatch::Fail)
    );
    assert_eq!(rule.equals, json!({"status": "ok"}));
    assert_eq!(
        parse(&with(r#"{"upload": {"success": null}}"#))
            .unwrap()
            .upload
            .success,
        None
    );
}

#[test]
fn success_rule_problems_are_named_at_their_key() {
    #[rustfmt::skip]
    let cases: &[(&str, &[(&str, &str)])] = &[
        (r#"{"equals": true}"#, &[("upload.success.json_pointer", "required")]),
        (r#"{"json_pointer": "/success"}"#, &[("upload.success.equals", "required")]),
        (r#"{"json_pointer": "success", "equals": true}"#, &[("upload.success.json_pointer", "starting with `/` (\"/success\")")]),
        (r#"{"json_pointer": "/a~2b", "equals": true}"#, &[("upload.success.json_pointer", "`~0`")]),
        (r#"{"json_pointer": 5, "equals": true}"#, &[("upload.success.json_pointer", "expected a string")]),
        (r#"{"json_pointer": "/ok", "equals": true, "on_mismatch": "ignore"}"#, &[("upload.success.on_mismatch", "expected \"retry\" or \"fail\"")]),
        (r#"{"pointer": "/ok", "json_pointer": "/ok", "equals": 1}"#, &[("upload.success.pointer", "unknown key")]),
        (r#""yes""#, &[("upload.success", "expected an object")]),
    ];
    for (rule, expected) in cases {
        let text = with(&format!(r#"{{"upload": {{"success": {rule}}}}}"#));
        let p = problems(&text);
        let got: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.location.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(got.len(), expected.len(), "{rule}: {got:?}");
        for ((loc, msg), (want_loc, want_msg)) in got.iter().zip(expected.iter()) {
            assert_eq!(loc, want_loc, "{rule}: {got:?}");
            assert!(msg.contains(want_msg), "{rule}: {got:?}");
        }
    }
}

#[test]
fn tls_keys_are_checked_at_their_key() {
    #[rustfmt::skip]
    let cases: &[(&str, &[(&str, &str)])] = &[
        (r#"{"tls": {"ca_file": "ca.pem"}}"#, &[("upload.tls.ca_file", "must be an absolute path")]),
        (r#"{"tls": {"ca_file": 5}}"#, &[("upload.tls.ca_file", "expected a string or null, got 5")]),
        (r#"{"tls": {"client_cert": "/c.pem"}}"#, &[("upload.tls.client_key", "required when upload.tls.client_cert is set")]),
        (r#"{"tls": {"client_key": "/c.key", "client_cert": null}}"#, &[("upload.tls.client_cert", "required when upload.tls.client_key is set")]),
        (r#"{"tls": {"client_cert": "c.pem", "client_key": "/c.key"}}"#, &[("upload.tls.client_cert", "must be an absolute path")]),
        (r#"{"tls": {"verify": false}}"#, &[("upload.tls.verify", "unknown key (known: ca_file, client_cert, client_key)")]),
        (r#"{"tls": {"insecure": true}}"#, &[("upload.tls.insecure", "unknown key")]),
        (r#"{"tls": "/ca.pem"}"#, &[("upload.tls", "expected an object {…}, got a string")]),
    ];
    for (patch, expected) in cases {
        let text = with(&format!(r#"{{"upload": {patch}}}"#));
        let p = problems(&text);
        let got: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.location.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(got.len(), expected.len(), "{patch}: {got:?}");
        for ((loc, msg), (want_loc, want_msg)) in got.iter().zip(expected.iter()) {
            assert_eq!(loc, want_loc, "{patch}: {got:?}");
            assert!(msg.contains(want_msg), "{patch}: {got:?}");
        }
    }
}

#[test]
fn secrets_are_redacted() {
    let c = parse(&with(
        r#"{"upload": {"url": "http://bob:hunter2@up.example/u?x=1",
                       "headers": {"Authorization": "Bearer s3cret"}},
            "alerts": {"webhook_url": "http://hooks.example/T0/s3cret"}}"#,
    ))
    .unwrap();
    let url = "http://<redacted>@up.example/u?x=1";
    assert_eq!(c.upload.url.redacted(), url);
    let shown = c.redacted_json();
    assert_eq!(shown["upload"]["url"], url);
    assert_eq!(
        shown["upload"]["headers"],
        json!({"Authorization": "<redacted>"})
    );
    assert_eq!(shown["alerts"]["webhook_url"], "<redacted>");
    for text in [shown.to_string(), format!("{c:?}")] {
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
    }
    assert!(format!("{c:?}").contains("Authorization"));

    // Error messages do not echo secrets either.
    let err = parse(&with(
        r#"{"upload": {"url": "http://bob:hunter2@h:99999/",
                       "headers": {"X-Key": "s3cret\n", "X-N": 12345}},
            "alerts": {"webhook_url": "hooks.example/s3cret"}}"#,
    ))
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.problems.len(), 4, "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("s3cret"),
        "{text}"
    );
    assert!(!text.contains("12345"), "{text}");
}

#[test]
fn restart_needed_names_what_reload_cannot_apply() {
    let old = parse(MINIMAL).unwrap();
    #[rustfmt::skip]
    let cases: &[(&str, &[&str])] = &[
        (r#"{"upload": {"timeout_secs": 5}, "watch": {"folders": ["X"]}}"#, &[]),
        (r#"{"upload": {"workers": 8}}"#, &["upload.workers"]),
        (r#"{"database": {"path": "/tmp/x.db", "scope": "s"}, "upload": {"workers": 1}}"#,
         &["upload.workers", "database.path", "database.scope"]),
    ];
    for (patch, keys) in cases {
        assert_eq!(
            old.restart_needed(&parse(&with(patch)).unwrap()),
            *keys,
            "{patch}"
        );
    }
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("sega-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    #[rustfmt::skip]
    let cases = [
        ("good.json", MINIMAL.as_bytes(), None),
        ("bad.json", br#"{"upload": {}}"#.as_slice(), Some("bad.json: upload.url: required")),
        ("latin1.json", b"{\n \"a\xe9\": 1}".as_slice(), Some("latin1.json: line 2, column 4: invalid UTF-8")),
    ];
    for (name, content, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        match (load(&path), expected) {
            (Ok(c), None) => assert_eq!(c, parse(MINIMAL).unwrap()),
            (Err(e), Some(fragment)) => assert!(e.to_string().contains(fragment), "{e}"),
            (other, _) => panic!("{name}: {other:?}"),
        }
    }
    let missing = dir.join("missing.json");
    let err = load(&missing).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: cannot read: ", missing.shown())),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_path_precedence() {
    let (cli, env) = (Path::new("/cli.json"), || Some(OsString::from("/env.json")));
    assert_eq!(resolve_path_from(Some(cli), env()), cli);
    assert_eq!(resolve_path_from(None, env()), Path::new("/env.json"));
    let default = Path::new(DEFAULT_PATH);
    assert_eq!(resolve_path_from(None, Some(OsString::new())), default);
    assert_eq!(resolve_path_from(None, None), default);
}

#[test]
fn levels_parse_in_any_case() {
    #[rustfmt::skip]
    let cases = [
        ("off", Some(LevelFilter::Off)), ("WARN", Some(LevelFilter::Warn)),
        ("Trace", Some(LevelFilter::Trace)), ("verbose", None), ("", None),
    ];
    for (s, level) in cases {
        assert_eq!(parse_level(s), level, "{s}");
    }
}
