//! The `users` table (profile and status; the MFA columns are written by `store::mfa`).

use diesel::prelude::*;

use super::schema::users;
use super::{AnyConnection, StoreError};
use crate::model::UserId;
use crate::model::user::{User, UserStatus};

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
struct Row {
    user_id: UserId,
    email: String,
    display_name: Option<String>,
    email_verified: bool,
    status: String,
    mfa_enabled: bool,
    mfa_enrolled_at: Option<i64>,
    mfa_failed_attempts: i32,
    mfa_locked_until: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl Row {
    fn into_user(self) -> Result<User, StoreError> {
        let status = UserStatus::parse(&self.status)
            .ok_or_else(|| StoreError::Corrupt(format!("users row {}: invalid status", self.user_id)))?;
        Ok(User {
            user_id: self.user_id,
            email: self.email,
            display_name: self.display_name,
            email_verified: self.email_verified,
            status,
            mfa_enabled: self.mfa_enabled,
            mfa_enrolled_at: self.mfa_enrolled_at,
            mfa_failed_attempts: self.mfa_failed_attempts,
            mfa_locked_until: self.mfa_locked_until,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// What `insert` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Yes,
    /// The email (or, astronomically unlikely, the id) is taken. On PostgreSQL the surrounding
    /// transaction is now aborted: return an error from it.
    Duplicate,
}

/// Inserts a new user without MFA; the unique email index decides races.
pub fn insert(conn: &mut AnyConnection, user: &User) -> Result<Inserted, StoreError> {
    let result = diesel::insert_into(users::table)
        .values((
            users::user_id.eq(&user.user_id),
            users::email.eq(&user.email),
            users::display_name.eq(user.display_name.as_deref()),
            users::email_verified.eq(user.email_verified),
            users::status.eq(user.status.as_str()),
            users::created_at.eq(user.created_at),
            users::updated_at.eq(user.updated_at),
        ))
        .execute(conn);
    match result {
        Ok(_) => Ok(Inserted::Yes),
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {
            Ok(Inserted::Duplicate)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn find(conn: &mut AnyConnection, user_id: &str) -> Result<Option<User>, StoreError> {
    users::table
        .filter(users::user_id.eq(user_id))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(Row::into_user)
        .transpose()
}

/// By the normalised address (the caller normalises).
pub fn find_by_email(conn: &mut AnyConnection, email: &str) -> Result<Option<User>, StoreError> {
    users::table
        .filter(users::email.eq(email))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(Row::into_user)
        .transpose()
}

/// Users ordered by id, after the `after` cursor.
pub fn list(conn: &mut AnyConnection, after: Option<&str>, limit: i64) -> Result<Vec<User>, StoreError> {
    let mut query = users::table.select(Row::as_select()).order(users::user_id).limit(limit).into_boxed();
    if let Some(after) = after {
        query = query.filter(users::user_id.gt(after.to_string()));
    }
    query.load(conn)?.into_iter().map(Row::into_user).collect()
}

/// `false` when the user does not exist.
pub fn set_status(conn: &mut AnyConnection, user_id: &str, status: UserStatus, now: i64) -> Result<bool, StoreError> {
    let changed = diesel::update(users::table.filter(users::user_id.eq(user_id)))
        .set((users::status.eq(status.as_str()), users::updated_at.eq(now)))
        .execute(conn)?;
    Ok(changed > 0)
}

/// Takes the user's row lock if the user is active (a no-op update that must match): inside a
/// transaction that creates a session, a code or a grant, it orders that transaction against a
/// concurrent disable. On PostgreSQL the update waits for a disabling transaction and then sees
/// its status; on SQLite writers are serialized anyway. `false`: the user is no longer active.
pub fn lock_active(conn: &mut AnyConnection, user_id: &str) -> Result<bool, StoreError> {
    let locked = diesel::update(
        users::table.filter(users::user_id.eq(user_id)).filter(users::status.eq(UserStatus::Active.as_str())),
    )
    .set(users::status.eq(users::status))
    .execute(conn)?;
    Ok(locked == 1)
}

/// Sets the status when it differs; `false` when the user does not exist or has it already.
pub fn change_status(
    conn: &mut AnyConnection,
    user_id: &str,
    status: UserStatus,
    now: i64,
) -> Result<bool, StoreError> {
    let changed =
        diesel::update(users::table.filter(users::user_id.eq(user_id)).filter(users::status.ne(status.as_str())))
            .set((users::status.eq(status.as_str()), users::updated_at.eq(now)))
            .execute(conn)?;
    Ok(changed > 0)
}

/// `false` when the user does not exist.
pub fn set_email_verified(
    conn: &mut AnyConnection,
    user_id: &str,
    verified: bool,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = diesel::update(users::table.filter(users::user_id.eq(user_id)))
        .set((users::email_verified.eq(verified), users::updated_at.eq(now)))
        .execute(conn)?;
    Ok(changed > 0)
}

/// Deletes the user; sessions, codes, tokens, consents, recovery codes and magic links go with
/// it (`ON DELETE CASCADE`). `false` when the user does not exist.
pub fn delete(conn: &mut AnyConnection, user_id: &str) -> Result<bool, StoreError> {
    Ok(diesel::delete(users::table.filter(users::user_id.eq(user_id))).execute(conn)? > 0)
}
