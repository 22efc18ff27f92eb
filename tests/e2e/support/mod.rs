//! Test fixtures: per-test databases on both backends, in-process servers and spawned binaries.

#![allow(dead_code)]

pub mod agent;
pub mod browser;
pub mod callback;
pub mod flow;
pub mod oauth;
pub mod oidc;
pub mod process;
pub mod prometheus;
pub mod receiver;
pub mod redis;
pub mod smtp;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;

use diesel::Connection;
use diesel::connection::SimpleConnection;
use tempfile::TempDir;
use truxe_server::config::Config;
use truxe_server::keys::{Algorithm, SigningKey};
use truxe_server::startup::Application;
use truxe_server::store::{self, migrations};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `mod name { sqlite, postgres }` so that one test body runs on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($backend:ident : Backend) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { body($crate::support::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { body($crate::support::Backend::Postgres).await }
            async fn body($backend: $crate::support::Backend) $body
        }
    )*};
}

/// The PostgreSQL server ./scripts/test started (or the one the caller named). Missing is a
/// failure, never a skip: a suite that silently drops a backend proves nothing about it.
pub fn postgres_admin_url() -> String {
    std::env::var("TRUXE_TEST_DATABASE_URL")
        .expect("TRUXE_TEST_DATABASE_URL is not set: run the suite with ./scripts/test, which starts PostgreSQL")
}

pub fn redis_url() -> String {
    std::env::var("TRUXE_TEST_REDIS_URL")
        .expect("TRUXE_TEST_REDIS_URL is not set: run the suite with ./scripts/test, which starts Redis")
}

fn test_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with ./scripts/test, which makes a throwaway CA and TLS back ends")
    })
}

/// The throwaway CA ./scripts/test made (PEM); it signed [`tls_cert_file`].
pub fn ca_file() -> String {
    test_env("TRUXE_TEST_CA_FILE")
}

/// The server certificate (SAN 127.0.0.1, localhost) the test PostgreSQL and Redis serve.
pub fn tls_cert_file() -> String {
    test_env("TRUXE_TEST_TLS_CERT")
}

/// The key of [`tls_cert_file`].
pub fn tls_key_file() -> String {
    test_env("TRUXE_TEST_TLS_KEY")
}

/// The test Redis's tls-port: `rediss://127.0.0.1:PORT/`.
pub fn redis_tls_url() -> String {
    test_env("TRUXE_TEST_REDIS_TLS_URL")
}

/// A database of its own for one test, dropped afterwards.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub dir: TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("truxe.db").display());
                TestDb { backend, url, dir, pg_name: None }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("truxe_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = diesel::PgConnection::establish(&admin).expect("connect to the test PostgreSQL");
                conn.batch_execute(&format!("CREATE DATABASE {name}")).expect("create test database");
                let mut url = url::Url::parse(&admin).expect("admin url");
                url.set_path(&name);
                TestDb { backend, url: url.to_string(), dir, pg_name: Some(name) }
            }
        }
    }

    /// Applies every migration, as `truxectl migrate` would.
    pub fn migrate(&self) {
        // One direct connection, closed before this returns: a pool's background threads could
        // still be closing SQLite connections (and resetting the WAL) while the test writes.
        let config = config_from(&[("DATABASE_URL", &self.url)], &self.dir);
        let mut conn = store::connect_one(&config.database).expect("connect");
        migrations::apply_all(&mut conn).expect("migrate");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name
            && let Ok(mut conn) = diesel::PgConnection::establish(&postgres_admin_url())
        {
            let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// One RSA key for the whole test process (generation is the slow part of a start).
pub fn test_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate(Algorithm::RS256, 2048).expect("generate test key"))
}

pub fn test_key_pem() -> String {
    test_key().private_pem().secret().clone()
}

/// A configuration for tests: the test database, a data directory in the test's temp dir,
/// the shared key, quiet logs, rate limits off (`RATE_LIMIT_ENABLED=false`: tests of other
/// features send more requests than a production limit allows; `tests/e2e/rate_limits.rs` and
/// the magic-link-limit tests turn them on); `extra` overrides.
pub fn config_from(extra: &[(&str, &str)], dir: &TempDir) -> Config {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("TRUXE_DATA_DIR".into(), dir.path().join("data").display().to_string()),
        ("JWT_PRIVATE_KEY".into(), test_key_pem()),
        ("JWT_ISSUER".into(), "http://127.0.0.1:3001".into()),
        ("ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ("LOG_LEVEL".into(), "warn".into()),
        ("RATE_LIMIT_ENABLED".into(), "false".into()),
    ]);
    for (k, v) in extra {
        vars.insert((*k).to_string(), (*v).to_string());
    }
    Config::from_lookup(&|name: &str| vars.get(name).cloned()).expect("valid test configuration")
}

/// The admin token every test server is configured with.
pub const ADMIN_TOKEN: &str = "adm_test_token_0123456789abcdefghijklmnop";

/// As a value in `TestServer::start_with`: the server's own base URL (for `JWT_ISSUER`, so that
/// discovery-driven clients find an issuer that matches where they connect).
pub const SELF_ISSUER: &str = "{self}";

