//! Key rotation without broken clients: `truxectl keys rotate` and the `JWT_KEY_ROTATION`
//! schedule publish the next key first, sign with it after `JWT_KEY_PUBLISH_DELAY`, and retire the
//! old one only after its last token expired; several instances on one database agree; the
//! operator's `JWT_PRIVATE_KEY` is never replaced by the schedule.
//!
//! "At any moment" is checked by clients that fetch tokens continuously while a resource server
//! verifies each one against the JWKS fetched at that moment and against a JWKS cached the way
//! its `Cache-Control: max-age` allows. The delays are seconds here (production: an hour).

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};
use truxe_server::startup::Application;

use crate::on_both_backends;
use crate::support::flow::payload;
use crate::support::oauth::{ISSUER, Registered, basic, form, machine_client, now, token_server, verify_with_jwks};
use crate::support::process::{server_fails, text, truxectl};
use crate::support::{Backend, TestDb, TestServer, config_from, test_key};

const SESSION_SECRET: &str = "key-rotation-session-secret-0123456789-abcdefghij";

/// Generated keys (no `JWT_PRIVATE_KEY`) sealed under one `SESSION_SECRET`; a next key signs
/// 3 s after it is published; resource servers may cache the JWKS for 1 s; tokens live 4 s.
const ROTATION: [(&str, &str); 6] = [
    ("JWT_PRIVATE_KEY", ""),
    ("SESSION_SECRET", SESSION_SECRET),
    ("JWT_KEY_PUBLISH_DELAY", "3s"),
    ("JWT_JWKS_MAX_AGE", "1"),
    ("ACCESS_TOKEN_EXPIRY", "4s"),
    ("JWT_ALGORITHM", "ES256"),
];

fn with(
    base: &[(&'static str, &'static str)],
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut vars: Vec<_> = base.iter().filter(|(name, _)| !extra.iter().any(|(n, _)| n == name)).copied().collect();
    vars.extend_from_slice(extra);
    vars
}

/// `truxectl` against `db` with the servers' configuration `env` (off the async workers).
async fn ctl(db: &TestDb, env: &[(&str, &str)], args: &[&str]) -> Output {
    let cwd = db.dir.path().to_path_buf();
    let data_dir = db.dir.path().join("data").display().to_string();
    let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.push(("DATABASE_URL".into(), db.url.clone()));
    env.push(("TRUXE_DATA_DIR".into(), data_dir));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        truxectl(&cwd, &env, &args)
    })
    .await
    .expect("truxectl ran")
}

fn json_of(output: &Output) -> Value {
    assert!(output.status.success(), "truxectl failed: {}", text(output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(output)))
}

async fn keys_list(db: &TestDb, env: &[(&str, &str)]) -> Vec<Value> {
    json_of(&ctl(db, env, &["keys", "list", "--json"]).await)["keys"].as_array().expect("keys").clone()
}

/// A second server process's worth of server, in this process, on `db` (which it does not own).
struct Node {
    base_url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn start_node(db: &TestDb, extra: &[(&str, &str)]) -> Result<Node, truxe_server::startup::StartupError> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base_url = format!("http://127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let mut vars = vec![("DATABASE_URL", db.url.as_str()), ("TRUXE_SCOPES", "orders:read,orders:write")];
    vars.extend_from_slice(extra);
    let app = Application::build_with_listener(config_from(&vars, &db.dir), listener).await?;
    let handle = app.handle();
    tokio::spawn(app.run());
    Ok(Node { base_url, handle })
}

/// Where tokens and JWKS come from.
trait Base {
    fn base(&self) -> &str;
}

impl Base for TestServer {
    fn base(&self) -> &str {
        &self.base_url
    }
}

impl Base for Node {
    fn base(&self) -> &str {
        &self.base_url
    }
}

async fn token_at(http: &reqwest::Client, at: &impl Base, client: &Registered) -> String {
    let response = http
        .post(format!("{}/oauth-provider/token", at.base()))
        .header("Authorization", basic(&client.client_id, &client.secret))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[("grant_type", "client_credentials")]))
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 200, "a token is issued at every moment of a rotation: {body}");
    body["access_token"].as_str().expect("access_token").to_string()
}

