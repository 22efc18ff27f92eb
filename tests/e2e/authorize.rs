//! The authorization endpoint on both backends: every parameter missing, repeated, malformed or
//! oversized; redirect URIs that differ in any way get an error page, never a redirect; sign-in
//! and consent (prompt, max_age, login_hint, Allow/Deny, CSRF).

use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::json;
use truxe_server::oauth::pkce;
use truxe_server::store::schema::sessions;
use truxe_server::store::unix_now;

use crate::on_both_backends;
use crate::support::Backend;
use crate::support::flow::{
    Agent, CALLBACK, VERIFIER, assert_grant_error, authorize_code, create_user, exchange, flow_server, path_of, pool,
    request_params, spa, web_app,
};
use crate::support::oauth::{form, register, set_client_status};

on_both_backends! {
    async fn authorize_untrusted_redirects_get_error_pages(backend: Backend) {
        error_pages_on(backend).await
    }
    async fn authorize_other_errors_redirect_with_state_and_iss(backend: Backend) {
        error_redirects_on(backend).await
    }
    async fn authorize_sign_in_prompt_and_max_age(backend: Backend) {
        sign_in_on(backend).await
    }
    async fn authorize_consent_allow_deny_and_csrf(backend: Backend) {
        consent_on(backend).await
    }
    async fn authorize_loopback_redirect_uris_match_any_port(backend: Backend) {
        loopback_redirect_uris_on(backend).await
    }
    async fn authorize_redirect_uri_omitted(backend: Backend) {
        redirect_uri_omitted_on(backend).await
    }
}

/// Replaces (or with `None` removes) one parameter of a good request.
fn with<'a>(params: &[(&'a str, String)], name: &'a str, value: Option<&str>) -> Vec<(&'a str, String)> {
    let mut out: Vec<(&'a str, String)> = params.iter().filter(|(n, _)| *n != name).cloned().collect();
    if let Some(value) = value {
        out.push((name, value.to_string()));
    }
    out
}

fn repeated(params: &[(&str, String)], name: &str) -> String {
    let value = params.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).unwrap_or_else(|| "x".into());
    format!("{}&{}", path_of(params), form(&[(name, &value)]))
}

