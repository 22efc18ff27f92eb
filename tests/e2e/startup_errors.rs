//! Every reason the server cannot start gets a clear message and a non-zero exit.

use std::net::TcpListener;

use crate::support::process::{server_fails, text};
use crate::support::{free_port, test_key};

/// Starts the binary in a fresh directory with `env`, expecting it to exit with `code` and a
/// message containing every one of `expected`.
fn refuses(env: &[(&str, &str)], code: i32, expected: &[&str]) -> String {
    let cwd = tempfile::tempdir().expect("tmp");
    let mut env = env.to_vec();
    env.push(("LOG_LEVEL", "warn"));
    let output = server_fails(cwd.path(), &env, &[]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(code), "exit status; output:\n{message}");
    for needle in expected {
        assert!(message.contains(needle), "expected {needle:?} in:\n{message}");
    }
    message
}

#[test]
fn malformed_database_url() {
    for url in ["mysql://localhost/truxe", "postgres://", "sqlite://", "not a url"] {
        refuses(&[("DATABASE_URL", url)], 78, &["DATABASE_URL"]);
    }
}

#[test]
fn database_that_does_not_answer() {
    let port = free_port();
    let url = format!("postgres://truxe:pw-not-shown@127.0.0.1:{port}/truxe");
    let message = refuses(
        &[("DATABASE_URL", &url), ("DATABASE_CONNECTION_TIMEOUT", "500")],
        1,
        &[&format!("127.0.0.1:{port}"), "did not answer"],
    );
    assert!(!message.contains("pw-not-shown"), "no password in errors: {message}");
}

#[test]
fn unparseable_and_weak_keys() {
    refuses(
        &[("JWT_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----\\nnot base64\\n-----END PRIVATE KEY-----")],
        78,
        &["JWT_PRIVATE_KEY"],
    );
    let weak = openssl::rsa::Rsa::generate(1024).expect("rsa");
    let weak = String::from_utf8(weak.private_key_to_pem().expect("pem")).expect("utf8");
    refuses(&[("JWT_PRIVATE_KEY", &weak)], 78, &["1024", "2048"]);
}

#[test]
fn invalid_duration() {
    refuses(&[("ACCESS_TOKEN_EXPIRY", "15x")], 78, &["ACCESS_TOKEN_EXPIRY", "15x"]);
}

#[test]
fn port_already_in_use() {
    let taken = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    refuses(&[("PORT", &port)], 1, &[&port, "already in use"]);
}

#[test]
fn unreadable_secret_file() {
    refuses(
        &[("SESSION_SECRET_FILE", "/nonexistent/truxe/session-secret")],
        78,
        &["SESSION_SECRET_FILE", "/nonexistent/truxe/session-secret"],
    );
}

#[test]
fn missing_env_file() {
    let cwd = tempfile::tempdir().expect("tmp");
    let output = server_fails(cwd.path(), &[], &["--env-file", "/nonexistent/truxe.env"]);
    assert_eq!(output.status.code(), Some(78));
    assert!(text(&output).contains("/nonexistent/truxe.env"), "{}", text(&output));
}

/// Production lists every problem in one go, so an operator fixes them in one round.
#[test]
fn production_with_missing_and_weak_secrets_lists_everything() {
    let message = refuses(
        &[
            ("NODE_ENV", "production"),
            ("SESSION_SECRET", "changeme"),
            ("ALLOWED_ORIGINS", "*"),
            ("API_URL", "http://auth.example.org"),
        ],
        78,
        &["JWT_PRIVATE_KEY", "SESSION_SECRET", "ADMIN_TOKEN", "SMTP_HOST", "DATABASE_URL", "https", "ALLOWED_ORIGINS"],
    );
    assert!(!message.contains("changeme"), "the weak secret itself is not echoed: {message}");

    let key = test_key().private_pem().secret().clone();
    refuses(
        &[
            ("TRUXE_ENV", "production"),
            ("JWT_PRIVATE_KEY", &key),
            ("DATABASE_URL", "sqlite:///tmp/never-created.db"),
            ("JWT_ISSUER", "https://auth.example.org"),
            ("SESSION_SECRET", "short"),
            ("ADMIN_TOKEN", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            ("SMTP_HOST", "smtp.example.org"),
            ("EMAIL_FROM", "noreply@example.org"),
        ],
        78,
        &["SESSION_SECRET", "ADMIN_TOKEN"],
    );
}
