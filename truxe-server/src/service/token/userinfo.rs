//! OIDC Core §5.3: the claims about the user a live access token is for.

use super::Context;
use super::liveness::{self, Dead};
use crate::model::user::User;
use crate::oauth::scope::ScopeSet;
use crate::store::{AnyConnection, StoreError};

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

/// The userinfo claims (OIDC Core §5.3.2) of `user` for a token with `scope`.
pub fn claims(user: &User, scope: &ScopeSet) -> serde_json::Value {
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

pub fn userinfo(conn: &mut AnyConnection, ctx: &Context<'_>, token: &str) -> Result<serde_json::Value, UserInfoError> {
    let live = match liveness::access_token(conn, ctx, token)? {
        Ok(live) => live,
        Err(dead) => {
            tracing::debug!(?dead, "userinfo: not a live access token");
            return Err(UserInfoError::InvalidToken(match dead {
                Dead::Rejected(_) | Dead::UnknownRefreshToken => "the access token is invalid or has expired",
                Dead::Revoked | Dead::GrantRevoked => "the access token was revoked",
                Dead::UserInactive => "the user of this token is disabled or deleted",
                Dead::ClientInactive => "the client of this token is suspended or deleted",
            }));
        }
    };
    // A client_credentials token is about no user.
    let Some(user) = live.user else {
        return Err(UserInfoError::InsufficientScope);
    };
    let scope = ScopeSet::parse(&live.claims.scope).unwrap_or_default();
    if !scope.contains("openid") {
        return Err(UserInfoError::InsufficientScope);
    }
    Ok(claims(&user, &scope))
}
