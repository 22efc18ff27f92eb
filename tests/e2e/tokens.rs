//! Machine-to-machine tokens: client_credentials, JWT access tokens and the JWKS, discovery,
//! the client cache and the audit queue, with every bad input at the token endpoint.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::oauth::*;
use crate::support::{Backend, TestServer, test_key};

on_both_backends! {
    async fn client_credentials_with_basic_and_post(backend: Backend) {
        client_credentials_with_basic_and_post_on(backend).await
    }
    async fn token_endpoint_bad_input(backend: Backend) {
        token_endpoint_bad_input_on(backend).await
    }
    async fn admin_changes_reach_cached_clients_at_once(backend: Backend) {
        admin_changes_reach_cached_clients_at_once_on(backend).await
    }
}

/// The token endpoint caches clients; a change through this server's admin API still applies to
/// the very next request.
async fn admin_changes_reach_cached_clients_at_once_on(backend: Backend) {
    let server = token_server(backend, &[]).await;
    let client = machine_client(&server, "client_secret_basic").await;
    let path = format!("/oauth-provider/clients/{}", client.client_id);
    let admin = |method: reqwest::Method, body: Value| {
        let request = server.client.request(method, server.url(&path)).bearer_auth(ADMIN_TOKEN).json(&body);
        async move {
            let response = request.send().await.expect("admin request");
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let grant = form(&[("grant_type", "client_credentials")]);
    let token = token_for(&server, &client, &[]).await;
    assert_eq!(introspect(&server, &client, &token).await["active"], true, "the client is now cached");

    assert_eq!(admin(reqwest::Method::PATCH, json!({ "status": "suspended" })).await.0, 200);
    let answer =
        post_form(&server, "/oauth-provider/token", Some(&basic(&client.client_id, &client.secret)), grant.clone())
            .await;
    assert_oauth_error(&answer, 401, "invalid_client", "suspended while cached");
    let answer = post_form(
        &server,
        "/oauth-provider/introspect",
        Some(&basic(&client.client_id, &client.secret)),
        form(&[("token", &token)]),
    )
    .await;
    assert_oauth_error(&answer, 401, "invalid_client", "introspection by a suspended client");
    assert_eq!(admin(reqwest::Method::PATCH, json!({ "status": "active" })).await.0, 200);
    token_for(&server, &client, &[]).await;

    let rotated = server
        .client
        .post(server.url(&format!("{path}/regenerate-secret")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .expect("regenerate");
    assert_eq!(rotated.status().as_u16(), 200);
    let rotated: Value = rotated.json().await.expect("json");
    let new_secret = rotated["client_secret"].as_str().expect("client_secret").to_string();
    let answer =
        post_form(&server, "/oauth-provider/token", Some(&basic(&client.client_id, &client.secret)), grant.clone())
            .await;
    assert_oauth_error(&answer, 401, "invalid_client", "the replaced secret, no grace");
    let answer =
        post_form(&server, "/oauth-provider/token", Some(&basic(&client.client_id, &new_secret)), grant.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    assert_eq!(admin(reqwest::Method::DELETE, Value::Null).await.0, 204);
    let answer = post_form(&server, "/oauth-provider/token", Some(&basic(&client.client_id, &new_secret)), grant).await;
    assert_oauth_error(&answer, 401, "invalid_client", "deleted while cached");
}

async fn client_credentials_with_basic_and_post_on(backend: Backend) {
    let server = token_server(backend, &[]).await;
    let set = jwks(&server).await;

    for method in ["client_secret_basic", "client_secret_post"] {
        let client = machine_client(&server, method).await;
        let (authorization, body) = if method == "client_secret_basic" {
            (Some(basic(&client.client_id, &client.secret)), form(&[("grant_type", "client_credentials")]))
        } else {
            (
                None,
                form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client.client_id),
                    ("client_secret", &client.secret),
                ]),
            )
        };
        let answer = post_form(&server, "/oauth-provider/token", authorization.as_deref(), body).await;
        assert_eq!(answer.status, 200, "{method}: {}", answer.text);
        assert_eq!(answer.header("cache-control"), Some("no-store"));
        assert_eq!(answer.header("pragma"), Some("no-cache"));
        assert_eq!(answer.body["token_type"], "Bearer");
        assert_eq!(answer.body["expires_in"], 900, "ACCESS_TOKEN_EXPIRY defaults to 15m");
        assert_eq!(answer.body["scope"], "orders:read orders:write", "all the client's scopes by default");
        let keys: Vec<&str> = answer.body.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4, "nothing but the RFC 6749 §5.1 members: {keys:?}");

        let token = answer.body["access_token"].as_str().expect("token");
        let (header, claims) = verify_with_jwks(token, &set, ISSUER);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"), "RFC 9068 §2.1");
        assert_eq!(header.kid.as_deref(), Some(test_key().kid()));
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.sub, client.client_id, "client_credentials: the client is the subject");
        assert_eq!(claims.client_id, client.client_id);
        assert_eq!(claims.aud, ISSUER, "no JWT_AUDIENCE: the issuer is the audience");
        assert_eq!(claims.exp - claims.iat, 900);
        assert!((claims.iat - now()).abs() < 60);
        assert_eq!(claims.scope.as_deref(), Some("orders:read orders:write"));
        assert_eq!(claims.jti.len(), 32);
    }

    // A narrower scope is granted as asked; each token has its own jti.
    let client = machine_client(&server, "client_secret_basic").await;
    let first = token_for(&server, &client, &[("scope", "orders:read")]).await;
    let second = token_for(&server, &client, &[("scope", "orders:read")]).await;
    let (_, a) = verify_with_jwks(&first, &set, ISSUER);
    let (_, b) = verify_with_jwks(&second, &set, ISSUER);
    assert_eq!(a.scope.as_deref(), Some("orders:read"));
    assert_ne!(a.jti, b.jti);

    // The audit trail has the issue, with the jti and never the token.
    let events = audit_actions(&server).await;
    let issued: Vec<_> = events.iter().filter(|(action, _, _)| action == "token.issued").collect();
    assert_eq!(issued.len(), 4, "{events:?}");
    let (_, subject, details) = issued.last().expect("one");
    assert_eq!(subject.as_deref(), Some(b.jti.as_str()));
    let details: Value = serde_json::from_str(details).expect("json details");
    assert_eq!(details["scope"], "orders:read");
    assert_eq!(details["aud"], ISSUER);
    assert!(events.iter().all(|(_, _, d)| !d.contains(&second) && !d.contains(&client.secret)));
}

