//! Health, readiness, request ids and the zero-config start.

use std::os::unix::fs::PermissionsExt;

use crate::on_both_backends;
use crate::support::process::ServerProcess;
use crate::support::{Backend, TestServer, free_port, redis_url, test_key};

on_both_backends! {
    async fn liveness_and_readiness(backend: Backend) {
        let server = TestServer::start(backend).await;
        let (status, body) = server.get_json("/health").await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "ok");

        let (status, body) = server.get_json("/health/ready").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["checks"]["database"]["status"], "ok");
        let expected = if backend == Backend::Sqlite { "sqlite" } else { "postgresql" };
        assert_eq!(body["checks"]["database"]["backend"], expected);
        assert_eq!(body["checks"]["signing_key"]["status"], "ok");
        assert_eq!(body["checks"]["signing_key"]["kid"], test_key().kid());
        assert!(body["checks"].get("redis").is_none(), "no Redis configured, none reported: {body}");
    }

    async fn readiness_with_redis(backend: Backend) {
        let redis = redis_url();
        let server = TestServer::start_with(backend, &[("REDIS_URL", &redis)]).await;
        let (status, body) = server.get_json("/health/ready").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["checks"]["redis"]["status"], "ok");
        assert_eq!(body["checks"]["database"]["status"], "ok");
    }

    async fn readiness_fails_when_redis_is_down(backend: Backend) {
        let dead = format!("redis://127.0.0.1:{}/", free_port());
        let server = TestServer::start_with(backend, &[("REDIS_URL", &dead)]).await;
        let (status, body) = server.get_json("/health/ready").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["status"], "unavailable");
        assert_eq!(body["checks"]["redis"]["status"], "fail");
        assert_eq!(body["checks"]["database"]["status"], "ok");
        let (status, _) = server.get_json("/health").await;
        assert_eq!(status, 200, "liveness does not depend on Redis");
    }

    async fn the_signing_key_is_recorded(backend: Backend) {
        use diesel::prelude::*;
        use truxe_server::store::schema::signing_keys;
        let server = TestServer::start(backend).await;
        let config = crate::support::config_from(&[("DATABASE_URL", &server.db.url)], &server.db.dir);
        let pool = truxe_server::store::connect(&config.database).expect("connect");
        let mut conn = pool.get().expect("conn");
        let kids: Vec<String> = signing_keys::table.select(signing_keys::kid).load(&mut conn).expect("query");
        assert_eq!(kids, vec![test_key().kid().to_string()]);
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let server = TestServer::start(Backend::Sqlite).await;
    let response = server.client.get(server.url("/health")).send().await.expect("request");
    let generated = response.headers()["x-request-id"].to_str().expect("ascii").to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");

    let response =
        server.client.get(server.url("/health")).header("X-Request-Id", "lb-1234.abc").send().await.expect("request");
    assert_eq!(response.headers()["x-request-id"], "lb-1234.abc", "a well-formed incoming id is kept");

    let response = server
        .client
        .get(server.url("/health"))
        .header("X-Request-Id", "bad id\twith spaces")
        .send()
        .await
        .expect("request");
    assert_ne!(response.headers()["x-request-id"], "bad id\twith spaces", "a malformed one is replaced");

    let response = server.client.get(server.url("/no/such/page")).send().await.expect("request");
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("x-request-id"));
}

