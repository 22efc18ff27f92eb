//! Storage: one diesel code base over SQLite and PostgreSQL, the connection pool and migrations.

pub mod audit;
pub mod clients;
pub mod consents;
pub mod grants;
pub mod housekeeping;
pub mod instances;
pub mod magic_links;
pub mod mfa;
pub mod migrations;
pub mod redis;
pub mod schema;
pub mod server_secrets;
pub mod sessions;
pub mod signing_keys;
pub mod tokens;
pub mod users;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, CustomizeConnection, ManageConnection};

use crate::config::{DatabaseConfig, DatabaseUrl};

/// A connection to whichever backend `DATABASE_URL` names.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

impl AnyConnection {
    pub fn backend(&self) -> Backend {
        match self {
            AnyConnection::Postgresql(_) => Backend::Postgres,
            AnyConnection::Sqlite(_) => Backend::Sqlite,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgresql",
            Backend::Sqlite => "sqlite",
        }
    }
}

pub type Pool = r2d2::Pool<Manager>;
pub type PooledConnection = r2d2::PooledConnection<Manager>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database at {target} did not answer within {waited:?}: {last_error}")]
    Unreachable { target: String, waited: Duration, last_error: String },
    /// The server's certificate did not verify (or TLS failed otherwise): not retried, since
    /// waiting does not change a certificate.
    #[error(
        "database at {target}: the TLS connection was refused: {reason}. If the server's certificate is signed by a private CA, set DATABASE_SSL_CA to that CA's PEM file; for a self-signed certificate, DATABASE_SSL_REJECT_UNAUTHORIZED=false encrypts without verifying it"
    )]
    Tls { target: String, reason: String },
    #[error("cannot create the database directory {path}: {source}")]
    Directory { path: PathBuf, source: std::io::Error },
    #[error("cannot lock {path} (held while a server runs on this SQLite database): {source}")]
    InstanceLock { path: PathBuf, source: std::io::Error },
    #[error("database pool: {0}")]
    Pool(#[from] r2d2::PoolError),
    #[error("database: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("migrations: {0}")]
    Migration(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("the database task was cancelled")]
    Cancelled,
}

/// What a storage failure means to the one asking: the one classification every layer uses to
/// answer (`http::error` turns it into 503 or 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot be reached or has no room (pool exhausted or timed out, connection
    /// lost, disk full): worth a retry later.
    Unavailable,
    /// SQLite's lock was held past the busy timeout by another writer: worth a retry soon.
    Busy,
    /// A query failed or stored data is inconsistent: a defect, not the client's to retry.
    Internal,
}

impl StoreError {
    pub fn failure(&self) -> Failure {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StoreError::Pool(_) | StoreError::Unreachable { .. } | StoreError::Tls { .. } | StoreError::Cancelled => {
                Failure::Unavailable
            }
            StoreError::Query(Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _))
            | StoreError::Query(Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _))
            | StoreError::Query(Error::BrokenTransactionManager) => Failure::Unavailable,
            StoreError::Query(Error::DatabaseError(_, info)) => {
                let message = info.message();
                if message.contains("database is locked")
                    || message.contains("database is busy")
                    || message.contains("deadlock detected")
                    || message.contains("could not serialize access")
                {
                    Failure::Busy
                } else if message.contains("database or disk is full")
                    || message.contains("No space left on device")
                    || message.contains("terminating connection")
                    || message.contains("server closed the connection")
                    || message.contains("the database system is")
                    || message.contains("too many clients already")
                    || message.contains("canceling statement due to statement timeout")
                {
                    Failure::Unavailable
                } else {
                    Failure::Internal
                }
            }
            StoreError::Query(_)
            | StoreError::Directory { .. }
            | StoreError::InstanceLock { .. }
            | StoreError::Migration(_)
            | StoreError::Corrupt(_) => Failure::Internal,
        }
    }

    /// SQLite's "database is locked": another writer held the lock past the busy timeout.
    pub fn is_busy(&self) -> bool {
        self.failure() == Failure::Busy
    }
}

/// Why a [`transaction`] rolled back: for a reason of the caller's (`Abort`), or storage.
pub enum Rollback<R> {
    Abort(R),
    Store(StoreError),
}

impl<R> From<StoreError> for Rollback<R> {
    fn from(error: StoreError) -> Self {
        Rollback::Store(error)
    }
}