/// The JWKS and the `max-age` it may be cached for.
async fn jwks_at(http: &reqwest::Client, at: &impl Base) -> (JwkSet, Duration) {
    let response = http.get(format!("{}/oauth-provider/jwks", at.base())).send().await.expect("jwks");
    assert_eq!(response.status().as_u16(), 200);
    let cache = response.headers()["cache-control"].to_str().expect("ascii").to_string();
    let max_age = cache
        .strip_prefix("public, max-age=")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("Cache-Control: {cache}"));
    (response.json().await.expect("a JWK Set"), Duration::from_secs(max_age))
}

fn kids(set: &JwkSet) -> BTreeSet<String> {
    set.keys.iter().filter_map(|k| k.common.key_id.clone()).collect()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).expect("header").kid.expect("a kid")
}

/// A resource server's JWKS cache: refetched only when `max-age` has run out, never on an
/// unknown `kid` (the strictest client: a rotation must work without that fallback).
struct CachedJwks {
    set: JwkSet,
    fetched: Instant,
    max_age: Duration,
}

impl CachedJwks {
    async fn new(http: &reqwest::Client, at: &impl Base) -> Self {
        let fetched = Instant::now();
        let (set, max_age) = jwks_at(http, at).await;
        Self { set, fetched, max_age }
    }

    async fn get(&mut self, http: &reqwest::Client, at: &impl Base) -> &JwkSet {
        if self.fetched.elapsed() >= self.max_age {
            *self = Self::new(http, at).await;
        }
        &self.set
    }
}

/// Checks `token` against `set` as a resource server does, with a message naming what failed.
#[track_caller]
fn assert_verifies(token: &str, set: &JwkSet, what: &str) {
    let kid = kid_of(token);
    assert!(set.find(&kid).is_some(), "{what}: a token signed by {kid} meets a JWKS without it: {:?}", kids(set));
    verify_with_jwks(token, set, ISSUER);
}

