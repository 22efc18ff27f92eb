//! The authorization code flow end to end on both backends, without a browser: a signed-in
//! session, consent, the code exchange (confidential and public PKCE clients), ID tokens checked
//! against the JWKS, userinfo, refresh-token rotation and reuse, single-use codes (also under
//! concurrency), revocation, consents and RP-initiated logout.
//!
//! The helpers here (a signed-in [`Agent`], client registration, the authorize round trip) are
//! shared with `authorize.rs`.

use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use truxe_server::oauth::pkce;
use truxe_server::service::users::{self as user_service};
use truxe_server::store::grants::{self as grant_store, AuthorizationCode};
use truxe_server::store::schema::sessions;
use truxe_server::store::unix_now;

use truxe_server::store::tokens::RefreshToken;

use crate::on_both_backends;
use crate::support::flow::*;
use crate::support::oauth::*;
use crate::support::process::{text, truxectl};
use crate::support::{Backend, test_key};

on_both_backends! {
    async fn code_flow_confidential_client(backend: Backend) {
        confidential_client_on(backend).await
    }
    async fn code_flow_public_pkce_client(backend: Backend) {
        public_client_on(backend).await
    }
    async fn code_flow_single_use_codes(backend: Backend) {
        single_use_codes_on(backend).await
    }
    async fn code_flow_concurrent_redemption_exactly_one_wins(backend: Backend) {
        concurrent_redemption_on(backend).await
    }
    async fn code_flow_bad_exchanges(backend: Backend) {
        bad_exchanges_on(backend).await
    }
    async fn code_flow_refresh_rotation_and_reuse(backend: Backend) {
        refresh_rotation_on(backend).await
    }
    async fn code_flow_refresh_retry_within_grace(backend: Backend) {
        refresh_retry_within_grace_on(backend).await
    }
    async fn code_flow_concurrent_refreshes(backend: Backend) {
        refresh_concurrent_on(backend).await
    }
    async fn code_flow_userinfo_errors(backend: Backend) {
        userinfo_errors_on(backend).await
    }
    async fn code_flow_consents_and_revocation(backend: Backend) {
        consents_on(backend).await
    }
    async fn code_flow_rp_initiated_logout(backend: Backend) {
        logout_on(backend).await
    }
}

