//! Embedded schema migrations: one directory per backend, the same versions in both.

use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{AnyConnection, StoreError};

pub const POSTGRES: EmbeddedMigrations = embed_migrations!("../migrations/postgres");
pub const SQLITE: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");

type MultiBackend = <AnyConnection as diesel::Connection>::Backend;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationState {
    pub version: String,
    pub name: String,
    pub applied: bool,
}

fn source(conn: &AnyConnection) -> EmbeddedMigrations {
    match conn {
        AnyConnection::Postgresql(_) => POSTGRES,
        AnyConnection::Sqlite(_) => SQLITE,
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Migration(e.to_string())
}

/// Every migration this build knows, in order, with whether the database has applied it.
pub fn status(conn: &mut AnyConnection) -> Result<Vec<MigrationState>, StoreError> {
    let source = source(conn);
    let applied: Vec<String> = conn.applied_migrations().map_err(err)?.into_iter().map(|v| v.to_string()).collect();
    let known = diesel::migration::MigrationSource::<MultiBackend>::migrations(&source).map_err(err)?;
    let mut states: Vec<MigrationState> = known
        .iter()
        .map(|m| {
            let full = m.name().to_string();
            let version = m.name().version().to_string();
            let name = full.strip_prefix(&version).unwrap_or(&full).trim_start_matches('_').to_string();
            let applied = applied.contains(&version);
            MigrationState { version, name, applied }
        })
        .collect();
    states.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(states)
}

pub fn pending(conn: &mut AnyConnection) -> Result<Vec<MigrationState>, StoreError> {
    Ok(status(conn)?.into_iter().filter(|m| !m.applied).collect())
}

/// Applies the next pending migration (in its own transaction); `None` when up to date.
pub fn apply_next(conn: &mut AnyConnection) -> Result<Option<String>, StoreError> {
    let Some(next) = pending(conn)?.into_iter().next() else {
        return Ok(None);
    };
    let source = source(conn);
    let migration = diesel::migration::MigrationSource::<MultiBackend>::migrations(&source)
        .map_err(err)?
        .into_iter()
        .find(|m| m.name().version().to_string() == next.version)
        .ok_or_else(|| err(format!("migration {} disappeared", next.version)))?;
    conn.run_migration(&*migration).map_err(err)?;
    Ok(Some(migration.name().to_string()))
}

/// Applies everything pending; returns the names applied.
pub fn apply_all(conn: &mut AnyConnection) -> Result<Vec<String>, StoreError> {
    let source = source(conn);
    Ok(conn.run_pending_migrations(source).map_err(err)?.into_iter().map(|v| v.to_string()).collect())
}

/// Reverts the most recently applied migration; `None` when nothing is applied.
pub fn revert_last(conn: &mut AnyConnection) -> Result<Option<String>, StoreError> {
    if conn.applied_migrations().map_err(err)?.is_empty() {
        return Ok(None);
    }
    let source = source(conn);
    Ok(Some(conn.revert_last_migration(source).map_err(err)?.to_string()))
}
