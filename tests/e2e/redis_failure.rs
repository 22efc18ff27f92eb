//! Redis stopped in the middle of a test and started again: the documented policy (README,
//! "Several instances and Redis"). Tokens are still issued, revocations and suspensions made
//! while Redis is down are seen (the database answers), readiness says `redis: fail`; once Redis
//! is back, readiness is ok, the client-change subscription is back and the revoked-id marks are
//! used again, all without a restart.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use truxe_server::store::schema::oauth_tokens;

use crate::on_both_backends;
use crate::support::TestServer;
use crate::support::oauth::{self, Registered, form, machine_client, post_form, token_server};
use crate::support::process::truxectl;
use crate::support::redis::RedisServer;

fn jti_of(token: &str) -> String {
    crate::support::flow::payload(token)["jti"].as_str().expect("jti").to_string()
}

async fn token_answer(server: &TestServer, client: &Registered) -> oauth::Answer {
    let (authorization, mut pairs) = client.credentials();
    pairs.push(("grant_type", "client_credentials"));
    post_form(server, "/oauth-provider/token", authorization.as_deref(), form(&pairs)).await
}

async fn active(server: &TestServer, caller: &Registered, token: &str) -> bool {
    oauth::introspect(server, caller, token).await["active"].as_bool().expect("active")
}

/// Polls `check` until it holds, at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn delete_revocation_row(server: &TestServer, jti: &str) {
    let pool = crate::support::flow::pool(server);
    let mut conn = pool.get().expect("connection");
    let deleted =
        diesel::delete(oauth_tokens::table.filter(oauth_tokens::jti.eq(jti))).execute(&mut *conn).expect("delete");
    assert_eq!(deleted, 1, "the revocation row of {jti}");
}

/// Revokes a fresh token of `client`, waits for its mark in Redis, then removes the database
/// row: the token is inactive only if the mark is used.
async fn assert_marks_are_used(server: &TestServer, redis: &RedisServer, prefix: &str, client: &Registered) {
    let token = oauth::token_for(server, client, &[]).await;
    assert_eq!(oauth::revoke(server, client, &token, None).await.status, 200);
    let key = format!("{prefix}oauth:revoked:{}", jti_of(&token));
    eventually(Duration::from_secs(5), "the revoked-id mark is set", || async { redis.exists(&key) }).await;
    let ttl = redis.command(&["TTL", &key]).expect("TTL");
    let ttl: i64 = ttl.trim_start_matches(':').parse().expect("a number");
    assert!((1..=3600).contains(&ttl), "the mark lives as long as the token: {ttl}");
    delete_revocation_row(server, &jti_of(&token));
    assert!(!active(server, client, &token).await, "the mark alone makes the token inactive");
}

async fn readiness(server: &TestServer) -> (u16, serde_json::Value) {
    server.get_json("/health/ready").await
}