async fn confidential_client_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);

    // The consent page names the application, shows its logo and the scopes in words.
    let scope = "openid email profile offline_access";
    let consent = agent.get(&path_of(&request_params(&app, CALLBACK, scope))).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    for expected in ["Orders Web", "https://app.example.com/logo.png", "See your email address", "Stay signed in"] {
        assert!(consent.body.contains(expected), "{expected}: {}", consent.body);
    }
    assert!(consent.body.contains("ada@example.org"));
    assert_eq!(consent.headers.get("x-frame-options").and_then(|v| v.to_str().ok()), Some("DENY"));
    let allowed = agent.submit(&consent, "Allow", &[]).await;
    assert_eq!(allowed.status, StatusCode::SEE_OTHER, "{allowed:?}");
    let code = allowed.param("code").expect("code");
    assert_eq!(code.len(), 43, "256 bits, base64url");
    assert_eq!(allowed.param("state").as_deref(), Some("af0ifjsldkj"));
    assert_eq!(allowed.param("iss").as_deref(), Some(ISSUER));

    let answer = exchange(&server, &app, &code, CALLBACK).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    let body = &answer.body;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "email offline_access openid profile");
    let access_token = body["access_token"].as_str().expect("access_token");
    let refresh_token = body["refresh_token"].as_str().expect("refresh_token (offline_access)");
    assert_eq!(refresh_token.len(), 43);

    let set = jwks(&server).await;
    let (header, claims) = crate::support::oauth::verify_with_jwks(access_token, &set, ISSUER);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(claims.sub, user_id);
    assert_eq!(claims.client_id, app.client_id);
    let private = payload(access_token);
    assert!(private["gid"].as_str().is_some_and(|g| g.starts_with("grt_")), "{private}");
    assert!(private["auth_time"].is_i64());

    let id_claims = verify_id_token(
        body["id_token"].as_str().expect("id_token"),
        &set,
        &app.client_id,
        "n-0S6_WzA2Mj",
        access_token,
    );
    assert_eq!(id_claims["sub"], user_id);
    assert_eq!(id_claims["email"], "ada@example.org");
    assert_eq!(id_claims["email_verified"], true);
    assert_eq!(id_claims["name"], "Ada Lovelace");
    assert_eq!(id_claims["exp"].as_i64().expect("exp") - id_claims["iat"].as_i64().expect("iat"), 900);

    // userinfo: GET with the header, POST with the header or the form body.
    let (status, _, info) = userinfo_get(&server, Some(access_token)).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        info,
        json!({ "sub": user_id, "email": "ada@example.org", "email_verified": true, "name": "Ada Lovelace" })
    );
    let posted = post_form(&server, "/oauth-provider/userinfo", None, form(&[("access_token", access_token)])).await;
    assert_eq!((posted.status, &posted.body), (200, &info));
    let posted =
        post_form(&server, "/oauth-provider/userinfo", Some(&format!("Bearer {access_token}")), String::new()).await;
    assert_eq!((posted.status, &posted.body), (200, &info));

    // Introspection (RFC 7662) by the client the tokens were issued to; an unrelated client
    // learns nothing.
    let api = machine_client(&server, "client_secret_basic").await;
    let active = introspect(&server, &app, access_token).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["sub"], user_id);
    assert_eq!(active["client_id"], app.client_id);
    assert_eq!(active["token_type"], "Bearer");
    assert_eq!(active["scope"], "email offline_access openid profile");
    assert_eq!(introspect(&server, &api, access_token).await, json!({ "active": false }), "another client");
    let refresh_info = introspect(&server, &app, refresh_token).await;
    assert_eq!(refresh_info["active"], true, "{refresh_info}");
    assert_eq!(refresh_info["token_type"], "refresh_token");
    assert_eq!(refresh_info["client_id"], app.client_id);
    assert_eq!(refresh_info["scope"], "email offline_access openid profile");
    assert_eq!(refresh_info["sub"], user_id);
    assert_eq!(refresh_info["iss"], ISSUER);
    assert!(refresh_info.get("aud").is_none(), "{refresh_info}");
    assert!(refresh_info["jti"].is_string() && refresh_info["iat"].is_i64(), "{refresh_info}");
    assert_eq!(
        refresh_info["exp"].as_i64().expect("exp") - refresh_info["iat"].as_i64().expect("iat"),
        7 * 86_400,
        "REFRESH_TOKEN_EXPIRY"
    );
    assert_eq!(introspect(&server, &api, refresh_token).await, json!({ "active": false }), "another client");

    // Refresh: new pair, the ID token again (OIDC Core §12.2), a narrower scope on request.
    let refreshed = refresh(&server, &app, refresh_token, Some("openid email")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(refreshed.body["scope"], "email openid");
    let new_refresh = refreshed.body["refresh_token"].as_str().expect("rotated");
    assert_ne!(new_refresh, refresh_token);
    let new_access = refreshed.body["access_token"].as_str().expect("access token");
    let refreshed_id = payload(refreshed.body["id_token"].as_str().expect("id_token on refresh"));
    assert_eq!(refreshed_id["sub"], user_id);
    assert_eq!(refreshed_id["auth_time"], id_claims["auth_time"], "auth_time is the original sign-in's");
    assert!(refreshed_id.get("nonce").is_none());
    // The rotated token still carries the whole grant: the narrowing applied to one access token.
    let again = refresh(&server, &app, new_refresh, None).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["scope"], "email offline_access openid profile");
    let widen =
        refresh(&server, &app, again.body["refresh_token"].as_str().expect("rt"), Some("openid orders:read")).await;
    assert_grant_error(&widen, "invalid_scope", "refreshing never widens the scope");
    assert_eq!(introspect(&server, &app, new_access).await["active"], true);
    assert_eq!(introspect(&server, &app, refresh_token).await, json!({ "active": false }), "rotated");

    // Another authorization with the same scopes: the consent on record skips the page.
    let params = request_params(&app, CALLBACK, "openid email");
    let direct = agent.get(&path_of(&params)).await;
    assert_eq!(direct.status, StatusCode::SEE_OTHER, "no consent page: {direct:?}");
    assert!(direct.param("code").is_some());
    // …unless the client asks for it with prompt=consent.
    let mut forced = params.clone();
    forced.push(("prompt", "consent".into()));
    assert_eq!(agent.get(&path_of(&forced)).await.status, StatusCode::OK);

    // The audit trail has the whole story, without any token value.
    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    use truxe_server::store::schema::audit_events as a;
    let events: Vec<(String, String)> =
        a::table.select((a::action, a::details)).order(a::event_id).load(&mut conn).expect("audit");
    let actions: Vec<&str> = events.iter().map(|(action, _)| action.as_str()).collect();
    for expected in ["consent.granted", "authorization.granted", "token.issued"] {
        assert!(actions.contains(&expected), "{expected}: {actions:?}");
    }
    for (_, details) in &events {
        for secret in [code.as_str(), access_token, refresh_token, new_refresh] {
            assert!(!details.contains(secret), "a token value in the audit log: {details}");
        }
    }
}

async fn public_client_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "grace@example.org");
    let client = spa(&server).await;
    assert_eq!(client.method, "none");
    assert!(client.secret.is_empty());
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let redirect = "http://127.0.0.1:5173/callback";

    // Without offline_access an OpenID Connect request gets no refresh token.
    let code = authorize_code(&agent, &client, redirect, "openid email").await;
    let answer = exchange(&server, &client, &code, redirect).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.get("refresh_token").is_none(), "{}", answer.body);
    let access_token = answer.body["access_token"].as_str().expect("access token");
    let set = jwks(&server).await;
    let id_claims = verify_id_token(
        answer.body["id_token"].as_str().expect("id token"),
        &set,
        &client.client_id,
        "n-0S6_WzA2Mj",
        access_token,
    );
    assert!(id_claims.get("name").is_none(), "no profile scope");
    let (status, _, info) = userinfo_get(&server, Some(access_token)).await;
    assert_eq!((status, info), (200, json!({ "sub": user_id, "email": "grace@example.org", "email_verified": true })));

    // offline_access is a new scope: the consent page again, then a refresh token.
    let code = authorize_code(&agent, &client, redirect, "openid offline_access").await;
    let answer = exchange(&server, &client, &code, redirect).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let refresh_token = answer.body["refresh_token"].as_str().expect("refresh token");
    let refreshed = refresh(&server, &client, refresh_token, None).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);

    // A public client must not present a secret it does not have, nor skip PKCE.
    let code = authorize_code(&agent, &client, redirect, "openid").await;
    let no_verifier =
        token(&server, &client, &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", redirect)])
            .await;
    assert_grant_error(&no_verifier, "invalid_grant", "PKCE verifier missing");
    let with_secret = post_form(
        &server,
        "/oauth-provider/token",
        None,
        form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", VERIFIER),
            ("client_id", &client.client_id),
            ("client_secret", "cs_guess"),
        ]),
    )
    .await;
    assert_oauth_error(&with_secret, 401, "invalid_client", "a public client presenting a secret");
    // The code survived both refusals (nothing was redeemed).
    assert_eq!(exchange(&server, &client, &code, redirect).await.status, 200);
}

