//! The signing keys every instance shares through the database: which one signs, which ones the
//! JWKS publishes, and which ones verify our own tokens (introspection, userinfo, revocation,
//! `id_token_hint`).
//!
//! A rotation, whether `truxectl keys rotate` or the `JWT_KEY_ROTATION` schedule, inserts a
//! `next` key whose `activates_at` is `JWT_KEY_PUBLISH_DELAY` away. Every instance reads the
//! table at start and then every [`crate::config::JwtConfig::key_refresh_interval`], publishes
//! every key not retired, and signs with the key the stored times make active ([`schedule`]).
//! Since the delay is longer than the JWKS max-age plus the refresh interval, every JWKS a
//! resource server can still hold when the next key starts signing already lists it; the old key
//! stays published until the last token it signed has expired.
//!
//! Bounded staleness: an instance that cannot read the table keeps its last key set, and
//! [`KeySet::signer`] refuses to sign once that set is a publish delay old (a key it has not
//! seen could be active by then); its JWKS `max-age` shrinks towards that moment too.

mod load;
pub mod schedule;
pub mod seal;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::Algorithm as JwsAlgorithm;
use serde::Serialize;

use crate::config::Config;
use crate::jwt::{self, AccessTokenClaims, IdTokenHint, JwtError, Rejection, TokenKeys};
use crate::keys::{Algorithm, SigningKey};
use crate::store::signing_keys::Origin;
use schedule::{Choice, KeyState, KeyTimes, NoSigner, Timing};
pub use seal::SealingKey;

pub use load::{KeyRingError, Sources, bootstrap, follow, publish_next, refresh};

/// The timing and algorithm rules, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub timing: Timing,
    /// `JWT_JWKS_MAX_AGE` in seconds.
    pub jwks_max_age: i64,
    pub refresh_interval: Duration,
    /// `JWT_ALGORITHM`: what generated keys are.
    pub algorithm: Algorithm,
    /// The schedule runs: `JWT_KEY_ROTATION` is set and no `JWT_PRIVATE_KEY` is.
    pub schedule_runs: bool,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Policy {
    pub fn from_config(config: &Config) -> Self {
        let jwt = &config.jwt;
        let rotation = jwt.rotation.map(secs);
        Self {
            timing: Timing::new(secs(jwt.publish_delay), secs(config.access_token_ttl), rotation),
            jwks_max_age: secs(jwt.jwks_max_age),
            refresh_interval: jwt.key_refresh_interval(),
            algorithm: jwt.algorithm,
            schedule_runs: rotation.is_some() && jwt.private_key_pem.is_none(),
        }
    }
}

/// One published key in memory. Immutable, so that a refresh reuses it for a kid it has seen
/// (no decrypting and parsing every few seconds); its times live in [`KeySet`].
pub struct Entry {
    pub kid: String,
    pub alg: Algorithm,
    pub origin: Origin,
    pub created_at: i64,
    jwk: serde_json::Value,
    tokens: Arc<TokenKeys>,
    /// The private half, when this instance holds it (for the readiness probe).
    signing: Option<SigningKey>,
    /// The sealed value it was opened from: a changed one is opened again.
    sealed: Option<String>,
    /// Why a generated key's private half is missing (it did not decrypt).
    pub problem: Option<String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("origin", &self.origin)
            .field("can_sign", &self.signing.is_some())
            .field("problem", &self.problem)
            .finish_non_exhaustive()
    }
}

impl Entry {
    pub fn can_sign(&self) -> bool {
        self.signing.is_some()
    }
}

/// The keys as read from the database at `loaded_at`: every key not retired then.
#[derive(Debug)]
pub struct KeySet {
    entries: Vec<Arc<Entry>>,
    times: Vec<KeyTimes>,
    loaded_at: i64,
    policy: Policy,
}

/// A key and its state at some moment, for the JWKS, readiness and logs.
#[derive(Clone, Debug, Serialize)]
pub struct KeyView {
    pub kid: String,
    pub alg: &'static str,
    pub origin: &'static str,
    pub state: KeyState,
    pub activates_at: i64,
    pub retires_at: Option<i64>,
}

