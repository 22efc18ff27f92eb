//! `truxectl audit list|verify`: the audit log on the database directly. `verify` exits 1 and
//! names the first entry whose chain is broken.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use truxe_server::config::{BareUnit, parse_duration};
use truxe_server::service::users as user_service;
use truxe_server::store::audit::query::{self, EventFilter, Filter};
use truxe_server::store::audit::verify::{self, Verification};
use truxe_server::store::audit::{AuditAction, AuditEntry};
use truxe_server::store::{self, unix_now};

use crate::{Global, db};

/// sysexits EX_CONFIG, as the server uses it.
const EXIT_CONFIG: u8 = 78;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// List audit entries, newest first (details in the last column; --json for every field)
    List {
        /// Only entries about this user (id, or email address of an existing user)
        #[arg(long, value_name = "ID|EMAIL")]
        user: Option<String>,
        /// Only entries about this client
        #[arg(long, value_name = "CLIENT_ID")]
        client: Option<String>,
        /// Only this event (e.g. token.issued), or every event starting with a prefix (user.mfa*)
        #[arg(long, value_name = "EVENT", value_parser = parse_event)]
        event: Option<EventFilter>,
        /// Only entries since then: a duration ago (24h, 7d, 900) or an RFC 3339 time
        #[arg(long, value_name = "T", value_parser = parse_since)]
        since: Option<i64>,
        /// At most this many entries
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=query::MAX_LIMIT))]
        limit: i64,
    },
    /// Check the hash chain of the whole log; exit 1 naming the first broken entry
    Verify,
}

/// `--event`: a known event name, or a prefix followed by `*`.
fn parse_event(value: &str) -> Result<EventFilter, String> {
    let filter = EventFilter::parse(value.trim());
    match &filter {
        EventFilter::Exact(name) if AuditAction::parse(name).is_none() => {
            let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
            Err(format!("unknown event {name:?}; known events: {} (or a prefix with *, like user.*)", known.join(", ")))
        }
        EventFilter::Prefix(prefix) if !AuditAction::ALL.iter().any(|a| a.as_str().starts_with(prefix.as_str())) => {
            Err(format!("no event starts with {prefix:?}"))
        }
        _ => Ok(filter),
    }
}

/// `--since`: `24h`/`7d`/`900` ago, or an RFC 3339 instant; Unix seconds.
fn parse_since(value: &str) -> Result<i64, String> {
    since_at(value, unix_now())
}