async fn single_use_codes_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);

    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let first = exchange(&server, &app, &code, CALLBACK).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let access_token = first.body["access_token"].as_str().expect("access token");
    let refresh_token = first.body["refresh_token"].as_str().expect("refresh token");
    assert_eq!(introspect(&server, &app, access_token).await["active"], true);

    // A second redemption fails and revokes what the first one issued.
    let second = exchange(&server, &app, &code, CALLBACK).await;
    assert_grant_error(&second, "invalid_grant", "second redemption");
    assert_eq!(introspect(&server, &app, access_token).await, json!({ "active": false }));
    assert_eq!(introspect(&server, &app, refresh_token).await, json!({ "active": false }));
    assert_grant_error(&refresh(&server, &app, refresh_token, None).await, "invalid_grant", "refresh after replay");
    let (status, headers, _) = userinfo_get(&server, Some(access_token)).await;
    assert_eq!(status, 401);
    assert!(challenge(&headers).contains("invalid_token"));
}

/// Eight redemptions of one code released together: exactly one wins, the others are replays
/// that revoke what the winner got; the database holds one consumed code, one grant, one family.
async fn concurrent_redemption_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    for round in 0..2 {
        let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
        let request = PreparedToken::new(
            &server,
            &app,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
                ("code_verifier", VERIFIER),
            ],
        );
        let answers = send_together(vec![request; 8]).await;
        let mut winners = Vec::new();
        for answer in &answers {
            match answer.status {
                200 => winners.push(answer),
                _ => assert_grant_error(answer, "invalid_grant", &format!("round {round}: a losing redemption")),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one redemption wins");
        let winner = &winners[0].body;

        let row = code_row(&server, &code);
        assert!(row.consumed_at.is_some(), "round {round}: {row:?}");
        let grant_id = row.grant_id.clone().unwrap_or_else(|| panic!("round {round}: no grant on the code: {row:?}"));
        let grants = grants_of(&server, &app.client_id);
        assert_eq!(grants.len(), round + 1, "round {round}: one grant per code, the losers left none: {grants:?}");
        let grant = grants.iter().find(|g| g.grant_id == grant_id).expect("the code's grant");
        assert_eq!(payload(winner["access_token"].as_str().expect("at"))["gid"], grant_id.as_str());
        let tokens = family(&server, &grant_id);
        assert_eq!(tokens.len(), 1, "round {round}: one refresh token: {tokens:?}");
        // The seven replays revoked the winner's grant and with it everything it issued.
        assert!(grant.revoked_at.is_some(), "round {round}: {grant:?}");
        assert!(tokens[0].revoked_at.is_some(), "round {round}: {tokens:?}");
        let access = winner["access_token"].as_str().expect("access token");
        assert_eq!(introspect(&server, &app, access).await, json!({ "active": false }), "round {round}");
        let refresh_token = winner["refresh_token"].as_str().expect("refresh token");
        assert_grant_error(&refresh(&server, &app, refresh_token, None).await, "invalid_grant", "the winner's");
    }
}

