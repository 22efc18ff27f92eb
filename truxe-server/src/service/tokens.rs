//! Access tokens: the `client_credentials` grant, introspection (RFC 7662) and revocation
//! (RFC 7009). Each use case authenticates the client (read through the client cache), decides,
//! and persists, on one connection; `client_credentials` needs none while its client is cached.

use std::sync::Arc;
use std::time::Instant;

use diesel::prelude::*;
use serde::Serialize;

use crate::audit::AuditLog;
use crate::client_cache::ClientCache;
use crate::config::Config;
use crate::jwt::{AccessTokenClaims, JwtError, TokenKeys};
use crate::model::client::{self as model, AuthMethod, Client, GrantType};
use crate::model::request::RequestMeta;
use crate::oauth::OAuthError;
use crate::oauth::client_auth::ClientCredentials;
use crate::oauth::form::Form;
use crate::oauth::scope::ScopeSet;
use crate::service::{clients, grants};
use crate::store::audit::{self, AuditAction, AuditEvent};
use crate::store::schema::oauth_tokens;
use crate::store::{AnyConnection, Pool, StoreError};

/// Scopes about a user; a machine token has no user, so `client_credentials` never grants them.
pub const USER_ONLY_SCOPES: [&str; 2] = ["openid", "offline_access"];

/// `oauth_tokens.token_type` of a revoked access token.
const ACCESS_TOKEN: &str = "access_token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    OAuth(#[from] OAuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

impl From<diesel::result::Error> for TokenError {
    fn from(error: diesel::result::Error) -> Self {
        TokenError::Store(StoreError::Query(error))
    }
}

/// Everything a use case needs besides the connection and the request.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub config: &'a Config,
    pub keys: &'a TokenKeys,
    /// The HMAC key client secrets are hashed under.
    pub secret_key: &'a [u8],
    pub now: i64,
    /// The same instant on the monotonic clock, for the client cache.
    pub clock: Instant,
    pub request: &'a RequestMeta,
    pub clients: &'a ClientCache,
    pub audit: &'a AuditLog,
    /// Where a use case that was given no connection gets one, when it needs one.
    pub pool: &'a Pool,
}

// ---------------------------------------------------------------------------------------------
// Decisions (no I/O)

/// The audiences tokens may be issued for: `JWT_AUDIENCE`, a comma-separated list whose first
/// entry is the default, else the issuer itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audiences(Vec<String>);

impl Audiences {
    pub fn new(jwt_audience: Option<&str>, issuer: &str) -> Self {
        let mut list: Vec<String> = Vec::new();
        for audience in jwt_audience.unwrap_or_default().split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if !list.iter().any(|known| known == audience) {
                list.push(audience.to_string());
            }
        }
        if list.is_empty() {
            list.push(issuer.to_string());
        }
        Self(list)
    }

    pub fn from_config(config: &Config) -> Self {
        Self::new(config.jwt.audience.as_deref(), &config.issuer)
    }

    pub fn default_audience(&self) -> &str {
        // `new` never leaves the list empty.
        self.0.first().map(String::as_str).unwrap_or_default()
    }

    pub fn contains(&self, audience: &str) -> bool {
        self.0.iter().any(|a| a == audience)
    }

    /// RFC 8707: a `resource` must be an absolute URI without a fragment, and (here) one of the
    /// registered audiences, compared as exact strings.
    pub fn select(&self, resource: Option<&str>) -> Result<&str, OAuthError> {
        let Some(resource) = resource else {
            return Ok(self.default_audience());
        };
        let absolute = url::Url::parse(resource).is_ok_and(|url| url.fragment().is_none());
        if !absolute {
            return Err(OAuthError::invalid_target("resource must be an absolute URI without a fragment"));
        }
        self.0
            .iter()
            .find(|a| *a == resource)
            .map(String::as_str)
            .ok_or_else(|| OAuthError::invalid_target("resource is not an audience this server issues tokens for"))
    }
}

