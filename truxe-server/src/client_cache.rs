//! The cache of registered clients in front of the database on the token, introspection and
//! revocation paths: a short-lived first level in the process, then (with `REDIS_URL`) the
//! second level every instance shares ([`crate::shared::clients`], 15 minutes), then the
//! database.
//!
//! A change through any instance's admin API or `truxectl` drops the client from Redis and, by
//! the announcement every instance follows, from each first level at once. Without Redis, or
//! while its subscription is broken, a change made elsewhere is seen within
//! [`CLIENT_CACHE_TTL`]. Only clients that exist are cached: an unknown `client_id` always goes
//! to the database, so a client registered a moment ago is never refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::model::ClientId;
use crate::model::client::Client;
use crate::shared::SharedRedis;
use crate::shared::clients::{self as shared_clients, Lookup};

/// How long a client read from the database is trusted: a client suspended or deleted on another
/// instance, or on the database directly, is refused everywhere within this time.
pub const CLIENT_CACHE_TTL: Duration = Duration::from_secs(2);

/// Entries kept at most; beyond it, expired entries go first, then the oldest.
pub const CLIENT_CACHE_CAPACITY: usize = 10_000;

#[derive(Debug)]
pub struct ClientCache {
    entries: RwLock<HashMap<ClientId, Entry>>,
    /// Bumped by every invalidation, so that a read that raced one is not cached.
    generation: AtomicU64,
    ttl: Duration,
    capacity: usize,
    /// The second level, when Redis is configured.
    shared: Option<Arc<SharedRedis>>,
}

#[derive(Debug)]
struct Entry {
    client: Arc<Client>,
    loaded_at: Instant,
}

impl Default for ClientCache {
    fn default() -> Self {
        Self::new(CLIENT_CACHE_TTL, CLIENT_CACHE_CAPACITY)
    }
}

