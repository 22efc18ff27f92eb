//! The `server_secrets` table: keys every instance must share, generated on first use.

use base64::Engine;
use diesel::prelude::*;

use super::schema::server_secrets;
use super::{AnyConnection, StoreError};
use crate::secret::Secret;

pub const CLIENT_SECRET_HMAC_KEY: &str = "client_secret_hmac_key";

/// Returns the named 256-bit key, creating it if absent. Instances starting together agree:
/// a lost insert race reads the winner's key.
pub fn load_or_create(conn: &mut AnyConnection, name: &str, now: i64) -> Result<Secret<Vec<u8>>, StoreError> {
    if let Some(key) = load(conn, name)? {
        return Ok(key);
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let inserted = diesel::insert_into(server_secrets::table)
        .values((server_secrets::name.eq(name), server_secrets::value.eq(&encoded), server_secrets::created_at.eq(now)))
        .execute(conn);
    match inserted {
        Ok(_) => {}
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {}
        Err(e) => return Err(e.into()),
    }
    load(conn, name)?.ok_or_else(|| StoreError::Corrupt(format!("server secret {name} vanished after insert")))
}

fn load(conn: &mut AnyConnection, name: &str) -> Result<Option<Secret<Vec<u8>>>, StoreError> {
    let value: Option<String> = server_secrets::table
        .filter(server_secrets::name.eq(name))
        .select(server_secrets::value)
        .first(conn)
        .optional()?;
    value
        .map(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .map(Secret::new)
                .map_err(|_| StoreError::Corrupt(format!("server secret {name} is not base64")))
        })
        .transpose()
}
