//! `grant_type=client_credentials` (RFC 6749 §4.4): a machine token, one signature and, while
//! the client is cached, no database work on the request path (the audit event is queued, see
//! [`crate::audit`]).

use super::{
    Audiences, Context, PublicClients, TokenError, TokenResponse, USER_ONLY_SCOPES, access_token_claims,
    authenticated_client,
};
use crate::model::client::{Client, GrantType};
use crate::oauth::OAuthError;
use crate::oauth::client_auth::ClientCredentials;
use crate::oauth::scope::ScopeSet;
use crate::store::audit::{AuditAction, AuditEvent};
use crate::store::tokens::ACCESS_TOKEN;

/// The grant for an authenticated client: the scope granted (within what the client is allowed
/// and the server still supports, `scopes_supported`) and the audience of the token.
pub fn decide(
    client: &Client,
    scope: Option<&str>,
    resource: Option<&str>,
    audiences: &Audiences,
    scopes_supported: &ScopeSet,
) -> Result<(ScopeSet, String), OAuthError> {
    let allowed = client.allowed_scopes.intersection(scopes_supported);
    if !client.allows_grant(GrantType::ClientCredentials) {
        return Err(OAuthError::unauthorized_client("the client is not registered for the client_credentials grant"));
    }
    let granted = match scope {
        None => allowed.without(&USER_ONLY_SCOPES),
        Some(requested) => {
            let requested = ScopeSet::parse(requested).map_err(OAuthError::invalid_scope)?;
            if let Some(user_scope) = USER_ONLY_SCOPES.iter().find(|s| requested.contains(s)) {
                return Err(OAuthError::invalid_scope(format!(
                    "{user_scope} is about a user and cannot be granted to client_credentials"
                )));
            }
            let outside = requested.difference(&allowed);
            if !outside.is_empty() {
                return Err(OAuthError::invalid_scope(format!("the client may not request {}", outside.join(" "))));
            }
            requested
        }
    };
    let audience = audiences.for_client(client).select(resource)?.to_string();
    Ok((granted, audience))
}

/// The HTTP layer's entry: authenticates the client without taking a connection unless the
/// client is not cached.
pub fn issue(
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Result<TokenResponse, TokenError> {
    let client = authenticated_client(ctx, None, credentials, PublicClients::Refused)?;
    respond(ctx, &client, scope, resource)
}

pub(super) fn respond(
    ctx: &Context<'_>,
    client: &Client,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Result<TokenResponse, TokenError> {
    let (scope, audience) = decide(client, scope, resource, &ctx.rules.audiences, &ctx.rules.scopes)?;
    let claims = access_token_claims(ctx, client, &client.client_id, &scope, &audience);
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
