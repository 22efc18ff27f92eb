//! `POST /oauth-provider/revoke` (RFC 7009): the one owner of revocation at the token endpoint.
//! Only the client a token was issued to may revoke it. A refresh token revokes its whole grant
//! (the refresh and access tokens of one sign-in, §2.1); an access token is revoked by `jti`.
//! `token_type_hint` is only a hint: the token's shape tells the two apart.

use diesel::Connection;

use super::issue::user_event;
use super::{Context, PublicClients, TokenError, authenticated_client, is_plausible_opaque};
use crate::oauth::OAuthError;
use crate::oauth::client_auth::ClientCredentials;
use crate::service::authorize::token_hash;
use crate::store::audit::{self, AuditAction, AuditEvent};
use crate::store::grants as grant_store;
use crate::store::tokens::{self as token_store, ACCESS_TOKEN, REFRESH_TOKEN, RevokedAccessToken};
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