impl KeySet {
    pub fn loaded_at(&self) -> i64 {
        self.loaded_at
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    fn states(&self, now: i64) -> Vec<KeyState> {
        schedule::states(&self.times, now)
    }

    /// Every key with its state at `now`, retired ones included until the next refresh drops them.
    pub fn views(&self, now: i64) -> Vec<KeyView> {
        self.entries
            .iter()
            .zip(&self.times)
            .zip(self.states(now))
            .map(|((entry, times), state)| KeyView {
                kid: entry.kid.clone(),
                alg: entry.alg.as_str(),
                origin: entry.origin.as_str(),
                state,
                activates_at: times.activates_at,
                retires_at: times.retires_at,
            })
            .collect()
    }

    /// The key to sign with at `now` (see [`schedule::choose_signer`]), unless this set is more
    /// than a publish delay old: a key it has not seen could be active by then. (Up to then, a
    /// token signed by the old key still outlives nothing: the old key retires a margin after the
    /// new one's activation, and the margin covers this second of rounding.)
    pub fn signer(&self, now: i64) -> Result<(&Arc<Entry>, Choice), NoSigner> {
        let stale_for = now.saturating_sub(self.loaded_at);
        let publish_delay = self.policy.timing.publish_delay;
        if stale_for > publish_delay {
            return Err(NoSigner::Stale { stale_for, publish_delay });
        }
        let choice = schedule::choose_signer(&self.times, |i| self.entries[i].can_sign(), &self.policy.timing, now)?;
        Ok((&self.entries[choice.index()], choice))
    }

    /// The published keys at `now`: the active one first (libraries that ignore `kid` take the
    /// first), then the next, then the retiring ones.
    pub fn published(&self, now: i64) -> Vec<&Arc<Entry>> {
        let states = self.states(now);
        let rank = |state: KeyState| match state {
            KeyState::Active => 0,
            KeyState::Next => 1,
            KeyState::Retiring => 2,
            KeyState::Retired => 3,
        };
        let mut published: Vec<(usize, KeyState)> =
            states.into_iter().enumerate().filter(|(_, state)| state.is_published()).collect();
        published.sort_by_key(|&(i, state)| (rank(state), std::cmp::Reverse(self.times[i].activates_at)));
        published.into_iter().map(|(i, _)| &self.entries[i]).collect()
    }

    /// The JWK Set at `now` and the `max-age` it may be cached for: `JWT_JWKS_MAX_AGE`, but never
    /// past the moment a key this set has not seen could start signing (one publish delay after
    /// the set was read), so that a stale instance's JWKS is not cached beyond what it knows.
    pub fn jwks(&self, now: i64) -> (serde_json::Value, i64) {
        let keys: Vec<serde_json::Value> = self.published(now).into_iter().map(|e| e.jwk.clone()).collect();
        let horizon = self.loaded_at.saturating_add(self.policy.timing.publish_delay).saturating_sub(now);
        let max_age = self.policy.jwks_max_age.min(horizon).max(0);
        (serde_json::json!({ "keys": keys }), max_age)
    }

    /// The published key `kid` at `now`, to verify one of our own tokens with.
    fn verifier(&self, kid: &str, now: i64) -> Option<&Arc<Entry>> {
        let states = self.states(now);
        self.entries.iter().zip(states).find(|(e, state)| e.kid == kid && state.is_published()).map(|(e, _)| e)
    }

    /// Signs and verifies the readiness probe with the key [`KeySet::signer`] picks.
    pub fn probe(&self, now: i64) -> Result<(String, Algorithm), String> {
        let (entry, _) = self.signer(now).map_err(|e| e.to_string())?;
        let key = entry.signing.as_ref().ok_or_else(|| format!("key {} has no private half here", entry.kid))?;
        let probe = b"truxe readiness probe";
        match key.sign(probe) {
            Ok(signature) if key.verify(probe, &signature) => Ok((entry.kid.clone(), entry.alg)),
            Ok(_) => Err("signature does not verify".to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The shared, refreshed key set of one server process.
pub struct KeyRing {
    current: RwLock<Arc<KeySet>>,
    sources: Sources,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("current", &self.snapshot()).finish_non_exhaustive()
    }
}

impl KeyRing {
    pub fn new(set: KeySet, sources: Sources) -> Self {
        Self { current: RwLock::new(Arc::new(set)), sources }
    }

    pub fn snapshot(&self) -> Arc<KeySet> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn replace(&self, set: KeySet) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(set);
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The keys one request works with at `now` (the `now` its tokens' `iat` will carry).
    pub fn request_keys(&self, now: i64) -> RequestKeys {
        let set = self.snapshot();
        let signer = set.signer(now).map(|(entry, _)| entry.tokens.clone());
        RequestKeys { set, signer }
    }
}

/// What a token endpoint request signs with (chosen once, at its start) and verifies with.
pub struct RequestKeys {
    set: Arc<KeySet>,
    signer: Result<Arc<TokenKeys>, NoSigner>,
}

impl std::fmt::Debug for RequestKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestKeys").field("signer", &self.signer.as_ref().map(|k| k.kid())).finish_non_exhaustive()
    }
}

impl RequestKeys {
    fn signer(&self) -> Result<&TokenKeys, JwtError> {
        self.signer.as_deref().map_err(|e| JwtError::NoSigningKey(e.to_string()))
    }

    /// A signed access token under the chosen key.
    pub fn encode(&self, claims: &AccessTokenClaims) -> Result<String, JwtError> {
        self.signer()?.encode(claims)
    }

    pub fn encode_id_token(&self, claims: &impl Serialize) -> Result<String, JwtError> {
        self.signer()?.encode_id_token(claims)
    }

    /// The chosen key's algorithm (for `at_hash`); RS256 when there is none, which only
    /// happens when [`RequestKeys::encode`] already failed.
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.signer.as_ref().map_or(JwsAlgorithm::RS256, |k| k.algorithm())
    }

    /// An access token of ours, live at `now`, signed by any key published at `now`.
    pub fn verify(&self, token: &str, issuer: &str, now: i64) -> Result<AccessTokenClaims, Rejection> {
        let kid = jwt::header_kid(token).ok_or(Rejection::Malformed)?;
        let entry = self.set.verifier(&kid, now).ok_or(Rejection::OtherKey)?;
        entry.tokens.verify(token, issuer, now)
    }

    /// An ID token of ours (expired or not) signed by a key published now.
    pub fn verify_id_token_hint(&self, token: &str, issuer: &str, now: i64) -> Result<IdTokenHint, Rejection> {
        let kid = jwt::header_kid(token).ok_or(Rejection::Malformed)?;
        let entry = self.set.verifier(&kid, now).ok_or(Rejection::OtherKey)?;
        entry.tokens.verify_id_token_hint(token, issuer)
    }
}

#[cfg(test)]
mod tests;
