//! Fixtures for the token endpoint family: a token server, client registration through the admin
//! API, form posts with the answer's status, headers and JSON, introspection, the JWKS and an
//! independent JWT verifier.

#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use diesel::prelude::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer};

pub use crate::support::ADMIN_TOKEN;
/// What `config_from` sets; the discovery URLs and the `iss` claim come from it.
pub const ISSUER: &str = "http://127.0.0.1:3001";

/// Test servers for token work: API scopes to register clients with, no rate limits.
pub async fn token_server(backend: Backend, extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![("TRUXE_SCOPES", "orders:read,orders:write,reports:read"), ("RATE_LIMIT_ENABLED", "false")];
    vars.extend_from_slice(extra);
    TestServer::start_with(backend, &vars).await
}

#[derive(Debug, Clone)]
pub struct Registered {
    pub client_id: String,
    pub secret: String,
    /// `token_endpoint_auth_method`.
    pub method: String,
}

impl Registered {
    /// The Authorization header and body pairs that authenticate this client its way.
    pub fn credentials(&self) -> (Option<String>, Vec<(&str, &str)>) {
        match self.method.as_str() {
            "client_secret_post" => (None, vec![("client_id", &self.client_id), ("client_secret", &self.secret)]),
            "none" => (None, vec![("client_id", &self.client_id)]),
            _ => (Some(basic(&self.client_id, &self.secret)), Vec::new()),
        }
    }
}

