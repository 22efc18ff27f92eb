//! `truxectl audit verify`: walks the chain in `seq` order and names the first entry whose link
//! is broken, and why. Runs in one read-only snapshot, so that servers appending (and pruning)
//! meanwhile cannot make a sound chain look broken.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::AuditEntry;
use super::chain::{self, AnchorDetails, GENESIS_HASH, entry_hash};
use crate::store::schema::audit_events;
use crate::store::{AnyConnection, StoreError};

/// Entries read per query.
const PAGE: i64 = 1_000;

/// Why the chain is broken at an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// Its hash does not match its contents: edited after it was written (or forged).
    Edited,
    /// Entries are missing before it (a gap in `seq`, or at the start of the chain).
    Deleted,
    /// Entries are missing at the end: the head says the chain is longer.
    Truncated,
    /// It does not continue the entry before it (`prev_hash`): inserted or moved, or the entry
    /// before it was rewritten with a new hash.
    Reordered,
    /// It lies beyond the chain's head, or has no place in the chain at all: inserted outside
    /// Truxe.
    Inserted,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Edited => "edited",
            Problem::Deleted => "deleted",
            Problem::Truncated => "truncated",
            Problem::Reordered => "reordered",
            Problem::Inserted => "inserted",
        }
    }
}

/// The first place the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Break {
    /// The entry named: the one that fails its check, or for missing entries the first one
    /// present after the gap (`None` when nothing follows).
    pub seq: Option<i64>,
    pub event_id: Option<String>,
    pub problem: Problem,
    /// For missing entries: the `seq` range that is gone.
    pub missing: Option<(i64, i64)>,
    pub message: String,
}

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// Entries whose links were checked.
    pub checked: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub head_seq: i64,
    pub head_hash: String,
    /// The `seq` of the latest `audit.pruned` anchor, and where it says the kept chain begins.
    pub anchor_seq: Option<i64>,
    pub kept_from_seq: i64,
    /// Entries before the kept chain that pruning has not deleted yet (not checked).
    pub awaiting_prune: u64,
    /// Entries from before the chain existed that no server has chained yet (not checked;
    /// the server's next start, or `truxectl migrate`, chains them).
    pub legacy_unchained: u64,
    pub broken: Option<Break>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Walks the whole chain; `progress` is told how many entries were checked so far, after each
/// page.
pub fn verify(conn: &mut AnyConnection, progress: &mut dyn FnMut(u64)) -> Result<Verification, StoreError> {
    conn.transaction(|conn| {
        if let AnyConnection::Postgresql(pg) = conn {
            // The first statement of the transaction, so that every read sees one snapshot.
            pg.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
        }
        walk(conn, progress)
    })
}

fn walk(conn: &mut AnyConnection, progress: &mut dyn FnMut(u64)) -> Result<Verification, StoreError> {
    let head = chain::head(conn)?;
    let anchor = chain::latest_anchor(conn)?.filter(|(entry, _)| entry.seq.is_some_and(|seq| seq <= head.head_seq));
    let mut report = Verification {
        checked: 0,
        first_seq: None,
        last_seq: None,
        head_seq: head.head_seq,
        head_hash: head.head_hash.clone(),
        anchor_seq: anchor.as_ref().and_then(|(entry, _)| entry.seq),
        kept_from_seq: 1,
        awaiting_prune: 0,
        legacy_unchained: 0,
        broken: None,
    };
    let (start_seq, start_prev) = match &anchor {
        None => (1, GENESIS_HASH.to_string()),
        Some((_, Some(AnchorDetails { kept_from_seq, kept_from_prev_hash, .. }))) => {
            (*kept_from_seq, kept_from_prev_hash.clone())
        }
        Some((entry, None)) => {
            report.broken = Some(Break {
                seq: entry.seq,
                event_id: Some(entry.event_id.clone()),
                problem: Problem::Edited,
                missing: None,
                message: "the audit.pruned anchor's details cannot be read".into(),
            });
            return Ok(report);
        }
    };
    report.kept_from_seq = start_seq;
    report.awaiting_prune =
        as_count(audit_events::table.filter(audit_events::seq.lt(start_seq)).count().get_result(conn)?);

    let mut expected_seq = start_seq;
    let mut expected_prev = start_prev;
    'pages: loop {
        let page: Vec<AuditEntry> = audit_events::table
            .filter(audit_events::seq.ge(expected_seq))
            .order(audit_events::seq)
            .limit(PAGE)
            .select(AuditEntry::as_select())
            .load(conn)?;
        if page.is_empty() {
            break;
        }
        for entry in page {
            let seq = entry.seq.unwrap_or_default();
            if let Some(broken) = check(&entry, seq, expected_seq, &expected_prev, head.head_seq) {
                report.broken = Some(broken);
                break 'pages;
            }
            report.first_seq.get_or_insert(seq);
            report.last_seq = Some(seq);
            report.checked += 1;
            expected_seq = seq + 1;
            expected_prev = entry.hash.unwrap_or_default();
        }
        progress(report.checked);
    }
    if report.broken.is_none() {
        report.broken = check_end(&report, expected_seq, &expected_prev, &head.head_hash);
    }

    let unchained = as_count(audit_events::table.filter(audit_events::seq.is_null()).count().get_result(conn)?);
    if head.legacy_chained {
        if report.broken.is_none() && unchained > 0 {
            let stray: AuditEntry = audit_events::table
                .filter(audit_events::seq.is_null())
                .order(audit_events::event_id)
                .select(AuditEntry::as_select())
                .first(conn)?;
            report.broken = Some(Break {
                seq: None,
                event_id: Some(stray.event_id.clone()),
                problem: Problem::Inserted,
                missing: None,
                message: format!(
                    "entry {} ({}, {}) has no place in the chain: it was inserted outside Truxe ({unchained} such entries)",
                    stray.event_id, stray.action, stray.occurred_at
                ),
            });
        }
    } else {
        report.legacy_unchained = unchained;
    }
    Ok(report)
}