/// A token request, parsed at the edge: one variant per grant this server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRequest {
    ClientCredentials { scope: Option<String>, resource: Option<String> },
    AuthorizationCode(grants::CodeRequest),
    RefreshToken(grants::RefreshRequest),
}

impl TokenRequest {
    pub fn parse(form: &Form) -> Result<Self, OAuthError> {
        let grant_type = form.require("grant_type")?;
        match GrantType::parse(grant_type) {
            Some(GrantType::ClientCredentials) => Ok(TokenRequest::ClientCredentials {
                scope: form.get("scope").map(str::to_string),
                resource: form.get("resource").map(str::to_string),
            }),
            Some(GrantType::AuthorizationCode) => {
                Ok(TokenRequest::AuthorizationCode(grants::CodeRequest::parse(form)?))
            }
            Some(GrantType::RefreshToken) => Ok(TokenRequest::RefreshToken(grants::RefreshRequest::parse(form)?)),
            None => Err(OAuthError::unsupported_grant_type("grant_type is not supported")),
        }
    }
}

/// A credential that cannot name one of our clients never reaches the database.
pub fn precheck(credentials: &ClientCredentials) -> Result<(), OAuthError> {
    if model::is_plausible_client_id(credentials.client_id()) { Ok(()) } else { Err(client_authentication_failed()) }
}

fn client_authentication_failed() -> OAuthError {
    // One answer for unknown clients and wrong secrets, so that it does not tell them apart.
    OAuthError::invalid_client("client authentication failed")
}

/// Whether a public client (method `none`) may use the endpoint: revocation yes (RFC 7009 §2.1),
/// tokens and introspection no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicClients {
    Allowed,
    Refused,
}

/// RFC 6749 §2.3: the client exists, is active, authenticated with the method it registered, and
/// presented its secret (or, within the rotation grace, the previous one).
pub fn authenticate(
    client: Option<Arc<Client>>,
    credentials: &ClientCredentials,
    secret_key: &[u8],
    now: i64,
    public_clients: PublicClients,
) -> Result<Arc<Client>, OAuthError> {
    let client = client.ok_or_else(client_authentication_failed)?;
    // Before the secret is checked, every refusal looks the same as an unknown client: the
    // answer must not tell a caller without the secret whether a client exists or how it is set up.
    if !client.is_active() {
        tracing::debug!(client_id = %client.client_id, status = client.status.as_str(), "client authentication: inactive client");
        return Err(client_authentication_failed());
    }
    let registered = client.token_endpoint_auth_method;
    if registered == AuthMethod::None && public_clients == PublicClients::Refused {
        tracing::debug!(client_id = %client.client_id, "client authentication: public client at a confidential endpoint");
        return Err(client_authentication_failed());
    }
    if credentials.method() != registered {
        tracing::debug!(
            client_id = %client.client_id,
            registered = registered.as_str(),
            presented = credentials.method().as_str(),
            "client authentication: wrong method"
        );
        return Err(client_authentication_failed());
    }
    match credentials.secret() {
        None => Ok(client),
        Some(secret) if clients::authenticate_secret(&client, secret_key, secret.secret(), now) => Ok(client),
        Some(_) => Err(client_authentication_failed()),
    }
}

/// The `client_credentials` grant for an authenticated client: the scope granted and the
/// audience of the token.
pub fn client_credentials(
    client: &Client,
    scope: Option<&str>,
    resource: Option<&str>,
    audiences: &Audiences,
) -> Result<(ScopeSet, String), OAuthError> {
    if !client.allows_grant(GrantType::ClientCredentials) {
        return Err(OAuthError::unauthorized_client("the client is not registered for the client_credentials grant"));
    }
    let granted = match scope {
        None => client.allowed_scopes.without(&USER_ONLY_SCOPES),
        Some(requested) => {
            let requested = ScopeSet::parse(requested).map_err(OAuthError::invalid_scope)?;
            if let Some(user_scope) = USER_ONLY_SCOPES.iter().find(|s| requested.contains(s)) {
                return Err(OAuthError::invalid_scope(format!(
                    "{user_scope} is about a user and cannot be granted to client_credentials"
                )));
            }
            let outside = requested.difference(&client.allowed_scopes);
            if !outside.is_empty() {
                return Err(OAuthError::invalid_scope(format!("the client may not request {}", outside.join(" "))));
            }
            requested
        }
    };
    let audience = audiences.select(resource)?.to_string();
    Ok((granted, audience))
}

