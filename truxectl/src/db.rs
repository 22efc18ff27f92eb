//! Finding and opening the database the way truxe-server does (same variables, same defaults).

use anyhow::Context;
use truxe_server::config::{self, DatabaseConfig, DatabaseUrl};
use truxe_server::store::{self, AnyConnection, PooledConnection};

use crate::Global;

/// The server's configuration, read from the same sources as the server. Production-only
/// requirements (keys, SMTP …) are the server's business, not the CLI's.
pub fn server_config(global: &Global) -> anyhow::Result<config::Config> {
    let lookup = config::layered_lookup(global.env_file.as_deref())?;
    Ok(config::Config::from_lookup(&|name: &str| match name {
        "NODE_ENV" | "TRUXE_ENV" => None,
        _ => lookup(name),
    })?)
}

/// The database settings from `--database-url`, else the server's configuration sources.
pub fn database_config(global: &Global) -> anyhow::Result<DatabaseConfig> {
    for_cli(server_config(global)?.database, global)
}

/// `database` (from [`server_config`]) as the CLI uses it: `--database-url` wins, one connection.
///
/// In production mode (`TRUXE_ENV`/`NODE_ENV=production`, as the systemd units set it) the
/// embedded SQLite default is refused, as the server refuses it: `ExecStartPre=truxectl migrate`
/// with an unfilled env file must not create and migrate a stray database in the data directory.
pub fn for_cli(mut database: DatabaseConfig, global: &Global) -> anyhow::Result<DatabaseConfig> {
    if let Some(url) = &global.database_url {
        database.url = DatabaseUrl::parse(url).map_err(|e| anyhow::anyhow!("--database-url: {e}"))?;
        database.is_embedded_default = false;
    }
    if database.is_embedded_default && production_mode(global)? {
        return Err(config::ConfigErrors(vec![
            "DATABASE_URL: required in production (TRUXE_ENV or NODE_ENV is production, and the embedded SQLite \
             database is a development shortcut); set it, or pass --database-url"
                .to_string(),
        ])
        .into());
    }
    // One connection, opened on demand: a pool that fills itself from background threads can
    // still be inside libpq (and its Kerberos library) while the process exits, which aborts it.
    database.pool_min = 0;
    database.pool_max = 1;
    Ok(database)
}

/// Whether the configuration sources put the server into production mode.
fn production_mode(global: &Global) -> anyhow::Result<bool> {
    let lookup = config::layered_lookup(global.env_file.as_deref())?;
    Ok(["NODE_ENV", "TRUXE_ENV"].iter().any(|name| lookup(name).is_some_and(|v| v.eq_ignore_ascii_case("production"))))
}

pub fn connect(global: &Global) -> anyhow::Result<(DatabaseConfig, PooledConnection)> {
    let database = database_config(global)?;
    let pool = store::connect(&database)?;
    let conn = pool.get().with_context(|| format!("cannot open {}", database.url.redacted()))?;
    Ok((database, conn))
}

/// Serialises concurrent `truxectl migrate` runs on PostgreSQL (SQLite locks the file itself).
pub fn with_migration_lock<T>(
    conn: &mut AnyConnection,
    work: impl FnOnce(&mut AnyConnection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    use diesel::connection::SimpleConnection;
    let is_pg = matches!(conn, AnyConnection::Postgresql(_));
    if is_pg {
        conn.batch_execute("SELECT pg_advisory_lock(7305786417)")?;
    }
    let result = work(conn);
    if is_pg {
        conn.batch_execute("SELECT pg_advisory_unlock(7305786417)")?;
    }
    result
}
