//! `truxectl keys list` and `truxectl keys rotate`: the signing schedule in the database, as the
//! servers read it (`truxe_server::keyring`).

use std::io::Write;

use anyhow::{Context, bail};
use truxe_server::config::{Config, format_duration};
use truxe_server::datadir;
use truxe_server::keyring::{self, Policy, SealingKey};
use truxe_server::keys::SigningKey;
use truxe_server::store::signing_keys::{self as store, KeyInfo, Origin, StoredKey, Summary};
use truxe_server::store::{self as storage, AnyConnection, PooledConnection, migrations};

use crate::users::format_time;
use crate::{ExitError, Global};

/// The server's configuration and a connection to its database, checked to be migrated.
struct Setup {
    config: Config,
    env_key: Option<SigningKey>,
    conn: PooledConnection,
}

fn setup(global: &Global) -> anyhow::Result<Setup> {
    let config = crate::db::server_config(global)?;
    let env_key = match &config.jwt.private_key_pem {
        Some(pem) => Some(
            SigningKey::from_pem(pem.secret(), config.jwt.public_key_pem.as_deref(), config.jwt.algorithm)
                .map_err(|e| ExitError::config(e.to_string()))?,
        ),
        None => None,
    };
    let database = crate::db::for_cli(config.database.clone(), global)?;
    let pool = storage::connect(&database)?;
    let mut conn = pool.get().with_context(|| format!("cannot open {}", database.url.redacted()))?;
    let pending = migrations::pending(&mut conn)?;
    if !pending.is_empty() {
        bail!("the database has {} pending migration(s): run `truxectl migrate` first", pending.len());
    }
    Ok(Setup { config, env_key, conn })
}

pub fn list(global: &Global, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut setup = setup(global)?;
    let now = storage::unix_now();
    let env_kid = setup.env_key.as_ref().map(|k| k.kid().to_string());
    let summary = store::summary(&mut setup.conn, env_kid.as_deref(), now)?;
    let policy = Policy::from_config(&setup.config);
    if global.json {
        let keys: Vec<serde_json::Value> = summary.keys.iter().map(|k| key_json(k, env_kid.as_deref())).collect();
        let json = serde_json::json!({
            "keys": keys,
            "now": now,
            "rotation": setup.config.jwt.rotation.map(|d| d.as_secs()),
            "rotation_applies": policy.schedule_runs,
            "publish_delay": setup.config.jwt.publish_delay.as_secs(),
        });
        writeln!(out, "{json}")?;
        return Ok(());
    }
    write_table(&summary, env_kid.as_deref(), out)?;
    let schedule = match (setup.config.jwt.rotation, policy.schedule_runs) {
        (None, _) => {
            "automatic rotation: off (JWT_KEY_ROTATION); `truxectl keys rotate` publishes a next key".to_string()
        }
        (Some(period), true) => format!("automatic rotation: every {} (JWT_KEY_ROTATION)", format_duration(period)),
        (Some(_), false) => {
            "automatic rotation: off, JWT_PRIVATE_KEY is set (the schedule never replaces the operator's key)"
                .to_string()
        }
    };
    writeln!(out, "{schedule}")?;
    Ok(())
}

fn key_json(key: &KeyInfo, env_kid: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "kid": key.kid,
        "alg": key.algorithm,
        "origin": key.origin,
        "jwt_private_key": env_kid == Some(key.kid.as_str()),
        "state": key.state,
        "created_at": key.created_at,
        "activates_at": key.activates_at,
        "retires_at": key.retires_at,
        "retired_at": key.retired_at,
    })
}

fn write_table(summary: &Summary, env_kid: Option<&str>, out: &mut dyn Write) -> anyhow::Result<()> {
    if summary.keys.is_empty() {
        writeln!(out, "no signing keys yet: truxe-server records or creates the first one when it starts")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<44} {:<6} {:<10} {:<9} {:<24} {:<24} RETIRES",
        "KID", "ALG", "ORIGIN", "STATE", "PUBLISHED", "SIGNS FROM"
    )?;
    for key in &summary.keys {
        let mut origin = key.origin.as_str().to_string();
        if env_kid == Some(key.kid.as_str()) {
            origin.push('*');
        }
        let retires = match (key.retired_at, key.retires_at) {
            (Some(at), _) => format!("{} (retired)", format_time(at)),
            (None, Some(at)) => format_time(at),
            (None, None) => "-".to_string(),
        };
        writeln!(
            out,
            "{:<44} {:<6} {:<10} {:<9} {:<24} {:<24} {retires}",
            key.kid,
            key.algorithm,
            origin,
            key.state.as_str(),
            format_time(key.created_at),
            format_time(key.activates_at),
        )?;
    }
    if env_kid.is_some_and(|kid| summary.keys.iter().any(|k| k.kid == kid)) {
        writeln!(out, "* JWT_PRIVATE_KEY of this configuration")?;
    }
    Ok(())
}