fn as_count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

/// The checks of one entry, given what the entry before it promised.
fn check(entry: &AuditEntry, seq: i64, expected_seq: i64, expected_prev: &str, head_seq: i64) -> Option<Break> {
    let named = |problem, missing, message: String| Break {
        seq: Some(seq),
        event_id: Some(entry.event_id.clone()),
        problem,
        missing,
        message,
    };
    if seq != expected_seq && expected_seq <= head_seq {
        let last_missing = (seq - 1).min(head_seq);
        let range = if last_missing == expected_seq {
            format!("entry seq {expected_seq} is missing")
        } else {
            format!("entries seq {expected_seq} to {last_missing} are missing")
        };
        return Some(named(
            Problem::Deleted,
            Some((expected_seq, last_missing)),
            format!("{range} (deleted); the next entry present is seq {seq} ({})", entry.event_id),
        ));
    }
    if seq > head_seq {
        return Some(named(
            Problem::Inserted,
            None,
            format!(
                "entry seq {seq} ({}, {}) lies beyond the chain's head (seq {head_seq}): it was inserted outside Truxe",
                entry.event_id, entry.action
            ),
        ));
    }
    if entry.hash.as_deref() != Some(entry_hash(entry).as_str()) {
        return Some(named(
            Problem::Edited,
            None,
            format!(
                "entry seq {seq} ({}, {}) does not match its hash: it was changed after it was written, or inserted",
                entry.event_id, entry.action
            ),
        ));
    }
    if entry.prev_hash.as_deref() != Some(expected_prev) {
        return Some(named(
            Problem::Reordered,
            None,
            format!(
                "entry seq {seq} ({}, {}) does not continue the entry before it: it was inserted or moved, or the entry before it was rewritten",
                entry.event_id, entry.action
            ),
        ));
    }
    None
}

/// After the last entry: the head must be where the walk ended.
fn check_end(report: &Verification, next_seq: i64, last_hash: &str, head_hash: &str) -> Option<Break> {
    let last = next_seq - 1;
    if last < report.head_seq {
        let range = if next_seq == report.head_seq {
            format!("entry seq {next_seq} is missing")
        } else {
            format!("entries seq {next_seq} to {} are missing", report.head_seq)
        };
        return Some(Break {
            seq: Some(next_seq),
            event_id: None,
            problem: Problem::Truncated,
            missing: Some((next_seq, report.head_seq)),
            message: format!("{range}: deleted from the end of the log (the chain's head is seq {})", report.head_seq),
        });
    }
    if last_hash != head_hash {
        return Some(Break {
            seq: Some(last),
            event_id: None,
            problem: Problem::Edited,
            missing: None,
            message: format!("the last entry, seq {last}, does not match the chain's head: it was rewritten"),
        });
    }
    None
}
