//! Signing the tokens of a user's grant (authorization code and refresh): the access token, the
//! ID token when `openid` is in scope, and the refresh-token row, before anything is stored.

use super::{Context, TokenError, TokenResponse, access_token_claims, new_jti, refresh_token_lifetime};
use crate::jwt::AccessTokenClaims;
use crate::keys::Algorithm;
use crate::model::client::{Client, GrantType};
use crate::model::user::User;
use crate::oauth::id_token::{IdTokenClaims, at_hash};
use crate::oauth::scope::ScopeSet;
use crate::secret::Secret;
use crate::service::authorize::{new_code, token_hash};
use crate::store::audit::{AuditAction, AuditEvent};
use crate::store::grants::Grant;
use crate::store::tokens::{REFRESH_TOKEN, RefreshToken};

/// The signed tokens of one issue, before they are recorded.
pub(super) struct Issued {
    pub access_token: String,
    pub claims: AccessTokenClaims,
    pub id_token: Option<String>,
    pub refresh_token: Option<(Secret<String>, RefreshToken)>,
}

/// What to sign for a grant.
pub(super) struct Signing<'a> {
    pub client: &'a Client,
    pub user: &'a User,
    pub grant: &'a Grant,
    /// The scope of the access (and ID) token.
    pub scope: &'a ScopeSet,
    pub audience: &'a str,
    pub nonce: Option<String>,
    /// The scope of a refresh token to issue with them, if one is.
    pub refresh_scope: Option<&'a ScopeSet>,
    /// When the family's absolute lifetime ends: no refresh token outlives it.
    pub family_expires_at: i64,
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
    exp: i64,
    now: i64,
) -> IdTokenClaims {
    let email = scope.contains("email");
    IdTokenClaims {
        iss: issuer.to_string(),
        sub: user.user_id.to_string(),
        aud: client_id.to_string(),
        exp,
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

pub(super) fn sign(ctx: &Context<'_>, what: Signing<'_>) -> Result<Issued, TokenError> {
    let Signing { client, user, grant, scope, audience, nonce, refresh_scope, family_expires_at } = what;
    let auth_time = grant.auth_time.unwrap_or(grant.created_at);
    let mut claims = access_token_claims(ctx, client, &user.user_id, scope, audience);
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
            claims.exp,
            ctx.now,
        );
        Some(ctx.keys.encode_id_token(&id_claims)?)
    } else {
        None
    };
    let refresh_token = refresh_scope.map(|refresh_scope| {
        let value = new_code();
        let expires_at = ctx.now.saturating_add(refresh_token_lifetime(ctx.rules, client)).min(family_expires_at);
        let row = RefreshToken {
            jti: new_jti(),
            token_type: REFRESH_TOKEN.to_string(),
            token_hash: Some(token_hash(value.secret())),
            grant_id: Some(grant.grant_id.clone()),
            client_id: client.client_id.clone(),
            user_id: Some(user.user_id.clone()),
            scope: refresh_scope.to_string(),
            created_at: ctx.now,
            expires_at,
            rotated_at: None,
            revoked_at: None,
            replaced_by: None,
        };
        (value, row)
    });
    Ok(Issued { access_token, claims, id_token, refresh_token })
}

impl Issued {
    pub(super) fn respond(self, scope: &ScopeSet, now: i64) -> TokenResponse {
        TokenResponse {
            access_token: self.access_token,
            token_type: "Bearer",
            expires_in: self.claims.exp - now,
            scope: (!scope.is_empty()).then(|| scope.to_string()),
            id_token: self.id_token,
            refresh_token: self.refresh_token.map(|(value, _)| value.into_secret()),
        }
    }

    /// The `token.issued` audit event (never a token, only ids).
    pub(super) fn event(&self, ctx: &Context<'_>, grant_type: GrantType, client: &Client, user_id: &str) -> AuditEvent {
        user_event(ctx, AuditAction::TokenIssued, client, user_id).details(serde_json::json!({
            "grant_type": grant_type.as_str(),
            "jti": self.claims.jti,
            "gid": self.claims.gid,
            "scope": self.claims.scope,
            "aud": self.claims.aud,
            "exp": self.claims.exp,
            "id_token": self.id_token.is_some(),
            "refresh_token": self.refresh_token.as_ref().map(|(_, row)| row.jti.clone()),
        }))
    }
}

/// An event a client caused about one of its users.
pub(super) fn user_event(ctx: &Context<'_>, action: AuditAction, client: &Client, user_id: &str) -> AuditEvent {
    AuditEvent::by_client(action, &client.client_id).subject(user_id).user(user_id).from_request(ctx.request)
}
