//! Per-client token policy: who may introspect what (RFC 7662 §2.1 leaves it to the server: the
//! token's own client, and a resource server for the audiences it registered), the audiences a
//! client may request (RFC 8707, `allowed_audiences`), and per-client lifetimes.

use diesel::prelude::*;
use serde_json::{Value, json};
use truxe_server::store::schema::oauth_authorization_codes as codes;
use truxe_server::store::unix_now;

use crate::on_both_backends;
use crate::support::flow::*;
use crate::support::oauth::*;
use crate::support::{Backend, TestServer};

const API: &str = "https://api.example.com";
const BILLING: &str = "https://billing.example.com";

async fn policy_server(backend: Backend) -> TestServer {
    flow_server(backend, &[("JWT_AUDIENCE", "https://api.example.com,https://billing.example.com")]).await
}

async fn machine(server: &TestServer, extra: Value) -> Registered {
    let mut body = json!({
        "client_name": "worker",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
        "allowed_scopes": ["orders:read"],
    });
    for (key, value) in extra.as_object().expect("object") {
        body[key] = value.clone();
    }
    register(server, body).await
}

fn inactive() -> Value {
    json!({ "active": false })
}

on_both_backends! {
    async fn introspection_is_for_the_owner_and_registered_resource_servers(backend: Backend) {
        who_may_introspect_on(backend).await;
    }
    async fn resource_must_be_a_registered_audience(backend: Backend) {
        audiences_on(backend).await;
    }
    async fn per_client_lifetimes_apply(backend: Backend) {
        lifetimes_on(backend).await;
    }
}

async fn who_may_introspect_on(backend: Backend) {
    let server = policy_server(backend).await;
    let owner = machine(&server, json!({ "allowed_audiences": [BILLING] })).await;
    let unrelated = machine(&server, json!({})).await;
    let billing_api = machine(&server, json!({ "introspection_audiences": [BILLING] })).await;
    let api_default = token_for(&server, &owner, &[]).await;
    let api_billing = token_for(&server, &owner, &[("resource", BILLING)]).await;

    // The token's own client sees both.
    assert_eq!(introspect(&server, &owner, &api_default).await["aud"], API);
    assert_eq!(introspect(&server, &owner, &api_billing).await["aud"], BILLING);
    // An unrelated confidential client learns nothing, not even that the token is live.
    assert_eq!(introspect(&server, &unrelated, &api_default).await, inactive());
    assert_eq!(introspect(&server, &unrelated, &api_billing).await, inactive());
    // The billing resource server sees tokens for its audience only.
    let seen = introspect(&server, &billing_api, &api_billing).await;
    assert_eq!((seen["active"].clone(), seen["client_id"].clone()), (json!(true), json!(owner.client_id)));
    assert_eq!(introspect(&server, &billing_api, &api_default).await, inactive());

    // Refresh tokens introspect for their own client only.
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let first = exchange(&server, &app, &code, CALLBACK).await;
    let refresh_token = first.body["refresh_token"].as_str().expect("refresh token");
    let info = introspect(&server, &app, refresh_token).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["token_type"], "refresh_token");
    assert_eq!(info["client_id"], app.client_id);
    assert_eq!(info["sub"], user_id);
    assert_eq!(info["scope"], "offline_access openid");
    assert!(info.get("aud").is_none(), "{info}");
    for hint in ["refresh_token", "access_token", "bogus"] {
        let (authorization, mut pairs) = app.credentials();
        pairs.extend([("token", refresh_token), ("token_type_hint", hint)]);
        let answer = post_form(&server, "/oauth-provider/introspect", authorization.as_deref(), form(&pairs)).await;
        assert_eq!(answer.body["active"], true, "hint {hint} is only a hint: {}", answer.text);
    }
    assert_eq!(introspect(&server, &unrelated, refresh_token).await, inactive());
    assert_eq!(introspect(&server, &billing_api, refresh_token).await, inactive());
    // A rotated refresh token is no longer active.
    let refreshed = refresh(&server, &app, refresh_token, None).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(introspect(&server, &app, refresh_token).await, inactive());
}

