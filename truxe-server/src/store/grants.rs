//! Authorization codes and grants (`oauth_authorization_codes`, `oauth_grants`). Codes are
//! stored only as the hex SHA-256 of their value; single use is one conditional `UPDATE`. The
//! tokens of a grant live in `store::tokens`.

use diesel::prelude::*;

use super::schema::{oauth_authorization_codes as codes, oauth_grants as grants, oauth_tokens as tokens};
use super::{AnyConnection, StoreError};
use crate::model::{ClientId, GrantId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = codes)]
pub struct AuthorizationCode {
    pub code_hash: String,
    pub client_id: ClientId,
    pub user_id: UserId,
    pub redirect_uri: String,
    pub scope: String,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub nonce: Option<String>,
    pub auth_time: i64,
    /// RFC 8176 values, space-separated.
    pub amr: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
    /// The grant the code's redemption created.
    pub grant_id: Option<GrantId>,
    /// Whether the authorization request carried `redirect_uri` (then the token request must).
    pub redirect_uri_given: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = grants)]
pub struct Grant {
    pub grant_id: GrantId,
    pub client_id: ClientId,
    pub user_id: Option<UserId>,
    pub scope: String,
    pub auth_time: Option<i64>,
    pub amr: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

// ---- codes -----------------------------------------------------------------------------------

pub fn insert_code(conn: &mut AnyConnection, code: &AuthorizationCode) -> Result<(), StoreError> {
    diesel::insert_into(codes::table).values(code).execute(conn)?;
    Ok(())
}

pub fn find_code(conn: &mut AnyConnection, code_hash: &str) -> Result<Option<AuthorizationCode>, StoreError> {
    Ok(codes::table
        .filter(codes::code_hash.eq(code_hash))
        .select(AuthorizationCode::as_select())
        .first(conn)
        .optional()?)
}

/// Marks the code used by `grant_id`; `false` when it was already used (by a concurrent request:
/// exactly one caller ever gets `true`).
pub fn consume_code(conn: &mut AnyConnection, code_hash: &str, grant_id: &str, now: i64) -> Result<bool, StoreError> {
    let updated =
        diesel::update(codes::table.filter(codes::code_hash.eq(code_hash)).filter(codes::consumed_at.is_null()))
            .set((codes::consumed_at.eq(now), codes::grant_id.eq(grant_id)))
            .execute(conn)?;
    Ok(updated == 1)
}

/// Marks every unredeemed code of `user_id` for `client_id` as used, so that none can be
/// exchanged after the user withdrew consent. Returns how many.
pub fn void_open_codes(
    conn: &mut AnyConnection,
    user_id: &str,
    client_id: &str,
    now: i64,
) -> Result<usize, StoreError> {
    Ok(diesel::update(
        codes::table
            .filter(codes::user_id.eq(user_id))
            .filter(codes::client_id.eq(client_id))
            .filter(codes::consumed_at.is_null()),
    )
    .set(codes::consumed_at.eq(now))
    .execute(conn)?)
}

/// Marks every unredeemed code of `user_id`, for any client, as used (the user was disabled or
/// is being deleted). Returns how many.
pub fn void_open_codes_of_user(conn: &mut AnyConnection, user_id: &str, now: i64) -> Result<usize, StoreError> {
    Ok(diesel::update(codes::table.filter(codes::user_id.eq(user_id)).filter(codes::consumed_at.is_null()))
        .set(codes::consumed_at.eq(now))
        .execute(conn)?)
}

/// The most recent codes, newest first, of one client and/or user when given (`truxectl codes
/// list`). The table holds a day's codes at most (housekeeping), so no index is needed.
pub fn recent_codes(
    conn: &mut AnyConnection,
    client_id: Option<&str>,
    user_id: Option<&str>,
    limit: i64,
) -> Result<Vec<AuthorizationCode>, StoreError> {
    let mut query = codes::table
        .select(AuthorizationCode::as_select())
        .order((codes::created_at.desc(), codes::code_hash))
        .limit(limit)
        .into_boxed();
    if let Some(client_id) = client_id {
        query = query.filter(codes::client_id.eq(client_id.to_string()));
    }
    if let Some(user_id) = user_id {
        query = query.filter(codes::user_id.eq(user_id.to_string()));
    }
    Ok(query.load(conn)?)
}

/// Removes codes that expired before `before` (housekeeping).
pub fn delete_expired_codes(conn: &mut AnyConnection, before: i64) -> Result<usize, StoreError> {
    Ok(diesel::delete(codes::table.filter(codes::expires_at.lt(before))).execute(conn)?)
}

// ---- grants ----------------------------------------------------------------------------------

pub fn insert_grant(conn: &mut AnyConnection, grant: &Grant) -> Result<(), StoreError> {
    diesel::insert_into(grants::table).values(grant).execute(conn)?;
    Ok(())
}

pub fn find_grant(conn: &mut AnyConnection, grant_id: &str) -> Result<Option<Grant>, StoreError> {
    Ok(grants::table.filter(grants::grant_id.eq(grant_id)).select(Grant::as_select()).first(conn).optional()?)
}

/// Revokes a grant and every token of it; `false` when it was already revoked or is unknown.
pub fn revoke_grant(conn: &mut AnyConnection, grant_id: &str, now: i64) -> Result<bool, StoreError> {
    let updated =
        diesel::update(grants::table.filter(grants::grant_id.eq(grant_id)).filter(grants::revoked_at.is_null()))
            .set(grants::revoked_at.eq(now))
            .execute(conn)?;
    diesel::update(tokens::table.filter(tokens::grant_id.eq(grant_id)).filter(tokens::revoked_at.is_null()))
        .set(tokens::revoked_at.eq(now))
        .execute(conn)?;
    Ok(updated == 1)
}

/// Revokes every live grant of a user, for every client, with every token of those grants
/// and any other token issued to the user; returns how many grants were live. Once revoked a
/// grant stays revoked: re-enabling the user brings none of it back.
pub fn revoke_all_grants_of_user(conn: &mut AnyConnection, user_id: &str, now: i64) -> Result<usize, StoreError> {
    let revoked =
        diesel::update(grants::table.filter(grants::user_id.eq(user_id)).filter(grants::revoked_at.is_null()))
            .set(grants::revoked_at.eq(now))
            .execute(conn)?;
    let of_user = grants::table.filter(grants::user_id.eq(user_id)).select(grants::grant_id.nullable());
    diesel::update(
        tokens::table
            .filter(tokens::revoked_at.is_null())
            .filter(tokens::user_id.eq(user_id).or(tokens::grant_id.eq_any(of_user))),
    )
    .set(tokens::revoked_at.eq(now))
    .execute(conn)?;
    Ok(revoked)
}

/// Whose grants an administrator revokes: a client's, a user's, a user's at one client, or one
/// grant (each given field narrows; none given is every grant, which callers never ask for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantHolder<'a> {
    pub client_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub grant_id: Option<&'a str>,
}

