//! The deployment guide's own `.env.production` (tests/e2e/fixtures/guide.env.production, copied
//! verbatim from the guide's block), with only hosts, ports, passwords and key material
//! replaced, runs a production-mode `truxe-server` against TLS back ends: PostgreSQL with
//! `DATABASE_SSL=true` (verified), a private Redis with TLS and `requirepass`, and SMTP with
//! STARTTLS and AUTH. The throwaway CA is trusted the way an operator's host would trust a
//! private CA, through `SSL_CERT_FILE` in the environment: the file itself gains no variables.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::Connection;
use diesel::connection::SimpleConnection;
use truxe_server::config::Config;

use crate::support::process::ServerProcess;
use crate::support::smtp::{SinkTls, SmtpSink};
use crate::support::{
    agent, ca_file, free_port, postgres_admin_url, set_cookie, test_key, tls_cert_file, tls_key_file,
};

const GUIDE_ENV: &str = include_str!("fixtures/guide.env.production");
const WAIT: Duration = Duration::from_secs(15);

/// The guide's variables that may still be reported "not acted on" at start: none. Each one is
/// acted on or, like BCRYPT_ROUNDS and DATADOG_API_KEY, explained (README).
const MAY_BE_NOT_ACTED_ON: &[&str] = &[];

/// Replaces `from` with `to` in the file's text, exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} appears once in the guide's file");
    text.replacen(from, to, 1)
}

/// Replaces the value of `NAME=` (the whole line after `=`), exactly one line.
fn replace_value(text: &str, name: &str, value: &str) -> String {
    let prefix = format!("{name}=");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(lines.len(), 1, "{name} is set once in the guide's file");
    replace_once(text, lines[0], &format!("{prefix}{value}"))
}

fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    openssl::rand::rand_bytes(&mut buf).expect("random");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A private `redis-server` with TLS only (no plain port) and a password; killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    async fn start(password: &str) -> TlsRedis {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let (cert, key, ca) = (tls_cert_file(), tls_key_file(), ca_file());
        let port_text = port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--tls-port", &port_text])
            .args(["--tls-cert-file", &cert, "--tls-key-file", &key, "--tls-ca-cert-file", &ca])
            .args(["--tls-auth-clients", "no", "--requirepass", password, "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by ./scripts/test)");
        let mut redis = TlsRedis { child, port, _dir: dir };
        // Ready when an authenticated PING over TLS answers.
        let url = format!("rediss://:{password}@127.0.0.1:{port}/");
        let pem = std::fs::read(ca_file()).expect("CA");
        let client = redis::Client::build_with_tls(
            url.as_str(),
            redis::TlsCertificates { client_tls: None, root_cert: Some(pem) },
        )
        .expect("client");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && let Ok(pong) = redis::cmd("PING").query_async::<String>(&mut conn).await
                && pong == "PONG"
            {
                return redis;
            }
            assert!(redis.child.try_wait().expect("wait").is_none(), "redis-server exited (port {port} taken?)");
            assert!(Instant::now() < deadline, "the TLS redis-server did not answer within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The guide's role and database (`username`, `truxe_prod`) on the test PostgreSQL, migrated.
fn guide_database(admin_url: &str, password: &str) -> url::Url {
    let mut admin = diesel::PgConnection::establish(admin_url).expect("admin connection");
    // One statement each: DROP/CREATE DATABASE cannot run in the implicit transaction of a batch.
    for statement in [
        "DROP DATABASE IF EXISTS truxe_prod WITH (FORCE)".to_string(),
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'username') THEN CREATE ROLE username LOGIN; END IF; END $$".to_string(),
        format!("ALTER ROLE username PASSWORD '{password}'"),
        "CREATE DATABASE truxe_prod OWNER username".to_string(),
    ] {
        admin.batch_execute(&statement).expect("the guide's role and database");
    }
    let admin = url::Url::parse(admin_url).expect("admin url");
    let mut url = admin.clone();
    url.set_username("username").expect("user");
    url.set_password(Some(password)).expect("password");
    url.set_path("truxe_prod");
    let lookup = |name: &str| (name == "DATABASE_URL").then(|| url.to_string());
    let config = Config::from_lookup(&lookup).expect("config");
    let mut conn = truxe_server::store::connect_one(&config.database).expect("connect as username");
    truxe_server::store::migrations::apply_all(&mut conn).expect("migrate");
    let user = truxe_server::service::users::NewUser { email: "alice@example.com".to_string(), ..Default::default() };
    truxe_server::service::users::create(&mut conn, &user, "test", truxe_server::store::unix_now()).expect("user");
    url
}

impl Drop for GuideDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = diesel::PgConnection::establish(&postgres_admin_url()) {
            let _ = admin.batch_execute("DROP DATABASE IF EXISTS truxe_prod WITH (FORCE)");
        }
    }
}

/// Drops the guide's database when the test ends, whatever the outcome.
struct GuideDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_env_production_runs_on_tls_back_ends() {
    let admin_url = postgres_admin_url();
    let admin = url::Url::parse(&admin_url).expect("admin url");
    let (pg_host, pg_port) = (admin.host_str().expect("host").to_string(), admin.port().unwrap_or(5432));
    let db_password = random_secret(12);
    let _db = GuideDatabase;
    guide_database(&admin_url, &db_password);

    let redis_password = random_secret(16);
    let redis = TlsRedis::start(&redis_password).await;
    let sink = SmtpSink::start_tls(SinkTls::StartTls).await;
    let port = free_port();
    let smtp_password = random_secret(10);
    let session_secret = random_secret(32);
    let dir = tempfile::tempdir().expect("tmp");
    let admin_token_file = dir.path().join("admin_token");
    std::fs::write(&admin_token_file, random_secret(24)).expect("admin token");

