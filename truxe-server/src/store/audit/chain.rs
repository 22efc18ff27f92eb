//! The audit chain: every entry has a place (`seq`: 1, 2, 3 … without gaps), the hash of the
//! entry before it (`prev_hash`; [`GENESIS_HASH`] for the first) and its own `hash`, hex SHA-256
//! over the canonical serialization of its fields and `prev_hash` ([`entry_hash`]). Editing an
//! entry breaks its hash, deleting one leaves a gap, inserting one breaks the `prev_hash` of the
//! next; the head row (`audit_chain`) catches entries removed from the end.
//!
//! Appends are serialized in the database, across every instance: each one first updates the
//! head row, which PostgreSQL then holds locked (a row lock) until the transaction ends and
//! SQLite covers with its write lock. A batch pays that once for all its entries.

use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::{AuditAction, AuditEntry, AuditEvent};
use crate::store::schema::{audit_chain, audit_events};
use crate::store::{AnyConnection, StoreError};

/// The `prev_hash` of the first entry of a chain that was never pruned.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Tags the serialization, so that a future format cannot be mistaken for this one.
const FORMAT: &str = "truxe-audit-v1";

/// Legacy entries (from before the chain) are given their places this many at a time.
const LEGACY_PAGE: i64 = 1_000;
/// Pruning deletes at most this many entries per statement, so that no statement runs long.
const PRUNE_CHUNK: i64 = 5_000;