/// A server running inside the test process on a free port.
pub struct TestServer {
    pub base_url: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    /// The running server's state (its audit queue, its client cache).
    pub state: actix_web::web::Data<truxe_server::http::AppState>,
    handle: actix_web::dev::ServerHandle,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: Backend, extra: &[(&str, &str)]) -> Self {
        let db = TestDb::new(backend);
        if backend == Backend::Postgres {
            db.migrate();
        }
        Self::start_with_db(db, extra).await
    }

    /// A server on a database that already exists (and, on PostgreSQL, is migrated).
    pub async fn start_with_db(db: TestDb, extra: &[(&str, &str)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("addr").port();
        let base_url = format!("http://127.0.0.1:{port}");
        let mut vars = vec![("DATABASE_URL", db.url.as_str())];
        vars.extend(extra.iter().map(|&(k, v)| (k, if v == SELF_ISSUER { base_url.as_str() } else { v })));
        let config = config_from(&vars, &db.dir);
        let app = Application::build_with_listener(config, listener).await.expect("server starts");
        let handle = app.handle();
        let state = app.state();
        let running = tokio::spawn(app.run());
        TestServer {
            base_url,
            db,
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client"),
            state,
            handle,
            running: Some(running),
        }
    }

    /// A server that sends mail through `sink` and is its own issuer, as a relying party that
    /// reads discovery needs.
    pub async fn start_mailing(backend: Backend, sink: &smtp::SmtpSink) -> Self {
        let port = sink.port().to_string();
        Self::start_with(
            backend,
            &[
                ("JWT_ISSUER", SELF_ISSUER),
                ("SMTP_HOST", "127.0.0.1"),
                ("SMTP_PORT", &port),
                ("SMTP_SECURE", "false"),
                ("EMAIL_FROM", "noreply@truxe.test"),
            ],
        )
        .await
    }

    /// Registers a person on the server's database; returns the user id.
    pub fn create_user(&self, email: &str) -> String {
        let mut conn = self.state.pool.get().expect("connection");
        let new = truxe_server::service::users::NewUser { email: email.to_string(), ..Default::default() };
        truxe_server::service::users::create(&mut conn, &new, "test", truxe_server::store::unix_now())
            .expect("user")
            .user_id
            .into()
    }

    /// `GET /login/mfa` with a pending session's `cookie`: the `Cookie` header value to post the
    /// code form with (the session plus the CSRF cookie the page set) and the form's CSRF token.
    pub async fn mfa_form(&self, cookie: &str) -> (String, String) {
        let page = self.client.get(self.url("/login/mfa")).header("Cookie", cookie).send().await.expect("GET");
        assert_eq!(page.status(), 200);
        let csrf_cookie = set_cookie(page.headers(), "truxe_csrf").expect("a CSRF cookie");
        let cookies = format!("{cookie}; {csrf_cookie}");
        let body = page.text().await.expect("body");
        let csrf = agent::forms(&body)
            .into_iter()
            .flat_map(|form| form.fields)
            .find(|(name, _)| name == "csrf_token")
            .map(|(_, value)| value)
            .expect("a csrf_token field");
        (cookies, csrf)
    }

    /// A browser session for `user_id` as the magic link leaves it (`mfa_pending`: the second
    /// factor still owed), as the `Cookie` header value `name=ID.MAC` the server's cookie would
    /// carry; also returns the session row's key.
    pub fn session_cookie(&self, user_id: &str, mfa_pending: bool) -> (String, String) {
        use base64::Engine;
        let mut conn = self.state.pool.get().expect("connection");
        let user = truxe_server::service::users::get(&mut conn, user_id).expect("user");
        let now = truxe_server::store::unix_now();
        let meta = truxe_server::model::request::RequestMeta::default();
        let id = truxe_server::service::sessions::start(&mut conn, &user, &["email"], mfa_pending, 900, &meta, now)
            .expect("session")
            .expect("an active user");
        let mac =
            truxe_server::oauth::client_secret::hmac_sha256(self.state.session_key.secret(), id.secret().as_bytes());
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac);
        let name = truxe_server::http::session::cookie_name(&self.state);
        (format!("{name}={}.{mac}", id.secret()), truxe_server::service::sessions::session_hash(id.secret()))
    }

    /// Registers a client through the admin API; returns its JSON (with `client_secret` for a
    /// confidential client).
    pub async fn register_client(&self, registration: serde_json::Value) -> serde_json::Value {
        let response = self
            .client
            .post(self.url("/oauth-provider/clients"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&registration)
            .send()
            .await
            .expect("create client");
        assert_eq!(response.status(), 201, "client registration refused");
        response.json().await.expect("json")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.client.get(self.url(path)).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    /// Stops gracefully, as on SIGTERM, and waits until `Application::run` has returned.
    pub async fn stop(&mut self) {
        self.handle.stop(true).await;
        if let Some(running) = self.running.take() {
            running.await.expect("the server task").expect("the server ran");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        drop(handle.stop(false));
    }
}

/// `name=value` of the cookie a response sets under `name`, for a `Cookie` header.
pub fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers.get_all(reqwest::header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        let pair = line.split(';').next()?.trim();
        (pair.split_once('=')?.0 == name).then(|| pair.to_string())
    })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The workspace's built binaries (./scripts/test builds them before running the tests).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (./scripts/test does `cargo build --workspace --bins`)",
        path.display()
    );
    path
}
