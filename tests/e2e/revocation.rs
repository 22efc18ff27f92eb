//! Revocation (RFC 7009): only the client a token was issued to may revoke it; a refresh token
//! revokes its whole grant; unknown tokens and any hint are fine.

use diesel::prelude::*;
use serde_json::json;

use crate::on_both_backends;
use crate::support::flow::{
    Agent, CALLBACK, assert_grant_error, authorize_code, create_user, exchange, family, flow_server, grants_of,
    payload, refresh, spa,
};
use crate::support::oauth::*;
use crate::support::{Backend, test_key};

on_both_backends! {
    async fn client_credentials_tokens(backend: Backend) {
        revocation_on(backend).await
    }
    async fn a_refresh_token_revokes_its_grant(backend: Backend) {
        user_grants_on(backend).await
    }
}

async fn revocation_on(backend: Backend) {
    let server = token_server(backend, &[]).await;
    let owner = machine_client(&server, "client_secret_basic").await;
    let other = machine_client(&server, "client_secret_post").await;
    let token = token_for(&server, &owner, &[]).await;
    let kept = token_for(&server, &owner, &[]).await;

    // Another client may not revoke it: refused, and the token stays active.
    let answer = post_form(
        &server,
        "/oauth-provider/revoke",
        None,
        form(&[("token", &token), ("client_id", &other.client_id), ("client_secret", &other.secret)]),
    )
    .await;
    assert_oauth_error(&answer, 400, "unauthorized_client", "another client's token");
    assert_eq!(introspect(&server, &owner, &token).await["active"], true, "still active");

    // The owner revokes it: inactive at once, for everyone; its other token is untouched.
    let owner_auth = basic(&owner.client_id, &owner.secret);
    let answer = post_form(
        &server,
        "/oauth-provider/revoke",
        Some(&owner_auth),
        form(&[("token", &token), ("token_type_hint", "access_token")]),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.text.is_empty());
    assert_eq!(introspect(&server, &owner, &token).await, json!({ "active": false }));
    assert_eq!(introspect(&server, &owner, &kept).await["active"], true);

    // Idempotent; unknown, malformed and expired tokens and any hint get 200 too.
    let expired = forge(
        test_key().private_pem().secret(),
        test_key().kid(),
        json!({
            "iss": ISSUER, "sub": owner.client_id, "aud": ISSUER, "exp": now() - 10, "iat": now() - 910,
            "jti": "fedcba9876543210fedcba9876543210", "client_id": owner.client_id,
        }),
    );
    for (token, hint) in [
        (token.as_str(), "access_token"),
        ("unknown-token", "access_token"),
        ("rt_opaque", "refresh_token"),
        ("a.b.c", "something_else"),
        (&expired, ""),
    ] {
        let answer = post_form(
            &server,
            "/oauth-provider/revoke",
            Some(&owner_auth),
            form(&[("token", token), ("token_type_hint", hint)]),
        )
        .await;
        assert_eq!(answer.status, 200, "{token:.20} {hint}: {}", answer.text);
    }

    // Errors.
    let answer = post_form(&server, "/oauth-provider/revoke", Some(&owner_auth), "").await;
    assert_oauth_error(&answer, 400, "invalid_request", "token missing");
    let answer = post_form(&server, "/oauth-provider/revoke", None, form(&[("token", &kept)])).await;
    assert_oauth_error(&answer, 401, "invalid_client", "no client authentication");
    let answer = post_form(
        &server,
        "/oauth-provider/revoke",
        Some(&basic(&owner.client_id, "cs_wrong")),
        form(&[("token", &kept)]),
    )
    .await;
    assert_oauth_error(&answer, 401, "invalid_client", "wrong secret");
    assert_eq!(introspect(&server, &owner, &kept).await["active"], true);

    // One revocation recorded, one audit event.
    let events = audit_actions(&server).await;
    assert_eq!(events.iter().filter(|(action, _, _)| action == "token.revoked").count(), 1, "{events:?}");
    use truxe_server::store::schema::oauth_tokens as t;
    let config = crate::support::config_from(&[("DATABASE_URL", &server.db.url)], &server.db.dir);
    let pool = truxe_server::store::connect(&config.database).expect("connect");
    let mut conn = pool.get().expect("connection");
    let rows: Vec<(String, String, Option<i64>, i64)> =
        t::table.select((t::token_type, t::client_id, t::revoked_at, t::expires_at)).load(&mut conn).expect("rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("access_token", owner.client_id.as_str()));
    assert!(rows[0].2.is_some() && rows[0].3 > now());
}

/// A person's tokens: revoking a refresh token (RFC 7009 §2.1) revokes its grant, every refresh
/// and access token of that sign-in; only the client they were issued to may, public clients
/// included.
async fn user_grants_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = crate::support::flow::web_app(&server).await;
    let api = machine_client(&server, "client_secret_basic").await;
    let (agent, _) = Agent::signed_in(&server, &user_id);

    let code = authorize_code(&agent, &app, CALLBACK, "openid email offline_access").await;
    let first = exchange(&server, &app, &code, CALLBACK).await;
    let access1 = first.body["access_token"].as_str().expect("at").to_string();
    let rt1 = first.body["refresh_token"].as_str().expect("rt").to_string();
    let second = refresh(&server, &app, &rt1, None).await;
    let access2 = second.body["access_token"].as_str().expect("at").to_string();
    let rt2 = second.body["refresh_token"].as_str().expect("rt").to_string();
    // A sign-in kept apart: revoking the first grant leaves it alone.
    let code = authorize_code(&agent, &app, CALLBACK, "openid email offline_access").await;
    let kept = exchange(&server, &app, &code, CALLBACK).await;
    let kept_access = kept.body["access_token"].as_str().expect("at").to_string();

    // Another client may revoke neither the refresh token nor the access token.
    for (token, hint) in [(&rt2, "refresh_token"), (&access2, "access_token")] {
        let answer = revoke(&server, &api, token, Some(hint)).await;
        assert_oauth_error(&answer, 400, "unauthorized_client", &format!("another client, {hint}"));
        assert_eq!(introspect(&server, &app, token).await["active"], true, "{hint} still active");
    }

    // The owner revokes the newest refresh token: the whole grant goes.
    let answer = revoke(&server, &app, &rt2, Some("refresh_token")).await;
    assert_eq!((answer.status, answer.text.as_str()), (200, ""), "{}", answer.text);
    assert_grant_error(&refresh(&server, &app, &rt2, None).await, "invalid_grant", "revoked refresh token");
    for (token, context) in [(&access1, "first access token"), (&access2, "second access token"), (&rt2, "refresh")] {
        assert_eq!(introspect(&server, &app, token).await, json!({ "active": false }), "{context}");
    }
    let grants = grants_of(&server, &app.client_id);
    assert_eq!(grants.len(), 2, "{grants:?}");
    let gid = payload(&access1)["gid"].as_str().expect("gid").to_string();
    let (revoked, other): (Vec<_>, Vec<_>) = grants.iter().partition(|g| g.grant_id == gid);
    assert!(revoked[0].revoked_at.is_some() && other[0].revoked_at.is_none(), "{grants:?}");
    let rows = family(&server, &gid);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|row| row.revoked_at.is_some()), "{rows:?}");
    assert_eq!(introspect(&server, &app, &kept_access).await["active"], true, "the other sign-in");
    // Again: idempotent, and recorded once.
    let again = revoke(&server, &app, &rt2, Some("refresh_token")).await;
    assert_eq!(again.status, 200, "{}", again.text);
    let events = audit_actions(&server).await;
    let revoked: Vec<_> = events.iter().filter(|(action, _, _)| action == "token.revoked").collect();
    assert_eq!(revoked.len(), 1, "{events:?}");
    let details: serde_json::Value = serde_json::from_str(&revoked[0].2).expect("json");
    assert_eq!(details["gid"], gid.as_str());
    assert_eq!(details["token_type"], "refresh_token");

    // A public client revokes its own refresh token with its client_id alone.
    let public = spa(&server).await;
    let redirect = "http://127.0.0.1:5173/callback";
    let code = authorize_code(&agent, &public, redirect, "openid offline_access").await;
    let tokens = exchange(&server, &public, &code, redirect).await;
    let public_rt = tokens.body["refresh_token"].as_str().expect("rt");
    let answer = revoke(&server, &public, public_rt, None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_grant_error(&refresh(&server, &public, public_rt, None).await, "invalid_grant", "public client's revoked");
}
