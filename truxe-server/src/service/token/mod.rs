//! The token endpoint family (`/token`, `/introspect`, `/revoke`, `/userinfo`): the kernel that
//! every use case shares. Context, errors, the parsed request, the one client-authentication
//! step, audiences and lifetimes live here; each grant and endpoint has its own module, and
//! those modules import only this one (and `issue`, the signing of user tokens).
//!
//! A grant (`oauth_grants`) is one code redemption; its refresh tokens form a family revoked
//! together, and its access tokens carry its id as the private claim `gid`, so that revoking the
//! grant makes them inactive too. [`revoke`] owns revocation, [`liveness`] owns "is this token
//! still live".

pub mod authorization_code;
pub mod client_credentials;
pub mod introspect;
mod issue;
pub mod liveness;
pub mod refresh;
pub mod revoke;
pub mod userinfo;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::audit::AuditLog;
use crate::client_cache::ClientCache;
use crate::config::Config;
use crate::jwt::{AccessTokenClaims, JwtError};
use crate::model::Jti;
use crate::model::client::{self as model, AuthMethod, Client, GrantType};
use crate::model::request::RequestMeta;
use crate::oauth::OAuthError;
use crate::oauth::client_auth::ClientCredentials;
use crate::oauth::form::Form;
use crate::oauth::scope::ScopeSet;
use crate::service::clients;
use crate::store::{AnyConnection, Pool, StoreError};

pub use crate::service::policy::{Audiences, Rules};
pub use authorization_code::CodeRequest;
pub use introspect::Introspection;
pub use refresh::RefreshRequest;
pub use revoke::Revocation;

/// Scopes about a user; a machine token has no user, so `client_credentials` never grants them.
pub const USER_ONLY_SCOPES: [&str; 2] = ["openid", "offline_access"];

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
    /// The configuration's token policy, computed once at start.
    pub rules: &'a Rules,
    /// The key this request signs with, and every published key (our tokens verify with any).
    pub keys: &'a crate::keyring::RequestKeys,
    /// The HMAC key client secrets are hashed under.
    pub secret_key: &'a [u8],
    pub now: i64,
    /// The same instant on the monotonic clock, for the client cache.
    pub clock: Instant,
    pub request: &'a RequestMeta,
    pub clients: &'a ClientCache,
    /// Redis as shared state (revoked-token marks), when configured.
    pub shared: Option<&'a Arc<crate::shared::SharedRedis>>,
    pub audit: &'a AuditLog,
    /// Where a use case that was given no connection gets one, when it needs one.
    pub pool: &'a Pool,
}

/// A token request, parsed at the edge: one variant per grant this server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRequest {
    ClientCredentials { scope: Option<String>, resource: Option<String> },
    AuthorizationCode(CodeRequest),
    RefreshToken(RefreshRequest),
}

impl TokenRequest {
    pub fn grant_type(&self) -> GrantType {
        match self {
            TokenRequest::ClientCredentials { .. } => GrantType::ClientCredentials,
            TokenRequest::AuthorizationCode(_) => GrantType::AuthorizationCode,
            TokenRequest::RefreshToken(_) => GrantType::RefreshToken,
        }
    }

    pub fn parse(form: &Form) -> Result<Self, OAuthError> {
        let grant_type = form.require("grant_type")?;
        match GrantType::parse(grant_type) {
            Some(GrantType::ClientCredentials) => Ok(TokenRequest::ClientCredentials {
                scope: form.get("scope").map(str::to_string),
                resource: form.get("resource").map(str::to_string),
            }),
            Some(GrantType::AuthorizationCode) => Ok(TokenRequest::AuthorizationCode(CodeRequest::parse(form)?)),
            Some(GrantType::RefreshToken) => Ok(TokenRequest::RefreshToken(RefreshRequest::parse(form)?)),
            None => Err(OAuthError::unsupported_grant_type("grant_type is not supported")),
        }
    }
}

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

