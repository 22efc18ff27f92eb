//! Refresh tokens: rotation, reuse detection (the family revoked), the optional retry grace,
//! concurrent refreshes, expiry, and servers that turned refresh tokens off.

use serde_json::json;
use truxe_server::store::tokens::RefreshToken;
use truxe_server::store::unix_now;

use crate::on_both_backends;
use crate::support::Backend;
use crate::support::flow::*;
use crate::support::oauth::*;

on_both_backends! {
    async fn rotation_and_reuse(backend: Backend) {
        refresh_rotation_on(backend).await
    }
    async fn retry_within_grace(backend: Backend) {
        refresh_retry_within_grace_on(backend).await
    }
    async fn concurrent_refreshes(backend: Backend) {
        refresh_concurrent_on(backend).await
    }
    async fn for_a_disabled_or_deleted_user(backend: Backend) {
        inactive_user_on(backend).await
    }
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

/// A refresh for a user who was disabled or deleted since the sign-in is `invalid_grant`, and
/// the tokens already issued stop working with it.
async fn inactive_user_on(backend: Backend) {
    use truxe_server::model::user::UserStatus;
    use truxe_server::service::users as user_service;
    let server = flow_server(backend, &[]).await;
    let app = web_app(&server).await;
    let sign_in = |email: &'static str| {
        let (server, app) = (&server, &app);
        async move {
            let user_id = create_user(server, email);
            let (agent, _) = Agent::signed_in(server, &user_id);
            let code = authorize_code(&agent, app, CALLBACK, "openid offline_access").await;
            let answer = exchange(server, app, &code, CALLBACK).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            let token = |name: &str| answer.body[name].as_str().expect(name).to_string();
            (user_id, token("access_token"), token("refresh_token"))
        }
    };
    let (disabled, disabled_access, disabled_refresh) = sign_in("ada@example.org").await;
    let (deleted, deleted_access, deleted_refresh) = sign_in("grace@example.org").await;
    let (_, kept_access, kept_refresh) = sign_in("mary@example.org").await;

    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    user_service::set_status(&mut conn, &disabled, UserStatus::Disabled, "test", unix_now()).expect("disable");
    user_service::delete(&mut conn, &deleted, "test", unix_now()).expect("delete");

    for (refresh_token, access, context) in
        [(&disabled_refresh, &disabled_access, "disabled user"), (&deleted_refresh, &deleted_access, "deleted user")]
    {
        assert_grant_error(&refresh(&server, &app, refresh_token, None).await, "invalid_grant", context);
        assert_eq!(introspect(&server, &app, refresh_token).await, json!({ "active": false }), "{context}");
        assert_eq!(introspect(&server, &app, access).await, json!({ "active": false }), "{context}");
        assert_invalid_token(&userinfo_get(&server, Some(access)).await, "", context);
    }
    // Disabling or deleting a user revokes their grants (README "Signing in"), so the refresh
    // token is refused as revoked, not only as a disabled user's.
    let answer = refresh(&server, &app, &disabled_refresh, None).await;
    assert!(answer.body["error_description"].as_str().is_some_and(|d| d.contains("revoked")), "{}", answer.body);
    // Another user of the same client is untouched.
    assert_eq!(introspect(&server, &app, &kept_access).await["active"], true);
    assert_eq!(refresh(&server, &app, &kept_refresh, None).await.status, 200);
}