async fn error_pages_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let good = request_params(&app, CALLBACK, "openid email");
    let ten_kb = "a".repeat(10 * 1024);
    const UNKNOWN: &str = "Unknown application (client_id).";
    const UNREGISTERED: &str = "The redirect_uri is not registered for this application.";

    // (request, the page's message, what is wrong)
    let mut cases: Vec<(String, &str, String)> = vec![
        (path_of(&with(&good, "client_id", None)), UNKNOWN, "client_id missing".into()),
        (path_of(&with(&good, "client_id", Some("cl_unknown"))), UNKNOWN, "unknown client".into()),
        (
            path_of(&with(&good, "client_id", Some("cl_x'; DROP TABLE oauth_clients; --"))),
            UNKNOWN,
            "malformed client".into(),
        ),
        (path_of(&with(&good, "client_id", Some("cl_a\u{1}b"))), UNKNOWN, "control character in client_id".into()),
        (path_of(&with(&good, "client_id", Some(&ten_kb))), UNKNOWN, "oversized client_id".into()),
        (repeated(&good, "client_id"), "The client_id parameter appears more than once.", "client_id repeated".into()),
        (
            repeated(&good, "redirect_uri"),
            "The redirect_uri parameter appears more than once.",
            "redirect_uri repeated".into(),
        ),
        (
            path_of(&with(&good, "redirect_uri", None)),
            "The redirect_uri parameter is required (OpenID Connect).",
            "redirect_uri missing (openid)".into(),
        ),
        (
            path_of(&with(&with(&good, "redirect_uri", None), "scope", Some("email"))),
            "The redirect_uri parameter is required.",
            "redirect_uri missing (two registered)".into(),
        ),
        (path_of(&with(&good, "redirect_uri", Some(&ten_kb))), UNREGISTERED, "oversized redirect_uri".into()),
        (
            format!("{}&scope=%FF", path_of(&with(&good, "scope", None))),
            "The request could not be read (a parameter was not valid text).",
            "invalid UTF-8".into(),
        ),
    ];
    for (uri, context) in [
        ("https://app.example.com/callback/", "trailing slash"),
        ("https://APP.example.com/callback", "host case"),
        ("https://app.example.com/Callback", "path case"),
        ("https://app.example.com:443/callback", "explicit port"),
        ("https://app.example.com:8443/callback", "other port"),
        ("https://app.example.com/callback?x=1", "query"),
        ("https://app.example.com/callback#frag", "fragment"),
        ("http://app.example.com/callback", "scheme"),
        ("https://evil.example.com/callback", "other host"),
        ("https://app.example.com/call\u{7}back", "control character"),
        ("not a uri", "malformed"),
        // The loopback exception is for the port alone (RFC 8252 §7.3).
        ("http://127.0.0.1:51004/cb/", "loopback, another port and a trailing slash"),
        ("http://127.0.0.1:8080/cb?x=1", "loopback with a query"),
        ("http://127.0.0.2:8080/cb", "another loopback address"),
        ("http://localhost:8080/cb", "localhost is not the registered IP literal"),
        ("https://127.0.0.1:8080/cb", "loopback over https"),
    ] {
        cases.push((path_of(&with(&good, "redirect_uri", Some(uri))), UNREGISTERED, context.into()));
    }
    // A suspended client gets a page too.
    let suspended = web_app(&server).await;
    set_client_status(&server, &suspended.client_id, "suspended").await;
    cases.push((
        path_of(&request_params(&suspended, CALLBACK, "openid")),
        "This application is disabled.",
        "suspended client".into(),
    ));

    for (path, message, context) in &cases {
        agent.get(path).await.assert_error_page_says("Invalid request", message, context);
        // The same request as a form post (OIDC Core §3.1.2.1 allows POST).
        let body = path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
        let response = agent
            .client
            .post(server.url("/oauth-provider/authorize"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("post");
        Agent::page(response).await.assert_error_page_says("Invalid request", message, &format!("POST {context}"));
    }
    // A query longer than any form the endpoint reads.
    let too_long = agent.get(&format!("/oauth-provider/authorize?{}", "a".repeat(17 * 1024))).await;
    assert_eq!(too_long.status, StatusCode::URI_TOO_LONG);
    too_long.assert_error_page_says("Address too long", "The address of this page is too long.", "query too long");
    // Signed out, the same: the page comes before anything else.
    let stranger = Agent::new(&server);
    stranger
        .get(&path_of(&with(&good, "redirect_uri", Some("https://evil.example.com/"))))
        .await
        .assert_error_page_says("Invalid request", UNREGISTERED, "signed out");
}

/// Loopback IP redirect URIs (RFC 8252 §7.3): registered with one port, they match on any port,
/// for 127.0.0.1 and [::1] alike; the code is bound to the URI as presented. `localhost` is not
/// an IP literal and matches only exactly.
async fn loopback_redirect_uris_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let native = register(
        &server,
        json!({
            "client_name": "Native app",
            "redirect_uris": ["http://127.0.0.1:8080/cb", "http://[::1]:8080/cb", "http://localhost:8080/cb"],
            "token_endpoint_auth_method": "none",
            "require_consent": false,
        }),
    )
    .await;
    for presented in ["http://127.0.0.1:51004/cb", "http://127.0.0.1/cb", "http://[::1]:1234/cb"] {
        let page = agent.get(&path_of(&request_params(&native, presented, "openid"))).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{presented}: {page:?}");
        assert!(page.location().starts_with(&format!("{presented}?")), "{presented}: {}", page.location());
        let code = page.param("code").unwrap_or_else(|| panic!("{presented}: no code in {}", page.location()));
        // The exchange names the URI of the authorization request, not the registered one.
        let registered = if presented.contains("[::1]") { "http://[::1]:8080/cb" } else { "http://127.0.0.1:8080/cb" };
        let answer = exchange(&server, &native, &code, registered).await;
        assert_grant_error(&answer, "invalid_grant", &format!("{presented}: exchanged with the registered URI"));
        let answer = exchange(&server, &native, &code, presented).await;
        assert_eq!(answer.status, 200, "{presented}: {}", answer.body);
    }
    // An error for a loopback client goes back to the port it came from.
    let other_port = "http://127.0.0.1:40404/cb";
    agent
        .get(&path_of(&with(&request_params(&native, other_port, "openid"), "scope", Some("admin"))))
        .await
        .assert_error_redirect(other_port, "invalid_scope", "loopback error redirect");
    agent.get(&path_of(&request_params(&native, "http://localhost:9090/cb", "openid"))).await.assert_error_page_says(
        "Invalid request",
        "The redirect_uri is not registered for this application.",
        "localhost",
    );
    let exact = agent.get(&path_of(&request_params(&native, "http://localhost:8080/cb", "openid"))).await;
    assert!(exact.param("code").is_some(), "localhost registered exactly: {exact:?}");
}

