//! The hourly purge of rows nothing can use any more (run by `startup`'s housekeeping task).
//!
//! What is kept, and why:
//! - magic links and authorization codes: a day after they expired, so that a late click or a
//!   replayed code is refused as "expired" or "used" (and a replay still revokes its grant);
//! - sessions: 30 days after they ended, for `truxectl users sessions --all`;
//! - revoked access tokens (`oauth_tokens` rows by `jti`): a day after the token expired; once
//!   its JWT has expired nothing accepts it, the row is evidence only;
//! - grants with their refresh tokens, rotated and revoked ones included: while the family can
//!   live (`REFRESH_TOKEN_MAX_AGE` from the code exchange), and a day beyond, or until the last
//!   access token the grant issued has expired when access tokens live longer than a day.
//!   Reuse detection needs every rotated token of a live family: presenting one revokes the
//!   family. Once the family has ended, none of its tokens can be used, and a replay of one is
//!   refused as unknown instead of as reused.

use super::{AnyConnection, StoreError, grants, magic_links, sessions, tokens};

/// Magic links, authorization codes, revoked access tokens and ended grant families are kept
/// this long after they expired: until then a late click or a replayed code is refused as
/// "expired" or "used", not as unknown.
pub const EXPIRED_KEPT_SECS: i64 = 86_400;
/// Sessions are kept this long after they expired or were revoked, for
/// `truxectl users sessions --all`.
pub const ENDED_SESSIONS_KEPT_SECS: i64 = 30 * 86_400;
/// Rows deleted per statement, so that the purge never holds SQLite's write lock for long.
pub const BATCH: i64 = 1_000;

/// The lifetimes the purge must respect (from the configuration, in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `REFRESH_TOKEN_MAX_AGE`: how long a grant's refresh-token family lives.
    pub refresh_family_ttl: i64,
    /// `ACCESS_TOKEN_EXPIRY`: the longest an access token lives.
    pub access_token_ttl: i64,
}

impl Retention {
    /// Grants (with their refresh tokens) created before this instant may go.
    pub fn grants_created_before(&self, now: i64) -> i64 {
        now.saturating_sub(self.refresh_family_ttl).saturating_sub(EXPIRED_KEPT_SECS.max(self.access_token_ttl))
    }
}

/// How many rows one [`purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub magic_links: usize,
    pub sessions: usize,
    pub authorization_codes: usize,
    /// Rows of revoked access tokens whose JWT expired.
    pub access_tokens: usize,
    /// Grants whose family ended, each with its refresh tokens.
    pub grants: usize,
}

impl Purged {
    pub fn is_empty(&self) -> bool {
        *self == Purged::default()
    }
}

/// Removes what the module documentation lists; live rows, and recently ended ones, stay.
pub fn purge(conn: &mut AnyConnection, now: i64, retention: &Retention) -> Result<Purged, StoreError> {
    let expired_before = now.saturating_sub(EXPIRED_KEPT_SECS);
    Ok(Purged {
        magic_links: magic_links::delete_expired(conn, expired_before)?,
        sessions: sessions::delete_stale(conn, now.saturating_sub(ENDED_SESSIONS_KEPT_SECS))?,
        authorization_codes: grants::delete_expired_codes(conn, expired_before)?,
        access_tokens: tokens::delete_expired_without_grant(conn, expired_before)?,
        grants: grants::delete_grants_created_before(conn, retention.grants_created_before(now))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_outlive_their_family_and_their_last_access_token() {
        let day = 86_400;
        let retention = Retention { refresh_family_ttl: 30 * day, access_token_ttl: 900 };
        assert_eq!(retention.grants_created_before(100 * day), 100 * day - 31 * day);
        let long_access = Retention { refresh_family_ttl: 30 * day, access_token_ttl: 2 * day };
        assert_eq!(long_access.grants_created_before(100 * day), 100 * day - 32 * day);
        let huge = Retention { refresh_family_ttl: i64::MAX, access_token_ttl: i64::MAX };
        assert_eq!(huge.grants_created_before(100 * day), i64::MIN, "saturates: nothing is ever old enough");
    }
}
