//! truxectl: migrations on both backends, client policies, keys and secrets.

use std::os::unix::fs::PermissionsExt;

use crate::on_both_backends;
use crate::support::process::{ServerProcess, server_fails, text, truxectl};
use crate::support::{Backend, TestDb, free_port, test_key};

/// `2026-12-03-000001_client_policies`, as diesel names its version.
const LATEST_MIGRATION: &str = "20261204000001";

fn json(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "truxectl failed:\n{}", text(output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(output)))
}

fn states(status: &serde_json::Value) -> Vec<bool> {
    status["migrations"].as_array().expect("migrations").iter().map(|m| m["applied"].as_bool().expect("bool")).collect()
}

on_both_backends! {
    async fn migrate_status_apply_revert(backend: Backend) {
        let db = TestDb::new(backend);
        let cwd = db.dir.path();
        let url = ["--database-url", db.url.as_str()];

        let before = json(&truxectl(cwd, &[], &[&["migrate", "status", "--json"][..], &url].concat()));
        assert!(!states(&before).is_empty());
        assert!(states(&before).iter().all(|applied| !applied), "fresh database: all pending: {before}");
        assert!(!before["database"].as_str().expect("db").is_empty());

        let applied = json(&truxectl(cwd, &[], &[&["migrate", "--json"][..], &url].concat()));
        assert_eq!(applied["applied"].as_array().expect("list").len(), states(&before).len());

        let after = json(&truxectl(cwd, &[("DATABASE_URL", db.url.as_str())], &["migrate", "status", "--json"]));
        assert!(states(&after).iter().all(|applied| *applied), "everything applied: {after}");

        let again = json(&truxectl(cwd, &[], &[&["migrate", "apply", "--json"][..], &url].concat()));
        assert_eq!(again["applied"].as_array().expect("list").len(), 0, "idempotent");

        let text_status = truxectl(cwd, &[], &[&["migrate", "status"][..], &url].concat());
        assert!(text(&text_status).contains("0 pending"), "{}", text(&text_status));

        // Dangerous: without a terminal it needs --yes, and nothing is reverted.
        let refused = truxectl(cwd, &[], &[&["migrate", "revert"][..], &url].concat());
        assert!(!refused.status.success());
        assert!(text(&refused).contains("--yes"), "{}", text(&refused));
        let still = json(&truxectl(cwd, &[], &[&["migrate", "status", "--json"][..], &url].concat()));
        assert!(states(&still).iter().all(|applied| *applied));

        let reverted = json(&truxectl(cwd, &[], &[&["migrate", "revert", "--yes", "--json"][..], &url].concat()));
        // The latest migration's down.sql works on this backend.
        let version = reverted["reverted"].as_str().unwrap_or_default().replace('-', "");
        assert_eq!(version, LATEST_MIGRATION, "{reverted}");
        let after_revert = json(&truxectl(cwd, &[], &[&["migrate", "status", "--json"][..], &url].concat()));
        assert!(!states(&after_revert).last().expect("one"), "the last migration is pending again");

        let reapplied = json(&truxectl(cwd, &[], &[&["migrate", "--json"][..], &url].concat()));
        assert_eq!(reapplied["applied"].as_array().expect("list").len(), 1);
    }

    async fn client_policies_from_the_command_line(backend: Backend) {
        let db = TestDb::new(backend);
        db.migrate();
        let cwd = db.dir.path();
        let env = [
            ("JWT_AUDIENCE", "https://api.example.com,https://reports.example.com"),
            ("TRUXE_SCOPES", "reports:read"),
            ("REFRESH_TOKEN_EXPIRY", "1d"),
        ];
        let ctl = |args: &[&str]| truxectl(cwd, &env, &[&["clients"][..], args, &["--database-url", db.url.as_str()]].concat());
        let policies = |client: &serde_json::Value| {
            let fields = ["allowed_audiences", "introspection_audiences", "access_token_ttl", "refresh_token_ttl", "authorization_code_ttl"];
            fields.map(|f| client.get(f).cloned().unwrap_or_else(|| "absent".into()))
        };

        let created = json(&ctl(&[
            "create", "--name", "Reports", "--scope", "reports:read",
            "--audience", "https://reports.example.com", "--introspection-audience", "https://reports.example.com",
            "--access-token-ttl", "5m", "--refresh-token-ttl", "1h", "--authorization-code-ttl", "60", "--json",
        ]));
        let id = created["client_id"].as_str().expect("client_id").to_string();
        let registered = [
            serde_json::json!(["https://reports.example.com"]),
            serde_json::json!(["https://reports.example.com"]),
            300.into(),
            3600.into(),
            60.into(),
        ];
        assert_eq!(policies(&created), registered, "{created}");
        assert_eq!(policies(&json(&ctl(&["show", &id, "--json"]))), registered);
        let shown = ctl(&["show", &id]);
        let shown = text(&shown);
        assert!(shown.contains("allowed_audiences") && shown.contains("https://reports.example.com") && shown.contains("300 s"), "{shown}");

        // Update: an empty value clears a lifetime and empties a list.
        let updated = json(&ctl(&["update", &id, "--refresh-token-ttl", "", "--introspection-audience", "", "--access-token-ttl", "900", "--json"]));
        let changed = [
            serde_json::json!(["https://reports.example.com"]),
            serde_json::json!([]),
            900.into(),
            serde_json::Value::Null,
            60.into(),
        ];
        assert_eq!(policies(&updated), changed, "{updated}");
        assert_eq!(policies(&json(&ctl(&["show", &id, "--json"]))), changed);

        // The server's rules, with its messages and exit status 1; malformed flags are usage errors (2).
        let refused: [(&[&str], &[&str]); 6] = [
            (&["update", &id, "--audience", "https://evil.example.com"], &["allowed_audiences[0]", "https://evil.example.com", "JWT_AUDIENCE"]),
            (&["update", &id, "--access-token-ttl", "0"], &["access_token_ttl", "from 1 up to 900 seconds"]),
            (&["update", &id, "--access-token-ttl", "16m"], &["access_token_ttl", "at most 900 seconds", "ACCESS_TOKEN_EXPIRY"]),
            (&["update", &id, "--refresh-token-ttl", "2d"], &["refresh_token_ttl", "at most 86400 seconds", "REFRESH_TOKEN_EXPIRY (1d)"]),
            (&["create", "--name", "Bad", "--scope", "reports:read", "--authorization-code-ttl", "11m"], &["authorization_code_ttl", "OAUTH_AUTHORIZATION_CODE_EXPIRY"]),
            (
                &["create", "--name", "SPA", "--public", "--redirect-uri", "https://spa.example.com/cb", "--introspection-audience", "https://api.example.com"],
                &["introspection_audiences", "confidential"],
            ),
        ];
        for (args, says) in refused {
            let output = ctl(args);
            let message = text(&output);
            assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
            assert!(says.iter().all(|s| message.contains(s)) && !message.contains("panicked"), "{args:?}: {message}");
        }
        for bad in ["--access-token-ttl=-5", "--access-token-ttl=1.5", "--refresh-token-ttl=soon"] {
            let output = ctl(&["update", &id, bad]);
            let flag = bad.split('=').next().unwrap_or_default();
            assert_eq!(output.status.code(), Some(2), "{bad}: {}", text(&output));
            assert!(text(&output).contains(flag), "{bad}: {}", text(&output));
        }
        assert_eq!(policies(&json(&ctl(&["show", &id, "--json"]))), changed, "refusals change nothing");
        assert_eq!(json(&ctl(&["list", "--json"]))["clients"].as_array().map(Vec::len), Some(1));
    }
}

