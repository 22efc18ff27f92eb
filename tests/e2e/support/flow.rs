//! Fixtures for sign-in flows: a server with a known session secret, users, web and SPA
//! clients, a signed-in [`Agent`], the authorize round trip, the code exchange and refresh, ID
//! token verification and userinfo.

#![allow(dead_code)]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel::prelude::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION};
use serde_json::{Value, json};
use truxe_server::http::session::derive_key;
use truxe_server::model::request::RequestMeta;
use truxe_server::oauth::client_secret::hmac_sha256;
use truxe_server::oauth::pkce;
use truxe_server::secret::Secret;
use truxe_server::service::authorize::token_hash;
use truxe_server::service::sessions as session_service;
use truxe_server::service::users::{self as user_service, NewUser};
use truxe_server::store::grants::{self as grant_store, AuthorizationCode, Grant};
use truxe_server::store::schema::{oauth_grants, oauth_tokens};
use truxe_server::store::tokens::{self as token_store, RefreshToken};
use truxe_server::store::{self, unix_now};

use crate::support::agent::forms;
use crate::support::oauth::{ISSUER, Registered, form, post_form, register};
use crate::support::{Backend, TestServer, config_from};

pub const SESSION_SECRET: &str = "test-session-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
pub const CALLBACK: &str = "https://app.example.com/callback";
pub const VERIFIER: &str = "code-flow-test-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

/// A server for sign-in tests: a known session secret, API scopes, no rate limits.
pub async fn flow_server(backend: Backend, extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![
        ("SESSION_SECRET", SESSION_SECRET),
        ("TRUXE_SCOPES", "orders:read,orders:write"),
        ("RATE_LIMIT_ENABLED", "false"),
    ];
    vars.extend_from_slice(extra);
    TestServer::start_with(backend, &vars).await
}

pub fn pool(server: &TestServer) -> store::Pool {
    let config = config_from(&[("DATABASE_URL", &server.db.url)], &server.db.dir);
    store::connect(&config.database).expect("connect to the server's database")
}

/// A user with a display name; returns the user id.
pub fn create_user(server: &TestServer, email: &str) -> String {
    let pool = pool(server);
    let mut conn = pool.get().expect("connection");
    let new = NewUser { email: email.into(), display_name: Some("Ada Lovelace".into()), email_verified: true };
    user_service::create(&mut conn, &new, "test", unix_now()).expect("user").user_id.into()
}

/// A web application: confidential (Basic), sign-in with refresh tokens, a logout URI.
pub async fn web_app(server: &TestServer) -> Registered {
    register(
        server,
        json!({
            "client_name": "Orders Web",
            "redirect_uris": [CALLBACK, "http://127.0.0.1:8080/cb"],
            "post_logout_redirect_uris": ["https://app.example.com/signed-out"],
            "allowed_scopes": ["openid", "email", "profile", "offline_access", "orders:read"],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "client_secret_basic",
            "logo_uri": "https://app.example.com/logo.png",
            "policy_uri": "https://app.example.com/privacy",
        }),
    )
    .await
}

/// A single-page or native application: public, PKCE, refresh tokens.
pub async fn spa(server: &TestServer) -> Registered {
    register(
        server,
        json!({
            "client_name": "Orders SPA",
            "redirect_uris": ["http://127.0.0.1:5173/callback"],
            "allowed_scopes": ["openid", "email", "offline_access"],
            "token_endpoint_auth_method": "none",
        }),
    )
    .await
}

