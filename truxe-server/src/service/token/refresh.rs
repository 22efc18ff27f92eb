//! `grant_type=refresh_token` (RFC 6749 §6, RFC 9700 §4.14, OAuth 2.1 §4.3): each use rotates
//! the token, never widens the scope, never outlives the client's current policy or the
//! family's absolute lifetime, and a rotated token presented again revokes the whole family.
//!
//! With `TRUXE_REFRESH_REUSE_GRACE` on, a rotated token presented within the grace is taken for
//! a client retrying a lost response: the child issued for it last is revoked and a new pair
//! answered, so at most one child is ever live. The revoked child is then reuse evidence: if it
//! is presented again, the retry was not the legitimate client's, and the family is revoked.

use diesel::Connection;

use super::issue::{Signing, sign, user_event};
use super::liveness::active_user;
use super::{Context, PublicClients, TokenError, TokenResponse, audience, authenticated_client, is_plausible_opaque};
use crate::model::client::{Client, GrantType};
use crate::oauth::OAuthError;
use crate::oauth::client_auth::ClientCredentials;
use crate::oauth::form::Form;
use crate::oauth::scope::ScopeSet;
use crate::secret::Secret;
use crate::service::authorize::{OFFLINE_ACCESS, token_hash};
use crate::store::audit::{self, AuditAction};
use crate::store::grants::{self as grant_store, Grant};
use crate::store::tokens::{self as token_store, RefreshToken};
use crate::store::{self, AnyConnection, Rollback, StoreError};

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

/// Refresh tokens for a grant: only when the server allows them and the client is registered
/// for the `refresh_token` grant; then for an OpenID Connect request only when `offline_access`
/// was granted (OIDC Core §11; the consent page asks for it), and for a plain OAuth request
/// always (OAuth 2.1 §4.3).
pub fn issues_refresh_token(allow_refresh_token: bool, client: &Client, scope: &ScopeSet) -> bool {
    allow_refresh_token
        && client.allows_grant(GrantType::RefreshToken)
        && (scope.contains(OFFLINE_ACCESS) || !scope.contains("openid"))
}

/// The scope a refresh may grant: what the grant holds, narrowed to what the client may be
/// granted now (an admin narrowing `allowed_scopes` or `TRUXE_SCOPES` applies at the next
/// refresh), narrowed again to the request's `scope` (RFC 6749 §6: never wider).
pub fn refreshed_scope(
    granted: &ScopeSet,
    allowed_now: &ScopeSet,
    requested: Option<&str>,
) -> Result<ScopeSet, OAuthError> {
    let available = granted.intersection(allowed_now);
    let Some(requested) = requested else {
        return Ok(available);
    };
    let requested = ScopeSet::parse(requested).map_err(OAuthError::invalid_scope)?;
    let wider = requested.difference(&available);
    if !wider.is_empty() {
        return Err(OAuthError::invalid_scope(format!(
            "refreshing cannot widen the scope; not granted: {}",
            wider.join(" ")
        )));
    }
    Ok(requested)
}

/// What a presented refresh token that is no longer plainly live means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// Live: rotate it.
    Fresh,
    /// Rotated, within the grace window: a client retrying a response it lost.
    Retry,
    /// Rotated after the grace, or revoked while its grant is live (it was replaced by a retry):
    /// the token leaked (RFC 9700 §4.14.2). The family is revoked.
    Replay,
}

pub fn classify(token: &RefreshToken, grace_secs: i64, now: i64) -> Presented {
    if token.revoked_at.is_some() {
        return Presented::Replay;
    }
    match token.rotated_at {
        None => Presented::Fresh,
        Some(rotated_at) if now - rotated_at < grace_secs => Presented::Retry,
        Some(_) => Presented::Replay,
    }
}

// ---------------------------------------------------------------------------------------------
// Use case

pub fn refresh(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    request: &RefreshRequest,
) -> Result<TokenResponse, TokenError> {
    let client = authenticated_client(ctx, Some(conn), credentials, PublicClients::Allowed)?;
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
        // Another request rotated the token between our read and our write: look again (it is
        // now a retry or a replay).
        None => refresh_once(conn, ctx, &client, request, &hash)?
            .ok_or_else(|| OAuthError::invalid_grant("the refresh token was just used").into()),
    }
}

fn invalid(why: &str) -> TokenError {
    TokenError::from(OAuthError::invalid_grant(why))
}

const REUSED: &str = "the refresh token was already used; its whole family is revoked";

