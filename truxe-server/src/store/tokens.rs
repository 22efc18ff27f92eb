//! The `oauth_tokens` table: refresh tokens (opaque; stored as the hex SHA-256 of their value,
//! rotated with one conditional `UPDATE`) and revoked access tokens (by `jti`).

use diesel::prelude::*;

use super::schema::{audit_events, oauth_tokens as tokens};
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

/// The `token_type` of the `oauth_tokens` row `jti`, if there is one.
pub fn token_type_of(conn: &mut AnyConnection, jti: &str) -> Result<Option<String>, StoreError> {
    Ok(tokens::table.filter(tokens::jti.eq(jti)).select(tokens::token_type).first(conn).optional()?)
}

/// The refresh-token row `jti`.
pub fn find_refresh_token_by_jti(conn: &mut AnyConnection, jti: &str) -> Result<Option<RefreshToken>, StoreError> {
    Ok(tokens::table
        .filter(tokens::jti.eq(jti))
        .filter(tokens::token_type.eq(REFRESH_TOKEN))
        .select(RefreshToken::as_select())
        .first(conn)
        .optional()?)
}

/// Removes the rows without a grant that expired before `before`: revoked access tokens, which
/// nothing needs once their JWT has expired (housekeeping). Refresh tokens always belong to a
/// grant and go with it (`grants::delete_grants_created_before`).
pub fn delete_expired_without_grant(conn: &mut AnyConnection, before: i64) -> Result<usize, StoreError> {
    let mut deleted = 0;
    loop {
        let batch: Vec<Jti> = tokens::table
            .filter(tokens::grant_id.is_null())
            .filter(tokens::expires_at.lt(before))
            .select(tokens::jti)
            .limit(super::housekeeping::BATCH)
            .load(conn)?;
        if batch.is_empty() {
            return Ok(deleted);
        }
        deleted += diesel::delete(tokens::table.filter(tokens::jti.eq_any(&batch))).execute(conn)?;
        if (batch.len() as i64) < super::housekeeping::BATCH {
            return Ok(deleted);
        }
    }
}

// ---- access tokens ---------------------------------------------------------------------------

/// An access token as its `token.issued` audit event recorded it. Access tokens are JWTs that
/// are not stored when issued; the audit trail is where their ids are known, so that an
/// administrator can revoke the tokens of a client or a user by `jti`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedAccessToken {
    pub jti: Jti,
    pub client_id: ClientId,
    pub user_id: Option<UserId>,
    /// The grant (`gid`) of a user's token; `None` for a machine token.
    pub grant_id: Option<GrantId>,
    pub scope: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Which issued access tokens [`issued_access_tokens`] finds: each given field narrows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IssuedFilter<'a> {
    pub jti: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
}

/// The access tokens issued at or after `since` that `filter` names, from their `token.issued`
/// events (the `jti`, `gid`, `scope` and `exp` of the event's details), oldest first. Events
/// whose details do not parse are skipped: they name no token.
pub fn issued_access_tokens(
    conn: &mut AnyConnection,
    filter: IssuedFilter<'_>,
    since: i64,
) -> Result<Vec<IssuedAccessToken>, StoreError> {
    let mut query = audit_events::table
        .filter(audit_events::action.eq(super::audit::AuditAction::TokenIssued.as_str()))
        .filter(audit_events::occurred_at.ge(since))
        .select((audit_events::occurred_at, audit_events::client_id, audit_events::user_id, audit_events::details))
        .order((audit_events::occurred_at, audit_events::event_id))
        .into_boxed();
    if let Some(client_id) = filter.client_id {
        query = query.filter(audit_events::client_id.eq(client_id.to_string()));
    }
    if let Some(user_id) = filter.user_id {
        query = query.filter(audit_events::user_id.eq(user_id.to_string()));
    }
    if let Some(jti) = filter.jti {
        // A prefilter on the serialized details; the parsed `jti` is compared exactly below.
        query = query.filter(audit_events::details.like(format!("%\"jti\":\"{jti}\"%")));
    }
    let rows: Vec<(i64, Option<String>, Option<String>, String)> = query.load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(occurred_at, client_id, user_id, details)| {
            let details: serde_json::Value = serde_json::from_str(&details).ok()?;
            let text = |name: &str| details.get(name).and_then(serde_json::Value::as_str).map(str::to_string);
            let jti = text("jti")?;
            if filter.jti.is_some_and(|wanted| wanted != jti) {
                return None;
            }
            Some(IssuedAccessToken {
                jti: jti.into(),
                client_id: client_id?.into(),
                user_id: user_id.map(UserId::from),
                grant_id: text("gid").map(GrantId::from),
                scope: text("scope").unwrap_or_default(),
                issued_at: occurred_at,
                expires_at: details.get("exp").and_then(serde_json::Value::as_i64)?,
            })
        })
        .collect())
}

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
