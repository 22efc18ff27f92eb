//! Grants for users at the token endpoint: the `authorization_code` exchange (RFC 6749 §4.1.3,
//! RFC 7636, OAuth 2.1) and `refresh_token` rotation (RFC 6749 §6, RFC 9700 §4.14), ID tokens
//! (OIDC Core §3.1.3), refresh-token revocation (RFC 7009) and the liveness of user tokens for
//! introspection and userinfo.
//!
//! A grant (`oauth_grants`) is one code redemption; its refresh tokens form a family revoked
//! together, and its access tokens carry its id as the private claim `gid`, so that revoking the
//! grant makes them inactive too.

use diesel::Connection;

use super::authorize::{OFFLINE_ACCESS, token_hash};
use super::tokens::{
    self, Audiences, Context, PublicClients, Revocation, TokenError, TokenResponse, access_token_claims, authenticate,
    lifetime, new_jti, precheck,
};
use crate::jwt::AccessTokenClaims;
use crate::keys::Algorithm;
use crate::model::client::{Client, GrantType};
use crate::model::user::{User, is_plausible_user_id};
use crate::oauth::client_auth::ClientCredentials;
use crate::oauth::form::Form;
use crate::oauth::id_token::{IdTokenClaims, at_hash};
use crate::oauth::scope::ScopeSet;
use crate::oauth::{OAuthError, pkce};
use crate::secret::Secret;
use crate::store::audit::{self, AuditAction, AuditEvent};
use crate::store::grants::{self as grant_store, AuthorizationCode, Grant, REFRESH_TOKEN, RefreshToken};
use crate::store::{AnyConnection, StoreError, users as user_store};

/// `grant_type=authorization_code`, parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRequest {
    pub code: Secret<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<Secret<String>>,
    pub resource: Option<String>,
}

impl CodeRequest {
    pub fn parse(form: &Form) -> Result<Self, OAuthError> {
        Ok(Self {
            code: Secret::new(form.require("code")?.to_string()),
            redirect_uri: form.get("redirect_uri").map(str::to_string),
            code_verifier: form.get("code_verifier").map(|v| Secret::new(v.to_string())),
            resource: form.get("resource").map(str::to_string),
        })
    }
}

/// `grant_type=refresh_token`, parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRequest {
    pub refresh_token: Secret<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