/// `redirect_uri` may be left out only by a plain OAuth request of a client with exactly one
/// registered URI; an OpenID Connect request must carry it (OIDC Core §3.1.2.1).
async fn redirect_uri_omitted_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let single = register(
        &server,
        json!({
            "client_name": "One URI", "redirect_uris": [CALLBACK], "require_consent": false,
            "allowed_scopes": ["openid", "email", "orders:read"],
        }),
    )
    .await;
    let without = |scope: &str| path_of(&with(&request_params(&single, CALLBACK, scope), "redirect_uri", None));
    agent.get(&without("openid email")).await.assert_error_page_says(
        "Invalid request",
        "The redirect_uri parameter is required (OpenID Connect).",
        "openid without redirect_uri",
    );
    let plain = agent.get(&without("orders:read")).await;
    assert_eq!(plain.status, StatusCode::SEE_OTHER, "{plain:?}");
    assert!(plain.location().starts_with(&format!("{CALLBACK}?")), "{}", plain.location());
    let code = plain.param("code").expect("code");
    // The authorization request carried no redirect_uri, so the token request need not either.
    let (authorization, _) = single.credentials();
    let body = form(&[("grant_type", "authorization_code"), ("code", &code), ("code_verifier", VERIFIER)]);
    let answer =
        crate::support::oauth::post_form(&server, "/oauth-provider/token", authorization.as_deref(), body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

async fn error_redirects_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let good = request_params(&app, CALLBACK, "openid email");
    let long = "a".repeat(3000);

    // (request, expected error, whether the state comes back)
    let cases: Vec<(String, &str, bool, &str)> = vec![
        (path_of(&with(&good, "response_type", None)), "invalid_request", true, "response_type missing"),
        (path_of(&with(&good, "response_type", Some("token"))), "unsupported_response_type", true, "implicit"),
        (path_of(&with(&good, "response_type", Some("code id_token"))), "unsupported_response_type", true, "hybrid"),
        (repeated(&good, "response_type"), "invalid_request", true, "response_type repeated"),
        // Any over-long parameter is invalid_request, checked before what it says.
        (path_of(&with(&good, "response_type", Some(&long))), "invalid_request", true, "oversized type"),
        (path_of(&with(&good, "ui_locales", Some(&long))), "invalid_request", true, "oversized unknown parameter"),
        (path_of(&with(&good, "scope", None)), "invalid_scope", true, "scope missing"),
        (path_of(&with(&good, "scope", Some("openid  email"))), "invalid_scope", true, "scope malformed"),
        (path_of(&with(&good, "scope", Some("openid admin"))), "invalid_scope", true, "scope unknown"),
        (path_of(&with(&good, "scope", Some("openid orders:write"))), "invalid_scope", true, "scope not allowed"),
        (path_of(&with(&good, "scope", Some(&long))), "invalid_request", true, "scope oversized"),
        (repeated(&good, "scope"), "invalid_request", true, "scope repeated"),
        (path_of(&with(&good, "state", Some(&long))), "invalid_request", false, "state oversized"),
        (repeated(&good, "state"), "invalid_request", false, "state repeated"),
        (path_of(&with(&good, "nonce", Some(&long))), "invalid_request", true, "nonce oversized"),
        (repeated(&good, "nonce"), "invalid_request", true, "nonce repeated"),
        (path_of(&with(&good, "code_challenge_method", Some("plain"))), "invalid_request", true, "plain PKCE"),
        (
            path_of(&with(&with(&good, "code_challenge_method", Some("plain")), "code_challenge", Some(VERIFIER))),
            "invalid_request",
            true,
            "plain PKCE with the verifier as challenge",
        ),
        (path_of(&with(&good, "code_challenge_method", None)), "invalid_request", true, "method missing"),
        (path_of(&with(&good, "code_challenge", Some("short"))), "invalid_request", true, "challenge malformed"),
        (path_of(&with(&good, "code_challenge", Some(&long))), "invalid_request", true, "challenge oversized"),
        (
            path_of(&with(&with(&good, "code_challenge", None), "code_challenge_method", None)),
            "invalid_request",
            true,
            "PKCE missing (OAUTH_REQUIRE_PKCE)",
        ),
        (repeated(&good, "code_challenge"), "invalid_request", true, "challenge repeated"),
        (path_of(&with(&good, "prompt", Some("bogus"))), "invalid_request", true, "prompt unknown"),
        (path_of(&with(&good, "prompt", Some("none login"))), "invalid_request", true, "prompt none+login"),
        (repeated(&with(&good, "prompt", Some("login")), "prompt"), "invalid_request", true, "prompt repeated"),
        (path_of(&with(&good, "max_age", Some("-1"))), "invalid_request", true, "max_age negative"),
        (path_of(&with(&good, "max_age", Some("soon"))), "invalid_request", true, "max_age malformed"),
        (path_of(&with(&good, "max_age", Some(&long))), "invalid_request", true, "max_age oversized"),
        (path_of(&with(&good, "login_hint", Some(&long))), "invalid_request", true, "login_hint oversized"),
        (
            repeated(&with(&good, "login_hint", Some("a@b.c")), "login_hint"),
            "invalid_request",
            true,
            "login_hint repeated",
        ),
        (path_of(&with(&good, "response_mode", Some("fragment"))), "invalid_request", true, "response_mode"),
        // OIDC Core §3.1.2.6.
        (
            path_of(&with(&good, "request", Some("eyJhbGciOiJub25lIn0.e30."))),
            "request_not_supported",
            true,
            "request object",
        ),
        (path_of(&with(&good, "request_uri", Some("https://x/r"))), "request_uri_not_supported", true, "request_uri"),
        // Stored or echoed values are printable text: no control characters anywhere, and
        // state, nonce and code_challenge are visible ASCII only. A state that is not is not
        // echoed back.
        (path_of(&with(&good, "state", Some("af0i\u{0}fj"))), "invalid_request", false, "NUL in state"),
        (path_of(&with(&good, "state", Some("af0i\u{1b}[2Jfj"))), "invalid_request", false, "escape in state"),
        (path_of(&with(&good, "state", Some("state-\u{1F600}"))), "invalid_request", false, "emoji in state"),
        (path_of(&with(&good, "state", Some("caf\u{e9}"))), "invalid_request", false, "non-ASCII state"),
        (path_of(&with(&good, "nonce", Some("n-0S6\nWzA2Mj"))), "invalid_request", true, "newline in nonce"),
        (path_of(&with(&good, "nonce", Some("n-\u{1F600}"))), "invalid_request", true, "emoji in nonce"),
        (
            path_of(&with(
                &good,
                "code_challenge",
                Some(&format!("{}\u{1F600}", &pkce::s256_challenge(VERIFIER)[..42])),
            )),
            "invalid_request",
            true,
            "emoji in code_challenge",
        ),
        (
            path_of(&with(&good, "login_hint", Some("ada@example.org\r\n"))),
            "invalid_request",
            true,
            "CRLF in login_hint",
        ),
        (path_of(&with(&good, "max_age", Some("30\u{7f}"))), "invalid_request", true, "DEL in max_age"),
        (
            path_of(&with(&good, "ui_locales", Some("en\u{85}"))),
            "invalid_request",
            true,
            "C1 control, unknown parameter",
        ),
        (format!("{}&%01=x", path_of(&good)), "invalid_request", true, "control character in a parameter name"),
    ];
    for (path, error, with_state, context) in &cases {
        let page = agent.get(path).await;
        page.assert_error_redirect(CALLBACK, error, context);
        let state = page.param("state");
        if *with_state {
            assert_eq!(state.as_deref(), Some("af0ifjsldkj"), "{context}");
        } else {
            assert!(state.is_none(), "{context}: {state:?}");
        }
    }
    // A redirect URI with a query keeps it (exact match, parameters appended).
    let with_query = register(
        &server,
        json!({
            "client_name": "Query app", "redirect_uris": ["https://q.example.com/cb?tenant=7"],
            "token_endpoint_auth_method": "none",
        }),
    )
    .await;
    let page = agent
        .get(&path_of(&with(
            &request_params(&with_query, "https://q.example.com/cb?tenant=7", "openid"),
            "scope",
            Some("admin"),
        )))
        .await;
    page.assert_error_redirect("https://q.example.com/cb", "invalid_scope", "query-bearing redirect URI");
    assert_eq!(page.param("tenant").as_deref(), Some("7"));

    // Public clients need PKCE even where the server would not require it.
    let lax = flow_server(backend, &[("OAUTH_REQUIRE_PKCE", "false")]).await;
    let user_id = create_user(&lax, "ada@example.org");
    let (agent, _) = Agent::signed_in(&lax, &user_id);
    let public = spa(&lax).await;
    let redirect = "http://127.0.0.1:5173/callback";
    let no_pkce = with(
        &with(&request_params(&public, redirect, "openid"), "code_challenge", None),
        "code_challenge_method",
        None,
    );
    agent.get(&path_of(&no_pkce)).await.assert_error_redirect(
        redirect,
        "invalid_request",
        "public client without PKCE",
    );
    let confidential = register(
        &lax,
        json!({
            "client_name": "No PKCE web app", "redirect_uris": [CALLBACK], "require_pkce": false,
            "require_consent": false,
        }),
    )
    .await;
    let no_pkce = with(
        &with(&request_params(&confidential, CALLBACK, "openid"), "code_challenge", None),
        "code_challenge_method",
        None,
    );
    let page = agent.get(&path_of(&no_pkce)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.param("code").is_some(), "allowed without PKCE: {page:?}");
}

