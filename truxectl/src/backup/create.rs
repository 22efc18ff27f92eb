//! `truxectl backup create`: a consistent snapshot of a live database into a new backup file.
//!
//! PostgreSQL: one `REPEATABLE READ, READ ONLY` transaction, each table read through a cursor.
//! SQLite (WAL): one read transaction. Either way the server keeps serving and writing while
//! the backup is taken, and every table is read as of the same instant. SQLite's online backup
//! API would copy the file page by page instead; the row format was chosen so that one reader,
//! one verification and one restore serve both backends (and each restores into the other).
//!
//! Nothing half-written is ever left under a backup's name: the payload is compressed into a
//! hidden side file, then header and payload are written to a hidden `.partial` file, synced,
//! and hard-linked to the final name (which never replaces an existing file). Files are mode
//! 0600: a backup holds secret hashes and keys.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use diesel::connection::{DefaultLoadingMode, SimpleConnection};
use diesel::prelude::*;
use diesel::sql_types::Text;
use truxe_server::config::DatabaseUrl;
use truxe_server::store::{self, AnyConnection, Backend};

use super::format::{self, FORMAT, FORMAT_VERSION, Header, PayloadWriter};
use super::{Progress, catalog, schema, verify};
use crate::{Global, db};

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// Directory to write the backup into (default: /var/backups/truxe when it exists, else
    /// ./backups; created, mode 0700, when missing)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Then restore it into a scratch database and record the result, as `backup verify` does
    #[arg(long)]
    pub verify: bool,
}

/// Rows fetched from a PostgreSQL cursor at a time.
const FETCH_ROWS: usize = 2_000;

pub fn run(opts: &Opts, global: &Global) -> anyhow::Result<()> {
    let database = db::database_config(global)?;
    let target = database.url.redacted();
    if let DatabaseUrl::Sqlite(path) = &database.url
        && !path.exists()
    {
        bail!("{target}: no database there, nothing to back up");
    }
    let dir = opts.out.clone().unwrap_or_else(catalog::default_dir);
    ensure_dir(&dir)?;
    let started = Instant::now();
    let mut conn = store::connect_one(&database)?;
    let (path, header) = create(&mut conn, &dir, global).with_context(|| format!("backing up {target}"))?;
    drop(conn);
    let seconds = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or_default();

    let verification = if opts.verify { Some(verify::verify(&path, global, Some(&database))?) } else { None };

    if global.json {
        let tables: serde_json::Map<String, serde_json::Value> =
            header.tables.iter().map(|t| (t.name.clone(), t.rows.into())).collect();
        println!(
            "{}",
            serde_json::json!({
                "path": path.display().to_string(),
                "database": target,
                "backend": header.backend,
                "schema_version": header.schema_version,
                "created_at": header.created_at,
                "tables": tables,
                "rows": header.total_rows(),
                "bytes": bytes,
                "seconds": seconds,
                "verified": verification.as_ref().map(|v| serde_json::to_value(v).unwrap_or_default()),
            })
        );
    } else {
        eprintln!(
            "backed up {target} ({}, schema {}): {} rows in {} tables, {} in {seconds:.1} s",
            header.backend,
            header.schema_version,
            header.total_rows(),
            header.tables.len(),
            super::human_bytes(bytes)
        );
        if let Some(v) = &verification
            && v.ok
        {
            eprintln!(
                "verified: it restores into a scratch {} database with the same row counts",
                v.scratch.as_deref().unwrap_or("?")
            );
        }
        println!("{}", path.display());
    }
    match verification {
        Some(v) if !v.ok => {
            bail!("{}: the backup was written but does not verify: {}", path.display(), v.error.unwrap_or_default())
        }
        _ => Ok(()),
    }
}

/// Creates `dir` (mode 0700) when missing.
fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).with_context(|| format!("cannot create the backup directory {}", dir.display()))
}

/// A new file readable by its owner only; fails when it exists.
fn create_private(path: &Path) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).read(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).with_context(|| format!("cannot create {}", path.display()))
}

/// Deletes the hidden work files unless the backup was published.
struct WorkFiles(Vec<PathBuf>);

