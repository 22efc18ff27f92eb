//! The `audit_events` table: who did what, when, from where. Never secrets or tokens.

use diesel::prelude::*;

use super::schema::audit_events;
use super::{AnyConnection, StoreError};

#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    pub action: String,
    /// `admin`, `client:<id>`, `user:<id>`, `cli` …
    pub actor: String,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
}

pub fn record(conn: &mut AnyConnection, event: &AuditEvent, now: i64) -> Result<(), StoreError> {
    let details = if event.details.is_null() { "{}".to_string() } else { event.details.to_string() };
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::event_id.eq(uuid::Uuid::now_v7().to_string()),
            audit_events::occurred_at.eq(now),
            audit_events::action.eq(&event.action),
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
