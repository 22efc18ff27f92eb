//! Which server instances share this database: each names its PostgreSQL connections
//! `truxe-server/<instance uuid>` (`application_name`), so that one can count the others in
//! `pg_stat_activity`. SQLite is one file on one host, used by one instance.

use diesel::prelude::*;

use super::{AnyConnection, StoreError};

/// Every server instance's connections are named this, then the instance's uuid.
pub const APPLICATION_NAME_PREFIX: &str = "truxe-server/";

/// A new instance's `application_name`.
pub fn new_application_name() -> String {
    format!("{APPLICATION_NAME_PREFIX}{}", uuid::Uuid::new_v4())
}

/// How many other instances hold connections to this database now (0 on SQLite).
pub fn others(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    let AnyConnection::Postgresql(pg) = conn else {
        return Ok(0);
    };
    let query = format!(
        "(SELECT COUNT(DISTINCT application_name) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name LIKE '{APPLICATION_NAME_PREFIX}%' \
         AND application_name <> current_setting('application_name'))"
    );
    Ok(diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&query)).get_result(pg)?)
}
