//! Users: create, look up, list, disable/enable, delete, and the sign-in look-up of the
//! magic-link flow. Blocking calls on one connection; run them through `store::run`.

use diesel::Connection;

use crate::model::user::{self, Email, EmailError, User, UserStatus};
use crate::store::audit::{self, AuditAction, AuditEvent};
use crate::store::grants as grant_store;
use crate::store::magic_links;
use crate::store::sessions as session_store;
use crate::store::users::{self as user_store, Inserted};
use crate::store::{AnyConnection, StoreError};

/// Largest page `list` returns.
pub const MAX_PAGE: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid email address: {0}")]
    InvalidEmail(#[from] EmailError),
    #[error("invalid display name: {0}")]
    InvalidDisplayName(String),
    #[error("a user with the email address {0} already exists")]
    EmailTaken(String),
    #[error("no user {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for UserError {
    fn from(e: diesel::result::Error) -> Self {
        UserError::Store(e.into())
    }
}

/// What an administrator (or sign-up) provides.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub email: String,
    pub display_name: Option<String>,
    pub email_verified: bool,
}

/// Validates and inserts a user, audited as `user.created` by `actor` (`cli`, `admin`,
/// `signup` …). A taken address is [`UserError::EmailTaken`], also when another request
/// inserted it a moment earlier.
pub fn create(conn: &mut AnyConnection, new: &NewUser, actor: &str, now: i64) -> Result<User, UserError> {
    let email = Email::parse(&new.email)?;
    let display_name =
        user::normalize_display_name(new.display_name.as_deref()).map_err(UserError::InvalidDisplayName)?;
    let user = User {
        user_id: user::new_user_id(),
        email: email.into_string(),
        display_name,
        email_verified: new.email_verified,
        status: UserStatus::Active,
        mfa_enabled: false,
        mfa_enrolled_at: None,
        mfa_failed_attempts: 0,
        mfa_locked_until: None,
        created_at: now,
        updated_at: now,
    };
    conn.transaction(|conn| {
        // The insert comes first (the UNIQUE email column detects duplicates): on SQLite a
        // transaction that reads before it writes fails at once under a concurrent writer.
        if user_store::insert(conn, &user)? == Inserted::Duplicate {
            return Err(UserError::EmailTaken(user.email.clone()));
        }
        audit::record(
            conn,
            &AuditEvent::new(AuditAction::UserCreated, actor)
                .subject(&user.user_id)
                .user(&user.user_id)
                .details(serde_json::json!({ "email_verified": user.email_verified })),
            now,
        )?;
        Ok(())
    })?;
    tracing::info!(user_id = %user.user_id, %actor, "user created");
    Ok(user)
}

pub fn find(conn: &mut AnyConnection, user_id: &str) -> Result<Option<User>, UserError> {
    if !user::is_plausible_user_id(user_id) {
        return Ok(None);
    }
    Ok(user_store::find(conn, user_id)?)
}

/// By address in any spelling (`Alice@Example.com` finds `alice@example.com`).
pub fn find_by_email(conn: &mut AnyConnection, email: &str) -> Result<Option<User>, UserError> {
    let email = Email::parse(email)?;
    Ok(user_store::find_by_email(conn, email.as_str())?)
}

/// `usr_…` ids are looked up by id, anything with an `@` by address (the CLI's argument).
pub fn find_by_id_or_email(conn: &mut AnyConnection, key: &str) -> Result<Option<User>, UserError> {
    if key.contains('@') { find_by_email(conn, key) } else { find(conn, key) }
}

/// Like [`find_by_id_or_email`], but a missing user is [`UserError::NotFound`].
pub fn get(conn: &mut AnyConnection, key: &str) -> Result<User, UserError> {
    find_by_id_or_email(conn, key)?.ok_or_else(|| UserError::NotFound(key.to_string()))
}