/// The hex SHA-256 that `entry` must carry: over a JSON array of the format tag and every
/// column but `hash`, in a fixed order, with `null` for an absent value. JSON's string escaping
/// makes the encoding unambiguous (no field can run into the next); `details` is hashed as the
/// stored text, so that no JSON re-serialization can change it.
pub fn entry_hash(entry: &AuditEntry) -> String {
    let canonical = serde_json::json!([
        FORMAT,
        entry.seq,
        entry.event_id,
        entry.occurred_at,
        entry.action,
        entry.actor,
        entry.subject,
        entry.client_id,
        entry.user_id,
        entry.ip,
        entry.user_agent,
        entry.request_id,
        entry.result,
        entry.details,
        entry.prev_hash,
    ]);
    hex(&Sha256::digest(canonical.to_string().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `audit_chain` row: where the next entry goes.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = audit_chain)]
pub struct Head {
    pub head_seq: i64,
    pub head_hash: String,
    pub legacy_chained: bool,
}

impl Head {
    /// Gives `entry` the next place: its `seq`, `prev_hash` and `hash`; advances the head.
    fn place(&mut self, entry: &mut AuditEntry) {
        entry.seq = Some(self.head_seq + 1);
        entry.prev_hash = Some(self.head_hash.clone());
        let hash = entry_hash(entry);
        entry.hash = Some(hash.clone());
        self.head_seq += 1;
        self.head_hash = hash;
    }
}

/// Reads the head without locking it (`truxectl audit verify`).
pub fn head(conn: &mut AnyConnection) -> Result<Head, StoreError> {
    audit_chain::table
        .find(1)
        .select(Head::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| StoreError::Corrupt("the audit_chain head row is missing".into()))
}

/// Takes the chain for this transaction (see the module doc), then reads the head. The first
/// statement is a write, so that SQLite takes its write lock at once instead of failing to
/// upgrade a read lock later.
fn lock(conn: &mut AnyConnection) -> Result<Head, StoreError> {
    let touched = diesel::update(audit_chain::table.find(1))
        .set(audit_chain::head_seq.eq(audit_chain::head_seq))
        .execute(conn)?;
    if touched != 1 {
        return Err(StoreError::Corrupt("the audit_chain head row is missing".into()));
    }
    head(conn)
}

fn store_head(conn: &mut AnyConnection, head: &Head) -> Result<(), StoreError> {
    diesel::update(audit_chain::table.find(1))
        .set((
            audit_chain::head_seq.eq(head.head_seq),
            audit_chain::head_hash.eq(&head.head_hash),
            audit_chain::legacy_chained.eq(head.legacy_chained),
        ))
        .execute(conn)?;
    Ok(())
}

/// A new entry for `event`, not yet placed.
fn new_entry(event: &AuditEvent, occurred_at: i64) -> AuditEntry {
    AuditEntry {
        seq: None,
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at,
        action: event.action.as_str().to_string(),
        actor: event.actor.clone(),
        subject: event.subject.clone(),
        client_id: event.client_id.clone(),
        user_id: event.user_id.clone(),
        ip: event.ip.clone(),
        user_agent: event.user_agent.clone(),
        request_id: event.request_id.clone(),
        result: event.result.as_str().to_string(),
        details: event.details_text(),
        prev_hash: None,
        hash: None,
    }
}

/// Appends `events` (each with the instant it happened, Unix seconds) to the chain in one
/// transaction (a savepoint inside the caller's), in order; returns the stored entries. Does not
/// log them: the caller does once they are committed (see `store::audit::record`).
pub fn append(conn: &mut AnyConnection, events: &[(AuditEvent, i64)]) -> Result<Vec<AuditEntry>, StoreError> {
    conn.transaction(|conn| {
        let mut head = lock(conn)?;
        if !head.legacy_chained {
            chain_legacy_rows(conn, &mut head)?;
        }
        let mut entries = Vec::with_capacity(events.len());
        for (event, occurred_at) in events {
            let mut entry = new_entry(event, *occurred_at);
            head.place(&mut entry);
            entries.push(entry);
        }
        insert(conn, &entries)?;
        store_head(conn, &head)?;
        Ok(entries)
    })
}

/// One multi-row `INSERT` per chunk: a batch costs a few statements, not one per entry (one
/// round trip to PostgreSQL). Backend by backend, since diesel's MultiConnection has no batch
/// insert. The chunk keeps SQLite under its limit of bound parameters (15 per row).
fn insert(conn: &mut AnyConnection, entries: &[AuditEntry]) -> Result<(), StoreError> {
    const ROWS_PER_STATEMENT: usize = 500;
    for chunk in entries.chunks(ROWS_PER_STATEMENT) {
        match conn {
            AnyConnection::Postgresql(pg) => diesel::insert_into(audit_events::table).values(chunk).execute(pg)?,
            AnyConnection::Sqlite(sqlite) => diesel::insert_into(audit_events::table).values(chunk).execute(sqlite)?,
        };
    }
    Ok(())
}

/// Gives the entries written before the chain existed (`seq` NULL) their places, oldest first,
/// once: afterwards an entry without a place can only have been inserted outside Truxe, and
/// `verify` names it. Run at the server's start and by `truxectl migrate`; the first append does
/// it otherwise. Returns how many entries were chained.
pub fn chain_legacy(conn: &mut AnyConnection) -> Result<u64, StoreError> {
    conn.transaction(|conn| {
        let mut head = lock(conn)?;
        if head.legacy_chained {
            return Ok(0);
        }
        let chained = chain_legacy_rows(conn, &mut head)?;
        store_head(conn, &head)?;
        Ok(chained)
    })
}

fn chain_legacy_rows(conn: &mut AnyConnection, head: &mut Head) -> Result<u64, StoreError> {
    let mut chained = 0;
    loop {
        let page: Vec<AuditEntry> = audit_events::table
            .filter(audit_events::seq.is_null())
            .order((audit_events::occurred_at, audit_events::event_id))
            .limit(LEGACY_PAGE)
            .select(AuditEntry::as_select())
            .load(conn)?;
        if page.is_empty() {
            break;
        }
        for mut entry in page {
            head.place(&mut entry);
            diesel::update(audit_events::table.filter(audit_events::event_id.eq(&entry.event_id)))
                .set((
                    audit_events::seq.eq(entry.seq),
                    audit_events::prev_hash.eq(&entry.prev_hash),
                    audit_events::hash.eq(&entry.hash),
                ))
                .execute(conn)?;
            chained += 1;
        }
    }
    head.legacy_chained = true;
    if chained > 0 {
        tracing::info!(chained, "gave the audit entries written before the chain existed their places in it");
    }
    Ok(chained)
}

/// What one [`prune`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Entries deleted.
    pub deleted: u64,
    /// Where the kept chain begins now.
    pub kept_from_seq: i64,
    /// The `audit.pruned` entry written, when this run moved the start.
    pub anchor: Option<AuditEntry>,
}

/// The `details` of an `audit.pruned` anchor: where the kept chain begins, and the `prev_hash`
/// its first entry carries (the hash of the last entry deleted).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnchorDetails {
    pub kept_from_seq: i64,
    pub kept_from_prev_hash: String,
    /// Entries older than this (Unix seconds) were to be removed.
    pub cutoff: i64,
    /// How many entries this pruning removed.
    pub deleted: u64,
}

