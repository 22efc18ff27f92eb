//! `truxectl backup verify FILE` (and `create --verify`): a backup counts as good only once it
//! has been restored somewhere.
//!
//! The scratch database: a backup taken on PostgreSQL is restored into a new schema on the
//! configured PostgreSQL database, in a transaction that is rolled back (nothing stays, no
//! CREATE DATABASE privilege needed, the live tables are not touched); when the configured
//! database is SQLite, and for every SQLite backup, into a temporary SQLite file. The result is
//! recorded beside the file ([`catalog::Verification`]).

use std::path::Path;

use anyhow::{Context, bail};
use truxe_server::config::{DatabaseConfig, DatabaseUrl};
use truxe_server::store;

use super::catalog::{self, Verification};
use super::format::Header;
use super::restore::{self, Loaded, Mode};
use super::{Progress, schema};
use crate::{Global, db};

pub fn run(file: &Path, global: &Global) -> anyhow::Result<()> {
    let record = verify(file, global, None)?;
    if global.json {
        println!("{}", serde_json::to_string(&record)?);
    } else if record.ok {
        let rows: u64 = record.tables.iter().map(|t| t.rows).sum();
        println!(
            "{}: ok: restored into a scratch {} database: schema {}, {rows} rows in {} tables, as its header says",
            file.display(),
            record.scratch.as_deref().unwrap_or("?"),
            record.schema_version.as_deref().unwrap_or("?"),
            record.tables.len()
        );
    }
    if record.ok {
        Ok(())
    } else {
        bail!("{}: verification failed: {}", file.display(), record.error.unwrap_or_default())
    }
}

/// Verifies `file` and records the result beside it. `database`: the configured database when
/// the caller has it already (else read from the configuration if a PostgreSQL backup needs
/// it). `Err` only when there is nothing to record (no such file, no configuration).
pub fn verify(file: &Path, global: &Global, database: Option<&DatabaseConfig>) -> anyhow::Result<Verification> {
    let meta = std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", file.display());
    }
    let file_sha256 = catalog::file_sha256(file).with_context(|| format!("cannot read {}", file.display()))?;
    // Resolved before anything is recorded: a configuration problem is not the file's.
    let configured = match database {
        Some(database) => Some(database.clone()),
        None => match super::format::read_header(file) {
            Ok(h) if h.backend == "postgresql" => Some(db::database_config(global)?),
            _ => None,
        },
    };
    let mut header: Option<Header> = None;
    let mut scratch = None;
    let result = (|| -> anyhow::Result<Loaded> {
        let checked = restore::check_file(file, global)?;
        header = Some(checked.clone());
        let progress = Progress::new(global, checked.total_rows(), "verify");
        match configured.as_ref() {
            Some(database) if checked.backend == "postgresql" && matches!(database.url, DatabaseUrl::Postgres(_)) => {
                scratch = Some("postgresql");
                let mut conn = store::connect_one(database)?;
                let name = format!("truxe_verify_{}", uuid_like());
                restore::load(&mut conn, file, &checked, &Mode::Scratch { pg_schema: Some(name) }, &progress)
            }
            _ => {
                scratch = Some("sqlite");
                let dir = tempfile::Builder::new().prefix("truxe-verify").tempdir().context("a scratch directory")?;
                let mut conn = restore::open_sqlite(&dir.path().join("scratch.db"))?;
                restore::load(&mut conn, file, &checked, &Mode::Scratch { pg_schema: None }, &progress)
            }
        }
    })();
    let verified_at = catalog::rfc3339(time::OffsetDateTime::now_utc());
    let (ok, error, tables) = match result {
        Ok(loaded) => {
            let expected: Vec<(String, u64)> = header
                .as_ref()
                .map(|h| h.tables.iter().map(|t| (t.name.clone(), t.rows)).collect())
                .unwrap_or_default();
            if loaded.tables == expected {
                (true, None, loaded.tables)
            } else {
                (false, Some("the row counts after the restore differ from the header's".to_string()), loaded.tables)
            }
        }
        Err(error) => (false, Some(format!("{error:#}")), Vec::new()),
    };
    let tables = tables.into_iter().map(|(name, rows)| catalog::TableRows { name, rows }).collect();
    let record = Verification {
        file: file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        file_bytes: meta.len(),
        file_sha256,
        ok,
        verified_at,
        error,
        scratch: scratch.map(String::from),
        schema_version: header.as_ref().map(|h| schema::normalize(&h.schema_version)),
        backend: header.as_ref().map(|h| h.backend.clone()),
        created_at: header.as_ref().map(|h| h.created_at.clone()),
        tables,
        verified_by: format!("truxectl {}", env!("CARGO_PKG_VERSION")),
    };
    if let Err(error) = catalog::write_verification(file, &record) {
        eprintln!("truxectl: warning: the result could not be recorded: {error:#}");
    }
    Ok(record)
}

/// 128 random bits in hex: a scratch schema's name that no one else uses.
fn uuid_like() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    super::format::hex(&bytes)
}