/// One page of users ordered by id; pass the last id of a page as `after` for the next one.
/// `limit` is clamped to 1..=[`MAX_PAGE`].
pub fn list(conn: &mut AnyConnection, after: Option<&str>, limit: i64) -> Result<Vec<User>, UserError> {
    Ok(user_store::list(conn, after, limit.clamp(1, MAX_PAGE))?)
}

/// What disabling or deleting a user ended, as recorded in the audit event's details.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cutoff {
    /// Browser sessions that were live (pending second factors included).
    pub sessions_ended: usize,
    /// Grants (sign-ins of applications) that were live; their refresh and access tokens with them.
    pub grants_revoked: usize,
    /// Authorization codes not yet redeemed.
    pub codes_voided: usize,
    /// Sign-in links not yet used.
    pub links_voided: usize,
}

/// Ends everything a user could still act with: sessions, grants with their refresh and access
/// tokens (for every client), open authorization codes and unused sign-in links. Call it inside
/// the transaction that disables or deletes the user; nothing of it comes back later.
fn cut_off(conn: &mut AnyConnection, user: &User, now: i64) -> Result<Cutoff, StoreError> {
    // Codes and links first: a code exchange in flight either consumed its code already (its
    // grant is committed by the time the grants are revoked below, since voiding waited for the
    // code's row) or finds the code voided. Sessions, codes and grants created meanwhile check
    // the user under its row lock (`store::users::lock_active`), which this change holds.
    let codes_voided = grant_store::void_open_codes_of_user(conn, &user.user_id, now)?;
    let links_voided = magic_links::void_open_for_email(conn, &user.email, now)?;
    let grants_revoked = grant_store::revoke_all_grants_of_user(conn, &user.user_id, now)?;
    let sessions_ended = session_store::revoke_all_for_user(conn, &user.user_id, now)?;
    Ok(Cutoff { sessions_ended, grants_revoked, codes_voided, links_voided })
}

fn cutoff_details(cutoff: &Cutoff) -> serde_json::Value {
    serde_json::to_value(cutoff).unwrap_or_default()
}

/// Disables or re-enables a user (audited as `user.disabled` / `user.enabled`); setting the
/// status a user already has is not an error and records nothing.
///
/// Disabling ends, in the same transaction, the user's sessions, grants, refresh and access
/// tokens, open authorization codes and unused sign-in links (see [`Cutoff`], recorded in the
/// event's details). Re-enabling restores none of them: the user signs in afresh.
pub fn set_status(
    conn: &mut AnyConnection,
    user_id: &str,
    status: UserStatus,
    actor: &str,
    now: i64,
) -> Result<User, UserError> {
    set_status_reporting(conn, user_id, status, actor, now).map(|(user, _)| user)
}

/// [`set_status`], also returning what disabling ended (`None` when nothing changed or the
/// user was enabled).
pub fn set_status_reporting(
    conn: &mut AnyConnection,
    user_id: &str,
    status: UserStatus,
    actor: &str,
    now: i64,
) -> Result<(User, Option<Cutoff>), UserError> {
    if !user::is_plausible_user_id(user_id) {
        return Err(UserError::NotFound(user_id.to_string()));
    }
    conn.transaction(|conn| {
        // The write comes first: on SQLite a transaction that reads before it writes fails at
        // once under a concurrent writer.
        if !user_store::change_status(conn, user_id, status, now)? {
            // Unknown, or the status it has already.
            let user = find(conn, user_id)?.ok_or_else(|| UserError::NotFound(user_id.to_string()))?;
            return Ok((user, None));
        }
        let user = find(conn, user_id)?.ok_or_else(|| UserError::NotFound(user_id.to_string()))?;
        let (event, cutoff) = match status {
            UserStatus::Active => (AuditEvent::new(AuditAction::UserEnabled, actor), None),
            UserStatus::Disabled => {
                let cutoff = cut_off(conn, &user, now)?;
                (AuditEvent::new(AuditAction::UserDisabled, actor).details(cutoff_details(&cutoff)), Some(cutoff))
            }
        };
        audit::record(conn, &event.subject(user_id).user(user_id), now)?;
        Ok((user, cutoff))
    })
}

