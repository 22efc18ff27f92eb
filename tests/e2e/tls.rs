//! TLS to every back end, against the real servers ./scripts/test starts with a throwaway CA:
//! PostgreSQL with `ssl=on`, Redis on its `tls-port`, and the SMTP sink with STARTTLS and
//! implicit TLS. Certificates are checked unless the operator says otherwise, and one that does
//! not verify is refused with a message naming the host and the way out.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use truxe_server::mail::{MailError, Mailer};

use crate::on_both_backends;
use crate::support::oauth::{machine_client, token_for, token_server};
use crate::support::process::{server_fails, text};
use crate::support::smtp::{SinkTls, SmtpSink};
use crate::support::{
    Backend, TestDb, TestServer, ca_file, config_from, free_port, postgres_admin_url, redis_tls_url, tls_cert_file,
};

const WAIT: Duration = Duration::from_secs(10);

#[derive(QueryableByName)]
struct Connections {
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    encrypted: i64,
}

/// The server's connections to its database, as PostgreSQL sees them (`pg_stat_ssl`), counted
/// from a connection of the test's own.
fn server_connections(db: &TestDb) -> Connections {
    let name = url::Url::parse(&db.url).expect("url").path().trim_start_matches('/').to_string();
    let mut admin = diesel::PgConnection::establish(&postgres_admin_url()).expect("admin connection");
    diesel::sql_query(
        "SELECT count(*) AS total, count(*) FILTER (WHERE s.ssl) AS encrypted \
         FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
         WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
    )
    .bind::<diesel::sql_types::Text, _>(name)
    .get_result(&mut admin)
    .expect("pg_stat_ssl")
}

