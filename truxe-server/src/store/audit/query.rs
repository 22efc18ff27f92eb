//! Listing audit entries by user, client, event and time (`truxectl audit list`), newest first.

use diesel::prelude::*;

use super::AuditEntry;
use crate::store::schema::audit_events;
use crate::store::{AnyConnection, StoreError};

/// At most this many entries per listing.
pub const MAX_LIMIT: i64 = 10_000;

/// Which events: an exact action (`token.issued`) or every action that starts with a prefix
/// (`user.mfa*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    Exact(String),
    Prefix(String),
}

impl EventFilter {
    /// `name` or `prefix*`. The caller checks exact names against `AuditAction`.
    pub fn parse(value: &str) -> Self {
        match value.strip_suffix('*') {
            Some(prefix) => EventFilter::Prefix(prefix.to_string()),
            None => EventFilter::Exact(value.to_string()),
        }
    }
}

/// Every criterion is optional; `limit` is 1 to [`MAX_LIMIT`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub event: Option<EventFilter>,
    /// Entries that happened at or after this instant (Unix seconds).
    pub since: Option<i64>,
    pub limit: i64,
}

/// `\`, `%` and `_` escaped for a `LIKE … ESCAPE '\'` pattern.
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The entries that match `filter`, newest first (by time, then by id, which is time-ordered:
/// entries not in the chain are listed too).
pub fn list(conn: &mut AnyConnection, filter: &Filter) -> Result<Vec<AuditEntry>, StoreError> {
    let mut query = audit_events::table.select(AuditEntry::as_select()).into_boxed();
    if let Some(user_id) = &filter.user_id {
        query = query.filter(audit_events::user_id.eq(user_id.clone()));
    }
    if let Some(client_id) = &filter.client_id {
        query = query.filter(audit_events::client_id.eq(client_id.clone()));
    }
    match &filter.event {
        Some(EventFilter::Exact(action)) => query = query.filter(audit_events::action.eq(action.clone())),
        Some(EventFilter::Prefix(prefix)) => {
            query = query.filter(audit_events::action.like(like_prefix(prefix)).escape('\\'));
        }
        None => {}
    }
    if let Some(since) = filter.since {
        query = query.filter(audit_events::occurred_at.ge(since));
    }
    Ok(query
        .order((audit_events::occurred_at.desc(), audit_events::event_id.desc()))
        .limit(filter.limit.clamp(1, MAX_LIMIT))
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_filters_and_like_patterns() {
        assert_eq!(EventFilter::parse("token.issued"), EventFilter::Exact("token.issued".into()));
        assert_eq!(EventFilter::parse("user.mfa*"), EventFilter::Prefix("user.mfa".into()));
        assert_eq!(like_prefix("user.mfa_"), r"user.mfa\_%");
        assert_eq!(like_prefix(r"a%b\"), r"a\%b\\%");
    }
}