async fn bad_exchanges_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let other = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);

    let code = authorize_code(&agent, &app, CALLBACK, "openid").await;
    let wrong_verifier = token(
        &server,
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", "another-verifier-0123456789-abcdefghijklmnopqrstuvwxyz"),
        ],
    )
    .await;
    assert_grant_error(&wrong_verifier, "invalid_grant", "wrong code_verifier");
    for (uri, context) in [
        ("https://app.example.com/callback/", "trailing slash"),
        ("https://APP.example.com/callback", "case"),
        ("https://app.example.com:443/callback", "port"),
        ("https://app.example.com/callback?x=1", "query"),
        ("http://127.0.0.1:8080/cb", "the other registered URI"),
    ] {
        assert_grant_error(&exchange(&server, &app, &code, uri).await, "invalid_grant", context);
    }
    let missing_uri =
        token(&server, &app, &[("grant_type", "authorization_code"), ("code", &code), ("code_verifier", VERIFIER)])
            .await;
    assert_grant_error(&missing_uri, "invalid_request", "two registered URIs: redirect_uri is required");
    // Another client's code (and nothing burned by it).
    assert_grant_error(&exchange(&server, &other, &code, CALLBACK).await, "invalid_grant", "other client's code");
    for bad in ["", "x", "not a code", &"A".repeat(10 * 1024), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let answer = exchange(&server, &app, bad, CALLBACK).await;
        let expected = if bad.is_empty() { "invalid_request" } else { "invalid_grant" };
        assert_grant_error(&answer, expected, &format!("code {bad:.20}"));
    }
    assert_eq!(exchange(&server, &app, &code, CALLBACK).await.status, 200, "the code still works");

    // Expired, and bound to no PKCE challenge: rows written as the endpoint would.
    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    let now = unix_now();
    let row = |code: &str, expires_at: i64, challenge: Option<String>| AuthorizationCode {
        code_hash: truxe_server::service::authorize::token_hash(code),
        client_id: app.client_id.clone(),
        user_id: user_id.clone(),
        redirect_uri: CALLBACK.into(),
        scope: "openid".into(),
        code_challenge_method: challenge.as_ref().map(|_| "S256".to_string()),
        code_challenge: challenge,
        nonce: None,
        auth_time: now - 10,
        amr: "email".into(),
        created_at: now - 700,
        expires_at,
        consumed_at: None,
        grant_id: None,
        redirect_uri_given: true,
    };
    let expired = "expiredcode0123456789abcdefghijklmnopqrstuv";
    grant_store::insert_code(&mut conn, &row(expired, now - 1, Some(pkce::s256_challenge(VERIFIER)))).expect("insert");
    assert_grant_error(&exchange(&server, &app, expired, CALLBACK).await, "invalid_grant", "expired code");
    let no_pkce = "nopkcecode0123456789abcdefghijklmnopqrstuvw";
    grant_store::insert_code(&mut conn, &row(no_pkce, now + 600, None)).expect("insert");
    assert_grant_error(
        &exchange(&server, &app, no_pkce, CALLBACK).await,
        "invalid_grant",
        "verifier without challenge",
    );
    let without =
        token(&server, &app, &[("grant_type", "authorization_code"), ("code", no_pkce), ("redirect_uri", CALLBACK)])
            .await;
    assert_eq!(without.status, 200, "a confidential client's code without PKCE: {}", without.body);

    // A client registered without the grant, and a missing code.
    let machine = machine_client(&server, "client_secret_post").await;
    assert_grant_error(&exchange(&server, &machine, &code, CALLBACK).await, "unauthorized_client", "machine client");
    let missing = token(&server, &app, &[("grant_type", "authorization_code"), ("redirect_uri", CALLBACK)]).await;
    assert_grant_error(&missing, "invalid_request", "code missing");
    let repeated = post_form(
        &server,
        "/oauth-provider/token",
        Some(&basic(&app.client_id, &app.secret)),
        "grant_type=authorization_code&code=a&code=b",
    )
    .await;
    assert_eq!((repeated.status, repeated.body["error"].as_str()), (400, Some("invalid_request")));
}

async fn refresh_rotation_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let other = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);

    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let first = exchange(&server, &app, &code, CALLBACK).await;
    let rt1 = first.body["refresh_token"].as_str().expect("refresh token").to_string();
    let access1 = first.body["access_token"].as_str().expect("access token").to_string();

    assert_grant_error(&refresh(&server, &other, &rt1, None).await, "invalid_grant", "another client's refresh token");
    assert_grant_error(
        &refresh(&server, &app, "unknown-refresh-token-0123456789", None).await,
        "invalid_grant",
        "unknown",
    );

    let second = refresh(&server, &app, &rt1, None).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let rt2 = second.body["refresh_token"].as_str().expect("rotated").to_string();
    let access2 = second.body["access_token"].as_str().expect("access token").to_string();
    let rotated = refresh_row(&server, &rt1);
    assert!(rotated.rotated_at.is_some(), "{rotated:?}");
    assert_eq!(rotated.replaced_by.as_deref(), Some(refresh_row(&server, &rt2).jti.as_str()));
    assert_eq!(introspect(&server, &app, &access1).await["active"], true, "rotation leaves access tokens alone");

    // No grace by default (TRUXE_REFRESH_REUSE_GRACE=0): the rotated token presented again is
    // a replay, and the whole family is revoked, the newest refresh token and every access token.
    assert_grant_error(&refresh(&server, &app, &rt1, None).await, "invalid_grant", "reuse of a rotated token");
    assert_grant_error(&refresh(&server, &app, &rt2, None).await, "invalid_grant", "its successor, family revoked");
    for (access, context) in [(&access1, "first access token"), (&access2, "second access token")] {
        assert_eq!(introspect(&server, &app, access).await, json!({ "active": false }), "{context}");
    }
    let grant = &grants_of(&server, &app.client_id)[0];
    assert!(grant.revoked_at.is_some(), "{grant:?}");
    let rows = family(&server, &grant.grant_id);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|row| row.revoked_at.is_some()), "{rows:?}");
    let events = audit_actions(&server).await;
    assert_eq!(events.iter().filter(|(action, _, _)| action == "refresh_token.reused").count(), 1, "{events:?}");

    // Expired refresh tokens: REFRESH_TOKEN_EXPIRY sets the lifetime; the row is aged instead
    // of waiting.
    let hourly = flow_server(backend, &[("REFRESH_TOKEN_EXPIRY", "1h")]).await;
    let user_id = create_user(&hourly, "ada@example.org");
    let app = web_app(&hourly).await;
    let (agent, _) = Agent::signed_in(&hourly, &user_id);
    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let rt = exchange(&hourly, &app, &code, CALLBACK).await.body["refresh_token"].as_str().expect("rt").to_string();
    let row = refresh_row(&hourly, &rt);
    assert_eq!(row.expires_at - row.created_at, 3600, "{row:?}");
    set_refresh_expires_at(&hourly, &rt, unix_now() - 1);
    assert_eq!(introspect(&hourly, &app, &rt).await, json!({ "active": false }), "expired");
    assert_grant_error(&refresh(&hourly, &app, &rt, None).await, "invalid_grant", "expired refresh token");

    // Servers that turned refresh tokens off.
    let off = flow_server(backend, &[("OAUTH_ALLOW_REFRESH_TOKEN", "false")]).await;
    let user_id = create_user(&off, "ada@example.org");
    let app = web_app(&off).await;
    let (agent, _) = Agent::signed_in(&off, &user_id);
    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let answer = exchange(&off, &app, &code, CALLBACK).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.get("refresh_token").is_none(), "{}", answer.body);
    assert_eq!(answer.body["scope"], "openid", "offline_access is dropped, not refused");
    assert_grant_error(&refresh(&off, &app, &rt1, None).await, "unsupported_grant_type", "refresh turned off");
    let (_, metadata) = off.get_json("/.well-known/openid-configuration").await;
    assert_eq!(metadata["grant_types_supported"], json!(["authorization_code", "client_credentials"]));
}

