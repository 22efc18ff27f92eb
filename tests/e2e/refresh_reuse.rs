//! Refresh tokens under attack and under changed policy (RFC 9700 §4.14, RFC 6749 §6): a rotated
//! token presented again revokes the family (grace 0 by default); with a grace window a stolen
//! token replayed inside it cannot take the family over, in either order; a refresh grants only
//! what the client may have now, and no family outlives `REFRESH_TOKEN_MAX_AGE`.

use diesel::prelude::*;
use serde_json::{Value, json};
use truxe_server::store::schema::{oauth_grants, oauth_tokens};
use truxe_server::store::unix_now;

use crate::on_both_backends;
use crate::support::flow::*;
use crate::support::oauth::*;
use crate::support::{ADMIN_TOKEN, Backend, TestServer};

/// A signed-in user's first token pair from `app`: (access token, refresh token).
async fn first_pair(server: &TestServer, app: &Registered, scope: &str) -> (String, String) {
    let user_id = create_user(server, "ada@example.org");
    let (agent, _) = Agent::signed_in(server, &user_id);
    sign_in_tokens(server, &agent, app, scope).await
}

fn pair(answer: &TokenAnswer) -> (String, String) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    (
        answer.body["access_token"].as_str().expect("access token").to_string(),
        answer.body["refresh_token"].as_str().expect("refresh token").to_string(),
    )
}

/// Every refresh-token row of the server: (revoked, rotated) per row, and whether every grant
/// is revoked.
fn family_state(server: &TestServer) -> (Vec<(bool, bool)>, bool) {
    let pool = pool(server);
    let mut conn = pool.get().expect("connection");
    let rows: Vec<(Option<i64>, Option<i64>)> = oauth_tokens::table
        .filter(oauth_tokens::token_type.eq("refresh_token"))
        .select((oauth_tokens::revoked_at, oauth_tokens::rotated_at))
        .load(&mut conn)
        .expect("refresh tokens");
    let grants: Vec<Option<i64>> =
        oauth_grants::table.select(oauth_grants::revoked_at).load(&mut conn).expect("grants");
    assert_eq!(grants.len(), 1, "one sign-in, one grant");
    (
        rows.into_iter().map(|(revoked, rotated)| (revoked.is_some(), rotated.is_some())).collect(),
        grants.iter().all(Option::is_some),
    )
}

#[track_caller]
fn assert_reused(answer: &TokenAnswer, context: &str) {
    assert_grant_error(answer, "invalid_grant", context);
    let description = answer.body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains("family is revoked") || description.contains("revoked"), "{context}: {description}");
}

async fn assert_inactive(server: &TestServer, app: &Registered, token: &str, context: &str) {
    let answer = introspect(server, app, token).await;
    assert_eq!(answer, json!({ "active": false }), "{context}");
}

on_both_backends! {
    async fn refresh_replay_without_grace_revokes_the_family(backend: Backend) {
        replay_without_grace_on(backend).await;
    }
    async fn refresh_stolen_token_attacker_first_within_grace(backend: Backend) {
        attacker_first_on(backend).await;
    }
    async fn refresh_stolen_token_client_first_within_grace(backend: Backend) {
        client_first_on(backend).await;
    }
    async fn refresh_follows_the_clients_current_scopes(backend: Backend) {
        narrowed_scopes_on(backend).await;
    }
    async fn refresh_family_ends_at_its_maximum_age(backend: Backend) {
        family_max_age_on(backend).await;
    }
}

async fn replay_without_grace_on(backend: Backend) {
    // The default: TRUXE_REFRESH_REUSE_GRACE is 0.
    let server = flow_server(backend, &[]).await;
    let app = web_app(&server).await;
    let (_, rt0) = first_pair(&server, &app, "openid offline_access").await;
    let (at1, rt1) = pair(&refresh(&server, &app, &rt0, None).await);
    // Presented again at once (no grace): a replay.
    assert_reused(&refresh(&server, &app, &rt0, None).await, "rt0 replayed");
    assert_reused(&refresh(&server, &app, &rt1, None).await, "rt1 after the replay");
    assert_inactive(&server, &app, &at1, "the successor's access token").await;
    let (rows, grant_revoked) = family_state(&server);
    assert!(grant_revoked, "the grant is revoked");
    assert!(rows.iter().all(|(revoked, _)| *revoked), "every refresh token of the family is revoked: {rows:?}");
}

async fn attacker_first_on(backend: Backend) {
    let server = flow_server(backend, &[("TRUXE_REFRESH_REUSE_GRACE", "10s")]).await;
    let app = web_app(&server).await;
    let (_, rt0) = first_pair(&server, &app, "openid offline_access").await;
    // The attacker, holding a copy of rt0, refreshes first.
    let (attacker_at, attacker_rt) = pair(&refresh(&server, &app, &rt0, None).await);
    // The client presents rt0 within the grace: taken for a retry, the attacker's refresh token
    // is replaced by the client's (its access token lives until the family is revoked).
    let (client_at, client_rt) = pair(&refresh(&server, &app, &rt0, None).await);
    assert_inactive(&server, &app, &attacker_rt, "the attacker's replaced refresh token").await;
    assert_eq!(introspect(&server, &app, &client_at).await["active"], true);
    // The attacker's replaced token presented again is reuse evidence: the family is revoked.
    assert_reused(&refresh(&server, &app, &attacker_rt, None).await, "the attacker's replaced token");
    assert_reused(&refresh(&server, &app, &client_rt, None).await, "after the family was revoked");
    assert_inactive(&server, &app, &client_at, "after the family was revoked").await;
    assert_inactive(&server, &app, &attacker_at, "the attacker's access token, with the family").await;
    let (rows, grant_revoked) = family_state(&server);
    assert!(grant_revoked);
    assert!(rows.iter().all(|(revoked, _)| *revoked), "{rows:?}");
}