on_both_backends! {
    async fn redis_stopped_and_started_again(backend: Backend) {
        let mut redis = RedisServer::start();
        let prefix = format!("t-{}:", uuid::Uuid::new_v4().simple());
        let url = redis.url();
        let server = token_server(backend, &[("REDIS_URL", &url), ("TRUXE_REDIS_PREFIX", &prefix)]).await;
        let shared = server.state.shared.clone().expect("Redis is configured");
        let worker = machine_client(&server, "client_secret_basic").await;
        let other = machine_client(&server, "client_secret_basic").await;
        eventually(Duration::from_secs(10), "subscribed to client changes", || async { shared.is_subscribed() }).await;

        // Redis up: the client is cached there, revocation marks are set and used.
        let live = oauth::token_for(&server, &worker, &[]).await;
        let client_key = format!("{prefix}oauth:client:{}", worker.client_id);
        eventually(Duration::from_secs(5), "the client is cached in Redis", || async { redis.exists(&client_key) }).await;
        assert_marks_are_used(&server, &redis, &prefix, &worker).await;
        assert_eq!(readiness(&server).await.0, 200);

        redis.stop();
        let errors_before = shared.errors();
        // Tokens are still issued, and introspected correctly.
        for _ in 0..5 {
            let answer = token_answer(&server, &worker).await;
            assert_eq!(answer.status, 200, "{}", answer.text);
        }
        assert!(active(&server, &worker, &live).await);
        // A revocation made while Redis is down is seen (the database answers).
        let revoked_while_down = oauth::token_for(&server, &worker, &[]).await;
        assert_eq!(oauth::revoke(&server, &worker, &revoked_while_down, None).await.status, 200);
        assert!(!active(&server, &worker, &revoked_while_down).await, "a revocation made while Redis is down");
        // A client suspended while Redis is down is refused; its announcement waits for Redis.
        oauth::set_client_status(&server, &other.client_id, "suspended").await;
        let refused = token_answer(&server, &other).await;
        oauth::assert_oauth_error(&refused, 401, "invalid_client", "suspended while Redis is down");
        assert_eq!(shared.pending_client_changes(), 1, "the announcement is kept for when Redis returns");
        // Readiness answers are reused for a second (`READINESS_TTL`): the failure shows after it.
        eventually(Duration::from_secs(5), "readiness reports Redis", || async { readiness(&server).await.0 == 503 }).await;
        let (status, body) = readiness(&server).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["checks"]["redis"]["status"], "fail", "{body}");
        assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
        assert!(shared.errors() > errors_before, "failures are counted");
        assert!(shared.is_failing());

        redis.start_again();
        eventually(Duration::from_secs(10), "readiness ok again", || async { readiness(&server).await.0 == 200 }).await;
        eventually(Duration::from_secs(10), "subscribed again", || async { shared.is_subscribed() }).await;
        eventually(Duration::from_secs(10), "the pending announcement went out", || async {
            shared.pending_client_changes() == 0
        })
        .await;
        for _ in 0..3 {
            assert_eq!(token_answer(&server, &worker).await.status, 200);
        }

        // The subscription works again: a change made elsewhere (truxectl on the database) drops
        // the client from this instance's first level at once. The entry is planted with a
        // far-future load time, so that only the announcement can remove it.
        let far = Instant::now() + Duration::from_secs(3600);
        let stored = {
            let pool = crate::support::flow::pool(&server);
            let mut conn = pool.get().expect("connection");
            truxe_server::service::clients::find(&mut conn, &worker.client_id).expect("read").expect("the client")
        };
        server.state.clients.insert(stored, far);
        assert_eq!(token_answer(&server, &worker).await.status, 200);
        let output = truxectl(
            server.db.dir.path(),
            &[("DATABASE_URL", &server.db.url), ("REDIS_URL", &url), ("TRUXE_REDIS_PREFIX", &prefix)],
            &["clients", "disable", &worker.client_id, "--yes"],
        );
        assert!(output.status.success(), "{}", crate::support::process::text(&output));
        assert!(
            !crate::support::process::text(&output).contains("warning"),
            "{}",
            crate::support::process::text(&output)
        );
        eventually(Duration::from_secs(1), "the change reached the first level", || async {
            server.state.clients.get(&worker.client_id, far).is_none()
        })
        .await;
        let refused = token_answer(&server, &worker).await;
        oauth::assert_oauth_error(&refused, 401, "invalid_client", "disabled through truxectl");

        // The revoked-id marks are used again.
        oauth::set_client_status(&server, &other.client_id, "active").await;
        assert_marks_are_used(&server, &redis, &prefix, &other).await;
    }
}

on_both_backends! {
    async fn truxectl_warns_when_redis_cannot_be_told(backend: Backend) {
        let server = token_server(backend, &[]).await;
        let worker = machine_client(&server, "client_secret_basic").await;
        let dead = format!("redis://127.0.0.1:{}", crate::support::free_port());
        let output = truxectl(
            server.db.dir.path(),
            &[("DATABASE_URL", &server.db.url), ("REDIS_URL", &dead)],
            &["clients", "disable", &worker.client_id, "--yes"],
        );
        let text = crate::support::process::text(&output);
        assert!(output.status.success(), "the database change is made: {text}");
        assert!(text.contains("warning") && text.contains("Redis could not be told"), "{text}");
        assert!(text.contains(&format!("oauth:client:{}", worker.client_id)), "names the key: {text}");
        let refused = token_answer(&server, &worker).await;
        oauth::assert_oauth_error(&refused, 401, "invalid_client", "disabled");
    }
}
