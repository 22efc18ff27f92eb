//! `truxectl backup restore`, and the load both it and `backup verify` do.
//!
//! The file is read through once before any database is opened: format, schema version
//! (known to this build, never newer), tables and columns as this build's migrations make
//! them at that version, every row's shape, the row counts and the payload's SHA-256. Only
//! then, in one transaction on the target: the schema is brought to the backup's version
//! (reverting or applying migrations), Truxe's tables are emptied and loaded, the counts are
//! checked, and the schema is migrated up to this build's latest. Any failure rolls it all
//! back, so the target is either unchanged or holds exactly the backup.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use truxe_server::config::DatabaseUrl;
use truxe_server::store::{self, AnyConnection, Backend, instances};

use super::format::{self, Header, ReadError};
use super::{Progress, schema};
use crate::{Global, db, migrate};

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// The backup file (from `truxectl backup create`)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Restore even while a truxe-server is running on the target database
    #[arg(long)]
    pub force: bool,
}

/// Rows per INSERT statement.
const BATCH_ROWS: usize = 2_000;

/// Why the file is refused, in the operator's words; the exit status is 1.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "the backup is of schema version {backup}, newer than this truxectl knows (its newest is {known}): restore it with the truxectl of the release that made it, or a newer one"
    )]
    NewerSchema { backup: String, known: String },
    #[error("the backup is of schema version {0}, which is not one of this truxectl's migrations")]
    UnknownSchema(String),
    #[error("not a Truxe backup: {0}")]
    Foreign(String),
}

/// Reads `path` completely and checks it against this build's schema, touching no database.
pub fn check_file(path: &Path, global: &Global) -> anyhow::Result<Header> {
    // The header first: a newer schema is refused before the payload is read.
    let header = format::read_header(path).with_context(|| path.display().to_string())?;
    let expected = check_schema(&header).with_context(|| path.display().to_string())?;
    let progress = Progress::new(global, header.total_rows(), "check");
    let header = format::read(path, BATCH_ROWS, |batch| {
        progress.table(&batch.table.name);
        progress.rows(batch.rows as u64);
        Ok::<(), Infallible>(())
    })
    .map_err(|e| match e {
        ReadError::Format(e) => anyhow::Error::new(e),
        ReadError::Sink(never) => match never {},
    })
    .with_context(|| path.display().to_string())?;
    progress.finish();
    check_tables(&header, &expected).with_context(|| path.display().to_string())?;
    Ok(header)
}

/// The schema version is one of ours, not newer; returns the tables at that version.
fn check_schema(header: &Header) -> anyhow::Result<Vec<schema::TableShape>> {
    if !matches!(header.backend.as_str(), "postgresql" | "sqlite") {
        return Err(Refused::Foreign(format!("made on an unknown backend {:?}", header.backend)).into());
    }
    let known = schema::known_versions()?;
    let latest = known.last().cloned().unwrap_or_default();
    let version = schema::normalize(&header.schema_version);
    if version.is_empty() || version.len() != header.schema_version.len() {
        return Err(Refused::UnknownSchema(header.schema_version.clone()).into());
    }
    if version > latest {
        return Err(Refused::NewerSchema { backup: version, known: latest }.into());
    }
    if !known.contains(&version) {
        return Err(Refused::UnknownSchema(version).into());
    }
    if let Some(unknown) = header.migrations.iter().find(|m| !known.contains(&schema::normalize(m))) {
        return Err(Refused::UnknownSchema(unknown.clone()).into());
    }
    let expected = schema::tables_at(&version)?;
    check_tables(header, &expected)?;
    Ok(expected)
}

/// The backup has exactly the tables and columns that schema version has.
fn check_tables(header: &Header, expected: &[schema::TableShape]) -> anyhow::Result<()> {
    let in_file: BTreeSet<&str> = header.tables.iter().map(|t| t.name.as_str()).collect();
    let in_schema: BTreeSet<&str> = expected.iter().map(|t| t.name.as_str()).collect();
    if in_file != in_schema || in_file.len() != header.tables.len() {
        bail!(
            "the backup's tables {in_file:?} are not those of schema version {} {in_schema:?}",
            header.schema_version
        );
    }
    for table in &header.tables {
        let Some(shape) = expected.iter().find(|s| s.name == table.name) else { continue };
        let columns: BTreeSet<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        if columns != shape.column_names() || columns.len() != table.columns.len() {
            bail!(
                "table {}: the backup's columns {columns:?} are not those of schema version {} {:?}",
                table.name,
                header.schema_version,
                shape.column_names()
            );
        }
    }
    Ok(())
}