on_both_backends! {
    async fn a_rotation_never_breaks_a_client(backend: Backend) {
        let server = token_server(backend, &ROTATION).await;
        let client = machine_client(&server, "client_secret_basic").await;
        let http = reqwest::Client::new();
        let first = token_at(&http, &server, &client).await;
        let old = kid_of(&first);
        let (set, max_age) = jwks_at(&http, &server).await;
        assert_eq!((kids(&set), max_age), (BTreeSet::from([old.clone()]), Duration::from_secs(1)));
        let listed = keys_list(&server.db, &ROTATION).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!((listed[0]["kid"].as_str(), listed[0]["state"].as_str()), (Some(old.as_str()), Some("active")));
        assert_eq!((listed[0]["origin"].as_str(), listed[0]["alg"].as_str()), (Some("generated"), Some("ES256")));

        let rotated = json_of(&ctl(&server.db, &ROTATION, &["keys", "rotate", "--yes", "--json"]).await);
        let new = rotated["kid"].as_str().expect("kid").to_string();
        let activates_at = rotated["activates_at"].as_i64().expect("activates_at");
        assert_eq!(activates_at - rotated["published_at"].as_i64().expect("published_at"), 3, "{rotated}");
        assert_eq!(rotated["retiring"][0]["kid"], old.as_str(), "{rotated}");
        let retires_at = rotated["retiring"][0]["retires_at"].as_i64().expect("retires_at");
        assert_eq!(retires_at, activates_at + 4 + 3 + 2, "activation + token lifetime + margin: {rotated}");
        assert_ne!(new, old);

        // Tokens and JWKS fetched continuously from before the next key activates until the old
        // one has left the JWKS.
        let mut cache = CachedJwks::new(&http, &server).await;
        let mut live: Vec<(String, i64)> = Vec::new();
        let mut old_signed_while_next_published = false;
        let mut introspected_old_after_switch = false;
        let mut saw_new = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "the rotation did not finish within 60 s");
            let (token, (fresh, _)) = tokio::join!(token_at(&http, &server, &client), jwks_at(&http, &server));
            let after = now();
            let claims = payload(&token);
            let iat = claims["iat"].as_i64().expect("iat");
            let kid = kid_of(&token);
            // The stored activation decides, the same everywhere: no earlier, no later.
            let expected = if iat >= activates_at { &new } else { &old };
            assert_eq!(&kid, expected, "token issued at {iat} (the new key activates at {activates_at})");
            assert_verifies(&token, &fresh, "the JWKS fetched with the token");
            assert_verifies(&token, cache.get(&http, &server).await, "a JWKS cached for its max-age");
            live.retain(|(_, exp)| *exp >= after);
            for (earlier, _) in &live {
                assert!(fresh.find(&kid_of(earlier)).is_some(), "a live token's key left the JWKS: {:?}", kids(&fresh));
            }
            if kid == old && kids(&fresh).contains(&new) {
                old_signed_while_next_published = true;
            }
            if kid == new && !saw_new {
                saw_new = true;
                // Introspection accepts the retiring key's tokens (verified by every published key).
                if let Some((last_old, exp)) = live.iter().rev().find(|(t, _)| kid_of(t) == old)
                    && *exp > now() + 1
                {
                    let answer = http
                        .post(format!("{}/oauth-provider/introspect", server.base_url))
                        .header("Authorization", basic(&client.client_id, &client.secret))
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(form(&[("token", last_old)]))
                        .send()
                        .await
                        .expect("introspect");
                    let body: Value = answer.json().await.expect("json");
                    assert_eq!(body["active"], true, "a token of the retiring key: {body}");
                    introspected_old_after_switch = true;
                }
            }
            live.push((token, claims["exp"].as_i64().expect("exp")));
            if saw_new && !kids(&fresh).contains(&old) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(old_signed_while_next_published, "the next key is published while the old one still signs");
        assert!(introspected_old_after_switch, "a token of the old key was introspected after the switch");
        assert!(now() >= retires_at, "the old key left the JWKS no earlier than its retirement");

        let listed = keys_list(&server.db, &ROTATION).await;
        let state = |kid: &str| listed.iter().find(|k| k["kid"] == kid).map(|k| k["state"].clone());
        assert_eq!((state(&old), state(&new)), (Some(json!("retired")), Some(json!("active"))), "{listed:?}");
        // Once a server has stamped the retirement, the old key's sealed private half is gone.
        let pool = server.state.pool.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let row = truxe_server::store::signing_keys::find(&mut pool.get().expect("conn"), &old)
                .expect("find")
                .expect("row");
            if row.retired_at.is_some() {
                assert_eq!(row.private_key_sealed, None);
                break;
            }
            assert!(Instant::now() < deadline, "the retirement was never stamped");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn two_instances_agree_through_the_database(backend: Backend) {
        // The schedule rotates every 5 s on both; each publishes what the other made.
        let env = with(&ROTATION, &[("JWT_KEY_ROTATION", "5s"), ("JWT_KEY_PUBLISH_DELAY", "2s"), ("ACCESS_TOKEN_EXPIRY", "3s"), ("JWT_ALGORITHM", "EdDSA")]);
        let a = token_server(backend, &env).await;
        let b = start_node(&a.db, &env).await.expect("a second instance on the same database");
        let client = machine_client(&a, "client_secret_basic").await;
        let http = reqwest::Client::new();
        let mut cache_a = CachedJwks::new(&http, &a).await;
        let mut cache_b = CachedJwks::new(&http, &b).await;
        let mut by_second: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        let mut seen: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Until the third key signs: two rotations, each published by whichever instance was first.
        while seen.len() < 3 {
            assert!(Instant::now() < deadline, "two rotations did not happen within 60 s: {seen:?}");
            let (from_a, from_b, (jwks_a, _), (jwks_b, _)) = tokio::join!(
                token_at(&http, &a, &client),
                token_at(&http, &b, &client),
                jwks_at(&http, &a),
                jwks_at(&http, &b)
            );
            for (token, other, cached) in
                [(&from_a, &jwks_b, cache_b.get(&http, &b).await.clone()), (&from_b, &jwks_a, cache_a.get(&http, &a).await.clone())]
            {
                assert_verifies(token, other, "the other instance's JWKS");
                assert_verifies(token, &cached, "the other instance's JWKS as cached");
                let kid = kid_of(token);
                by_second.entry(payload(token)["iat"].as_i64().expect("iat")).or_default().insert(kid.clone());
                if !seen.contains(&kid) {
                    seen.push(kid);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (second, kids) in &by_second {
            assert_eq!(kids.len(), 1, "both instances sign with one key in any one second ({second}): {kids:?}");
        }
        // One next key per rotation, not one per instance.
        let listed = keys_list(&a.db, &env).await;
        let mut activations: Vec<i64> = listed.iter().map(|k| k["activates_at"].as_i64().expect("activates_at")).collect();
        activations.sort_unstable();
        for pair in activations.windows(2) {
            assert!(pair[1] - pair[0] >= 5, "keys activate a rotation period apart: {listed:?}");
        }
        assert!(listed.iter().filter(|k| k["state"] == "next").count() <= 1, "{listed:?}");
    }

    async fn the_schedule_never_replaces_the_operators_key(backend: Backend) {
        let env = [("JWT_KEY_ROTATION", "2s"), ("JWT_KEY_PUBLISH_DELAY", "1s"), ("JWT_JWKS_MAX_AGE", "0"), ("SESSION_SECRET", SESSION_SECRET)];
        let server = token_server(backend, &env).await;
        let warning = server.state.config.warnings.iter().find(|w| w.starts_with("JWT_KEY_ROTATION")).cloned();
        assert!(warning.is_some_and(|w| w.contains("automatic rotation is off")), "{:?}", server.state.config.warnings);
        let client = machine_client(&server, "client_secret_basic").await;
        let http = reqwest::Client::new();
        // Longer than a rotation period plus its delay: the schedule would have published and
        // switched by now. (Waiting for something not to happen has no readiness check.)
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(kid_of(&token_at(&http, &server, &client).await), test_key().kid());
        assert_eq!(kids(&jwks_at(&http, &server).await.0), BTreeSet::from([test_key().kid().to_string()]));
        let key_pem = test_key().private_pem().secret().clone();
        let mut ctl_env: Vec<(&str, &str)> = env.to_vec();
        ctl_env.push(("JWT_PRIVATE_KEY", &key_pem));
        let listed = json_of(&ctl(&server.db, &ctl_env, &["keys", "list", "--json"]).await);
        assert_eq!(listed["rotation_applies"], false, "{listed}");
        assert_eq!(listed["keys"][0]["jwt_private_key"], true, "{listed}");
        assert_eq!(listed["keys"].as_array().map(Vec::len), Some(1), "{listed}");
        let table = ctl(&server.db, &ctl_env, &["keys", "list"]).await;
        assert!(text(&table).contains("JWT_PRIVATE_KEY is set (the schedule never replaces"), "{}", text(&table));

        // By hand it may: after a confirmation, since the operator's key stops signing.
        let refused = ctl(&server.db, &ctl_env, &["keys", "rotate"]).await;
        assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
        assert!(text(&refused).contains("JWT_PRIVATE_KEY") && text(&refused).contains("--yes"), "{}", text(&refused));
        assert_eq!(keys_list(&server.db, &ctl_env).await.len(), 1, "a refused rotation changes nothing");
        let rotated = ctl(&server.db, &ctl_env, &["keys", "rotate", "--yes", "--json"]).await;
        assert!(String::from_utf8_lossy(&rotated.stderr).contains("takes over signing from JWT_PRIVATE_KEY"), "{}", text(&rotated));
        let generated = json_of(&rotated)["kid"].as_str().expect("kid").to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        while kid_of(&token_at(&http, &server, &client).await) != generated {
            assert!(Instant::now() < deadline, "the generated key never took over");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn another_session_secret_is_refused_by_servers_and_the_cli(backend: Backend) {
        let server = token_server(backend, &ROTATION).await;
        let http = reqwest::Client::new();
        let kid = kids(&jwks_at(&http, &server).await.0).into_iter().next().expect("a key");
        let wrong = with(&ROTATION, &[("SESSION_SECRET", "another-session-secret-0123456789-abcdefghij")]);
        let error = match start_node(&server.db, &wrong).await {
            Ok(_) => panic!("an instance that cannot decrypt the active key must not start"),
            Err(error) => error,
        };
        assert_eq!(error.exit_code(), 78, "a configuration error");
        let message = error.to_string();
        assert!(message.contains(&kid) && message.contains("SESSION_SECRET"), "{message}");

        let refused = ctl(&server.db, &wrong, &["keys", "rotate", "--yes"]).await;
        assert_eq!(refused.status.code(), Some(78), "{}", text(&refused));
        assert!(text(&refused).contains("SESSION_SECRET") && text(&refused).contains(&kid), "{}", text(&refused));
        let unsealed = with(&ROTATION, &[("SESSION_SECRET", "")]);
        let refused = ctl(&server.db, &unsealed, &["keys", "rotate", "--yes"]).await;
        assert_eq!(refused.status.code(), Some(78), "{}", text(&refused));
        assert!(text(&refused).contains("SESSION_SECRET is not set"), "{}", text(&refused));
        assert_eq!(keys_list(&server.db, &ROTATION).await.len(), 1, "refusals publish nothing");

        // A rotation while a next key waits publishes nothing either.
        json_of(&ctl(&server.db, &ROTATION, &["keys", "rotate", "--yes", "--json"]).await);
        let again = ctl(&server.db, &ROTATION, &["keys", "rotate", "--yes", "--json"]).await;
        assert_eq!(again.status.code(), Some(1), "{}", text(&again));
        assert!(text(&again).contains("already published as the next key"), "{}", text(&again));
        assert_eq!(keys_list(&server.db, &ROTATION).await.len(), 2);
    }
}

#[tokio::test]
async fn keys_commands_refuse_bad_configuration_and_an_unmigrated_database() {
    let db = TestDb::new(Backend::Postgres);
    let unmigrated = ctl(&db, &[], &["keys", "list"]).await;
    assert_eq!(unmigrated.status.code(), Some(1), "{}", text(&unmigrated));
    assert!(text(&unmigrated).contains("truxectl migrate"), "{}", text(&unmigrated));
    for (env, names) in [
        (&[("JWT_KEY_ROTATION", "abc")][..], "JWT_KEY_ROTATION"),
        (&[("JWT_KEY_PUBLISH_DELAY", "5m")][..], "JWT_KEY_PUBLISH_DELAY"),
    ] {
        for args in [&["keys", "list"][..], &["keys", "rotate", "--yes"]] {
            let output = ctl(&db, env, args).await;
            assert_eq!(output.status.code(), Some(78), "{env:?} {args:?}: {}", text(&output));
            assert!(text(&output).contains(names) && !text(&output).contains("panicked"), "{}", text(&output));
        }
    }
    let usage = ctl(&db, &[], &["keys", "rotate", "--now"]).await;
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage));
    db.migrate();
    let empty = ctl(&db, &[], &["keys", "list"]).await;
    assert!(text(&empty).contains("no signing keys yet"), "{}", text(&empty));
    let nothing_active = ctl(&db, &[("SESSION_SECRET", SESSION_SECRET)], &["keys", "rotate", "--yes"]).await;
    assert_eq!(nothing_active.status.code(), Some(1), "{}", text(&nothing_active));
    assert!(text(&nothing_active).contains("start truxe-server once"), "{}", text(&nothing_active));
}

#[test]
fn the_server_refuses_bad_rotation_values() {
    let cwd = tempfile::tempdir().expect("tmp");
    for (env, says) in [
        (&[("JWT_KEY_ROTATION", "abc")][..], &["JWT_KEY_ROTATION", "\"abc\"", "90d"][..]),
        (&[("JWT_KEY_PUBLISH_DELAY", "300")][..], &["JWT_KEY_PUBLISH_DELAY", "JWT_JWKS_MAX_AGE"][..]),
        (
            &[("JWT_KEY_PUBLISH_DELAY", "10s"), ("JWT_JWKS_MAX_AGE", "10")][..],
            &["JWT_KEY_PUBLISH_DELAY", "max-age"][..],
        ),
        (&[("JWT_KEY_ROTATION", "30m")][..], &["JWT_KEY_ROTATION", "longer than JWT_KEY_PUBLISH_DELAY (1h)"][..]),
    ] {
        let mut env = env.to_vec();
        env.push(("LOG_LEVEL", "warn"));
        let output = server_fails(cwd.path(), &env, &[]);
        assert_eq!(output.status.code(), Some(78), "{env:?}: {}", text(&output));
        assert!(says.iter().all(|s| text(&output).contains(s)), "{env:?}: {}", text(&output));
    }
}

/// Production without `JWT_PRIVATE_KEY` but with `JWT_KEY_ROTATION`: the key is generated into
/// the database, sealed, never written to the data directory.
#[tokio::test]
async fn production_generates_its_keys_into_the_database() {
    let db = TestDb::new(Backend::Postgres);
    db.migrate();
    let data_dir = db.dir.path().join("data").display().to_string();
    let env = [
        ("NODE_ENV", "production"),
        ("DATABASE_URL", db.url.as_str()),
        ("TRUXE_DATA_DIR", data_dir.as_str()),
        ("JWT_KEY_ROTATION", "90d"),
        ("JWT_ISSUER", "https://auth.example.org"),
        ("SESSION_SECRET", "kR9vQ2mX7pL4wZ8tY1nB6cF3hJ5gD0sA"),
        ("ADMIN_TOKEN", "Zq8Wm3Np6Rt1Vx4Ys7Ub0Kc9Ld2Hf5Jg"),
        ("SMTP_HOST", "127.0.0.1"),
        ("EMAIL_FROM", "noreply@example.org"),
        ("LOG_LEVEL", "info"),
    ];
    let server = crate::support::process::ServerProcess::start(db.dir.path(), &env, crate::support::free_port()).await;
    let ready: Value = reqwest::get(server.url("/health/ready")).await.expect("ready").json().await.expect("json");
    assert_eq!(ready["status"], "ok", "{ready}");
    let kid = ready["checks"]["signing_key"]["kid"].as_str().expect("kid").to_string();
    let (status, output) = server.terminate();
    assert!(status.success(), "{output}");
    assert!(output.contains("automatic signing-key rotation is on"), "{output}");
    assert!(!db.dir.path().join("data").join("jwt-private.pem").exists(), "no key file in production");
    let config = config_from(&[("DATABASE_URL", db.url.as_str())], &db.dir);
    let mut conn = truxe_server::store::connect_one(&config.database).expect("connect");
    let row =
        truxe_server::store::signing_keys::find(&mut conn, &kid).expect("find").expect("the key is in the database");
    assert_eq!(row.origin, truxe_server::store::signing_keys::Origin::Generated);
    assert!(row.private_key_sealed.is_some_and(|s| s.starts_with("v1.") && !s.contains("PRIVATE")));
}
