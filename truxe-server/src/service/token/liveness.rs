//! The one owner of "is this token still live": a token that verifies may still be dead in
//! storage (its `jti` revoked, its grant revoked by a code replay, refresh-token reuse,
//! revocation, withdrawn consent or a disabled user), and a token outlives neither its user's
//! nor its client's being switched off. Introspection and userinfo both ask here, once.

use std::sync::Arc;

use super::{Context, is_plausible_opaque, load_client};
use crate::jwt::{AccessTokenClaims, Rejection};
use crate::model::client::Client;
use crate::model::user::{User, is_plausible_user_id};
use crate::service::authorize::token_hash;
use crate::store::grants::{self as grant_store, Grant};
use crate::store::tokens::{self as token_store, RefreshToken};
use crate::store::{AnyConnection, StoreError, users as user_store};

/// Why a token is not live (for debug logs; callers answer all of them alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dead {
    /// Not a valid, unexpired access token of ours (signature, type, issuer, `exp`).
    Rejected(Rejection),
    /// Not a refresh token of ours, or rotated, revoked or expired.
    UnknownRefreshToken,
    Revoked,
    GrantRevoked,
    UserInactive,
    ClientInactive,
}

/// A live access token and who it is about.
#[derive(Debug, Clone)]
pub struct LiveAccessToken {
    pub claims: AccessTokenClaims,
    /// The client it was issued to.
    pub client: Arc<Client>,
    /// The user of its grant; `None` for a machine (`client_credentials`) token.
    pub user: Option<User>,
}

/// A live refresh token and who it is about.
#[derive(Debug, Clone)]
pub struct LiveRefreshToken {
    pub token: RefreshToken,
    pub grant: Grant,
    pub client: Arc<Client>,
    pub user: User,
    /// The earlier of the token's expiry and its family's.
    pub expires_at: i64,
}

/// The user `user_id` while active (unknown, malformed, disabled: `None`).
pub fn active_user(conn: &mut AnyConnection, user_id: &str) -> Result<Option<User>, StoreError> {
    if !is_plausible_user_id(user_id) {
        return Ok(None);
    }
    Ok(user_store::find(conn, user_id)?.filter(User::is_active))
}

fn active_client(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    client_id: &str,
) -> Result<Option<Arc<Client>>, StoreError> {
    Ok(load_client(ctx, Some(conn), client_id)?.filter(|client| client.is_active()))
}

/// The grant `grant_id` while not revoked, and its active user.
fn live_grant(conn: &mut AnyConnection, grant_id: &str) -> Result<Result<(Grant, User), Dead>, StoreError> {
    let Some(grant) = grant_store::find_grant(conn, grant_id)?.filter(|g| g.revoked_at.is_none()) else {
        return Ok(Err(Dead::GrantRevoked));
    };
    let user = match grant.user_id.as_deref() {
        Some(user_id) => active_user(conn, user_id)?,
        None => None,
    };
    Ok(user.map(|user| (grant, user)).ok_or(Dead::UserInactive))
}

/// Verifies `token` as an access token of ours and checks it in storage: at most one query for
/// a machine token (its `jti`), three for a user's (`jti`, grant, user); the client comes from
/// the client cache. With Redis, a revoked-`jti` mark there answers without the database.
pub fn access_token(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    token: &str,
) -> Result<Result<LiveAccessToken, Dead>, StoreError> {
    let claims = match ctx.keys.verify(token, &ctx.config.issuer, ctx.now) {
        Ok(claims) => claims,
        Err(rejection) => return Ok(Err(Dead::Rejected(rejection))),
    };
    // A mark in Redis is trusted only as "revoked": a miss or a Redis failure asks the database.
    if ctx.shared.is_some_and(|shared| shared.is_marked_revoked(&claims.jti) == Some(true)) {
        return Ok(Err(Dead::Revoked));
    }
    if token_store::access_token_revoked(conn, &claims.jti)? {
        return Ok(Err(Dead::Revoked));
    }
    let user = match claims.gid.as_deref() {
        None => None,
        Some(grant_id) => match live_grant(conn, grant_id)? {
            Ok((_, user)) if user.user_id == claims.sub => Some(user),
            Ok(_) => return Ok(Err(Dead::UserInactive)),
            Err(dead) => return Ok(Err(dead)),
        },
    };
    let Some(client) = active_client(conn, ctx, &claims.client_id)? else {
        return Ok(Err(Dead::ClientInactive));
    };
    Ok(Ok(LiveAccessToken { claims, client, user }))
}

/// Looks `token` up as a refresh token of ours: live when neither rotated nor revoked nor
/// expired, its family within `REFRESH_TOKEN_MAX_AGE`, its grant, user and client live.
pub fn refresh_token(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    token: &str,
) -> Result<Result<LiveRefreshToken, Dead>, StoreError> {
    if !is_plausible_opaque(token) {
        return Ok(Err(Dead::UnknownRefreshToken));
    }
    let Some(row) = token_store::find_refresh_token(conn, &token_hash(token))? else {
        return Ok(Err(Dead::UnknownRefreshToken));
    };
    if row.rotated_at.is_some() || row.revoked_at.is_some() || row.expires_at <= ctx.now {
        return Ok(Err(Dead::UnknownRefreshToken));
    }
    let Some(grant_id) = row.grant_id.as_deref() else {
        return Ok(Err(Dead::GrantRevoked));
    };
    let (grant, user) = match live_grant(conn, grant_id)? {
        Ok(live) => live,
        Err(dead) => return Ok(Err(dead)),
    };
    let family_expires_at = grant.created_at.saturating_add(ctx.rules.refresh_family_ttl);
    if family_expires_at <= ctx.now {
        return Ok(Err(Dead::UnknownRefreshToken));
    }
    let Some(client) = active_client(conn, ctx, &row.client_id)? else {
        return Ok(Err(Dead::ClientInactive));
    };
    let expires_at = row.expires_at.min(family_expires_at);
    Ok(Ok(LiveRefreshToken { token: row, grant, client, user, expires_at }))
}
