//! The `magic_links` table: sign-in links sent by email, stored as a hash of their token.

use diesel::dsl::count_star;
use diesel::prelude::*;

use super::schema::magic_links;
use super::{AnyConnection, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = magic_links)]
pub struct MagicLink {
    /// A keyed hash of the token in the link; the token itself is never stored.
    pub token_hash: String,
    /// The normalised address the link was sent to.
    pub email: String,
    /// `None` when the address had no account when the link was sent.
    pub user_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
    /// Where to continue after sign-in (e.g. the pending authorization request).
    pub return_to: Option<String>,
    /// The client IP that asked for the link.
    pub ip: Option<String>,
}

impl MagicLink {
    pub fn is_usable(&self, now: i64) -> bool {
        self.consumed_at.is_none() && now < self.expires_at
    }
}

pub fn insert(conn: &mut AnyConnection, link: &MagicLink) -> Result<(), StoreError> {
    diesel::insert_into(magic_links::table).values(link).execute(conn)?;
    Ok(())
}

/// Looks a link up without using it (the "Continue" page that survives mail scanners).
pub fn find(conn: &mut AnyConnection, token_hash: &str) -> Result<Option<MagicLink>, StoreError> {
    Ok(magic_links::table
        .filter(magic_links::token_hash.eq(token_hash))
        .select(MagicLink::as_select())
        .first(conn)
        .optional()?)
}

/// Uses a link once: one conditional `UPDATE`, so of concurrent redemptions exactly one gets
/// the link back; `None` when it is unknown, expired or already used.
pub fn consume(conn: &mut AnyConnection, token_hash: &str, now: i64) -> Result<Option<MagicLink>, StoreError> {
    let changed = diesel::update(
        magic_links::table
            .filter(magic_links::token_hash.eq(token_hash))
            .filter(magic_links::consumed_at.is_null())
            .filter(magic_links::expires_at.gt(now)),
    )
    .set(magic_links::consumed_at.eq(now))
    .execute(conn)?;
    if changed != 1 {
        return Ok(None);
    }
    find(conn, token_hash)
}

/// How many links were sent to this address since `since` (per-address rate limiting).
pub fn count_sent_since(conn: &mut AnyConnection, email: &str, since: i64) -> Result<i64, StoreError> {
    Ok(magic_links::table
        .filter(magic_links::email.eq(email))
        .filter(magic_links::created_at.ge(since))
        .select(count_star())
        .first(conn)?)
}

/// Removes links that can no longer be used; returns how many.
pub fn delete_expired(conn: &mut AnyConnection, now: i64) -> Result<usize, StoreError> {
    Ok(diesel::delete(magic_links::table.filter(magic_links::expires_at.le(now))).execute(conn)?)
}