/// With `TRUXE_REFRESH_REUSE_GRACE` set, a rotated token presented again within the grace is a
/// client retrying a lost response; the grace is passed by ageing `rotated_at`, not by waiting.
async fn refresh_retry_within_grace_on(backend: Backend) {
    let server = flow_server(backend, &[("TRUXE_REFRESH_REUSE_GRACE", "10s")]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);

    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let rt1 = exchange(&server, &app, &code, CALLBACK).await.body["refresh_token"].as_str().expect("rt").to_string();
    let second = refresh(&server, &app, &rt1, None).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let rt2 = second.body["refresh_token"].as_str().expect("rotated").to_string();
    // Within the grace the old token works again: a lost response retried.
    let retry = refresh(&server, &app, &rt1, None).await;
    assert_eq!(retry.status, 200, "retry within the grace: {}", retry.body);
    let rt3 = retry.body["refresh_token"].as_str().expect("rotated").to_string();
    let access = retry.body["access_token"].as_str().expect("access token").to_string();
    assert_eq!(refresh_row(&server, &rt1).replaced_by.as_deref(), Some(refresh_row(&server, &rt3).jti.as_str()));
    assert!(refresh_row(&server, &rt2).revoked_at.is_some(), "the retry replaced the successor it answered before");
    assert_eq!(introspect(&server, &app, &access).await["active"], true, "a retry does not revoke the family");
    assert_eq!(introspect(&server, &app, &rt3).await["active"], true);

    // After the grace the same reuse is a replay: the whole family is revoked.
    set_rotated_at(&server, unix_now() - 60);
    assert_grant_error(&refresh(&server, &app, &rt1, None).await, "invalid_grant", "reuse after the grace");
    for (token, context) in [(&rt2, "sibling"), (&rt3, "newest")] {
        assert_grant_error(&refresh(&server, &app, token, None).await, "invalid_grant", context);
    }
    assert_eq!(introspect(&server, &app, &access).await, json!({ "active": false }), "access token of the family");

    // Within the grace, but after the successor was used: a replay, the family is revoked.
    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let rt1 = exchange(&server, &app, &code, CALLBACK).await.body["refresh_token"].as_str().expect("rt").to_string();
    let rt2 = refresh(&server, &app, &rt1, None).await.body["refresh_token"].as_str().expect("rt").to_string();
    let third = refresh(&server, &app, &rt2, None).await;
    assert_eq!(third.status, 200, "{}", third.body);
    let rt3 = third.body["refresh_token"].as_str().expect("rt").to_string();
    let access = third.body["access_token"].as_str().expect("access token").to_string();
    assert_eq!(introspect(&server, &app, &access).await["active"], true);
    assert_grant_error(
        &refresh(&server, &app, &rt1, None).await,
        "invalid_grant",
        "retry after the successor was used",
    );
    assert_grant_error(&refresh(&server, &app, &rt3, None).await, "invalid_grant", "newest, family revoked");
    assert_eq!(introspect(&server, &app, &access).await, json!({ "active": false }), "access token of the family");

    // A successor replaced by a retry is reuse evidence: presented, it revokes the family.
    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let rt1 = exchange(&server, &app, &code, CALLBACK).await.body["refresh_token"].as_str().expect("rt").to_string();
    let rt2 = refresh(&server, &app, &rt1, None).await.body["refresh_token"].as_str().expect("rt").to_string();
    let retried = refresh(&server, &app, &rt1, None).await;
    let rt3 = retried.body["refresh_token"].as_str().expect("rt").to_string();
    assert_grant_error(&refresh(&server, &app, &rt2, None).await, "invalid_grant", "the replaced successor");
    assert_grant_error(&refresh(&server, &app, &rt3, None).await, "invalid_grant", "the retry's child, family revoked");
}