/// One bad token request and the answer it must get.
struct Case {
    what: &'static str,
    authorization: Option<String>,
    body: String,
    status: u16,
    error: &'static str,
}

impl Case {
    fn new(what: &'static str, authorization: Option<String>, body: String, status: u16, error: &'static str) -> Self {
        Case { what, authorization, body, status, error }
    }
}

async fn token_endpoint_bad_input_on(backend: Backend) {
    let server = token_server(backend, &[]).await;
    let client = machine_client(&server, "client_secret_basic").await;
    let post_client = machine_client(&server, "client_secret_post").await;
    let id = client.client_id.as_str();
    let good = basic(id, &client.secret);
    let grant = form(&[("grant_type", "client_credentials")]);
    let ten_kb = "x".repeat(10 * 1024);

    // Credentials in the body, with the grant.
    let post = |client_id: &str, secret: &str| {
        form(&[("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", secret)])
    };
    let with = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("grant_type", "client_credentials")];
        pairs.extend_from_slice(extra);
        form(&pairs)
    };
    let (post_id, post_secret) = (post_client.client_id.as_str(), post_client.secret.as_str());
    let basic_failure =
        |what, authorization: String| Case::new(what, Some(authorization), grant.clone(), 401, "invalid_client");
    let cases = vec![
        basic_failure("wrong secret (basic)", basic(id, "cs_wrong")),
        Case::new("wrong secret (post)", None, post(post_id, "cs_wrong"), 401, "invalid_client"),
        Case::new("no credentials", None, grant.clone(), 401, "invalid_client"),
        basic_failure("empty secret", basic(id, "")),
        basic_failure("malformed Basic", "Basic !!!not-base64".into()),
        basic_failure("Basic without a colon", format!("Basic {}", STANDARD.encode(id))),
        basic_failure("another scheme", "Bearer abc".into()),
        Case::new("credentials both ways", Some(good.clone()), post(id, &client.secret), 400, "invalid_request"),
        Case::new(
            "body client_id contradicts the header",
            Some(good.clone()),
            post(post_id, ""),
            400,
            "invalid_request",
        ),
        Case::new(
            "duplicated client_id",
            None,
            format!("{}&client_id={post_id}", post(post_id, post_secret)),
            400,
            "invalid_request",
        ),
        Case::new(
            "duplicated client_secret",
            None,
            format!("{}&client_secret=x", post(post_id, post_secret)),
            400,
            "invalid_request",
        ),
        basic_failure("a client_secret_post client using Basic", basic(post_id, post_secret)),
        Case::new("a client_secret_basic client using the body", None, post(id, &client.secret), 401, "invalid_client"),
        basic_failure("unknown client", basic("cl_doesnotexist", "cs_whatever")),
        basic_failure("SQL metacharacters (basic)", basic("cl_x' OR '1'='1", "cs")),
        Case::new(
            "SQL metacharacters (post)",
            None,
            post("cl_x'; DROP TABLE oauth_clients; --", "cs"),
            401,
            "invalid_client",
        ),
        basic_failure("NUL byte (basic)", basic("cl_a\0b", "cs")),
        Case::new("NUL byte (post)", None, post("cl_a\0b", "cs"), 401, "invalid_client"),
        basic_failure("10 KB client_id (basic)", basic(&ten_kb, "cs")),
        Case::new("10 KB client_id (post)", None, post(&ten_kb, "cs"), 401, "invalid_client"),
        Case::new("grant_type missing", Some(good.clone()), String::new(), 400, "invalid_request"),
        Case::new(
            "grant_type unknown",
            Some(good.clone()),
            form(&[("grant_type", "password")]),
            400,
            "unsupported_grant_type",
        ),
        Case::new(
            "authorization_code for a client_credentials client",
            Some(good.clone()),
            form(&[("grant_type", "authorization_code"), ("code", "x")]),
            400,
            "unauthorized_client",
        ),
        Case::new(
            "grant_type repeated",
            Some(good.clone()),
            "grant_type=client_credentials&grant_type=client_credentials".into(),
            400,
            "invalid_request",
        ),
        Case::new(
            "scope outside the client's",
            Some(good.clone()),
            with(&[("scope", "orders:read admin")]),
            400,
            "invalid_scope",
        ),
        Case::new(
            "a scope the client lacks",
            Some(good.clone()),
            with(&[("scope", "reports:read")]),
            400,
            "invalid_scope",
        ),
        Case::new("openid for a machine", Some(good.clone()), with(&[("scope", "openid")]), 400, "invalid_scope"),
        Case::new("scope grammar", Some(good.clone()), with(&[("scope", "orders:read\"x")]), 400, "invalid_scope"),
        Case::new(
            "invalid UTF-8",
            Some(good.clone()),
            "grant_type=client_credentials&scope=%FF".into(),
            400,
            "invalid_request",
        ),
        Case::new(
            "oversized body",
            Some(good.clone()),
            with(&[("pad", &"a".repeat(20 * 1024))]),
            400,
            "invalid_request",
        ),
    ];
    for case in &cases {
        let answer =
            post_form(&server, "/oauth-provider/token", case.authorization.as_deref(), case.body.clone()).await;
        let what = case.what;
        assert_oauth_error(&answer, case.status, case.error, what);
        // Every invalid_client carries the challenge, whatever the client tried (RFC 6749 §5.2
        // asks for it when Basic was used; answering alike tells nothing about the client).
        let www = answer.header("www-authenticate");
        if case.status == 401 {
            assert_eq!(www, Some(CLIENT_CHALLENGE), "{what}");
        } else {
            assert!(www.is_none(), "{what}: unexpected WWW-Authenticate {www:?}");
        }
    }

    // Not a form at all.
    for content_type in ["application/json", "text/plain", ""] {
        let answer = post_raw(
            &server,
            "/oauth-provider/token",
            Some(&good),
            content_type,
            br#"{"grant_type":"client_credentials"}"#.to_vec(),
        )
        .await;
        assert_oauth_error(&answer, 400, "invalid_request", content_type);
    }
    let answer = post_raw(
        &server,
        "/oauth-provider/token",
        Some(&good),
        "application/x-www-form-urlencoded; charset=UTF-8",
        grant.clone().into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "a charset parameter is fine: {}", answer.text);

    // A chunked body (no Content-Length) over the limit is refused the same way.
    let (status, text) = chunked_post(&server, "/oauth-provider/token", &good, 40, 1024).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_request"), "{text}");

    // Wrong method: no handler runs, no 500.
    let response = server.client.get(server.url("/oauth-provider/token")).send().await.expect("get");
    assert_eq!(response.status().as_u16(), 405);

    // A public client has no secret and cannot use client_credentials.
    let spa = crate::support::flow::spa(&server).await;
    let answer = post_form(
        &server,
        "/oauth-provider/token",
        None,
        form(&[("grant_type", "client_credentials"), ("client_id", &spa.client_id)]),
    )
    .await;
    assert_oauth_error(&answer, 401, "invalid_client", "public client");

    // A confidential client registered for authorization_code only.
    let web_app = register(
        &server,
        json!({
            "client_name": "Web app", "redirect_uris": ["https://app.example.com/callback"],
        }),
    )
    .await;
    let answer =
        post_form(&server, "/oauth-provider/token", Some(&basic(&web_app.client_id, &web_app.secret)), grant.clone())
            .await;
    assert_oauth_error(&answer, 400, "unauthorized_client", "grant not registered");

    // Suspended, then active again.
    set_client_status(&server, id, "suspended").await;
    let answer = post_form(&server, "/oauth-provider/token", Some(&good), grant.clone()).await;
    assert_oauth_error(&answer, 401, "invalid_client", "suspended client");
    set_client_status(&server, id, "active").await;
    let answer = post_form(&server, "/oauth-provider/token", Some(&good), grant.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

/// A form POST with `Transfer-Encoding: chunked` and no length, written by hand (reqwest
/// without its `stream` feature always sends a length). Returns the status and the raw answer.
async fn chunked_post(
    server: &TestServer,
    path: &str,
    authorization: &str,
    chunks: usize,
    size: usize,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.base_url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = format!("{size:x}\r\n{}\r\n", "a".repeat(size));
    for _ in 0..chunks {
        // The server may answer and close before the whole body is sent.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

#[tokio::test]
async fn discovery_documents_agree_with_each_other_and_the_jwks() {
    let server = token_server(Backend::Sqlite, &[]).await;
    let fetch = |path: &'static str| {
        let request = server
            .client
            .get(server.url(path))
            // The issuer comes from configuration; request headers cannot move it.
            .header("Host", "evil.example.com")
            .header("X-Forwarded-Host", "evil.example.com")
            .header("X-Forwarded-Proto", "https");
        async move {
            let response = request.send().await.expect("discovery");
            assert_eq!(response.status().as_u16(), 200, "{path}");
            assert_eq!(response.headers()["cache-control"], "public, max-age=300", "{path}");
            assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("application/json"));
            response.json::<Value>().await.expect("json")
        }
    };
    let openid = fetch("/.well-known/openid-configuration").await;
    let oauth = fetch("/.well-known/oauth-authorization-server").await;
    assert_eq!(openid, oauth, "one document");
    assert!(!openid.to_string().contains("evil.example.com"));

    assert_eq!(openid["issuer"], ISSUER);
    for (member, path) in [
        ("token_endpoint", "/oauth-provider/token"),
        ("jwks_uri", "/oauth-provider/jwks"),
        ("introspection_endpoint", "/oauth-provider/introspect"),
        ("revocation_endpoint", "/oauth-provider/revoke"),
    ] {
        assert_eq!(openid[member], format!("{ISSUER}{path}"), "{member}");
    }
    assert_eq!(openid["grant_types_supported"], json!(["authorization_code", "refresh_token", "client_credentials"]));
    assert_eq!(
        openid["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(
        openid["introspection_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(openid["response_types_supported"], json!(["code"]));
    let scopes = openid["scopes_supported"].as_array().expect("scopes");
    assert!(scopes.contains(&json!("orders:read")) && scopes.contains(&json!("openid")));
    // The rest of the document (sign-in endpoints, PKCE, ID tokens) is checked in code_flow.rs.

    // Every advertised endpoint answers on this server (at the issuer's path).
    let path_of = |member: &str| openid[member].as_str().expect("url").trim_start_matches(ISSUER).to_string();
    let set = server.client.get(server.url(&path_of("jwks_uri"))).send().await.expect("jwks");
    assert_eq!(set.headers()["cache-control"], "public, max-age=300");
    let set: Value = set.json().await.expect("json");
    let keys = set["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kid"], test_key().kid());
    assert_eq!(
        (key["kty"].as_str(), key["alg"].as_str(), key["use"].as_str()),
        (Some("RSA"), Some("RS256"), Some("sig"))
    );
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(key.get(private).is_none(), "private member {private} in the JWKS");
    }
    for member in ["token_endpoint", "introspection_endpoint", "revocation_endpoint"] {
        let answer = post_form(&server, &path_of(member), None, "").await;
        assert!(answer.status == 400 || answer.status == 401, "{member}: {}", answer.status);
        assert!(answer.body["error"].is_string(), "{member}: an OAuth error, not a 404");
    }
}

#[tokio::test]
async fn every_algorithm_signs_tokens_that_verify_against_the_jwks() {
    use truxe_server::keys::{Algorithm as KeyAlgorithm, SigningKey};
    for alg in [KeyAlgorithm::ES256, KeyAlgorithm::EdDSA] {
        let key = SigningKey::generate(alg, 0).expect("key");
        let pem = key.private_pem().secret().clone();
        let server =
            token_server(Backend::Sqlite, &[("JWT_PRIVATE_KEY", pem.as_str()), ("JWT_ALGORITHM", alg.as_str())]).await;
        let set = jwks(&server).await;
        let client = machine_client(&server, "client_secret_basic").await;
        let token = token_for(&server, &client, &[]).await;
        let (header, claims) = verify_with_jwks(&token, &set, ISSUER);
        assert_eq!(format!("{:?}", header.alg), alg.as_str());
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        assert_eq!(claims.client_id, client.client_id);
        assert_eq!(introspect(&server, &client, &token).await["active"], true, "{alg}");
    }
}

#[tokio::test]
async fn the_openssl_provider_wins_over_rust_crypto_in_this_binary() {
    // This binary enables jsonwebtoken's rust_crypto (for the independent check above), so
    // the crate would pick RustCrypto by itself; the server must still sign with OpenSSL.
    let server = token_server(Backend::Sqlite, &[]).await;
    truxe_server::jwt::install_provider().expect("OpenSSL is jsonwebtoken's provider in this process");
    let client = machine_client(&server, "client_secret_basic").await;
    let token = token_for(&server, &client, &[]).await;
    let (message, signature) = token.rsplit_once('.').expect("jws");
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    assert!(test_key().verify(message.as_bytes(), &signature));
}