#[tokio::test]
async fn postgres_server_refuses_to_start_with_pending_migrations_then_starts() {
    let db = TestDb::new(Backend::Postgres);
    let cwd = db.dir.path();
    let key = test_key().private_pem().secret().clone();
    let env = [("DATABASE_URL", db.url.as_str()), ("JWT_PRIVATE_KEY", key.as_str()), ("LOG_LEVEL", "warn")];
    let refused = server_fails(cwd, &env, &[]);
    assert_eq!(refused.status.code(), Some(78), "{}", text(&refused));
    assert!(text(&refused).contains("truxectl migrate"), "names the command to run: {}", text(&refused));

    json(&truxectl(cwd, &[("DATABASE_URL", db.url.as_str())], &["migrate", "--json"]));
    let server = ServerProcess::start(cwd, &env, free_port()).await;
    let ready: serde_json::Value =
        reqwest::get(server.url("/health/ready")).await.expect("ready").json().await.expect("json");
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["checks"]["database"]["backend"], "postgresql");
}

#[test]
fn migrate_reports_an_unreachable_database() {
    let cwd = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let url = format!("postgres://truxe@127.0.0.1:{port}/nowhere");
    let output =
        truxectl(cwd.path(), &[("DATABASE_CONNECTION_TIMEOUT", "300")], &["migrate", "status", "--database-url", &url]);
    assert!(!output.status.success());
    let message = text(&output);
    assert!(message.contains(&format!("127.0.0.1:{port}")), "says where it tried: {message}");

    let output = truxectl(cwd.path(), &[], &["migrate", "--database-url", "mysql://localhost/x"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("--database-url"), "{}", text(&output));
}

#[test]
fn keys_generate_writes_private_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().to_str().expect("utf8");
    let generated = json(&truxectl(dir.path(), &[], &["keys", "generate", "--out", out, "--json"]));
    assert_eq!(generated["alg"], "RS256");
    assert_eq!(generated["bits"], 2048);
    let private = dir.path().join("jwt-private.pem");
    assert_eq!(std::fs::metadata(&private).expect("private").permissions().mode() & 0o777, 0o600);
    let pem = std::fs::read_to_string(&private).expect("pem");
    let key =
        truxe_server::keys::SigningKey::from_pem(&pem, None, truxe_server::keys::Algorithm::RS256).expect("loads");
    assert_eq!(generated["kid"], key.kid());

    let again = truxectl(dir.path(), &[], &["keys", "generate", "--out", out]);
    assert!(!again.status.success(), "no silent overwrite of a key");
    assert_eq!(std::fs::read_to_string(&private).expect("pem"), pem, "the old key is untouched");

    let bits =
        json(&truxectl(dir.path(), &[], &["keys", "generate", "--out", out, "--bits", "3072", "--force", "--json"]));
    assert_eq!(bits["bits"], 3072);
    let bad = truxectl(dir.path(), &[], &["keys", "generate", "--bits", "1024", "--env"]);
    assert!(!bad.status.success());
}