/// RFC 9068 claims of a token for `subject` (the client itself for `client_credentials`).
pub fn access_token_claims(
    config: &Config,
    client: &Client,
    subject: &str,
    scope: &ScopeSet,
    audience: &str,
    jti: String,
    now: i64,
) -> AccessTokenClaims {
    AccessTokenClaims {
        iss: config.issuer.clone(),
        sub: subject.to_string(),
        aud: audience.to_string(),
        exp: now.saturating_add(lifetime(config)),
        iat: now,
        jti,
        client_id: client.client_id.clone(),
        scope: scope.to_string(),
        // A machine token: no user, so no authentication time and no user grant.
        auth_time: None,
        gid: None,
    }
}

/// `ACCESS_TOKEN_EXPIRY` in whole seconds, at least one.
pub fn lifetime(config: &Config) -> i64 {
    i64::try_from(config.access_token_ttl.as_secs()).unwrap_or(i64::MAX).max(1)
}

pub fn new_jti() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

// ---------------------------------------------------------------------------------------------
// Use cases

/// RFC 6749 §5.1 success response.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// OIDC Core §3.1.3.3, for the grants of a user with `openid` in scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// The client named `client_id`, from the client cache while it is fresh, else from `conn`.
pub(crate) fn load_client(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    client_id: &str,
) -> Result<Option<Arc<Client>>, StoreError> {
    ctx.clients.get_or_load(client_id, ctx.clock, || clients::find(conn, client_id))
}

/// `POST /oauth-provider/token` on a connection the caller already holds. The HTTP layer sends
/// `client_credentials` to [`issue_client_credentials`] instead, which takes none unless it must.
pub fn issue(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    request: &TokenRequest,
) -> Result<TokenResponse, TokenError> {
    match request {
        TokenRequest::ClientCredentials { scope, resource } => {
            precheck(credentials)?;
            let client = load_client(conn, ctx, credentials.client_id())?;
            client_credentials_token(ctx, client, credentials, scope.as_deref(), resource.as_deref())
        }
        // The grants of users (public clients allowed) live in `service::grants`.
        TokenRequest::AuthorizationCode(code) => grants::exchange_code(conn, ctx, credentials, code),
        TokenRequest::RefreshToken(refresh) => grants::refresh(conn, ctx, credentials, refresh),
    }
}

/// `grant_type=client_credentials`: one signature and, while the client is cached, no database
/// work on the request path (the audit event is queued, see [`crate::audit`]).
pub fn issue_client_credentials(
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Result<TokenResponse, TokenError> {
    precheck(credentials)?;
    let client_id = credentials.client_id();
    let client = ctx.clients.get_or_load(client_id, ctx.clock, || clients::find(&mut *ctx.pool.get()?, client_id))?;
    client_credentials_token(ctx, client, credentials, scope, resource)
}

fn client_credentials_token(
    ctx: &Context<'_>,
    client: Option<Arc<Client>>,
    credentials: &ClientCredentials,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Result<TokenResponse, TokenError> {
    let client = authenticate(client, credentials, ctx.secret_key, ctx.now, PublicClients::Refused)?;
    let audiences = Audiences::from_config(ctx.config);
    let (scope, audience) = client_credentials(&client, scope, resource, &audiences)?;

    let claims = access_token_claims(ctx.config, &client, &client.client_id, &scope, &audience, new_jti(), ctx.now);
    let access_token = ctx.keys.encode(&claims)?;
    ctx.audit.record(
        AuditEvent::by_client(AuditAction::TokenIssued, &client.client_id)
            .subject(&claims.jti)
            .from_request(ctx.request)
            .details(serde_json::json!({
                "grant_type": GrantType::ClientCredentials.as_str(),
                "token_type": ACCESS_TOKEN,
                "jti": claims.jti,
                "scope": claims.scope,
                "aud": claims.aud,
                "exp": claims.exp,
            })),
        ctx.now,
    )?;
    tracing::info!(
        client_id = %client.client_id, jti = %claims.jti, scope = %claims.scope, aud = %claims.aud,
        "issued an access token"
    );
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: claims.exp - ctx.now,
        scope: (!scope.is_empty()).then(|| scope.to_string()),
        id_token: None,
        refresh_token: None,
    })
}

