//! The deployment guide's troubleshooting without `psql`, driving the real `truxectl` binary
//! against a running server's database: `codes inspect|list` (everything behind an
//! `invalid_grant`), `tokens revoke` (introspection answers inactive at once, through Redis and
//! with Redis down), `clients show --redirect-uri` (the `redirect_uri_mismatch` tool),
//! `migrate --dry-run`, and the hourly purge keeping what reuse detection needs.

use std::process::Output;

use diesel::prelude::*;
use serde_json::{Value, json};
use truxe_server::oauth::pkce;
use truxe_server::service::authorize::token_hash;
use truxe_server::store::grants::{self as grant_store, AuthorizationCode};
use truxe_server::store::housekeeping::{self, Retention};
use truxe_server::store::schema::{oauth_grants, oauth_tokens};
use truxe_server::store::tokens::{self as token_store, RevokedAccessToken};
use truxe_server::store::unix_now;

use crate::on_both_backends;
use crate::support::flow::*;
use crate::support::oauth::{self, Registered, introspect, machine_client, token_for};
use crate::support::process::{text, truxectl};
use crate::support::redis::RedisServer;
use crate::support::{Backend, TestDb, TestServer};

/// `truxectl ARGS --database-url URL` in the server's directory, with `env`.
fn ctl(server: &TestServer, env: &[(&str, &str)], args: &[&str]) -> Output {
    truxectl(server.db.dir.path(), env, &[args, &["--database-url", server.db.url.as_str()]].concat())
}

/// stdout as JSON, whatever the exit status (reports come with exit 1 too).
fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(output)))
}

#[track_caller]
fn exits(output: &Output, code: i32, context: &str) {
    assert_eq!(output.status.code(), Some(code), "{context}:\n{}", text(output));
    assert!(!text(output).contains("panicked"), "{context}:\n{}", text(output));
}

fn jti_of(token: &str) -> String {
    payload(token)["jti"].as_str().expect("jti").to_string()
}

async fn active(server: &TestServer, caller: &Registered, token: &str) -> bool {
    introspect(server, caller, token).await["active"].as_bool().expect("active")
}

/// A code row as the authorization endpoint writes it, for ages the test chooses.
fn code_row(app: &Registered, user_id: &str, code: &str, expires_at: i64) -> AuthorizationCode {
    AuthorizationCode {
        code_hash: token_hash(code),
        client_id: app.client_id.as_str().into(),
        user_id: user_id.into(),
        redirect_uri: CALLBACK.into(),
        scope: "openid".into(),
        code_challenge: Some(pkce::s256_challenge(VERIFIER)),
        code_challenge_method: Some("S256".into()),
        nonce: None,
        auth_time: expires_at - 700,
        amr: "email".into(),
        created_at: expires_at - 600,
        expires_at,
        consumed_at: None,
        grant_id: None,
        redirect_uri_given: true,
    }
}