/// The `--env` lines are exactly what an operator pastes into the env file, and the server
/// accepts them.
#[tokio::test]
async fn keys_generate_env_lines_start_a_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let output = truxectl(dir.path(), &[], &["keys", "generate", "--env"]);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8(output.stdout).expect("utf8");
    assert!(stdout.lines().any(|l| l.starts_with("JWT_PRIVATE_KEY=\"-----BEGIN PRIVATE KEY-----\\n")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("JWT_PUBLIC_KEY=")), "{stdout}");
    assert!(std::fs::read_dir(dir.path()).expect("dir").next().is_none(), "--env writes no files");

    let env_file = dir.path().join("truxe.env");
    std::fs::write(&env_file, format!("{stdout}LOG_LEVEL=warn\n")).expect("env file");
    let env_file_arg = env_file.display().to_string();
    let port = free_port();
    let port_text = port.to_string();
    let mut child = crate::support::process::clean_command("truxe-server", dir.path(), &[("PORT", &port_text)]);
    child.args(["--env-file", &env_file_arg]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = child.spawn().expect("spawn");
    let client = reqwest::Client::new();
    let mut ready = None;
    for _ in 0..400 {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/health/ready")).send().await {
            ready = Some(r.json::<serde_json::Value>().await.expect("json"));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let ready = ready.expect("server answered");
    assert_eq!(ready["status"], "ok", "{ready}");
    assert!(
        !dir.path().join("truxe-data").join("jwt-private.pem").exists(),
        "the configured key is used, none generated"
    );
}

#[test]
fn secrets_generate() {
    let dir = tempfile::tempdir().expect("tmp");
    let output = truxectl(dir.path(), &[], &["secrets", "generate"]);
    assert!(output.status.success());
    let secret = String::from_utf8(output.stdout).expect("utf8").trim().to_string();
    assert!(secret.len() >= 44, "32 bytes of base64: {secret}");
    let other = String::from_utf8(truxectl(dir.path(), &[], &["secrets", "generate"]).stdout).expect("utf8");
    assert_ne!(secret, other.trim(), "random");
    let short = truxectl(dir.path(), &[], &["secrets", "generate", "--bytes", "16"]);
    assert!(!short.status.success(), "fewer than 32 bytes is refused");
}
