//! A user's consents: list them, and withdraw one (which also revokes what the client holds
//! for that user: every grant, with its refresh and access tokens).

use diesel::Connection;
use serde::Serialize;

use crate::store::audit::{self, AuditAction, AuditEvent};
use crate::store::consents as consent_store;
use crate::store::grants as grant_store;
use crate::store::{AnyConnection, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentView {
    pub client_id: crate::model::ClientId,
    pub client_name: String,
    /// Space-separated scope tokens.
    pub scope: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A user's consents, by client name.
pub fn list_for_user(conn: &mut AnyConnection, user_id: &str) -> Result<Vec<ConsentView>, StoreError> {
    Ok(consent_store::list_for_user(conn, user_id)?
        .into_iter()
        .map(|(consent, client_name)| ConsentView {
            client_id: consent.client_id,
            client_name,
            scope: consent.scope,
            created_at: consent.created_at,
            updated_at: consent.updated_at,
        })
        .collect())
}

/// What withdrawing a consent did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Withdrawn {
    /// Whether there was a consent on record.
    pub consent: bool,
    /// How many live grants (token families) were revoked.
    pub grants_revoked: usize,
}

/// Withdraws the user's consent for `client_id` and revokes the client's grants for the user, so
/// that its refresh tokens stop working and its access tokens become inactive. Audited as
/// `consent.withdrawn` by `actor`.
pub fn withdraw(
    conn: &mut AnyConnection,
    user_id: &str,
    client_id: &str,
    actor: &str,
    now: i64,
) -> Result<Withdrawn, StoreError> {
    conn.transaction(|conn| {
        let consent = consent_store::delete(conn, user_id, client_id)?;
        // Codes not yet exchanged would otherwise mint a new grant after the withdrawal.
        grant_store::void_open_codes(conn, user_id, client_id, now)?;
        let mut grants_revoked = 0;
        for grant_id in grant_store::live_grant_ids(conn, user_id, client_id)? {
            if grant_store::revoke_grant(conn, &grant_id, now)? {
                grants_revoked += 1;
            }
        }
        if consent || grants_revoked > 0 {
            audit::record(
                conn,
                &AuditEvent::new(AuditAction::ConsentWithdrawn, actor)
                    .subject(client_id)
                    .client(client_id)
                    .user(user_id)
                    .details(serde_json::json!({ "consent": consent, "grants_revoked": grants_revoked })),
                now,
            )?;
        }
        Ok(Withdrawn { consent, grants_revoked })
    })
}