on_both_backends! {
    async fn codes_inspect_says_why_a_code_is_refused(backend: Backend) {
        let server = flow_server(backend, &[]).await;
        let user_id = create_user(&server, "ada@example.org");
        let app = web_app(&server).await;
        let other = web_app(&server).await;
        let (agent, _) = Agent::signed_in(&server, &user_id);
        let inspect = |code: &str, extra: &[&str]| ctl(&server, &[], &[&["codes", "inspect", code, "--json"][..], extra].concat());

        // Fresh: every field, exit 0, the code itself never printed.
        let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
        let fresh = inspect(&code, &[]);
        exits(&fresh, 0, "a fresh code");
        let report = json_of(&fresh);
        assert_eq!(report["found"], true, "{report}");
        assert_eq!(report["redeemable"], true, "{report}");
        assert_eq!(report["client_id"], app.client_id.as_str());
        assert_eq!(report["client_status"], "active");
        assert_eq!(report["user_id"], user_id.as_str());
        assert_eq!(report["user_email"], "ada@example.org");
        assert_eq!(report["redirect_uri"], CALLBACK);
        assert_eq!(report["redirect_uri_given"], true);
        assert_eq!(report["pkce_method"], "S256");
        assert_eq!((report["used"].clone(), report["expired"].clone()), (json!(false), json!(false)));
        assert!(report["expires_at"].as_i64().expect("expires_at") > unix_now());
        assert_eq!(report["code_hash_prefix"], token_hash(&code)[..12]);
        assert!(!text(&fresh).contains(&code), "never prints the code: {}", text(&fresh));
        // The token request's own parameters, judged as the token endpoint would.
        exits(&inspect(&code, &["--client", &app.client_id, "--redirect-uri", CALLBACK, "--code-verifier", VERIFIER]), 0, "right parameters");
        let trailing = inspect(&code, &["--redirect-uri", &format!("{CALLBACK}/")]);
        exits(&trailing, 1, "a redirect_uri with a trailing slash");
        assert!(json_of(&trailing)["problems"][0].as_str().is_some_and(|p| p.contains("trailing slash")), "{}", text(&trailing));
        let verifier = inspect(&code, &["--code-verifier", "another-verifier-0123456789-abcdefghijklmnopqrstuvwxyz"]);
        exits(&verifier, 1, "a wrong code_verifier");
        assert!(json_of(&verifier)["problems"][0].as_str().is_some_and(|p| p.contains("code_verifier")));
        // Another client's code.
        let foreign = inspect(&code, &["--client", &other.client_id]);
        exits(&foreign, 1, "presented by another client");
        assert!(json_of(&foreign)["problems"][0].as_str().is_some_and(|p| p.contains("another client") && p.contains(&app.client_id)));
        // Text, and the callback URL as pasted.
        let callback = format!("{CALLBACK}?code={code}&state=af0ifjsldkj");
        let shown = ctl(&server, &[], &["codes", "inspect", &callback]);
        exits(&shown, 0, "the callback URL");
        let shown = text(&shown);
        assert!(shown.contains("redeemable") && shown.contains(&format!("{CALLBACK:?}")) && shown.contains("S256"), "{shown}");
        assert!(!shown.contains(&code), "{shown}");
        // Nothing was burnt by looking.
        assert_eq!(exchange(&server, &app, &code, CALLBACK).await.status, 200, "inspect does not consume the code");

        // Used.
        let used = inspect(&code, &[]);
        exits(&used, 1, "a used code");
        let report = json_of(&used);
        assert_eq!((report["used"].clone(), report["redeemable"].clone()), (json!(true), json!(false)), "{report}");
        assert!(report["grant_id"].as_str().is_some_and(|g| g.starts_with("grt_")), "{report}");
        assert_eq!(report["grant_revoked"], false);
        assert!(report["problems"][0].as_str().is_some_and(|p| p.contains("already used")), "{report}");
        assert!(text(&used).contains("would refuse"), "{}", text(&used));

        // Expired.
        let pool = pool(&server);
        let mut conn = pool.get().expect("connection");
        let expired = "expiredcode0123456789abcdefghijklmnopqrstuv";
        grant_store::insert_code(&mut conn, &code_row(&app, &user_id, expired, unix_now() - 90)).expect("insert");
        let report = inspect(expired, &[]);
        exits(&report, 1, "an expired code");
        let report = json_of(&report);
        assert_eq!((report["expired"].clone(), report["used"].clone()), (json!(true), json!(false)), "{report}");
        assert!(report["problems"][0].as_str().is_some_and(|p| p.contains("expired at")), "{report}");

        // Unknown, and not a code at all.
        let unknown = inspect("neverissued0123456789abcdefghijklmnopqrstuv", &[]);
        exits(&unknown, 1, "an unknown code");
        assert_eq!(json_of(&unknown)["found"], false);
        assert!(json_of(&unknown)["problems"][0].as_str().is_some_and(|p| p.contains("unknown code")));
        for malformed in ["x", "not a code", "'; DROP TABLE oauth_authorization_codes; --"] {
            let output = ctl(&server, &[], &["codes", "inspect", malformed]);
            exits(&output, 2, malformed);
            assert!(text(&output).contains("not an authorization code"), "{}", text(&output));
        }
        exits(&ctl(&server, &[], &["codes", "inspect"]), 2, "no code given");
    }

    async fn codes_list_shows_recent_codes_of_a_client(backend: Backend) {
        let server = flow_server(backend, &[]).await;
        let user_id = create_user(&server, "ada@example.org");
        let app = web_app(&server).await;
        let other = web_app(&server).await;
        let (agent, _) = Agent::signed_in(&server, &user_id);
        let redeemed = authorize_code(&agent, &app, CALLBACK, "openid").await;
        assert_eq!(exchange(&server, &app, &redeemed, CALLBACK).await.status, 200);
        let open = authorize_code(&agent, &app, CALLBACK, "openid").await;
        let others = authorize_code(&agent, &other, CALLBACK, "openid").await;
        let pool = pool(&server);
        let mut conn = pool.get().expect("connection");
        let expired = "expiredcode0123456789abcdefghijklmnopqrstuv";
        grant_store::insert_code(&mut conn, &code_row(&app, &user_id, expired, unix_now() - 90)).expect("insert");

        let listed = ctl(&server, &[], &["codes", "list", "--client", &app.client_id, "--json"]);
        exits(&listed, 0, "list --client");
        let codes = json_of(&listed)["codes"].as_array().expect("codes").clone();
        let by_prefix = |code: &str| codes.iter().find(|c| c["code_hash_prefix"] == token_hash(code)[..12]).cloned();
        assert_eq!(codes.len(), 3, "only the client's codes: {codes:?}");
        assert!(by_prefix(&others).is_none());
        assert_eq!(by_prefix(&redeemed).expect("redeemed")["state"], "used");
        assert_eq!(by_prefix(&open).expect("open")["state"], "live");
        assert_eq!(by_prefix(expired).expect("expired")["state"], "expired");
        for code in &codes {
            assert_eq!(code["client_id"], app.client_id.as_str());
            assert_eq!(code["user_id"], user_id.as_str());
            assert_eq!(code["redirect_uri"], CALLBACK);
            assert_eq!(code["pkce_method"], "S256");
        }
        let all = json_of(&ctl(&server, &[], &["codes", "list", "--json"]));
        assert_eq!(all["codes"].as_array().map(Vec::len), Some(4));
        let limited = json_of(&ctl(&server, &[], &["codes", "list", "--limit", "1", "--json"]));
        assert_eq!(limited["codes"].as_array().map(Vec::len), Some(1));
        let by_user = json_of(&ctl(&server, &[], &["codes", "list", "--user", "ada@example.org", "--json"]));
        assert_eq!(by_user["codes"].as_array().map(Vec::len), Some(4));
        let table = ctl(&server, &[], &["codes", "list", "--client", &app.client_id]);
        exits(&table, 0, "the table");
        assert!(text(&table).contains("STATE") && text(&table).contains(&token_hash(&open)[..12]), "{}", text(&table));
        for code in [&redeemed, &open, &others] {
            assert!(!text(&table).contains(code.as_str()), "never prints a code");
        }
        exits(&ctl(&server, &[], &["codes", "list", "--client", "cl_doesnotexist"]), 1, "an unknown client");
        exits(&ctl(&server, &[], &["codes", "list", "--limit", "0"]), 2, "--limit 0");
    }

    async fn tokens_revoke_by_jti_client_and_user(backend: Backend) {
        let server = flow_server(backend, &[]).await;
        let ada = create_user(&server, "ada@example.org");
        let bob = create_user(&server, "bob@example.org");
        let app = web_app(&server).await;
        let app2 = web_app(&server).await;
        let worker = machine_client(&server, "client_secret_basic").await;
        let (ada_agent, _) = Agent::signed_in(&server, &ada);
        let (bob_agent, _) = Agent::signed_in(&server, &bob);
        let (ada_access, ada_refresh) = sign_in_tokens(&server, &ada_agent, &app, "openid offline_access").await;
        let (ada2_access, ada2_refresh) = sign_in_tokens(&server, &ada_agent, &app2, "openid offline_access").await;
        let (bob_access, bob_refresh) = sign_in_tokens(&server, &bob_agent, &app, "openid offline_access").await;
        let machine_1 = token_for(&server, &worker, &[]).await;
        let machine_2 = token_for(&server, &worker, &[]).await;
        // The client_credentials grant's events are written in batches: as good as at once.
        server.state.audit.flush().await;

        // Bad input first: nothing changes.
        exits(&ctl(&server, &[], &["tokens", "revoke"]), 2, "no selector");
        exits(&ctl(&server, &[], &["tokens", "revoke", "--jti", "not a jti!"]), 2, "a malformed jti");
        exits(&ctl(&server, &[], &["tokens", "revoke", "--jti", &jti_of(&machine_1), "--client", &worker.client_id]), 2, "--jti with --client");
        let unknown = ctl(&server, &[], &["tokens", "revoke", "--jti", "0123456789abcdef0123456789abcdef"]);
        exits(&unknown, 1, "an unknown jti");
        assert!(text(&unknown).contains("no token with jti"), "{}", text(&unknown));
        exits(&ctl(&server, &[], &["tokens", "revoke", "--client", "cl_doesnotexist", "--yes"]), 1, "an unknown client");
        exits(&ctl(&server, &[], &["tokens", "revoke", "--user", "nobody@example.org", "--yes"]), 1, "an unknown user");
        let unconfirmed = ctl(&server, &[], &["tokens", "revoke", "--client", &app.client_id]);
        assert!(!unconfirmed.status.success() && text(&unconfirmed).contains("--yes"), "{}", text(&unconfirmed));
        for (token, caller) in [(&ada_access, &app), (&bob_access, &app), (&machine_1, &worker)] {
            assert!(active(&server, caller, token).await, "nothing revoked by refused commands");
        }

        // One access token by its jti.
        let by_jti = ctl(&server, &[], &["tokens", "revoke", "--jti", &jti_of(&machine_1), "--json"]);
        exits(&by_jti, 0, "--jti");
        let counts = json_of(&by_jti);
        assert_eq!((counts["access_tokens"].clone(), counts["refresh_tokens"].clone()), (json!(1), json!(0)), "{counts}");
        assert_eq!(counts["redis"], "not_configured");
        assert!(!active(&server, &worker, &machine_1).await, "revoked at once");
        assert!(active(&server, &worker, &machine_2).await, "only that one");
        let again = ctl(&server, &[], &["tokens", "revoke", "--jti", &jti_of(&machine_1), "--json"]);
        exits(&again, 0, "again");
        assert_eq!(json_of(&again)["unchanged"], "already_revoked");

        // A user at one client: that grant only.
        let ada_at_app = ctl(&server, &[], &["tokens", "revoke", "--user", "ada@example.org", "--client", &app.client_id, "--yes", "--json"]);
        exits(&ada_at_app, 0, "--user --client");
        let counts = json_of(&ada_at_app);
        assert_eq!([&counts["access_tokens"], &counts["refresh_tokens"], &counts["grants"]], [&json!(1), &json!(1), &json!(1)], "{counts}");
        assert!(!active(&server, &app, &ada_access).await && !active(&server, &app, &ada_refresh).await);
        assert_grant_error(&refresh(&server, &app, &ada_refresh, None).await, "invalid_grant", "refresh after revocation");
        assert_invalid_token(&userinfo_get(&server, Some(&ada_access)).await, "revoked", "userinfo after revocation");
        assert!(active(&server, &app2, &ada2_access).await, "ada's other application is untouched");
        assert!(active(&server, &app, &bob_access).await, "bob is untouched");

        // A whole client: bob's tokens at app (ada's are gone already), nothing of app2.
        let client = json_of(&ctl(&server, &[], &["tokens", "revoke", "--client", &app.client_id, "--yes", "--json"]));
        assert_eq!([&client["access_tokens"], &client["refresh_tokens"], &client["grants"]], [&json!(1), &json!(1), &json!(1)], "{client}");
        assert!(!active(&server, &app, &bob_access).await && !active(&server, &app, &bob_refresh).await);
        assert!(active(&server, &app2, &ada2_refresh).await);
        // A machine client: its client_credentials tokens, which belong to no grant.
        let machine = json_of(&ctl(&server, &[], &["tokens", "revoke", "--client", &worker.client_id, "--yes", "--json"]));
        assert_eq!([&machine["access_tokens"], &machine["refresh_tokens"], &machine["grants"]], [&json!(1), &json!(0), &json!(0)], "{machine}");
        assert!(!active(&server, &worker, &machine_2).await);
        // A user, everywhere.
        let user = ctl(&server, &[], &["tokens", "revoke", "--user", &ada, "--yes"]);
        exits(&user, 0, "--user");
        assert!(text(&user).contains("revoked 1 access token(s) and 1 refresh token(s)"), "{}", text(&user));
        assert!(!active(&server, &app2, &ada2_access).await && !active(&server, &app2, &ada2_refresh).await);
        let nothing = json_of(&ctl(&server, &[], &["tokens", "revoke", "--user", &ada, "--yes", "--json"]));
        assert_eq!([&nothing["access_tokens"], &nothing["refresh_tokens"], &nothing["grants"]], [&json!(0), &json!(0), &json!(0)]);

        // A refresh token's jti takes its whole grant along, as revocation at the endpoint does.
        let (access, refresh_token) = sign_in_tokens(&server, &bob_agent, &app2, "openid offline_access").await;
        let refresh_jti = refresh_row(&server, &refresh_token).jti.to_string();
        let family = json_of(&ctl(&server, &[], &["tokens", "revoke", "--jti", &refresh_jti, "--json"]));
        assert_eq!([&family["access_tokens"], &family["refresh_tokens"], &family["grants"]], [&json!(1), &json!(1), &json!(1)], "{family}");
        assert!(!active(&server, &app2, &access).await && !active(&server, &app2, &refresh_token).await);
        let again = json_of(&ctl(&server, &[], &["tokens", "revoke", "--jti", &refresh_jti, "--json"]));
        assert_eq!(again["unchanged"], "already_revoked");

        // Each revocation that changed something is in the audit trail, by the CLI, without a token.
        let events: Vec<(String, Option<String>, String)> = oauth::audit_actions(&server).await;
        // --jti twice (one a refresh token's), --user --client, two --client, --user; the
        // revocations that changed nothing wrote nothing.
        let revoked = events.iter().filter(|(action, _, _)| action == "token.revoked").count();
        assert_eq!(revoked, 6, "{events:?}");
        for (_, _, details) in &events {
            for secret in [&ada_access, &ada_refresh, &bob_refresh, &refresh_token, &machine_1] {
                assert!(!details.contains(secret.as_str()), "no token in the audit trail");
            }
        }
    }

    async fn tokens_revoke_tells_redis_and_stays_correct_without_it(backend: Backend) {
        let mut redis = RedisServer::start();
        let redis_url = redis.url();
        let server = flow_server(backend, &[("REDIS_URL", &redis_url)]).await;
        let worker = machine_client(&server, "client_secret_basic").await;
        let env = [("REDIS_URL", redis_url.as_str())];
        let marked = token_for(&server, &worker, &[]).await;
        let unmarked = token_for(&server, &worker, &[]).await;
        server.state.audit.flush().await;

        let told = ctl(&server, &env, &["tokens", "revoke", "--jti", &jti_of(&marked), "--json"]);
        exits(&told, 0, "--jti with Redis");
        assert_eq!(json_of(&told)["redis"], "marked");
        let key = format!("oauth:revoked:{}", jti_of(&marked));
        assert!(redis.exists(&key), "the mark is in Redis");
        let ttl: i64 = redis.command(&["TTL", &key]).and_then(|t| t.trim_start_matches(':').parse().ok()).expect("TTL");
        assert!((1..=900).contains(&ttl), "the mark lives as long as the token: {ttl}");
        assert!(!active(&server, &worker, &marked).await);
        // The servers use the mark: without the database row the token is still inactive.
        let pool = pool(&server);
        let mut conn = pool.get().expect("connection");
        diesel::delete(oauth_tokens::table.filter(oauth_tokens::jti.eq(jti_of(&marked)))).execute(&mut conn).expect("delete");
        assert!(!active(&server, &worker, &marked).await, "the Redis mark answers");

        // Redis down: the revocation is made and holds; the command warns and succeeds.
        redis.stop();
        let untold = ctl(&server, &env, &["tokens", "revoke", "--jti", &jti_of(&unmarked), "--json"]);
        exits(&untold, 0, "--jti with Redis down");
        assert_eq!(json_of(&untold)["redis"], "unreachable");
        assert_eq!(json_of(&untold)["access_tokens"], 1);
        assert!(String::from_utf8_lossy(&untold.stderr).contains("Redis could not be told"), "{}", text(&untold));
        assert!(!active(&server, &worker, &unmarked).await, "revoked without Redis: the database is the record");
        redis.start_again();
        assert!(!redis.exists(&format!("oauth:revoked:{}", jti_of(&unmarked))), "no mark was written");
        assert!(!active(&server, &worker, &unmarked).await, "and still revoked once Redis is back");
    }

    async fn clients_show_checks_a_redirect_uri(backend: Backend) {
        let server = flow_server(backend, &[]).await;
        let app = web_app(&server).await;
        let via_db = |args: &[&str]| ctl(&server, &[], &[&["clients", "show", &app.client_id][..], args].concat());
        let url_env = [("ADMIN_TOKEN", crate::support::ADMIN_TOKEN)];
        let via_api = |args: &[&str]| {
            truxectl(server.db.dir.path(), &url_env, &[&["clients", "show", &app.client_id, "--url", &server.base_url][..], args].concat())
        };

        // Every redirect URI on its own line, quoted.
        let shown = via_db(&[]);
        exits(&shown, 0, "show");
        let shown = text(&shown);
        let lines: Vec<&str> = shown.lines().collect();
        let at = lines.iter().position(|l| l.starts_with("redirect_uris ")).expect("redirect_uris line");
        let mut uris = [lines[at].trim_start_matches("redirect_uris").trim(), lines[at + 1].trim()];
        uris.sort_unstable();
        assert_eq!(uris, ["\"http://127.0.0.1:8080/cb\"", &format!("{CALLBACK:?}")], "{shown}");

        for show in [&via_db as &dyn Fn(&[&str]) -> Output, &via_api] {
            let exact = show(&["--redirect-uri", CALLBACK, "--json"]);
            exits(&exact, 0, "an exact match");
            let check = &json_of(&exact)["redirect_uri_check"];
            assert_eq!((check["matches"].clone(), check["matched"].clone()), (json!(true), json!(CALLBACK)), "{check}");
            assert_eq!(json_of(&exact)["client_id"], app.client_id.as_str(), "the client's fields are there too");

            let slash = show(&["--redirect-uri", &format!("{CALLBACK}/"), "--json"]);
            exits(&slash, 1, "a trailing slash");
            let check = &json_of(&slash)["redirect_uri_check"];
            assert_eq!((check["matches"].clone(), check["closest"].clone()), (json!(false), json!(CALLBACK)), "{check}");
            assert!(check["differences"][0].as_str().is_some_and(|d| d.contains("trailing slash")), "{check}");
        }
        let loopback = via_db(&["--redirect-uri", "http://127.0.0.1:49152/cb"]);
        exits(&loopback, 0, "a loopback redirect URI on another port");
        assert!(text(&loopback).contains("on any port"), "{}", text(&loopback));
        let case = via_db(&["--redirect-uri", "https://APP.example.com/callback"]);
        exits(&case, 1, "host case");
        let case = text(&case);
        assert!(case.contains("does NOT match") && case.contains("letter case") && case.contains("redirect_uri_mismatch"), "{case}");
        exits(&via_db(&["--redirect-uri"]), 2, "--redirect-uri without a value");
    }

    async fn purge_keeps_what_reuse_detection_needs(backend: Backend) {
        let server = flow_server(backend, &[]).await;
        let user_id = create_user(&server, "ada@example.org");
        let app = web_app(&server).await;
        let worker = machine_client(&server, "client_secret_basic").await;
        let (agent, _) = Agent::signed_in(&server, &user_id);
        let rules = server.state.rules.clone();
        let retention = Retention { refresh_family_ttl: rules.refresh_family_ttl, access_token_ttl: rules.access_token_ttl };
        let now = unix_now();

        // A live family, rotated once: its rotated token is what reuse detection needs.
        let (_, rotated) = sign_in_tokens(&server, &agent, &app, "openid offline_access").await;
        let answer = refresh(&server, &app, &rotated, None).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let live_child = answer.body["refresh_token"].as_str().expect("refresh token").to_string();
        // Two more families, moved back in time: one ended 2 days ago, one an hour ago.
        let (_, old) = sign_in_tokens(&server, &agent, &app, "openid offline_access").await;
        let (_, recent) = sign_in_tokens(&server, &agent, &app, "openid offline_access").await;
        let pool = pool(&server);
        let mut conn = pool.get().expect("connection");
        let age = |conn: &mut truxe_server::store::AnyConnection, refresh_token: &str, ended_ago: i64| {
            let grant_id = refresh_row(&server, refresh_token).grant_id.expect("grant");
            let created_at = now - retention.refresh_family_ttl - ended_ago;
            diesel::update(oauth_grants::table.filter(oauth_grants::grant_id.eq(grant_id.as_str())))
                .set(oauth_grants::created_at.eq(created_at))
                .execute(conn)
                .expect("age the grant");
            diesel::update(oauth_tokens::table.filter(oauth_tokens::grant_id.eq(grant_id.as_str())))
                .set((oauth_tokens::created_at.eq(created_at), oauth_tokens::expires_at.eq(created_at + 3600)))
                .execute(conn)
                .expect("age its tokens");
            grant_id
        };
        let old_grant = age(&mut conn, &old, 2 * 86_400);
        let recent_grant = age(&mut conn, &recent, 3600);
        // Revoked access tokens: one revoked now, two whose JWT expired 2 days and 1 hour ago.
        let revoked_now = token_for(&server, &worker, &[]).await;
        assert_eq!(oauth::revoke(&server, &worker, &revoked_now, None).await.status, 200);
        for (jti, expires_at) in [("expired2daysago00000000000000000", now - 2 * 86_400), ("expired1hourago000000000000000000", now - 3600)] {
            conn.transaction(|c| {
                let row = RevokedAccessToken { jti, client_id: &worker.client_id, scope: "orders:read", issued_at: expires_at - 900, expires_at };
                token_store::revoke_access_token(c, &row, now)
            })
            .expect("a revoked access token row");
        }
        let tokens_before: i64 = oauth_tokens::table.count().get_result(&mut conn).expect("count");

        let purged = housekeeping::purge(&mut conn, now, &retention).expect("purge");
        assert_eq!(purged, housekeeping::Purged { grants: 1, access_tokens: 1, ..Default::default() }, "exactly the ended family and the long-expired row");
        let tokens_after: i64 = oauth_tokens::table.count().get_result(&mut conn).expect("count");
        assert_eq!(tokens_before - tokens_after, 2, "the old family's refresh token and the expired row");
        let grant_ids: Vec<String> = oauth_grants::table.select(oauth_grants::grant_id).load(&mut conn).expect("grants");
        assert!(!grant_ids.contains(&old_grant.to_string()), "the family that ended two days ago is gone");
        assert!(grant_ids.contains(&recent_grant.to_string()), "one that ended an hour ago is kept a day");
        assert!(token_store::access_token_revoked(&mut conn, &jti_of(&revoked_now)).expect("query"), "a live revocation is kept");
        assert!(token_store::access_token_revoked(&mut conn, "expired1hourago000000000000000000").expect("query"));
        assert!(!token_store::access_token_revoked(&mut conn, "expired2daysago00000000000000000").expect("query"));
        assert!(housekeeping::purge(&mut conn, now, &retention).expect("purge").is_empty(), "nothing more");
        drop(conn);

        // Reuse detection still works on the live family: the rotated token revokes it.
        assert!(!active(&server, &worker, &revoked_now).await, "still revoked after the purge");
        assert!(active(&server, &app, &live_child).await);
        assert_grant_error(&refresh(&server, &app, &rotated, None).await, "invalid_grant", "the rotated token replayed after the purge");
        assert!(!active(&server, &app, &live_child).await, "the replay revoked the family");
        let family_rows = family(&server, refresh_row(&server, &rotated).grant_id.expect("grant").as_str());
        assert_eq!(family_rows.len(), 2, "the revoked family keeps its rows while it could live");
    }
}

