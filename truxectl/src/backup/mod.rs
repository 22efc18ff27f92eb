//! `truxectl backup create|list|prune|verify|restore`: online, self-describing backups of the
//! whole database, PostgreSQL or SQLite, in one format (see [`format`]) that restores into
//! either backend.

pub mod catalog;
mod create;
pub mod format;
mod restore;
mod schema;
mod verify;

use std::io::IsTerminal;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

use crate::Global;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Write a backup of the whole database (taken online) and print its path
    Create(create::Opts),
    /// List the backups in a directory, newest first, with whether each was verified
    List {
        /// The backup directory (default: /var/backups/truxe when it exists, else ./backups)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Delete backups older than N days (the newest backup is always kept)
    Prune {
        /// Keep the backups of the last N days (the deployment guide keeps 30)
        #[arg(long, value_name = "N")]
        keep_days: u32,
        /// The backup directory (default: /var/backups/truxe when it exists, else ./backups)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Only say what would be deleted
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore FILE into a scratch database, check its schema version and row counts, and
    /// record the result beside it (FILE.verified.json); exit 1 when it does not restore
    Verify {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Replace the database's contents with FILE (asks first; --yes to skip)
    Restore(restore::Opts),
}

pub fn run(command: Command, global: &Global) -> anyhow::Result<()> {
    match command {
        Command::Create(opts) => create::run(&opts, global),
        Command::List { dir } => list(dir, global),
        Command::Prune { keep_days, dir, dry_run } => prune(keep_days, dir, dry_run, global),
        Command::Verify { file } => verify::run(&file, global),
        Command::Restore(opts) => restore::run(&opts, global),
    }
}

fn list(dir: Option<PathBuf>, global: &Global) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(catalog::default_dir);
    let entries = catalog::list(&dir)?;
    if global.json {
        let backups: Vec<serde_json::Value> = entries.iter().map(catalog::Entry::to_json).collect();
        println!("{}", serde_json::json!({ "dir": dir.display().to_string(), "backups": backups }));
        return Ok(());
    }
    if entries.is_empty() {
        println!("no backups in {}", dir.display());
        return Ok(());
    }
    println!("{:<36} {:<21} {:<11} {:>10} {:>10}  VERIFIED", "FILE", "CREATED (UTC)", "BACKEND", "ROWS", "SIZE");
    for entry in &entries {
        let (created, backend, rows) = match &entry.header {
            Ok(h) => (
                h.created_at.replace('T', " ").trim_end_matches('Z').to_string(),
                h.backend.clone(),
                h.total_rows().to_string(),
            ),
            Err(_) => (
                catalog::rfc3339(entry.named_at).replace('T', " ").trim_end_matches('Z').to_string(),
                "?".into(),
                "?".into(),
            ),
        };
        let verified = match (&entry.header, &entry.verification) {
            (Err(error), _) => format!("unreadable: {error}"),
            (Ok(_), Some(v)) if entry.verified_ok() => format!("ok {}", v.verified_at),
            (Ok(_), Some(v)) if v.ok => "stale record (the file changed since)".to_string(),
            (Ok(_), Some(v)) => format!("FAILED {}: {}", v.verified_at, v.error.clone().unwrap_or_default()),
            (Ok(_), None) => "no".to_string(),
        };
        println!(
            "{:<36} {:<21} {:<11} {:>10} {:>10}  {verified}",
            entry.name,
            created,
            backend,
            rows,
            human_bytes(entry.bytes)
        );
    }
    Ok(())
}

fn prune(keep_days: u32, dir: Option<PathBuf>, dry_run: bool, global: &Global) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(catalog::default_dir);
    let pruned = catalog::prune(&dir, keep_days, time::OffsetDateTime::now_utc(), dry_run)?;
    if global.json {
        println!(
            "{}",
            serde_json::json!({
                "dir": dir.display().to_string(),
                "keep_days": keep_days,
                "dry_run": dry_run,
                "deleted": pruned.deleted,
                "kept": pruned.kept,
            })
        );
        return Ok(());
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    for path in &pruned.deleted {
        println!("{verb} {path}");
    }
    println!(
        "{}: {} backup(s) kept (the last {keep_days} days, and always the newest), {} {verb}",
        dir.display(),
        pruned.kept.len(),
        pruned.deleted.len()
    );
    Ok(())
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Rows done out of a known total: an indicatif bar on a terminal, one plain line per table
/// on stderr otherwise, nothing with `--json` (stdout is the answer then).
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    what: String,
}

impl Progress {
    pub fn new(global: &Global, total_rows: u64, what: &str) -> Self {
        if global.json {
            return Progress { bar: None, lines: false, what: what.to_string() };
        }
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None, lines: true, what: what.to_string() };
        }
        let bar = ProgressBar::new(total_rows);
        if let Ok(style) = ProgressStyle::with_template("{prefix:>9} {msg:<28} {bar:30} {pos}/{len} rows {elapsed}") {
            bar.set_style(style);
        }
        bar.set_prefix(what.to_string());
        Progress { bar: Some(bar), lines: false, what: what.to_string() }
    }

    pub fn table(&self, name: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(name.to_string());
        }
    }

    pub fn rows(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// A plain line (not on a terminal): `backup users: 12 rows`.
    pub fn table_rows(&self, table: &str, rows: u64) {
        if self.lines {
            eprintln!("{} {table}: {rows} rows", self.what);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
