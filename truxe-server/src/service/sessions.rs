//! Browser sessions: start one after a magic link, complete a pending second factor, look one
//! up, list and revoke them. The cookie format is the HTTP layer's (`http::session`); here a
//! session is known by the random id the cookie carries and stored by its hash. Blocking calls;
//! run them through `store::run`.

use base64::Engine;
use diesel::Connection;
use sha2::{Digest, Sha256};

use crate::model::request::RequestMeta;
use crate::model::user::User;
use crate::secret::Secret;
use crate::store::audit::{self, AuditAction, AuditEvent};
use crate::store::sessions::{self as session_store, Session};
use crate::store::{self, AnyConnection, Rollback, StoreError, users as user_store};

/// `last_seen_at` is written at most this often per session.
pub const TOUCH_INTERVAL_SECS: i64 = 60;

/// A random 256-bit session id, base64url without padding (43 characters).
pub fn new_session_id() -> Secret<String> {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether a presented id has the shape of one of ours.
pub fn is_plausible_session_id(id: &str) -> bool {
    id.len() == 43 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Hex SHA-256 of the id: the table's key. The id has 256 random bits, so an unkeyed hash is
/// enough to make a leaked table useless as cookies.
pub fn session_hash(id: &str) -> String {
    Sha256::digest(id.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts a session for `user` and returns the id for the cookie; `None` when the user was
/// disabled or deleted meanwhile (checked under the user's row lock, so a concurrent disable
/// either sees this session and ends it, or this sees the disable). `mfa_pending` sessions sign
/// nobody in until [`complete_mfa`] replaces them.
pub fn start(
    conn: &mut AnyConnection,
    user: &User,
    amr: &[&str],
    mfa_pending: bool,
    max_age_secs: i64,
    origin: &RequestMeta,
    now: i64,
) -> Result<Option<Secret<String>>, StoreError> {
    let id = new_session_id();
    let session = Session {
        session_hash: session_hash(id.secret()),
        user_id: user.user_id.clone(),
        auth_time: now,
        amr: amr.join(" "),
        created_at: now,
        last_seen_at: now,
        expires_at: now.saturating_add(max_age_secs.max(1)),
        revoked_at: None,
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        mfa_pending,
    };
    let written = store::transaction(conn, |conn| {
        session_store::insert(conn, &session)?;
        if !user_store::lock_active(conn, &user.user_id)? {
            // Rolls the insert back: the user was disabled or deleted meanwhile.
            return Err(Rollback::Abort(()));
        }
        audit::record(
            conn,
            &AuditEvent::by_user(
                if mfa_pending { AuditAction::UserSignInStarted } else { AuditAction::UserSignedIn },
                &user.user_id,
            )
            .subject(&user.user_id)
            .from_request(origin)
            .details(serde_json::json!({ "amr": amr, "mfa_pending": mfa_pending })),
            now,
        )?;
        Ok(())
    })?;
    Ok(written.ok().map(|()| id))
}

/// A live session and its user, as the HTTP layer needs them.
#[derive(Debug, Clone)]
pub struct Active {
    pub session: Session,
    pub user: User,
}

/// The session behind `id` when it is live (not revoked or expired) and its user exists;
/// whether it is pending or its user active is the caller's to judge. Records activity.
pub fn find_live(conn: &mut AnyConnection, id: &str, now: i64) -> Result<Option<Active>, StoreError> {
    if !is_plausible_session_id(id) {
        return Ok(None);
    }
    let hash = session_hash(id);
    let Some(session) = session_store::find(conn, &hash)? else {
        return Ok(None);
    };
    if !session.is_live(now) {
        return Ok(None);
    }
    let Some(user) = user_store::find(conn, &session.user_id)? else {
        return Ok(None);
    };
    if now - session.last_seen_at >= TOUCH_INTERVAL_SECS {
        session_store::touch(conn, &hash, now)?;
    }
    Ok(Some(Active { session, user }))
}

/// Replaces a pending-second-factor session by a complete one (a new id, so that the id seen
/// before the second factor signs nobody in) with `amr` and `auth_time = now`. `None` when the
/// pending session is gone (revoked, expired, or completed by a concurrent request).
pub fn complete_mfa(
    conn: &mut AnyConnection,
    pending: &Session,
    user: &User,
    amr: &[&str],
    max_age_secs: i64,
    now: i64,
) -> Result<Option<Secret<String>>, StoreError> {
    conn.transaction(|conn| {
        if !session_store::take_pending(conn, &pending.session_hash, now)? {
            return Ok(None);
        }
        let origin = RequestMeta { ip: pending.ip.clone(), request_id: None, user_agent: pending.user_agent.clone() };
        start(conn, user, amr, false, max_age_secs, &origin, now)
    })
}

/// Ends one session (sign-out); `false` when it was unknown or already ended.
pub fn end(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, StoreError> {
    if !is_plausible_session_id(id) {
        return Ok(false);
    }
    let hash = session_hash(id);
    let Some(session) = session_store::find(conn, &hash)? else {
        return Ok(false);
    };
    conn.transaction(|conn| {
        if !session_store::revoke(conn, &hash, now)? {
            return Ok(false);
        }
        audit::record(
            conn,
            &AuditEvent::by_user(AuditAction::UserSignedOut, &session.user_id).subject(&session.user_id),
            now,
        )?;
        Ok(true)
    })
}

/// A user's sessions, newest first (`live_only`: neither revoked nor expired).
pub fn list_for_user(
    conn: &mut AnyConnection,
    user_id: &str,
    live_only: bool,
    now: i64,
) -> Result<Vec<Session>, StoreError> {
    session_store::list_for_user(conn, user_id, live_only, now)
}

/// Signs a user out everywhere (audited as `user.sessions_revoked` by `actor`); returns how many
/// sessions were live.
pub fn revoke_all_for_user(
    conn: &mut AnyConnection,
    user_id: &str,
    actor: &str,
    now: i64,
) -> Result<usize, StoreError> {
    conn.transaction(|conn| {
        let count = session_store::revoke_all_for_user(conn, user_id, now)?;
        audit::record(
            conn,
            &AuditEvent::new(AuditAction::UserSessionsRevoked, actor)
                .subject(user_id)
                .user(user_id)
                .details(serde_json::json!({ "count": count })),
            now,
        )?;
        Ok(count)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_hashed() {
        let (a, b) = (new_session_id(), new_session_id());
        assert_ne!(a.secret(), b.secret());
        assert!(is_plausible_session_id(a.secret()));
        let hash = session_hash(a.secret());
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, session_hash(b.secret()));
        assert!(!is_plausible_session_id("short"));
        assert!(!is_plausible_session_id(&"+".repeat(43)));
    }
}