/// One attempt; `None` when a concurrent request rotated the token first.
fn refresh_once(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    client: &Client,
    request: &RefreshRequest,
    hash: &str,
) -> Result<Option<TokenResponse>, TokenError> {
    let Some(token) = token_store::find_refresh_token(conn, hash)? else {
        return Err(invalid("the refresh token is invalid"));
    };
    if token.client_id != client.client_id {
        return Err(invalid("the refresh token was issued to another client"));
    }
    let grant = match token.grant_id.as_deref() {
        Some(grant_id) => grant_store::find_grant(conn, grant_id)?,
        None => None,
    };
    let Some(grant) = grant.filter(|g| g.revoked_at.is_none()) else {
        return Err(invalid("the refresh token was revoked"));
    };
    let grace = i64::try_from(ctx.config.oauth.refresh_reuse_grace.as_secs()).unwrap_or(i64::MAX);
    let presented = classify(&token, grace, ctx.now);
    if presented == Presented::Replay {
        refresh_token_reused(conn, ctx, client, &token, &grant)?;
        return Err(invalid(REUSED));
    }
    if token.expires_at <= ctx.now {
        return Err(invalid("the refresh token has expired"));
    }
    let family_expires_at = grant.created_at.saturating_add(ctx.rules.refresh_family_ttl);
    if family_expires_at <= ctx.now {
        return Err(invalid("the grant has reached its maximum age (REFRESH_TOKEN_MAX_AGE); sign in again"));
    }
    let Some(user) = grant.user_id.as_deref().map(|id| active_user(conn, id)).transpose()?.flatten() else {
        return Err(invalid("the user of this grant is disabled or deleted"));
    };
    let granted =
        ScopeSet::parse(&token.scope).map_err(|e| StoreError::Corrupt(format!("refresh token scope: {e}")))?;
    let allowed_now = client.allowed_scopes.intersection(&ctx.rules.scopes);
    let scope = refreshed_scope(&granted, &allowed_now, request.scope.as_deref())?;
    let refresh_scope = granted.intersection(&allowed_now);
    // OIDC Core §11: an OpenID Connect grant keeps refreshing only while `offline_access` is
    // still allowed (an administrator may have withdrawn it).
    if !issues_refresh_token(true, client, &refresh_scope) {
        return Err(invalid("the client may no longer keep this grant alive (offline_access); sign in again"));
    }
    let audience = audience(ctx, client, request.resource.as_deref())?;
    let issued = sign(
        ctx,
        Signing {
            client,
            user: &user,
            grant: &grant,
            scope: &scope,
            audience: &audience,
            nonce: None,
            refresh_scope: Some(&refresh_scope),
            family_expires_at,
        },
    )?;

    let Some((_, successor)) = &issued.refresh_token else {
        return Err(StoreError::Corrupt("a refresh issued no refresh token".into()).into());
    };
    let retry = presented == Presented::Retry;
    /// Why the rotation rolled back.
    enum Abort {
        /// A concurrent request rotated the token first.
        Lost,
        /// A retry whose latest child was used or revoked already.
        Reused,
    }
    let recorded = store::transaction(conn, |conn| {
        if retry {
            // Within the grace window: the child issued last must still be live, and is
            // replaced; at most one child of a rotated token is ever live.
            let replaced = match token.replaced_by.as_deref() {
                Some(previous) => token_store::revoke_live_refresh_token(conn, previous, ctx.now)?,
                None => false,
            };
            if !replaced {
                return Err(Rollback::Abort(Abort::Reused));
            }
            token_store::set_refresh_successor(conn, &token.jti, &successor.jti)?;
        } else if !token_store::rotate_refresh_token(conn, &token.jti, &successor.jti, ctx.now)? {
            // Exactly one of concurrent refreshes rotates the token; the others look again.
            return Err(Rollback::Abort(Abort::Lost));
        }
        token_store::insert_refresh_token(conn, successor)?;
        Ok(())
    })?;
    match recorded {
        Ok(()) => {
            // The hot path: the batched writer, once the rotation is committed.
            let mut event = issued.event(ctx, GrantType::RefreshToken, client, &user.user_id);
            event.action = AuditAction::TokenRefreshed;
            event.details["rotated"] = serde_json::Value::from(token.jti.clone());
            event.details["retry"] = serde_json::Value::Bool(retry);
            if retry {
                event.details["replaced"] = serde_json::json!(token.replaced_by);
            }
            ctx.audit.record(event, ctx.now)?;
        }
        Err(Abort::Lost) => return Ok(None),
        Err(Abort::Reused) => {
            refresh_token_reused(conn, ctx, client, &token, &grant)?;
            return Err(invalid(REUSED));
        }
    }
    tracing::info!(
        client_id = %client.client_id, user_id = %user.user_id, gid = %grant.grant_id, jti = %issued.claims.jti,
        retry, "refresh token rotated"
    );
    Ok(Some(issued.respond(&scope, ctx.now)))
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
        let user_id = grant.user_id.clone().unwrap_or_default();
        let event = user_event(ctx, AuditAction::RefreshTokenReused, client, &user_id).details(serde_json::json!({
            "gid": grant.grant_id,
            "jti": token.jti,
            "rotated_at": token.rotated_at,
            "revoked_at": token.revoked_at,
        }));
        audit::record(conn, &event, ctx.now)?;
        Ok::<_, StoreError>(())
    })?;
    tracing::warn!(
        client_id = %client.client_id, gid = %grant.grant_id,
        "a rotated or replaced refresh token was presented again; its family is revoked"
    );
    Ok(())
}