/// Readiness is ok, a client_credentials token is issued, and every connection of the server's
/// pool is encrypted.
async fn assert_works_over_tls(server: &TestServer) {
    let (status, body) = server.get_json("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
    let client = machine_client(server, "client_secret_basic").await;
    let token = token_for(server, &client, &[]).await;
    assert!(!token.is_empty());
    let connections = server_connections(&server.db);
    assert!(connections.total >= 1, "the server holds connections to its database");
    assert_eq!(connections.encrypted, connections.total, "every connection of the server is TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_database_ssl_and_a_private_ca() {
    let ca = ca_file();
    let server = token_server(Backend::Postgres, &[("DATABASE_SSL", "true"), ("DATABASE_SSL_CA", &ca)]).await;
    assert_works_over_tls(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_without_verification_for_a_self_signed_certificate() {
    let server =
        token_server(Backend::Postgres, &[("DATABASE_SSL", "true"), ("DATABASE_SSL_REJECT_UNAUTHORIZED", "false")])
            .await;
    assert_works_over_tls(&server).await;
}

/// The control: a plaintext connection to the same database counts as one, so the check above
/// can fail. (libpq's default `sslmode=prefer` would encrypt too when the server offers TLS, as
/// the test server does, but check nothing; `disable` is plaintext.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_stat_ssl_tells_plaintext_connections_apart() {
    let server = token_server(Backend::Postgres, &[("DATABASE_SSL", "true"), ("DATABASE_SSL_CA", &ca_file())]).await;
    let before = server_connections(&server.db);
    let _plain = diesel::PgConnection::establish(&format!("{}?sslmode=disable", server.db.url)).expect("plaintext");
    let after = server_connections(&server.db);
    assert_eq!(after.total - after.encrypted, before.total - before.encrypted + 1);
}

/// Starts the binary on `url` with `env`, expecting it to refuse with a configuration error.
fn refused_at_start(url: &str, env: &[(&str, &str)]) -> String {
    let cwd = tempfile::tempdir().expect("tmp");
    let mut env = env.to_vec();
    let port = free_port().to_string();
    env.extend([("DATABASE_URL", url), ("DATABASE_SSL", "true"), ("LOG_LEVEL", "warn"), ("PORT", &port)]);
    let output = server_fails(cwd.path(), &env, &[]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(78), "a configuration error; output:\n{message}");
    for hint in ["DATABASE_SSL_CA", "DATABASE_SSL_REJECT_UNAUTHORIZED", "TLS"] {
        assert!(message.contains(hint), "expected {hint:?} in:\n{message}");
    }
    message
}

#[test]
fn a_postgres_certificate_from_an_unknown_ca_is_refused_at_start() {
    let db = TestDb::new(Backend::Postgres);
    let host = url::Url::parse(&db.url).expect("url").host_str().expect("host").to_string();
    // No DATABASE_SSL_CA: the system trust store does not know the throwaway CA.
    let message = refused_at_start(&db.url, &[]);
    assert!(message.contains(&format!("\"{host}\"")), "names the host: {message}");
    assert!(message.contains("certificate verify failed"), "says why: {message}");
    // A CA file that is not the one that signed the certificate (the server certificate
    // itself is no CA): refused the same way.
    let cert = tls_cert_file();
    let message = refused_at_start(&db.url, &[("DATABASE_SSL_CA", &cert)]);
    assert!(message.contains("certificate verify failed"), "{message}");
}

#[test]
fn a_postgres_certificate_for_another_host_is_refused_at_start() {
    let db = TestDb::new(Backend::Postgres);
    let mut url = url::Url::parse(&db.url).expect("url");
    url.set_host(Some("db.wrong-name.test")).expect("host");
    // The name is checked against the certificate; the address is the test server's.
    url.query_pairs_mut().append_pair("hostaddr", "127.0.0.1");
    let ca = ca_file();
    let message = refused_at_start(url.as_str(), &[("DATABASE_SSL_CA", &ca)]);
    assert!(message.contains("db.wrong-name.test"), "names the host: {message}");
    assert!(message.contains("does not match host name"), "says why: {message}");
}

#[test]
fn a_database_ssl_ca_that_is_not_a_certificate_is_a_configuration_error() {
    let cwd = tempfile::tempdir().expect("tmp");
    let not_pem = cwd.path().join("ca.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let not_pem = not_pem.display().to_string();
    for (value, why) in [(not_pem.as_str(), "no PEM certificate"), ("/nonexistent/ca.pem", "cannot read")] {
        let port = free_port().to_string();
        let env = [
            ("DATABASE_URL", "postgres://db.example/truxe"),
            ("DATABASE_SSL", "true"),
            ("DATABASE_SSL_CA", value),
            ("PORT", &port),
        ];
        let output = server_fails(cwd.path(), &env, &[]);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(78), "{message}");
        assert!(message.contains("DATABASE_SSL_CA") && message.contains(why), "{message}");
    }
}

on_both_backends! {
    async fn redis_over_tls_with_a_private_ca(backend: Backend) {
        let ca = ca_file();
        let rediss = redis_tls_url();
        // Both spellings: a rediss:// URL, and redis:// with REDIS_TLS=true.
        let plain_scheme = rediss.replacen("rediss://", "redis://", 1);
        for vars in [
            vec![("REDIS_URL", rediss.as_str()), ("REDIS_TLS_CA", ca.as_str())],
            vec![("REDIS_URL", plain_scheme.as_str()), ("REDIS_TLS", "true"), ("REDIS_TLS_CA", ca.as_str())],
            vec![("REDIS_URL", rediss.as_str()), ("REDIS_TLS_REJECT_UNAUTHORIZED", "false")],
        ] {
            let prefix = format!("{}:", uuid::Uuid::new_v4().simple());
            let mut vars = vars.clone();
            vars.push(("TRUXE_REDIS_PREFIX", &prefix));
            let server = TestServer::start_with(backend, &vars).await;
            let (status, body) = server.get_json("/health/ready").await;
            assert_eq!(status, 200, "{vars:?}: {body}");
            assert_eq!(body["checks"]["redis"]["status"], "ok", "{body}");
            // The one client constructor (pub/sub connections) applies the same settings.
            let config = server.state.config.redis.clone().expect("redis config");
            let client = truxe_server::store::redis::client(&config).expect("client");
            let mut conn = client.get_multiplexed_async_connection().await.expect("a TLS connection");
            let pong: String = redis::cmd("PING").query_async(&mut conn).await.expect("PING");
            assert_eq!(pong, "PONG");
        }
    }

    async fn a_redis_certificate_that_does_not_verify_fails_readiness(backend: Backend) {
        let rediss = redis_tls_url();
        let prefix = format!("{}:", uuid::Uuid::new_v4().simple());
        let server = TestServer::start_with(backend, &[("REDIS_URL", &rediss), ("TRUXE_REDIS_PREFIX", &prefix)]).await;
        let (status, body) = server.get_json("/health/ready").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["checks"]["redis"]["status"], "fail", "{body}");
        assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
        // What the readiness check logs: the server and the reason.
        let pool = server.state.redis.as_ref().expect("pool");
        let error = truxe_server::store::redis::ping(pool).await.expect_err("the certificate is refused").to_string();
        let port = url::Url::parse(&rediss).expect("url").port().expect("port");
        assert!(error.contains(&format!("127.0.0.1:{port}")), "names the server: {error}");
        assert!(error.contains("certificate verify failed"), "says why: {error}");
        assert!(error.contains("REDIS_TLS_CA"), "says what to do: {error}");
    }
}

fn tls_mailer(port: u16, extra: &[(&str, &str)], dir: &tempfile::TempDir) -> Mailer {
    let port = port.to_string();
    let mut vars = vec![
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", port.as_str()),
        ("SMTP_SECURE", "true"),
        ("SMTP_USER", "mailer@truxe.test"),
        ("SMTP_PASSWORD", "s3cret: pass"),
        ("EMAIL_FROM", "noreply@truxe.test"),
    ];
    vars.extend_from_slice(extra);
    Mailer::from_config(&config_from(&vars, dir)).expect("SMTP mailer")
}

const LINK: &str = "http://127.0.0.1:3001/login/magic?token=abc";

async fn delivers_over_tls_with_auth(mode: SinkTls, extra: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start_tls(mode).await;
    let ca = ca_file();
    let mut vars = vec![("SMTP_TLS_CA", ca.as_str())];
    vars.extend_from_slice(extra);
    let mailer = tls_mailer(sink.port(), &vars, &dir);
    mailer.send_magic_link("alice@example.com", LINK, Duration::from_secs(900)).await.expect("sent");
    let message = sink.wait_for_message(WAIT).await;
    assert!(message.tls, "the message went over TLS");
    assert_eq!(message.auth, Some(("mailer@truxe.test".to_string(), "s3cret: pass".to_string())));
    assert_eq!(message.url_in_text("http://127.0.0.1:3001/login/magic").as_deref(), Some(LINK));
    let starttls = sink.commands().iter().any(|c| c.eq_ignore_ascii_case("STARTTLS"));
    assert_eq!(starttls, mode == SinkTls::StartTls, "{:?}", sink.commands());
}

#[tokio::test]
async fn smtp_starttls_with_auth_delivers_a_magic_link() {
    delivers_over_tls_with_auth(SinkTls::StartTls, &[]).await;
}

#[tokio::test]
async fn smtp_implicit_tls_with_auth_delivers_a_magic_link() {
    delivers_over_tls_with_auth(SinkTls::Implicit, &[("SMTP_TLS_IMPLICIT", "true")]).await;
}

#[tokio::test]
async fn smtp_tls_without_verification_delivers() {
    let dir = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start_tls(SinkTls::StartTls).await;
    let mailer = tls_mailer(sink.port(), &[("SMTP_TLS_REJECT_UNAUTHORIZED", "false")], &dir);
    mailer.send_magic_link("bob@example.com", LINK, Duration::from_secs(900)).await.expect("sent");
    assert!(sink.wait_for_message(WAIT).await.tls);
}

#[tokio::test]
async fn an_smtp_certificate_that_does_not_verify_is_refused() {
    for (mode, implicit) in [(SinkTls::StartTls, "false"), (SinkTls::Implicit, "true")] {
        let dir = tempfile::tempdir().expect("tmp");
        let sink = SmtpSink::start_tls(mode).await;
        // No SMTP_TLS_CA: the system trust store does not know the throwaway CA.
        let mailer = tls_mailer(sink.port(), &[("SMTP_TLS_IMPLICIT", implicit)], &dir);
        let error = mailer
            .send_magic_link("carol@example.com", LINK, Duration::from_secs(900))
            .await
            .expect_err("the certificate is refused");
        assert!(matches!(error, MailError::Send { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&format!("127.0.0.1:{}", sink.port())), "names the server: {message}");
        assert!(message.contains("certificate verify failed"), "says why: {message}");
        assert!(message.contains("SMTP_TLS_CA"), "says what to do: {message}");
        assert!(!message.contains("s3cret"), "{message}");
        sink.wait_for_handshake_failure(WAIT).await;
        assert!(sink.messages().is_empty(), "no mail was sent");
        assert!(
            !sink.commands().iter().any(|c| c.starts_with("AUTH") || c.starts_with("MAIL")),
            "{:?}",
            sink.commands()
        );
    }
}
