//! `truxectl migrate [apply|status|revert]`, and `truxectl migrate --dry-run`: the plan before
//! an upgrade (pending migrations, the tables each touches, their row counts), changing nothing.

use std::io::IsTerminal;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use truxe_server::store::migrations;

use crate::{Global, db};

mod plan;

#[derive(clap::Subcommand, Debug, Default, Clone, Copy)]
pub enum Command {
    /// Apply every pending migration (the default)
    #[default]
    Apply,
    /// List migrations, applied and pending
    Status,
    /// Revert the most recently applied migration (drops its tables and their data)
    Revert,
}

pub fn run(command: Command, dry_run: bool, global: &Global) -> anyhow::Result<()> {
    if dry_run && !matches!(command, Command::Apply) {
        return Err(crate::exit::usage("--dry-run goes with `truxectl migrate` (apply) only"));
    }
    let (database, mut conn) = db::connect(global)?;
    let target = database.url.redacted();
    if dry_run {
        return plan::print(&mut conn, &target, global);
    }
    match command {
        Command::Apply => db::with_migration_lock(&mut conn, |conn| {
            let pending = migrations::pending(conn)?;
            let bar = progress(pending.len() as u64, global.json);
            let mut applied = Vec::new();
            for _ in &pending {
                let Some(name) = migrations::apply_next(conn).with_context(|| format!("migrating {target}"))? else {
                    break;
                };
                match &bar {
                    Some(bar) => {
                        bar.set_message(name.clone());
                        bar.inc(1);
                    }
                    None if !global.json => println!("applied {name}"),
                    None => {}
                }
                applied.push(name);
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            // Audit entries from before the chain existed get their places now, so that
            // `truxectl audit verify` passes on an upgraded database before any server starts.
            let chained = truxe_server::store::audit::chain_legacy(conn).context("chaining the audit log")?;
            if global.json {
                println!(
                    "{}",
                    serde_json::json!({ "database": target, "applied": applied, "audit_entries_chained": chained })
                );
            } else {
                if applied.is_empty() {
                    println!("{target}: up to date, nothing to apply");
                } else {
                    println!("{target}: applied {} migration(s)", applied.len());
                }
                if chained > 0 {
                    println!("{target}: gave {chained} audit entries from before the audit chain their places in it");
                }
            }
            Ok(())
        }),
        Command::Status => {
            let states = migrations::status(&mut conn)?;
            if global.json {
                println!("{}", serde_json::json!({ "database": target, "migrations": states }));
            } else {
                println!("{target}");
                println!("{:<10} {:<20} NAME", "STATE", "VERSION");
                for m in &states {
                    println!("{:<10} {:<20} {}", if m.applied { "applied" } else { "pending" }, m.version, m.name);
                }
                let pending = states.iter().filter(|m| !m.applied).count();
                println!("{} applied, {pending} pending", states.len() - pending);
            }
            Ok(())
        }
        Command::Revert => {
            let states = migrations::status(&mut conn)?;
            let Some(last) = states.iter().rev().find(|m| m.applied) else {
                anyhow::bail!("{target}: no migration is applied, nothing to revert");
            };
            confirm(
                global,
                &format!(
                    "Revert migration {}_{} on {target}? Its tables and their data are dropped.",
                    last.version, last.name
                ),
            )?;
            let reverted = db::with_migration_lock(&mut conn, |conn| Ok(migrations::revert_last(conn)?))?;
            if global.json {
                println!("{}", serde_json::json!({ "database": target, "reverted": reverted }));
            } else {
                println!("{target}: reverted {}", reverted.unwrap_or_default());
            }
            Ok(())
        }
    }
}

/// A progress bar on a terminal; plain lines (or nothing, with --json) otherwise.
fn progress(len: u64, json: bool) -> Option<ProgressBar> {
    if json || len == 0 || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    Some(bar)
}

/// Dangerous operations ask on a terminal (default "no"); elsewhere they need `--yes`.
pub fn confirm(global: &Global, question: &str) -> anyhow::Result<()> {
    if global.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        anyhow::bail!("{question}\nrefusing without confirmation: no terminal to ask on; pass --yes");
    }
    let confirmed = dialoguer::Confirm::new().with_prompt(question).default(false).interact()?;
    if confirmed { Ok(()) } else { anyhow::bail!("cancelled") }
}
