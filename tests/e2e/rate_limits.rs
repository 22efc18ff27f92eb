//! Request rate limits: bursts, the 429 of each kind of route, the client IP behind a trusted
//! proxy, the token endpoint's per-client limit, limits shared through Redis, and Redis down.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::on_both_backends;
use crate::support::oauth::{Registered, basic, form, machine_client};
use crate::support::process::ServerProcess;
use crate::support::{Backend, TestDb, TestServer, free_port, redis_url};

/// A server with rate limits on (the test configuration turns them off) and `extra`.
async fn limited(backend: Backend, extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![("RATE_LIMIT_ENABLED", "true"), ("TRUXE_SCOPES", "orders:read,orders:write")];
    vars.extend_from_slice(extra);
    TestServer::start_with(backend, &vars).await
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Reply { status, headers, text }
}

/// `POST /oauth-provider/token` (client_credentials) with `authorization` and extra headers.
async fn token(server: &TestServer, authorization: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = server
        .client
        .post(server.url("/oauth-provider/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Authorization", authorization)
        .body(form(&[("grant_type", "client_credentials")]));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

fn unknown_client() -> String {
    basic("cl_unknown0000000000000000", "wrong")
}

fn client_auth(client: &Registered) -> String {
    basic(&client.client_id, &client.secret)
}

/// A 429 with every header and the body its kind of route gets.
fn assert_refused(reply: &Reply, policy: &str) {
    assert_eq!(reply.status, 429, "{}", reply.text);
    let retry: u64 = reply.header("retry-after").parse().expect("Retry-After is whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    assert!(reply.header("ratelimit-policy").contains(&format!("\"{policy}\";q=")), "{:?}", reply.headers);
    assert!(
        reply.header("ratelimit").contains(&format!("\"{policy}\";r=0;t={retry}")),
        "the refusing policy's t is the Retry-After: {:?}",
        reply.headers
    );
}

fn assert_oauth_refusal(reply: &Reply, policy: &str) {
    assert_refused(reply, policy);
    assert_eq!(reply.header("cache-control"), "no-store");
    assert!(reply.header("content-type").starts_with("application/json"), "{:?}", reply.headers);
    let body = reply.json();
    assert_eq!(body["error"], "temporarily_unavailable", "{}", reply.text);
    assert!(body["error_description"].as_str().is_some_and(|d| d.contains("retry in")), "{}", reply.text);
}

