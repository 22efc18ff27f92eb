//! Unit tests of the token kernel's decisions (no database, no HTTP).

use std::sync::Arc;

use super::authorization_code::{CodeRequest, check_code};
use super::client_credentials::decide;
use super::introspect::{ActiveToken, Introspection, may_introspect};
use super::issue::id_token_claims;
use super::refresh::{Presented, classify, issues_refresh_token, refreshed_scope};
use super::*;
use crate::model::client::ClientStatus;
use crate::model::user::{User, UserStatus};
use crate::oauth::ErrorCode;
use crate::oauth::client_secret;
use crate::secret::Secret;
use crate::store::grants::AuthorizationCode;
use crate::store::tokens::{REFRESH_TOKEN, RefreshToken};

const KEY: &[u8] = b"server hmac key";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn client(method: AuthMethod, grants: &[GrantType], scopes: &str) -> Client {
    Client {
        client_id: "cl_service".into(),
        client_name: "Service".into(),
        secret_hash: method.is_confidential().then(|| client_secret::hash(KEY, "cs_right")),
        token_endpoint_auth_method: method,
        grant_types: grants.to_vec(),
        allowed_scopes: ScopeSet::parse(scopes).expect("scopes"),
        redirect_uris: Vec::new(),
        require_consent: false,
        ..Client::example()
    }
}

fn machine() -> Client {
    client(AuthMethod::ClientSecretBasic, &[GrantType::ClientCredentials], "openid orders:read orders:write")
}

fn basic(secret: &str) -> ClientCredentials {
    ClientCredentials::Basic { client_id: "cl_service".into(), secret: Secret::new(secret.into()) }
}

fn post(secret: &str) -> ClientCredentials {
    ClientCredentials::Post { client_id: "cl_service".into(), secret: Secret::new(secret.into()) }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, OAuthError>) -> ErrorCode {
    result.expect_err("an error").code
}

fn scopes(s: &str) -> ScopeSet {
    ScopeSet::parse(s).expect("scope")
}

fn all() -> ScopeSet {
    scopes("openid profile email offline_access orders:read orders:write")
}

#[test]
fn audiences_default_to_the_first_or_the_issuer() {
    let issuer = "https://auth.example.com";
    let none = Audiences::new(None, issuer);
    assert_eq!(none.default_audience(), issuer);
    assert_eq!(none.select(None), Ok(issuer));
    assert_eq!(none.select(Some(issuer)), Ok(issuer));

    let list = Audiences::new(Some(" https://api.example.com , https://billing.example.com,,"), issuer);
    assert_eq!(list.default_audience(), "https://api.example.com");
    assert_eq!(list.select(Some("https://billing.example.com")), Ok("https://billing.example.com"));
    assert!(!list.contains(issuer));
    for bad in ["https://evil.example.com", "api", "/relative", "https://api.example.com#frag", issuer] {
        assert_eq!(code_of(list.select(Some(bad))), ErrorCode::InvalidTarget, "{bad}");
    }
}

