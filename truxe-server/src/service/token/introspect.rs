//! `POST /oauth-provider/introspect` (RFC 7662). Who may learn what:
//! - the caller authenticates as a confidential client (public clients are refused);
//! - it may introspect the tokens issued to itself (access and refresh tokens), and the access
//!   tokens whose `aud` is one of its `introspection_audiences` (a resource server);
//! - for any other token, and for every token that is not live, the answer is `active: false`.
//!
//! `token_type_hint` is only a hint (§2.1): the token's shape tells ours apart (a JWT has dots,
//! our refresh tokens never do), so every type is tried whatever the hint says.

use serde::Serialize;

use super::liveness::{self, Dead};
use super::{Context, PublicClients, TokenError, authenticated_client};
use crate::model::client::Client;
use crate::oauth::client_auth::ClientCredentials;
use crate::store::AnyConnection;
use crate::store::tokens::REFRESH_TOKEN;

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
    pub client_id: crate::model::ClientId,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// `Bearer` for access tokens, `refresh_token` for refresh tokens.
    pub token_type: &'static str,
    pub jti: crate::model::Jti,
}

impl Introspection {
    pub fn inactive() -> Self {
        Self { active: false, token: None }
    }

    fn active(token: ActiveToken) -> Self {
        Self { active: true, token: Some(token) }
    }
}

/// Whether `caller` may learn about a token issued to `owner` for `audience`.
pub fn may_introspect(caller: &Client, owner: &str, audience: Option<&str>) -> bool {
    caller.client_id == owner || audience.is_some_and(|aud| caller.introspects_for(aud))
}

pub fn introspect(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    credentials: &ClientCredentials,
    token: &str,
) -> Result<Introspection, TokenError> {
    let caller = authenticated_client(ctx, Some(conn), credentials, PublicClients::Refused)?;
    let looks_like_jwt = token.contains('.');
    let answer = if looks_like_jwt {
        match liveness::access_token(conn, ctx, token)? {
            Ok(live) if may_introspect(&caller, &live.claims.client_id, Some(&live.claims.aud)) => {
                let claims = live.claims;
                Ok(Introspection::active(ActiveToken {
                    scope: claims.scope,
                    client_id: claims.client_id,
                    sub: claims.sub,
                    exp: claims.exp,
                    iat: claims.iat,
                    iss: claims.iss,
                    aud: Some(claims.aud),
                    token_type: "Bearer",
                    jti: claims.jti,
                }))
            }
            Ok(_) => Err("the token is not the caller's, nor for an audience it serves"),
            Err(dead) => Err(reason(dead)),
        }
    } else {
        match liveness::refresh_token(conn, ctx, token)? {
            Ok(live) if may_introspect(&caller, &live.token.client_id, None) => {
                Ok(Introspection::active(ActiveToken {
                    scope: live.token.scope,
                    client_id: live.token.client_id,
                    sub: live.user.user_id.into(),
                    exp: live.expires_at,
                    iat: live.token.created_at,
                    iss: ctx.config.issuer.clone(),
                    aud: None,
                    token_type: REFRESH_TOKEN,
                    jti: live.token.jti,
                }))
            }
            Ok(_) => Err("the refresh token is not the caller's"),
            Err(dead) => Err(reason(dead)),
        }
    };
    Ok(answer.unwrap_or_else(|why| {
        tracing::debug!(client_id = %caller.client_id, why, "introspection: inactive");
        Introspection::inactive()
    }))
}

fn reason(dead: Dead) -> &'static str {
    match dead {
        Dead::Rejected(_) => "not a valid, unexpired access token of ours",
        Dead::UnknownRefreshToken => "not a live refresh token of ours",
        Dead::Revoked => "revoked",
        Dead::GrantRevoked => "its grant is revoked",
        Dead::UserInactive => "its user is disabled or deleted",
        Dead::ClientInactive => "its client is suspended or deleted",
    }
}