async fn sign_in_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let good = request_params(&app, CALLBACK, "openid email");
    let signed_out = Agent::new(&server);

    // No session: to /login, coming back to the same request afterwards.
    let page = signed_out.get(&path_of(&with(&good, "login_hint", Some("ada@example.org")))).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{page:?}");
    let location = url::Url::parse(&format!("http://x{}", page.location())).expect("local redirect");
    assert_eq!(location.path(), "/login");
    let query: Vec<(String, String)> = location.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(get("login_hint").as_deref(), Some("ada@example.org"));
    assert!(get("prompt").is_none());
    let return_to = get("return_to").expect("return_to");
    assert!(return_to.starts_with("/oauth-provider/authorize?"), "{return_to}");
    // The login page pre-fills the hint.
    let login = signed_out.get(page.location()).await;
    assert!(login.body.contains("value=\"ada@example.org\""), "{}", login.body);
    // A hint is printable text, not only ASCII (only state, nonce and code_challenge are).
    let page = signed_out.get(&path_of(&with(&good, "login_hint", Some("zo\u{eb}@example.org")))).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{page:?}");
    let location = url::Url::parse(&format!("http://x{}", page.location())).expect("local redirect");
    assert_eq!(location.path(), "/login", "{}", page.location());
    assert!(location.query_pairs().any(|(k, v)| k == "login_hint" && v == "zo\u{eb}@example.org"), "{location}");

    // prompt=none without a session: login_required, back to the client with state and iss.
    let none = signed_out.get(&path_of(&with(&good, "prompt", Some("none")))).await;
    none.assert_error_redirect(CALLBACK, "login_required", "prompt=none signed out");
    assert_eq!(none.param("state").as_deref(), Some("af0ifjsldkj"));

    // Signed in, where return_to leads: the consent page.
    let (agent, session_hash) = Agent::signed_in(&server, &user_id);
    let consent = agent.get(&return_to).await;
    assert_eq!(consent.status, StatusCode::OK, "{consent:?}");
    assert!(consent.body.contains("Allow"));
    // prompt=none signed in but without consent: consent_required.
    agent.get(&path_of(&with(&good, "prompt", Some("none")))).await.assert_error_redirect(
        CALLBACK,
        "consent_required",
        "prompt=none without consent",
    );
    let code = authorize_code(&agent, &app, CALLBACK, "openid email").await;
    assert_eq!(exchange(&server, &app, &code, CALLBACK).await.status, 200);
    // Now prompt=none succeeds silently.
    let silent = agent.get(&path_of(&with(&good, "prompt", Some("none")))).await;
    assert_eq!(silent.status, StatusCode::SEE_OTHER);
    assert!(silent.param("code").is_some(), "{silent:?}");

    // prompt=login: sign in again even though signed in; the way back drops prompt=login so that
    // the new sign-in is not asked for forever.
    let page = agent.get(&path_of(&with(&good, "prompt", Some("login")))).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let location = url::Url::parse(&format!("http://x{}", page.location())).expect("local redirect");
    assert_eq!(location.path(), "/login");
    let pairs: Vec<(String, String)> = location.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert!(pairs.contains(&("prompt".into(), "login".into())), "{pairs:?}");
    let back = pairs.iter().find(|(k, _)| k == "return_to").map(|(_, v)| v.clone()).expect("return_to");
    assert!(!back.contains("prompt"), "{back}");
    let after = agent.get(&back).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert!(after.param("code").is_some(), "no loop: {after:?}");

    // max_age: a sign-in older than allowed asks again.
    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    diesel::update(sessions::table.filter(sessions::session_hash.eq(&session_hash)))
        .set(sessions::auth_time.eq(unix_now() - 600))
        .execute(&mut conn)
        .expect("age the session");
    let page = agent.get(&path_of(&with(&good, "max_age", Some("300")))).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/login?"), "{}", page.location());
    assert!(page.location().contains("prompt=login"));
    let fine = agent.get(&path_of(&with(&good, "max_age", Some("3600")))).await;
    assert!(fine.param("code").is_some(), "{fine:?}");
    agent
        .get(&path_of(&with(&with(&good, "max_age", Some("300")), "prompt", Some("none"))))
        .await
        .assert_error_redirect(CALLBACK, "login_required", "max_age with prompt=none");

    // A trusted client never shows the consent page.
    let trusted = register(
        &server,
        json!({
            "client_name": "First-party", "redirect_uris": [CALLBACK], "trusted": true,
            "token_endpoint_auth_method": "none",
        }),
    )
    .await;
    let page = agent.get(&path_of(&request_params(&trusted, CALLBACK, "openid email profile"))).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.param("code").is_some(), "{page:?}");
}

