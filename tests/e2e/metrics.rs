//! `GET /metrics`: Prometheus text that a scraper accepts, counters that move where the events
//! happen (requests per route pattern, tokens per grant, failed authentications, 429s per route,
//! purged rows), the pool gauges, and `METRICS_PORT` as a listener of its own.

use std::time::{Duration, Instant};

use diesel::Connection;
use diesel::connection::SimpleConnection;

use crate::on_both_backends;
use crate::support::flow::{Agent, create_user, flow_server, refresh, sign_in_tokens, token, web_app};
use crate::support::oauth::{Registered, machine_client, token_for};
use crate::support::prometheus::{self, Exposition};
use crate::support::{ADMIN_TOKEN, Backend, TestDb, TestServer, free_port, test_key};

const REQUESTS: &str = "truxe_http_requests_total";

/// Scrapes `url`, checking what every scrape must be: 200, the text format, never cached.
pub async fn scrape_url(url: &str) -> Exposition {
    let response = reqwest::get(url).await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(header("content-type").as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert_eq!(header("cache-control").as_deref(), Some("no-store"));
    prometheus::parse(&response.text().await.expect("body"))
}

async fn scrape(server: &TestServer) -> Exposition {
    scrape_url(&server.url("/metrics")).await
}

fn request_labels<'a>(route: &'a str, method: &'a str, status: &'a str) -> [(&'static str, &'a str); 3] {
    [("route", route), ("method", method), ("status", status)]
}

on_both_backends! {
    async fn requests_tokens_and_failures_are_counted(backend: Backend) {
        requests_tokens_and_failures_are_counted_on(backend).await
    }
    async fn purged_rows_are_counted(backend: Backend) {
        purged_rows_are_counted_on(backend).await
    }
}

async fn requests_tokens_and_failures_are_counted_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let machine = machine_client(&server, "client_secret_basic").await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let before = scrape(&server).await;

    // One token of each grant.
    token_for(&server, &machine, &[]).await;
    let (_, refresh_token) = sign_in_tokens(&server, &agent, &app, "openid offline_access").await;
    assert_eq!(refresh(&server, &app, &refresh_token, None).await.status, 200);
    // A wrong client secret, a wrong admin token.
    let wrong = Registered { secret: "cs_not_the_secret_of_this_client_0123456789".into(), ..machine.clone() };
    assert_eq!(token(&server, &wrong, &[("grant_type", "client_credentials")]).await.status, 401);
    let clients = server.client.get(server.url("/oauth-provider/clients")).bearer_auth("not-the-admin-token");
    assert_eq!(clients.send().await.expect("GET").status(), 401);
    // A route with a parameter, and paths no route matches.
    let path = format!("/oauth-provider/clients/{}", machine.client_id);
    let shown = server.client.get(server.url(&path)).bearer_auth(ADMIN_TOKEN).send().await.expect("GET");
    assert_eq!(shown.status(), 200);
    for unknown in ["/no/such/path", "/wp-login.php", &format!("/.env.{}", uuid::Uuid::new_v4())] {
        assert_eq!(server.client.get(server.url(unknown)).send().await.expect("GET").status(), 404);
    }

    let after = scrape(&server).await;
    let moved = |name: &str, labels: &[(&str, &str)]| after.count(name, labels) - before.count(name, labels);
    for grant in ["client_credentials", "authorization_code", "refresh_token"] {
        assert_eq!(moved("truxe_tokens_issued_total", &[("grant_type", grant)]), 1.0, "{grant}");
    }
    assert_eq!(moved("truxe_authentication_failures_total", &[("kind", "client")]), 1.0);
    assert_eq!(moved("truxe_authentication_failures_total", &[("kind", "admin_token")]), 1.0);
    assert_eq!(moved("truxe_authentication_failures_total", &[("kind", "mfa")]), 0.0);
    assert_eq!(moved(REQUESTS, &request_labels("/oauth-provider/token", "POST", "200")), 3.0);
    assert_eq!(moved(REQUESTS, &request_labels("/oauth-provider/token", "POST", "401")), 1.0);
    assert_eq!(moved(REQUESTS, &request_labels("/oauth-provider/clients", "GET", "401")), 1.0);
    assert_eq!(moved(REQUESTS, &request_labels("/oauth-provider/clients/{client_id}", "GET", "200")), 1.0);
    assert_eq!(moved(REQUESTS, &request_labels("/oauth-provider/authorize", "GET", "200")), 1.0, "the consent page");
    assert_eq!(moved(REQUESTS, &request_labels("unmatched", "GET", "404")), 3.0, "unknown paths share one label");
    assert_eq!(after.count(REQUESTS, &request_labels("/metrics", "GET", "200")), 1.0, "the first scrape");
    // Bounded cardinality: no raw path, no client id, in any series.
    for key in after.samples.keys() {
        assert!(!key.contains(&machine.client_id) && !key.contains("/no/such") && !key.contains(".env"), "{key}");
    }

    // The latency histogram, per route and status.
    assert_eq!(after.types.get("truxe_http_request_duration_seconds").map(String::as_str), Some("histogram"));
    let token_200 = request_labels("/oauth-provider/token", "POST", "200");
    assert_eq!(after.count("truxe_http_request_duration_seconds_count", &token_200), 3.0);
    let mut inf = token_200.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(after.count("truxe_http_request_duration_seconds_bucket", &inf), 3.0);
    assert!(after.count("truxe_http_request_duration_seconds_sum", &token_200) > 0.0);

    // The pool, the signing key, and no Redis series without Redis.
    let in_use = after.value("truxe_db_pool_connections", &[("state", "in_use")]).expect("in_use");
    let idle = after.value("truxe_db_pool_connections", &[("state", "idle")]).expect("idle");
    assert!(in_use >= 0.0 && idle >= 0.0 && in_use + idle <= 10.0, "in use {in_use}, idle {idle}");
    assert!(in_use + idle >= 1.0, "the requests above opened a connection");
    assert_eq!(after.value("truxe_db_pool_max_connections", &[]), Some(10.0));
    // Counted per process (one pool per server process), so another test's server may be waiting.
    assert!(after.value("truxe_db_pool_waiting", &[]).is_some_and(|w| w >= 0.0));
    let age = after.value("truxe_signing_key_age_seconds", &[("kid", test_key().kid())]).expect("key age");
    assert!((0.0..3600.0).contains(&age), "{age}");
    assert!(after.series_of("truxe_redis_errors_total").is_empty());
    assert_eq!(after.value("truxe_rate_limit_fallbacks_total", &[]), Some(0.0));
    assert!(!after.series_of("truxe_build_info").is_empty());
}