/// Two refreshes of one token released together. Without a grace (the default) exactly one
/// rotates it and the other is a replay that revokes the family; with a grace the other is a
/// retry, and exactly one child of the token stays live.
async fn refresh_concurrent_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let rt1 = exchange(&server, &app, &code, CALLBACK).await.body["refresh_token"].as_str().expect("rt").to_string();
    let request = PreparedToken::new(&server, &app, &[("grant_type", "refresh_token"), ("refresh_token", &rt1)]);
    let answers = send_together(vec![request; 2]).await;
    let (won, lost): (Vec<&TokenAnswer>, Vec<&TokenAnswer>) = answers.iter().partition(|a| a.status == 200);
    assert_eq!(
        (won.len(), lost.len()),
        (1, 1),
        "one rotation, one replay: {:?}",
        answers.iter().map(|a| &a.body).collect::<Vec<_>>()
    );
    assert_grant_error(lost[0], "invalid_grant", "the concurrent replay");
    let grants = grants_of(&server, &app.client_id);
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert!(grants[0].revoked_at.is_some(), "the replay revoked the family: {:?}", grants[0]);
    let rows = family(&server, &grants[0].grant_id);
    assert_eq!(rows.len(), 2, "the token and the winner's child, nothing of the loser: {rows:?}");
    assert!(rows.iter().all(|row| row.revoked_at.is_some()), "{rows:?}");
    let winner = &won[0].body;
    assert_eq!(
        introspect(&server, &app, winner["access_token"].as_str().expect("at")).await,
        json!({ "active": false })
    );
    let child = winner["refresh_token"].as_str().expect("rt");
    assert_grant_error(&refresh(&server, &app, child, None).await, "invalid_grant", "the winner's child");

    let server = flow_server(backend, &[("TRUXE_REFRESH_REUSE_GRACE", "10s")]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let rt1 = exchange(&server, &app, &code, CALLBACK).await.body["refresh_token"].as_str().expect("rt").to_string();
    let request = PreparedToken::new(&server, &app, &[("grant_type", "refresh_token"), ("refresh_token", &rt1)]);
    let answers = send_together(vec![request; 2]).await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "a rotation and a retry: {}", answer.body);
    }
    let grants = grants_of(&server, &app.client_id);
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert!(grants[0].revoked_at.is_none(), "a retry is no replay: {:?}", grants[0]);
    let rows = family(&server, &grants[0].grant_id);
    assert_eq!(rows.len(), 3, "the token and one child per answer: {rows:?}");
    let children: Vec<RefreshToken> =
        answers.iter().map(|a| refresh_row(&server, a.body["refresh_token"].as_str().expect("rt"))).collect();
    let live: Vec<&RefreshToken> =
        children.iter().filter(|c| c.revoked_at.is_none() && c.rotated_at.is_none()).collect();
    assert_eq!(live.len(), 1, "exactly one child of a rotated token is live: {children:?}");
    assert_eq!(
        refresh_row(&server, &rt1).replaced_by.as_deref(),
        Some(live[0].jti.as_str()),
        "the live child is the successor"
    );
    let (live_answer, replaced_answer) =
        if children[0].jti == live[0].jti { (&answers[0], &answers[1]) } else { (&answers[1], &answers[0]) };
    let refreshed = refresh(&server, &app, live_answer.body["refresh_token"].as_str().expect("rt"), None).await;
    assert_eq!(refreshed.status, 200, "the live child refreshes: {}", refreshed.body);
    let replaced = replaced_answer.body["refresh_token"].as_str().expect("rt");
    assert_grant_error(&refresh(&server, &app, replaced, None).await, "invalid_grant", "the replaced child");
    assert!(grants_of(&server, &app.client_id)[0].revoked_at.is_some(), "the replaced child is reuse evidence");
}

