//! `POST /oauth-provider/revoke` (RFC 7009): the one owner of revocation at the token endpoint.
//! Only the client a token was issued to may revoke it. A refresh token revokes its whole grant
//! (the refresh and access tokens of one sign-in, §2.1); an access token is revoked by `jti`.
//! `token_type_hint` is only a hint: the token's shape tells the two apart. An administrator's
//! revocation (`truxectl tokens revoke`, [`revoke_as_admin`]) goes through the same storage.

use diesel::Connection;

use super::issue::user_event;
use super::{Context, PublicClients, TokenError, authenticated_client, is_plausible_opaque};
use crate::model::Jti;
use crate::oauth::OAuthError;
use crate::oauth::client_auth::ClientCredentials;
use crate::service::authorize::token_hash;
use crate::store::audit::{self, AuditAction, AuditEvent};
use crate::store::grants as grant_store;
use crate::store::tokens::{
    self as token_store, ACCESS_TOKEN, IssuedAccessToken, IssuedFilter, REFRESH_TOKEN, RevokedAccessToken,
};
use crate::store::{AnyConnection, StoreError};

/// What revocation did, for the HTTP layer (every variant is a 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    AlreadyRevoked,
    /// Unknown, malformed, expired or not ours: nothing to do (RFC 7009 §2.2).
    Ignored,
}

fn not_yours() -> TokenError {
    OAuthError::unauthorized_client("the token was not issued to this client").into()
}

pub fn revoke(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    token: &str,
) -> Result<Revocation, TokenError> {
    let caller = authenticated_client(ctx, Some(conn), credentials, PublicClients::Allowed)?;
    // A JWT has dots; our refresh tokens never do.
    if !token.contains('.') {
        if !is_plausible_opaque(token) {
            return Ok(Revocation::Ignored);
        }
        let Some(refresh) = token_store::find_refresh_token(conn, &token_hash(token))? else {
            return Ok(Revocation::Ignored);
        };
        if refresh.client_id != caller.client_id {
            return Err(not_yours());
        }
        let Some(grant_id) = refresh.grant_id.clone() else {
            return Ok(Revocation::Ignored);
        };
        let revoked = conn.transaction(|conn| {
            let revoked = grant_store::revoke_grant(conn, &grant_id, ctx.now)?;
            if revoked {
                let user_id = refresh.user_id.clone().unwrap_or_default();
                let event = user_event(ctx, AuditAction::TokenRevoked, &caller, &user_id).details(serde_json::json!({
                    "token_type": REFRESH_TOKEN, "jti": refresh.jti, "gid": grant_id,
                }));
                audit::record(conn, &event, ctx.now)?;
            }
            Ok::<_, StoreError>(revoked)
        })?;
        if !revoked {
            return Ok(Revocation::AlreadyRevoked);
        }
        tracing::info!(client_id = %caller.client_id, gid = %grant_id, "revoked a refresh token and its grant");
        return Ok(Revocation::Revoked);
    }

    let claims = match ctx.keys.verify(token, &ctx.config.issuer, ctx.now) {
        Ok(claims) => claims,
        Err(reason) => {
            tracing::debug!(?reason, client_id = %caller.client_id, "revocation: not a live token of ours");
            return Ok(Revocation::Ignored);
        }
    };
    if claims.client_id != caller.client_id {
        return Err(not_yours());
    }
    let revoked = conn.transaction(|conn| {
        let row = RevokedAccessToken {
            jti: &claims.jti,
            client_id: &claims.client_id,
            scope: &claims.scope,
            issued_at: claims.iat,
            expires_at: claims.exp,
        };
        if !token_store::revoke_access_token(conn, &row, ctx.now)? {
            return Ok(false);
        }
        let event = AuditEvent::by_client(AuditAction::TokenRevoked, &caller.client_id)
            .subject(&claims.jti)
            .from_request(ctx.request)
            .details(serde_json::json!({ "token_type": ACCESS_TOKEN, "jti": claims.jti, "exp": claims.exp }));
        audit::record(conn, &event, ctx.now)?;
        Ok::<_, StoreError>(true)
    });
    match revoked {
        Ok(true) => {
            if let Some(shared) = ctx.shared {
                shared.mark_revoked(&claims.jti, claims.exp.saturating_sub(ctx.now));
            }
            tracing::info!(client_id = %caller.client_id, jti = %claims.jti, "revoked an access token");
            Ok(Revocation::Revoked)
        }
        Ok(false) => Ok(Revocation::AlreadyRevoked),
        // Two revocations of one token raced and the other inserted first: it is revoked.
        Err(StoreError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ))) => Ok(Revocation::AlreadyRevoked),
        Err(error) => Err(error.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Revocation by an administrator (`truxectl tokens revoke`): one token by its `jti`, or every
// token of a client, of a user, or of a user at one client. The same storage as the endpoint's
// revocation: grants revoked with their tokens, access tokens recorded by `jti`.

/// The earliest access tokens are looked for in the audit trail: the longest an access token
/// lives (`ACCESS_TOKEN_EXPIRY`), but at least a day, in case it was longer before.
pub const MIN_ISSUED_LOOKBACK_SECS: i64 = 86_400;

/// What an administrator revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminTarget<'a> {
    /// One token: an access token, or a refresh token with its whole grant (as at the endpoint).
    Jti(&'a str),
    /// Every token of a client, of a user, or of a user at a client (at least one is given).
    Holder { client_id: Option<&'a str>, user_id: Option<&'a str> },
}

/// Why a `--jti` revocation changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unchanged {
    AlreadyRevoked,
    /// An access token whose JWT has expired: nothing accepts it any more.
    Expired,
}