/// Where a load goes.
pub enum Mode {
    /// Replace the target's contents and commit.
    Replace,
    /// Load, check, roll back (`backup verify`); on PostgreSQL inside a new schema of this name.
    Scratch { pg_schema: Option<String> },
}

/// What a load did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Loaded {
    /// Rows per table after the load, in the backup's order.
    pub tables: Vec<(String, u64)>,
    /// Migrations reverted to reach the backup's version.
    pub reverted: Vec<String>,
    /// Migrations applied up to the backup's version, then on to this build's latest.
    pub applied: Vec<String>,
}

impl Loaded {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// A scratch load's result, carried out of the transaction as its rollback reason.
#[derive(Debug, thiserror::Error)]
#[error("scratch load rolled back")]
struct RolledBack(Loaded);

/// Loads the (already checked) backup at `path` into `conn` in one transaction.
pub fn load(
    conn: &mut AnyConnection,
    path: &Path,
    header: &Header,
    mode: &Mode,
    progress: &Progress,
) -> anyhow::Result<Loaded> {
    let version = schema::normalize(&header.schema_version);
    let backend = conn.backend();
    let outcome = conn.transaction::<Loaded, anyhow::Error, _>(|conn| {
        if let Mode::Scratch { pg_schema: Some(name) } = mode {
            let name = schema::quote(name);
            conn.batch_execute(&format!("CREATE SCHEMA {name}; SET LOCAL search_path TO {name}"))
                .context("creating a scratch schema (the role needs CREATE on the database)")?;
        }
        let reverted = schema::migrate_down_to(conn, &version)?;
        let mut applied = schema::migrate_up_to(conn, &version)?;
        if schema::applied(conn)?.last() != Some(&version) {
            bail!("could not bring the database to schema version {version}");
        }
        for table in &header.tables {
            let columns = schema::columns(conn, &table.name)?;
            let have: BTreeSet<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let want: BTreeSet<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
            if have != want {
                bail!("table {} at schema version {version} has the columns {have:?}, the backup {want:?}", table.name);
            }
        }
        match backend {
            // One statement, so that foreign keys among the tables do not matter.
            Backend::Postgres => {
                let names: Vec<String> = header.tables.iter().map(|t| schema::quote(&t.name)).collect();
                if !names.is_empty() {
                    conn.batch_execute(&format!("TRUNCATE {}", names.join(", ")))?;
                }
            }
            Backend::Sqlite => {
                for table in header.tables.iter().rev() {
                    conn.batch_execute(&format!("DELETE FROM {}", schema::quote(&table.name)))?;
                }
            }
        }
        let inserts: Vec<String> =
            header.tables.iter().map(|t| schema::insert_rows_sql(backend, &t.name, &t.columns)).collect();
        let mut current = String::new();
        format::read(path, BATCH_ROWS, |batch| -> anyhow::Result<()> {
            let index = header.tables.iter().position(|t| t.name == batch.table.name).unwrap_or_default();
            if current != batch.table.name {
                current = batch.table.name.clone();
                progress.table(&current);
                progress.table_rows(&current, batch.table.rows);
            }
            let inserted = diesel::sql_query(&inserts[index])
                .bind::<Text, _>(batch.json)
                .execute(conn)
                .with_context(|| format!("loading table {}", batch.table.name))?;
            if inserted != batch.rows {
                bail!("table {}: {inserted} of {} rows inserted", batch.table.name, batch.rows);
            }
            progress.rows(batch.rows as u64);
            Ok(())
        })
        .map_err(|e| match e {
            ReadError::Format(e) => anyhow::Error::new(e).context("the file changed since it was checked"),
            ReadError::Sink(e) => e,
        })?;
        let mut tables = Vec::with_capacity(header.tables.len());
        for table in &header.tables {
            let n = schema::count_rows(conn, &table.name)?;
            if n != table.rows {
                bail!("table {} holds {n} rows after the load, the backup {}", table.name, table.rows);
            }
            tables.push((table.name.clone(), n));
        }
        let latest = schema::known_versions()?.last().cloned().unwrap_or_default();
        applied.extend(schema::migrate_up_to(conn, &latest)?);
        let loaded = Loaded { tables, reverted, applied };
        match mode {
            Mode::Replace => Ok(loaded),
            Mode::Scratch { .. } => Err(RolledBack(loaded).into()),
        }
    });
    progress.finish();
    match outcome {
        Ok(loaded) => Ok(loaded),
        Err(error) => match error.downcast::<RolledBack>() {
            Ok(RolledBack(loaded)) => Ok(loaded),
            Err(error) => Err(error),
        },
    }
}

/// A SQLite database file opened as the server opens it (foreign keys on).
pub fn open_sqlite(path: &Path) -> anyhow::Result<AnyConnection> {
    let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy())
        .with_context(|| format!("cannot open {}", path.display()))?;
    conn.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")?;
    Ok(AnyConnection::Sqlite(conn))
}

