//! The authorization code flow end to end on both backends, without a browser: a signed-in
//! session, consent, the code exchange (confidential and public PKCE clients), ID tokens checked
//! against the JWKS, userinfo and a first refresh; the discovery document of the sign-in side.

use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::json;

use crate::on_both_backends;
use crate::support::Backend;
use crate::support::flow::*;
use crate::support::oauth::*;

on_both_backends! {
    async fn confidential_client(backend: Backend) {
        confidential_client_on(backend).await
    }
    async fn public_pkce_client(backend: Backend) {
        public_client_on(backend).await
    }
    async fn amr_names_a_second_factor(backend: Backend) {
        amr_on(backend).await
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

    // The audit trail has the whole story, without any token value (issued tokens are written
    // by the batched writer).
    server.state.audit.flush().await;
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

/// A sign-in whose session records a second factor (`email`, `mfa`, `otp`, as `/login/mfa`
/// leaves it): the ID token's `amr` says so (RFC 8176), and so does the one a refresh returns.
async fn amr_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in_with(&server, &user_id, &["email", "mfa", "otp"]);
    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    assert_eq!(code_row(&server, &code).amr, "email mfa otp", "the code carries the session's methods");
    let answer = exchange(&server, &app, &code, CALLBACK).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let set = jwks(&server).await;
    let access = answer.body["access_token"].as_str().expect("access token");
    let id_token = answer.body["id_token"].as_str().expect("id token");
    let claims = verify_id_token_of(ISSUER, id_token, &set, &app.client_id, "n-0S6_WzA2Mj", access);
    assert_eq!(claims["amr"], json!(["email", "mfa", "otp"]), "{claims}");

    let refreshed = refresh(&server, &app, answer.body["refresh_token"].as_str().expect("rt"), None).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let again = payload(refreshed.body["id_token"].as_str().expect("id token on refresh"));
    assert_eq!(again["amr"], json!(["email", "mfa", "otp"]), "{again}");
    assert_eq!(again["auth_time"], claims["auth_time"]);

    // The same person signed in by email alone: amr is only email.
    let (plain, _) = Agent::signed_in(&server, &user_id);
    let code = authorize_code(&plain, &app, CALLBACK, "openid").await;
    let answer = exchange(&server, &app, &code, CALLBACK).await;
    let claims = verify_id_token(
        answer.body["id_token"].as_str().expect("id token"),
        &set,
        &app.client_id,
        "n-0S6_WzA2Mj",
        answer.body["access_token"].as_str().expect("access token"),
    );
    assert_eq!(claims["amr"], json!(["email"]));
}

#[tokio::test]
async fn discovery_lists_what_works() {
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
    // Every advertised endpoint answers on this server, as that endpoint: a bare request gets
    // that endpoint's own refusal.
    let path = |member: &str| metadata[member].as_str().expect("url").trim_start_matches(ISSUER).to_string();
    let agent = Agent::new(&server);
    agent.get(&path("authorization_endpoint")).await.assert_error_page_says(
        "Invalid request",
        "Unknown application (client_id).",
        "authorization_endpoint without parameters",
    );
    let response = server.client.get(server.url(&path("userinfo_endpoint"))).send().await.expect("userinfo");
    assert_eq!(
        (response.status().as_u16(), challenge(response.headers()).as_str()),
        (401, r#"Bearer realm="truxe""#),
        "userinfo_endpoint without a token"
    );
    let signed_out = agent.get(&path("end_session_endpoint")).await;
    assert_eq!(signed_out.status, StatusCode::OK, "end_session_endpoint: {signed_out:?}");
    assert!(signed_out.body.contains("<h1>Sign out</h1>"), "{}", signed_out.body);
    assert!(signed_out.body.contains("You are not signed in on this browser."), "{}", signed_out.body);
}
