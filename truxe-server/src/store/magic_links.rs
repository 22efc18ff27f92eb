//! The `magic_links` table: sign-in links sent by email, stored as a hash of their token.

use diesel::dsl::count_star;
use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::schema::magic_links;
use super::{AnyConnection, StoreError};
use crate::model::UserId;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = magic_links)]
pub struct MagicLink {
    /// A keyed hash of the token in the link; the token itself is never stored.
    pub token_hash: String,
    /// The normalised address the link was sent to.
    pub email: String,
    /// `None` when the address had no account when the link was sent.
    pub user_id: Option<UserId>,
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

/// Marks every unused link to this address used (its account was disabled or deleted), so
/// that none of them works if the account comes back. Returns how many.
pub fn void_open_for_email(conn: &mut AnyConnection, email: &str, now: i64) -> Result<usize, StoreError> {
    Ok(diesel::update(
        magic_links::table.filter(magic_links::email.eq(email)).filter(magic_links::consumed_at.is_null()),
    )
    .set(magic_links::consumed_at.eq(now))
    .execute(conn)?)
}

/// A per-address limit: at most `max` links created in the last `window_secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressLimit {
    pub max: i64,
    pub window_secs: i64,
}

/// What [`insert_within_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Inserted,
    /// The address had its `max` links in the window already; nothing was stored.
    OverLimit,
}

/// Stores `link` unless its address is over `limit` (`None`: no limit), atomically: of any
/// number of concurrent calls for one address, at most `max` per window insert.
///
/// One transaction that inserts first, then counts (its own row included) and rolls back when
/// the count is over the limit. On SQLite the insert takes the database's write lock until the
/// commit, so the count sees every other insert for the address that could still commit; on
/// PostgreSQL a transaction-scoped advisory lock on the address, taken before the insert, does
/// the same for that address only (under READ COMMITTED two inserting transactions would not
/// see each other's uncommitted rows).
pub fn insert_within_limit(
    conn: &mut AnyConnection,
    link: &MagicLink,
    limit: Option<AddressLimit>,
) -> Result<Limited, StoreError> {
    let Some(limit) = limit else {
        insert(conn, link)?;
        return Ok(Limited::Inserted);
    };
    let stored = super::transaction(conn, |conn| {
        lock_address(conn, &link.email)?;
        insert(conn, link)?;
        let count = count_sent_since(conn, &link.email, link.created_at.saturating_sub(limit.window_secs))?;
        if count > limit.max {
            return Err(super::Rollback::Abort(Limited::OverLimit));
        }
        Ok(Limited::Inserted)
    })?;
    Ok(stored.unwrap_or_else(|over| over))
}

/// PostgreSQL: serialises link requests for one address until the transaction ends
/// (`pg_advisory_xact_lock` on a 64-bit key derived from the address). SQLite needs nothing:
/// its write lock serialises every writer.
fn lock_address(conn: &mut AnyConnection, email: &str) -> Result<(), StoreError> {
    if let AnyConnection::Postgresql(pg) = conn {
        let digest = Sha256::digest(format!("truxe magic_links address\0{email}").as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<diesel::sql_types::BigInt, _>(i64::from_be_bytes(first))
            .execute(pg)?;
    }
    Ok(())
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