/// Whether a server runs on the target: on PostgreSQL its connections are named
/// `truxe-server/…` (an instance whose pool holds no connection at this moment is not seen);
/// on SQLite it holds a shared lock beside the file, which this takes exclusively (and keeps,
/// in the returned file, so that no server starts on the database during the restore).
enum Running {
    No(Option<File>),
    Yes(String),
}

fn server_running(conn: &mut AnyConnection, url: &DatabaseUrl) -> anyhow::Result<Running> {
    match url {
        DatabaseUrl::Postgres(_) => {
            let n = instances::others(conn)?;
            Ok(if n > 0 {
                Running::Yes(format!("{n} truxe-server instance(s) are connected to it"))
            } else {
                Running::No(None)
            })
        }
        DatabaseUrl::Sqlite(path) => {
            let lock = instances::sqlite_lock_path(path);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock)
                .with_context(|| format!("cannot open {}", lock.display()))?;
            match file.try_lock() {
                Ok(()) => Ok(Running::No(Some(file))),
                Err(std::fs::TryLockError::WouldBlock) => {
                    Ok(Running::Yes(format!("a truxe-server holds {}", lock.display())))
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    Err(e).with_context(|| format!("cannot lock {}", lock.display()))
                }
            }
        }
    }
}

pub fn run(opts: &Opts, global: &Global) -> anyhow::Result<()> {
    let started = Instant::now();
    let header = check_file(&opts.file, global)?;
    let database = db::database_config(global)?;
    let target = database.url.redacted();
    let mut conn = store::connect_one(&database)?;
    let _lock = match server_running(&mut conn, &database.url)? {
        Running::No(lock) => lock,
        Running::Yes(why) if opts.force => {
            eprintln!(
                "truxectl: warning: restoring under a running server ({why}): restart it afterwards, since it caches clients and keys"
            );
            None
        }
        Running::Yes(why) => bail!(
            "refusing to restore into {target}: a server is running on it ({why}); stop it first (systemctl stop truxe-api), or pass --force"
        ),
    };
    let known = schema::known_versions()?;
    let before = schema::applied(&mut conn)?;
    if let Some(unknown) = before.iter().find(|v| !known.contains(v)) {
        bail!(
            "{target} has migration {unknown}, which this truxectl does not know: restore with the truxectl of the release that migrated it"
        );
    }
    let mut current_rows = 0;
    if let Some(version) = before.last() {
        for table in schema::tables_at(version)? {
            current_rows += schema::count_rows(&mut conn, &table.name)?;
        }
    }
    migrate::confirm(
        global,
        &format!(
            "Replace everything in {target} ({current_rows} rows now) with {} ({} backup of {}, schema {}, {} rows)?",
            opts.file.display(),
            header.backend,
            header.created_at,
            header.schema_version,
            header.total_rows()
        ),
    )?;
    let progress = Progress::new(global, header.total_rows(), "restore");
    let loaded = db::with_migration_lock(&mut conn, |conn| load(conn, &opts.file, &header, &Mode::Replace, &progress))
        .with_context(|| format!("restoring {} into {target} (nothing was changed)", opts.file.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if global.json {
        let tables: serde_json::Map<String, serde_json::Value> =
            loaded.tables.iter().map(|(name, n)| (name.clone(), (*n).into())).collect();
        println!(
            "{}",
            serde_json::json!({
                "restored": opts.file.display().to_string(),
                "database": target,
                "backend": conn.backend().as_str(),
                "from_backend": header.backend,
                "schema_version": header.schema_version,
                "created_at": header.created_at,
                "tables": tables,
                "rows": loaded.rows(),
                "reverted": loaded.reverted,
                "migrated": loaded.applied,
                "seconds": seconds,
            })
        );
    } else {
        println!(
            "restored {} into {target}: {} rows in {} tables (schema {}{}) in {seconds:.1} s",
            opts.file.display(),
            loaded.rows(),
            loaded.tables.len(),
            header.schema_version,
            if loaded.applied.is_empty() {
                String::new()
            } else {
                format!("; {} migration(s) applied", loaded.applied.len())
            }
        );
    }
    Ok(())
}