/// A browser: keeps cookies (the session cookie can be planted), never follows redirects.
pub struct Agent {
    pub client: reqwest::Client,
    pub jar: Arc<reqwest::cookie::Jar>,
    pub base: String,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The query parameters of the redirect.
    pub fn redirect_params(&self) -> Vec<(String, String)> {
        let url = url::Url::parse(self.location()).unwrap_or_else(|_| panic!("not an absolute redirect: {self:?}"));
        url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.redirect_params().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// An error page: 4xx HTML, and certainly no redirect.
    #[track_caller]
    pub fn assert_error_page(&self, context: &str) {
        assert!(self.status.is_client_error(), "{context}: {} {}", self.status, self.body);
        assert!(self.headers.get(LOCATION).is_none(), "{context}: redirected to {}", self.location());
        assert!(
            self.headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/html")),
            "{context}: not an HTML page"
        );
    }

    /// An error page ([`Self::assert_error_page`]) that says what went wrong: its heading and
    /// its message, as the person reads them.
    #[track_caller]
    pub fn assert_error_page_says(&self, title: &str, message: &str, context: &str) {
        self.assert_error_page(context);
        assert!(self.body.contains(&format!("<h1>{title}</h1>")), "{context}: heading {title:?} in {}", self.body);
        assert!(self.body.contains(&format!("<p>{message}</p>")), "{context}: message {message:?} in {}", self.body);
    }

    /// A redirect to `redirect_uri` with `error` (and `iss`, RFC 9207).
    #[track_caller]
    pub fn assert_error_redirect(&self, redirect_uri: &str, error: &str, context: &str) {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{context}: {}", self.body);
        assert!(self.location().starts_with(&format!("{redirect_uri}?")), "{context}: {}", self.location());
        assert_eq!(self.param("error").as_deref(), Some(error), "{context}: {}", self.location());
        assert!(self.param("error_description").is_some(), "{context}");
        assert_eq!(self.param("iss").as_deref(), Some(ISSUER), "{context}");
        assert!(self.param("code").is_none(), "{context}");
    }
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers.get(LOCATION), self.body)
    }
}

impl Agent {
    pub fn new(server: &TestServer) -> Self {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Agent { client, jar, base: server.base_url.clone() }
    }

    /// A browser signed in as `user_id` (a server-side session and its signed cookie, as the
    /// magic link would leave them); returns it with the session's hash.
    pub fn signed_in(server: &TestServer, user_id: &str) -> (Self, String) {
        let agent = Self::new(server);
        let hash = agent.sign_in(server, user_id);
        (agent, hash)
    }

    /// A browser signed in as `user_id` whose session records `amr` (as a sign-in with a second
    /// factor would: `["email", "mfa", "otp"]`); returns it with the session's hash.
    pub fn signed_in_with(server: &TestServer, user_id: &str, amr: &[&str]) -> (Self, String) {
        let agent = Self::new(server);
        let hash = agent.sign_in_with(server, user_id, amr);
        (agent, hash)
    }

    pub fn sign_in(&self, server: &TestServer, user_id: &str) -> String {
        self.sign_in_with(server, user_id, &["email"])
    }

    pub fn sign_in_with(&self, server: &TestServer, user_id: &str, amr: &[&str]) -> String {
        let pool = pool(server);
        let mut conn = pool.get().expect("connection");
        let user = user_service::get(&mut conn, user_id).expect("user");
        let id = session_service::start(&mut conn, &user, amr, false, 3600, &RequestMeta::default(), unix_now())
            .expect("session")
            .expect("an active user");
        let key = derive_key(&Secret::new(SESSION_SECRET.to_string()));
        let mac = URL_SAFE_NO_PAD.encode(hmac_sha256(key.secret(), id.secret().as_bytes()));
        let url = url::Url::parse(&self.base).expect("base url");
        self.jar.add_cookie_str(&format!("truxe_session={}.{mac}; Path=/", id.secret()), &url);
        session_service::session_hash(id.secret())
    }

    pub async fn page(response: reqwest::Response) -> Page {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        assert!(!status.is_server_error(), "a {status}:\n{body}");
        Page { status, headers, body }
    }