/// RFC 7662 §2.2 response: the claims of a live token, or only `active: false`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub token: Option<ActiveToken>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ActiveToken {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    pub client_id: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub aud: String,
    pub token_type: &'static str,
    pub jti: String,
}

impl Introspection {
    pub fn inactive() -> Self {
        Self { active: false, token: None }
    }
}

/// `POST /oauth-provider/introspect`: any active confidential client may ask.
pub fn introspect(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    token: &str,
) -> Result<Introspection, TokenError> {
    precheck(credentials)?;
    let caller = load_client(conn, ctx, credentials.client_id())?;
    let caller = authenticate(caller, credentials, ctx.secret_key, ctx.now, PublicClients::Refused)?;

    let claims = match ctx.keys.verify(token, &ctx.config.issuer, ctx.now) {
        Ok(claims) => claims,
        Err(reason) => {
            tracing::debug!(?reason, client_id = %caller.client_id, "introspection: inactive token");
            return Ok(Introspection::inactive());
        }
    };
    if is_revoked(conn, &claims.jti)? {
        tracing::debug!(jti = %claims.jti, "introspection: revoked token");
        return Ok(Introspection::inactive());
    }
    // A user's token dies with its grant (revoked, code replayed, consent withdrawn) and user.
    if claims.gid.is_some() && !grants::access_token_is_live(conn, &claims)? {
        tracing::debug!(jti = %claims.jti, "introspection: the token's grant is revoked");
        return Ok(Introspection::inactive());
    }
    // A token outlives neither its client's suspension nor its deletion.
    let owner_active = if claims.client_id == caller.client_id {
        true
    } else {
        load_client(conn, ctx, &claims.client_id)?.is_some_and(|owner| owner.is_active())
    };
    if !owner_active {
        tracing::debug!(jti = %claims.jti, "introspection: the token's client is no longer active");
        return Ok(Introspection::inactive());
    }
    Ok(Introspection {
        active: true,
        token: Some(ActiveToken {
            scope: claims.scope,
            client_id: claims.client_id,
            sub: claims.sub,
            exp: claims.exp,
            iat: claims.iat,
            iss: claims.iss,
            aud: claims.aud,
            token_type: "Bearer",
            jti: claims.jti,
        }),
    })
}

fn is_revoked(conn: &mut AnyConnection, jti: &str) -> Result<bool, StoreError> {
    let revoked_at: Option<Option<i64>> = oauth_tokens::table
        .filter(oauth_tokens::jti.eq(jti))
        .filter(oauth_tokens::token_type.eq(ACCESS_TOKEN))
        .select(oauth_tokens::revoked_at)
        .first(conn)
        .optional()?;
    Ok(revoked_at.flatten().is_some())
}

/// What revocation did, for the HTTP layer (every variant is a 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    AlreadyRevoked,
    /// Unknown, malformed, expired or not ours: nothing to do (RFC 7009 §2.2).
    Ignored,
}

