//! OIDC UserInfo: RFC 6750 challenges for missing, malformed, misplaced, expired and
//! insufficient tokens, and tokens that stopped being live.

use serde_json::{Value, json};
use truxe_server::service::users::{self as user_service};
use truxe_server::store::unix_now;

use crate::on_both_backends;
use crate::support::Backend;
use crate::support::flow::*;
use crate::support::oauth::*;
use crate::support::test_key;

on_both_backends! {
    async fn errors(backend: Backend) {
        userinfo_errors_on(backend).await
    }
    async fn a_token_revoked_through_revoke(backend: Backend) {
        revoked_on(backend).await
    }
    async fn after_consent_is_withdrawn(backend: Backend) {
        withdrawn_consent_on(backend).await
    }
    async fn a_suspended_clients_token(backend: Backend) {
        suspended_client_on(backend).await
    }
    async fn a_deleted_clients_token(backend: Backend) {
        deleted_client_on(backend).await
    }
}

const INSUFFICIENT_SCOPE: &str = r#"Bearer realm="truxe", error="insufficient_scope", error_description="the openid scope is required", scope="openid""#;

#[track_caller]
fn assert_claims(answer: &(u16, reqwest::header::HeaderMap, Value), user_id: &str, context: &str) {
    assert_eq!(answer.0, 200, "{context}: {}", challenge(&answer.1));
    assert_eq!(answer.2, json!({ "sub": user_id, "email": "ada@example.org", "email_verified": true }), "{context}");
}

