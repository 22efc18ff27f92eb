//! `truxectl doctor`: a weak configuration has every problem reported in one run (exit 1); a
//! production configuration on PostgreSQL, Redis and SMTP passes against the running server.

use serde_json::Value;

use crate::support::process::{text, truxectl};
use crate::support::smtp::SmtpSink;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, redis_url, test_key_pem};

/// `doctor --json`'s checks as (check, status, detail).
fn checks(output: &std::process::Output) -> Vec<(String, String, String)> {
    let json: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("JSON: {}", text(output)));
    json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            let field = |name: &str| c[name].as_str().unwrap_or_default().to_string();
            (field("check"), field("status"), field("detail"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_every_problem_of_a_weak_configuration_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let env_file = dir.path().join("truxe.env");
    std::fs::write(
        &env_file,
        "SESSION_SECRET=short\nADMIN_TOKEN=changeme-changeme-changeme-changeme\nRATE_LIMIT_ENABLED=false\n\
         ALLOWED_ORIGINS=*\nJWT_ISSUER=http://auth.example.test\n",
    )
    .expect("env file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let missing_db = format!("sqlite://{}", dir.path().join("nothing-here.db").display());
    let env_path = env_file.display().to_string();
    let output = truxectl(dir.path(), &[("DATABASE_URL", &missing_db)], &["doctor", "--json", "--env-file", &env_path]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let found = checks(&output);
    let failed = |check: &str| found.iter().any(|(c, s, _)| c == check && s == "fail");
    for check in [
        "production mode",
        "configuration SESSION_SECRET",
        "configuration ADMIN_TOKEN",
        "configuration JWT_PRIVATE_KEY",
        "configuration SMTP_HOST",
        "configuration ALLOWED_ORIGINS",
        "SESSION_SECRET",
        "ADMIN_TOKEN",
        "signing key",
        "ALLOWED_ORIGINS",
        "rate limits",
        "issuer",
        "file permissions",
        "database",
        "smtp",
        "backups",
    ] {
        assert!(failed(check), "{check} reported as failing: {found:#?}");
    }
    assert!(!dir.path().join("nothing-here.db").exists(), "doctor changes nothing (no database file created)");
    assert!(!dir.path().join("truxe-data").exists(), "doctor changes nothing (no data directory)");
    // Nothing secret in what it prints.
    assert!(!text(&output).contains("changeme-changeme"), "{}", text(&output));

    // The text form: one line per check, FAIL first word, a summary.
    let plain = truxectl(dir.path(), &[("DATABASE_URL", &missing_db)], &["doctor", "--env-file", &env_path]);
    assert_eq!(plain.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&plain.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("FAIL  rate limits: ")), "{stdout}");
    assert!(stdout.contains(" failed, "), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_production_configuration_against_the_running_server() {
    const ISSUER: &str = "https://auth.example.test";
    let sink = SmtpSink::start().await;
    let server = TestServer::start_with(Backend::Postgres, &[("JWT_ISSUER", ISSUER)]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let key = test_key_pem();
    let smtp_port = sink.port().to_string();
    let redis = redis_url();
    let env = [
        ("TRUXE_ENV", "production"),
        ("DATABASE_URL", server.db.url.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("JWT_PRIVATE_KEY", key.as_str()),
        ("JWT_ISSUER", ISSUER),
        ("SESSION_SECRET", "0123456789abcdefghijklmnopqrstuvwxyzABCD"),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", smtp_port.as_str()),
        ("SMTP_SECURE", "false"),
        ("EMAIL_FROM", "noreply@example.test"),
        ("ALLOWED_ORIGINS", "https://app.example.test"),
    ];
    let url = server.base_url.clone();
    // Without a backup, that is the one failure; with a verified one of today, none.
    let backups = dir.path().join("backups").display().to_string();
    let output = truxectl(dir.path(), &env, &["doctor", "--json", "--url", &url, "--backup-dir", &backups]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let failing: Vec<_> = checks(&output).into_iter().filter(|(_, s, _)| s == "fail").collect();
    assert!(failing.len() == 1 && failing[0].0 == "backups", "{failing:#?}");
    let made = truxectl(dir.path(), &env, &["backup", "create", "--verify", "--out", &backups]);
    assert!(made.status.success(), "{}", text(&made));
    let output = truxectl(dir.path(), &env, &["doctor", "--json", "--url", &url, "--backup-dir", &backups]);
    let found = checks(&output);
    assert_eq!(output.status.code(), Some(0), "{found:#?}\n{}", text(&output));
    assert!(found.iter().all(|(_, status, _)| status != "fail"), "{found:#?}");
    for check in [
        "configuration",
        "database",
        "migrations",
        "clock",
        "redis",
        "smtp",
        "discovery",
        "signing key",
        "backups",
        "key schedule",
    ] {
        assert!(found.iter().any(|(c, s, _)| c == check && s == "ok"), "{check} ok: {found:#?}");
    }

    // A server whose discovery names another issuer is caught.
    let other = [("JWT_ISSUER", "https://other.example.test")];
    let mismatched: Vec<(&str, &str)> = env.iter().copied().filter(|(k, _)| *k != "JWT_ISSUER").chain(other).collect();
    let output = truxectl(dir.path(), &mismatched, &["doctor", "--json", "--url", &url, "--backup-dir", &backups]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let found = checks(&output);
    assert!(found.iter().any(|(c, s, d)| c == "discovery" && s == "fail" && d.contains(ISSUER)), "{found:#?}");
}