async fn audiences_on(backend: Backend) {
    let server = policy_server(backend).await;
    let set = jwks(&server).await;
    let plain = machine(&server, json!({})).await;
    let billing = machine(&server, json!({ "allowed_audiences": [BILLING] })).await;
    // Without a resource: the default audience, for both.
    for client in [&plain, &billing] {
        let token = token_for(&server, client, &[]).await;
        assert_eq!(verify_with_jwks(&token, &set, API).1.aud, API);
    }
    // A registered audience can be asked for; one that is not registered for the client is
    // invalid_target even though the server issues tokens for it.
    let token = token_for(&server, &billing, &[("resource", BILLING)]).await;
    assert_eq!(verify_with_jwks(&token, &set, BILLING).1.aud, BILLING);
    for (client, resource) in [
        (&plain, BILLING),
        (&billing, "https://evil.example.com"),
        (&billing, "billing"),
        (&billing, "https://billing.example.com#x"),
        (&billing, ISSUER),
    ] {
        let answer = post_form(
            &server,
            "/oauth-provider/token",
            Some(&basic(&client.client_id, &client.secret)),
            form(&[("grant_type", "client_credentials"), ("resource", resource)]),
        )
        .await;
        assert_oauth_error(&answer, 400, "invalid_target", resource);
    }
    // Registration refuses an audience the server does not issue tokens for.
    let response = server
        .client
        .post(server.url("/oauth-provider/clients"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "client_name": "bad", "grant_types": ["client_credentials"], "allowed_scopes": ["orders:read"],
            "allowed_audiences": ["https://evil.example.com"],
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert_eq!(body["field"], "allowed_audiences[0]", "{body}");
}

async fn lifetimes_on(backend: Backend) {
    let server = policy_server(backend).await;
    let user_id = create_user(&server, "ada@example.org");
    let short = register(
        &server,
        json!({
            "client_name": "Short-lived",
            "redirect_uris": [CALLBACK],
            "allowed_scopes": ["openid", "offline_access", "orders:read"],
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
            "access_token_ttl": 5,
            "authorization_code_ttl": 5,
            "refresh_token_ttl": 60,
        }),
    )
    .await;
    let (agent, _) = Agent::signed_in(&server, &user_id);

    // The code lives 5 seconds: its row says so, and once that has passed it is invalid_grant.
    let code = authorize_code(&agent, &short, CALLBACK, "openid offline_access").await;
    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    let (created, expires): (i64, i64) = codes::table
        .filter(codes::client_id.eq(&short.client_id))
        .select((codes::created_at, codes::expires_at))
        .first(&mut conn)
        .expect("code row");
    assert_eq!(expires - created, 5, "authorization_code_ttl");
    // Time passes in the database, not in the test.
    diesel::update(codes::table.filter(codes::client_id.eq(&short.client_id)))
        .set((codes::created_at.eq(created - 5), codes::expires_at.eq(expires - 5)))
        .execute(&mut conn)
        .expect("age the code");
    assert_grant_error(&exchange(&server, &short, &code, CALLBACK).await, "invalid_grant", "an expired code");

    // Access tokens live 5 seconds, the refresh token 60.
    let code = authorize_code(&agent, &short, CALLBACK, "openid offline_access").await;
    let answer = exchange(&server, &short, &code, CALLBACK).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["expires_in"], 5);
    let access_token = answer.body["access_token"].as_str().expect("access token").to_string();
    let claims = payload(&access_token);
    assert_eq!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"), 5);
    let id_token = answer.body["id_token"].as_str().expect("id token");
    assert_eq!(payload(id_token)["exp"], claims["exp"], "the ID token lives as long as the access token");
    let refresh_token = answer.body["refresh_token"].as_str().expect("refresh token");
    let info = introspect(&server, &short, refresh_token).await;
    let refresh_exp = info["exp"].as_i64().expect("exp");
    assert!((unix_now() + 55..=unix_now() + 60).contains(&refresh_exp), "refresh_token_ttl: {info}");
    let machine_token = token_for(&server, &short, &[]).await;
    assert_eq!(
        payload(&machine_token)["exp"].as_i64().expect("exp") - payload(&machine_token)["iat"].as_i64().expect("iat"),
        5
    );

    // A JWT's expiry cannot be moved in the database: wait the five seconds once, for both.
    let exp = claims["exp"].as_i64().expect("exp");
    let wait = u64::try_from(exp + 1 - unix_now()).unwrap_or(0);
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    assert_eq!(introspect(&server, &short, &access_token).await, inactive(), "an expired access token");
    assert_eq!(introspect(&server, &short, &machine_token).await, inactive(), "an expired machine token");
    let (status, headers, _) = userinfo_get(&server, Some(&access_token)).await;
    assert_eq!(status, 401);
    assert!(challenge(&headers).contains("invalid_token"), "{}", challenge(&headers));
}
