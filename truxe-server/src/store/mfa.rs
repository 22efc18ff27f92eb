//! The MFA columns of `users` and the `mfa_recovery_codes` table. Every single-use rule is one
//! conditional `UPDATE` that must touch exactly one row, so concurrent requests cannot both win.

use diesel::dsl::count_star;
use diesel::prelude::*;

use super::schema::{mfa_recovery_codes as codes, users};
use super::{AnyConnection, StoreError};
use crate::mfa::{LOCKOUT_SECS, MAX_FAILED_ATTEMPTS};

/// A user's second-factor state, the encrypted secret included.
#[derive(Queryable, Selectable, Clone, PartialEq, Eq)]
#[diesel(table_name = users)]
pub struct MfaState {
    /// Encrypted (see `mfa::encrypt_secret`); set while pending and once enabled.
    pub mfa_secret: Option<String>,
    pub mfa_enabled: bool,
    pub mfa_last_step: Option<i64>,
    pub mfa_failed_attempts: i32,
    pub mfa_locked_until: Option<i64>,
}

impl std::fmt::Debug for MfaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaState")
            .field("mfa_secret", &self.mfa_secret.as_ref().map(|_| "[redacted]"))
            .field("mfa_enabled", &self.mfa_enabled)
            .field("mfa_last_step", &self.mfa_last_step)
            .field("mfa_failed_attempts", &self.mfa_failed_attempts)
            .field("mfa_locked_until", &self.mfa_locked_until)
            .finish()
    }
}

/// `None` when the user does not exist.
pub fn load(conn: &mut AnyConnection, user_id: &str) -> Result<Option<MfaState>, StoreError> {
    Ok(users::table.filter(users::user_id.eq(user_id)).select(MfaState::as_select()).first(conn).optional()?)
}

