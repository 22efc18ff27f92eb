//! The `signing_keys` table: every key that signs or signed tokens, with its schedule
//! (`activates_at`, `retires_at`) and, for keys Truxe generated, the sealed private half.
//!
//! The rows are the one source every instance reads its JWKS and its signing key from; the
//! states are derived from their times by [`crate::keyring::schedule`].

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::schema::{server_secrets, signing_keys};
use super::{AnyConnection, StoreError};
use crate::keyring::schedule::{self, KeyState, KeyTimes};

/// Where a key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `JWT_PRIVATE_KEY`: the operator's. Its private half is never stored; the schedule never
    /// replaces it.
    Env,
    /// Made by Truxe (first start, the data directory, `truxectl keys rotate`, the schedule).
    Generated,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Env => "env",
            Origin::Generated => "generated",
        }
    }

    fn parse(value: &str) -> Result<Self, StoreError> {
        match value {
            "env" => Ok(Origin::Env),
            "generated" => Ok(Origin::Generated),
            other => Err(StoreError::Corrupt(format!("signing key origin {other:?}"))),
        }
    }
}

#[derive(Queryable, Selectable, Clone, PartialEq, Eq)]
#[diesel(table_name = signing_keys)]
struct Row {
    kid: String,
    algorithm: String,
    public_pem: String,
    created_at: i64,
    retired_at: Option<i64>,
    origin: String,
    private_key_sealed: Option<String>,
    activates_at: i64,
    retires_at: Option<i64>,
}

/// One row, as the key ring and `truxectl keys list` read it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: String,
    pub public_pem: String,
    pub origin: Origin,
    /// `v1.…` (see `keyring::seal`); `None` for `env` keys and once retired.
    pub private_key_sealed: Option<String>,
    /// Published from here on.
    pub created_at: i64,
    /// Signs from here on (until a later key's `activates_at`).
    pub activates_at: i64,
    /// Leaves the JWKS here; set once a successor is known.
    pub retires_at: Option<i64>,
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("origin", &self.origin)
            .field("sealed", &self.private_key_sealed.is_some())
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("retires_at", &self.retires_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

impl StoredKey {
    pub fn times(&self) -> KeyTimes {
        KeyTimes {
            kid: self.kid.clone(),
            activates_at: self.activates_at,
            retires_at: self.retires_at,
            retired_at: self.retired_at,
        }
    }

    fn from_row(row: Row) -> Result<Self, StoreError> {
        Ok(Self {
            origin: Origin::parse(&row.origin)?,
            kid: row.kid,
            algorithm: row.algorithm,
            public_pem: row.public_pem,
            private_key_sealed: row.private_key_sealed,
            created_at: row.created_at,
            activates_at: row.activates_at,
            retires_at: row.retires_at,
            retired_at: row.retired_at,
        })
    }
}

/// A key to add to the schedule.
pub struct NewKey<'a> {
    pub kid: &'a str,
    pub algorithm: &'a str,
    pub public_pem: &'a str,
    pub origin: Origin,
    pub private_key_sealed: Option<&'a str>,
    pub created_at: i64,
    pub activates_at: i64,
}

/// Every key, oldest activation first (the table holds one row per rotation: a few dozen at most).
pub fn all(conn: &mut AnyConnection) -> Result<Vec<StoredKey>, StoreError> {
    let rows: Vec<Row> = signing_keys::table
        .select(Row::as_select())
        .order((signing_keys::activates_at.asc(), signing_keys::kid.asc()))
        .load(conn)?;
    rows.into_iter().map(StoredKey::from_row).collect()
}

pub fn find(conn: &mut AnyConnection, kid: &str) -> Result<Option<StoredKey>, StoreError> {
    let row: Option<Row> =
        signing_keys::table.filter(signing_keys::kid.eq(kid)).select(Row::as_select()).first(conn).optional()?;
    row.map(StoredKey::from_row).transpose()
}