/// Registers a client through the admin API.
pub async fn register(server: &TestServer, body: Value) -> Registered {
    let response = server
        .client
        .post(server.url("/oauth-provider/clients"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("register");
    let status = response.status().as_u16();
    let created: Value = response.json().await.expect("json");
    assert_eq!(status, 201, "{created}");
    Registered {
        client_id: created["client_id"].as_str().expect("client_id").to_string(),
        secret: created["client_secret"].as_str().unwrap_or_default().to_string(),
        method: created["token_endpoint_auth_method"].as_str().expect("token_endpoint_auth_method").to_string(),
    }
}

/// `PATCH /oauth-provider/clients/{id}` with `{"status": status}` (`active`, `suspended`).
pub async fn set_client_status(server: &TestServer, client_id: &str, status: &str) {
    let response = server
        .client
        .patch(server.url(&format!("/oauth-provider/clients/{client_id}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "status": status }))
        .send()
        .await
        .expect("patch client");
    assert_eq!(response.status().as_u16(), 200, "{status}: {}", response.text().await.unwrap_or_default());
}

/// `DELETE /oauth-provider/clients/{id}`.
pub async fn delete_client(server: &TestServer, client_id: &str) {
    let response = server
        .client
        .delete(server.url(&format!("/oauth-provider/clients/{client_id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("delete client");
    assert_eq!(response.status().as_u16(), 204, "{}", response.text().await.unwrap_or_default());
}

/// A service account for `client_credentials` with `method` (`client_secret_basic`/`_post`).
pub async fn machine_client(server: &TestServer, method: &str) -> Registered {
    register(
        server,
        json!({
            "client_name": format!("billing worker ({method})"),
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": method,
            "allowed_scopes": ["orders:read", "orders:write"],
        }),
    )
    .await
}

/// RFC 6749 §2.3.1: both halves form-urlencoded, then base64.
pub fn basic(client_id: &str, secret: &str) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("Basic {}", STANDARD.encode(format!("{}:{}", encode(client_id), encode(secret))))
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// POSTs a form body (already encoded) with an optional Authorization header.
pub async fn post_form(
    server: &TestServer,
    path: &str,
    authorization: Option<&str>,
    body: impl Into<String>,
) -> Answer {
    post_raw(server, path, authorization, "application/x-www-form-urlencoded", body.into().into_bytes()).await
}

pub async fn post_raw(
    server: &TestServer,
    path: &str,
    authorization: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let mut request = server.client.post(server.url(path)).header("Content-Type", content_type).body(body);
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, headers, body, text }
}

/// A token for `client`, authenticated the way it registered.
pub async fn token_for(server: &TestServer, client: &Registered, extra: &[(&str, &str)]) -> String {
    let (authorization, mut pairs) = client.credentials();
    pairs.push(("grant_type", "client_credentials"));
    pairs.extend_from_slice(extra);
    let answer = post_form(server, "/oauth-provider/token", authorization.as_deref(), form(&pairs)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body["access_token"].as_str().expect("access_token").to_string()
}

pub async fn introspect(server: &TestServer, caller: &Registered, token: &str) -> Value {
    let (authorization, mut pairs) = caller.credentials();
    pairs.push(("token", token));
    let answer = post_form(server, "/oauth-provider/introspect", authorization.as_deref(), form(&pairs)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    answer.body
}

/// `POST /oauth-provider/revoke` by `caller`, authenticated its registered way.
pub async fn revoke(server: &TestServer, caller: &Registered, token: &str, hint: Option<&str>) -> Answer {
    let (authorization, mut pairs) = caller.credentials();
    pairs.push(("token", token));
    if let Some(hint) = hint {
        pairs.push(("token_type_hint", hint));
    }
    let answer = post_form(server, "/oauth-provider/revoke", authorization.as_deref(), form(&pairs)).await;
    assert!(answer.status < 500, "{}", answer.text);
    answer
}

pub async fn jwks(server: &TestServer) -> JwkSet {
    let response = server.client.get(server.url("/oauth-provider/jwks")).send().await.expect("jwks");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("a JWK Set")
}

/// The claims a resource server would check.
#[derive(Debug, serde::Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    #[serde(default)]
    pub scope: Option<String>,
}

/// Verifies `token` the way a resource server does: find the JWK by `kid`, check the signature
/// and the standard claims with jsonwebtoken. The signature is also checked by RustCrypto
/// directly, so that a bug shared by our signer and our OpenSSL provider cannot hide.
pub fn verify_with_jwks(token: &str, set: &JwkSet, audience: &str) -> (Header, Claims) {
    // Our provider first: with rust_crypto enabled in this test binary, the first provider
    // asked for wins the process, and the in-process servers need theirs (see jwt.rs).
    truxe_server::jwt::install_provider().expect("the OpenSSL provider is the one in use");
    let header = jsonwebtoken::decode_header(token).expect("a JWS header");
    let kid = header.kid.as_deref().expect("a kid");
    let jwk: &Jwk = set.find(kid).expect("the kid is in the JWKS");
    let key = DecodingKey::from_jwk(jwk).expect("a usable JWK");

    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).expect("the token verifies");

    let (message, signature) = token.rsplit_once('.').expect("three parts");
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url signature");
    let rust_crypto = (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&header.alg, &key)
        .expect("RustCrypto verifier");
    rust_crypto.verify(message.as_bytes(), &signature).expect("RustCrypto accepts the signature");
    (header, data.claims)
}

/// A token as the server would sign it, with chosen claims (expired ones, other issuers).
pub fn forge(key_pem: &str, kid: &str, claims: Value) -> String {
    truxe_server::jwt::install_provider().expect("the OpenSSL provider is the one in use");
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.into());
    let key = EncodingKey::from_rsa_pem(key_pem.as_bytes()).expect("rsa key");
    jsonwebtoken::encode(&header, &claims, &key).expect("encode")
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// The audit trail, once the events queued so far are written.
pub async fn audit_actions(server: &TestServer) -> Vec<(String, Option<String>, String)> {
    use truxe_server::store::schema::audit_events as a;
    server.state.audit.flush().await;
    let config = crate::support::config_from(&[("DATABASE_URL", &server.db.url)], &server.db.dir);
    let pool = truxe_server::store::connect(&config.database).expect("connect");
    let mut conn = pool.get().expect("connection");
    // UUIDv7 ids sort in the order the events were written; occurred_at has whole seconds only.
    a::table.select((a::action, a::subject, a::details)).order(a::event_id).load(&mut conn).expect("audit")
}

/// The challenge of every `invalid_client` answer of the token, introspection and revocation
/// endpoints.
pub const CLIENT_CHALLENGE: &str = r#"Basic realm="truxe", charset="UTF-8""#;

/// Every OAuth error answer: the RFC 6749 §5.2 shape, never cached, never a 500; an
/// `invalid_client` is a 401 with [`CLIENT_CHALLENGE`].
#[track_caller]
pub fn assert_oauth_error(answer: &Answer, status: u16, error: &str, context: &str) {
    assert_eq!(answer.status, status, "{context}: {}", answer.text);
    assert_eq!(answer.body["error"], error, "{context}: {}", answer.text);
    if error == "invalid_client" {
        assert_eq!(answer.header("www-authenticate"), Some(CLIENT_CHALLENGE), "{context}");
    }
    assert!(answer.body["error_description"].is_string(), "{context}: {}", answer.text);
    assert_eq!(answer.header("cache-control"), Some("no-store"), "{context}");
    assert_eq!(answer.header("pragma"), Some("no-cache"), "{context}");
    assert!(answer.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{context}");
}