/// `POST /oauth-provider/revoke`: only the client a token was issued to may revoke it.
pub fn revoke(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    token: &str,
) -> Result<Revocation, TokenError> {
    precheck(credentials)?;
    let caller = load_client(conn, ctx, credentials.client_id())?;
    let caller = authenticate(caller, credentials, ctx.secret_key, ctx.now, PublicClients::Allowed)?;

    let claims = match ctx.keys.verify(token, &ctx.config.issuer, ctx.now) {
        Ok(claims) => claims,
        Err(reason) => {
            tracing::debug!(?reason, client_id = %caller.client_id, "revocation: not a live token of ours");
            return Ok(Revocation::Ignored);
        }
    };
    if claims.client_id != caller.client_id {
        return Err(OAuthError::unauthorized_client("the token was not issued to this client").into());
    }
    let newly_revoked = conn.transaction::<_, TokenError, _>(|conn| {
        // Write first: on SQLite a transaction that reads before it writes fails at once when
        // another connection writes in between, instead of waiting for the lock.
        let updated = diesel::update(
            oauth_tokens::table.filter(oauth_tokens::jti.eq(&claims.jti)).filter(oauth_tokens::revoked_at.is_null()),
        )
        .set(oauth_tokens::revoked_at.eq(ctx.now))
        .execute(conn)?;
        if updated == 0 {
            // Not recorded yet, or already revoked; the savepoint keeps a unique violation from
            // aborting the outer transaction on PostgreSQL.
            let inserted = conn.transaction(|conn| {
                diesel::insert_into(oauth_tokens::table)
                    .values((
                        oauth_tokens::jti.eq(&claims.jti),
                        oauth_tokens::token_type.eq(ACCESS_TOKEN),
                        oauth_tokens::client_id.eq(&claims.client_id),
                        oauth_tokens::scope.eq(&claims.scope),
                        oauth_tokens::created_at.eq(claims.iat),
                        oauth_tokens::expires_at.eq(claims.exp),
                        oauth_tokens::revoked_at.eq(Some(ctx.now)),
                    ))
                    .execute(conn)
            });
            match inserted {
                Ok(_) => {}
                Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
        audit::record(
            conn,
            &AuditEvent::by_client(AuditAction::TokenRevoked, &caller.client_id)
                .subject(&claims.jti)
                .from_request(ctx.request)
                .details(serde_json::json!({ "token_type": ACCESS_TOKEN, "jti": claims.jti, "exp": claims.exp })),
            ctx.now,
        )?;
        Ok(true)
    });
    match newly_revoked {
        Ok(true) => {
            tracing::info!(client_id = %caller.client_id, jti = %claims.jti, "revoked an access token");
            Ok(Revocation::Revoked)
        }
        Ok(false) => Ok(Revocation::AlreadyRevoked),
        // Two revocations of one token raced and the other inserted first: it is revoked.
        Err(TokenError::Store(StoreError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )))) => Ok(Revocation::AlreadyRevoked),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::client::ClientStatus;
    use crate::oauth::ErrorCode;
    use crate::oauth::client_secret;
    use crate::secret::Secret;

    const KEY: &[u8] = b"server hmac key";

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

    fn code(result: Result<impl std::fmt::Debug, OAuthError>) -> ErrorCode {
        result.expect_err("an error").code
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
            assert_eq!(code(list.select(Some(bad))), ErrorCode::InvalidTarget, "{bad}");
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
            assert_eq!(code(TokenRequest::parse(&form)), expected, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn authentication_rules() {
        let now = 1_000;
        let ok = |c: Client, creds: &ClientCredentials| {
            authenticate(Some(Arc::new(c)), creds, KEY, now, PublicClients::Refused)
        };
        assert!(ok(machine(), &basic("cs_right")).is_ok());
        assert_eq!(code(ok(machine(), &basic("cs_wrong"))), ErrorCode::InvalidClient);
        assert_eq!(code(ok(machine(), &post("cs_right"))), ErrorCode::InvalidClient, "registered for basic");
        assert_eq!(
            code(authenticate(None, &basic("cs_right"), KEY, now, PublicClients::Refused)),
            ErrorCode::InvalidClient
        );
        for status in [ClientStatus::Suspended, ClientStatus::Revoked] {
            let mut suspended = machine();
            suspended.status = status;
            assert_eq!(code(ok(suspended, &basic("cs_right"))), ErrorCode::InvalidClient);
        }

        let mut rotated = machine();
        rotated.previous_secret_hash = rotated.secret_hash.take();
        rotated.secret_hash = Some(client_secret::hash(KEY, "cs_new"));
        rotated.previous_secret_expires_at = Some(now + 60);
        assert!(ok(rotated.clone(), &basic("cs_right")).is_ok(), "previous secret within its grace");
        assert!(ok(rotated.clone(), &basic("cs_new")).is_ok());
        rotated.previous_secret_expires_at = Some(now);
        assert_eq!(code(ok(rotated, &basic("cs_right"))), ErrorCode::InvalidClient, "grace over");

        let public = client(AuthMethod::None, &[GrantType::AuthorizationCode], "openid");
        let none = ClientCredentials::None { client_id: "cl_service".into() };
        assert_eq!(code(ok(public.clone(), &none)), ErrorCode::InvalidClient);
        assert!(authenticate(Some(Arc::new(public)), &none, KEY, now, PublicClients::Allowed).is_ok());
        assert_eq!(
            code(authenticate(Some(Arc::new(machine())), &none, KEY, now, PublicClients::Allowed)),
            ErrorCode::InvalidClient,
            "a confidential client must present its secret"
        );
    }

    #[test]
    fn implausible_client_ids_are_refused_before_lookup() {
        for id in ["cl_a'; DROP TABLE oauth_clients; --", "cl_a\0b", &"x".repeat(10 * 1024), "", "admin"] {
            let creds = ClientCredentials::Post { client_id: id.to_string(), secret: Secret::new("cs".into()) };
            assert_eq!(code(precheck(&creds)), ErrorCode::InvalidClient);
        }
        assert!(precheck(&basic("x")).is_ok());
    }

    #[test]
    fn client_credentials_scopes_and_audience() {
        let audiences = Audiences::new(Some("https://api.example.com,https://other.example.com"), "https://as");
        let (scope, aud) = client_credentials(&machine(), None, None, &audiences).expect("grant");
        assert_eq!(scope.to_string(), "orders:read orders:write", "openid is not a machine scope");
        assert_eq!(aud, "https://api.example.com");

        let (scope, aud) =
            client_credentials(&machine(), Some("orders:read"), Some("https://other.example.com"), &audiences)
                .expect("grant");
        assert_eq!((scope.to_string().as_str(), aud.as_str()), ("orders:read", "https://other.example.com"));

        for (scope, expected) in [
            ("orders:delete", ErrorCode::InvalidScope),
            ("orders:read admin", ErrorCode::InvalidScope),
            ("openid", ErrorCode::InvalidScope),
            ("orders:read  orders:write", ErrorCode::InvalidScope),
        ] {
            assert_eq!(code(client_credentials(&machine(), Some(scope), None, &audiences)), expected, "{scope}");
        }
        assert_eq!(
            code(client_credentials(&machine(), None, Some("https://evil.example.com"), &audiences)),
            ErrorCode::InvalidTarget
        );
        let web_app = client(AuthMethod::ClientSecretBasic, &[GrantType::AuthorizationCode], "openid");
        assert_eq!(code(client_credentials(&web_app, None, None, &audiences)), ErrorCode::UnauthorizedClient);
    }

    #[test]
    fn introspection_serialises_per_rfc_7662() {
        assert_eq!(
            serde_json::to_value(Introspection::inactive()).expect("json"),
            serde_json::json!({ "active": false })
        );
        let active = Introspection {
            active: true,
            token: Some(ActiveToken {
                scope: "a".into(),
                client_id: "cl_x".into(),
                sub: "cl_x".into(),
                exp: 2,
                iat: 1,
                iss: "https://as".into(),
                aud: "https://api".into(),
                token_type: "Bearer",
                jti: "j".into(),
            }),
        };
        let json = serde_json::to_value(active).expect("json");
        assert_eq!(json["active"], true);
        assert_eq!(json["token_type"], "Bearer");
        assert_eq!(json["exp"], 2);
    }
}
