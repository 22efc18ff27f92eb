//! The `audit_events` table: who did what, when, from where. Never secrets or tokens.

use diesel::prelude::*;

use super::schema::audit_events;
use super::{AnyConnection, StoreError};
use crate::model::request::RequestMeta;

/// What happened: the `action` column. One variant per kind of event, so that the vocabulary
/// an operator filters on is written down once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    AuthorizationGranted,
    AuthorizationCodeReused,
    ConsentGranted,
    ConsentWithdrawn,
    TokenIssued,
    TokenRevoked,
    RefreshTokenReused,
    ClientCreated,
    ClientUpdated,
    ClientDeleted,
    ClientSecretRotated,
    UserCreated,
    UserEnabled,
    UserDisabled,
    UserDeleted,
    UserEmailVerified,
    UserSignInStarted,
    UserSignedIn,
    UserSignedOut,
    UserSessionsRevoked,
    UserMfaEnrolled,
    UserMfaRecoveryCodesRegenerated,
    UserMfaRecoveryCodeUsed,
    UserMfaReset,
    UserMfaLocked,
}

impl AuditAction {
    pub const ALL: [AuditAction; 25] = [
        AuditAction::AuthorizationGranted,
        AuditAction::AuthorizationCodeReused,
        AuditAction::ConsentGranted,
        AuditAction::ConsentWithdrawn,
        AuditAction::TokenIssued,
        AuditAction::TokenRevoked,
        AuditAction::RefreshTokenReused,
        AuditAction::ClientCreated,
        AuditAction::ClientUpdated,
        AuditAction::ClientDeleted,
        AuditAction::ClientSecretRotated,
        AuditAction::UserCreated,
        AuditAction::UserEnabled,
        AuditAction::UserDisabled,
        AuditAction::UserDeleted,
        AuditAction::UserEmailVerified,
        AuditAction::UserSignInStarted,
        AuditAction::UserSignedIn,
        AuditAction::UserSignedOut,
        AuditAction::UserSessionsRevoked,
        AuditAction::UserMfaEnrolled,
        AuditAction::UserMfaRecoveryCodesRegenerated,
        AuditAction::UserMfaRecoveryCodeUsed,
        AuditAction::UserMfaReset,
        AuditAction::UserMfaLocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::AuthorizationGranted => "authorization.granted",
            AuditAction::AuthorizationCodeReused => "authorization_code.reused",
            AuditAction::ConsentGranted => "consent.granted",
            AuditAction::ConsentWithdrawn => "consent.withdrawn",
            AuditAction::TokenIssued => "token.issued",
            AuditAction::TokenRevoked => "token.revoked",
            AuditAction::RefreshTokenReused => "refresh_token.reused",
            AuditAction::ClientCreated => "client.created",
            AuditAction::ClientUpdated => "client.updated",
            AuditAction::ClientDeleted => "client.deleted",
            AuditAction::ClientSecretRotated => "client.secret_rotated",
            AuditAction::UserCreated => "user.created",
            AuditAction::UserEnabled => "user.enabled",
            AuditAction::UserDisabled => "user.disabled",
            AuditAction::UserDeleted => "user.deleted",
            AuditAction::UserEmailVerified => "user.email_verified",
            AuditAction::UserSignInStarted => "user.sign_in_started",
            AuditAction::UserSignedIn => "user.signed_in",
            AuditAction::UserSignedOut => "user.signed_out",
            AuditAction::UserSessionsRevoked => "user.sessions_revoked",
            AuditAction::UserMfaEnrolled => "user.mfa_enrolled",
            AuditAction::UserMfaRecoveryCodesRegenerated => "user.mfa_recovery_codes_regenerated",
            AuditAction::UserMfaRecoveryCodeUsed => "user.mfa_recovery_code_used",
            AuditAction::UserMfaReset => "user.mfa_reset",
            AuditAction::UserMfaLocked => "user.mfa_locked",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == value)
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `audit_events`, built with [`AuditEvent::new`] and the setters below.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: AuditAction,
    /// `admin`, `client:<id>`, `user:<id>`, `cli` …
    pub actor: String,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
}

impl AuditEvent {
    pub fn new(action: AuditAction, actor: impl Into<String>) -> Self {
        Self {
            action,
            actor: actor.into(),
            subject: None,
            client_id: None,
            user_id: None,
            ip: None,
            request_id: None,
            details: serde_json::Value::Null,
        }
    }

    /// The actor `client:<id>`.
    pub fn by_client(action: AuditAction, client_id: &str) -> Self {
        Self::new(action, format!("client:{client_id}")).client(client_id)
    }

    /// The actor `user:<id>`.
    pub fn by_user(action: AuditAction, user_id: &str) -> Self {
        Self::new(action, format!("user:{user_id}")).user(user_id)
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn client(mut self, client_id: &str) -> Self {
        self.client_id = Some(client_id.to_string());
        self
    }

    pub fn user(mut self, user_id: &str) -> Self {
        self.user_id = Some(user_id.to_string());
        self
    }

    /// Where the request came from.
    pub fn from_request(mut self, meta: &RequestMeta) -> Self {
        self.ip.clone_from(&meta.ip);
        self.request_id.clone_from(&meta.request_id);
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

pub fn record(conn: &mut AnyConnection, event: &AuditEvent, now: i64) -> Result<(), StoreError> {
    let details = if event.details.is_null() { "{}".to_string() } else { event.details.to_string() };
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::event_id.eq(uuid::Uuid::now_v7().to_string()),
            audit_events::occurred_at.eq(now),
            audit_events::action.eq(event.action.as_str()),
            audit_events::actor.eq(&event.actor),
            audit_events::subject.eq(event.subject.as_deref()),
            audit_events::client_id.eq(event.client_id.as_deref()),
            audit_events::user_id.eq(event.user_id.as_deref()),
            audit_events::ip.eq(event.ip.as_deref()),
            audit_events::request_id.eq(event.request_id.as_deref()),
            audit_events::details.eq(details),
        ))
        .execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
            assert!(seen.insert(action.as_str()), "{action} twice");
        }
        assert_eq!(AuditAction::parse("token.minted"), None);
    }
}