/// What [`revoke_as_admin`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdminRevocation {
    /// Access tokens that were live and are now revoked (each recorded by its `jti`).
    pub access_tokens: usize,
    /// Refresh tokens that were live (neither rotated, revoked nor expired) and are now revoked.
    pub refresh_tokens: usize,
    /// Grants (sign-ins of a user at a client) revoked with their tokens.
    pub grants: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchanged: Option<Unchanged>,
    /// The access tokens revoked, with when each expires: what Redis marks are written for.
    #[serde(skip)]
    pub revoked_jtis: Vec<(Jti, i64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminRevokeError {
    #[error(
        "no token with jti {0}: it is not a refresh token's, and no access token with it was issued within the last {1} s"
    )]
    UnknownJti(String, i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for AdminRevokeError {
    fn from(error: diesel::result::Error) -> Self {
        AdminRevokeError::Store(error.into())
    }
}

/// Revokes what `target` names, in one transaction with one `token.revoked` audit event by
/// `actor` (none when nothing changed). `access_token_ttl` is the server's
/// (`ACCESS_TOKEN_EXPIRY`): access tokens issued earlier than that (and a day) have expired.
/// The caller tells the servers' Redis of [`AdminRevocation::revoked_jtis`] if it can; the
/// database is the revocation either way.
pub fn revoke_as_admin(
    conn: &mut AnyConnection,
    target: AdminTarget<'_>,
    actor: &str,
    access_token_ttl: i64,
    now: i64,
) -> Result<AdminRevocation, AdminRevokeError> {
    let since = now.saturating_sub(access_token_ttl.max(MIN_ISSUED_LOOKBACK_SECS));
    match target {
        // Naming no one is never "everyone".
        AdminTarget::Holder { client_id: None, user_id: None } => Ok(AdminRevocation::default()),
        AdminTarget::Holder { client_id, user_id } => {
            let holder = grant_store::GrantHolder { client_id, user_id, grant_id: None };
            let filter = IssuedFilter { jti: None, client_id, user_id };
            let subject = user_id.or(client_id).unwrap_or_default();
            revoke_holder(conn, holder, filter, (actor, subject), since, now)
        }
        AdminTarget::Jti(jti) => match token_store::token_type_of(conn, jti)?.as_deref() {
            Some(REFRESH_TOKEN) => {
                let Some(refresh) = token_store::find_refresh_token_by_jti(conn, jti)? else {
                    return Err(AdminRevokeError::UnknownJti(jti.to_string(), now - since));
                };
                let Some(grant_id) = refresh.grant_id.as_deref() else {
                    return Ok(AdminRevocation { unchanged: Some(Unchanged::AlreadyRevoked), ..Default::default() });
                };
                let holder = grant_store::GrantHolder { client_id: None, user_id: None, grant_id: Some(grant_id) };
                let filter = IssuedFilter {
                    jti: None,
                    client_id: Some(&refresh.client_id),
                    user_id: refresh.user_id.as_deref(),
                };
                let revoked = revoke_holder(conn, holder, filter, (actor, jti), since, now)?;
                if revoked.grants == 0 {
                    return Ok(AdminRevocation { unchanged: Some(Unchanged::AlreadyRevoked), ..revoked });
                }
                Ok(revoked)
            }
            Some(_) => Ok(AdminRevocation { unchanged: Some(Unchanged::AlreadyRevoked), ..Default::default() }),
            None => revoke_access_token_by_jti(conn, jti, actor, since, now),
        },
    }
}

/// The grants of `holder` and the access tokens `filter` finds that those grants issued (or,
/// for a client, that it got without a grant: `client_credentials`).
fn revoke_holder(
    conn: &mut AnyConnection,
    holder: grant_store::GrantHolder<'_>,
    filter: IssuedFilter<'_>,
    (actor, subject): (&str, &str),
    since: i64,
    now: i64,
) -> Result<AdminRevocation, AdminRevokeError> {
    Ok(conn.transaction(|conn| {
        // A write first (see `revoke_grants_of`), then the reads.
        let grants = grant_store::revoke_grants_of(conn, holder, now)?;
        let revoked_grants: std::collections::HashSet<&str> = grants.grant_ids.iter().map(|g| g.as_str()).collect();
        let mut revoked_jtis = Vec::new();
        for token in token_store::issued_access_tokens(conn, filter, since)? {
            let was_live = token.expires_at > now
                && match (&token.grant_id, holder.grant_id) {
                    // A grant's token was live only if its grant was (a grant revoked earlier
                    // already killed it).
                    (Some(grant_id), _) => revoked_grants.contains(grant_id.as_str()),
                    // A machine token belongs to no grant: revoked for its client, never as
                    // part of one grant.
                    (None, Some(_)) => false,
                    (None, None) => holder.user_id.is_none(),
                };
            if was_live && token_store::revoke_access_token(conn, &revoked_row(&token), now)? {
                revoked_jtis.push((token.jti.clone(), token.expires_at));
            }
        }
        let revocation = AdminRevocation {
            access_tokens: revoked_jtis.len(),
            refresh_tokens: grants.refresh_tokens,
            grants: grants.grant_ids.len(),
            unchanged: None,
            revoked_jtis,
        };
        if revocation.access_tokens + revocation.refresh_tokens + revocation.grants > 0 {
            let mut event = AuditEvent::new(AuditAction::TokenRevoked, actor).subject(subject);
            if let Some(client_id) = filter.client_id {
                event = event.client(client_id);
            }
            if let Some(user_id) = filter.user_id {
                event = event.user(user_id);
            }
            let details = serde_json::json!({
                "by": if holder.grant_id.is_some() { "jti" } else { "holder" },
                "jti": holder.grant_id.map(|_| subject),
                "gid": holder.grant_id,
                "access_tokens": revocation.access_tokens,
                "refresh_tokens": revocation.refresh_tokens,
                "grants": revocation.grants,
            });
            audit::record(conn, &event.details(details), now)?;
        }
        Ok::<_, StoreError>(revocation)
    })?)
}

fn revoked_row(token: &IssuedAccessToken) -> RevokedAccessToken<'_> {
    RevokedAccessToken {
        jti: &token.jti,
        client_id: &token.client_id,
        scope: &token.scope,
        issued_at: token.issued_at,
        expires_at: token.expires_at,
    }
}