fn since_at(value: &str, now: i64) -> Result<i64, String> {
    let value = value.trim();
    if let Ok(instant) = OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(instant.unix_timestamp());
    }
    match parse_duration(value, BareUnit::Seconds) {
        Ok(ago) => Ok(now.saturating_sub(i64::try_from(ago.as_secs()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!(
            "{value:?} is neither a duration ago (24h, 7d, 900) nor an RFC 3339 time (2026-12-01T00:00:00Z)"
        )),
    }
}

/// Runs the command; its exit status follows SPEC (0 ok, 1 check failed, 78 configuration).
pub fn run(command: Command, global: &Global) -> ExitCode {
    let database = match db::database_config(global) {
        Ok(database) => database,
        Err(error) => {
            eprintln!("truxectl: error: {error:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let outcome = (|| -> anyhow::Result<bool> {
        let target = database.url.redacted();
        let mut conn = store::connect_one(&database).with_context(|| format!("cannot open {target}"))?;
        match command {
            Command::List { user, client, event, since, limit } => {
                let user_id = match user {
                    Some(user) if user.contains('@') => Some(
                        user_service::get(&mut conn, &user)
                            .with_context(|| format!("{user}: no such user (pass the user id for a deleted one)"))?
                            .user_id
                            .to_string(),
                    ),
                    other => other,
                };
                let filter = Filter { user_id, client_id: client, event, since, limit };
                let entries = query::list(&mut conn, &filter).with_context(|| format!("reading {target}"))?;
                if global.json {
                    let list: Vec<_> = entries.iter().map(entry_json).collect();
                    println!("{}", serde_json::json!({ "entries": list, "count": list.len() }));
                } else {
                    print_table(&entries);
                }
                Ok(true)
            }
            Command::Verify => {
                let bar = spinner(global.json);
                let report = verify::verify(&mut conn, &mut |checked| {
                    if let Some(bar) = &bar {
                        bar.set_message(format!("{checked} entries checked"));
                    }
                })
                .with_context(|| format!("reading {target}"))?;
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                if global.json {
                    println!("{}", serde_json::json!({ "database": target, "ok": report.ok(), "report": report }));
                } else {
                    print_verification(&report);
                }
                Ok(report.ok())
            }
        }
    })();
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("truxectl: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn spinner(json: bool) -> Option<ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} verifying the audit chain: {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(bar)
}

/// `2026-12-04T10:00:00Z` from Unix seconds.
fn rfc3339(epoch: i64) -> String {
    OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| epoch.to_string())
}

fn entry_json(entry: &AuditEntry) -> serde_json::Value {
    let details: serde_json::Value =
        serde_json::from_str(&entry.details).unwrap_or_else(|_| serde_json::Value::String(entry.details.clone()));
    serde_json::json!({
        "seq": entry.seq,
        "event_id": entry.event_id,
        "time": rfc3339(entry.occurred_at),
        "occurred_at": entry.occurred_at,
        "event": entry.action,
        "result": entry.result,
        "actor": entry.actor,
        "subject": entry.subject,
        "client_id": entry.client_id,
        "user_id": entry.user_id,
        "ip": entry.ip,
        "user_agent": entry.user_agent,
        "request_id": entry.request_id,
        "details": details,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    })
}

fn print_table(entries: &[AuditEntry]) {
    if entries.is_empty() {
        println!("no audit entries");
        return;
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<[String; 10]> = entries
        .iter()
        .map(|e| {
            [
                rfc3339(e.occurred_at),
                e.seq.map_or_else(|| "-".into(), |s| s.to_string()),
                e.action.clone(),
                e.result.clone(),
                e.actor.clone(),
                dash(&e.client_id),
                dash(&e.user_id),
                dash(&e.ip),
                dash(&e.request_id),
                e.details.clone(),
            ]
        })
        .collect();
    let header = ["TIME", "SEQ", "EVENT", "RESULT", "ACTOR", "CLIENT", "USER", "IP", "REQUEST", "DETAILS"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
}

fn print_verification(report: &Verification) {
    match &report.broken {
        None => {
            let range = match (report.first_seq, report.last_seq) {
                (Some(first), Some(last)) => format!(" (seq {first} to {last})"),
                _ => String::new(),
            };
            println!("ok: the audit chain is intact: {} entries checked{range}", report.checked);
            println!("head: seq {}, hash {}", report.head_seq, report.head_hash);
            if let Some(anchor) = report.anchor_seq {
                println!("pruned: the kept chain begins at seq {} (anchor entry seq {anchor})", report.kept_from_seq);
            }
        }
        Some(broken) => {
            let at = match (broken.seq, &broken.event_id) {
                (Some(seq), Some(id)) => format!("seq {seq} (entry {id})"),
                (Some(seq), None) => format!("seq {seq}"),
                (None, Some(id)) => format!("entry {id}"),
                (None, None) => "an unknown place".into(),
            };
            println!("FAIL: the audit chain is broken at {at}: {}", broken.problem.as_str());
            println!("      {}", broken.message);
            println!("      {} entries before it are intact", report.checked);
        }
    }
    if report.awaiting_prune > 0 {
        println!(
            "note: {} entries before seq {} await pruning (not checked)",
            report.awaiting_prune, report.kept_from_seq
        );
    }
    if report.legacy_unchained > 0 {
        println!(
            "note: {} entries from before the audit chain have no place in it yet (not checked): start truxe-server or run `truxectl migrate` to chain them",
            report.legacy_unchained
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_ago_or_an_rfc3339_time() {
        let now = 1_796_000_000;
        assert_eq!(since_at("24h", now), Ok(now - 86_400));
        assert_eq!(since_at("900", now), Ok(now - 900));
        assert_eq!(since_at("7d", now), Ok(now - 7 * 86_400));
        assert_eq!(since_at("2026-12-01T00:00:00Z", now), Ok(1_796_083_200));
        assert_eq!(since_at("2026-12-01T01:00:00+01:00", now), Ok(1_796_083_200));
        for bad in ["yesterday", "2026-12-01", "-5m", ""] {
            assert!(since_at(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn events_are_known_names_or_prefixes() {
        assert_eq!(parse_event("token.issued"), Ok(EventFilter::Exact("token.issued".into())));
        assert_eq!(parse_event("user.mfa*"), Ok(EventFilter::Prefix("user.mfa".into())));
        assert!(parse_event("token.minted").is_err_and(|e| e.contains("token.issued")));
        assert!(parse_event("nothing*").is_err());
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_083_200), "2026-12-01T00:00:00Z");
    }
}