on_both_backends! {
    async fn rate_limits_a_burst_is_allowed_exactly_on_each_kind_of_route(backend: Backend) {
        let server = limited(backend, &[("RATE_LIMIT_ENDPOINTS", "token=1:3,authorize=1:2")]).await;
        // Token endpoint: three requests (refused clients count too), then a JSON 429.
        for remaining in [2, 1, 0] {
            let reply = token(&server, &unknown_client(), &[]).await;
            assert_eq!(reply.status, 401, "{}", reply.text);
            assert!(reply.header("ratelimit-policy").starts_with("\"token\";q=3;w=180, \"oauth\";q=50;w=900, \"global\";q=100;w=900"), "{:?}", reply.headers);
            assert!(reply.header("ratelimit").starts_with(&format!("\"token\";r={remaining};t=")), "{:?}", reply.headers);
        }
        let refused = token(&server, &unknown_client(), &[]).await;
        assert_oauth_refusal(&refused, "token");

        // The authorization endpoint is a browser page: an HTML 429.
        let authorize = || send(server.client.get(server.url("/oauth-provider/authorize?client_id=x")));
        for _ in 0..2 {
            assert_ne!(authorize().await.status, 429);
        }
        let page = authorize().await;
        assert_refused(&page, "authorize");
        assert!(page.header("content-type").starts_with("text/html"), "{:?}", page.headers);
        assert!(page.text.contains("Too many requests"), "{}", page.text);
        assert_eq!(page.header("cache-control"), "no-store");

        // Other endpoints of the OAuth set are unaffected by the token endpoint's bucket.
        let userinfo = send(server.client.get(server.url("/oauth-provider/userinfo"))).await;
        assert_eq!(userinfo.status, 401, "{}", userinfo.text);
    }

    async fn rate_limits_the_global_limit_covers_every_route_but_health(backend: Backend) {
        let server = limited(backend, &[("RATE_LIMIT_MAX", "3"), ("RATE_LIMIT_WINDOW", "60000")]).await;
        let discovery = || send(server.client.get(server.url("/.well-known/openid-configuration")));
        for _ in 0..3 {
            let reply = discovery().await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            assert!(reply.header("ratelimit-policy").starts_with("\"global\";q=3;w=60"), "{:?}", reply.headers);
        }
        let refused = discovery().await;
        assert_refused(&refused, "global");
        assert_eq!(refused.json()["error"], "temporarily_unavailable");
        // The admin API answers JSON, the sign-in page HTML; the health checks are never limited.
        let admin = send(server.client.get(server.url("/oauth-provider/clients")).bearer_auth(crate::support::ADMIN_TOKEN)).await;
        assert_refused(&admin, "global");
        assert_eq!(admin.json()["error"], "temporarily_unavailable", "{}", admin.text);
        let login = send(server.client.get(server.url("/login"))).await;
        assert_refused(&login, "global");
        assert!(login.header("content-type").starts_with("text/html"));
        for path in ["/health", "/health/ready"] {
            let health = send(server.client.get(server.url(path))).await;
            assert_eq!(health.status, 200, "{path}: {}", health.text);
            assert!(health.headers.get("ratelimit").is_none());
        }
    }

    async fn rate_limits_a_flood_from_one_ip_leaves_another_unaffected(backend: Backend) {
        let server =
            limited(backend, &[("RATE_LIMIT_ENDPOINTS", "token=1:2"), ("TRUST_PROXY", "127.0.0.1/32")]).await;
        let from = |ip: &'static str| [("X-Forwarded-For", ip)];
        for _ in 0..2 {
            assert_eq!(token(&server, &unknown_client(), &from("203.0.113.1")).await.status, 401);
        }
        assert_oauth_refusal(&token(&server, &unknown_client(), &from("203.0.113.1")).await, "token");
        // The proxy appends what it saw: the client's own entries to the left are not trusted.
        let spoofing = [("X-Forwarded-For", "203.0.113.77, 203.0.113.1")];
        assert_eq!(token(&server, &unknown_client(), &spoofing).await.status, 429);
        assert_eq!(token(&server, &unknown_client(), &from("203.0.113.2")).await.status, 401, "another IP");

        // RFC 7239 Forwarded, when there is no X-Forwarded-For.
        let forwarded = [("Forwarded", "for=\"[2001:db8::5]:4711\";proto=https")];
        for _ in 0..2 {
            assert_eq!(token(&server, &unknown_client(), &forwarded).await.status, 401);
        }
        assert_eq!(token(&server, &unknown_client(), &forwarded).await.status, 429);
        // A malformed header counts as the proxy itself (127.0.0.1), which has its own bucket.
        let malformed = [("X-Forwarded-For", "not an address")];
        assert_eq!(token(&server, &unknown_client(), &malformed).await.status, 401);
    }

    async fn rate_limits_a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored(backend: Backend) {
        // No TRUST_PROXY: whatever the client writes, the socket address is counted.
        let server = limited(backend, &[("RATE_LIMIT_ENDPOINTS", "token=1:2")]).await;
        for (i, ip) in ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"].into_iter().enumerate() {
            let headers = [("X-Forwarded-For", ip), ("Forwarded", "for=192.0.2.9")];
            let reply = token(&server, &unknown_client(), &headers).await;
            assert_eq!(reply.status, if i < 2 { 401 } else { 429 }, "request {i}: {}", reply.text);
        }
    }

    async fn rate_limits_one_client_flooding_the_token_endpoint_leaves_others_their_tokens(backend: Backend) {
        // Every request from another IP (a fleet behind the trusted proxy): only the per-client
        // bucket (the token endpoint's numbers, per authenticated client) can refuse.
        let server = limited(
            backend,
            &[("RATE_LIMIT_ENDPOINTS", "token=1:4"), ("TRUST_PROXY", "127.0.0.1/32"), ("OAUTH_RATE_LIMIT_MAX", "1000")],
        )
        .await;
        let flooder = machine_client(&server, "client_secret_basic").await;
        let victim = machine_client(&server, "client_secret_basic").await;
        let mut n = 0u32;
        let mut next_ip = || {
            n += 1;
            format!("10.9.{}.{}", n / 250, n % 250 + 1)
        };
        // Someone without the victim's secret cannot use up the victim's bucket.
        for _ in 0..6 {
            let ip = next_ip();
            let reply = token(&server, &basic(&victim.client_id, "not-the-secret"), &[("X-Forwarded-For", &ip)]).await;
            assert_eq!(reply.status, 401, "{}", reply.text);
        }
        let ip = next_ip();
        assert_eq!(token(&server, &client_auth(&victim), &[("X-Forwarded-For", &ip)]).await.status, 200);
        for _ in 0..4 {
            let ip = next_ip();
            assert_eq!(token(&server, &client_auth(&flooder), &[("X-Forwarded-For", &ip)]).await.status, 200);
        }
        let ip = next_ip();
        let refused = token(&server, &client_auth(&flooder), &[("X-Forwarded-For", &ip)]).await;
        assert_oauth_refusal(&refused, "token-client");
        for _ in 0..3 {
            let ip = next_ip();
            let reply = token(&server, &client_auth(&victim), &[("X-Forwarded-For", &ip)]).await;
            assert_eq!(reply.status, 200, "the other client still gets tokens: {}", reply.text);
        }
    }

    async fn rate_limits_are_shared_by_instances_on_one_redis(backend: Backend) {
        let prefix = format!("truxe-test-{}:", uuid::Uuid::new_v4().simple());
        let redis = redis_url();
        let shared = [
            ("RATE_LIMIT_ENDPOINTS", "token=1:3"),
            ("REDIS_URL", redis.as_str()),
            ("TRUXE_REDIS_PREFIX", prefix.as_str()),
        ];
        let one = limited(backend, &shared).await;
        let two = limited(backend, &shared).await;
        assert_eq!(token(&one, &unknown_client(), &[]).await.status, 401);
        assert_eq!(token(&two, &unknown_client(), &[]).await.status, 401);
        let third = token(&one, &unknown_client(), &[]).await;
        assert_eq!(third.status, 401);
        assert!(third.header("ratelimit").starts_with("\"token\";r=0;"), "counted across both: {:?}", third.headers);
        assert_oauth_refusal(&token(&two, &unknown_client(), &[]).await, "token");
        assert_oauth_refusal(&token(&one, &unknown_client(), &[]).await, "token");
        assert_eq!(one.state.limiter.fallbacks(), 0);
        assert_eq!(two.state.limiter.fallbacks(), 0);

        // The buckets are Redis keys under the prefix, with an expiry of their own.
        let pool = one.state.redis.clone().expect("redis");
        let mut conn = pool.get().await.expect("redis connection");
        let keys: Vec<String> = bb8_redis::redis::cmd("KEYS")
            .arg(format!("{prefix}oauth:ratelimit:*"))
            .query_async(&mut *conn)
            .await
            .expect("KEYS");
        assert!(keys.contains(&format!("{prefix}oauth:ratelimit:token:127.0.0.1")), "{keys:?}");
        for key in &keys {
            let ttl: i64 = bb8_redis::redis::cmd("PTTL").arg(key).query_async(&mut *conn).await.expect("PTTL");
            assert!(ttl > 0, "{key} expires on its own");
        }

        // Another deployment (another prefix) on the same Redis counts on its own.
        let other_prefix = format!("truxe-test-{}:", uuid::Uuid::new_v4().simple());
        let other = limited(
            backend,
            &[("RATE_LIMIT_ENDPOINTS", "token=1:3"), ("REDIS_URL", &redis), ("TRUXE_REDIS_PREFIX", &other_prefix)],
        )
        .await;
        assert_eq!(token(&other, &unknown_client(), &[]).await.status, 401);
    }

    async fn rate_limits_hold_in_process_when_redis_is_down(backend: Backend) {
        let db = TestDb::new(backend);
        if backend == Backend::Postgres {
            db.migrate();
        }
        let closed = format!("redis://127.0.0.1:{}/", free_port());
        let key = crate::support::test_key_pem();
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("JWT_PRIVATE_KEY", key.as_str()),
            ("TRUXE_DATA_DIR", "data"),
            ("REDIS_URL", closed.as_str()),
            ("RATE_LIMIT_ENABLED", "true"),
            ("RATE_LIMIT_MAX", "3"),
            ("RATE_LIMIT_WINDOW", "60000"),
            ("LOG_LEVEL", "warn"),
        ];
        let server = ServerProcess::start(db.dir.path(), &env, free_port()).await;
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let response =
                client.get(server.url("/.well-known/openid-configuration")).send().await.expect("request");
            statuses.push(response.status().as_u16());
        }
        assert_eq!(statuses, [200, 200, 200, 429, 429, 429], "enforced in process, never a 5xx");
        let line = server.wait_for_log("rateLimitExceeded", Duration::from_secs(10));
        assert!(line.contains("127.0.0.1") && line.contains("/.well-known/openid-configuration"), "{line}");
        server.wait_for_log("Redis failed for rate limiting", Duration::from_secs(10));
        let (_, output) = server.terminate();
        let warnings = output.lines().filter(|l| l.contains("Redis failed for rate limiting")).count();
        assert!(warnings < 6, "warned once, not per request ({warnings}):\n{output}");
    }

    async fn rate_limits_are_off_with_rate_limit_enabled_false(backend: Backend) {
        let server = TestServer::start_with(
            backend,
            &[("RATE_LIMIT_ENABLED", "false"), ("RATE_LIMIT_ENDPOINTS", "token=1:1"), ("RATE_LIMIT_MAX", "1")],
        )
        .await;
        for _ in 0..5 {
            let reply = token(&server, &unknown_client(), &[]).await;
            assert_eq!(reply.status, 401, "{}", reply.text);
            assert!(reply.headers.get("ratelimit").is_none() && reply.headers.get("retry-after").is_none());
        }
    }
}
