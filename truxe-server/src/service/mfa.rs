//! TOTP second factor for users: enrol (pending secret, confirmed by a first valid code),
//! verify with lockout and single-use recovery codes, reset. Decisions are `crate::mfa`'s;
//! this module loads, decides and persists. Blocking calls; run them through `store::run`.

use diesel::Connection;

use crate::mfa::{self, MfaError};
use crate::secret::Secret;
use crate::store::audit::{self, AuditAction, AuditEvent};
use crate::store::mfa::{self as mfa_store, MfaState, Reservation};
use crate::store::{AnyConnection, StoreError, server_secrets, users as user_store};

#[derive(Debug, thiserror::Error)]
pub enum MfaServiceError {
    #[error("no user {0}")]
    NotFound(String),
    #[error("two-factor authentication is already set up for this account")]
    AlreadyEnrolled,
    #[error("two-factor authentication is not set up for this account")]
    NotEnrolled,
    #[error("no two-factor setup is in progress; start again")]
    NoPendingEnrolment,
    /// Too many wrong codes; `until` is epoch seconds.
    #[error("too many wrong codes; try again later")]
    Locked { until: i64 },
    #[error("the code is not valid")]
    InvalidCode,
    #[error("this code was already used; wait for the next one")]
    CodeReused,
    #[error(transparent)]
    Mfa(MfaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for MfaServiceError {
    fn from(e: diesel::result::Error) -> Self {
        MfaServiceError::Store(e.into())
    }
}

/// What the enrolment page shows: the QR code, and the secret for manual entry.
#[derive(Debug)]
pub struct Enrolment {
    pub secret: Secret<Vec<u8>>,
    pub secret_base32: Secret<String>,
    pub provisioning_uri: Secret<String>,
    /// Inline `<svg>` of the provisioning URI.
    pub qr_svg: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Totp,
    RecoveryCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub method: Method,
    /// Unused recovery codes left (after this one, when one was used).
    pub recovery_codes_left: i64,
}

fn load_state(conn: &mut AnyConnection, user_id: &str) -> Result<MfaState, MfaServiceError> {
    mfa_store::load(conn, user_id)?.ok_or_else(|| MfaServiceError::NotFound(user_id.to_string()))
}

fn encryption_key(conn: &mut AnyConnection, now: i64) -> Result<Secret<Vec<u8>>, StoreError> {
    server_secrets::load_or_create(conn, mfa::ENCRYPTION_KEY_NAME, now)
}

fn hmac_key(conn: &mut AnyConnection, now: i64) -> Result<Secret<Vec<u8>>, StoreError> {
    server_secrets::load_or_create(conn, mfa::HMAC_KEY_NAME, now)
}

fn event(action: AuditAction, actor: &str, user_id: &str, details: serde_json::Value) -> AuditEvent {
    AuditEvent::new(action, actor).subject(user_id).user(user_id).details(details)
}

/// Starts (or shows again) an enrolment: a pending secret is kept across page reloads until
/// it is confirmed or reset, so a code scanned from an earlier rendering still works.
pub fn begin_enrolment(
    conn: &mut AnyConnection,
    user_id: &str,
    issuer: &str,
    now: i64,
) -> Result<Enrolment, MfaServiceError> {
    let user = user_store::find(conn, user_id)?.ok_or_else(|| MfaServiceError::NotFound(user_id.to_string()))?;
    let state = load_state(conn, user_id)?;
    if state.mfa_enabled {
        return Err(MfaServiceError::AlreadyEnrolled);
    }
    let key = encryption_key(conn, now)?;
    let pending =
        state.mfa_secret.as_deref().and_then(|stored| mfa::decrypt_secret(key.secret(), user_id, stored).ok());
    let secret = match pending {
        Some(secret) => secret,
        None => {
            let secret = mfa::new_secret();
            let stored = mfa::encrypt_secret(key.secret(), user_id, secret.secret()).map_err(MfaServiceError::Mfa)?;
            if !mfa_store::set_pending_secret(conn, user_id, &stored, now)? {
                // Confirmed by a concurrent request in the meantime.
                return Err(MfaServiceError::AlreadyEnrolled);
            }
            secret
        }
    };
    let provisioning_uri = mfa::provisioning_uri(secret.secret(), issuer, &user.email).map_err(MfaServiceError::Mfa)?;
    let qr_svg = mfa::qr_svg(provisioning_uri.secret()).map_err(MfaServiceError::Mfa)?;
    Ok(Enrolment { secret_base32: mfa::secret_base32(secret.secret()), secret, provisioning_uri, qr_svg })
}

/// Confirms the pending enrolment with a first valid code: MFA is on from now, and the ten
/// recovery codes returned are shown once (only their hashes are kept). Wrong codes count
/// towards the lockout.
pub fn confirm_enrolment(
    conn: &mut AnyConnection,
    user_id: &str,
    code: &str,
    now: i64,
) -> Result<Vec<Secret<String>>, MfaServiceError> {
    let state = load_state(conn, user_id)?;
    if state.mfa_enabled {
        return Err(MfaServiceError::AlreadyEnrolled);
    }
    let Some(stored) = state.mfa_secret.as_deref() else {
        return Err(MfaServiceError::NoPendingEnrolment);
    };
    let reservation = reserve_attempt(conn, user_id, now)?;
    let key = encryption_key(conn, now)?;
    let secret = mfa::decrypt_secret(key.secret(), user_id, stored).map_err(MfaServiceError::Mfa)?;
    let step = match mfa::verify(secret.secret(), code, now, state.mfa_last_step) {
        Ok(step) => step,
        Err(e @ (MfaError::InvalidCode | MfaError::CodeReused)) => {
            return Err(failure(conn, user_id, reservation, e, now)?);
        }
        Err(e) => return Err(MfaServiceError::Mfa(e)),
    };
    let hmac_key = hmac_key(conn, now)?;
    let codes = mfa::generate_recovery_codes();
    let hashes = recovery_hashes(hmac_key.secret(), &codes)?;
    conn.transaction(|conn| {
        if !mfa_store::confirm(conn, user_id, step, now)? {
            return Err(MfaServiceError::NoPendingEnrolment);
        }
        mfa_store::replace_recovery_codes(conn, user_id, &hashes, now)?;
        audit::record(
            conn,
            &event(AuditAction::UserMfaEnrolled, &format!("user:{user_id}"), user_id, serde_json::json!({})),
            now,
        )?;
        Ok(())
    })?;
    tracing::info!(%user_id, "two-factor authentication enabled");
    Ok(codes)
}

/// Checks a second-factor entry: six digits are a TOTP code, anything else is tried as a
/// recovery code (which is then used up). Each entry reserves a guess before it is checked
/// (see [`reserve_attempt`]); wrong entries keep it, a success clears the count.
pub fn verify(conn: &mut AnyConnection, user_id: &str, input: &str, now: i64) -> Result<Verified, MfaServiceError> {
    let state = load_state(conn, user_id)?;
    let Some(stored) = state.mfa_secret.as_deref().filter(|_| state.mfa_enabled) else {
        return Err(MfaServiceError::NotEnrolled);
    };
    let reservation = reserve_attempt(conn, user_id, now)?;
    if mfa::looks_like_totp_code(input) {
        let key = encryption_key(conn, now)?;
        let secret = mfa::decrypt_secret(key.secret(), user_id, stored).map_err(MfaServiceError::Mfa)?;
        return match mfa::verify(secret.secret(), input, now, state.mfa_last_step) {
            Ok(step) if mfa_store::accept_step(conn, user_id, step)? => {
                let left = mfa_store::unused_recovery_codes(conn, user_id)?;
                Ok(Verified { method: Method::Totp, recovery_codes_left: left })
            }
            // A concurrent request accepted this step (or a later one) first.
            Ok(_) => Err(failure(conn, user_id, reservation, MfaError::CodeReused, now)?),
            Err(e @ (MfaError::InvalidCode | MfaError::CodeReused)) => {
                Err(failure(conn, user_id, reservation, e, now)?)
            }
            Err(e) => Err(MfaServiceError::Mfa(e)),
        };
    }
    let hmac_key = hmac_key(conn, now)?;
    let used = match mfa::hash_recovery_code(hmac_key.secret(), input) {
        Some(hash) => mfa_store::use_recovery_code(conn, user_id, &hash, now)?,
        None => false,
    };
    if !used {
        return Err(failure(conn, user_id, reservation, MfaError::InvalidCode, now)?);
    }
    mfa_store::clear_failures(conn, user_id)?;
    let left = mfa_store::unused_recovery_codes(conn, user_id)?;
    audit::record(
        conn,
        &event(
            AuditAction::UserMfaRecoveryCodeUsed,
            &format!("user:{user_id}"),
            user_id,
            serde_json::json!({ "recovery_codes_left": left }),
        ),
        now,
    )?;
    Ok(Verified { method: Method::RecoveryCode, recovery_codes_left: left })
}

/// Replaces the recovery codes with ten new ones (shown once); the old ones stop working.
pub fn regenerate_recovery_codes(
    conn: &mut AnyConnection,
    user_id: &str,
    actor: &str,
    now: i64,
) -> Result<Vec<Secret<String>>, MfaServiceError> {
    let state = load_state(conn, user_id)?;
    if !state.mfa_enabled {
        return Err(MfaServiceError::NotEnrolled);
    }
    let hmac_key = hmac_key(conn, now)?;
    let codes = mfa::generate_recovery_codes();
    let hashes = recovery_hashes(hmac_key.secret(), &codes)?;
    conn.transaction(|conn| {
        mfa_store::replace_recovery_codes(conn, user_id, &hashes, now)?;
        audit::record(
            conn,
            &event(AuditAction::UserMfaRecoveryCodesRegenerated, actor, user_id, serde_json::json!({})),
            now,
        )?;
        Ok::<_, MfaServiceError>(())
    })?;
    Ok(codes)
}

pub fn recovery_codes_left(conn: &mut AnyConnection, user_id: &str) -> Result<i64, MfaServiceError> {
    Ok(mfa_store::unused_recovery_codes(conn, user_id)?)
}

/// Removes the enrolment (confirmed or pending), the lockout and the recovery codes, audited
/// as `user.mfa_reset`; returns whether there was anything to remove.
pub fn reset(conn: &mut AnyConnection, user_id: &str, actor: &str, now: i64) -> Result<bool, MfaServiceError> {
    conn.transaction(|conn| {
        let state = load_state(conn, user_id)?;
        let had_codes = mfa_store::unused_recovery_codes(conn, user_id)? > 0;
        let had_any = state.mfa_enabled || state.mfa_secret.is_some() || had_codes || state.mfa_locked_until.is_some();
        mfa_store::clear(conn, user_id, now)?;
        audit::record(
            conn,
            &event(AuditAction::UserMfaReset, actor, user_id, serde_json::json!({ "was_enabled": state.mfa_enabled })),
            now,
        )?;
        Ok(had_any)
    })
}

/// Reserves one guess before any code is checked, so parallel requests cannot all pass a lock
/// check that was read before the others counted: exactly `MAX_FAILED_ATTEMPTS` guesses are
/// evaluated per lockout period (see `store::mfa::reserve_attempt`). `Locked` when none is left.
fn reserve_attempt(conn: &mut AnyConnection, user_id: &str, now: i64) -> Result<Reservation, MfaServiceError> {
    if let Some(reservation) = mfa_store::reserve_attempt(conn, user_id, now)? {
        return Ok(reservation);
    }
    // Locked: by the last guess of a series, which may still be being checked. Were it right,
    // the lockout is lifted, but this guess got no reservation and is refused all the same.
    let until = mfa_store::locked_until(conn, user_id, now)?.unwrap_or(now + mfa::LOCKOUT_SECS);
    Err(MfaServiceError::Locked { until })
}

/// The answer to a wrong entry, whose guess was reserved already: `Locked` when it was the
/// last guess (its reservation started the lockout; audited here, once per lockout), otherwise
/// the error itself.
fn failure(
    conn: &mut AnyConnection,
    user_id: &str,
    reservation: Reservation,
    error: MfaError,
    now: i64,
) -> Result<MfaServiceError, StoreError> {
    if let Reservation::Last { locked_until } = reservation {
        audit::record(
            conn,
            &event(
                AuditAction::UserMfaLocked,
                &format!("user:{user_id}"),
                user_id,
                serde_json::json!({ "locked_until": locked_until }),
            ),
            now,
        )?;
        tracing::warn!(%user_id, locked_until, "second factor locked after repeated wrong codes");
        return Ok(MfaServiceError::Locked { until: locked_until });
    }
    Ok(match error {
        MfaError::CodeReused => MfaServiceError::CodeReused,
        _ => MfaServiceError::InvalidCode,
    })
}

fn recovery_hashes(key: &[u8], codes: &[Secret<String>]) -> Result<Vec<String>, MfaServiceError> {
    codes
        .iter()
        .map(|code| {
            mfa::hash_recovery_code(key, code.secret())
                .ok_or_else(|| MfaServiceError::Mfa(MfaError::Totp("generated an invalid recovery code".to_string())))
        })
        .collect()
}
