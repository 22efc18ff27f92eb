//! Introspection (RFC 7662): who may learn what about which token, what an active answer holds,
//! and every token that must answer `{"active": false}`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::on_both_backends;
use crate::support::oauth::*;
use crate::support::{Backend, test_key};

on_both_backends! {
    async fn client_credentials_tokens(backend: Backend) {
        introspection_on(backend).await
    }
}

async fn introspection_on(backend: Backend) {
    let server = token_server(backend, &[]).await;
    let owner = machine_client(&server, "client_secret_basic").await;
    let stranger = machine_client(&server, "client_secret_post").await;
    let token = token_for(&server, &owner, &[("scope", "orders:write")]).await;

    let active = introspect(&server, &owner, &token).await;
    let (_, claims) = verify_with_jwks(&token, &jwks(&server).await, ISSUER);
    assert_eq!(
        active,
        json!({
            "active": true, "scope": "orders:write", "client_id": owner.client_id, "sub": owner.client_id,
            "iss": ISSUER, "aud": ISSUER, "token_type": "Bearer", "jti": claims.jti, "exp": claims.exp,
            "iat": claims.iat,
        })
    );
    assert_eq!(claims.exp - claims.iat, 900);

    // A client may introspect only the tokens issued to itself: another one (not registered
    // as a resource server for the token's audience) learns nothing, whichever method it uses.
    assert_eq!(introspect(&server, &stranger, &token).await, json!({ "active": false }), "another client's token");
    let answer = post_form(
        &server,
        "/oauth-provider/introspect",
        None,
        form(&[
            ("token", &token),
            ("token_type_hint", "access_token"),
            ("client_id", &stranger.client_id),
            ("client_secret", &stranger.secret),
        ]),
    )
    .await;
    assert_eq!((answer.status, &answer.body), (200, &json!({ "active": false })), "{}", answer.text);
    // Its own token, by client_secret_post.
    let own = token_for(&server, &stranger, &[]).await;
    let answer = post_form(
        &server,
        "/oauth-provider/introspect",
        None,
        form(&[
            ("token", &own),
            ("token_type_hint", "access_token"),
            ("client_id", &stranger.client_id),
            ("client_secret", &stranger.secret),
        ]),
    )
    .await;
    assert_eq!(answer.body["active"], true, "{}", answer.text);
    assert_eq!(answer.body["client_id"], stranger.client_id);

    let kid = test_key().kid();
    let pem = test_key().private_pem().secret().clone();
    let claims = |exp: i64, iss: &str| {
        json!({
            "iss": iss, "sub": owner.client_id, "aud": ISSUER, "exp": exp, "iat": exp - 900,
            "jti": "0123456789abcdef0123456789abcdef", "client_id": owner.client_id, "scope": "orders:read",
        })
    };
    let live = forge(&pem, kid, claims(now() + 600, ISSUER));
    assert_eq!(introspect(&server, &owner, &live).await["active"], true, "a forged-but-genuine token is live");
    let expired = forge(&pem, kid, claims(now() - 1, ISSUER));
    let other_issuer = forge(&pem, kid, claims(now() + 600, "https://other.example.com"));
    let other_key = truxe_server::keys::SigningKey::generate(truxe_server::keys::Algorithm::RS256, 2048).expect("key");
    let other_key_same_kid = forge(other_key.private_pem().secret(), kid, claims(now() + 600, ISSUER));
    let other_key_own_kid = forge(other_key.private_pem().secret(), other_key.kid(), claims(now() + 600, ISSUER));
    let (head, rest) = token.split_once('.').expect("jws");
    let (_, signature) = rest.split_once('.').expect("jws");
    let tampered = format!("{head}.{}.{signature}", URL_SAFE_NO_PAD.encode(claims(now() + 600, ISSUER).to_string()));
    // Asked by the client they name, so that only what is wrong with the token can make them
    // inactive.
    for (what, candidate) in [
        ("expired", expired.as_str()),
        ("another issuer", &other_issuer),
        ("another key under our kid", &other_key_same_kid),
        ("another key", &other_key_own_kid),
        ("tampered claims", &tampered),
        ("garbage", "not-a-token"),
        ("three dots", "a.b.c"),
        ("huge", &"A".repeat(12 * 1024)),
        ("an unknown opaque token", "rt_0123456789"),
        ("an unknown refresh token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let answer = introspect(&server, &owner, candidate).await;
        assert_eq!(answer, json!({ "active": false }), "{what}");
    }

    // Errors: no token, no or bad client authentication, a public client.
    let answer =
        post_form(&server, "/oauth-provider/introspect", Some(&basic(&owner.client_id, &owner.secret)), "").await;
    assert_oauth_error(&answer, 400, "invalid_request", "token missing");
    let answer = post_form(&server, "/oauth-provider/introspect", None, form(&[("token", &token)])).await;
    assert_oauth_error(&answer, 401, "invalid_client", "no client authentication");
    let answer = post_form(
        &server,
        "/oauth-provider/introspect",
        Some(&basic(&owner.client_id, "cs_wrong")),
        form(&[("token", &token)]),
    )
    .await;
    assert_oauth_error(&answer, 401, "invalid_client", "wrong secret");
    let answer = post_form(
        &server,
        "/oauth-provider/introspect",
        None,
        form(&[("token", &token), ("client_id", &stranger.client_id), ("client_secret", "cs_wrong")]),
    )
    .await;
    assert_oauth_error(&answer, 401, "invalid_client", "wrong secret (client_secret_post)");
    let answer = post_form(
        &server,
        "/oauth-provider/introspect",
        Some(&basic(&owner.client_id, &owner.secret)),
        format!("token={token}&token=x"),
    )
    .await;
    assert_oauth_error(&answer, 400, "invalid_request", "token repeated");
    let spa = crate::support::flow::spa(&server).await;
    let answer = post_form(
        &server,
        "/oauth-provider/introspect",
        None,
        form(&[("token", &token), ("client_id", &spa.client_id)]),
    )
    .await;
    assert_oauth_error(&answer, 401, "invalid_client", "public client");

    // A suspended client can introspect nothing, and its tokens are dead wherever they are
    // checked (userinfo, which a machine token otherwise reaches as insufficient_scope); both
    // come back with it.
    let userinfo = |token: String| {
        let request = server.client.get(server.url("/oauth-provider/userinfo")).bearer_auth(token);
        async move {
            let response = request.send().await.expect("userinfo");
            let status = response.status().as_u16();
            let challenge =
                response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_string);
            (status, challenge.unwrap_or_default())
        }
    };
    let (status, challenge) = userinfo(token.clone()).await;
    assert_eq!(status, 403, "{challenge}");
    assert!(challenge.contains(r#"error="insufficient_scope""#), "{challenge}");
    set_client_status(&server, &owner.client_id, "suspended").await;
    let answer = post_form(
        &server,
        "/oauth-provider/introspect",
        Some(&basic(&owner.client_id, &owner.secret)),
        form(&[("token", &token)]),
    )
    .await;
    assert_oauth_error(&answer, 401, "invalid_client", "introspection by a suspended client");
    let (status, challenge) = userinfo(token.clone()).await;
    assert_eq!(status, 401, "{challenge}");
    assert!(
        challenge.starts_with(r#"Bearer realm="truxe", error="invalid_token""#) && challenge.contains("suspended"),
        "{challenge}"
    );
    set_client_status(&server, &owner.client_id, "active").await;
    assert_eq!(introspect(&server, &owner, &token).await["active"], true);
}