impl Drop for WorkFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes the backup file into `dir`; returns its path and header.
pub fn create(conn: &mut AnyConnection, dir: &Path, global: &Global) -> anyhow::Result<(PathBuf, Header)> {
    let at = time::OffsetDateTime::now_utc();
    let base = catalog::file_name(at, 1);
    let payload_path = dir.join(format!(".{base}.payload.partial"));
    let partial_path = dir.join(format!(".{base}.partial"));
    let work = WorkFiles(vec![payload_path.clone(), partial_path.clone()]);

    let payload = create_private(&payload_path)?;
    let mut writer = PayloadWriter::new(BufWriter::with_capacity(256 << 10, payload));
    let backend = conn.backend();
    let applied = conn.transaction::<_, anyhow::Error, _>(|conn| {
        if backend == Backend::Postgres {
            // The first statement of the transaction: one snapshot for every table that follows.
            conn.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
        }
        dump(conn, &mut writer, global)
    })?;
    let (payload, tables, payload_bytes, payload_sha256) = writer.finish()?;
    let mut payload = payload.into_inner().map_err(|e| e.into_error())?;

    let header = Header {
        format: FORMAT.to_string(),
        format_version: FORMAT_VERSION,
        schema_version: applied.last().cloned().unwrap_or_default(),
        migrations: applied,
        backend: backend.as_str().to_string(),
        created_at: catalog::rfc3339(at),
        created_by: format!("truxectl {}", env!("CARGO_PKG_VERSION")),
        tables,
        payload_bytes,
        payload_sha256,
    };
    let mut file = BufWriter::new(create_private(&partial_path)?);
    format::write_header(&mut file, &header)?;
    payload.rewind()?;
    std::io::copy(&mut payload, &mut file)?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);

    let path = publish(&partial_path, dir, at)?;
    drop(work);
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((path, header))
}

/// Links the finished file to the first free name of its second (never over another file).
fn publish(partial: &Path, dir: &Path, at: time::OffsetDateTime) -> anyhow::Result<PathBuf> {
    for n in 1..=1_000 {
        let path = dir.join(catalog::file_name(at, n));
        match std::fs::hard_link(partial, &path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
        }
    }
    bail!("{}: a thousand backups in one second already", dir.display())
}

#[derive(QueryableByName)]
struct RowText {
    #[diesel(sql_type = Text)]
    row: String,
}

/// Inside the snapshot: every table at the database's schema version, in foreign-key order.
/// Returns the migrations applied.
fn dump(
    conn: &mut AnyConnection,
    writer: &mut PayloadWriter<BufWriter<File>>,
    global: &Global,
) -> anyhow::Result<Vec<String>> {
    let applied = schema::applied(conn)?;
    let Some(version) = applied.last().cloned() else {
        bail!("no migration has been applied to this database: nothing to back up (run `truxectl migrate` first)");
    };
    let known = schema::known_versions()?;
    if let Some(unknown) = applied.iter().find(|v| !known.contains(v)) {
        bail!(
            "the database has migration {unknown}, which this truxectl does not know (its newest is {}): use the truxectl of the release that migrated it",
            known.last().map(String::as_str).unwrap_or("none")
        );
    }
    let expected = schema::tables_at(&version)?;
    let mut tables = Vec::with_capacity(expected.len());
    for shape in &expected {
        let columns = schema::columns(conn, &shape.name)?;
        if columns.is_empty() {
            bail!("table {} is missing, although schema version {version} has it", shape.name);
        }
        let actual = schema::TableShape { name: shape.name.clone(), columns };
        if actual.column_names() != shape.column_names() {
            bail!(
                "table {} has the columns {:?}, schema version {version} has {:?}: was it changed by hand?",
                shape.name,
                actual.column_names(),
                shape.column_names()
            );
        }
        let rows = schema::count_rows(conn, &shape.name)?;
        tables.push((actual, rows));
    }
    let progress = Progress::new(global, tables.iter().map(|(_, rows)| rows).sum(), "backup");
    let backend = conn.backend();
    for (table, counted) in &tables {
        progress.table(&table.name);
        writer.begin_table(&table.name, table.portable_columns())?;
        let select = schema::select_rows_sql(backend, &table.name, &table.columns);
        let mut write = |text: &str| -> anyhow::Result<()> {
            let values: Vec<serde_json::Value> = serde_json::from_str(text)
                .with_context(|| format!("table {}: a row the database gave as JSON", table.name))?;
            writer.row(&values)?;
            Ok(())
        };
        match backend {
            Backend::Postgres => {
                conn.batch_execute(&format!("DECLARE truxe_backup NO SCROLL CURSOR FOR {select}"))?;
                loop {
                    let rows: Vec<RowText> =
                        diesel::sql_query(format!("FETCH FORWARD {FETCH_ROWS} FROM truxe_backup")).load(conn)?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in &rows {
                        write(&row.row)?;
                    }
                    progress.rows(rows.len() as u64);
                }
                conn.batch_execute("CLOSE truxe_backup")?;
            }
            Backend::Sqlite => {
                let mut n = 0u64;
                for row in diesel::sql_query(&select).load_iter::<RowText, DefaultLoadingMode>(conn)? {
                    write(&row?.row)?;
                    n += 1;
                    if n.is_multiple_of(1_000) {
                        progress.rows(1_000);
                    }
                }
                progress.rows(n % 1_000);
            }
        }
        let dumped = writer.rows_in_current_table();
        if dumped != *counted {
            bail!("table {}: {counted} rows counted but {dumped} read in the same snapshot", table.name);
        }
        progress.table_rows(&table.name, dumped);
    }
    progress.finish();
    Ok(applied)
}
