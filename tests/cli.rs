//! The command line and the configuration, as an operator meets them: exit codes, messages
//! that name the problem, secrets that never show.

use crate::util::*;
use serde_json::json;

#[test]
fn bad_configs_exit_78_naming_every_problem() {
    let env = Env::new("badconfig");
    std::fs::write(
        &env.config_path,
        "{\n  \"upload\": {\n    \"url\": \"http://x/upload\",\n  }\n}\n",
    )
    .unwrap();
    let o = env.run(&["check-config", "--offline"]);
    assert_eq!(o.code, 78, "{}", o.stderr);
    assert!(
        o.stderr.contains("line 4, column 3"),
        "bad JSON names line and column: {}",
        o.stderr
    );

    std::fs::write(
        &env.config_path,
        json!({
            "watch": { "rootz": "/data", "folders": [] },
            "upload": { "url": "ftp://x", "workers": 0 },
            "database": { "keep_days": 2 }
        })
        .to_string(),
    )
    .unwrap();
    for cmd in [&["check-config"][..], &["scan"], &["run"], &["status"]] {
        let o = env.run(cmd);
        assert_eq!(o.code, 78, "{cmd:?}: {}", o.stderr);
        for needle in [
            "watch.rootz",
            "did you mean",
            "watch.folders",
            "upload.url",
            "upload.workers",
            "database.keep_days",
        ] {
            assert!(
                o.stderr.contains(needle),
                "{cmd:?} names {needle}: {}",
                o.stderr
            );
        }
    }
    std::fs::write(&env.config_path, json!({ "watch": {} }).to_string()).unwrap();
    let o = env.run(&["check-config"]);
    assert_eq!(o.code, 78);
    assert!(o.stderr.contains("upload.url"), "{}", o.stderr);

    // A valid config that cannot do what the command asks: migrate-db needs database.url.
    std::fs::write(
        &env.config_path,
        json!({
            "watch": { "root": env.dir.join("data") },
            "upload": { "url": "http://127.0.0.1:9/upload" },
            "database": { "path": env.dir.join("sega.db") }
        })
        .to_string(),
    )
    .unwrap();
    let o = env.run(&["migrate-db"]);
    assert_eq!(o.code, 78, "{}", o.stderr);
    assert!(o.stderr.contains("database.url: not set"), "{}", o.stderr);
}

both_backends!(check_config_prints_the_effective_config_with_secrets_redacted);

fn check_config_prints_the_effective_config_with_secrets_redacted(backend: Backend) {
    let env = Env::with_backend("redact", backend);
    env.set(
        "/upload/headers",
        json!({ "Authorization": "Bearer s3cr3t-token" }),
    );
    env.set("/alerts/webhook_url", json!("http://hooks.example/T0K3N"));
    if env.is_pg() {
        // The cluster trusts local users: the password is ignored, only its display matters.
        env.set(
            "/database/url",
            json!(format!("{} password=s3cr3t-pw", env.pg().conninfo())),
        );
        // Contacting the ledger is the database check; the secret shows nowhere.
        let o = env.run(&["check-config"]);
        assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
        assert!(
            !o.stdout.contains("s3cr3t") && !o.stderr.contains("s3cr3t"),
            "{}",
            o.stdout
        );
        assert!(
            o.stdout
                .lines()
                .any(|l| l.starts_with("ok   database") && l.contains("reachable")),
            "{}",
            o.stdout
        );
    }
    let o = env.run(&["check-config", "--offline"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        !o.stdout.contains("s3cr3t") && !o.stderr.contains("s3cr3t"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("T0K3N"), "{}", o.stdout);
    assert!(
        o.stdout.contains("\"Authorization\""),
        "the header name is shown: {}",
        o.stdout
    );
    assert!(
        o.stdout.contains("\"scan_interval_secs\": 60"),
        "defaults are filled in: {}",
        o.stdout
    );
    assert!(o.stdout.contains("ok   database"), "{}", o.stdout);
    assert!(o.stdout.contains("not checked (--offline)"), "{}", o.stdout);
}

#[test]
fn check_config_fails_when_the_endpoint_refuses() {
    let env = Env::new("refuse");
    let o = env.run(&["check-config"]);
    assert_eq!(o.code, 0, "the live test endpoint accepts: {}", o.stdout);
    env.server.set_mode(Mode::Refuse);
    let o = env.run(&["check-config"]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(
        o.stdout.contains("fail endpoint 127.0.0.1:"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("refused"), "{}", o.stdout);
}

#[test]
fn usage_errors_exit_64_and_every_command_has_help() {
    let env = Env::new("usage");
    assert_eq!(env.run(&["frobnicate"]).code, 64);
    assert_eq!(env.run(&["scan", "--date", "2026-13-01"]).code, 64);
    assert_eq!(env.run(&["retry"]).code, 64);
    assert_eq!(env.run(&["status", "--bogus"]).code, 64);
    for cmd in [
        "run",
        "check-config",
        "scan",
        "status",
        "list",
        "retry",
        "upload-test",
    ] {
        let o = env.run(&[cmd, "--help"]);
        assert_eq!(o.code, 0, "{cmd} --help");
        assert!(
            o.stdout.contains(&format!("sega-uploader {cmd}")),
            "{cmd}: {}",
            o.stdout
        );
    }
    let o = env.run(&["--version"]);
    assert!(o.stdout.starts_with("sega-uploader "), "{}", o.stdout);
}

#[test]
fn config_path_comes_from_flag_then_environment() {
    let env = Env::new("cfgpath");
    let o = out(std::process::Command::new(BIN)
        .args(["check-config", "--offline"])
        .env("SEGA_CONFIG", &env.config_path)
        .output()
        .unwrap());
    assert_eq!(o.code, 0, "SEGA_CONFIG is used: {}", o.stderr);
    let o = out(std::process::Command::new(BIN)
        .args(["check-config", "--offline", "--config"])
        .arg(&env.config_path)
        .env("SEGA_CONFIG", "/nonexistent/config.json")
        .output()
        .unwrap());
    assert_eq!(
        o.code, 0,
        "-c after the command wins over SEGA_CONFIG: {}",
        o.stderr
    );
    let o = out(std::process::Command::new(BIN)
        .args(["-c", "/nonexistent/c.json", "check-config"])
        .output()
        .unwrap());
    assert_eq!(o.code, 78, "{}", o.stderr);
    assert!(o.stderr.contains("/nonexistent/c.json"), "{}", o.stderr);
}