impl ClientCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            ttl,
            capacity: capacity.max(1),
            shared: None,
        }
    }

    /// The same cache with Redis as its second level.
    pub fn with_shared(self, shared: Arc<SharedRedis>) -> Self {
        Self { shared: Some(shared), ..self }
    }

    /// The cached client, while it is younger than the TTL at `now`.
    pub fn get(&self, client_id: &str, now: Instant) -> Option<Arc<Client>> {
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = entries.get(client_id)?;
        self.is_fresh(entry, now).then(|| entry.client.clone())
    }

    /// The client from the first level, else from Redis, else from `load` (the database; its
    /// answer is cached at both levels when it is a client). Blocking: call it where database
    /// work runs (a Redis call waits at most [`crate::shared::CALL_TIMEOUT`]).
    pub fn get_or_load<E>(
        &self,
        client_id: &str,
        now: Instant,
        load: impl FnOnce() -> Result<Option<Client>, E>,
    ) -> Result<Option<Arc<Client>>, E> {
        if let Some(client) = self.get(client_id, now) {
            return Ok(Some(client));
        }
        // Read before the lower levels: an invalidation from here on keeps their answer out.
        let generation = self.generation.load(Ordering::Acquire);
        let fill = match &self.shared {
            Some(shared) => match shared_clients::lookup(shared, client_id) {
                Lookup::Hit(client) => return Ok(Some(self.insert_unless_invalidated(*client, now, generation))),
                Lookup::Miss { version } => Some((shared, version)),
                Lookup::Unavailable => None,
            },
            None => None,
        };
        let loaded = load()?;
        if let (Some(client), Some((shared, version))) = (&loaded, fill) {
            shared_clients::fill(shared, client, &version);
        }
        Ok(loaded.map(|client| self.insert_unless_invalidated(client, now, generation)))
    }

    pub fn insert(&self, client: Client, now: Instant) -> Arc<Client> {
        self.insert_unless_invalidated(client, now, self.generation.load(Ordering::Acquire))
    }

    /// Caches `client` unless an invalidation happened since `generation` was read (the client
    /// may have been read before that change): it is then returned but not kept.
    fn insert_unless_invalidated(&self, client: Client, now: Instant, generation: u64) -> Arc<Client> {
        let client = Arc::new(client);
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return client;
        }
        if entries.len() >= self.capacity && !entries.contains_key(&client.client_id) {
            entries.retain(|_, entry| self.is_fresh(entry, now));
            if entries.len() >= self.capacity {
                let oldest = entries.iter().min_by_key(|(_, entry)| entry.loaded_at).map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(client.client_id.clone(), Entry { client: client.clone(), loaded_at: now });
        client
    }

    /// Forgets a client this instance just changed, so that its next request reads the change.
    pub fn invalidate(&self, client_id: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(client_id);
    }

    /// Forgets every client: announcements may have been missed (a (re)subscription).
    pub fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// After this instance changed `client_id` in the database: forgets it here and tells every
    /// other instance (through Redis, retried in the background when Redis fails).
    pub async fn changed(&self, client_id: &str) {
        self.invalidate(client_id);
        if let Some(shared) = &self.shared {
            shared_clients::announce_change(shared, client_id).await;
        }
    }

    fn is_fresh(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.loaded_at) < self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::client::{AuthMethod, GrantType};
    use crate::oauth::scope::ScopeSet;

    fn client(id: &str) -> Client {
        Client {
            client_id: id.into(),
            client_name: "Service".into(),
            token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
            grant_types: Vec::new(),
            allowed_scopes: ScopeSet::default(),
            redirect_uris: Vec::new(),
            require_consent: false,
            ..Client::example()
        }
    }

    fn load(loads: &mut u32, found: Option<Client>) -> Result<Option<Client>, ()> {
        *loads += 1;
        Ok(found)
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = ClientCache::default();
        let t0 = Instant::now();
        let mut loads = 0;
        let first = cache.get_or_load("cl_a", t0, || load(&mut loads, Some(client("cl_a")))).expect("load");
        assert_eq!(first.map(|c| c.client_id.clone()).as_deref(), Some("cl_a"));
        let almost = t0 + CLIENT_CACHE_TTL - Duration::from_millis(1);
        assert!(cache.get_or_load("cl_a", almost, || load(&mut loads, None)).expect("cached").is_some());
        assert_eq!(loads, 1, "served from the cache within the TTL");

        let expired = t0 + CLIENT_CACHE_TTL;
        assert!(cache.get("cl_a", expired).is_none());
        assert!(cache.get_or_load("cl_a", expired, || load(&mut loads, None)).expect("reload").is_none());
        assert_eq!(loads, 2, "read again once the TTL is over");
    }

    #[test]
    fn unknown_clients_are_not_cached_and_invalidation_is_immediate() {
        let cache = ClientCache::default();
        let now = Instant::now();
        let mut loads = 0;
        assert!(cache.get_or_load("cl_new", now, || load(&mut loads, None)).expect("load").is_none());
        let found = cache.get_or_load("cl_new", now, || load(&mut loads, Some(client("cl_new")))).expect("load");
        assert!(found.is_some(), "a client created after a miss is found at once");
        assert_eq!(loads, 2);

        cache.invalidate("cl_new");
        assert!(cache.get("cl_new", now).is_none());
    }

    #[test]
    fn a_read_that_raced_an_announcement_or_a_resubscription_is_not_kept() {
        let cache = ClientCache::default();
        let now = Instant::now();
        // The change arrives (pub/sub) while the lower levels are being read: their answer may
        // be the old client, so it is returned but not cached.
        let raced = cache
            .get_or_load("cl_a", now, || {
                cache.invalidate("cl_a");
                Ok::<_, ()>(Some(client("cl_a")))
            })
            .expect("load");
        assert!(raced.is_some());
        assert!(cache.get("cl_a", now).is_none(), "not kept after an invalidation during the read");

        cache.insert(client("cl_b"), now);
        let raced = cache
            .get_or_load("cl_c", now, || {
                cache.clear();
                Ok::<_, ()>(Some(client("cl_c")))
            })
            .expect("load");
        assert!(raced.is_some());
        assert!(cache.get("cl_c", now).is_none() && cache.get("cl_b", now).is_none(), "a resubscription clears all");
        cache.get_or_load("cl_c", now, || Ok::<_, ()>(Some(client("cl_c")))).expect("load");
        assert!(cache.get("cl_c", now).is_some(), "the next read is cached again");
    }

    #[test]
    fn the_shared_form_round_trips() {
        let mut original = client("cl_json");
        original.grant_types = vec![GrantType::ClientCredentials, GrantType::RefreshToken];
        original.allowed_scopes = ScopeSet::parse("openid orders:read").expect("scopes");
        original.status = crate::model::client::ClientStatus::Suspended;
        original.token_endpoint_auth_method = AuthMethod::None;
        let json = serde_json::to_string(&original).expect("json");
        assert!(
            json.contains("\"suspended\"") && json.contains("\"client_credentials\"") && json.contains("\"none\""),
            "{json}"
        );
        let back: Client = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, original);
    }

    #[test]
    fn capacity_is_bounded() {
        let cache = ClientCache::new(CLIENT_CACHE_TTL, 2);
        let t0 = Instant::now();
        cache.insert(client("cl_a"), t0);
        cache.insert(client("cl_b"), t0 + Duration::from_millis(1));
        cache.insert(client("cl_c"), t0 + Duration::from_millis(2));
        let now = t0 + Duration::from_millis(3);
        assert!(cache.get("cl_a", now).is_none(), "the oldest went");
        assert!(cache.get("cl_b", now).is_some() && cache.get("cl_c", now).is_some());
    }
}
