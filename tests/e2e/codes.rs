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
    async fn expired_codes_are_purged(backend: Backend) {
        expired_codes_are_purged_on(backend).await
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
    assert_invalid_token(&userinfo_get(&server, Some(access_token)).await, "revoked", "userinfo after the replay");
    let grant = &grants_of(&server, &app.client_id)[0];
    assert!(grant.revoked_at.is_some(), "{grant:?}");
    let events = audit_actions(&server).await;
    assert_eq!(events.iter().filter(|(action, _, _)| action == "authorization_code.reused").count(), 1, "{events:?}");
    // A third presentation: still refused, nothing more to revoke.
    assert_grant_error(&exchange(&server, &app, &code, CALLBACK).await, "invalid_grant", "third redemption");
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
        ("http://127.0.0.1:9999/cb", "the other registered URI on another loopback port"),
    ] {
        assert_grant_error(&exchange(&server, &app, &code, uri).await, "invalid_grant", context);
    }
    let missing_uri =
        token(&server, &app, &[("grant_type", "authorization_code"), ("code", &code), ("code_verifier", VERIFIER)])
            .await;
    // RFC 6749 §4.1.3: the authorization request carried redirect_uri, so the token request must.
    assert_grant_error(&missing_uri, "invalid_request", "redirect_uri left out of the token request");
    assert!(
        missing_uri.body["error_description"].as_str().is_some_and(|d| d.contains("redirect_uri")),
        "{}",
        missing_uri.body
    );
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
        client_id: app.client_id.as_str().into(),
        user_id: user_id.as_str().into(),
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
    assert_oauth_error(&repeated, 400, "invalid_request", "code repeated");

    // A code whose authorization request had no redirect_uri: the token request may leave it
    // out, but one it names must still be the code's.
    let implicit_uri = "implicituri0123456789abcdefghijklmnopqrstu";
    let mut unnamed = row(implicit_uri, now + 600, None);
    unnamed.redirect_uri_given = false;
    grant_store::insert_code(&mut conn, &unnamed).expect("insert");
    let named_wrong = token(
        &server,
        &app,
        &[("grant_type", "authorization_code"), ("code", implicit_uri), ("redirect_uri", "http://127.0.0.1:8080/cb")],
    )
    .await;
    assert_grant_error(&named_wrong, "invalid_grant", "another redirect_uri than the code's");
    let unnamed_answer = token(&server, &app, &[("grant_type", "authorization_code"), ("code", implicit_uri)]).await;
    assert_eq!(unnamed_answer.status, 200, "{}", unnamed_answer.body);
}

/// The housekeeping purge (`grant_store::delete_expired_codes`, hourly, a day after expiry):
/// it drops only codes long expired, and keeps what replay detection needs.
async fn expired_codes_are_purged_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let redeemed = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    assert_eq!(exchange(&server, &app, &redeemed, CALLBACK).await.status, 200);
    let open = authorize_code(&agent, &app, CALLBACK, "openid").await;

    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    let now = unix_now();
    let aged = |code: &str, expires_at: i64| AuthorizationCode {
        code_hash: truxe_server::service::authorize::token_hash(code),
        expires_at,
        created_at: expires_at - 600,
        ..code_row(&server, &open)
    };
    let long_expired = "longexpiredcode0123456789abcdefghijklmnopq";
    let just_expired = "justexpiredcode0123456789abcdefghijklmnopq";
    grant_store::insert_code(&mut conn, &aged(long_expired, now - 2 * 86_400)).expect("insert");
    grant_store::insert_code(&mut conn, &aged(just_expired, now - 60)).expect("insert");

    assert_eq!(grant_store::delete_expired_codes(&mut conn, now - 86_400).expect("purge"), 1);
    let find = |conn: &mut _, code: &str| {
        grant_store::find_code(conn, &truxe_server::service::authorize::token_hash(code)).expect("query")
    };
    assert!(find(&mut conn, long_expired).is_none(), "a code expired two days ago is gone");
    for code in [just_expired, &open, &redeemed] {
        assert!(find(&mut conn, code).is_some(), "kept: {code}");
    }
    assert_eq!(grant_store::delete_expired_codes(&mut conn, now - 86_400).expect("purge"), 0, "nothing more");

    for code in [long_expired, just_expired] {
        assert_grant_error(&exchange(&server, &app, code, CALLBACK).await, "invalid_grant", code);
    }
    assert_eq!(exchange(&server, &app, &open, CALLBACK).await.status, 200, "a live code survives the purge");
    // The redeemed code's row is still there, so its replay still revokes its grant.
    assert_grant_error(&exchange(&server, &app, &redeemed, CALLBACK).await, "invalid_grant", "replay after purge");
    let grant_id = code_row(&server, &redeemed).grant_id.expect("grant");
    let grant = grants_of(&server, &app.client_id).into_iter().find(|g| g.grant_id == grant_id).expect("grant");
    assert!(grant.revoked_at.is_some(), "{grant:?}");
}
