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

/// The file beside a SQLite database on which a running server holds a shared lock
/// ([`SqliteInstanceLock`]): `truxectl backup restore` tries an exclusive one to tell whether a
/// server is running on that database (SQLite has no `pg_stat_activity` to ask).
pub fn sqlite_lock_path(database: &std::path::Path) -> std::path::PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-truxe-server.lock");
    std::path::PathBuf::from(name)
}

/// Held (a shared `flock`) for as long as a server runs on a SQLite database; released when
/// dropped or when the process ends, however it ends.
#[derive(Debug)]
pub struct SqliteInstanceLock {
    _file: std::fs::File,
}

impl SqliteInstanceLock {
    /// Takes the shared lock; waits while `truxectl backup restore` holds the exclusive one, so
    /// that a server started during a restore opens the restored database, not the old one.
    pub fn acquire(database: &std::path::Path) -> Result<Self, StoreError> {
        let path = sqlite_lock_path(database);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory { path: dir.to_path_buf(), source })?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| StoreError::InstanceLock { path: path.clone(), source })?;
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::warn!(lock = %path.display(), "a `truxectl backup restore` is replacing this database; waiting for it to finish");
                file.lock_shared().map_err(|source| StoreError::InstanceLock { path: path.clone(), source })?;
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(StoreError::InstanceLock { path, source }),
        }
        Ok(SqliteInstanceLock { _file: file })
    }
}