/// What [`revoke_grants_of`] revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedGrants {
    /// The grants that were live.
    pub grant_ids: Vec<GrantId>,
    /// Their refresh tokens that were live (neither rotated, revoked nor expired).
    pub refresh_tokens: usize,
}

/// Revokes every live grant of `holder` with every token of those grants, as [`revoke_grant`]
/// does for one. Call it inside a transaction. On SQLite it first takes the write lock (an
/// `UPDATE` begins a write transaction even when it changes no row), so that its reads are not
/// followed by a write that a concurrent writer would make fail.
pub fn revoke_grants_of(
    conn: &mut AnyConnection,
    holder: GrantHolder<'_>,
    now: i64,
) -> Result<RevokedGrants, StoreError> {
    if matches!(conn, AnyConnection::Sqlite(_)) {
        diesel::update(grants::table.filter(grants::grant_id.eq("")))
            .set(grants::revoked_at.eq(None::<i64>))
            .execute(conn)?;
    }
    if holder == GrantHolder::default() {
        return Ok(RevokedGrants::default());
    }
    let mut query = grants::table.filter(grants::revoked_at.is_null()).select(grants::grant_id).into_boxed();
    if let Some(grant_id) = holder.grant_id {
        query = query.filter(grants::grant_id.eq(grant_id.to_string()));
    }
    if let Some(client_id) = holder.client_id {
        query = query.filter(grants::client_id.eq(client_id.to_string()));
    }
    if let Some(user_id) = holder.user_id {
        query = query.filter(grants::user_id.eq(user_id.to_string()));
    }
    let grant_ids: Vec<GrantId> = query.load(conn)?;
    let mut refresh_tokens = 0;
    // In chunks: SQLite limits the bound parameters of one statement.
    for chunk in grant_ids.chunks(500) {
        let of_chunk = || tokens::table.filter(tokens::revoked_at.is_null()).filter(tokens::grant_id.eq_any(chunk));
        refresh_tokens += diesel::update(
            of_chunk()
                .filter(tokens::token_type.eq(super::tokens::REFRESH_TOKEN))
                .filter(tokens::rotated_at.is_null())
                .filter(tokens::expires_at.gt(now)),
        )
        .set(tokens::revoked_at.eq(now))
        .execute(conn)?;
        // The rotated and expired ones too, so that a grant's tokens all carry its revocation.
        diesel::update(of_chunk()).set(tokens::revoked_at.eq(now)).execute(conn)?;
        diesel::update(grants::table.filter(grants::revoked_at.is_null()).filter(grants::grant_id.eq_any(chunk)))
            .set(grants::revoked_at.eq(now))
            .execute(conn)?;
    }
    Ok(RevokedGrants { grant_ids, refresh_tokens })
}

/// Removes grants created before `before` with their tokens (housekeeping: their family ended
/// and every access token they issued has expired; codes that name them keep their row).
/// In batches, so that no one statement holds SQLite's write lock for long.
pub fn delete_grants_created_before(conn: &mut AnyConnection, before: i64) -> Result<usize, StoreError> {
    let mut deleted = 0;
    loop {
        let batch: Vec<GrantId> = grants::table
            .filter(grants::created_at.lt(before))
            .select(grants::grant_id)
            .limit(super::housekeeping::BATCH)
            .load(conn)?;
        if batch.is_empty() {
            return Ok(deleted);
        }
        // Their tokens first, rather than trusting SQLite's foreign keys to be switched on.
        diesel::delete(tokens::table.filter(tokens::grant_id.eq_any(batch.iter().map(|id| id.as_str()))))
            .execute(conn)?;
        deleted += diesel::delete(grants::table.filter(grants::grant_id.eq_any(&batch))).execute(conn)?;
        if (batch.len() as i64) < super::housekeeping::BATCH {
            return Ok(deleted);
        }
    }
}

/// The live grants of a user for a client (to revoke them when consent is withdrawn).
pub fn live_grant_ids(conn: &mut AnyConnection, user_id: &str, client_id: &str) -> Result<Vec<GrantId>, StoreError> {
    Ok(grants::table
        .filter(grants::user_id.eq(user_id))
        .filter(grants::client_id.eq(client_id))
        .filter(grants::revoked_at.is_null())
        .select(grants::grant_id)
        .load(conn)?)
}
