//! `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636, OAuth 2.1 §4.1.3): a code is
//! redeemed once, by the client it was issued to, with the redirect URI and PKCE verifier it
//! was bound to; a second redemption revokes what the first one issued.

use diesel::Connection;

use super::issue::{Signing, sign, user_event};
use super::liveness::active_user;
use super::refresh::issues_refresh_token;
use super::{Context, PublicClients, TokenError, TokenResponse, audience, authenticated_client, is_plausible_opaque};
use crate::model::GrantId;
use crate::model::client::{Client, GrantType};
use crate::oauth::client_auth::ClientCredentials;
use crate::oauth::form::Form;
use crate::oauth::scope::ScopeSet;
use crate::oauth::{OAuthError, pkce};
use crate::secret::Secret;
use crate::service::authorize::token_hash;
use crate::store::audit::{self, AuditAction};
use crate::store::grants::{self as grant_store, AuthorizationCode, Grant};
use crate::store::tokens as token_store;
use crate::store::users as user_store;
use crate::store::{self, AnyConnection, Rollback, StoreError};

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

/// The code's bindings, checked against the token request (the code is known and unconsumed).
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
        // RFC 6749 §4.1.3: required when the authorization request included it.
        None if code.redirect_uri_given => {
            return Err(OAuthError::invalid_request(
                "redirect_uri is required: the authorization request included one",
            ));
        }
        None => {}
    }
    match (&code.code_challenge, &request.code_verifier) {
        (Some(challenge), Some(verifier)) if pkce::verify(verifier.secret(), challenge) => Ok(()),
        (Some(_), Some(_)) => Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge")),
        (Some(_), None) => Err(OAuthError::invalid_grant("code_verifier is required (PKCE)")),
        (None, Some(_)) => Err(OAuthError::invalid_grant("code_verifier sent, but the authorization used no PKCE")),
        (None, None) => Ok(()),
    }
}

fn new_grant_id() -> GrantId {
    format!("grt_{}", uuid::Uuid::new_v4().simple()).into()
}

pub fn exchange(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    request: &CodeRequest,
) -> Result<TokenResponse, TokenError> {
    let client = authenticated_client(ctx, Some(conn), credentials, PublicClients::Allowed)?;
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
        // Only the code's own client revokes what the code issued: another client presenting a
        // leaked, used code must not be able to revoke someone else's grant.
        if code.client_id != client.client_id {
            return Err(OAuthError::invalid_grant("the authorization code was issued to another client").into());
        }
        return Err(code_reused(conn, ctx, &client, &code_hash)?.into());
    }
    check_code(&code, &client, request, ctx.now)?;
    let Some(user) = active_user(conn, &code.user_id)? else {
        return Err(OAuthError::invalid_grant("the user of this authorization is disabled or deleted").into());
    };
    let scope = ScopeSet::parse(&code.scope).map_err(|e| StoreError::Corrupt(format!("code scope: {e}")))?;
    let audience = audience(ctx, &client, request.resource.as_deref())?;
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
    let issued = sign(
        ctx,
        Signing {
            client: &client,
            user: &user,
            grant: &grant,
            scope: &scope,
            audience: &audience,
            nonce: code.nonce.clone(),
            refresh_scope,
            family_expires_at: grant.created_at.saturating_add(ctx.rules.refresh_family_ttl),
        },
    )?;

    /// Why the redemption rolled back.
    enum Abort {
        /// A concurrent request consumed the code first.
        Lost,
        /// The user was disabled or deleted meanwhile.
        UserInactive,
    }
    let recorded = store::transaction(conn, |conn| {
        // The grant first: the code row references it, and on SQLite a transaction that starts
        // with a write takes the write lock at once instead of failing to upgrade a read.
        grant_store::insert_grant(conn, &grant)?;
        if !grant_store::consume_code(conn, &code_hash, &grant.grant_id, ctx.now)? {
            return Err(Rollback::Abort(Abort::Lost));
        }
        // Ordered against a concurrent disable of the user (see `store::users::lock_active`).
        if !user_store::lock_active(conn, &user.user_id)? {
            return Err(Rollback::Abort(Abort::UserInactive));
        }
        if let Some((_, row)) = &issued.refresh_token {
            token_store::insert_refresh_token(conn, row)?;
        }
        Ok(())
    })?;
    match recorded {
        // The hot path: the batched writer, once the tokens exist.
        Ok(()) => ctx.audit.record(issued.event(ctx, GrantType::AuthorizationCode, &client, &user.user_id), ctx.now)?,
        Err(Abort::Lost) => return Err(code_reused(conn, ctx, &client, &code_hash)?.into()),
        Err(Abort::UserInactive) => {
            return Err(OAuthError::invalid_grant("the user of this authorization is disabled or deleted").into());
        }
    }
    tracing::info!(
        client_id = %client.client_id, user_id = %user.user_id, gid = %grant.grant_id, jti = %issued.claims.jti,
        scope = %scope, refresh_token = issued.refresh_token.is_some(), "authorization code exchanged"
    );
    Ok(issued.respond(&scope, ctx.now))
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
        let event = user_event(ctx, AuditAction::AuthorizationCodeReused, client, &user_id)
            .details(serde_json::json!({ "gid": grant_id, "grant_revoked": revoked }));
        audit::record(conn, &event, ctx.now)?;
        Ok::<_, StoreError>(())
    })?;
    tracing::warn!(client_id = %client.client_id, gid = ?grant_id, "an authorization code was redeemed twice; its grant is revoked");
    Ok(OAuthError::invalid_grant("the authorization code was already used; the tokens issued with it are revoked"))
}
