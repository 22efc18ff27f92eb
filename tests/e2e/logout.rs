//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) at `/logout`.

use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::json;
use truxe_server::store::schema::sessions;

use crate::on_both_backends;
use crate::support::Backend;
use crate::support::flow::*;
use crate::support::oauth::*;
use crate::support::test_key;

on_both_backends! {
    async fn rp_initiated_logout(backend: Backend) {
        logout_on(backend).await
    }
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
    const REFUSED: &str = "Cannot sign out from this application";
    const UNREGISTERED: &str = "The post_logout_redirect_uri is not registered for this application.";
    const NOT_OURS: &str = "The id_token_hint is not an ID token issued by this server.";
    const UNKNOWN: &str = "The application asking to sign you out is unknown or disabled.";
    let stranger = truxe_server::keys::SigningKey::generate(truxe_server::keys::Algorithm::RS256, 2048).expect("key");
    let foreign_hint = truxe_server::jwt::TokenKeys::new(&stranger)
        .expect("keys")
        .encode_id_token(&json!({ "iss": ISSUER, "sub": user_id, "aud": app.client_id, "exp": 1, "iat": 0 }))
        .expect("forged");
    let other = spa(&server).await;
    let suspended = web_app(&server).await;
    set_client_status(&server, &suspended.client_id, "suspended").await;
    let long_state = "s".repeat(9 * 1024);
    let bad = [
        (
            form(&[("id_token_hint", &id_token), ("post_logout_redirect_uri", "https://evil.example/")]),
            UNREGISTERED,
            "unregistered",
        ),
        (
            form(&[("id_token_hint", &id_token), ("post_logout_redirect_uri", &format!("{bye}/"))]),
            UNREGISTERED,
            "trailing slash",
        ),
        (
            form(&[("post_logout_redirect_uri", bye)]),
            "A post_logout_redirect_uri needs the client_id or an id_token_hint.",
            "no client",
        ),
        (form(&[("id_token_hint", "a.b.c"), ("post_logout_redirect_uri", bye)]), NOT_OURS, "garbage hint"),
        (form(&[("id_token_hint", &foreign_hint)]), NOT_OURS, "a hint signed by another key"),
        (form(&[("client_id", "cl_unknown"), ("post_logout_redirect_uri", bye)]), UNKNOWN, "unknown client"),
        (form(&[("client_id", &suspended.client_id)]), UNKNOWN, "suspended client"),
        (
            form(&[("id_token_hint", &id_token), ("client_id", &other.client_id)]),
            "The client_id does not match the id_token_hint.",
            "a hint for another client than client_id",
        ),
        (
            form(&[("client_id", &app.client_id), ("state", &long_state)]),
            "The sign-out request is too long.",
            "too long",
        ),
        (
            form(&[("client_id", &app.client_id), ("state", "a\u{0}b")]),
            "The sign-out request holds characters that are not allowed.",
            "a NUL in state",
        ),
        (
            form(&[("client_id", &app.client_id), ("state", "\u{1F600}")]),
            "The sign-out request holds characters that are not allowed.",
            "an emoji in state",
        ),
        (
            form(&[("client_id", &app.client_id), ("post_logout_redirect_uri", "https://app.example.com/\r\nx")]),
            "The sign-out request holds characters that are not allowed.",
            "a line break in the redirect URI",
        ),
    ];
    for (query, message, context) in &bad {
        agent.get(&format!("/logout?{query}")).await.assert_error_page_says(REFUSED, message, context);
    }

    // The real thing: an expired hint is fine; the user confirms; back to the app with state.
    let expired_hint = truxe_server::jwt::TokenKeys::new(test_key())
        .expect("keys")
        .encode_id_token(&json!({ "iss": ISSUER, "sub": user_id, "aud": app.client_id, "exp": 1, "iat": 0 }))
        .expect("hint");
    let query = form(&[("id_token_hint", &expired_hint), ("post_logout_redirect_uri", bye), ("state", "xyz 1")]);
    let confirm = agent.get(&format!("/logout?{query}")).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(confirm.body.contains("<h1>Sign out</h1>"), "{}", confirm.body);
    assert!(confirm.body.contains("<strong>Orders Web</strong> asks to sign you out."), "{}", confirm.body);
    assert!(confirm.body.contains("You are signed in as <strong>ada@example.org</strong>."), "{}", confirm.body);
    let no_csrf = agent.post("/logout", &[("post_logout_redirect_uri", bye), ("client_id", &app.client_id)]).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    assert!(no_csrf.body.contains("<h1>This form has expired</h1>"), "{}", no_csrf.body);
    let tampered = agent.submit(&confirm, "Sign out", &[("post_logout_redirect_uri", "https://evil.example/")]).await;
    tampered.assert_error_page_says(REFUSED, UNREGISTERED, "tampered confirmation");
    assert_eq!(agent.get("/").await.status, StatusCode::OK, "still signed in after the refusals");
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
    assert!(done.body.contains("<h1>Signed out</h1>"), "{}", done.body);
    assert!(confirm.body.contains("<strong>Orders Web</strong> asks to sign you out."), "{}", confirm.body);
}