pub fn rotate(global: &Global, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut setup = setup(global)?;
    let sealing = sealing_key(&setup.config)?;
    let now = storage::unix_now();
    let rows = store::all(&mut setup.conn)?;
    let env_kid = setup.env_key.as_ref().map(|k| k.kid().to_string());
    let summary = Summary::of(&rows, env_kid.as_deref(), now);
    let Some(active) = summary.active().cloned() else {
        bail!(
            "no signing key is active yet: start truxe-server once (it records or creates the first key), then rotate"
        );
    };
    if let Some(next) = summary.keys.iter().find(|k| k.state == keyring::schedule::KeyState::Next) {
        bail!(
            "key {} is already published as the next key and signs from {}: rotate again once it is active",
            next.kid,
            format_time(next.activates_at)
        );
    }
    check_sealing(&mut setup.conn, &rows, &sealing)?;

    let policy = Policy::from_config(&setup.config);
    let activates_at = now.saturating_add(policy.timing.publish_delay);
    let takes_over_env = active.origin == Origin::Env;
    let question = if takes_over_env {
        format!(
            "Publish a new generated signing key? It signs from {} and then replaces the active key {}, which is \
             {} (its private half stays where it is; only its signing stops)",
            format_time(activates_at),
            active.kid,
            if env_kid.as_deref() == Some(active.kid.as_str()) {
                "this configuration's JWT_PRIVATE_KEY"
            } else {
                "an operator's JWT_PRIVATE_KEY"
            }
        )
    } else {
        format!(
            "Publish a new signing key? It signs from {} (JWT_KEY_PUBLISH_DELAY {}), replacing {}",
            format_time(activates_at),
            format_duration(setup.config.jwt.publish_delay),
            active.kid
        )
    };
    crate::migrate::confirm(global, &question)?;

    let key = SigningKey::generate(setup.config.jwt.algorithm, 2048)?;
    let next =
        keyring::publish_next(&mut setup.conn, &sealing, &key, &policy.timing, now, "cli")?.ok_or_else(|| {
            anyhow::anyhow!("another rotation published a next key at the same moment; see `truxectl keys list`")
        })?;
    let after = store::summary(&mut setup.conn, env_kid.as_deref(), now)?;
    let superseded: Vec<&KeyInfo> =
        after.keys.iter().filter(|k| k.kid != next.kid && k.state.is_published() && k.retires_at.is_some()).collect();

    if global.json {
        let json = serde_json::json!({
            "kid": next.kid,
            "alg": next.algorithm,
            "published_at": next.created_at,
            "activates_at": next.activates_at,
            "retiring": superseded.iter().map(|k| serde_json::json!({ "kid": k.kid, "retires_at": k.retires_at })).collect::<Vec<_>>(),
        });
        writeln!(out, "{json}")?;
    } else {
        writeln!(out, "Published signing key {} ({}) as the next key.", next.kid, next.algorithm)?;
        writeln!(out, "  in the JWKS:  from now ({})", format_time(next.created_at))?;
        writeln!(
            out,
            "  signs from:   {} (after JWT_KEY_PUBLISH_DELAY, {})",
            format_time(next.activates_at),
            format_duration(setup.config.jwt.publish_delay)
        )?;
        for key in &superseded {
            if let Some(at) = key.retires_at {
                writeln!(
                    out,
                    "  retiring:     {} leaves the JWKS at {} (the last token it signs has expired by then)",
                    key.kid,
                    format_time(at)
                )?;
            }
        }
    }
    if takes_over_env {
        eprintln!(
            "truxectl: note: the generated key takes over signing from JWT_PRIVATE_KEY ({}) at {}; remove \
             JWT_PRIVATE_KEY afterwards, and set JWT_KEY_ROTATION for automatic rotation",
            active.kid,
            format_time(activates_at)
        );
    }
    Ok(())
}

/// The key the new key is sealed under: the servers' `SESSION_SECRET` (or the development data
/// directory's generated one). Without one the servers could not open the key.
fn sealing_key(config: &Config) -> anyhow::Result<SealingKey> {
    datadir::existing_sealing_key(config)?.ok_or_else(|| {
        ExitError::config(
            "SESSION_SECRET is not set (and the data directory has no session-secret file): the new key is sealed \
             under it, and the servers must open it with theirs; run with the servers' configuration (--env-file)",
        )
    })
}

/// Refuses to publish a key the servers could not open: this `SESSION_SECRET` must open every
/// generated key still in use, and match the fingerprint the last server start recorded.
fn check_sealing(conn: &mut AnyConnection, rows: &[StoredKey], sealing: &SealingKey) -> anyhow::Result<()> {
    let mismatch = |what: String| {
        ExitError::config(format!(
            "{what}: this SESSION_SECRET is not the one the servers use, so they could not open the new key; run with \
             the servers' configuration (--env-file)"
        ))
    };
    for row in rows.iter().filter(|k| k.retired_at.is_none()) {
        if let Some(sealed) = &row.private_key_sealed
            && sealing.open(&row.kid, sealed).is_err()
        {
            return Err(mismatch(format!("signing key {} does not decrypt", row.kid)));
        }
    }
    if let Some(recorded) = store::seal_fingerprint(conn)?
        && recorded != sealing.fingerprint()
    {
        return Err(mismatch("the servers recorded another SESSION_SECRET at their last start".to_string()));
    }
    Ok(())
}