impl<R> From<diesel::result::Error> for Rollback<R> {
    fn from(error: diesel::result::Error) -> Self {
        Rollback::Store(StoreError::Query(error))
    }
}

/// Runs `work` in one transaction that it may roll back for a reason of its own
/// (`Err(Rollback::Abort(reason))`): the answer is `Ok(Err(reason))` then, so that losing a race
/// or finding a user disabled is a value, not a storage failure.
pub fn transaction<T, R>(
    conn: &mut AnyConnection,
    work: impl FnOnce(&mut AnyConnection) -> Result<T, Rollback<R>>,
) -> Result<Result<T, R>, StoreError> {
    match conn.transaction(work) {
        Ok(value) => Ok(Ok(value)),
        Err(Rollback::Abort(reason)) => Ok(Err(reason)),
        Err(Rollback::Store(error)) => Err(error),
    }
}

/// Where the pool connects; picks the backend from the URL scheme so that the real connection
/// error is kept (diesel's derived `establish` tries every backend and drops the errors).
#[derive(Clone, Debug)]
pub enum Target {
    Postgres(String),
    Sqlite(PathBuf),
}

impl Target {
    pub fn from_config(config: &DatabaseConfig) -> Self {
        match &config.url {
            DatabaseUrl::Sqlite(path) => Target::Sqlite(path.clone()),
            DatabaseUrl::Postgres(_) => Target::Postgres(
                config
                    .url
                    .postgres_connection_string(
                        config.ssl,
                        config.ssl_reject_unauthorized,
                        config.ssl_ca.as_ref().map(|ca| ca.path.as_path()),
                    )
                    .unwrap_or_default(),
            ),
        }
    }

    fn establish(&self) -> ConnectionResult<AnyConnection> {
        match self {
            Target::Postgres(url) => diesel::PgConnection::establish(url).map(AnyConnection::Postgresql),
            Target::Sqlite(path) => {
                diesel::SqliteConnection::establish(&path.to_string_lossy()).map(AnyConnection::Sqlite)
            }
        }
    }
}

pub struct Manager {
    target: Target,
}

impl ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, Self::Error> {
        self.target.establish().map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1").map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut AnyConnection) -> bool {
        false
    }
}