/// Inserts `key`; `false` when its kid is already there (a lost race between instances starting
/// together is not an error).
pub fn insert(conn: &mut AnyConnection, key: &NewKey<'_>) -> Result<bool, StoreError> {
    if find(conn, key.kid)?.is_some() {
        return Ok(false);
    }
    let inserted = diesel::insert_into(signing_keys::table)
        .values((
            signing_keys::kid.eq(key.kid),
            signing_keys::algorithm.eq(key.algorithm),
            signing_keys::public_pem.eq(key.public_pem),
            signing_keys::created_at.eq(key.created_at),
            signing_keys::origin.eq(key.origin.as_str()),
            signing_keys::private_key_sealed.eq(key.private_key_sealed),
            signing_keys::activates_at.eq(key.activates_at),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(true),
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Records the operator's `JWT_PRIVATE_KEY` (its public half only) the first time an instance
/// starts with it, active from then on. Idempotent; returns whether it was new.
pub fn record(
    conn: &mut AnyConnection,
    kid: &str,
    algorithm: &str,
    public_pem: &str,
    now: i64,
) -> Result<bool, StoreError> {
    insert(
        conn,
        &NewKey {
            kid,
            algorithm,
            public_pem,
            origin: Origin::Env,
            private_key_sealed: None,
            created_at: now,
            activates_at: now,
        },
    )
}

/// Gives a generated key its sealed private half (the data directory's key, first recorded by an
/// older version, or sealed again under a new development session secret). Never touches a
/// retired key.
pub fn store_private_key(conn: &mut AnyConnection, kid: &str, sealed: &str) -> Result<(), StoreError> {
    diesel::update(signing_keys::table.filter(signing_keys::kid.eq(kid)).filter(signing_keys::retired_at.is_null()))
        .set((signing_keys::origin.eq(Origin::Generated.as_str()), signing_keys::private_key_sealed.eq(sealed)))
        .execute(conn)?;
    Ok(())
}

/// Moves `retires_at` to `at` unless it is already as late (see `schedule::retirements`).
pub fn extend_retirement(conn: &mut AnyConnection, kid: &str, at: i64) -> Result<(), StoreError> {
    diesel::update(
        signing_keys::table
            .filter(signing_keys::kid.eq(kid))
            .filter(signing_keys::retired_at.is_null())
            .filter(signing_keys::retires_at.is_null().or(signing_keys::retires_at.lt(at))),
    )
    .set(signing_keys::retires_at.eq(at))
    .execute(conn)?;
    Ok(())
}

/// Stamps `retired_at` on `kid` and wipes its sealed private half: nothing signs with a retired
/// key again, so nothing needs it.
pub fn mark_retired(conn: &mut AnyConnection, kid: &str, now: i64) -> Result<(), StoreError> {
    diesel::update(signing_keys::table.filter(signing_keys::kid.eq(kid)).filter(signing_keys::retired_at.is_null()))
        .set((signing_keys::retired_at.eq(now), signing_keys::private_key_sealed.eq(None::<String>)))
        .execute(conn)?;
    Ok(())
}

/// Runs `work` in a transaction that holds the schedule's write lock, so that two instances (or
/// an instance and `truxectl keys rotate`) deciding "no next key yet, publish one" at the same
/// moment publish one key, not two: a PostgreSQL advisory lock; on SQLite a first write takes the
/// database's single write lock (waiting for it up to the busy timeout).
pub fn with_schedule_lock<T>(
    conn: &mut AnyConnection,
    work: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.transaction(|conn| {
        match conn {
            AnyConnection::Postgresql(_) => conn.batch_execute("SELECT pg_advisory_xact_lock(7305786418)")?,
            AnyConnection::Sqlite(_) => conn.batch_execute("UPDATE signing_keys SET kid = kid WHERE 1 = 0")?,
        }
        work(conn)
    })
}

/// The `server_secrets` row holding the seal fingerprint (not a secret: a one-way HMAC).
const SEAL_CHECK: &str = "signing_key_seal_check";

/// Records the fingerprint of the key this server seals generated keys under (the last start
/// wins: after a deliberate `SESSION_SECRET` change, the restarted servers are right).
pub fn record_seal_fingerprint(conn: &mut AnyConnection, fingerprint: &str, now: i64) -> Result<(), StoreError> {
    if seal_fingerprint(conn)?.as_deref() == Some(fingerprint) {
        return Ok(());
    }
    let updated = diesel::update(server_secrets::table.filter(server_secrets::name.eq(SEAL_CHECK)))
        .set(server_secrets::value.eq(fingerprint))
        .execute(conn)?;
    if updated == 0 {
        let inserted = diesel::insert_into(server_secrets::table)
            .values((
                server_secrets::name.eq(SEAL_CHECK),
                server_secrets::value.eq(fingerprint),
                server_secrets::created_at.eq(now),
            ))
            .execute(conn);
        match inserted {
            Ok(_) => {}
            Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The fingerprint the last server start recorded, if any.
pub fn seal_fingerprint(conn: &mut AnyConnection) -> Result<Option<String>, StoreError> {
    Ok(server_secrets::table
        .filter(server_secrets::name.eq(SEAL_CHECK))
        .select(server_secrets::value)
        .first(conn)
        .optional()?)
}

/// What `truxectl doctor` says about signing keys, computed from the rows and the time.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub keys: Vec<KeyInfo>,
    /// The kid of `JWT_PRIVATE_KEY`, when the caller has one.
    pub env_kid: Option<String>,
    pub now: i64,
}

/// One key with its state at [`Summary::now`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub algorithm: String,
    pub origin: Origin,
    pub state: KeyState,
    pub created_at: i64,
    pub activates_at: i64,
    pub retires_at: Option<i64>,
    pub retired_at: Option<i64>,
}

/// How sure a note is that something is wrong (`doctor` prints ok / warn / FAIL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoteLevel {
    Ok,
    Warn,
    Fail,
}

impl Summary {
    pub fn of(keys: &[StoredKey], env_kid: Option<&str>, now: i64) -> Self {
        let times: Vec<KeyTimes> = keys.iter().map(StoredKey::times).collect();
        let states = schedule::states(&times, now);
        let keys = keys
            .iter()
            .zip(states)
            .map(|(k, state)| KeyInfo {
                kid: k.kid.clone(),
                algorithm: k.algorithm.clone(),
                origin: k.origin,
                state,
                created_at: k.created_at,
                activates_at: k.activates_at,
                retires_at: k.retires_at,
                retired_at: k.retired_at,
            })
            .collect();
        Self { keys, env_kid: env_kid.map(str::to_string), now }
    }

    pub fn active(&self) -> Option<&KeyInfo> {
        self.keys.iter().find(|k| k.state == KeyState::Active)
    }

    pub fn published(&self) -> impl Iterator<Item = &KeyInfo> {
        self.keys.iter().filter(|k| k.state.is_published())
    }

    /// Whether the active key is the operator's `JWT_PRIVATE_KEY`: the schedule does not apply.
    pub fn active_is_env_key(&self) -> bool {
        self.active().is_some_and(|k| self.env_kid.as_deref() == Some(k.kid.as_str()))
    }

    /// One line per finding, for `truxectl doctor`: which key signs and since when, whether the
    /// schedule applies to it, and whether the JWKS overlap is as it should be.
    pub fn notes(&self, rotation: Option<std::time::Duration>) -> Vec<(NoteLevel, String)> {
        let mut notes = Vec::new();
        let Some(active) = self.active() else {
            notes.push((NoteLevel::Fail, "no signing key is active: start the server once to create one".to_string()));
            return notes;
        };
        let age_days = (self.now - active.activates_at).max(0) / 86_400;
        let published = self.published().count();
        if self.active_is_env_key() {
            notes.push((
                NoteLevel::Ok,
                format!(
                    "the active key {} is the operator's JWT_PRIVATE_KEY (signing for {age_days} days); automatic \
                     rotation does not apply: rotate it with `truxectl keys rotate` or by replacing JWT_PRIVATE_KEY",
                    active.kid
                ),
            ));
        } else {
            notes.push((
                NoteLevel::Ok,
                format!("the active key {} ({}) has signed for {age_days} days", active.kid, active.origin.as_str()),
            ));
            if let Some(env_kid) = &self.env_kid {
                notes.push((
                    NoteLevel::Warn,
                    format!(
                        "JWT_PRIVATE_KEY ({env_kid}) no longer signs: key {} took over; remove JWT_PRIVATE_KEY \
                         (and set JWT_KEY_ROTATION for automatic rotation)",
                        active.kid
                    ),
                ));
            }
            if let Some(period) = rotation {
                let period = i64::try_from(period.as_secs()).unwrap_or(i64::MAX);
                if self.now - active.activates_at > period.saturating_add(86_400) {
                    notes.push((
                        NoteLevel::Warn,
                        "the active key is older than JWT_KEY_ROTATION: is a server running to rotate it?".to_string(),
                    ));
                }
            }
        }
        for next in self.keys.iter().filter(|k| k.state == KeyState::Next) {
            notes.push((
                NoteLevel::Ok,
                format!("key {} is published and takes over at unix time {}", next.kid, next.activates_at),
            ));
        }
        let count = |state: KeyState| self.keys.iter().filter(|k| k.state == state).count();
        let (retiring, next) = (count(KeyState::Retiring), count(KeyState::Next));
        notes.push((
            NoteLevel::Ok,
            format!("the JWKS publishes {published} key(s): 1 active, {retiring} retiring, {next} next"),
        ));
        notes
    }
}

/// Loads the rows and summarises them at `now` (see [`Summary::notes`]).
pub fn summary(conn: &mut AnyConnection, env_kid: Option<&str>, now: i64) -> Result<Summary, StoreError> {
    Ok(Summary::of(&all(conn)?, env_kid, now))
}