async fn userinfo_errors_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);

    let (status, headers, _) = userinfo_get(&server, None).await;
    assert_eq!((status, challenge(&headers).as_str()), (401, r#"Bearer realm="truxe""#), "no token: no error code");
    let (status, headers, _) = userinfo_get(&server, Some("garbage")).await;
    assert_eq!(status, 401);
    assert!(challenge(&headers).contains(r#"error="invalid_token""#), "{}", challenge(&headers));

    let code = authorize_code(&agent, &app, CALLBACK, "openid email").await;
    let token_answer = exchange(&server, &app, &code, CALLBACK).await;
    let access_token = token_answer.body["access_token"].as_str().expect("at");

    // Not in the query (RFC 6750 §2.3 is not offered), not twice.
    let query = server
        .client
        .get(server.url(&format!("/oauth-provider/userinfo?access_token={access_token}")))
        .send()
        .await
        .expect("get");
    assert_eq!(query.status().as_u16(), 400);
    let both = post_form(
        &server,
        "/oauth-provider/userinfo",
        Some(&format!("Bearer {access_token}")),
        form(&[("access_token", access_token)]),
    )
    .await;
    assert_eq!(both.status, 400);
    assert!(both.headers.get("www-authenticate").is_some());

    // A machine token has no openid scope: insufficient_scope.
    let machine = machine_client(&server, "client_secret_basic").await;
    let machine_token = crate::support::oauth::token_for(&server, &machine, &[]).await;
    let (status, headers, _) = userinfo_get(&server, Some(&machine_token)).await;
    assert_eq!(status, 403);
    assert!(challenge(&headers).contains(r#"error="insufficient_scope""#));

    // A token without openid (plain OAuth): refused the same way.
    let code = authorize_code(&agent, &app, CALLBACK, "orders:read").await;
    let oauth_only = exchange(&server, &app, &code, CALLBACK).await;
    assert!(oauth_only.body.get("id_token").is_none());
    assert!(oauth_only.body.get("refresh_token").is_some(), "plain OAuth: refresh per client registration");
    let (status, _, _) = userinfo_get(&server, Some(oauth_only.body["access_token"].as_str().expect("at"))).await;
    assert_eq!(status, 403);

    // A disabled user's tokens stop working.
    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    user_service::set_status(&mut conn, &user_id, truxe_server::model::user::UserStatus::Disabled, "test", unix_now())
        .expect("disable");
    let (status, headers, _) = userinfo_get(&server, Some(access_token)).await;
    assert_eq!(status, 401);
    assert!(challenge(&headers).contains("invalid_token"));

    // An expired token.
    let expired = crate::support::oauth::forge(
        &crate::support::test_key_pem(),
        test_key().kid(),
        json!({
            "iss": ISSUER, "sub": user_id, "aud": ISSUER, "exp": unix_now() - 5, "iat": unix_now() - 905,
            "jti": "0123456789abcdef0123456789abcdef", "client_id": app.client_id, "scope": "openid",
        }),
    );
    let (status, headers, _) = userinfo_get(&server, Some(&expired)).await;
    assert_eq!(status, 401);
    assert!(challenge(&headers).contains("invalid_token"));
}

async fn consents_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let api = machine_client(&server, "client_secret_basic").await;
    let (agent, _) = Agent::signed_in(&server, &user_id);

    let code = authorize_code(&agent, &app, CALLBACK, "openid email offline_access").await;
    let answer = exchange(&server, &app, &code, CALLBACK).await;
    let (access, refresh_token) = (
        answer.body["access_token"].as_str().expect("at").to_string(),
        answer.body["refresh_token"].as_str().expect("rt").to_string(),
    );

    // Revocation of a refresh token (RFC 7009) revokes its grant: refresh and access tokens.
    let revoked = post_form(
        &server,
        "/oauth-provider/revoke",
        Some(&basic(&app.client_id, &app.secret)),
        form(&[("token", &refresh_token), ("token_type_hint", "refresh_token")]),
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_grant_error(&refresh(&server, &app, &refresh_token, None).await, "invalid_grant", "revoked");
    assert_eq!(introspect(&server, &app, &access).await, json!({ "active": false }));
    // Another client cannot revoke it; unknown ones are fine.
    let code = authorize_code(&agent, &app, CALLBACK, "openid email offline_access").await;
    let answer = exchange(&server, &app, &code, CALLBACK).await;
    let (access, refresh_token) = (
        answer.body["access_token"].as_str().expect("at").to_string(),
        answer.body["refresh_token"].as_str().expect("rt").to_string(),
    );
    let foreign = post_form(
        &server,
        "/oauth-provider/revoke",
        Some(&basic(&api.client_id, &api.secret)),
        form(&[("token", &refresh_token)]),
    )
    .await;
    assert_oauth_error(&foreign, 400, "unauthorized_client", "another client's refresh token");
    assert_eq!(introspect(&server, &app, &refresh_token).await["active"], true, "not revoked by the other client");
    assert_eq!(introspect(&server, &app, &access).await["active"], true, "nor its grant");

    // The account page lists the consent with a Withdraw button (CSRF-protected).
    let home = agent.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("Orders Web") && home.body.contains("Withdraw"), "{}", home.body);
    let forged = agent.post("/login/consents", &[("client_id", &app.client_id)]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(refresh(&server, &app, &refresh_token, None).await.status, 200, "nothing withdrawn");

    // The CLI lists it and withdraws it: the client's tokens for the user stop working.
    let cwd = server.db.dir.path();
    let url = server.db.url.clone();
    let listed = truxectl(cwd, &[], &["users", "consents", "ada@example.org", "--json", "--database-url", &url]);
    assert!(listed.status.success(), "{}", text(&listed));
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed["consents"][0]["client_id"], app.client_id);
    assert_eq!(listed["consents"][0]["client_name"], "Orders Web");
    assert_eq!(listed["consents"][0]["scope"], "email offline_access openid");
    let refused =
        truxectl(cwd, &[], &["users", "consents", &user_id, "--revoke", &app.client_id, "--database-url", &url]);
    assert!(!refused.status.success(), "asks first: {}", text(&refused));
    let withdrawn = truxectl(
        cwd,
        &[],
        &["users", "consents", &user_id, "--revoke", &app.client_id, "--yes", "--json", "--database-url", &url],
    );
    assert!(withdrawn.status.success(), "{}", text(&withdrawn));
    let withdrawn: Value = serde_json::from_slice(&withdrawn.stdout).expect("json");
    assert_eq!(withdrawn["consent_withdrawn"], true);
    assert_eq!(withdrawn["grants_revoked"], 1, "{withdrawn}");
    assert_eq!(introspect(&server, &app, &access).await, json!({ "active": false }));
    assert_eq!(introspect(&server, &app, &refresh_token).await, json!({ "active": false }));
    let table = truxectl(cwd, &[], &["users", "consents", &user_id, "--database-url", &url]);
    assert!(text(&table).contains("has not allowed any application"), "{}", text(&table));

    // Asked again next time; withdrawn from the account page this time.
    let code = authorize_code(&agent, &app, CALLBACK, "openid").await;
    let at = exchange(&server, &app, &code, CALLBACK).await.body["access_token"].as_str().expect("at").to_string();
    let home = agent.get("/").await;
    let done = agent.submit(&home, "Withdraw", &[]).await;
    assert_eq!((done.status, done.location()), (StatusCode::SEE_OTHER, "/"));
    assert!(!agent.get("/").await.body.contains("Withdraw"));
    assert_eq!(introspect(&server, &app, &at).await, json!({ "active": false }));
}

async fn logout_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, session_hash) = Agent::signed_in(&server, &user_id);
    let code = authorize_code(&agent, &app, CALLBACK, "openid").await;
    let id_token = exchange(&server, &app, &code, CALLBACK).await.body["id_token"].as_str().expect("id").to_string();
    let bye = "https://app.example.com/signed-out";

    // Discovery names the end-session endpoint.
    let (_, metadata) = server.get_json("/.well-known/openid-configuration").await;
    assert_eq!(metadata["end_session_endpoint"], format!("{ISSUER}/logout"));

    // Invalid requests: error pages, never a redirect.
    let bad = [
        (form(&[("id_token_hint", &id_token), ("post_logout_redirect_uri", "https://evil.example/")]), "unregistered"),
        (form(&[("id_token_hint", &id_token), ("post_logout_redirect_uri", &format!("{bye}/"))]), "trailing slash"),
        (form(&[("post_logout_redirect_uri", bye)]), "no client"),
        (form(&[("id_token_hint", "a.b.c"), ("post_logout_redirect_uri", bye)]), "garbage hint"),
        (form(&[("client_id", "cl_unknown"), ("post_logout_redirect_uri", bye)]), "unknown client"),
    ];
    for (query, context) in &bad {
        agent.get(&format!("/logout?{query}")).await.assert_error_page(context);
    }
    // A hint signed by another key, and one for another client than client_id says.
    let stranger = truxe_server::keys::SigningKey::generate(truxe_server::keys::Algorithm::RS256, 2048).expect("key");
    let forged = truxe_server::jwt::TokenKeys::new(&stranger)
        .expect("keys")
        .encode_id_token(&json!({ "iss": ISSUER, "sub": user_id, "aud": app.client_id, "exp": 1, "iat": 0 }))
        .expect("forged");
    agent.get(&format!("/logout?{}", form(&[("id_token_hint", &forged)]))).await.assert_error_page("foreign key");
    let other = spa(&server).await;
    let mismatch = form(&[("id_token_hint", &id_token), ("client_id", &other.client_id)]);
    agent.get(&format!("/logout?{mismatch}")).await.assert_error_page("client_id mismatch");

    // The real thing: an expired hint is fine; the user confirms; back to the app with state.
    let expired_hint = truxe_server::jwt::TokenKeys::new(test_key())
        .expect("keys")
        .encode_id_token(&json!({ "iss": ISSUER, "sub": user_id, "aud": app.client_id, "exp": 1, "iat": 0 }))
        .expect("hint");
    let query = form(&[("id_token_hint", &expired_hint), ("post_logout_redirect_uri", bye), ("state", "xyz 1")]);
    let confirm = agent.get(&format!("/logout?{query}")).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(confirm.body.contains("Orders Web") && confirm.body.contains("ada@example.org"), "{}", confirm.body);
    let no_csrf = agent.post("/logout", &[("post_logout_redirect_uri", bye), ("client_id", &app.client_id)]).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let tampered = agent.submit(&confirm, "Sign out", &[("post_logout_redirect_uri", "https://evil.example/")]).await;
    tampered.assert_error_page("tampered confirmation");
    let done = agent.submit(&confirm, "Sign out", &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    assert_eq!(done.location(), format!("{bye}?state=xyz+1"));
    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    let revoked: Option<i64> = sessions::table
        .filter(sessions::session_hash.eq(&session_hash))
        .select(sessions::revoked_at)
        .first(&mut conn)
        .expect("session row");
    assert!(revoked.is_some(), "the session ended");
    assert_eq!(agent.get("/").await.status, StatusCode::SEE_OTHER, "signed out");

    // client_id alone, without a redirect: "Signed out".
    agent.sign_in(&server, &user_id);
    let confirm = agent.get(&format!("/logout?{}", form(&[("client_id", &app.client_id)]))).await;
    let done = agent.submit(&confirm, "Sign out", &[]).await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(done.body.contains("Signed out"), "{}", done.body);
}

#[tokio::test]
async fn code_flow_discovery_lists_what_works() {
    let server = flow_server(Backend::Sqlite, &[]).await;
    let (status, metadata) = server.get_json("/.well-known/openid-configuration").await;
    assert_eq!(status, 200);
    for (member, path) in [
        ("authorization_endpoint", "/oauth-provider/authorize"),
        ("token_endpoint", "/oauth-provider/token"),
        ("userinfo_endpoint", "/oauth-provider/userinfo"),
        ("end_session_endpoint", "/logout"),
    ] {
        assert_eq!(metadata[member], format!("{ISSUER}{path}"), "{member}");
    }
    assert_eq!(metadata["response_types_supported"], json!(["code"]));
    assert_eq!(metadata["response_modes_supported"], json!(["query"]));
    assert_eq!(metadata["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(metadata["subject_types_supported"], json!(["public"]));
    assert_eq!(metadata["id_token_signing_alg_values_supported"], json!(["RS256"]));
    assert_eq!(metadata["grant_types_supported"], json!(["authorization_code", "refresh_token", "client_credentials"]));
    assert_eq!(metadata["authorization_response_iss_parameter_supported"], true);
    assert_eq!(metadata["request_uri_parameter_supported"], false);
    assert_eq!(metadata["prompt_values_supported"], json!(["none", "login", "consent"]));
    for claim in ["sub", "email", "email_verified", "name", "auth_time", "amr", "nonce", "at_hash"] {
        assert!(metadata["claims_supported"].as_array().expect("claims").contains(&json!(claim)), "{claim}");
    }
    let oauth = server.get_json("/.well-known/oauth-authorization-server").await.1;
    assert_eq!(oauth, metadata);
    // Every advertised endpoint answers on this server.
    for member in ["authorization_endpoint", "userinfo_endpoint", "end_session_endpoint"] {
        let path = metadata[member].as_str().expect("url").trim_start_matches(ISSUER).to_string();
        let response = server.client.get(server.url(&path)).send().await.expect("get");
        assert!(
            response.status().as_u16() != 404 && response.status().as_u16() < 500,
            "{member}: {}",
            response.status()
        );
    }
}
