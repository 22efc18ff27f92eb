//! Authorization codes at the token endpoint: single use (a replay revokes what the first
//! redemption issued), exactly one winner of concurrent redemptions, and every bad exchange
//! (verifier, redirect URI, client, expiry, malformed codes).

use serde_json::json;
use truxe_server::oauth::pkce;
use truxe_server::store::grants::{self as grant_store, AuthorizationCode};
use truxe_server::store::unix_now;

use crate::on_both_backends;
use crate::support::Backend;
use crate::support::flow::*;
use crate::support::oauth::*;

on_both_backends! {
    async fn single_use(backend: Backend) {
        single_use_codes_on(backend).await
    }
    async fn concurrent_redemption_exactly_one_wins(backend: Backend) {
        concurrent_redemption_on(backend).await
    }
    async fn bad_exchanges(backend: Backend) {
        bad_exchanges_on(backend).await
    }
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
