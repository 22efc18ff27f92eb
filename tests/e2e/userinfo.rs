//! OIDC UserInfo: RFC 6750 challenges for missing, malformed, misplaced, expired and
//! insufficient tokens, and tokens that stopped being live.

use serde_json::json;
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