async fn consent_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let good = request_params(&app, CALLBACK, "openid email orders:read");

    let consent = agent.get(&path_of(&good)).await;
    assert_eq!(consent.status, StatusCode::OK);
    assert!(consent.body.contains("orders:read"), "API scopes are named: {}", consent.body);
    assert!(consent.body.contains("https://app.example.com/privacy"));

    // Posted without its CSRF token (or with another's): 403 and no redirect.
    let form_fields = crate::support::agent::forms(&consent.body)
        .into_iter()
        .find(|f| f.action == "/oauth-provider/authorize")
        .expect("the consent form");
    let mut without: Vec<(String, String)> =
        form_fields.fields.iter().filter(|(k, _)| k != "csrf_token").cloned().collect();
    without.push(("decision".into(), "allow".into()));
    let pairs: Vec<(&str, &str)> = without.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let forbidden = agent.post("/oauth-provider/authorize", &pairs).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN, "{forbidden:?}");
    forbidden.assert_error_page("consent without a CSRF token");
    assert!(forbidden.body.contains("<h1>This form has expired</h1>"), "{}", forbidden.body);
    let other_browser = Agent::new(&server);
    other_browser.sign_in(&server, &user_id);
    let stolen = other_browser.submit(&consent, "Allow", &[]).await;
    assert_eq!(stolen.status, StatusCode::FORBIDDEN, "a token from another browser");
    assert!(stolen.body.contains("<h1>This form has expired</h1>"), "{}", stolen.body);
    let mut bogus: Vec<(&str, &str)> = form_fields.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    bogus.push(("decision", "maybe"));
    agent.post("/oauth-provider/authorize", &bogus).await.assert_error_page_says(
        "Invalid request",
        "The consent form was not valid.",
        "unknown decision",
    );

    // The consent post is a new request, validated again: a swapped redirect URI is a page.
    agent.submit(&consent, "Allow", &[("redirect_uri", "https://evil.example.com/cb")]).await.assert_error_page_says(
        "Invalid request",
        "The redirect_uri is not registered for this application.",
        "tampered redirect_uri",
    );
    agent.submit(&consent, "Allow", &[("scope", "openid orders:write")]).await.assert_error_redirect(
        CALLBACK,
        "invalid_scope",
        "tampered scope",
    );

    // Deny: access_denied with state and iss; nothing remembered.
    let denied = agent.submit(&consent, "Deny", &[]).await;
    denied.assert_error_redirect(CALLBACK, "access_denied", "deny");
    assert_eq!(denied.param("state").as_deref(), Some("af0ifjsldkj"));
    assert_eq!(agent.get(&path_of(&good)).await.status, StatusCode::OK, "asked again");

    // Allow: a code, and the consent is on record.
    let allowed = agent.submit(&consent, "Allow", &[]).await;
    assert_eq!(allowed.status, StatusCode::SEE_OTHER, "{allowed:?}");
    let code = allowed.param("code").expect("code");
    let answer = exchange(&server, &app, &code, CALLBACK).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["scope"], "email openid orders:read");
    let again = agent.get(&path_of(&good)).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "remembered");

    // A wider request asks again; allowing adds to what was allowed.
    let wider = request_params(&app, CALLBACK, "openid profile");
    let page = agent.get(&path_of(&wider)).await;
    assert_eq!(page.status, StatusCode::OK);
    agent.submit(&page, "Allow", &[]).await;
    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    let listed = truxe_server::service::consents::list_for_user(&mut conn, &user_id).expect("consents");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].scope, "email openid orders:read profile");

    // A POST without a decision is a plain authorization request.
    let pairs: Vec<(&str, String)> = good.clone();
    let body: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let posted = agent.post("/oauth-provider/authorize", &body).await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER);
    assert!(posted.param("code").is_some(), "{posted:?}");

    // A session that ended before the consent was posted: sign in again, then come back.
    let fresh = request_params(&app, CALLBACK, "openid email profile offline_access");
    let page = agent.get(&path_of(&fresh)).await;
    assert_eq!(page.status, StatusCode::OK);
    let logout = agent.get("/logout").await;
    agent.submit(&logout, "Sign out", &[]).await;
    let after = agent.submit(&page, "Allow", &[]).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert!(after.location().starts_with("/login?return_to="), "{}", after.location());
}