async fn client_first_on(backend: Backend) {
    let server = flow_server(backend, &[("TRUXE_REFRESH_REUSE_GRACE", "10s")]).await;
    let app = web_app(&server).await;
    let (_, rt0) = first_pair(&server, &app, "openid offline_access").await;
    // The client refreshes; an attacker replays its stolen rt0 within the grace and gets the
    // retry's pair, which replaces the client's.
    let (_, client_rt) = pair(&refresh(&server, &app, &rt0, None).await);
    let (attacker_at, attacker_rt) = pair(&refresh(&server, &app, &rt0, None).await);
    // The legitimate client presents its (replaced) token: reuse, and the attacker's pair dies
    // with the family instead of living on.
    assert_reused(&refresh(&server, &app, &client_rt, None).await, "the client's replaced token");
    assert_reused(&refresh(&server, &app, &attacker_rt, None).await, "the attacker's token after the reuse");
    assert_inactive(&server, &app, &attacker_at, "the attacker's access token").await;
    let (rows, grant_revoked) = family_state(&server);
    assert!(grant_revoked);
    assert_eq!(rows.len(), 3, "rt0, the client's child and the attacker's: {rows:?}");
    assert!(rows.iter().all(|(revoked, _)| *revoked), "{rows:?}");
}

async fn narrowed_scopes_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let app = web_app(&server).await;
    let (_, rt0) = first_pair(&server, &app, "openid email offline_access orders:read").await;
    // An administrator narrows the client.
    let response = server
        .client
        .patch(server.url(&format!("/oauth-provider/clients/{}", app.client_id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "allowed_scopes": ["openid", "offline_access"] }))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status().as_u16(), 200);
    let answer = refresh(&server, &app, &rt0, None).await;
    let (at1, rt1) = pair(&answer);
    assert_eq!(answer.body["scope"], "offline_access openid", "{}", answer.body);
    let claims = payload(&at1);
    assert_eq!(claims["scope"], "offline_access openid");
    let id_token = answer.body["id_token"].as_str().expect("id token");
    assert!(payload(id_token).get("email").is_none(), "no email claim without the email scope");
    // Asking for a scope the client lost is refused, never granted.
    let answer = refresh(&server, &app, &rt1, Some("openid email")).await;
    assert_grant_error(&answer, "invalid_scope", "a scope the client may no longer have");
    let (_, rt2) = pair(&refresh(&server, &app, &rt1, None).await);
    let refreshed: Value = introspect(&server, &app, &rt2).await;
    assert_eq!(refreshed["active"], true, "{refreshed}");
    assert_eq!(refreshed["scope"], "offline_access openid", "the refresh token itself was narrowed");

    // Withdrawing offline_access ends an OpenID Connect grant's refreshing (OIDC Core §11).
    let response = server
        .client
        .patch(server.url(&format!("/oauth-provider/clients/{}", app.client_id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "allowed_scopes": ["openid"] }))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status().as_u16(), 200);
    let answer = refresh(&server, &app, &rt2, None).await;
    assert_grant_error(&answer, "invalid_grant", "offline_access withdrawn");
    assert!(
        answer.body["error_description"].as_str().unwrap_or_default().contains("offline_access"),
        "{}",
        answer.body
    );
}

async fn family_max_age_on(backend: Backend) {
    let server = flow_server(backend, &[("REFRESH_TOKEN_MAX_AGE", "1h")]).await;
    let app = web_app(&server).await;
    let (_, rt0) = first_pair(&server, &app, "openid offline_access").await;
    let now = unix_now();
    // Each new refresh token lives at most until the family's end, not REFRESH_TOKEN_EXPIRY (7d).
    let (_, rt1) = pair(&refresh(&server, &app, &rt0, None).await);
    let info = introspect(&server, &app, &rt1).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["token_type"], "refresh_token");
    let exp = info["exp"].as_i64().expect("exp");
    assert!(exp <= now + 3600 + 5 && exp >= now + 3600 - 60, "exp {exp} is the family's end, not 7 days");
    // Rotation does not reset the clock: an authorization older than an hour cannot refresh.
    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    diesel::update(oauth_grants::table).set(oauth_grants::created_at.eq(now - 3601)).execute(&mut conn).expect("age");
    let answer = refresh(&server, &app, &rt1, None).await;
    assert_grant_error(&answer, "invalid_grant", "an expired family");
    assert!(
        answer.body["error_description"].as_str().unwrap_or_default().contains("REFRESH_TOKEN_MAX_AGE"),
        "{}",
        answer.body
    );
    assert_inactive(&server, &app, &rt1, "an expired family's refresh token").await;
}
