//! Reading the key set from the database: at start (strict: a key that should sign but cannot is
//! an error), then every refresh interval (lenient: keep serving, say what is wrong), plus the
//! writes every instance may make on the way: retirement times, retirements, the schedule's next
//! key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::schedule::{self, Choice, KeyState, KeyTimes};
use super::seal::{SealError, SealingKey};
use super::{Entry, KeyRing, KeySet, Policy};
use crate::jwt::{JwtError, TokenKeys};
use crate::keys::{self, Algorithm, KeyError, PublicKey, SigningKey};
use crate::store::signing_keys::{self as store, NewKey, Origin, StoredKey};
use crate::store::{self as storage, AnyConnection, Pool, StoreError};

/// Where this process's keys come from besides the database.
#[derive(Clone)]
pub struct Sources {
    pub policy: Policy,
    /// `JWT_PRIVATE_KEY`, the operator's.
    pub env_key: Option<SigningKey>,
    /// Seals and opens generated keys (from `SESSION_SECRET`).
    pub sealing: SealingKey,
    /// Development: the data directory's `jwt-private.pem`, the first key when the database has
    /// none (the SPEC's "generated into the data directory").
    pub data_dir_key: Option<PathBuf>,
    /// Development without `SESSION_SECRET` (the sealing key comes from the data directory's
    /// generated secret): when that secret was made anew, the data directory's key is sealed
    /// again from its file. Never with a configured `SESSION_SECRET`: a mismatch there is a
    /// mistake to report, not to paper over.
    pub may_reseal: bool,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("policy", &self.policy)
            .field("env_kid", &self.env_key.as_ref().map(SigningKey::kid))
            .field("data_dir_key", &self.data_dir_key)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "signing key {kid} ({state}) in the database cannot be decrypted: {reason}. It was sealed under another \
         SESSION_SECRET: give this instance the SESSION_SECRET the other instances use (in development without \
         SESSION_SECRET, the one in the data directory's session-secret file). If that secret is lost, so is the \
         key: set JWT_PRIVATE_KEY to a new key (`truxectl keys generate`), which takes over at once"
    )]
    Undecryptable { kid: String, state: KeyState, reason: SealError },
    #[error("signing key {kid} in the database is unusable: {reason}")]
    Corrupt { kid: String, reason: String },
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Jwt(#[from] JwtError),
    #[error("{0}")]
    Seal(#[from] SealError),
    #[error("no signing key can be used: {0}")]
    NoSigner(#[from] schedule::NoSigner),
}

impl KeyRingError {
    /// A problem the operator fixes in the configuration (sysexits EX_CONFIG), not an outage.
    pub fn is_configuration(&self) -> bool {
        matches!(self, KeyRingError::Undecryptable { .. } | KeyRingError::NoSigner(_) | KeyRingError::Key(_))
    }
}

/// Start-up: records `JWT_PRIVATE_KEY`, or makes sure a generated key exists (the data
/// directory's in development, a fresh one in production), applies due retirements and the
/// schedule, and reads the set. Fails when the key that signs now, or the next one, cannot be
/// used, or when nothing can sign.
pub fn bootstrap(conn: &mut AnyConnection, sources: &Sources, now: i64) -> Result<KeySet, KeyRingError> {
    let alg = sources.policy.algorithm;
    match &sources.env_key {
        Some(key) => {
            if store::record(conn, key.kid(), key.algorithm().as_str(), &key.public_pem(), now)? {
                tracing::info!(kid = key.kid(), "recorded JWT_PRIVATE_KEY as the active signing key");
                key_added(conn, key.kid(), key.algorithm(), "env", now, "system", now)?;
            }
        }
        None => {
            let rows = store::all(conn)?;
            let has_generated =
                rows.iter().any(|k| k.origin == Origin::Generated && !schedule::is_retired(&k.times(), now));
            if !has_generated {
                first_generated_key(conn, sources, alg, now)?;
            }
        }
    }
    let rows = maintain(conn, sources, now)?;
    let set = match build(&rows, None, sources, now, true) {
        Err(KeyRingError::Undecryptable { kid, state, reason }) => {
            // Development: the data directory's key sealed under an earlier generated session
            // secret; the file still holds it, so seal it again.
            if !reseal_from_data_dir(conn, sources, &kid)? {
                return Err(KeyRingError::Undecryptable { kid, state, reason });
            }
            build(&store::all(conn)?, None, sources, now, true)?
        }
        other => other?,
    };
    set.signer(now)?;
    store::record_seal_fingerprint(conn, &sources.sealing.fingerprint(), now)?;
    Ok(set)
}

/// The first generated key: the data directory's (development), else a new one; active at once,
/// since nothing was published before it.
fn first_generated_key(
    conn: &mut AnyConnection,
    sources: &Sources,
    alg: Algorithm,
    now: i64,
) -> Result<(), KeyRingError> {
    if let Some(path) = &sources.data_dir_key {
        let (key, generated) = keys::load_or_generate(path, alg)?;
        if generated {
            tracing::info!(path = %path.display(), kid = key.kid(), "generated a new signing key");
        }
        match store::find(conn, key.kid())? {
            Some(row) if row.retired_at.is_some() => {
                tracing::info!(kid = key.kid(), "the data directory's key is retired; generating a new one");
            }
            Some(_) => {
                let sealed = sources.sealing.seal(key.kid(), key.private_pem().secret().as_bytes())?;
                store::store_private_key(conn, key.kid(), &sealed)?;
                return Ok(());
            }
            None => {
                insert_generated(conn, sources, &key, now, now)?;
                return Ok(());
            }
        }
    }
    let key = SigningKey::generate(alg, 2048)?;
    let sealed = sources.sealing.seal(key.kid(), key.private_pem().secret().as_bytes())?;
    store::with_schedule_lock(conn, |conn| {
        // Another instance starting at the same time may have made one meanwhile.
        let exists =
            store::all(conn)?.iter().any(|k| k.origin == Origin::Generated && !schedule::is_retired(&k.times(), now));
        if !exists {
            store::insert(conn, &new_generated(&key, &sealed, now, now))?;
            key_added(conn, key.kid(), key.algorithm(), "generated", now, "system", now)?;
            tracing::info!(kid = key.kid(), alg = %alg, "generated the first signing key into the database");
        }
        Ok(())
    })?;
    Ok(())
}

fn insert_generated(
    conn: &mut AnyConnection,
    sources: &Sources,
    key: &SigningKey,
    created_at: i64,
    activates_at: i64,
) -> Result<bool, KeyRingError> {
    let sealed = sources.sealing.seal(key.kid(), key.private_pem().secret().as_bytes())?;
    let inserted = store::insert(conn, &new_generated(key, &sealed, created_at, activates_at))?;
    if inserted {
        key_added(conn, key.kid(), key.algorithm(), "generated", activates_at, "system", created_at)?;
    }
    Ok(inserted)
}

/// The audit log's `key.added`, in the transaction that stored the key (admin changes to keys
/// are audited like changes to clients and users).
fn key_added(
    conn: &mut AnyConnection,
    kid: &str,
    alg: Algorithm,
    origin: &str,
    activates_at: i64,
    actor: &str,
    now: i64,
) -> Result<(), StoreError> {
    use crate::store::audit::{AuditAction, AuditEvent, record};
    let details =
        serde_json::json!({ "kid": kid, "alg": alg.as_str(), "origin": origin, "activates_at": activates_at });
    record(conn, &AuditEvent::new(AuditAction::KeyAdded, actor).subject(kid).details(details), now)
}

/// The row of a generated key; `public_pem` borrowed from the key's own string.
fn new_generated<'a>(key: &'a SigningKey, sealed: &'a str, created_at: i64, activates_at: i64) -> NewKey<'a> {
    NewKey {
        kid: key.kid(),
        algorithm: key.algorithm().as_str(),
        public_pem: key.public_pem_str(),
        origin: Origin::Generated,
        private_key_sealed: Some(sealed),
        created_at,
        activates_at,
    }
}

/// A next key, published now and signing after the publish delay: `truxectl keys rotate` and the
/// schedule (`actor`: who asked, for the audit log's `key.added`). Inside the schedule lock, and
/// only if no next key is published yet (else `None`).
pub fn publish_next(
    conn: &mut AnyConnection,
    sealing: &SealingKey,
    key: &SigningKey,
    timing: &schedule::Timing,
    now: i64,
    actor: &str,
) -> Result<Option<StoredKey>, KeyRingError> {
    let sealed = sealing.seal(key.kid(), key.private_pem().secret().as_bytes())?;
    let published = store::with_schedule_lock(conn, |conn| {
        let rows = store::all(conn)?;
        let times: Vec<KeyTimes> = rows.iter().map(StoredKey::times).collect();
        if times.iter().any(|k| !schedule::is_retired(k, now) && k.activates_at > now) {
            return Ok(None);
        }
        let activates_at = now.saturating_add(timing.publish_delay);
        store::insert(conn, &new_generated(key, &sealed, now, activates_at))?;
        key_added(conn, key.kid(), key.algorithm(), "generated", activates_at, actor, now)?;
        // The keys it supersedes get their retirement date now, for `keys list` to show.
        let mut rows = store::all(conn)?;
        apply_retirements(conn, &mut rows, timing, now)?;
        store::find(conn, key.kid())
    })?;
    Ok(published)
}

fn apply_retirements(
    conn: &mut AnyConnection,
    rows: &mut [StoredKey],
    timing: &schedule::Timing,
    now: i64,
) -> Result<(), StoreError> {
    let times: Vec<KeyTimes> = rows.iter().map(StoredKey::times).collect();
    for (i, at) in schedule::retirements(&times, timing, now) {
        store::extend_retirement(conn, &rows[i].kid, at)?;
        rows[i].retires_at = Some(at);
    }
    Ok(())
}

/// The writes any instance may make when it reads the table (each idempotent, and none when
/// nothing is due): retirement times for superseded keys, `retired_at` (and the sealed private
/// half wiped) once they pass, and the schedule's next key. Returns the rows as they are after.
fn maintain(conn: &mut AnyConnection, sources: &Sources, now: i64) -> Result<Vec<StoredKey>, KeyRingError> {
    let timing = &sources.policy.timing;
    let mut rows = store::all(conn)?;
    apply_retirements(conn, &mut rows, timing, now)?;
    for row in rows.iter_mut().filter(|k| k.retired_at.is_none() && k.retires_at.is_some_and(|at| at <= now)) {
        store::mark_retired(conn, &row.kid, now)?;
        row.retired_at = Some(now);
        row.private_key_sealed = None;
        tracing::info!(kid = %row.kid, "retired a signing key: the tokens it signed have expired; it leaves the JWKS");
    }
    let times: Vec<KeyTimes> = rows.iter().map(StoredKey::times).collect();
    if sources.policy.schedule_runs && schedule::rotation_due(&times, timing, now) {
        // Generated outside the lock (RSA takes a while); thrown away if another instance wins.
        let key = SigningKey::generate(sources.policy.algorithm, 2048)?;
        if let Some(next) = publish_next(conn, &sources.sealing, &key, timing, now, "system")? {
            tracing::info!(
                kid = %next.kid,
                activates_at = next.activates_at,
                "JWT_KEY_ROTATION: published the next signing key; it signs after JWT_KEY_PUBLISH_DELAY"
            );
        }
        rows = store::all(conn)?;
    }
    Ok(rows)
}

/// Development recovery: the data directory's key is the undecryptable one; seal it again from
/// the file. Returns whether it did.
fn reseal_from_data_dir(conn: &mut AnyConnection, sources: &Sources, kid: &str) -> Result<bool, KeyRingError> {
    let Some(path) = sources.data_dir_key.as_ref().filter(|_| sources.may_reseal) else {
        return Ok(false);
    };
    if !path.exists() {
        return Ok(false);
    }
    let (key, _) = keys::load_or_generate(path, sources.policy.algorithm)?;
    if key.kid() != kid {
        return Ok(false);
    }
    let sealed = sources.sealing.seal(kid, key.private_pem().secret().as_bytes())?;
    store::store_private_key(conn, kid, &sealed)?;
    tracing::warn!(kid, path = %path.display(), "sealed the data directory's signing key again under the current session secret");
    Ok(true)
}

/// The key set from `rows`: every key not retired at `now`. Entries of `previous` are reused
/// for kids it already had (same sealed value). `strict`: a generated key that is active or next
/// and does not decrypt is an error; otherwise it is kept as published only, with its problem.
fn build(
    rows: &[StoredKey],
    previous: Option<&KeySet>,
    sources: &Sources,
    now: i64,
    strict: bool,
) -> Result<KeySet, KeyRingError> {
    let live: Vec<&StoredKey> = rows.iter().filter(|k| !schedule::is_retired(&k.times(), now)).collect();
    let times: Vec<KeyTimes> = live.iter().map(|k| k.times()).collect();
    let states = schedule::states(&times, now);
    let known: HashMap<&str, &Arc<Entry>> =
        previous.map(|set| set.entries.iter().map(|e| (e.kid.as_str(), e)).collect()).unwrap_or_default();
    let mut entries = Vec::with_capacity(live.len());
    for (row, state) in live.iter().zip(states) {
        match known.get(row.kid.as_str()) {
            Some(entry) if entry.sealed == row.private_key_sealed && entry.origin == row.origin => {
                entries.push(Arc::clone(entry));
            }
            _ => {
                let entry = entry_for(row, sources, state, strict)?;
                if let Some(problem) = &entry.problem {
                    tracing::error!(kid = %row.kid, state = %state, "signing key cannot be used by this instance: {problem}");
                }
                entries.push(Arc::new(entry));
            }
        }
    }
    Ok(KeySet { entries, times, loaded_at: now, policy: sources.policy })
}

fn entry_for(row: &StoredKey, sources: &Sources, state: KeyState, strict: bool) -> Result<Entry, KeyRingError> {
    let corrupt = |reason: String| KeyRingError::Corrupt { kid: row.kid.clone(), reason };
    let alg: Algorithm = row.algorithm.parse().map_err(|e: KeyError| corrupt(e.to_string()))?;
    let public = PublicKey::from_pem(&row.public_pem, alg).map_err(|e| corrupt(e.to_string()))?;
    if public.kid() != row.kid {
        return Err(corrupt(format!("its public key's thumbprint is {}", public.kid())));
    }
    let mut problem = None;
    let signing = match (&sources.env_key, row.origin, &row.private_key_sealed) {
        (Some(env), _, _) if env.kid() == row.kid => Some(env.clone()),
        (_, Origin::Generated, Some(sealed)) => match open(row, alg, sealed, &sources.sealing) {
            Ok(key) => Some(key),
            Err(OpenError::Seal(reason)) if strict && matches!(state, KeyState::Active | KeyState::Next) => {
                return Err(KeyRingError::Undecryptable { kid: row.kid.clone(), state, reason });
            }
            Err(OpenError::Seal(reason)) => {
                problem = Some(format!(
                    "it does not decrypt ({reason}): this instance's SESSION_SECRET differs from the one it was sealed under"
                ));
                None
            }
            Err(OpenError::Key(reason)) => return Err(corrupt(reason)),
        },
        (_, Origin::Generated, None) => {
            problem = Some("its private half is not in the database".to_string());
            None
        }
        (_, Origin::Env, _) => None,
    };
    let tokens = match &signing {
        Some(key) => TokenKeys::new(key)?,
        None => TokenKeys::published(&public)?,
    };
    Ok(Entry {
        kid: row.kid.clone(),
        alg,
        origin: row.origin,
        created_at: row.created_at,
        jwk: public.public_jwk(),
        tokens: Arc::new(tokens),
        signing,
        sealed: row.private_key_sealed.clone(),
        problem,
    })
}

enum OpenError {
    Seal(SealError),
    Key(String),
}

fn open(row: &StoredKey, alg: Algorithm, sealed: &str, sealing: &SealingKey) -> Result<SigningKey, OpenError> {
    let pem = sealing.open(&row.kid, sealed).map_err(OpenError::Seal)?;
    let pem = std::str::from_utf8(pem.secret()).map_err(|_| OpenError::Key("the private key is not PEM".into()))?;
    let key = SigningKey::from_stored_pem(pem, alg, &format!("signing key {}", row.kid))
        .map_err(|e| OpenError::Key(e.to_string()))?;
    if key.kid() != row.kid {
        return Err(OpenError::Key(format!("its private key's thumbprint is {}", key.kid())));
    }
    Ok(key)
}

/// One refresh: the writes that are due, then the set read again (reusing what `previous`
/// already parsed). Lenient: a key that does not decrypt is kept as published only.
pub fn refresh(
    conn: &mut AnyConnection,
    sources: &Sources,
    previous: &KeySet,
    now: i64,
) -> Result<KeySet, KeyRingError> {
    let rows = maintain(conn, sources, now)?;
    build(&rows, Some(previous), sources, now, false)
}

/// What was last said about the signer, so that a change is logged once.
#[derive(Clone, PartialEq, Eq)]
enum Said {
    Signs(String),
    FallsBack(String, String),
    Cannot(String),
}

/// Refreshes `ring` every refresh interval for the life of the process; logs a change of signer,
/// a new next key, and failures (once per kind until it recovers).
pub async fn follow(ring: Arc<KeyRing>, pool: Pool) {
    let interval = ring.sources.policy.refresh_interval;
    let mut said = describe(&ring.snapshot(), storage::unix_now());
    let mut failing = false;
    loop {
        tokio::time::sleep(interval).await;
        let previous = ring.snapshot();
        let sources = ring.sources.clone();
        let now = storage::unix_now();
        let prior = previous.clone();
        let result =
            storage::run(&pool, move |conn| Ok(refresh(conn, &sources, &prior, now).map_err(|e| e.to_string())))
                .await
                .map_err(|e| e.to_string())
                .and_then(|inner| inner);
        match result {
            Ok(set) => {
                if failing {
                    tracing::info!("reading the signing keys from the database works again");
                    failing = false;
                }
                for entry in set.entries.iter().filter(|e| !previous.entries.iter().any(|p| p.kid == e.kid)) {
                    tracing::info!(kid = %entry.kid, origin = entry.origin.as_str(), "a new signing key is published in the JWKS");
                }
                ring.replace(set);
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(
                    %error,
                    "cannot read the signing keys from the database; keeping the last ones (signing stops if this lasts a publish delay)"
                );
            }
            Err(_) => {}
        }
        let now_said = describe(&ring.snapshot(), storage::unix_now());
        if now_said != said {
            match &now_said {
                Said::Signs(kid) => tracing::info!(kid = %kid, "signing tokens with key"),
                Said::FallsBack(used, active) => tracing::warn!(
                    kid = %used, active = %active,
                    "this instance does not hold the active signing key; signing with an older published key it holds"
                ),
                Said::Cannot(why) => tracing::error!("this instance cannot sign tokens: {why}"),
            }
            said = now_said;
        }
    }
}

fn describe(set: &KeySet, now: i64) -> Said {
    match set.signer(now) {
        Ok((entry, Choice::Active(_))) => Said::Signs(entry.kid.clone()),
        Ok((entry, Choice::Fallback { active, .. })) => {
            Said::FallsBack(entry.kid.clone(), set.entries[active].kid.clone())
        }
        Err(e) => Said::Cannot(e.to_string()),
    }
}