impl RefreshRequest {
    pub fn parse(form: &Form) -> Result<Self, OAuthError> {
        Ok(Self {
            refresh_token: Secret::new(form.require("refresh_token")?.to_string()),
            scope: form.get("scope").map(str::to_string),
            resource: form.get("resource").map(str::to_string),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Decisions (no I/O)

/// Whether an opaque value (code, refresh token) could be one of ours: we issue 43 base64url
/// characters; anything far off never reaches the database.
pub fn is_plausible_opaque(value: &str) -> bool {
    (16..=256).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Refresh tokens for a grant: only when the server allows them and the client is registered
/// for the `refresh_token` grant; then for an OpenID Connect request only when `offline_access`
/// was granted (OIDC Core §11; the consent page asks for it), and for a plain OAuth request
/// always (OAuth 2.1 §4.3).
pub fn issues_refresh_token(allow_refresh_token: bool, client: &Client, scope: &ScopeSet) -> bool {
    allow_refresh_token
        && client.allows_grant(GrantType::RefreshToken)
        && (scope.contains(OFFLINE_ACCESS) || !scope.contains("openid"))
}

/// The code's bindings, checked against the token request (the code is known, unconsumed and
/// not yet expired-checked).
pub fn check_code(
    code: &AuthorizationCode,
    client: &Client,
    request: &CodeRequest,
    now: i64,
) -> Result<(), OAuthError> {
    if code.client_id != client.client_id {
        return Err(OAuthError::invalid_grant("the authorization code was issued to another client"));
    }
    if code.expires_at <= now {
        return Err(OAuthError::invalid_grant("the authorization code has expired"));
    }
    match &request.redirect_uri {
        Some(uri) if *uri != code.redirect_uri => {
            return Err(OAuthError::invalid_grant("redirect_uri differs from the one of the authorization request"));
        }
        Some(_) => {}
        // The authorization request could only omit it when the client has exactly one.
        None if client.redirect_uris.len() == 1 && client.redirect_uris[0] == code.redirect_uri => {}
        None => return Err(OAuthError::invalid_request("redirect_uri is required")),
    }
    match (&code.code_challenge, &request.code_verifier) {
        (Some(challenge), Some(verifier)) if pkce::verify(verifier.secret(), challenge) => Ok(()),
        (Some(_), Some(_)) => Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge")),
        (Some(_), None) => Err(OAuthError::invalid_grant("code_verifier is required (PKCE)")),
        (None, Some(_)) => Err(OAuthError::invalid_grant("code_verifier sent, but the authorization used no PKCE")),
        (None, None) => Ok(()),
    }
}

/// The scope of a refreshed access token: the one asked for, which must stay within the
/// grant's (RFC 6749 §6: never wider), else the refresh token's own.
pub fn refreshed_scope(granted: &ScopeSet, requested: Option<&str>) -> Result<ScopeSet, OAuthError> {
    let Some(requested) = requested else {
        return Ok(granted.clone());
    };
    let requested = ScopeSet::parse(requested).map_err(OAuthError::invalid_scope)?;
    let wider = requested.difference(granted);
    if !wider.is_empty() {
        return Err(OAuthError::invalid_scope(format!(
            "refreshing cannot widen the scope; not granted: {}",
            wider.join(" ")
        )));
    }
    Ok(requested)
}

/// What a rotated refresh token presented again means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Within the grace window: a client retrying a response it lost. Answered like a refresh.
    Retry,
    /// After it: the token leaked (RFC 9700 §4.14.2). The family is revoked.
    Replay,
}

pub fn reuse(rotated_at: i64, grace_secs: i64, now: i64) -> Reuse {
    if now - rotated_at < grace_secs { Reuse::Retry } else { Reuse::Replay }
}

fn key_algorithm(ctx: &Context<'_>) -> Algorithm {
    match ctx.keys.algorithm() {
        jsonwebtoken::Algorithm::ES256 => Algorithm::ES256,
        jsonwebtoken::Algorithm::EdDSA => Algorithm::EdDSA,
        _ => Algorithm::RS256,
    }
}

/// ID token claims for `user` (OIDC Core §2, §5.4: `email` and `name` by scope).
#[allow(clippy::too_many_arguments)]
pub fn id_token_claims(
    issuer: &str,
    client_id: &str,
    user: &User,
    scope: &ScopeSet,
    auth_time: i64,
    amr: Vec<String>,
    nonce: Option<String>,
    access_token_hash: String,
    lifetime_secs: i64,
    now: i64,
) -> IdTokenClaims {
    let email = scope.contains("email");
    IdTokenClaims {
        iss: issuer.to_string(),
        sub: user.user_id.clone(),
        aud: client_id.to_string(),
        exp: now.saturating_add(lifetime_secs),
        iat: now,
        auth_time,
        nonce,
        at_hash: Some(access_token_hash),
        amr,
        azp: client_id.to_string(),
        email: email.then(|| user.email.clone()),
        email_verified: email.then_some(user.email_verified),
        name: if scope.contains("profile") { user.display_name.clone() } else { None },
    }
}

/// The userinfo claims (OIDC Core §5.3.2) of `user` for a token with `scope`.
pub fn userinfo_claims(user: &User, scope: &ScopeSet) -> serde_json::Value {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), user.user_id.clone().into());
    if scope.contains("email") {
        claims.insert("email".into(), user.email.clone().into());
        claims.insert("email_verified".into(), user.email_verified.into());
    }
    if scope.contains("profile")
        && let Some(name) = &user.display_name
    {
        claims.insert("name".into(), name.clone().into());
    }
    serde_json::Value::Object(claims)
}

// ---------------------------------------------------------------------------------------------
// Use cases

fn new_grant_id() -> String {
    format!("grt_{}", uuid::Uuid::new_v4().simple())
}

fn new_refresh_token() -> Secret<String> {
    super::authorize::new_code()
}

fn active_user(conn: &mut AnyConnection, user_id: &str) -> Result<Option<User>, StoreError> {
    if !is_plausible_user_id(user_id) {
        return Ok(None);
    }
    Ok(user_store::find(conn, user_id)?.filter(User::is_active))
}

fn refresh_ttl(ctx: &Context<'_>) -> i64 {
    i64::try_from(ctx.config.refresh_token_ttl.as_secs()).unwrap_or(i64::MAX).max(1)
}

fn event(
    ctx: &Context<'_>,
    action: AuditAction,
    client: &Client,
    user_id: &str,
    details: serde_json::Value,
) -> AuditEvent {
    AuditEvent::by_client(action, &client.client_id)
        .subject(user_id)
        .user(user_id)
        .from_request(ctx.request)
        .details(details)
}

/// Failures inside a token transaction: storage, or losing the race for a single-use value.
#[derive(Debug)]
enum TxError {
    Store(StoreError),
    /// A concurrent request won the compare-and-set.
    Lost,
    /// A rotated token retried after its latest child was used or revoked.
    Reused,
}

impl From<diesel::result::Error> for TxError {
    fn from(error: diesel::result::Error) -> Self {
        TxError::Store(StoreError::Query(error))
    }
}

impl From<StoreError> for TxError {
    fn from(error: StoreError) -> Self {
        TxError::Store(error)
    }
}

/// The signed tokens of one issue, before they are recorded.
struct Issued {
    access_token: String,
    claims: AccessTokenClaims,
    id_token: Option<String>,
    refresh_token: Option<(Secret<String>, RefreshToken)>,
}

/// Signs the access token (and the ID token when `openid` is in scope) and prepares the
/// refresh token row; nothing is stored yet.
#[allow(clippy::too_many_arguments)]
fn sign(
    ctx: &Context<'_>,
    client: &Client,
    user: &User,
    grant: &Grant,
    scope: &ScopeSet,
    audience: &str,
    nonce: Option<String>,
    refresh_scope: Option<&ScopeSet>,
) -> Result<Issued, TokenError> {
    let auth_time = grant.auth_time.unwrap_or(grant.created_at);
    let mut claims = access_token_claims(ctx.config, client, &user.user_id, scope, audience, new_jti(), ctx.now);
    claims.auth_time = Some(auth_time);
    claims.gid = Some(grant.grant_id.clone());
    let access_token = ctx.keys.encode(&claims)?;
    let id_token = if scope.contains("openid") {
        let amr = grant.amr.as_deref().unwrap_or_default().split_whitespace().map(str::to_string).collect();
        let id_claims = id_token_claims(
            &ctx.config.issuer,
            &client.client_id,
            user,
            scope,
            auth_time,
            amr,
            nonce,
            at_hash(&access_token, key_algorithm(ctx)),
            lifetime(ctx.config),
            ctx.now,
        );
        Some(ctx.keys.encode_id_token(&id_claims)?)
    } else {
        None
    };
    let refresh_token = refresh_scope.map(|refresh_scope| {
        let value = new_refresh_token();
        let row = RefreshToken {
            jti: new_jti(),
            token_type: REFRESH_TOKEN.to_string(),
            token_hash: Some(token_hash(value.secret())),
            grant_id: Some(grant.grant_id.clone()),
            client_id: client.client_id.clone(),
            user_id: Some(user.user_id.clone()),
            scope: refresh_scope.to_string(),
            created_at: ctx.now,
            expires_at: ctx.now.saturating_add(refresh_ttl(ctx)),
            rotated_at: None,
            revoked_at: None,
            replaced_by: None,
        };
        (value, row)
    });
    Ok(Issued { access_token, claims, id_token, refresh_token })
}

fn respond(issued: Issued, scope: &ScopeSet, now: i64) -> TokenResponse {
    TokenResponse {
        access_token: issued.access_token,
        token_type: "Bearer",
        expires_in: issued.claims.exp - now,
        scope: (!scope.is_empty()).then(|| scope.to_string()),
        id_token: issued.id_token,
        refresh_token: issued.refresh_token.map(|(value, _)| value.into_secret()),
    }
}

fn issued_details(grant_type: GrantType, issued: &Issued) -> serde_json::Value {
    serde_json::json!({
        "grant_type": grant_type.as_str(),
        "jti": issued.claims.jti,
        "gid": issued.claims.gid,
        "scope": issued.claims.scope,
        "aud": issued.claims.aud,
        "exp": issued.claims.exp,
        "id_token": issued.id_token.is_some(),
        "refresh_token": issued.refresh_token.as_ref().map(|(_, row)| row.jti.clone()),
    })
}

/// `grant_type=authorization_code`.
pub fn exchange_code(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    request: &CodeRequest,
) -> Result<TokenResponse, TokenError> {
    precheck(credentials)?;
    let client = tokens::load_client(conn, ctx, credentials.client_id())?;
    let client = authenticate(client, credentials, ctx.secret_key, ctx.now, PublicClients::Allowed)?;
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(
            OAuthError::unauthorized_client("the client is not registered for the authorization_code grant").into()
        );
    }
    let invalid = || OAuthError::invalid_grant("the authorization code is invalid");
    if !is_plausible_opaque(request.code.secret()) {
        return Err(invalid().into());
    }
    let code_hash = token_hash(request.code.secret());
    let Some(code) = grant_store::find_code(conn, &code_hash)? else {
        return Err(invalid().into());
    };
    if code.consumed_at.is_some() {
        return Err(code_reused(conn, ctx, &client, &code_hash)?.into());
    }
    check_code(&code, &client, request, ctx.now)?;
    let Some(user) = active_user(conn, &code.user_id)? else {
        return Err(OAuthError::invalid_grant("the user of this authorization is disabled or deleted").into());
    };
    let scope = ScopeSet::parse(&code.scope).map_err(|e| StoreError::Corrupt(format!("code scope: {e}")))?;
    let audience = Audiences::from_config(ctx.config).select(request.resource.as_deref())?.to_string();
    let grant = Grant {
        grant_id: new_grant_id(),
        client_id: client.client_id.clone(),
        user_id: Some(user.user_id.clone()),
        scope: scope.to_string(),
        auth_time: Some(code.auth_time),
        amr: Some(code.amr.clone()),
        created_at: ctx.now,
        revoked_at: None,
    };
    let refresh_scope = issues_refresh_token(ctx.config.oauth.allow_refresh_token, &client, &scope).then_some(&scope);
    let issued = sign(ctx, &client, &user, &grant, &scope, &audience, code.nonce.clone(), refresh_scope)?;

    let recorded = conn.transaction::<_, TxError, _>(|conn| {
        // The grant first: the code row references it, and on SQLite a transaction that starts
        // with a write takes the write lock at once instead of failing to upgrade a read.
        grant_store::insert_grant(conn, &grant)?;
        if !grant_store::consume_code(conn, &code_hash, &grant.grant_id, ctx.now)? {
            return Err(TxError::Lost);
        }
        if let Some((_, row)) = &issued.refresh_token {
            grant_store::insert_refresh_token(conn, row)?;
        }
        let details = issued_details(GrantType::AuthorizationCode, &issued);
        audit::record(conn, &event(ctx, AuditAction::TokenIssued, &client, &user.user_id, details), ctx.now)?;
        Ok(())
    });
    match recorded {
        Ok(()) => {}
        Err(TxError::Lost | TxError::Reused) => return Err(code_reused(conn, ctx, &client, &code_hash)?.into()),
        Err(TxError::Store(error)) => return Err(error.into()),
    }
    tracing::info!(
        client_id = %client.client_id, user_id = %user.user_id, gid = %grant.grant_id, jti = %issued.claims.jti,
        scope = %scope, refresh_token = issued.refresh_token.is_some(), "authorization code exchanged"
    );
    Ok(respond(issued, &scope, ctx.now))
}

/// A used code presented again: RFC 6749 §4.1.2 and OAuth 2.1 §4.1.3 want what it issued
/// revoked, since either the client misbehaves or the code leaked.
fn code_reused(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    client: &Client,
    code_hash: &str,
) -> Result<OAuthError, StoreError> {
    let code = grant_store::find_code(conn, code_hash)?;
    let grant_id = code.as_ref().and_then(|c| c.grant_id.clone());
    let user_id = code.as_ref().map(|c| c.user_id.clone()).unwrap_or_default();
    conn.transaction(|conn| {
        let revoked = match &grant_id {
            Some(grant_id) => grant_store::revoke_grant(conn, grant_id, ctx.now)?,
            None => false,
        };
        let details = serde_json::json!({ "gid": grant_id, "grant_revoked": revoked });
        audit::record(conn, &event(ctx, AuditAction::AuthorizationCodeReused, client, &user_id, details), ctx.now)?;
        Ok::<_, StoreError>(())
    })?;
    tracing::warn!(client_id = %client.client_id, gid = ?grant_id, "an authorization code was redeemed twice; its grant is revoked");
    Ok(OAuthError::invalid_grant("the authorization code was already used; the tokens issued with it are revoked"))
}

/// `grant_type=refresh_token`: rotates the presented token and issues a new access token (and
/// ID token when `openid` is in scope, OIDC Core §12.2).
pub fn refresh(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    request: &RefreshRequest,
) -> Result<TokenResponse, TokenError> {
    precheck(credentials)?;
    let client = tokens::load_client(conn, ctx, credentials.client_id())?;
    let client = authenticate(client, credentials, ctx.secret_key, ctx.now, PublicClients::Allowed)?;
    if !ctx.config.oauth.allow_refresh_token {
        return Err(OAuthError::unsupported_grant_type("refresh tokens are turned off on this server").into());
    }
    if !client.allows_grant(GrantType::RefreshToken) {
        return Err(OAuthError::unauthorized_client("the client is not registered for the refresh_token grant").into());
    }
    if !is_plausible_opaque(request.refresh_token.secret()) {
        return Err(OAuthError::invalid_grant("the refresh token is invalid").into());
    }
    let hash = token_hash(request.refresh_token.secret());
    match refresh_once(conn, ctx, &client, request, &hash)? {
        Some(response) => Ok(response),
        // Another request rotated the token between our read and our write: look again.
        None => refresh_once(conn, ctx, &client, request, &hash)?
            .ok_or_else(|| OAuthError::invalid_grant("the refresh token was just used").into()),
    }
}

/// One attempt; `None` when a concurrent request rotated the token first.
fn refresh_once(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    client: &Client,
    request: &RefreshRequest,
    hash: &str,
) -> Result<Option<TokenResponse>, TokenError> {
    let invalid = |why: &str| TokenError::from(OAuthError::invalid_grant(why));
    let Some(token) = grant_store::find_refresh_token(conn, hash)? else {
        return Err(invalid("the refresh token is invalid"));
    };
    if token.client_id != client.client_id {
        return Err(invalid("the refresh token was issued to another client"));
    }
    if token.revoked_at.is_some() {
        return Err(invalid("the refresh token was revoked"));
    }
    if token.expires_at <= ctx.now {
        return Err(invalid("the refresh token has expired"));
    }
    let grant = match token.grant_id.as_deref() {
        Some(grant_id) => grant_store::find_grant(conn, grant_id)?,
        None => None,
    };
    let Some(grant) = grant.filter(|g| g.revoked_at.is_none()) else {
        return Err(invalid("the refresh token was revoked"));
    };
    if let Some(rotated_at) = token.rotated_at {
        let grace = i64::try_from(ctx.config.oauth.refresh_reuse_grace.as_secs()).unwrap_or(i64::MAX);
        if reuse(rotated_at, grace, ctx.now) == Reuse::Replay {
            refresh_token_reused(conn, ctx, client, &token, &grant)?;
            return Err(invalid("the refresh token was already used; its whole family is revoked"));
        }
    }
    let Some(user) = grant.user_id.as_deref().map(|id| active_user(conn, id)).transpose()?.flatten() else {
        return Err(invalid("the user of this grant is disabled or deleted"));
    };
    let granted =
        ScopeSet::parse(&token.scope).map_err(|e| StoreError::Corrupt(format!("refresh token scope: {e}")))?;
    let scope = refreshed_scope(&granted, request.scope.as_deref())?;
    let audience = Audiences::from_config(ctx.config).select(request.resource.as_deref())?.to_string();
    let issued = sign(ctx, client, &user, &grant, &scope, &audience, None, Some(&granted))?;

    let rotate = token.rotated_at.is_none();
    let Some((_, successor)) = &issued.refresh_token else {
        return Err(StoreError::Corrupt("a refresh issued no refresh token".into()).into());
    };
    let recorded = conn.transaction::<_, TxError, _>(|conn| {
        if rotate {
            // Exactly one of concurrent refreshes rotates the token; the others retry below.
            if !grant_store::rotate_refresh_token(conn, &token.jti, &successor.jti, ctx.now)? {
                return Err(TxError::Lost);
            }
        } else {
            // A retry within the grace window replaces the child issued last, which must still
            // be live: at most one child of a rotated token is ever live.
            let replaced = match token.replaced_by.as_deref() {
                Some(previous) => grant_store::revoke_live_refresh_token(conn, previous, ctx.now)?,
                None => false,
            };
            if !replaced {
                return Err(TxError::Reused);
            }
            grant_store::set_refresh_successor(conn, &token.jti, &successor.jti)?;
        }
        grant_store::insert_refresh_token(conn, successor)?;
        let mut details = issued_details(GrantType::RefreshToken, &issued);
        details["rotated"] = serde_json::Value::String(token.jti.clone());
        details["retry"] = serde_json::Value::Bool(!rotate);
        if !rotate {
            details["replaced"] = serde_json::json!(token.replaced_by);
        }
        audit::record(conn, &event(ctx, AuditAction::TokenIssued, client, &user.user_id, details), ctx.now)?;
        Ok(())
    });
    match recorded {
        Ok(()) => {}
        Err(TxError::Lost) => return Ok(None),
        Err(TxError::Reused) => {
            // The child issued last was used or revoked already: the presented token leaked.
            refresh_token_reused(conn, ctx, client, &token, &grant)?;
            return Err(invalid("the refresh token was already used; its whole family is revoked"));
        }
        Err(TxError::Store(error)) => return Err(error.into()),
    }
    tracing::info!(
        client_id = %client.client_id, user_id = %user.user_id, gid = %grant.grant_id, jti = %issued.claims.jti,
        retry = !rotate, "refresh token rotated"
    );
    Ok(Some(respond(issued, &scope, ctx.now)))
}

fn refresh_token_reused(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    client: &Client,
    token: &RefreshToken,
    grant: &Grant,
) -> Result<(), StoreError> {
    conn.transaction(|conn| {
        grant_store::revoke_grant(conn, &grant.grant_id, ctx.now)?;
        let details = serde_json::json!({ "gid": grant.grant_id, "jti": token.jti, "rotated_at": token.rotated_at });
        let user_id = grant.user_id.clone().unwrap_or_default();
        audit::record(conn, &event(ctx, AuditAction::RefreshTokenReused, client, &user_id, details), ctx.now)?;
        Ok::<_, StoreError>(())
    })?;
    tracing::warn!(
        client_id = %client.client_id, gid = %grant.grant_id,
        "a rotated refresh token was presented again after the grace window or after its successor was used; its family is revoked"
    );
    Ok(())
}

/// `POST /oauth-provider/revoke` for refresh tokens (revoking one revokes its whole grant, RFC
/// 7009 §2.1), falling back to access tokens. `token_type_hint` decides which is tried first.
pub fn revoke(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    token: &str,
    token_type_hint: Option<&str>,
) -> Result<Revocation, TokenError> {
    // A JWT has dots; our refresh tokens never do.
    let opaque = !token.contains('.');
    if !(opaque || token_type_hint == Some(REFRESH_TOKEN)) || !is_plausible_opaque(token) {
        return tokens::revoke(conn, ctx, credentials, token);
    }
    precheck(credentials)?;
    let caller = tokens::load_client(conn, ctx, credentials.client_id())?;
    let caller = authenticate(caller, credentials, ctx.secret_key, ctx.now, PublicClients::Allowed)?;
    let Some(refresh) = grant_store::find_refresh_token(conn, &token_hash(token))? else {
        return Ok(Revocation::Ignored);
    };
    if refresh.client_id != caller.client_id {
        return Err(OAuthError::unauthorized_client("the token was not issued to this client").into());
    }
    let Some(grant_id) = refresh.grant_id.clone() else {
        return Ok(Revocation::Ignored);
    };
    let revoked = conn.transaction(|conn| {
        let revoked = grant_store::revoke_grant(conn, &grant_id, ctx.now)?;
        if revoked {
            let user_id = refresh.user_id.clone().unwrap_or_default();
            let details = serde_json::json!({ "token_type": REFRESH_TOKEN, "jti": refresh.jti, "gid": grant_id });
            audit::record(conn, &event(ctx, AuditAction::TokenRevoked, &caller, &user_id, details), ctx.now)?;
        }
        Ok::<_, StoreError>(revoked)
    })?;
    if revoked {
        tracing::info!(client_id = %caller.client_id, gid = %grant_id, "revoked a refresh token and its grant");
        Ok(Revocation::Revoked)
    } else {
        Ok(Revocation::AlreadyRevoked)
    }
}

/// Whether an access token that verified is still live in storage: not revoked by `jti`, and,
/// for a token of a user, its grant not revoked and its user active.
pub fn access_token_is_live(conn: &mut AnyConnection, claims: &AccessTokenClaims) -> Result<bool, StoreError> {
    if grant_store::access_token_revoked(conn, &claims.jti)? {
        return Ok(false);
    }
    let Some(grant_id) = claims.gid.as_deref() else {
        return Ok(true);
    };
    let Some(grant) = grant_store::find_grant(conn, grant_id)? else {
        return Ok(false);
    };
    if grant.revoked_at.is_some() {
        return Ok(false);
    }
    match grant.user_id.as_deref() {
        Some(user_id) => Ok(active_user(conn, user_id)?.is_some()),
        None => Ok(true),
    }
}

/// Why userinfo refuses a token (RFC 6750 §3.1).
#[derive(Debug, thiserror::Error)]
pub enum UserInfoError {
    #[error("{0}")]
    InvalidToken(&'static str),
    #[error("the access token lacks the openid scope")]
    InsufficientScope,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// OIDC Core §5.3: the claims about the user an access token is for.
pub fn userinfo(
    conn: &mut AnyConnection,
    keys: &crate::jwt::TokenKeys,
    issuer: &str,
    token: &str,
    now: i64,
) -> Result<serde_json::Value, UserInfoError> {
    let claims = keys.verify(token, issuer, now).map_err(|reason| {
        tracing::debug!(?reason, "userinfo: not a live access token");
        UserInfoError::InvalidToken("the access token is invalid or has expired")
    })?;
    let Some(grant_id) = claims.gid.as_deref() else {
        // A client_credentials token: about no user.
        return Err(UserInfoError::InsufficientScope);
    };
    if !access_token_is_live(conn, &claims)? {
        return Err(UserInfoError::InvalidToken("the access token was revoked"));
    }
    let scope = ScopeSet::parse(&claims.scope).unwrap_or_default();
    if !scope.contains("openid") {
        return Err(UserInfoError::InsufficientScope);
    }
    let user = match grant_store::find_grant(conn, grant_id)?.and_then(|g| g.user_id) {
        Some(user_id) => active_user(conn, &user_id)?,
        None => None,
    };
    let user = user
        .filter(|u| u.user_id == claims.sub)
        .ok_or(UserInfoError::InvalidToken("the user of this token is disabled or deleted"))?;
    Ok(userinfo_claims(&user, &scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::user::UserStatus;
    use crate::oauth::ErrorCode;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn client(grants: &[GrantType]) -> Client {
        Client { grant_types: grants.to_vec(), ..Client::example() }
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

    fn scopes(s: &str) -> ScopeSet {
        ScopeSet::parse(s).expect("scope")
    }

    #[test]
    fn code_bindings() {
        let c = client(&[GrantType::AuthorizationCode]);
        let cb = Some("https://app.example/cb");
        assert_eq!(check_code(&code(), &c, &request(cb, Some(VERIFIER)), 100), Ok(()));
        assert_eq!(check_code(&code(), &c, &request(None, Some(VERIFIER)), 100), Ok(()), "one registered URI");

        let fail = |code: &AuthorizationCode, client: &Client, request: &CodeRequest, now: i64| {
            check_code(code, client, request, now).expect_err("refused").code
        };
        assert_eq!(fail(&code(), &c, &request(cb, Some(VERIFIER)), 700), ErrorCode::InvalidGrant, "expired");
        let other = Client { client_id: "cl_other".into(), ..c.clone() };
        assert_eq!(fail(&code(), &other, &request(cb, Some(VERIFIER)), 100), ErrorCode::InvalidGrant);
        for uri in ["https://app.example/cb/", "https://APP.example/cb", "https://app.example:443/cb"] {
            assert_eq!(fail(&code(), &c, &request(Some(uri), Some(VERIFIER)), 100), ErrorCode::InvalidGrant, "{uri}");
        }
        let two = Client { redirect_uris: vec!["https://app.example/cb".into(), "https://b/cb".into()], ..c.clone() };
        assert_eq!(fail(&code(), &two, &request(None, Some(VERIFIER)), 100), ErrorCode::InvalidRequest);
        assert_eq!(fail(&code(), &c, &request(cb, None), 100), ErrorCode::InvalidGrant, "verifier missing");
        let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl";
        assert_eq!(fail(&code(), &c, &request(cb, Some(wrong)), 100), ErrorCode::InvalidGrant);
        let no_pkce = AuthorizationCode { code_challenge: None, code_challenge_method: None, ..code() };
        assert_eq!(check_code(&no_pkce, &c, &request(cb, None), 100), Ok(()));
        assert_eq!(fail(&no_pkce, &c, &request(cb, Some(VERIFIER)), 100), ErrorCode::InvalidGrant);
    }

    #[test]
    fn refresh_token_policy() {
        let both = client(&[GrantType::AuthorizationCode, GrantType::RefreshToken]);
        let code_only = client(&[GrantType::AuthorizationCode]);
        assert!(issues_refresh_token(true, &both, &scopes("openid offline_access")));
        assert!(!issues_refresh_token(true, &both, &scopes("openid email")), "OIDC needs offline_access");
        assert!(issues_refresh_token(true, &both, &scopes("orders:read")), "plain OAuth");
        assert!(!issues_refresh_token(false, &both, &scopes("openid offline_access")));
        assert!(!issues_refresh_token(true, &code_only, &scopes("openid offline_access")));
    }

    #[test]
    fn refreshing_never_widens() {
        let granted = scopes("openid email offline_access");
        assert_eq!(refreshed_scope(&granted, None), Ok(granted.clone()));
        assert_eq!(refreshed_scope(&granted, Some("openid")), Ok(scopes("openid")));
        assert_eq!(refreshed_scope(&granted, Some("openid profile")).expect_err("wider").code, ErrorCode::InvalidScope);
        assert_eq!(refreshed_scope(&granted, Some("openid  email")).expect_err("bad").code, ErrorCode::InvalidScope);
    }

    #[test]
    fn reuse_within_and_after_the_grace() {
        assert_eq!(reuse(100, 10, 105), Reuse::Retry);
        assert_eq!(reuse(100, 10, 110), Reuse::Replay);
        assert_eq!(reuse(100, 0, 100), Reuse::Replay, "no grace");
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
        assert_eq!(userinfo_claims(&user, &scopes("openid")), serde_json::json!({ "sub": "usr_1" }));
        assert_eq!(
            userinfo_claims(&user, &scopes("openid email profile")),
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
            900,
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
        assert!(is_plausible_opaque(super::super::authorize::new_code().secret()));
        for bad in ["", "short", "a.b.c.d.e.f.g.h.i", &"a".repeat(257), "abc def ghi jkl mno"] {
            assert!(!is_plausible_opaque(bad), "{bad:?}");
        }
    }
}