/// `truxe-server` with no configuration at all: SQLite in ./truxe-data, a generated key and
/// admin token, readiness green; a restart reuses both and does not print the token again.
#[tokio::test]
async fn zero_config_start_and_restart() {
    let cwd = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let server = ServerProcess::start(cwd.path(), &[], port).await;
    let ready: serde_json::Value =
        reqwest::get(server.url("/health/ready")).await.expect("ready").json().await.expect("json");
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["checks"]["database"]["backend"], "sqlite");
    let kid = ready["checks"]["signing_key"]["kid"].as_str().expect("kid").to_string();
    let (status, output) = server.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status}\n{output}");

    let data = cwd.path().join("truxe-data");
    for file in ["truxe.db", "jwt-private.pem", "admin-token"] {
        assert!(data.join(file).exists(), "{file} in the data directory");
    }
    for secret in ["jwt-private.pem", "admin-token"] {
        let mode = std::fs::metadata(data.join(secret)).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{secret} is private");
    }
    let dir_mode = std::fs::metadata(&data).expect("meta").permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let token = std::fs::read_to_string(data.join("admin-token")).expect("token").trim().to_string();
    assert!(token.starts_with("adm_") && token.len() > 40, "{token}");
    assert!(output.contains(&token), "the generated admin token is printed on first start");
    assert!(!output.contains("readable by other users"), "the generated key is private:\n{output}");
    assert!(!output.contains("NOT RUNNING IN PRODUCTION MODE"), "an http issuer is no public server:\n{output}");

    let server = ServerProcess::start(cwd.path(), &[], port).await;
    let ready: serde_json::Value =
        reqwest::get(server.url("/health/ready")).await.expect("ready").json().await.expect("json");
    assert_eq!(ready["checks"]["signing_key"]["kid"], kid.as_str(), "the key is reused");
    let (status, output) = server.terminate();
    assert!(status.success());
    assert!(!output.contains(&token), "the admin token is printed only once");
    assert!(output.contains("shutting down"), "graceful shutdown is logged:\n{output}");
}

#[tokio::test]
async fn production_logs_are_json_lines_and_unused_variables_are_named() {
    let cwd = tempfile::tempdir().expect("tmp");
    let db = cwd.path().join("prod.db");
    let database_url = format!("sqlite://{}", db.display());
    let key = test_key().private_pem().secret().replace('\n', "\\n");
    let env = [
        ("NODE_ENV", "production"),
        ("DATABASE_URL", database_url.as_str()),
        ("JWT_PRIVATE_KEY", key.as_str()),
        ("JWT_ISSUER", "https://auth.example.org"),
        ("SESSION_SECRET", "kR9vQ2mX7pL4wZ8tY1nB6cF3hJ5gD0sA"),
        ("ADMIN_TOKEN", "Zq8Wm3Np6Rt1Vx4Ys7Ub0Kc9Ld2Hf5Jg"),
        ("SMTP_HOST", "127.0.0.1"),
        ("EMAIL_FROM", "noreply@example.org"),
        ("SENTRY_DSN", "https://public-key@sentry.example.org/1"),
        ("RATE_LIMIT_ENABLED", "false"),
        ("RATE_LIMIT_MAX", "500"),
        ("LOG_LEVEL", "info"),
    ];
    let server = ServerProcess::start(cwd.path(), &env, free_port()).await;
    let (status, output) = server.terminate();
    assert!(status.success(), "{output}");
    // RATE_LIMIT_ENABLED is acted on, and warned about in production; a limit set next to it
    // is named as turned off with it.
    assert!(output.contains("RATE_LIMIT_ENABLED=false in production"), "{output}");
    assert!(!output.contains("RATE_LIMIT_ENABLED is set but not acted on"), "{output}");
    assert!(
        output.contains("RATE_LIMIT_MAX is set but RATE_LIMIT_ENABLED=false turns request rate limits off"),
        "{output}"
    );
    assert!(!output.contains("NOT RUNNING IN PRODUCTION MODE"), "{output}");
    let log_lines: Vec<&str> = output.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!log_lines.is_empty(), "JSON log lines expected:\n{output}");
    for line in &log_lines {
        let _: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    // SENTRY_DSN is acted on since error reporting landed (issue 9): nothing is "not acted on".
    assert!(!output.contains("not acted on"), "{output}");
    assert!(!output.contains("SMTP_HOST is set but not acted on"), "SMTP is acted on: {output}");
    assert!(!output.contains("kR9vQ2mX7pL4wZ8tY1nB6cF3hJ5gD0sA"), "no secret in the logs");
    assert!(!output.contains("Zq8Wm3Np6Rt1Vx4Ys7Ub0Kc9Ld2Hf5Jg"), "no admin token in the logs");
}

