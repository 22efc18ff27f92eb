//! A relying party's view of an OpenID Connect sign-in: an application registered through the
//! admin API, the authorization request with PKCE and a nonce, the code exchange, and the ID
//! token verified against the JWKS with jsonwebtoken, independent of the server's own decoder.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::Value;
use truxe_server::oauth::pkce;

use super::TestServer;

pub const REDIRECT_URI: &str = "https://app.example.com/callback";
pub const VERIFIER: &str = "relying-party-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

/// A confidential web application allowed to skip consent.
pub struct App {
    pub client_id: String,
    pub client_secret: String,
}

impl App {
    pub async fn register(server: &TestServer, name: &str) -> App {
        let created = server
            .register_client(serde_json::json!({
                "client_name": name,
                "redirect_uris": [REDIRECT_URI],
                "allowed_scopes": ["openid", "email", "offline_access"],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "client_secret_basic",
                "require_consent": false,
            }))
            .await;
        let field = |name: &str| created[name].as_str().unwrap_or_else(|| panic!("no {name}: {created}")).to_string();
        App { client_id: field("client_id"), client_secret: field("client_secret") }
    }

    /// `GET /oauth-provider/authorize` as the browser holding `cookie` (`name=value`); returns the
    /// authorization code from the redirect to the application.
    pub async fn authorize(&self, server: &TestServer, cookie: &str, scope: &str, nonce: &str) -> String {
        let mut url = url::Url::parse(&server.url("/oauth-provider/authorize")).expect("url");
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("scope", scope)
            .append_pair("state", "st-1")
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &pkce::s256_challenge(VERIFIER))
            .append_pair("code_challenge_method", "S256");
        let response = server.client.get(url).header("Cookie", cookie).send().await.expect("authorize");
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "authorize: {:?}", response.text().await);
        let location = response.headers()["location"].to_str().expect("ascii").to_string();
        assert!(location.starts_with(&format!("{REDIRECT_URI}?")), "{location}");
        let back = url::Url::parse(&location).expect("location");
        let param = |name: &str| back.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        assert_eq!(param("state").as_deref(), Some("st-1"));
        param("code").unwrap_or_else(|| panic!("no code: {location}"))
    }

    /// A token-endpoint form with this application's credentials: (status, JSON body).
    pub async fn token(&self, server: &TestServer, form: &[(&str, &str)]) -> (u16, Value) {
        let response = server
            .client
            .post(server.url("/oauth-provider/token"))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(form)
            .send()
            .await
            .expect("token");
        (response.status().as_u16(), response.json().await.expect("token JSON"))
    }

    pub async fn redeem(&self, server: &TestServer, code: &str) -> (u16, Value) {
        self.token(
            server,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", VERIFIER),
            ],
        )
        .await
    }

    pub async fn refresh(&self, server: &TestServer, refresh_token: &str) -> (u16, Value) {
        self.token(server, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
    }

    /// RFC 7662 introspection with this application's credentials.
    pub async fn introspect(&self, server: &TestServer, token: &str) -> Value {
        let response = server
            .client
            .post(server.url("/oauth-provider/introspect"))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspect");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("introspection JSON")
    }

    /// The whole sign-in of the application for the browser holding `cookie`: the token
    /// response (access, refresh and ID token).
    pub async fn sign_in(&self, server: &TestServer, cookie: &str, nonce: &str) -> Value {
        let code = self.authorize(server, cookie, "openid email offline_access", nonce).await;
        let (status, tokens) = self.redeem(server, &code).await;
        assert_eq!(status, 200, "{tokens}");
        for name in ["access_token", "refresh_token", "id_token"] {
            assert!(tokens[name].is_string(), "no {name}: {tokens}");
        }
        tokens
    }
}

pub async fn jwks(server: &TestServer) -> JwkSet {
    let response = server.client.get(server.url("/oauth-provider/jwks")).send().await.expect("jwks");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("a JWK Set")
}

/// Verifies an ID token the way a relying party does (OIDC Core §3.1.3.7: signature by a key of
/// the JWKS, `iss`, `aud`, `exp`, `azp`, `nonce`) and returns its claims for further checks.
pub fn verify_id_token(id_token: &str, set: &JwkSet, issuer: &str, client_id: &str, nonce: &str) -> Value {
    // Our provider first: the first provider asked for wins the process (see truxe_server::jwt).
    truxe_server::jwt::install_provider().expect("the OpenSSL provider is the one in use");
    let header = jsonwebtoken::decode_header(id_token).expect("a JWS header");
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let jwk = set.find(header.kid.as_deref().expect("a kid")).expect("the kid is in the JWKS");
    let key = DecodingKey::from_jwk(jwk).expect("a usable JWK");
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation).expect("the ID token verifies").claims;
    assert_eq!(claims["nonce"], nonce, "{claims}");
    assert_eq!(claims["azp"], client_id, "{claims}");
    claims
}