async fn userinfo_errors_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);

    let (status, headers, _) = userinfo_get(&server, None).await;
    assert_eq!((status, challenge(&headers).as_str()), (401, r#"Bearer realm="truxe""#), "no token: no error code");
    let response = server
        .client
        .get(server.url("/oauth-provider/userinfo"))
        .header("Authorization", "Basic YTpi")
        .send()
        .await
        .expect("get");
    assert_eq!(
        (response.status().as_u16(), challenge(response.headers()).as_str()),
        (401, r#"Bearer realm="truxe""#),
        "no bearer credentials: the bare challenge"
    );
    assert_invalid_token(&userinfo_get(&server, Some("garbage")).await, "invalid", "garbage");

    let code = authorize_code(&agent, &app, CALLBACK, "openid email").await;
    let token_answer = exchange(&server, &app, &code, CALLBACK).await;
    let access_token = token_answer.body["access_token"].as_str().expect("at");

    // Not in the query (RFC 6750 §2.3 is not offered), not twice.
    let invalid_request = r#"Bearer realm="truxe", error="invalid_request", error_description=""#;
    let query = server
        .client
        .get(server.url(&format!("/oauth-provider/userinfo?access_token={access_token}")))
        .send()
        .await
        .expect("get");
    assert_eq!(query.status().as_u16(), 400);
    let www = challenge(query.headers());
    assert!(www.starts_with(invalid_request) && www.contains("not the URL"), "{www}");
    let both = post_form(
        &server,
        "/oauth-provider/userinfo",
        Some(&format!("Bearer {access_token}")),
        form(&[("access_token", access_token)]),
    )
    .await;
    assert_eq!(both.status, 400);
    assert!(challenge(&both.headers).starts_with(invalid_request), "{}", challenge(&both.headers));

    // A machine token has no openid scope: insufficient_scope.
    let machine = machine_client(&server, "client_secret_basic").await;
    let machine_token = crate::support::oauth::token_for(&server, &machine, &[]).await;
    let (status, headers, _) = userinfo_get(&server, Some(&machine_token)).await;
    assert_eq!((status, challenge(&headers).as_str()), (403, INSUFFICIENT_SCOPE), "machine token");

    // A token without openid (plain OAuth): refused the same way.
    let code = authorize_code(&agent, &app, CALLBACK, "orders:read").await;
    let oauth_only = exchange(&server, &app, &code, CALLBACK).await;
    assert!(oauth_only.body.get("id_token").is_none());
    assert!(oauth_only.body.get("refresh_token").is_some(), "plain OAuth: refresh per client registration");
    let (status, headers, _) = userinfo_get(&server, Some(oauth_only.body["access_token"].as_str().expect("at"))).await;
    assert_eq!((status, challenge(&headers).as_str()), (403, INSUFFICIENT_SCOPE), "plain OAuth token");

    // An expired token.
    let expired = crate::support::oauth::forge(
        &crate::support::test_key_pem(),
        test_key().kid(),
        json!({
            "iss": ISSUER, "sub": user_id, "aud": ISSUER, "exp": unix_now() - 5, "iat": unix_now() - 905,
            "jti": "0123456789abcdef0123456789abcdef", "client_id": app.client_id, "scope": "openid",
        }),
    );
    assert_invalid_token(&userinfo_get(&server, Some(&expired)).await, "expired", "expired");

    // A disabled user's tokens stop working: disabling revoked the user's grants.
    assert_eq!(userinfo_get(&server, Some(access_token)).await.0, 200);
    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    user_service::set_status(&mut conn, &user_id, truxe_server::model::user::UserStatus::Disabled, "test", unix_now())
        .expect("disable");
    assert_invalid_token(&userinfo_get(&server, Some(access_token)).await, "revoked", "disabled user");
}

/// An access token revoked through `/revoke` (by `jti`) is refused at once; the grant's other
/// tokens live on until the refresh token is revoked, which takes the whole grant.
async fn revoked_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let (access, refresh_token) = sign_in_tokens(&server, &agent, &app, "openid email offline_access").await;
    assert_claims(&userinfo_get(&server, Some(&access)).await, &user_id, "before");

    let answer = revoke(&server, &app, &access, Some("access_token")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_invalid_token(&userinfo_get(&server, Some(&access)).await, "revoked", "revoked access token");
    let posted = post_form(&server, "/oauth-provider/userinfo", None, form(&[("access_token", &access)])).await;
    assert_invalid_token(&(posted.status, posted.headers, posted.body), "revoked", "revoked, posted");

    let refreshed = refresh(&server, &app, &refresh_token, None).await;
    assert_eq!(refreshed.status, 200, "an access token's revocation leaves its grant: {}", refreshed.body);
    let new_access = refreshed.body["access_token"].as_str().expect("at").to_string();
    let new_refresh = refreshed.body["refresh_token"].as_str().expect("rt").to_string();
    assert_claims(&userinfo_get(&server, Some(&new_access)).await, &user_id, "the grant's new access token");

    let answer = revoke(&server, &app, &new_refresh, None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_invalid_token(&userinfo_get(&server, Some(&new_access)).await, "revoked", "grant revoked");
}

/// Withdrawing consent on the account page revokes the application's tokens for the user.
async fn withdrawn_consent_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let (access, refresh_token) = sign_in_tokens(&server, &agent, &app, "openid email offline_access").await;
    let (second_access, _) = sign_in_tokens(&server, &agent, &app, "openid email offline_access").await;
    assert_claims(&userinfo_get(&server, Some(&access)).await, &user_id, "before");

    let home = agent.get("/").await;
    let done = agent.submit(&home, "Withdraw", &[]).await;
    assert_eq!((done.status, done.location()), (reqwest::StatusCode::SEE_OTHER, "/"), "{done:?}");
    for (token, context) in [(&access, "first sign-in"), (&second_access, "second sign-in")] {
        assert_invalid_token(&userinfo_get(&server, Some(token)).await, "revoked", context);
    }
    assert_grant_error(
        &refresh(&server, &app, &refresh_token, None).await,
        "invalid_grant",
        "refresh after withdrawal",
    );
}

/// A suspended client's tokens are refused while it is suspended (`PATCH … {"status":
/// "suspended"}` through the admin API), and work again once it is active.
async fn suspended_client_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let (access, refresh_token) = sign_in_tokens(&server, &agent, &app, "openid email offline_access").await;
    assert_claims(&userinfo_get(&server, Some(&access)).await, &user_id, "before");

    set_client_status(&server, &app.client_id, "suspended").await;
    assert_invalid_token(&userinfo_get(&server, Some(&access)).await, "client", "suspended client");
    let refreshed = refresh(&server, &app, &refresh_token, None).await;
    assert_eq!((refreshed.status, &refreshed.body["error"]), (401, &json!("invalid_client")), "{}", refreshed.body);
    assert_eq!(challenge(&refreshed.headers), CLIENT_CHALLENGE);

    set_client_status(&server, &app.client_id, "active").await;
    assert_claims(&userinfo_get(&server, Some(&access)).await, &user_id, "active again");
}

/// A deleted client's access tokens: live (the client introspects them) until the deletion,
/// refused at userinfo afterwards; the client itself can no longer authenticate.
async fn deleted_client_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let (access, refresh_token) = sign_in_tokens(&server, &agent, &app, "openid email offline_access").await;
    let active = introspect(&server, &app, &access).await;
    assert_eq!(
        (active["active"].clone(), active["client_id"].clone()),
        (json!(true), json!(app.client_id)),
        "{active}"
    );
    assert_claims(&userinfo_get(&server, Some(&access)).await, &user_id, "before");

    delete_client(&server, &app.client_id).await;
    assert_invalid_token(&userinfo_get(&server, Some(&access)).await, "", "deleted client");
    let (authorization, mut pairs) = app.credentials();
    pairs.push(("token", &access));
    let answer = post_form(&server, "/oauth-provider/introspect", authorization.as_deref(), form(&pairs)).await;
    assert_oauth_error(&answer, 401, "invalid_client", "introspection by the deleted client");
    let refreshed = refresh(&server, &app, &refresh_token, None).await;
    assert_eq!((refreshed.status, &refreshed.body["error"]), (401, &json!("invalid_client")), "{}", refreshed.body);
}