#[test]
fn token_requests_parse_by_grant_type() {
    let form = Form::parse(b"grant_type=client_credentials&scope=a+b&resource=https%3A%2F%2Fapi").expect("form");
    assert_eq!(
        TokenRequest::parse(&form),
        Ok(TokenRequest::ClientCredentials { scope: Some("a b".into()), resource: Some("https://api".into()) })
    );
    let cases: [(&[u8], ErrorCode); 5] = [
        (b"", ErrorCode::InvalidRequest),
        (b"grant_type=", ErrorCode::InvalidRequest),
        (b"grant_type=password", ErrorCode::UnsupportedGrantType),
        (b"grant_type=authorization_code", ErrorCode::InvalidRequest),
        (b"grant_type=CLIENT_CREDENTIALS", ErrorCode::UnsupportedGrantType),
    ];
    for (body, expected) in cases {
        let form = Form::parse(body).expect("form");
        assert_eq!(code_of(TokenRequest::parse(&form)), expected, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn authentication_rules() {
    let now = 1_000;
    let ok =
        |c: Client, creds: &ClientCredentials| authenticate(Some(Arc::new(c)), creds, KEY, now, PublicClients::Refused);
    assert!(ok(machine(), &basic("cs_right")).is_ok());
    assert_eq!(code_of(ok(machine(), &basic("cs_wrong"))), ErrorCode::InvalidClient);
    assert_eq!(code_of(ok(machine(), &post("cs_right"))), ErrorCode::InvalidClient, "registered for basic");
    assert_eq!(
        code_of(authenticate(None, &basic("cs_right"), KEY, now, PublicClients::Refused)),
        ErrorCode::InvalidClient
    );
    for status in [ClientStatus::Suspended, ClientStatus::Revoked] {
        let mut suspended = machine();
        suspended.status = status;
        assert_eq!(code_of(ok(suspended, &basic("cs_right"))), ErrorCode::InvalidClient);
    }

    let mut rotated = machine();
    rotated.previous_secret_hash = rotated.secret_hash.take();
    rotated.secret_hash = Some(client_secret::hash(KEY, "cs_new"));
    rotated.previous_secret_expires_at = Some(now + 60);
    assert!(ok(rotated.clone(), &basic("cs_right")).is_ok(), "previous secret within its grace");
    assert!(ok(rotated.clone(), &basic("cs_new")).is_ok());
    rotated.previous_secret_expires_at = Some(now);
    assert_eq!(code_of(ok(rotated, &basic("cs_right"))), ErrorCode::InvalidClient, "grace over");

    let public = client(AuthMethod::None, &[GrantType::AuthorizationCode], "openid");
    let none = ClientCredentials::None { client_id: "cl_service".into() };
    assert_eq!(code_of(ok(public.clone(), &none)), ErrorCode::InvalidClient);
    assert!(authenticate(Some(Arc::new(public)), &none, KEY, now, PublicClients::Allowed).is_ok());
    assert_eq!(
        code_of(authenticate(Some(Arc::new(machine())), &none, KEY, now, PublicClients::Allowed)),
        ErrorCode::InvalidClient,
        "a confidential client must present its secret"
    );
}

#[test]
fn implausible_client_ids_are_refused_before_lookup() {
    for id in ["cl_a'; DROP TABLE oauth_clients; --", "cl_a\0b", &"x".repeat(10 * 1024), "", "admin"] {
        let creds = ClientCredentials::Post { client_id: id.to_string(), secret: Secret::new("cs".into()) };
        assert_eq!(code_of(precheck(&creds)), ErrorCode::InvalidClient);
    }
    assert!(precheck(&basic("x")).is_ok());
}

#[test]
fn client_credentials_scopes_and_audience() {
    let audiences = Audiences::new(Some("https://api.example.com,https://other.example.com"), "https://as");
    let (scope, aud) = decide(&machine(), None, None, &audiences, &all()).expect("grant");
    assert_eq!(scope.to_string(), "orders:read orders:write", "openid is not a machine scope");
    assert_eq!(aud, "https://api.example.com");

    for (scope, expected) in [
        ("orders:delete", ErrorCode::InvalidScope),
        ("orders:read admin", ErrorCode::InvalidScope),
        ("openid", ErrorCode::InvalidScope),
        ("orders:read  orders:write", ErrorCode::InvalidScope),
    ] {
        assert_eq!(code_of(decide(&machine(), Some(scope), None, &audiences, &all())), expected, "{scope}");
    }
    assert_eq!(
        code_of(decide(&machine(), None, Some("https://evil.example.com"), &audiences, &all())),
        ErrorCode::InvalidTarget
    );
    // Without registered audiences a client gets only the default one (RFC 8707).
    assert_eq!(
        code_of(decide(&machine(), None, Some("https://other.example.com"), &audiences, &all())),
        ErrorCode::InvalidTarget
    );
    let web_app = client(AuthMethod::ClientSecretBasic, &[GrantType::AuthorizationCode], "openid");
    assert_eq!(code_of(decide(&web_app, None, None, &audiences, &all())), ErrorCode::UnauthorizedClient);
    // An operator removed orders:write from TRUXE_SCOPES: no longer granted, nor grantable.
    let narrowed = scopes("openid orders:read");
    let (scope, _) = decide(&machine(), None, None, &audiences, &narrowed).expect("grant");
    assert_eq!(scope.to_string(), "orders:read");
    assert_eq!(code_of(decide(&machine(), Some("orders:write"), None, &audiences, &narrowed)), ErrorCode::InvalidScope);
}

#[test]
fn introspection_serialises_per_rfc_7662() {
    assert_eq!(serde_json::to_value(Introspection::inactive()).expect("json"), serde_json::json!({ "active": false }));
    let active = Introspection {
        active: true,
        token: Some(ActiveToken {
            scope: "a".into(),
            client_id: "cl_x".into(),
            sub: "cl_x".into(),
            exp: 2,
            iat: 1,
            iss: "https://as".into(),
            aud: Some("https://api".into()),
            token_type: "Bearer",
            jti: "j".into(),
        }),
    };
    let json = serde_json::to_value(active).expect("json");
    assert_eq!(json["active"], true);
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["exp"], 2);
}

#[test]
fn introspection_is_for_the_owner_only_by_default() {
    let caller = machine();
    assert!(may_introspect(&caller, "cl_service", Some("https://api")));
    assert!(may_introspect(&caller, "cl_service", None));
    assert!(!may_introspect(&caller, "cl_other", Some("https://api")), "no introspection_audiences registered");
    assert!(!may_introspect(&caller, "cl_other", None));
}

fn code() -> AuthorizationCode {
    AuthorizationCode {
        code_hash: "h".into(),
        client_id: "cl_app".into(),
        user_id: "usr_1".into(),
        redirect_uri: "https://app.example/cb".into(),
        scope: "openid".into(),
        code_challenge: Some(CHALLENGE.into()),
        code_challenge_method: Some("S256".into()),
        nonce: Some("n".into()),
        auth_time: 90,
        amr: "email".into(),
        created_at: 100,
        expires_at: 700,
        consumed_at: None,
        grant_id: None,
        redirect_uri_given: true,
    }
}

fn request(redirect_uri: Option<&str>, verifier: Option<&str>) -> CodeRequest {
    CodeRequest {
        code: Secret::new("c".into()),
        redirect_uri: redirect_uri.map(str::to_string),
        code_verifier: verifier.map(|v| Secret::new(v.to_string())),
        resource: None,
    }
}

fn app(grants: &[GrantType]) -> Client {
    Client { grant_types: grants.to_vec(), ..Client::example() }
}

#[test]
fn code_bindings() {
    let c = app(&[GrantType::AuthorizationCode]);
    let cb = Some("https://app.example/cb");
    assert_eq!(check_code(&code(), &c, &request(cb, Some(VERIFIER)), 100), Ok(()));

    let fail = |code: &AuthorizationCode, client: &Client, request: &CodeRequest, now: i64| {
        check_code(code, client, request, now).expect_err("refused").code
    };
    // RFC 6749 §4.1.3: the authorization request carried redirect_uri, so the token request must.
    assert_eq!(fail(&code(), &c, &request(None, Some(VERIFIER)), 100), ErrorCode::InvalidRequest);
    let omitted = AuthorizationCode { redirect_uri_given: false, ..code() };
    assert_eq!(check_code(&omitted, &c, &request(None, Some(VERIFIER)), 100), Ok(()), "omitted in both");
    assert_eq!(fail(&code(), &c, &request(cb, Some(VERIFIER)), 700), ErrorCode::InvalidGrant, "expired");
    let other = Client { client_id: "cl_other".into(), ..c.clone() };
    assert_eq!(fail(&code(), &other, &request(cb, Some(VERIFIER)), 100), ErrorCode::InvalidGrant);
    for uri in ["https://app.example/cb/", "https://APP.example/cb", "https://app.example:443/cb"] {
        assert_eq!(fail(&code(), &c, &request(Some(uri), Some(VERIFIER)), 100), ErrorCode::InvalidGrant, "{uri}");
    }
    assert_eq!(fail(&code(), &c, &request(cb, None), 100), ErrorCode::InvalidGrant, "verifier missing");
    let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl";
    assert_eq!(fail(&code(), &c, &request(cb, Some(wrong)), 100), ErrorCode::InvalidGrant);
    let no_pkce = AuthorizationCode { code_challenge: None, code_challenge_method: None, ..code() };
    assert_eq!(check_code(&no_pkce, &c, &request(cb, None), 100), Ok(()));
    assert_eq!(fail(&no_pkce, &c, &request(cb, Some(VERIFIER)), 100), ErrorCode::InvalidGrant);
}

#[test]
fn refresh_token_policy() {
    let both = app(&[GrantType::AuthorizationCode, GrantType::RefreshToken]);
    let code_only = app(&[GrantType::AuthorizationCode]);
    assert!(issues_refresh_token(true, &both, &scopes("openid offline_access")));
    assert!(!issues_refresh_token(true, &both, &scopes("openid email")), "OIDC needs offline_access");
    assert!(issues_refresh_token(true, &both, &scopes("orders:read")), "plain OAuth");
    assert!(!issues_refresh_token(false, &both, &scopes("openid offline_access")));
    assert!(!issues_refresh_token(true, &code_only, &scopes("openid offline_access")));
}

#[test]
fn refreshing_never_widens_nor_outlives_policy() {
    let granted = scopes("openid email offline_access");
    let all = scopes("openid email profile offline_access");
    assert_eq!(refreshed_scope(&granted, &all, None), Ok(granted.clone()));
    assert_eq!(refreshed_scope(&granted, &all, Some("openid")), Ok(scopes("openid")));
    assert_eq!(code_of(refreshed_scope(&granted, &all, Some("openid profile"))), ErrorCode::InvalidScope);
    assert_eq!(code_of(refreshed_scope(&granted, &all, Some("openid  email"))), ErrorCode::InvalidScope);
    // An admin narrowed the client to `openid offline_access`: email is gone at the next refresh.
    let narrowed = scopes("openid offline_access");
    assert_eq!(refreshed_scope(&granted, &narrowed, None), Ok(scopes("openid offline_access")));
    assert_eq!(code_of(refreshed_scope(&granted, &narrowed, Some("email"))), ErrorCode::InvalidScope);
}

fn refresh_row(rotated_at: Option<i64>, revoked_at: Option<i64>) -> RefreshToken {
    RefreshToken {
        jti: "j".into(),
        token_type: REFRESH_TOKEN.into(),
        token_hash: Some("h".into()),
        grant_id: Some("grt_1".into()),
        client_id: "cl_app".into(),
        user_id: Some("usr_1".into()),
        scope: "openid".into(),
        created_at: 0,
        expires_at: 1_000,
        rotated_at,
        revoked_at,
        replaced_by: None,
    }
}

#[test]
fn presented_refresh_tokens() {
    assert_eq!(classify(&refresh_row(None, None), 0, 105), Presented::Fresh);
    assert_eq!(classify(&refresh_row(Some(100), None), 10, 105), Presented::Retry);
    assert_eq!(classify(&refresh_row(Some(100), None), 10, 110), Presented::Replay);
    assert_eq!(classify(&refresh_row(Some(100), None), 0, 100), Presented::Replay, "no grace: any reuse is a replay");
    // Replaced by a retry (revoked while its grant lives): presenting it again is reuse.
    assert_eq!(classify(&refresh_row(None, Some(100)), 10, 101), Presented::Replay);
}

#[test]
fn claims_by_scope() {
    let user = User {
        user_id: "usr_1".into(),
        email: "ada@example.org".into(),
        display_name: Some("Ada".into()),
        email_verified: true,
        status: UserStatus::Active,
        mfa_enabled: false,
        mfa_enrolled_at: None,
        mfa_failed_attempts: 0,
        mfa_locked_until: None,
        created_at: 0,
        updated_at: 0,
    };
    assert_eq!(userinfo::claims(&user, &scopes("openid")), serde_json::json!({ "sub": "usr_1" }));
    assert_eq!(
        userinfo::claims(&user, &scopes("openid email profile")),
        serde_json::json!({ "sub": "usr_1", "email": "ada@example.org", "email_verified": true, "name": "Ada" })
    );
    let claims = id_token_claims(
        "https://as",
        "cl_app",
        &user,
        &scopes("openid email"),
        90,
        vec!["email".into()],
        Some("n".into()),
        "h".into(),
        1000,
        100,
    );
    let json = serde_json::to_value(&claims).expect("json");
    assert_eq!(json["aud"], "cl_app");
    assert_eq!(json["azp"], "cl_app");
    assert_eq!(json["exp"], 1000);
    assert_eq!(json["email"], "ada@example.org");
    assert!(json.get("name").is_none(), "profile not in scope");
}

#[test]
fn plausible_opaque_values() {
    assert!(is_plausible_opaque(crate::service::authorize::new_code().secret()));
    for bad in ["", "short", "a.b.c.d.e.f.g.h.i", &"a".repeat(257), "abc def ghi jkl mno"] {
        assert!(!is_plausible_opaque(bad), "{bad:?}");
    }
}
