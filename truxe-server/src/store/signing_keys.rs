//! The `signing_keys` table: the public half of every key that has signed tokens.

use diesel::prelude::*;

use super::schema::signing_keys;
use super::{AnyConnection, StoreError};

/// Records a key's public half the first time the server signs with it; `true` when this call
/// stored it. Idempotent, and safe when several instances start at once (a lost insert race is
/// not an error, and not this call's key).
pub fn record(
    conn: &mut AnyConnection,
    kid: &str,
    algorithm: &str,
    public_pem: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let exists = signing_keys::table.filter(signing_keys::kid.eq(kid)).count().get_result::<i64>(conn)? > 0;
    if exists {
        return Ok(false);
    }
    let inserted = diesel::insert_into(signing_keys::table)
        .values((
            signing_keys::kid.eq(kid),
            signing_keys::algorithm.eq(algorithm),
            signing_keys::public_pem.eq(public_pem),
            signing_keys::created_at.eq(now),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(true),
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
