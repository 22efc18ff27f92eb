//! The `audit_events` table: who did what, when, from where, with what result. Never secrets or
//! tokens. Every entry has its place in one tamper-evident chain ([`chain`]); [`verify`] walks
//! it, [`query`] lists entries for `truxectl audit list`.

pub mod chain;
pub mod query;
pub mod verify;

use diesel::prelude::*;

use super::schema::audit_events;
use super::{AnyConnection, StoreError};
use crate::model::request::RequestMeta;

pub use chain::{GENESIS_HASH, Pruned, append, chain_legacy, prune};

/// Where audit entries are logged as structured lines (one per entry, after it is stored).
pub const LOG_TARGET: &str = "truxe::audit";

macro_rules! audit_actions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// What happened: the `action` column. One variant per kind of event, so that the
        /// vocabulary an operator filters on (`truxectl audit list --event`) is written down once.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AuditAction {
            $($(#[$doc])* $variant,)*
        }

        impl AuditAction {
            pub const ALL: &'static [AuditAction] = &[$(AuditAction::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$variant => $name,)*
                }
            }
        }
    };
}

audit_actions! {
    /// An authorization request ended with a code for the client.
    AuthorizationGranted => "authorization.granted",
    /// The user pressed "Deny" on the consent page.
    AuthorizationDenied => "authorization.denied",
    /// An authorization request was refused (error page or error redirect), with the error.
    AuthorizationFailed => "authorization.failed",
    AuthorizationCodeReused => "authorization_code.reused",
    ConsentGranted => "consent.granted",
    ConsentWithdrawn => "consent.withdrawn",
    /// An access token (and maybe an ID and a refresh token) issued by a grant other than refresh.
    TokenIssued => "token.issued",
    /// A refresh token rotated: new tokens for the same grant.
    TokenRefreshed => "token.refreshed",
    TokenRevoked => "token.revoked",
    RefreshTokenReused => "refresh_token.reused",
    /// A token, introspection or revocation request whose client authentication failed.
    ClientAuthenticationFailed => "client.authentication_failed",
    ClientCreated => "client.created",
    ClientUpdated => "client.updated",
    ClientDeleted => "client.deleted",
    ClientSecretRotated => "client.secret_rotated",
    /// A request refused with 429 by a rate limit.
    RateLimitExceeded => "rate_limit.exceeded",
    /// A signing key the server had not signed with before.
    KeyAdded => "key.added",
    UserCreated => "user.created",
    UserEnabled => "user.enabled",
    UserDisabled => "user.disabled",
    UserDeleted => "user.deleted",
    UserEmailVerified => "user.email_verified",
    /// Someone asked for a sign-in link (sent, or not: the details say why).
    UserSignInLinkRequested => "user.sign_in_link_requested",
    /// A sign-in link was used and the second factor is still owed.
    UserSignInStarted => "user.sign_in_started",
    /// A browser session started: the sign-in link was used (and the second factor given).
    UserSignedIn => "user.signed_in",
    /// A sign-in link that could not be used (invalid, expired, used, or its account gone).
    UserSignInFailed => "user.sign_in_failed",
    UserSignedOut => "user.signed_out",
    UserSessionsRevoked => "user.sessions_revoked",
    UserMfaEnrolled => "user.mfa_enrolled",
    /// A right TOTP code.
    UserMfaVerified => "user.mfa_verified",
    /// A wrong or replayed second-factor code.
    UserMfaFailed => "user.mfa_failed",
    UserMfaRecoveryCodesRegenerated => "user.mfa_recovery_codes_regenerated",
    /// A recovery code used as the second factor (a success).
    UserMfaRecoveryCodeUsed => "user.mfa_recovery_code_used",
    UserMfaReset => "user.mfa_reset",
    UserMfaLocked => "user.mfa_locked",
    /// Retention removed the oldest entries: the anchor that says where the kept chain begins.
    AuditPruned => "audit.pruned",
}

impl AuditAction {
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|action| action.as_str() == value)
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `result` column: whether what the entry records succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AuditResult {
    #[default]
    Success,
    Failure,
}

impl AuditResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Success => "success",
            AuditResult::Failure => "failure",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [AuditResult::Success, AuditResult::Failure].into_iter().find(|r| r.as_str() == value)
    }
}

