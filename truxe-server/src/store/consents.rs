//! The `oauth_consents` table: which scopes a user allowed a client, one row per (user, client).

use diesel::prelude::*;

use super::schema::{oauth_clients, oauth_consents};
use super::{AnyConnection, StoreError};
use crate::model::{ClientId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = oauth_consents)]
pub struct Consent {
    pub user_id: UserId,
    pub client_id: ClientId,
    /// Space-separated scope tokens.
    pub scope: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn find(conn: &mut AnyConnection, user_id: &str, client_id: &str) -> Result<Option<Consent>, StoreError> {
    Ok(oauth_consents::table
        .filter(oauth_consents::user_id.eq(user_id))
        .filter(oauth_consents::client_id.eq(client_id))
        .select(Consent::as_select())
        .first(conn)
        .optional()?)
}

pub fn insert(conn: &mut AnyConnection, consent: &Consent) -> Result<(), StoreError> {
    diesel::insert_into(oauth_consents::table).values(consent).execute(conn)?;
    Ok(())
}

/// Replaces the scope when it is still `expected` (compare-and-set); `false` when another
/// request changed the row (or deleted it) meanwhile.
pub fn replace_scope(
    conn: &mut AnyConnection,
    user_id: &str,
    client_id: &str,
    expected: &str,
    scope: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let updated = diesel::update(
        oauth_consents::table
            .filter(oauth_consents::user_id.eq(user_id))
            .filter(oauth_consents::client_id.eq(client_id))
            .filter(oauth_consents::scope.eq(expected)),
    )
    .set((oauth_consents::scope.eq(scope), oauth_consents::updated_at.eq(now)))
    .execute(conn)?;
    Ok(updated == 1)
}

pub fn delete(conn: &mut AnyConnection, user_id: &str, client_id: &str) -> Result<bool, StoreError> {
    let deleted = diesel::delete(
        oauth_consents::table
            .filter(oauth_consents::user_id.eq(user_id))
            .filter(oauth_consents::client_id.eq(client_id)),
    )
    .execute(conn)?;
    Ok(deleted == 1)
}

/// A user's consents with the client's name, by client name.
pub fn list_for_user(conn: &mut AnyConnection, user_id: &str) -> Result<Vec<(Consent, String)>, StoreError> {
    Ok(oauth_consents::table
        .inner_join(oauth_clients::table.on(oauth_clients::client_id.eq(oauth_consents::client_id)))
        .filter(oauth_consents::user_id.eq(user_id))
        .order((oauth_clients::client_name.asc(), oauth_consents::client_id.asc()))
        .select((Consent::as_select(), oauth_clients::client_name))
        .load(conn)?)
}
