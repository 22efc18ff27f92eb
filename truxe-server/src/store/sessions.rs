//! The `sessions` table: browser sessions, keyed by a hash of the id the cookie carries.

use diesel::prelude::*;

use super::schema::sessions;
use super::{AnyConnection, StoreError};
use crate::model::UserId;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
pub struct Session {
    /// Hex SHA-256 of the random id in the cookie; the id itself is never stored.
    pub session_hash: String,
    pub user_id: UserId,
    /// When the user authenticated (OIDC `auth_time`), epoch seconds.
    pub auth_time: i64,
    /// Authentication methods (RFC 8176), space-separated: `email`, `mfa`, `otp`.
    pub amr: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The magic link was used but the second factor is still owed: signs nobody in.
    pub mfa_pending: bool,
}

impl Session {
    /// Not revoked and not expired (a pending second factor is the caller's to check).
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    pub fn amr_list(&self) -> Vec<String> {
        self.amr.split_whitespace().map(str::to_string).collect()
    }
}

pub fn insert(conn: &mut AnyConnection, session: &Session) -> Result<(), StoreError> {
    diesel::insert_into(sessions::table).values(session).execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut AnyConnection, session_hash: &str) -> Result<Option<Session>, StoreError> {
    Ok(sessions::table
        .filter(sessions::session_hash.eq(session_hash))
        .select(Session::as_select())
        .first(conn)
        .optional()?)
}

/// Records activity; callers throttle it (one write per minute is plenty).
pub fn touch(conn: &mut AnyConnection, session_hash: &str, now: i64) -> Result<(), StoreError> {
    diesel::update(sessions::table.filter(sessions::session_hash.eq(session_hash)))
        .set(sessions::last_seen_at.eq(now))
        .execute(conn)?;
    Ok(())
}

/// Revokes one live session; `false` when it was unknown or already revoked.
pub fn revoke(conn: &mut AnyConnection, session_hash: &str, now: i64) -> Result<bool, StoreError> {
    let changed = diesel::update(
        sessions::table.filter(sessions::session_hash.eq(session_hash)).filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(now))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Revokes a pending-second-factor session once, so that of two concurrent completions only
/// one gets to replace it; `false` when it was not live and pending.
pub fn take_pending(conn: &mut AnyConnection, session_hash: &str, now: i64) -> Result<bool, StoreError> {
    let changed = diesel::update(
        sessions::table
            .filter(sessions::session_hash.eq(session_hash))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::mfa_pending.eq(true))
            .filter(sessions::expires_at.gt(now)),
    )
    .set(sessions::revoked_at.eq(now))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Revokes every live session of a user; returns how many.
pub fn revoke_all_for_user(conn: &mut AnyConnection, user_id: &str, now: i64) -> Result<usize, StoreError> {
    Ok(diesel::update(sessions::table.filter(sessions::user_id.eq(user_id)).filter(sessions::revoked_at.is_null()))
        .set(sessions::revoked_at.eq(now))
        .execute(conn)?)
}

/// A user's sessions, newest first; with `live_only`, only those neither revoked nor expired.
pub fn list_for_user(
    conn: &mut AnyConnection,
    user_id: &str,
    live_only: bool,
    now: i64,
) -> Result<Vec<Session>, StoreError> {
    let mine = sessions::table.filter(sessions::user_id.eq(user_id));
    let order = (sessions::created_at.desc(), sessions::session_hash.asc());
    let rows = if live_only {
        mine.filter(sessions::revoked_at.is_null())
            .filter(sessions::expires_at.gt(now))
            .order(order)
            .limit(1000)
            .select(Session::as_select())
            .load(conn)?
    } else {
        mine.order(order).limit(1000).select(Session::as_select()).load(conn)?
    };
    Ok(rows)
}

/// Removes sessions that expired or were revoked before `before`; returns how many.
pub fn delete_stale(conn: &mut AnyConnection, before: i64) -> Result<usize, StoreError> {
    Ok(diesel::delete(sessions::table.filter(sessions::expires_at.lt(before).or(sessions::revoked_at.lt(before))))
        .execute(conn)?)
}