/// SQLite needs per-connection settings: wait on locks instead of failing, enforce foreign keys.
#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<AnyConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut AnyConnection) -> Result<(), diesel::r2d2::Error> {
        if let AnyConnection::Sqlite(c) = conn {
            c.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
                .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// PostgreSQL connections of a server instance carry its name ([`instances`]), so that the
/// instances on one database can count each other.
#[derive(Debug)]
struct ApplicationName(String);

impl CustomizeConnection<AnyConnection, diesel::r2d2::Error> for ApplicationName {
    fn on_acquire(&self, conn: &mut AnyConnection) -> Result<(), diesel::r2d2::Error> {
        if let AnyConnection::Postgresql(c) = conn {
            // Made by `instances::new_application_name`: no quote can be in it.
            c.batch_execute(&format!("SET application_name = '{}'", self.0))
                .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// Opens the pool, retrying until `DATABASE_CONNECTION_TIMEOUT` so that a server started with
/// its database (systemd, compose) does not die on the first refused connection.
pub fn connect(config: &DatabaseConfig) -> Result<Pool, StoreError> {
    connect_named(config, None)
}

/// [`connect`] for a server instance: its PostgreSQL connections are named `application_name`
/// (see [`instances`]).
pub fn connect_instance(config: &DatabaseConfig) -> Result<Pool, StoreError> {
    connect_named(config, Some(instances::new_application_name()))
}

fn connect_named(config: &DatabaseConfig, application_name: Option<String>) -> Result<Pool, StoreError> {
    let target = Target::from_config(config);
    if let Target::Sqlite(path) = &target {
        prepare_sqlite_file(path)?;
    }
    let started = Instant::now();
    let mut probe = loop {
        match target.establish() {
            Ok(conn) => break conn,
            Err(err) if is_tls_failure(&err.to_string()) => {
                return Err(StoreError::Tls { target: config.url.redacted(), reason: one_line(&err.to_string()) });
            }
            Err(err) if started.elapsed() >= config.connection_timeout => {
                return Err(StoreError::Unreachable {
                    target: config.url.redacted(),
                    waited: config.connection_timeout,
                    last_error: err.to_string().trim().to_string(),
                });
            }
            Err(err) => {
                tracing::warn!(target = %config.url.redacted(), error = %err.to_string().trim(), "database not reachable yet; retrying");
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    };
    if let AnyConnection::Sqlite(c) = &mut probe {
        // WAL persists in the file; switching needs an exclusive lock, so do it once, here,
        // before the pool opens its connections.
        c.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;")?;
    }
    drop(probe);

    let is_sqlite = matches!(target, Target::Sqlite(_));
    let builder = r2d2::Pool::builder()
        .max_size(config.pool_max.max(1))
        .min_idle(Some(config.pool_min.min(config.pool_max)))
        .idle_timeout(Some(config.idle_timeout.max(Duration::from_secs(1))))
        .connection_timeout(config.connection_timeout.max(Duration::from_millis(100)));
    // A SQLite connection is a file handle that cannot go stale, so skip r2d2's `SELECT 1` on
    // every checkout there; PostgreSQL keeps it, since a server restart breaks connections.
    let builder = if is_sqlite {
        builder.connection_customizer(Box::new(SqlitePragmas)).test_on_check_out(false)
    } else if let Some(name) = application_name {
        builder.connection_customizer(Box::new(ApplicationName(name)))
    } else {
        builder
    };
    // The probe proved the database answers; the pool fills its idle connections lazily.
    Ok(builder.build_unchecked(Manager { target }))
}

/// One connection without a pool (no background threads): for short-lived tools and tests
/// that must be done with the database when they return.
pub fn connect_one(config: &DatabaseConfig) -> Result<AnyConnection, StoreError> {
    let target = Target::from_config(config);
    if let Target::Sqlite(path) = &target {
        prepare_sqlite_file(path)?;
    }
    let mut conn = target.establish().map_err(|e| {
        let message = e.to_string();
        if is_tls_failure(&message) {
            StoreError::Tls { target: config.url.redacted(), reason: one_line(&message) }
        } else {
            StoreError::Unreachable {
                target: config.url.redacted(),
                waited: Duration::ZERO,
                last_error: one_line(&message),
            }
        }
    })?;
    if let AnyConnection::Sqlite(c) = &mut conn {
        c.batch_execute(
            "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
        )?;
    }
    Ok(conn)
}

/// libpq's messages for a TLS handshake that failed or a certificate that did not verify (they
/// name the host: `connection to server at "db" (10.0.0.5), port 5432 failed: SSL error: ...`).
fn is_tls_failure(message: &str) -> bool {
    [
        "SSL error",
        "certificate verify failed",
        "does not match host name",
        "root certificate file",
        "SSL SYSCALL error",
        "server does not support SSL",
        "could not read root certificate",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// libpq's multi-line messages on one line, for a log line or a start-up error.
fn one_line(message: &str) -> String {
    message.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

fn prepare_sqlite_file(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory { path: dir.to_path_buf(), source })?;
    }
    Ok(())
}

/// Runs blocking database work on tokio's blocking threads (never on the async workers),
/// inside the caller's tracing span.
pub async fn run<T, F>(pool: &Pool, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut AnyConnection) -> Result<T, StoreError> + Send + 'static,
{
    let pool = pool.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut conn = checkout(&pool)?;
        work(&mut conn)
    })
    .await
    .map_err(|_| StoreError::Cancelled)?
}

/// Checkouts waiting for a free connection right now (`truxe_db_pool_waiting`). One count per
/// process: a server has one pool.
static WAITING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A connection from `pool` (blocking until one is free, at most `DATABASE_CONNECTION_TIMEOUT`),
/// counted in [`waiting_for_connection`] while it waits.
pub fn checkout(pool: &Pool) -> Result<PooledConnection, r2d2::PoolError> {
    use std::sync::atomic::Ordering;
    // Without waiting when a connection is idle: the common case costs no counting.
    if let Some(conn) = pool.try_get() {
        return Ok(conn);
    }
    WAITING.fetch_add(1, Ordering::Relaxed);
    let conn = pool.get();
    WAITING.fetch_sub(1, Ordering::Relaxed);
    conn
}

/// How many [`checkout`]s wait for a connection right now.
pub fn waiting_for_connection() -> usize {
    WAITING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Seconds since the Unix epoch: the one representation of instants in the schema.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}