/// Deletes a user and, through the schema's cascades, their sessions, codes, tokens, consents,
/// recovery codes and pending magic links; audited as `user.deleted`, with what was still live
/// (see [`Cutoff`]) in the details. Everything is ended first, in the same transaction, so that
/// nothing of the user outlives the deletion (unused links to the address included).
pub fn delete(conn: &mut AnyConnection, user_id: &str, actor: &str, now: i64) -> Result<User, UserError> {
    let user = find(conn, user_id)?.ok_or_else(|| UserError::NotFound(user_id.to_string()))?;
    conn.transaction(|conn| {
        // Write first (on SQLite a transaction that reads before it writes fails at once under a
        // concurrent writer): marking the user disabled also takes its row lock.
        if !user_store::set_status(conn, user_id, UserStatus::Disabled, now)? {
            return Err(UserError::NotFound(user_id.to_string()));
        }
        let cutoff = cut_off(conn, &user, now)?;
        user_store::delete(conn, user_id)?;
        audit::record(
            conn,
            &AuditEvent::new(AuditAction::UserDeleted, actor)
                .subject(user_id)
                .user(user_id)
                .details(cutoff_details(&cutoff)),
            now,
        )?;
        Ok(user)
    })
}

/// The outcome of [`find_or_create_for_sign_in`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    /// An active user, now marked `email_verified`.
    Existing(User),
    /// Open sign-up created this user.
    Created(User),
    /// The account exists but is disabled: no session.
    Disabled(User),
    /// No account, and sign-up is closed.
    NoAccount,
}

impl SignIn {
    /// The user to start a session for, if any.
    pub fn user(&self) -> Option<&User> {
        match self {
            SignIn::Existing(user) | SignIn::Created(user) => Some(user),
            SignIn::Disabled(_) | SignIn::NoAccount => None,
        }
    }
}

/// The account a redeemed magic link signs in to. Call it when the link is *used*, not when it
/// is requested: only then has the person shown control of the address, so an existing user is
/// marked `email_verified` (audited) and open sign-up creates a verified account (audited as
/// `user.created` by `signup`). A concurrent sign-up of the same address finds the winner's row.
pub fn find_or_create_for_sign_in(
    conn: &mut AnyConnection,
    email: &str,
    open_signup: bool,
    now: i64,
) -> Result<SignIn, UserError> {
    let email = Email::parse(email)?;
    if let Some(user) = user_store::find_by_email(conn, email.as_str())? {
        return existing_for_sign_in(conn, user, now);
    }
    if !open_signup {
        return Ok(SignIn::NoAccount);
    }
    let new = NewUser { email: email.as_str().to_string(), display_name: None, email_verified: true };
    match create(conn, &new, "signup", now) {
        Ok(user) => Ok(SignIn::Created(user)),
        Err(UserError::EmailTaken(_)) => match user_store::find_by_email(conn, email.as_str())? {
            Some(user) => existing_for_sign_in(conn, user, now),
            None => Err(UserError::Store(StoreError::Corrupt(format!(
                "users: {email} was reported taken but cannot be found"
            )))),
        },
        Err(e) => Err(e),
    }
}

fn existing_for_sign_in(conn: &mut AnyConnection, user: User, now: i64) -> Result<SignIn, UserError> {
    if !user.is_active() {
        return Ok(SignIn::Disabled(user));
    }
    if user.email_verified {
        return Ok(SignIn::Existing(user));
    }
    conn.transaction(|conn| {
        user_store::set_email_verified(conn, &user.user_id, true, now)?;
        audit::record(
            conn,
            &AuditEvent::by_user(AuditAction::UserEmailVerified, &user.user_id)
                .subject(&user.user_id)
                .details(serde_json::json!({ "method": "magic_link" })),
            now,
        )?;
        Ok::<_, UserError>(())
    })?;
    Ok(SignIn::Existing(User { email_verified: true, updated_at: now, ..user }))
}