/// `POST /oauth-provider/token` on a connection the caller already holds. The HTTP layer sends
/// `client_credentials` to [`client_credentials::issue`] instead, which takes none unless it must.
pub fn issue(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    request: &TokenRequest,
) -> Result<TokenResponse, TokenError> {
    match request {
        TokenRequest::ClientCredentials { scope, resource } => {
            let client = authenticated_client(ctx, Some(conn), credentials, PublicClients::Refused)?;
            client_credentials::respond(ctx, &client, scope.as_deref(), resource.as_deref())
        }
        TokenRequest::AuthorizationCode(code) => authorization_code::exchange(conn, ctx, credentials, code),
        TokenRequest::RefreshToken(refresh) => refresh::refresh(conn, ctx, credentials, refresh),
    }
}

// ---------------------------------------------------------------------------------------------
// Client authentication: the one step every endpoint of the family takes first.

/// Whether a public client (method `none`) may use the endpoint: the user grants and revocation
/// yes (RFC 7009 §2.1), `client_credentials` and introspection no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicClients {
    Allowed,
    Refused,
}

/// A credential that cannot name one of our clients never reaches the database.
pub fn precheck(credentials: &ClientCredentials) -> Result<(), OAuthError> {
    if model::is_plausible_client_id(credentials.client_id()) { Ok(()) } else { Err(client_authentication_failed()) }
}

fn client_authentication_failed() -> OAuthError {
    // One answer for unknown clients and wrong secrets, so that it does not tell them apart.
    OAuthError::invalid_client("client authentication failed")
}

/// The client named `client_id`, from the client cache while it is fresh, else from `conn` (or,
/// without one, a connection from the pool).
pub fn load_client(
    ctx: &Context<'_>,
    conn: Option<&mut AnyConnection>,
    client_id: &str,
) -> Result<Option<Arc<Client>>, StoreError> {
    ctx.clients.get_or_load(client_id, ctx.clock, || match conn {
        Some(conn) => clients::find(conn, client_id),
        None => clients::find(&mut *crate::store::checkout(ctx.pool)?, client_id),
    })
}

/// The client that `credentials` authenticate, or `invalid_client`: plausible id, known, active,
/// the registered method, and the secret (or, within the rotation grace, the previous one). A
/// failure is audited as `client.authentication_failed` with its reason (the answer never tells).
pub fn authenticated_client(
    ctx: &Context<'_>,
    conn: Option<&mut AnyConnection>,
    credentials: &ClientCredentials,
    public_clients: PublicClients,
) -> Result<Arc<Client>, TokenError> {
    let outcome = if precheck(credentials).is_err() {
        Err(AuthFailure::ImplausibleClientId)
    } else {
        let client = load_client(ctx, conn, credentials.client_id())?;
        check_client(client, credentials, ctx.secret_key, ctx.now, public_clients)
    };
    outcome.or_else(|reason| {
        let (source, event) = failed_authentication(
            ctx.request,
            Some(credentials.client_id()),
            Some(credentials.method()),
            reason.as_str(),
        );
        ctx.audit.record_coalesced(source, event, ctx.now)?;
        Err(client_authentication_failed().into())
    })
}

/// Why a client authentication failed: for the audit log and debug logs, never for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    ImplausibleClientId,
    UnknownClient,
    InactiveClient,
    PublicClientRefused,
    WrongMethod,
    WrongSecret,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::ImplausibleClientId => "implausible_client_id",
            AuthFailure::UnknownClient => "unknown_client",
            AuthFailure::InactiveClient => "inactive_client",
            AuthFailure::PublicClientRefused => "public_client_refused",
            AuthFailure::WrongMethod => "wrong_method",
            AuthFailure::WrongSecret => "wrong_secret",
        }
    }
}

/// The `client.authentication_failed` event of a request from `meta`, and the source it is
/// coalesced under (client id and IP: a guessing attack costs one entry a minute per pair, with
/// the count). The client id is kept only when it could be one of ours.
pub fn failed_authentication(
    meta: &RequestMeta,
    client_id: Option<&str>,
    method: Option<AuthMethod>,
    reason: &str,
) -> (String, crate::store::audit::AuditEvent) {
    use crate::store::audit::{AuditAction, AuditEvent};
    let client_id = client_id.filter(|id| model::is_plausible_client_id(id));
    let mut event = AuditEvent::new(AuditAction::ClientAuthenticationFailed, "anonymous")
        .from_request(meta)
        .failed()
        .details(serde_json::json!({ "reason": reason, "method": method.map(AuthMethod::as_str) }));
    if let Some(client_id) = client_id {
        event = event.client(client_id).subject(client_id);
    }
    let source = format!("client_auth|{}|{}", meta.ip.as_deref().unwrap_or("-"), client_id.unwrap_or("-"));
    (source, event)
}