    pub fn absolute(&self, path: &str) -> String {
        if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) }
    }

    pub async fn get(&self, path: &str) -> Page {
        Self::page(self.client.get(self.absolute(path)).send().await.expect("GET")).await
    }

    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        Self::page(self.client.post(self.absolute(path)).form(fields).send().await.expect("POST")).await
    }

    /// Submits the form of `page` that has the button labelled `button` (with its name/value),
    /// `overrides` replacing or adding fields.
    pub async fn submit(&self, page: &Page, button: &str, overrides: &[(&str, &str)]) -> Page {
        let form = forms(&page.body)
            .into_iter()
            .find(|f| f.buttons.iter().any(|(_, _, text)| text == button))
            .unwrap_or_else(|| panic!("no form with a {button:?} button:\n{}", page.body));
        let mut fields = form.fields.clone();
        for (name, value) in overrides {
            fields.retain(|(n, _)| n != name);
            fields.push((name.to_string(), value.to_string()));
        }
        if let Some((Some(name), value, _)) = form.buttons.iter().find(|(_, _, text)| text == button) {
            fields.push((name.clone(), value.clone().unwrap_or_default()));
        }
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.post(&form.action, &pairs).await
    }
}

/// `/oauth-provider/authorize?…` with `params` (url-encoded).
pub fn authorize_path(params: &[(&str, &str)]) -> String {
    format!("/oauth-provider/authorize?{}", form(params))
}

/// A complete, valid request of `client` for `scope`, PKCE with [`VERIFIER`].
pub fn request_params<'a>(client: &'a Registered, redirect_uri: &'a str, scope: &'a str) -> Vec<(&'a str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", client.client_id.clone()),
        ("redirect_uri", redirect_uri.into()),
        ("scope", scope.into()),
        ("state", "af0ifjsldkj".into()),
        ("nonce", "n-0S6_WzA2Mj".into()),
        ("code_challenge", pkce::s256_challenge(VERIFIER)),
        ("code_challenge_method", "S256".into()),
    ]
}

pub fn path_of(params: &[(&str, String)]) -> String {
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    authorize_path(&pairs)
}

/// Authorize (allowing on the consent page when it shows) and return the code.
pub async fn authorize_code(agent: &Agent, client: &Registered, redirect_uri: &str, scope: &str) -> String {
    let page = agent.get(&path_of(&request_params(client, redirect_uri, scope))).await;
    let done = if page.status == StatusCode::OK {
        assert!(page.body.contains("Allow") && page.body.contains("Deny"), "{}", page.body);
        agent.submit(&page, "Allow", &[]).await
    } else {
        page
    };
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    assert!(done.location().starts_with(&format!("{redirect_uri}?")), "{}", done.location());
    assert_eq!(done.param("state").as_deref(), Some("af0ifjsldkj"));
    assert_eq!(done.param("iss").as_deref(), Some(ISSUER));
    done.param("code").unwrap_or_else(|| panic!("no code: {}", done.location()))
}