    // Only hosts, ports, passwords and key material change.
    let mut env = GUIDE_ENV.to_string();
    env = replace_value(&env, "PORT", &port.to_string());
    env = replace_once(
        &env,
        "postgresql://username:password@db-host:5432/truxe_prod",
        &format!("postgresql://username:{db_password}@{pg_host}:{pg_port}/truxe_prod"),
    );
    env = replace_once(
        &env,
        "redis://:password@redis-host:6379",
        &format!("redis://:{redis_password}@127.0.0.1:{}", redis.port),
    );
    let pem = |text: &str| format!("\"{}\"", text.trim_end().replace('\n', "\\n"));
    env = replace_value(&env, "JWT_PRIVATE_KEY", &pem(test_key().private_pem().secret()));
    env = replace_value(&env, "JWT_PUBLIC_KEY", &pem(&test_key().public_pem()));
    env = replace_value(&env, "SESSION_SECRET", &session_secret);
    env = replace_value(&env, "SMTP_HOST", "127.0.0.1");
    env = replace_value(&env, "SMTP_PORT", &sink.port().to_string());
    env = replace_value(&env, "SMTP_PASSWORD", &smtp_password);
    let env_file = dir.path().join(".env.production");
    std::fs::write(&env_file, &env).expect("env file");
    // Nothing but the replacements differs from the guide's file.
    let changed = GUIDE_ENV.lines().zip(env.lines()).filter(|(a, b)| a != b).count();
    assert_eq!(changed, 9, "nine lines replaced");
    assert_eq!(GUIDE_ENV.lines().count(), env.lines().count());

    // The operator's host: the private CA in the system trust store, and the admin token as a
    // systemd credential (production requires one; the guide's file has none).
    let ca = ca_file();
    let admin_token_path = admin_token_file.display().to_string();
    let host_env = [("SSL_CERT_FILE", ca.as_str()), ("ADMIN_TOKEN_FILE", admin_token_path.as_str())];
    let server = ServerProcess::start_with_args(dir.path(), &host_env, port, &["--env-file", ".env.production"]).await;

    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let ready = client.get(server.url("/health/ready")).send().await.expect("ready");
    let status = ready.status().as_u16();
    let hsts = ready.headers().get("strict-transport-security").map(|v| v.to_str().unwrap_or_default().to_string());
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(status, 200, "{body}\n{}", server.output());
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
    assert_eq!(body["checks"]["database"]["backend"], "postgresql", "{body}");
    assert_eq!(body["checks"]["redis"]["status"], "ok", "{body}");
    // An https issuer: HSTS on every answer.
    assert_eq!(hsts.as_deref(), Some("max-age=31536000; includeSubDomains"));

    // The guide's ALLOWED_ORIGINS is acted on: its application may call the token endpoint.
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url("/oauth-provider/token"))
        .header("Origin", "https://app.yourdomain.com")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.yourdomain.com");

    // A magic link, over STARTTLS, with the guide's SMTP user and the replaced password.
    let login = client.get(server.url("/login")).send().await.expect("GET /login");
    assert_eq!(login.status(), 200);
    let csrf_cookie = set_cookie(login.headers(), "__Host-truxe_csrf").expect("the CSRF cookie (SESSION_SECURE)");
    let page = login.text().await.expect("page");
    let csrf = agent::forms(&page)
        .into_iter()
        .flat_map(|form| form.fields)
        .find(|(name, _)| name == "csrf_token")
        .map(|(_, value)| value)
        .expect("csrf_token");
    let asked = client
        .post(server.url("/login"))
        .header("Cookie", csrf_cookie)
        .form(&[("csrf_token", csrf.as_str()), ("email", "alice@example.com")])
        .send()
        .await
        .expect("POST /login");
    assert_eq!(asked.status(), 200, "{}", asked.text().await.unwrap_or_default());
    let message = sink.wait_for_message(WAIT).await;
    assert!(message.tls, "the mail went over TLS");
    assert_eq!(message.auth, Some(("your-smtp-username".to_string(), smtp_password.clone())));
    assert_eq!(message.rcpt_to, ["alice@example.com"]);
    assert!(message.url_in_text("https://auth.yourdomain.com/login/magic?token=").is_some(), "{}", message.text());

    let output = server.output();
    for line in output.lines().filter(|l| l.contains("not acted on")) {
        assert!(MAY_BE_NOT_ACTED_ON.iter().any(|name| line.contains(name)), "unexpected: {line}\n{output}");
    }
    assert!(output.contains("BCRYPT_ROUNDS has no meaning for Truxe"), "{output}");
    // The guide's monitoring lines: its placeholder DSN sends nothing and says so; the Datadog
    // key is explained (the Agent holds it; OpenMetrics on /metrics, traces over OTLP).
    assert!(output.contains("SENTRY_DSN is the deployment guide's placeholder, not a DSN"), "{output}");
    assert!(output.contains("DATADOG_API_KEY is not used by Truxe: the Datadog Agent holds the key"), "{output}");
    assert!(!output.contains("your-datadog-key"), "{output}");
    let metrics = client.get(server.url("/metrics")).send().await.expect("GET /metrics");
    assert_eq!(metrics.status(), 200);
    let metrics = crate::support::prometheus::parse(&metrics.text().await.expect("metrics"));
    assert_eq!(metrics.value("truxe_redis_errors_total", &[]), Some(0.0), "Redis over TLS answered every call");
    assert_eq!(metrics.value("truxe_db_pool_max_connections", &[]), Some(10.0), "the guide's DATABASE_POOL_MAX");
    for secret in [&db_password, &redis_password, &smtp_password, &session_secret] {
        assert!(!output.contains(secret.as_str()), "a secret in the log:\n{output}");
    }
}