/// The hourly purge runs once at start: what it removed is counted per table.
async fn purged_rows_are_counted_on(backend: Backend) {
    let db = TestDb::new(backend);
    db.migrate();
    let long_ago = truxe_server::store::unix_now() - 3 * 86_400;
    let expires = long_ago + 900;
    execute(
        &db,
        &format!(
            "INSERT INTO magic_links (token_hash, email, created_at, expires_at) VALUES \
             ('expired-link-1', 'ada@example.org', {long_ago}, {expires}), \
             ('expired-link-2', 'ada@example.org', {long_ago}, {expires})"
        ),
    );
    let server = TestServer::start_with_db(db, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let purged = loop {
        let exposition = scrape(&server).await;
        let purged = exposition.count("truxe_purged_rows_total", &[("table", "magic_links")]);
        if purged > 0.0 {
            break exposition;
        }
        assert!(Instant::now() < deadline, "the start-up purge was not counted within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(purged.count("truxe_purged_rows_total", &[("table", "magic_links")]), 2.0);
    assert_eq!(purged.value("truxe_purged_rows_total", &[("table", "sessions")]), Some(0.0));
    assert_eq!(purged.value("truxe_purged_rows_total", &[("table", "oauth_authorization_codes")]), Some(0.0));
}

/// One statement on the test database, whichever backend it is.
fn execute(db: &TestDb, sql: &str) {
    match db.backend {
        Backend::Postgres => {
            let mut conn = diesel::PgConnection::establish(&db.url).expect("connect");
            conn.batch_execute(sql).expect("statement");
        }
        Backend::Sqlite => {
            let path = db.url.strip_prefix("sqlite://").expect("sqlite url");
            let mut conn = diesel::SqliteConnection::establish(path).expect("connect");
            conn.batch_execute(sql).expect("statement");
        }
    }
}

/// 429s are counted per route pattern; `/metrics` itself is never limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_requests_are_counted_per_route() {
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("RATE_LIMIT_ENABLED", "true"),
            ("RATE_LIMIT_MAX", "5"),
            ("RATE_LIMIT_WINDOW", "900000"),
            ("RATE_LIMIT_ENDPOINTS", "token=1:1"),
            ("TRUXE_SCOPES", "orders:read,orders:write"),
        ],
    )
    .await;
    let machine = machine_client(&server, "client_secret_post").await;
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(token(&server, &machine, &[("grant_type", "client_credentials")]).await.status);
        }
        statuses
    };
    assert_eq!(statuses, [200, 429, 429]);
    // More scrapes than the global limit (5) allows: none is refused.
    for _ in 0..8 {
        scrape(&server).await;
    }
    let after = scrape(&server).await;
    assert_eq!(after.count("truxe_rate_limited_total", &[("route", "/oauth-provider/token")]), 2.0);
    assert_eq!(after.count(REQUESTS, &request_labels("/oauth-provider/token", "POST", "429")), 2.0);
    assert_eq!(after.count(REQUESTS, &request_labels("/metrics", "GET", "200")), 8.0);
    assert!(after.series_of("truxe_rate_limited_total").iter().all(|s| s.contains("/oauth-provider/token")));
}

/// With `METRICS_PORT`, `/metrics` is there and only there; that listener serves nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_port_is_a_listener_of_its_own() {
    let metrics_port = free_port();
    let server = TestServer::start_with(Backend::Sqlite, &[("METRICS_PORT", &metrics_port.to_string())]).await;
    let on_main = server.client.get(server.url("/metrics")).send().await.expect("GET");
    assert_eq!(on_main.status(), 404, "not on the public port");
    let base = format!("http://127.0.0.1:{metrics_port}");
    let exposition = scrape_url(&format!("{base}/metrics")).await;
    assert_eq!(exposition.count(REQUESTS, &request_labels("unmatched", "GET", "404")), 1.0, "the main port's 404");
    assert!(exposition.series_of(REQUESTS).iter().all(|s| !s.contains("\"/metrics\"")), "scrapes are not requests");
    for path in ["/health", "/oauth-provider/jwks", "/"] {
        let answer = reqwest::get(format!("{base}{path}")).await.expect("GET");
        assert_eq!(answer.status(), 404, "{path} on the metrics port");
    }
    assert_eq!(server.client.get(server.url("/health")).send().await.expect("GET").status(), 200);
}