/// One access token, known by its `token.issued` event.
fn revoke_access_token_by_jti(
    conn: &mut AnyConnection,
    jti: &str,
    actor: &str,
    since: i64,
    now: i64,
) -> Result<AdminRevocation, AdminRevokeError> {
    let filter = IssuedFilter { jti: Some(jti), client_id: None, user_id: None };
    let Some(token) = token_store::issued_access_tokens(conn, filter, since)?.into_iter().next() else {
        return Err(AdminRevokeError::UnknownJti(jti.to_string(), now - since));
    };
    if token.expires_at <= now {
        return Ok(AdminRevocation { unchanged: Some(Unchanged::Expired), ..Default::default() });
    }
    if let Some(grant_id) = &token.grant_id
        && grant_store::find_grant(conn, grant_id)?.is_none_or(|grant| grant.revoked_at.is_some())
    {
        return Ok(AdminRevocation { unchanged: Some(Unchanged::AlreadyRevoked), ..Default::default() });
    }
    let revoked = conn.transaction(|conn| {
        if !token_store::revoke_access_token(conn, &revoked_row(&token), now)? {
            return Ok(false);
        }
        let mut event = AuditEvent::new(AuditAction::TokenRevoked, actor).subject(jti).client(&token.client_id);
        if let Some(user_id) = &token.user_id {
            event = event.user(user_id);
        }
        let details = serde_json::json!({
            "by": "jti", "token_type": ACCESS_TOKEN, "jti": jti, "gid": token.grant_id, "exp": token.expires_at,
        });
        audit::record(conn, &event.details(details), now)?;
        Ok::<_, StoreError>(true)
    });
    match revoked {
        Ok(true) => Ok(AdminRevocation {
            access_tokens: 1,
            revoked_jtis: vec![(token.jti.clone(), token.expires_at)],
            ..Default::default()
        }),
        Ok(false) => Ok(AdminRevocation { unchanged: Some(Unchanged::AlreadyRevoked), ..Default::default() }),
        // Revoked by someone else at the same moment (see `revoke` above).
        Err(StoreError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ))) => Ok(AdminRevocation { unchanged: Some(Unchanged::AlreadyRevoked), ..Default::default() }),
        Err(error) => Err(error.into()),
    }
}
