//! Protocol rules across the token endpoint family and the authorization endpoint, with their
//! bad inputs: a challenge on every 401 (RFC 9110 §11.6.1, RFC 6749 §5.2), printable bounded
//! parameters (never a 5xx), loopback redirect URIs on any port (RFC 8252 §7.3), `redirect_uri`
//! required for OpenID Connect and repeated at the token endpoint (OIDC Core §3.1.2.1, RFC 6749
//! §4.1.3), and `request`/`request_uri` refused (OIDC Core §3.1.2.6).

use serde_json::json;

use crate::on_both_backends;
use crate::support::Backend;
use crate::support::flow::*;
use crate::support::oauth::*;

const CHALLENGE: &str = "Basic realm=\"truxe\", charset=\"UTF-8\"";

/// What a case is, its Authorization header, and its form fields.
type Case<'a> = (&'a str, Option<String>, Vec<(&'a str, &'a str)>);

on_both_backends! {
    async fn every_401_carries_a_challenge(backend: Backend) {
        challenges_on(backend).await;
    }
    async fn stored_and_echoed_parameters_are_printable_and_bounded(backend: Backend) {
        printable_on(backend).await;
    }
    async fn loopback_redirect_uris_match_on_any_port(backend: Backend) {
        loopback_on(backend).await;
    }
    async fn redirect_uri_rules_of_oidc_and_the_token_request(backend: Backend) {
        redirect_uri_rules_on(backend).await;
    }
}

async fn challenges_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let machine = machine_client(&server, "client_secret_post").await;
    let spa = spa(&server).await;
    let unknown = "cl_AAAAAAAAAAAAAAAAAAAAAA";
    for endpoint in ["/oauth-provider/token", "/oauth-provider/introspect", "/oauth-provider/revoke"] {
        let grant = [("grant_type", "client_credentials"), ("token", "x.y.z")];
        let cases: Vec<Case<'_>> = vec![
            ("no credentials", None, grant.to_vec()),
            ("client_secret_post, wrong secret", None, {
                let mut pairs = grant.to_vec();
                pairs.extend([("client_id", machine.client_id.as_str()), ("client_secret", "cs_wrong")]);
                pairs
            }),
            ("client_secret_post, unknown client", None, {
                let mut pairs = grant.to_vec();
                pairs.extend([("client_id", unknown), ("client_secret", "cs_wrong")]);
                pairs
            }),
            ("client_secret_basic, wrong secret", Some(basic(&machine.client_id, "cs_wrong")), grant.to_vec()),
            ("none, for a confidential client", None, {
                let mut pairs = grant.to_vec();
                pairs.push(("client_id", machine.client_id.as_str()));
                pairs
            }),
        ];
        for (what, authorization, pairs) in cases {
            let answer = post_form(&server, endpoint, authorization.as_deref(), form(&pairs)).await;
            let context = format!("{endpoint}, {what}");
            assert_oauth_error(&answer, 401, "invalid_client", &context);
            assert_eq!(answer.header("www-authenticate"), Some(CHALLENGE), "{context}");
        }
    }
    // A public client at the confidential endpoints (client_credentials, introspection).
    for endpoint in ["/oauth-provider/token", "/oauth-provider/introspect"] {
        let pairs = [("grant_type", "client_credentials"), ("token", "x.y.z"), ("client_id", spa.client_id.as_str())];
        let answer = post_form(&server, endpoint, None, form(&pairs)).await;
        assert_oauth_error(&answer, 401, "invalid_client", endpoint);
        assert_eq!(answer.header("www-authenticate"), Some(CHALLENGE), "{endpoint}: a public client");
    }
    // Userinfo (RFC 6750 §3) and the admin API challenge too.
    let (status, headers, _) = userinfo_get(&server, None).await;
    assert_eq!((status, challenge(&headers).as_str()), (401, "Bearer realm=\"truxe\""));
    let (status, headers, _) = userinfo_get(&server, Some("not-a-token")).await;
    assert_eq!(status, 401);
    assert!(challenge(&headers).contains("error=\"invalid_token\""), "{}", challenge(&headers));
    for authorization in [None, Some("Bearer wrong-admin-token")] {
        let mut request = server.client.get(server.url("/oauth-provider/clients"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("admin");
        assert_eq!(response.status().as_u16(), 401, "admin API {authorization:?}");
        let www = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(www.starts_with("Bearer "), "admin API {authorization:?}: {www:?}");
    }
}

async fn printable_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let long = "n".repeat(10 * 1024);
    let bad_values = [("a NUL", "n\u{0}x"), ("an emoji", "\u{1F600}"), ("a newline", "a\nb"), ("10 KB", long.as_str())];
    for name in ["nonce", "state"] {
        for (what, value) in bad_values {
            let mut params = request_params(&app, CALLBACK, "openid email");
            params.retain(|(k, _)| *k != name);
            params.push((name, value.to_string()));
            let context = format!("{name} with {what}");
            let page = agent.get(&path_of(&params)).await;
            page.assert_error_redirect(CALLBACK, "invalid_request", &context);
            let description = page.param("error_description").unwrap_or_default();
            assert!(description.contains(name), "{context}: {description}");
            assert!(
                description.bytes().all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
                "{context}: error_description outside RFC 6749's set: {description:?}"
            );
            if name == "state" {
                assert_eq!(page.param("state"), None, "{context}: a bad state is not echoed");
            } else {
                assert_eq!(page.param("state").as_deref(), Some("af0ifjsldkj"), "{context}");
            }
        }
    }
    // Other stored or echoed values: control characters are refused too.
    for (name, value) in [("login_hint", "ada\u{7}@example.org"), ("ui_locales", "en\r\nX-Evil: 1")] {
        let mut params = request_params(&app, CALLBACK, "openid email");
        params.push((name, value.to_string()));
        agent.get(&path_of(&params)).await.assert_error_redirect(CALLBACK, "invalid_request", name);
    }
    // request objects are not supported, by value or by reference.
    for (name, value, error) in [
        ("request", "eyJhbGciOiJub25lIn0.e30.", "request_not_supported"),
        ("request_uri", "https://app.example.com/request.jwt", "request_uri_not_supported"),
    ] {
        let mut params = request_params(&app, CALLBACK, "openid email");
        params.push((name, value.to_string()));
        let page = agent.get(&path_of(&params)).await;
        page.assert_error_redirect(CALLBACK, error, name);
        assert_eq!(page.param("state").as_deref(), Some("af0ifjsldkj"), "{name}");
    }
    // A good request still works: nothing above consumed anything.
    let code = authorize_code(&agent, &app, CALLBACK, "openid email").await;
    assert_eq!(exchange(&server, &app, &code, CALLBACK).await.status, 200);
}

