//! The `signing_keys` table: the public half of every key that has signed tokens.

use diesel::prelude::*;

use super::schema::signing_keys;
use super::{AnyConnection, StoreError};

/// Records a key's public half the first time the server signs with it. Idempotent, and safe
/// when several instances start at once (a lost insert race is not an error).
pub fn record(
    conn: &mut AnyConnection,
    kid: &str,
    algorithm: &str,
    public_pem: &str,
    now: i64,
) -> Result<(), StoreError> {
    let exists = signing_keys::table.filter(signing_keys::kid.eq(kid)).count().get_result::<i64>(conn)? > 0;
    if exists {
        return Ok(());
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
        Ok(_) => Ok(()),
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// When `kid` was first recorded (Unix seconds), if it was.
pub fn created_at(conn: &mut AnyConnection, kid: &str) -> Result<Option<i64>, StoreError> {
    Ok(signing_keys::table
        .filter(signing_keys::kid.eq(kid))
        .select(signing_keys::created_at)
        .first::<i64>(conn)
        .optional()?)
}