/// Stores a pending (not yet confirmed) secret; `false` when the user does not exist or has
/// MFA enabled already (a confirmed secret is only replaced through `clear`).
pub fn set_pending_secret(
    conn: &mut AnyConnection,
    user_id: &str,
    encrypted_secret: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = diesel::update(users::table.filter(users::user_id.eq(user_id)).filter(users::mfa_enabled.eq(false)))
        .set((users::mfa_secret.eq(encrypted_secret), users::mfa_last_step.eq(None::<i64>), users::updated_at.eq(now)))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Turns the pending secret on, recording the step of the confirming code; `false` when there
/// was no pending secret (or another request confirmed it first).
pub fn confirm(conn: &mut AnyConnection, user_id: &str, step: i64, now: i64) -> Result<bool, StoreError> {
    let changed = diesel::update(
        users::table
            .filter(users::user_id.eq(user_id))
            .filter(users::mfa_enabled.eq(false))
            .filter(users::mfa_secret.is_not_null()),
    )
    .set((
        users::mfa_enabled.eq(true),
        users::mfa_enrolled_at.eq(now),
        users::mfa_last_step.eq(step),
        users::mfa_failed_attempts.eq(0),
        users::mfa_locked_until.eq(None::<i64>),
        users::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Records an accepted TOTP step and clears the failure count; `false` when this step (or a
/// later one) was already used, which makes concurrent replays of one code lose.
pub fn accept_step(conn: &mut AnyConnection, user_id: &str, step: i64) -> Result<bool, StoreError> {
    let changed = diesel::update(
        users::table
            .filter(users::user_id.eq(user_id))
            .filter(users::mfa_last_step.is_null().or(users::mfa_last_step.lt(step))),
    )
    .set((users::mfa_last_step.eq(step), users::mfa_failed_attempts.eq(0), users::mfa_locked_until.eq(None::<i64>)))
    .execute(conn)?;
    Ok(changed == 1)
}

/// A guess reserved by [`reserve_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The `n`th guess since the count was last cleared, `n < MAX_FAILED_ATTEMPTS`.
    Attempt(i32),
    /// The last guess: the lockout (until the given time) started with this reservation, so
    /// no other guess is evaluated while this one is checked. A right code lifts it again.
    Last { locked_until: i64 },
}

/// Reserves one guess before the code is checked; `None` when none is left (locked). One
/// transaction: a conditional `UPDATE` counts the guess when the second factor is not locked
/// and fewer than `MAX_FAILED_ATTEMPTS` guesses are counted, and the guess that reaches
/// `MAX_FAILED_ATTEMPTS` starts the lockout (`mfa_locked_until = now + LOCKOUT_SECS`, count
/// back to 0) before the transaction ends. The row stays locked by the `UPDATE` until then
/// (SQLite: the database write lock), so the count read back is this guess's own: of any
/// number of parallel guesses exactly `MAX_FAILED_ATTEMPTS` are evaluated per lockout period
/// and the last of them is known. A success clears the count and the lockout (`accept_step`,
/// `confirm`, `clear_failures`), so only wrong entries keep their reservation.
pub fn reserve_attempt(conn: &mut AnyConnection, user_id: &str, now: i64) -> Result<Option<Reservation>, StoreError> {
    conn.transaction(|conn| {
        let changed = diesel::update(
            users::table
                .filter(users::user_id.eq(user_id))
                .filter(users::mfa_locked_until.is_null().or(users::mfa_locked_until.le(now)))
                .filter(users::mfa_failed_attempts.lt(MAX_FAILED_ATTEMPTS)),
        )
        .set(users::mfa_failed_attempts.eq(users::mfa_failed_attempts + 1))
        .execute(conn)?;
        if changed != 1 {
            return Ok(None);
        }
        let count: i32 =
            users::table.filter(users::user_id.eq(user_id)).select(users::mfa_failed_attempts).first(conn)?;
        if count < MAX_FAILED_ATTEMPTS {
            return Ok(Some(Reservation::Attempt(count)));
        }
        let locked_until = now + LOCKOUT_SECS;
        diesel::update(users::table.filter(users::user_id.eq(user_id)))
            .set((users::mfa_failed_attempts.eq(0), users::mfa_locked_until.eq(locked_until)))
            .execute(conn)?;
        Ok(Some(Reservation::Last { locked_until }))
    })
}

/// When the running lockout ends, if one is running at `now`.
pub fn locked_until(conn: &mut AnyConnection, user_id: &str, now: i64) -> Result<Option<i64>, StoreError> {
    let until: Option<Option<i64>> =
        users::table.filter(users::user_id.eq(user_id)).select(users::mfa_locked_until).first(conn).optional()?;
    Ok(until.flatten().filter(|&until| until > now))
}

pub fn clear_failures(conn: &mut AnyConnection, user_id: &str) -> Result<(), StoreError> {
    diesel::update(users::table.filter(users::user_id.eq(user_id)))
        .set((users::mfa_failed_attempts.eq(0), users::mfa_locked_until.eq(None::<i64>)))
        .execute(conn)?;
    Ok(())
}

/// Removes the enrolment (pending or confirmed), the lockout and every recovery code;
/// `false` when the user does not exist.
pub fn clear(conn: &mut AnyConnection, user_id: &str, now: i64) -> Result<bool, StoreError> {
    delete_recovery_codes(conn, user_id)?;
    let changed = diesel::update(users::table.filter(users::user_id.eq(user_id)))
        .set((
            users::mfa_secret.eq(None::<String>),
            users::mfa_enabled.eq(false),
            users::mfa_enrolled_at.eq(None::<i64>),
            users::mfa_last_step.eq(None::<i64>),
            users::mfa_failed_attempts.eq(0),
            users::mfa_locked_until.eq(None::<i64>),
            users::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Replaces the user's recovery codes with these hashes; call inside a transaction.
pub fn replace_recovery_codes(
    conn: &mut AnyConnection,
    user_id: &str,
    code_hashes: &[String],
    now: i64,
) -> Result<(), StoreError> {
    delete_recovery_codes(conn, user_id)?;
    // One statement per code: MultiConnection has no batch insert, and there are ten.
    for hash in code_hashes {
        diesel::insert_into(codes::table)
            .values((codes::user_id.eq(user_id), codes::code_hash.eq(hash), codes::created_at.eq(now)))
            .execute(conn)?;
    }
    Ok(())
}

/// Marks an unused code used; `false` when it is unknown or already used.
pub fn use_recovery_code(
    conn: &mut AnyConnection,
    user_id: &str,
    code_hash: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = diesel::update(
        codes::table
            .filter(codes::user_id.eq(user_id))
            .filter(codes::code_hash.eq(code_hash))
            .filter(codes::used_at.is_null()),
    )
    .set(codes::used_at.eq(now))
    .execute(conn)?;
    Ok(changed == 1)
}

pub fn unused_recovery_codes(conn: &mut AnyConnection, user_id: &str) -> Result<i64, StoreError> {
    Ok(codes::table
        .filter(codes::user_id.eq(user_id))
        .filter(codes::used_at.is_null())
        .select(count_star())
        .first(conn)?)
}

pub fn delete_recovery_codes(conn: &mut AnyConnection, user_id: &str) -> Result<usize, StoreError> {
    Ok(diesel::delete(codes::table.filter(codes::user_id.eq(user_id))).execute(conn)?)
}