/// The token endpoint's answer: status and JSON.
pub struct TokenAnswer {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

/// POST /oauth-provider/token for `client`, authenticated its registered way.
pub async fn token(server: &TestServer, client: &Registered, pairs: &[(&str, &str)]) -> TokenAnswer {
    let (authorization, mut all) = client.credentials();
    all.extend_from_slice(pairs);
    let answer = post_form(server, "/oauth-provider/token", authorization.as_deref(), form(&all)).await;
    assert!(answer.status < 500, "{}", answer.text);
    TokenAnswer { status: answer.status, body: answer.body, headers: answer.headers }
}

pub async fn exchange(server: &TestServer, client: &Registered, code: &str, redirect_uri: &str) -> TokenAnswer {
    token(
        server,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
}

/// The access and refresh token of a sign-in: authorize `scope` (allowing on the consent page),
/// then exchange the code.
pub async fn sign_in_tokens(server: &TestServer, agent: &Agent, app: &Registered, scope: &str) -> (String, String) {
    let code = authorize_code(agent, app, CALLBACK, scope).await;
    let answer = exchange(server, app, &code, CALLBACK).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    (
        answer.body["access_token"].as_str().expect("access token").to_string(),
        answer.body["refresh_token"].as_str().expect("refresh token").to_string(),
    )
}

pub async fn refresh(
    server: &TestServer,
    client: &Registered,
    refresh_token: &str,
    scope: Option<&str>,
) -> TokenAnswer {
    let mut pairs = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    if let Some(scope) = scope {
        pairs.push(("scope", scope));
    }
    token(server, client, &pairs).await
}

#[track_caller]
pub fn assert_grant_error(answer: &TokenAnswer, error: &str, context: &str) {
    assert_eq!(answer.status, 400, "{context}: {}", answer.body);
    assert_eq!(answer.body["error"], error, "{context}: {}", answer.body);
    assert_eq!(answer.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"), "{context}");
}

/// The payload of a JWT, unverified (for private claims).
pub fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

/// Verifies an ID token the way a relying party does (OIDC Core §3.1.3.7) and returns its claims:
/// issued by [`ISSUER`] after a sign-in by email link (`amr` `["email"]`).
pub fn verify_id_token(id_token: &str, set: &JwkSet, client_id: &str, nonce: &str, access_token: &str) -> Value {
    let claims = verify_id_token_of(ISSUER, id_token, set, client_id, nonce, access_token);
    assert_eq!(claims["amr"], json!(["email"]));
    claims
}

/// [`verify_id_token`] for any issuer and sign-in method: the signature against the JWKS (by
/// `kid`), `iss`, `aud`, `exp`, `nonce`, `azp`, `at_hash` and a recent `auth_time`.
pub fn verify_id_token_of(
    issuer: &str,
    id_token: &str,
    set: &JwkSet,
    client_id: &str,
    nonce: &str,
    access_token: &str,
) -> Value {
    truxe_server::jwt::install_provider().expect("the OpenSSL provider is the one in use");
    let header = jsonwebtoken::decode_header(id_token).expect("a JWS header");
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let jwk = set.find(header.kid.as_deref().expect("kid")).expect("the kid is in the JWKS");
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let key = DecodingKey::from_jwk(jwk).expect("key");
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation).expect("the ID token verifies").claims;
    assert_eq!(claims["nonce"], nonce);
    assert_eq!(claims["azp"], client_id);
    let digest = openssl::sha::sha256(access_token.as_bytes());
    assert_eq!(claims["at_hash"], URL_SAFE_NO_PAD.encode(&digest[..16]), "at_hash");
    let now = unix_now();
    let auth_time = claims["auth_time"].as_i64().expect("auth_time");
    assert!((now - 60..=now).contains(&auth_time), "auth_time {auth_time}");
    claims
}

pub async fn userinfo_get(server: &TestServer, bearer: Option<&str>) -> (u16, HeaderMap, Value) {
    let mut request = server.client.get(server.url("/oauth-provider/userinfo"));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("userinfo");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    assert!(status < 500);
    (status, headers, body)
}

pub fn challenge(headers: &HeaderMap) -> String {
    headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// A userinfo answer refusing the token (RFC 6750 §3.1): 401 with the `invalid_token`
/// challenge, whose description names `why` (the rule that refused it).
#[track_caller]
pub fn assert_invalid_token(answer: &(u16, HeaderMap, Value), why: &str, context: &str) {
    let (status, headers, _) = answer;
    let challenge = challenge(headers);
    assert_eq!(*status, 401, "{context}: {challenge}");
    let prefix = r#"Bearer realm="truxe", error="invalid_token", error_description=""#;
    assert!(challenge.starts_with(prefix), "{context}: {challenge}");
    assert!(challenge[prefix.len()..].contains(why), "{context}: {why:?} in {challenge}");
    assert_eq!(headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"), "{context}");
}

/// A token request built up front, to be sent from a task of its own.
#[derive(Clone)]
pub struct PreparedToken {
    http: reqwest::Client,
    url: String,
    authorization: Option<String>,
    body: String,
}

impl PreparedToken {
    /// `POST /oauth-provider/token` for `client`, authenticated its registered way.
    pub fn new(server: &TestServer, client: &Registered, pairs: &[(&str, &str)]) -> Self {
        PreparedToken { http: server.client.clone(), ..Self::at(&server.base_url, client, pairs) }
    }

    /// The same request to the server at `base_url` (a spawned process, say).
    pub fn at(base_url: &str, client: &Registered, pairs: &[(&str, &str)]) -> Self {
        let (authorization, mut all) = client.credentials();
        all.extend_from_slice(pairs);
        PreparedToken {
            http: reqwest::Client::new(),
            url: format!("{base_url}/oauth-provider/token"),
            authorization,
            body: form(&all),
        }
    }

    pub async fn send(self) -> TokenAnswer {
        let mut request =
            self.http.post(&self.url).header("Content-Type", "application/x-www-form-urlencoded").body(self.body);
        if let Some(authorization) = self.authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request.send().await.expect("token request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        assert!(status < 500, "{status}: {text}");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        TokenAnswer { status, body, headers }
    }
}

/// Sends every request from a task of its own, all released at once by one barrier (so that
/// they reach the server together, not one after the other); the answers in request order.
pub async fn send_together(requests: Vec<PreparedToken>) -> Vec<TokenAnswer> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                request.send().await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    answers
}

// ---------------------------------------------------------------------------------------------
// The database behind the server, read (and aged) directly.

/// The stored row of an authorization code.
pub fn code_row(server: &TestServer, code: &str) -> AuthorizationCode {
    let pool = pool(server);
    let mut conn = pool.get().expect("connection");
    grant_store::find_code(&mut conn, &token_hash(code)).expect("query").expect("the code's row")
}

/// The stored row of a refresh token.
pub fn refresh_row(server: &TestServer, refresh_token: &str) -> RefreshToken {
    let pool = pool(server);
    let mut conn = pool.get().expect("connection");
    token_store::find_refresh_token(&mut conn, &token_hash(refresh_token)).expect("query").expect("the token's row")
}

/// Every grant of `client_id` (ordered by `created_at`, whole seconds: find one by its id).
pub fn grants_of(server: &TestServer, client_id: &str) -> Vec<Grant> {
    let pool = pool(server);
    let mut conn = pool.get().expect("connection");
    oauth_grants::table
        .filter(oauth_grants::client_id.eq(client_id))
        .order((oauth_grants::created_at, oauth_grants::grant_id))
        .select(Grant::as_select())
        .load(&mut conn)
        .expect("grants")
}

/// The refresh tokens of one grant (its token family).
pub fn family(server: &TestServer, grant_id: &str) -> Vec<RefreshToken> {
    let pool = pool(server);
    let mut conn = pool.get().expect("connection");
    oauth_tokens::table
        .filter(oauth_tokens::grant_id.eq(grant_id))
        .filter(oauth_tokens::token_type.eq("refresh_token"))
        .select(RefreshToken::as_select())
        .load(&mut conn)
        .expect("family")
}

/// Moves a refresh token's expiry, as the passing of time would.
pub fn set_refresh_expires_at(server: &TestServer, refresh_token: &str, expires_at: i64) {
    let pool = pool(server);
    let mut conn = pool.get().expect("connection");
    let updated = diesel::update(oauth_tokens::table.filter(oauth_tokens::token_hash.eq(token_hash(refresh_token))))
        .set(oauth_tokens::expires_at.eq(expires_at))
        .execute(&mut conn)
        .expect("update");
    assert_eq!(updated, 1, "one refresh token row");
}

pub fn set_rotated_at(server: &TestServer, rotated_at: i64) {
    let pool = pool(server);
    let mut conn = pool.get().expect("connection");
    diesel::update(oauth_tokens::table.filter(oauth_tokens::rotated_at.is_not_null()))
        .set(oauth_tokens::rotated_at.eq(rotated_at))
        .execute(&mut conn)
        .expect("update");
}

// ---------------------------------------------------------------------------------------------