/// RFC 6749 §2.3, the decision of [`authenticated_client`] on an already loaded client.
pub fn authenticate(
    client: Option<Arc<Client>>,
    credentials: &ClientCredentials,
    secret_key: &[u8],
    now: i64,
    public_clients: PublicClients,
) -> Result<Arc<Client>, OAuthError> {
    check_client(client, credentials, secret_key, now, public_clients).map_err(|_| client_authentication_failed())
}

fn check_client(
    client: Option<Arc<Client>>,
    credentials: &ClientCredentials,
    secret_key: &[u8],
    now: i64,
    public_clients: PublicClients,
) -> Result<Arc<Client>, AuthFailure> {
    let client = client.ok_or(AuthFailure::UnknownClient)?;
    // Before the secret is checked, every refusal looks the same as an unknown client: the
    // answer must not tell a caller without the secret whether a client exists or how it is set up.
    if !client.is_active() {
        tracing::debug!(client_id = %client.client_id, status = client.status.as_str(), "client authentication: inactive client");
        return Err(AuthFailure::InactiveClient);
    }
    let registered = client.token_endpoint_auth_method;
    if registered == AuthMethod::None && public_clients == PublicClients::Refused {
        tracing::debug!(client_id = %client.client_id, "client authentication: public client at a confidential endpoint");
        return Err(AuthFailure::PublicClientRefused);
    }
    if credentials.method() != registered {
        tracing::debug!(
            client_id = %client.client_id,
            registered = registered.as_str(),
            presented = credentials.method().as_str(),
            "client authentication: wrong method"
        );
        return Err(AuthFailure::WrongMethod);
    }
    match credentials.secret() {
        None => Ok(client),
        Some(secret) if clients::authenticate_secret(&client, secret_key, secret.secret(), now) => Ok(client),
        Some(_) => Err(AuthFailure::WrongSecret),
    }
}

// ---------------------------------------------------------------------------------------------
// Audiences and lifetimes: the server's [`Rules`], narrowed per client.

/// The audience of a token `client` asked for with `resource` (RFC 8707), or `invalid_target`.
pub fn audience(ctx: &Context<'_>, client: &Client, resource: Option<&str>) -> Result<String, OAuthError> {
    Ok(ctx.rules.audiences.for_client(client).select(resource)?.to_string())
}

/// `ACCESS_TOKEN_EXPIRY`, or the client's shorter `access_token_ttl`, in whole seconds (≥ 1).
pub fn access_token_lifetime(rules: &Rules, client: &Client) -> i64 {
    client.access_token_ttl(rules.access_token_ttl)
}

/// `REFRESH_TOKEN_EXPIRY`, or the client's shorter `refresh_token_ttl`: how long one refresh
/// token lives from its issue.
pub fn refresh_token_lifetime(rules: &Rules, client: &Client) -> i64 {
    client.refresh_token_ttl(rules.refresh_token_ttl)
}

/// RFC 9068 claims of a token for `subject` (the client itself for `client_credentials`).
pub fn access_token_claims(
    ctx: &Context<'_>,
    client: &Client,
    subject: &str,
    scope: &ScopeSet,
    audience: &str,
) -> AccessTokenClaims {
    let now = ctx.now;
    AccessTokenClaims {
        iss: ctx.config.issuer.clone(),
        sub: subject.to_string(),
        aud: audience.to_string(),
        exp: now.saturating_add(access_token_lifetime(ctx.rules, client)),
        iat: now,
        jti: new_jti(),
        client_id: client.client_id.clone(),
        scope: scope.to_string(),
        // A machine token: no user, so no authentication time and no user grant.
        auth_time: None,
        gid: None,
    }
}

pub fn new_jti() -> Jti {
    uuid::Uuid::new_v4().simple().to_string().into()
}

/// Whether an opaque value (code, refresh token) could be one of ours: we issue 43 base64url
/// characters; anything far off never reaches the database.
pub fn is_plausible_opaque(value: &str) -> bool {
    (16..=256).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests;