/// The latest anchor on the chain: its `seq` and what it says.
pub fn latest_anchor(conn: &mut AnyConnection) -> Result<Option<(AuditEntry, Option<AnchorDetails>)>, StoreError> {
    let anchor: Option<AuditEntry> = audit_events::table
        .filter(audit_events::action.eq(AuditAction::AuditPruned.as_str()))
        .filter(audit_events::seq.is_not_null())
        .order(audit_events::seq.desc())
        .select(AuditEntry::as_select())
        .first(conn)
        .optional()?;
    Ok(anchor.map(|entry| {
        let details = serde_json::from_str(&entry.details).ok();
        (entry, details)
    }))
}

/// Retention: removes the oldest entries, those before the first entry that happened at or after
/// `cutoff` (so that what is kept is one unbroken stretch of the chain, even where clocks of
/// several instances disagree by a second). First appends an `audit.pruned` anchor recording
/// where the kept chain begins and the `prev_hash` its first entry carries, so that `verify`
/// still passes; then deletes in chunks, outside the chain's lock, so that appends never wait
/// for a long delete. A run interrupted between the two finishes the deletion the next time.
pub fn prune(conn: &mut AnyConnection, cutoff: i64, now: i64) -> Result<Pruned, StoreError> {
    let (kept_from_seq, anchor) = conn.transaction(|conn| {
        let mut head = lock(conn)?;
        if !head.legacy_chained {
            chain_legacy_rows(conn, &mut head)?;
        }
        let start = latest_anchor(conn)?.and_then(|(_, details)| details).map_or(1, |d| d.kept_from_seq);
        let first_kept: Option<i64> = audit_events::table
            .filter(audit_events::seq.is_not_null())
            .filter(audit_events::occurred_at.ge(cutoff))
            .select(diesel::dsl::min(audit_events::seq))
            .first(conn)?;
        let target = first_kept.unwrap_or(head.head_seq + 1);
        if target <= start {
            return Ok::<_, StoreError>((start, None));
        }
        let kept_from_prev_hash = if target > head.head_seq {
            head.head_hash.clone()
        } else {
            audit_events::table
                .filter(audit_events::seq.eq(target))
                .select(audit_events::prev_hash)
                .first::<Option<String>>(conn)?
                .ok_or_else(|| StoreError::Corrupt(format!("audit entry seq {target} has no prev_hash")))?
        };
        let deleted: i64 = audit_events::table
            .filter(audit_events::seq.lt(target))
            .filter(audit_events::seq.is_not_null())
            .count()
            .get_result(conn)?;
        let details = AnchorDetails {
            kept_from_seq: target,
            kept_from_prev_hash,
            cutoff,
            deleted: u64::try_from(deleted).unwrap_or_default(),
        };
        let event = AuditEvent::new(AuditAction::AuditPruned, "system")
            .details(serde_json::to_value(&details).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        let mut entry = new_entry(&event, now);
        head.place(&mut entry);
        insert(conn, std::slice::from_ref(&entry))?;
        store_head(conn, &head)?;
        Ok((target, Some(entry)))
    })?;
    if let Some(anchor) = &anchor {
        super::log(anchor);
    }
    let mut deleted = 0;
    loop {
        let Some(lowest) = audit_events::table
            .filter(audit_events::seq.lt(kept_from_seq))
            .select(diesel::dsl::min(audit_events::seq))
            .first::<Option<i64>>(conn)?
        else {
            break;
        };
        let upto = lowest.saturating_add(PRUNE_CHUNK).min(kept_from_seq);
        let removed = diesel::delete(audit_events::table.filter(audit_events::seq.lt(upto))).execute(conn)?;
        deleted += removed as u64;
    }
    Ok(Pruned { deleted, kept_from_seq, anchor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            seq: Some(7),
            event_id: "0193a0e0-0000-7000-8000-000000000001".into(),
            occurred_at: 1_796_000_000,
            action: "token.issued".into(),
            actor: "client:cl_a".into(),
            subject: Some("usr_1".into()),
            client_id: Some("cl_a".into()),
            user_id: Some("usr_1".into()),
            ip: Some("192.0.2.1".into()),
            user_agent: Some("curl/8".into()),
            request_id: Some("req-1".into()),
            result: "success".into(),
            details: r#"{"jti":"abc"}"#.into(),
            prev_hash: Some(GENESIS_HASH.into()),
            hash: None,
        }
    }

    #[test]
    fn the_hash_is_sha256_of_the_canonical_json() {
        let e = entry();
        let canonical = r#"["truxe-audit-v1",7,"0193a0e0-0000-7000-8000-000000000001",1796000000,"token.issued","client:cl_a","usr_1","cl_a","usr_1","192.0.2.1","curl/8","req-1","success","{\"jti\":\"abc\"}","0000000000000000000000000000000000000000000000000000000000000000"]"#;
        assert_eq!(entry_hash(&e), hex(&Sha256::digest(canonical.as_bytes())));
        assert_eq!(entry_hash(&e).len(), 64);
        // The stored hash itself is not part of what is hashed.
        assert_eq!(entry_hash(&AuditEntry { hash: Some("x".into()), ..e.clone() }), entry_hash(&e));
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = entry();
        let h = entry_hash(&base);
        let changed = [
            AuditEntry { seq: Some(8), ..base.clone() },
            AuditEntry { event_id: "0193a0e0-0000-7000-8000-000000000002".into(), ..base.clone() },
            AuditEntry { occurred_at: base.occurred_at + 1, ..base.clone() },
            AuditEntry { action: "token.revoked".into(), ..base.clone() },
            AuditEntry { actor: "admin".into(), ..base.clone() },
            AuditEntry { subject: None, ..base.clone() },
            AuditEntry { client_id: Some("cl_b".into()), ..base.clone() },
            AuditEntry { user_id: None, ..base.clone() },
            AuditEntry { ip: Some("192.0.2.2".into()), ..base.clone() },
            AuditEntry { user_agent: None, ..base.clone() },
            AuditEntry { request_id: Some("req-2".into()), ..base.clone() },
            AuditEntry { result: "failure".into(), ..base.clone() },
            AuditEntry { details: r#"{"jti":"abd"}"#.into(), ..base.clone() },
            AuditEntry { prev_hash: Some("1".repeat(64)), ..base.clone() },
        ];
        let mut seen = std::collections::HashSet::from([h]);
        for entry in &changed {
            assert!(seen.insert(entry_hash(entry)), "{entry:?} hashes like another");
        }
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        // Moving text from one field to the next must change the hash (a naive concatenation
        // of "ab" + "c" and "a" + "bc" would not).
        let a = AuditEntry { subject: Some("ab".into()), client_id: Some("c".into()), ..entry() };
        let b = AuditEntry { subject: Some("a".into()), client_id: Some("bc".into()), ..entry() };
        assert_ne!(entry_hash(&a), entry_hash(&b));
        // An absent value is not the empty string, nor the text "null".
        let none = AuditEntry { subject: None, ..entry() };
        let empty = AuditEntry { subject: Some(String::new()), ..entry() };
        let null = AuditEntry { subject: Some("null".into()), ..entry() };
        assert_ne!(entry_hash(&none), entry_hash(&empty));
        assert_ne!(entry_hash(&none), entry_hash(&null));
        // Quotes and control characters are escaped, not taken as delimiters.
        let quoted = AuditEntry { subject: Some("a\",\"b".into()), client_id: None, ..entry() };
        let split = AuditEntry { subject: Some("a".into()), client_id: Some("b".into()), ..entry() };
        assert_ne!(entry_hash(&quoted), entry_hash(&split));
    }

    #[test]
    fn placing_links_each_entry_to_the_one_before() {
        let mut head = Head { head_seq: 0, head_hash: GENESIS_HASH.into(), legacy_chained: true };
        let mut first = AuditEntry { seq: None, prev_hash: None, ..entry() };
        let mut second = AuditEntry { seq: None, prev_hash: None, event_id: "other".into(), ..entry() };
        head.place(&mut first);
        head.place(&mut second);
        assert_eq!((first.seq, first.prev_hash.as_deref()), (Some(1), Some(GENESIS_HASH)));
        assert_eq!((second.seq, second.prev_hash.as_ref()), (Some(2), first.hash.as_ref()));
        assert_eq!(second.hash.as_deref(), Some(entry_hash(&second).as_str()));
        assert_eq!((head.head_seq, Some(&head.head_hash)), (2, second.hash.as_ref()));
    }
}
