//! The `oauth_tokens` table: refresh tokens (opaque; stored as the hex SHA-256 of their value,
//! rotated with one conditional `UPDATE`) and revoked access tokens (by `jti`).

use diesel::prelude::*;

use super::schema::oauth_tokens as tokens;
use super::{AnyConnection, StoreError};
use crate::model::{ClientId, GrantId, Jti, UserId};

/// `oauth_tokens.token_type` of a refresh token.
pub const REFRESH_TOKEN: &str = "refresh_token";
/// `oauth_tokens.token_type` of a revoked access token.
pub const ACCESS_TOKEN: &str = "access_token";

/// An `oauth_tokens` row of type `refresh_token`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = tokens)]
pub struct RefreshToken {
    pub jti: Jti,
    pub token_type: String,
    pub token_hash: Option<String>,
    pub grant_id: Option<GrantId>,
    pub client_id: ClientId,
    pub user_id: Option<UserId>,
    pub scope: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub rotated_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The `jti` of the refresh token that replaced this one when it was rotated (or retried).
    pub replaced_by: Option<Jti>,
}

// ---- refresh tokens --------------------------------------------------------------------------

pub fn insert_refresh_token(conn: &mut AnyConnection, token: &RefreshToken) -> Result<(), StoreError> {
    diesel::insert_into(tokens::table).values(token).execute(conn)?;
    Ok(())
}

pub fn find_refresh_token(conn: &mut AnyConnection, token_hash: &str) -> Result<Option<RefreshToken>, StoreError> {
    Ok(tokens::table
        .filter(tokens::token_hash.eq(token_hash))
        .filter(tokens::token_type.eq(REFRESH_TOKEN))
        .select(RefreshToken::as_select())
        .first(conn)
        .optional()?)
}

/// Marks a live refresh token rotated and replaced by `successor`; `false` when it was rotated
/// or revoked already (exactly one of concurrent callers gets `true`).
pub fn rotate_refresh_token(
    conn: &mut AnyConnection,
    jti: &str,
    successor: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let updated = diesel::update(
        tokens::table
            .filter(tokens::jti.eq(jti))
            .filter(tokens::rotated_at.is_null())
            .filter(tokens::revoked_at.is_null()),
    )
    .set((tokens::rotated_at.eq(now), tokens::replaced_by.eq(successor)))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Revokes the refresh token `successor` if it is still live (neither rotated nor revoked);
/// `false` when it was not (exactly one of concurrent callers gets `true`).
pub fn revoke_live_refresh_token(conn: &mut AnyConnection, successor: &str, now: i64) -> Result<bool, StoreError> {
    let updated = diesel::update(
        tokens::table
            .filter(tokens::jti.eq(successor))
            .filter(tokens::token_type.eq(REFRESH_TOKEN))
            .filter(tokens::rotated_at.is_null())
            .filter(tokens::revoked_at.is_null()),
    )
    .set(tokens::revoked_at.eq(now))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Records `successor` as the refresh token that now replaces the rotated token `jti`.
pub fn set_refresh_successor(conn: &mut AnyConnection, jti: &str, successor: &str) -> Result<(), StoreError> {
    diesel::update(tokens::table.filter(tokens::jti.eq(jti))).set(tokens::replaced_by.eq(successor)).execute(conn)?;
    Ok(())
}

// ---- access tokens ---------------------------------------------------------------------------

/// Whether an access token's `jti` was revoked (RFC 7009 stores revoked access tokens).
pub fn access_token_revoked(conn: &mut AnyConnection, jti: &str) -> Result<bool, StoreError> {
    let revoked_at: Option<Option<i64>> = tokens::table
        .filter(tokens::jti.eq(jti))
        .filter(tokens::token_type.eq(ACCESS_TOKEN))
        .select(tokens::revoked_at)
        .first(conn)
        .optional()?;
    Ok(revoked_at.flatten().is_some())
}

/// An access token to record as revoked.
#[derive(Debug, Clone, Copy)]
pub struct RevokedAccessToken<'a> {
    pub jti: &'a str,
    pub client_id: &'a str,
    pub scope: &'a str,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Records the access token as revoked; `false` when it already was. Call inside a
/// transaction: the update comes first (on SQLite a transaction that starts with a write takes
/// the lock at once), then an insert inside a savepoint, so that a concurrent insert of the same
/// `jti` answers `false` instead of aborting the outer transaction on PostgreSQL.
pub fn revoke_access_token(
    conn: &mut AnyConnection,
    token: &RevokedAccessToken<'_>,
    now: i64,
) -> Result<bool, StoreError> {
    let updated = diesel::update(
        tokens::table
            .filter(tokens::jti.eq(token.jti))
            .filter(tokens::token_type.eq(ACCESS_TOKEN))
            .filter(tokens::revoked_at.is_null()),
    )
    .set(tokens::revoked_at.eq(now))
    .execute(conn)?;
    if updated == 1 {
        return Ok(true);
    }
    let inserted = conn.transaction(|conn| {
        diesel::insert_into(tokens::table)
            .values((
                tokens::jti.eq(token.jti),
                tokens::token_type.eq(ACCESS_TOKEN),
                tokens::client_id.eq(token.client_id),
                tokens::scope.eq(token.scope),
                tokens::created_at.eq(token.issued_at),
                tokens::expires_at.eq(token.expires_at),
                tokens::revoked_at.eq(Some(now)),
            ))
            .execute(conn)
    });
    match inserted {
        Ok(_) => Ok(true),
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
        Err(error) => Err(error.into()),
    }
}