async fn loopback_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    // A native app registered with a loopback URI (and an https one with a port).
    let native = register(
        &server,
        json!({
            "client_name": "Orders Desktop",
            "redirect_uris": ["http://127.0.0.1:8080/cb", "http://[::1]/cb", "https://app.example.com:8443/cb"],
            "allowed_scopes": ["openid", "email"],
            "grant_types": ["authorization_code"],
            "token_endpoint_auth_method": "none",
        }),
    )
    .await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    for redirect in ["http://127.0.0.1:51004/cb", "http://[::1]:49152/cb", "http://127.0.0.1:8080/cb"] {
        let code = authorize_code(&agent, &native, redirect, "openid email").await;
        // The code is bound to the URI as presented, port included.
        let other_port = redirect.replace(":51004", ":51005").replace(":49152", ":49153").replace(":8080", ":8081");
        assert_grant_error(&exchange(&server, &native, &code, &other_port).await, "invalid_grant", redirect);
        // (the failed attempt does not consume the code)
        assert_eq!(exchange(&server, &native, &code, redirect).await.status, 200, "{redirect}");
    }
    for refused in [
        "https://app.example.com:9443/cb",
        "http://localhost:8080/cb",
        "http://127.0.0.1:8080/cb/",
        "http://127.0.0.2:8080/cb",
        "http://127.0.0.1:8080/cb?x=1",
    ] {
        let page = agent.get(&path_of(&request_params(&native, refused, "openid email"))).await;
        page.assert_error_page(refused);
        assert!(page.body.contains("redirect_uri"), "{refused}: {}", page.body);
    }
}