/// One event to record, built with [`AuditEvent::new`] and the setters below; [`chain::append`]
/// gives it its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub action: AuditAction,
    /// `admin`, `client:<id>`, `user:<id>`, `cli`, `system`, `anonymous` …
    pub actor: String,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub result: AuditResult,
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
            user_agent: None,
            request_id: None,
            result: AuditResult::Success,
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

    /// Where the request came from: IP, user agent, request id.
    pub fn from_request(mut self, meta: &RequestMeta) -> Self {
        self.ip.clone_from(&meta.ip);
        self.user_agent.clone_from(&meta.user_agent);
        self.request_id.clone_from(&meta.request_id);
        self
    }

    /// Marks what the entry records as failed (`result` = `failure`).
    pub fn failed(mut self) -> Self {
        self.result = AuditResult::Failure;
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// The `details` column: the JSON text, `{}` for none.
    pub fn details_text(&self) -> String {
        if self.details.is_null() { "{}".to_string() } else { self.details.to_string() }
    }
}

/// One stored row of `audit_events`. `seq`, `prev_hash` and `hash` are `None` only for entries
/// written before the chain existed and not yet chained, or inserted outside Truxe.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, serde::Serialize)]
#[diesel(table_name = audit_events, treat_none_as_default_value = false)]
pub struct AuditEntry {
    pub seq: Option<i64>,
    pub event_id: String,
    pub occurred_at: i64,
    pub action: String,
    pub actor: String,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub result: String,
    pub details: String,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// Appends `event` (that happened at `now`) to the chain on `conn`, inside the caller's
/// transaction when there is one, so that the entry exists exactly when the change it records
/// does; logs it (when the entry is appended: should the caller's transaction then fail to
/// commit, the line has no row). For events on a hot path use `audit::AuditLog`, which batches.
pub fn record(conn: &mut AnyConnection, event: &AuditEvent, now: i64) -> Result<(), StoreError> {
    for entry in append(conn, std::slice::from_ref(&(event.clone(), now)))? {
        log(&entry);
    }
    Ok(())
}

/// The structured log line of a stored entry (target [`LOG_TARGET`]). Entries never hold a
/// secret, so everything but the user agent (noise in a log line) goes out.
pub fn log(entry: &AuditEntry) {
    tracing::info!(
        target: LOG_TARGET,
        seq = entry.seq,
        event_id = %entry.event_id,
        occurred_at = entry.occurred_at,
        action = %entry.action,
        actor = %entry.actor,
        subject = entry.subject.as_deref(),
        client_id = entry.client_id.as_deref(),
        user_id = entry.user_id.as_deref(),
        ip = entry.ip.as_deref(),
        request_id = entry.request_id.as_deref(),
        result = %entry.result,
        details = %entry.details,
        hash = entry.hash.as_deref(),
        "audit"
    );
}

/// The entry with `event_id`, for tests and `truxectl`.
pub fn find(conn: &mut AnyConnection, event_id: &str) -> Result<Option<AuditEntry>, StoreError> {
    Ok(audit_events::table
        .filter(audit_events::event_id.eq(event_id))
        .select(AuditEntry::as_select())
        .first(conn)
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
            assert!(seen.insert(action.as_str()), "{action} twice");
            assert!(action.as_str().contains('.') && !action.as_str().contains('*'), "{action}");
        }
        assert_eq!(AuditAction::parse("token.minted"), None);
        assert_eq!(AuditResult::parse("failure"), Some(AuditResult::Failure));
        assert_eq!(AuditResult::parse("maybe"), None);
    }

    #[test]
    fn request_metadata_and_result_are_carried() {
        let meta = RequestMeta::new(Some("192.0.2.1".into()), Some("req-1".into()), Some("curl/8"));
        let event = AuditEvent::by_client(AuditAction::ClientAuthenticationFailed, "cl_a").from_request(&meta).failed();
        assert_eq!(event.ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(event.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(event.request_id.as_deref(), Some("req-1"));
        assert_eq!(event.result, AuditResult::Failure);
        assert_eq!(event.details_text(), "{}");
    }
}