/// The warning line (a `WARN` log line) containing `needle`, or a panic showing the output.
fn warning_line<'a>(output: &'a str, needle: &str) -> &'a str {
    let line =
        output.lines().find(|line| line.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in:\n{output}"));
    assert!(line.contains("WARN"), "logged as a warning: {line}");
    line
}

on_both_backends! {
    async fn a_signing_key_readable_by_others_is_warned_about_at_start(backend: Backend) {
        let db = crate::support::TestDb::new(backend);
        db.migrate();
        let data = db.dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let key_file = data.join("jwt-private.pem");
        std::fs::write(&key_file, test_key().private_pem().secret()).expect("key file");
        let data_dir = data.display().to_string();
        let env = [("DATABASE_URL", db.url.as_str()), ("TRUXE_DATA_DIR", data_dir.as_str()), ("LOG_LEVEL", "info")];

        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let server = ServerProcess::start(db.dir.path(), &env, free_port()).await;
        let kid: serde_json::Value =
            reqwest::get(server.url("/health/ready")).await.expect("ready").json().await.expect("json");
        assert_eq!(kid["checks"]["signing_key"]["kid"], test_key().kid(), "the file's key is used");
        let (status, output) = server.terminate();
        assert!(status.success(), "{output}");
        let line = warning_line(&output, "the signing key file is readable by other users; chmod 600 it");
        assert!(line.contains(&key_file.display().to_string()) && line.contains("644"), "names file and mode: {line}");

        // Private again: no warning.
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let server = ServerProcess::start(db.dir.path(), &env, free_port()).await;
        let (status, output) = server.terminate();
        assert!(status.success(), "{output}");
        assert!(!output.contains("readable by other users"), "{output}");
    }

    async fn a_development_server_with_an_https_issuer_warns_that_it_is_not_in_production(backend: Backend) {
        let db = crate::support::TestDb::new(backend);
        db.migrate();
        let data_dir = db.dir.path().join("data").display().to_string();
        let key = test_key().private_pem().secret().clone();
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("TRUXE_DATA_DIR", data_dir.as_str()),
            ("JWT_PRIVATE_KEY", key.as_str()),
            ("JWT_ISSUER", "https://auth.example.org"),
            ("LOG_LEVEL", "info"),
        ];
        let server = ServerProcess::start(db.dir.path(), &env, free_port()).await;
        let (status, output) = server.terminate();
        assert!(status.success(), "{output}");
        let line = warning_line(&output, "NOT RUNNING IN PRODUCTION MODE");
        assert!(line.contains("JWT_ISSUER is \"https://auth.example.org\""), "names the issuer: {line}");
        assert!(line.contains("TRUXE_ENV=production"), "says what to do: {line}");
    }
}

/// The systemd unit starts a production server: its own `Environment=` lines alone already put
/// the configuration in production mode (which then refuses every development shortcut).
#[test]
fn the_systemd_unit_runs_in_production_mode() {
    let unit = include_str!("../../systemd/truxe-api.service");
    let environment: std::collections::HashMap<String, String> = unit
        .lines()
        .filter_map(|line| line.strip_prefix("Environment="))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    assert_eq!(environment.get("TRUXE_ENV").map(String::as_str), Some("production"), "{unit}");
    let first = |needle: &str| unit.find(needle).unwrap_or_else(|| panic!("no {needle} in the unit"));
    assert!(
        first("Environment=TRUXE_ENV=production") < first("EnvironmentFile="),
        "the env file can still override it (e.g. a staging host)"
    );
    let errors = match truxe_server::config::Config::from_lookup(&|name: &str| environment.get(name).cloned()) {
        Ok(_) => panic!("the unit's environment alone must not pass production checks"),
        Err(errors) => errors.to_string(),
    };
    assert!(errors.contains("JWT_PRIVATE_KEY: required in production"), "{errors}");
}