/// `migrate --dry-run` on a database one migration behind: lists that migration with the tables
/// it touches and their row counts, and applies nothing.
#[tokio::test]
async fn migrate_dry_run_on_a_database_one_migration_behind() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend);
        let cwd = db.dir.path();
        let url = ["--database-url", db.url.as_str()];
        let run = |args: &[&str]| truxectl(cwd, &[], &[args, &url[..]].concat());
        exits(&run(&["migrate", "--json"]), 0, "migrate");
        // Some rows to count: a client with a code (codes are the table the latest migration alters today).
        {
            let config = crate::support::config_from(&[("DATABASE_URL", &db.url)], &db.dir);
            let pool = truxe_server::store::connect(&config.database).expect("connect");
            let mut conn = pool.get().expect("connection");
            let user = truxe_server::service::users::create(
                &mut conn,
                &truxe_server::service::users::NewUser { email: "ada@example.org".into(), ..Default::default() },
                "test",
                unix_now(),
            )
            .expect("user");
            let created = run(&["clients", "create", "--name", "Dry", "--redirect-uri", CALLBACK, "--json"]);
            let client_id = json_of(&created)["client_id"].as_str().expect("client_id").to_string();
            let app = Registered { client_id, secret: String::new(), method: "none".into() };
            grant_store::insert_code(
                &mut conn,
                &code_row(&app, &user.user_id, "dryruncode0123456789abcdefghijklmnopqrstuv", unix_now() + 600),
            )
            .expect("code");
        }
        let status = json_of(&run(&["migrate", "status", "--json"]));
        let last = status["migrations"].as_array().and_then(|m| m.last()).cloned().expect("a migration");
        exits(&run(&["migrate", "revert", "--yes"]), 0, "revert the latest");

        let planned = run(&["migrate", "--dry-run", "--json"]);
        exits(&planned, 0, &format!("{backend:?}: dry run"));
        let plan = json_of(&planned);
        assert_eq!(plan["dry_run"], true);
        let pending = plan["pending"].as_array().expect("pending");
        assert_eq!(pending.len(), 1, "{backend:?}: {plan}");
        assert_eq!(pending[0]["version"], last["version"], "{plan}");
        let tables = pending[0]["tables"].as_array().expect("tables");
        assert!(!tables.is_empty(), "{backend:?}: the latest migration touches a table: {plan}");
        // Each count is the table's real one.
        let config = crate::support::config_from(&[("DATABASE_URL", &db.url)], &db.dir);
        let mut conn = truxe_server::store::connect_one(&config.database).expect("connect");
        for table in tables {
            let name = table["table"].as_str().expect("name");
            assert!(!table["operations"].as_array().expect("operations").is_empty(), "{table}");
            #[derive(QueryableByName)]
            struct Count {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let count = diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {name}")).get_result::<Count>(&mut conn);
            match count {
                Ok(count) => assert_eq!(table["rows"], count.n, "{backend:?}: {table}"),
                Err(_) => {
                    assert_eq!(table["rows"], Value::Null, "{backend:?}: a table that does not exist yet: {table}")
                }
            }
            if name == "oauth_authorization_codes" {
                assert_eq!(table["rows"], 1, "the code written above");
            }
        }
        drop(conn);
        let text_plan = run(&["migrate", "--dry-run"]);
        exits(&text_plan, 0, "text");
        assert!(
            text(&text_plan).contains("nothing applied")
                && text(&text_plan).contains(last["name"].as_str().expect("name")),
            "{}",
            text(&text_plan)
        );
        // Nothing was applied.
        let after = json_of(&run(&["migrate", "status", "--json"]));
        assert_eq!(
            after["migrations"].as_array().and_then(|m| m.last()).map(|m| m["applied"].clone()),
            Some(json!(false)),
            "{after}"
        );
        exits(&run(&["migrate", "status", "--dry-run"]), 2, "--dry-run with status");
        // Up to date: an empty plan.
        exits(&run(&["migrate"]), 0, "apply");
        let empty = json_of(&run(&["migrate", "--dry-run", "--json"]));
        assert_eq!(empty["pending"], json!([]), "{empty}");
    }
}
