//! The hourly purge of rows nothing can use any more (run by `startup`'s housekeeping task).

use super::{AnyConnection, StoreError, grants, magic_links, sessions};

/// Magic links and authorization codes are kept this long after they expired: until then a
/// late click or a replayed code is refused as "expired" or "used", not as unknown.
pub const EXPIRED_KEPT_SECS: i64 = 86_400;
/// Sessions are kept this long after they expired or were revoked, for
/// `truxectl users sessions --all`.
pub const ENDED_SESSIONS_KEPT_SECS: i64 = 30 * 86_400;

/// How many rows one [`purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub magic_links: usize,
    pub sessions: usize,
    pub authorization_codes: usize,
}

impl Purged {
    pub fn is_empty(&self) -> bool {
        *self == Purged::default()
    }
}

/// Removes magic links and authorization codes that expired more than
/// [`EXPIRED_KEPT_SECS`] before `now`, and sessions that expired or were revoked more than
/// [`ENDED_SESSIONS_KEPT_SECS`] before `now`. Live rows, and recently ended ones, stay.
pub fn purge(conn: &mut AnyConnection, now: i64) -> Result<Purged, StoreError> {
    Ok(Purged {
        magic_links: magic_links::delete_expired(conn, now - EXPIRED_KEPT_SECS)?,
        sessions: sessions::delete_stale(conn, now - ENDED_SESSIONS_KEPT_SECS)?,
        authorization_codes: grants::delete_expired_codes(conn, now - EXPIRED_KEPT_SECS)?,
    })
}