async fn redirect_uri_rules_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let one_uri = register(
        &server,
        json!({
            "client_name": "Single callback",
            "redirect_uris": [CALLBACK],
            "allowed_scopes": ["openid", "email", "orders:read"],
            "grant_types": ["authorization_code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }),
    )
    .await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    // OpenID Connect: required even with one registered URI, and an error page (never a redirect).
    let mut params = request_params(&one_uri, CALLBACK, "openid email");
    params.retain(|(k, _)| *k != "redirect_uri");
    let page = agent.get(&path_of(&params)).await;
    page.assert_error_page("openid without redirect_uri");
    assert!(page.body.contains("redirect_uri"), "{}", page.body);
    // Plain OAuth with one registered URI may omit it, and then the token request may too.
    let mut params = request_params(&one_uri, CALLBACK, "orders:read");
    params.retain(|(k, _)| *k != "redirect_uri");
    let page = agent.get(&path_of(&params)).await;
    let page = if page.status == reqwest::StatusCode::OK { agent.submit(&page, "Allow", &[]).await } else { page };
    let code = page.param("code").unwrap_or_else(|| panic!("no code: {page:?}"));
    let answer =
        token(&server, &one_uri, &[("grant_type", "authorization_code"), ("code", &code), ("code_verifier", VERIFIER)])
            .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // When the authorization request carried it, the token request must carry the same.
    let code = authorize_code(&agent, &one_uri, CALLBACK, "openid email").await;
    let without = [("grant_type", "authorization_code"), ("code", code.as_str()), ("code_verifier", VERIFIER)];
    let answer = token(&server, &one_uri, &without).await;
    assert_grant_error(&answer, "invalid_request", "redirect_uri omitted at the token endpoint");
    assert!(answer.body["error_description"].as_str().unwrap_or_default().contains("redirect_uri"));
    assert_eq!(exchange(&server, &one_uri, &code, CALLBACK).await.status, 200, "with it, the code still works");
}

on_both_backends! {
    async fn a_used_code_presented_by_another_client_revokes_nothing(backend: Backend) {
        foreign_code_on(backend).await;
    }
    async fn a_disabled_user_gets_no_new_session_or_code(backend: Backend) {
        disabled_user_on(backend).await;
    }
}

async fn foreign_code_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let other = spa(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let answer = exchange(&server, &app, &code, CALLBACK).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let access_token = answer.body["access_token"].as_str().expect("access token").to_string();
    // The used code leaks; another client presents it: refused, and the owner's grant lives on.
    let stolen = exchange(&server, &other, &code, CALLBACK).await;
    assert_grant_error(&stolen, "invalid_grant", "another client's used code");
    assert_eq!(introspect(&server, &app, &access_token).await["active"], true, "nothing was revoked");
    // The owner presenting it again is a replay: that revokes the grant.
    assert_grant_error(&exchange(&server, &app, &code, CALLBACK).await, "invalid_grant", "replayed by its client");
    assert_eq!(introspect(&server, &app, &access_token).await, json!({ "active": false }));
}

async fn disabled_user_on(backend: Backend) {
    use diesel::prelude::*;
    use truxe_server::model::request::RequestMeta;
    use truxe_server::model::user::UserStatus;
    use truxe_server::service::{sessions, users};
    use truxe_server::store::schema::sessions as session_rows;
    use truxe_server::store::unix_now;

    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let pool = pool(&server);
    let mut conn = pool.get().expect("connection");
    let user = users::get(&mut conn, &user_id).expect("user");
    users::set_status(&mut conn, &user_id, UserStatus::Disabled, "test", unix_now()).expect("disable");
    // The record read before the disable still says active; the row lock says otherwise.
    let started =
        sessions::start(&mut conn, &user, &["email"], false, 600, &RequestMeta::default(), unix_now()).expect("start");
    assert!(started.is_none(), "no session for a user disabled meanwhile");
    let rows: i64 = session_rows::table.count().get_result(&mut conn).expect("count");
    assert_eq!(rows, 0, "the session insert was rolled back");
}
