//! The client cache's second level (the client as JSON under `oauth:client:{client_id}`, 15
//! minutes) and the announcement of a client change, which drops it on every instance at once.
//!
//! A change (on any instance, or by `truxectl --database-url`) bumps the client's version,
//! deletes its entry and publishes its id on `oauth:client-changed`, in one transaction. A
//! reader that missed the entry fills it only if the version it saw before reading the
//! database is still current ([`FILL_IF_UNCHANGED`]), so that a read which raced a change can
//! never put the old client back for 15 minutes. Every instance follows the channel
//! ([`follow_changes`]) and drops the client from its first level.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bb8_redis::redis;
use futures_util::StreamExt;

use super::SharedRedis;
use crate::client_cache::ClientCache;
use crate::config::RedisConfig;
use crate::model::client::Client;

/// How long a client stays in Redis (SPEC: 15 minutes).
pub const CLIENT_TTL_SECONDS: u64 = 900;

/// How long a client's version counter outlives its last change: far longer than any read of
/// the database between a miss and the fill.
pub const VERSION_TTL_SECONDS: u64 = 86_400;

/// The channel client ids are published on when the client changes (with the key prefix).
pub const CHANGED_CHANNEL: &str = "oauth:client-changed";

/// The longest wait between two attempts to subscribe (or to announce a pending change).
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// KEYS: the client's entry, its version; ARGV: the JSON, the version the reader saw before it
/// read the database ("" for none), the lifetime. Sets the entry only if no change came since.
const FILL_IF_UNCHANGED: &str = r"
local current = redis.call('GET', KEYS[2]) or ''
if current == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  return 1
end
return 0
";

pub fn client_key(config: &RedisConfig, client_id: &str) -> String {
    config.key(&format!("oauth:client:{client_id}"))
}

fn version_key(config: &RedisConfig, client_id: &str) -> String {
    config.key(&format!("oauth:client-version:{client_id}"))
}

pub fn changed_channel(config: &RedisConfig) -> String {
    config.key(CHANGED_CHANNEL)
}

/// The one announcement of a change to `client_id`, for the server and `truxectl` alike.
pub fn change_announcement(config: &RedisConfig, client_id: &str) -> redis::Pipeline {
    let version = version_key(config, client_id);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("INCR")
        .arg(&version)
        .ignore()
        .cmd("EXPIRE")
        .arg(&version)
        .arg(VERSION_TTL_SECONDS)
        .ignore()
        .cmd("DEL")
        .arg(client_key(config, client_id))
        .ignore()
        .cmd("PUBLISH")
        .arg(changed_channel(config))
        .arg(client_id)
        .ignore();
    pipe
}

/// What the second level knows about a client.
#[derive(Debug)]
pub enum Lookup {
    Hit(Box<Client>),
    /// Not in Redis; `version` is the client's version now, for [`fill`].
    Miss {
        version: String,
    },
    /// Redis is failing or being skipped: ask the database and do not fill.
    Unavailable,
}

pub fn lookup(shared: &Arc<SharedRedis>, client_id: &str) -> Lookup {
    let config = shared.config();
    let mut pipe = redis::pipe();
    pipe.cmd("MGET").arg(client_key(config, client_id)).arg(version_key(config, client_id));
    let Some(((entry, version),)) = shared.query_blocking::<((Option<String>, Option<String>),)>(pipe) else {
        return Lookup::Unavailable;
    };
    let version = version.unwrap_or_default();
    match entry.map(|json| serde_json::from_str::<Client>(&json)) {
        Some(Ok(client)) if client.client_id.as_str() == client_id => Lookup::Hit(Box::new(client)),
        Some(_) => {
            // Written by another version of Truxe, or damaged: the database answers, and the
            // fill replaces it.
            tracing::debug!(client_id, "unreadable client entry in Redis; reading the database");
            Lookup::Miss { version }
        }
        None => Lookup::Miss { version },
    }
}

/// Puts `client` (just read from the database) into Redis unless it changed since `version`
/// was read. Not waited for.
pub fn fill(shared: &Arc<SharedRedis>, client: &Client, version: &str) {
    let Ok(json) = serde_json::to_string(client) else {
        return;
    };
    let config = shared.config();
    let mut pipe = redis::pipe();
    pipe.cmd("EVAL")
        .arg(FILL_IF_UNCHANGED)
        .arg(2)
        .arg(client_key(config, &client.client_id))
        .arg(version_key(config, &client.client_id))
        .arg(json)
        .arg(version)
        .arg(CLIENT_TTL_SECONDS)
        .ignore();
    shared.send(pipe);
}

/// Client ids whose change Redis has not been told yet (each with a count of its changes, so
/// that one made while an earlier announcement was on its way is not forgotten), and the
/// wake-up of the task that keeps telling it ([`retry_pending`]).
#[derive(Debug, Default)]
pub struct Pending {
    ids: Mutex<BTreeMap<String, u64>>,
    wake: tokio::sync::Notify,
}

impl Pending {
    fn add(&self, client_id: &str) {
        *self.lock().entry(client_id.to_string()).or_default() += 1;
        self.wake.notify_one();
    }

    fn snapshot(&self) -> Vec<(String, u64)> {
        self.lock().iter().map(|(id, changes)| (id.clone(), *changes)).collect()
    }

    /// Forgets `client_id` once announced, unless it changed again meanwhile.
    fn announced(&self, client_id: &str, changes: u64) {
        let mut ids = self.lock();
        if ids.get(client_id) == Some(&changes) {
            ids.remove(client_id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// After the database change: tells every instance (through Redis) that `client_id` changed.
/// When Redis does not take it, [`retry_pending`] keeps trying until it does.
pub async fn announce_change(shared: &Arc<SharedRedis>, client_id: &str) {
    // Past the breaker: an admin request can wait one bounded call, and a skipped announcement
    // would only be queued.
    if let Err(error) = shared.query_unguarded::<()>(&change_announcement(shared.config(), client_id)).await {
        tracing::warn!(
            client_id, %error,
            "could not tell the other instances through Redis that a client changed; retrying in the background until Redis answers"
        );
        shared.pending_changes.add(client_id);
    }
}

/// The background task that announces the changes Redis did not take, until it takes them.
pub async fn retry_pending(shared: Arc<SharedRedis>) {
    let mut pause = FIRST_RETRY_PAUSE;
    loop {
        let pending = shared.pending_changes.snapshot();
        if pending.is_empty() {
            shared.pending_changes.wake.notified().await;
            continue;
        }
        let mut failed = 0;
        for (id, changes) in &pending {
            match shared.query_unguarded::<()>(&change_announcement(shared.config(), id)).await {
                Ok(()) => shared.pending_changes.announced(id, *changes),
                Err(_) => failed += 1,
            }
        }
        if failed == 0 {
            tracing::info!(clients = pending.len(), "announced the client changes made while Redis was failing");
            pause = FIRST_RETRY_PAUSE;
        } else {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }
}

/// The subscription to [`CHANGED_CHANNEL`]: drops each announced client from `cache`, and
/// clears all of `cache` on every (re)subscription, since announcements may have been missed
/// while it was down. Reconnects by itself with backoff; a subscription that breaks silently is
/// bounded by the first level's short TTL.
pub async fn follow_changes(shared: Arc<SharedRedis>, cache: Arc<ClientCache>) {
    let channel = changed_channel(shared.config());
    let mut pause = FIRST_RETRY_PAUSE;
    let mut lost = false;
    loop {
        match subscribe(&shared, &channel).await {
            Ok(pubsub) => {
                cache.clear();
                shared.set_subscribed(true);
                if lost {
                    tracing::info!("following client changes through Redis again (in-process client cache cleared)");
                } else {
                    tracing::info!("following client changes through Redis");
                }
                pause = FIRST_RETRY_PAUSE;
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    match message.get_payload::<String>() {
                        Ok(client_id) => cache.invalidate(&client_id),
                        Err(_) => cache.clear(),
                    }
                }
                shared.set_subscribed(false);
                tracing::warn!("lost the Redis subscription to client changes; reconnecting");
                lost = true;
            }
            Err(error) => {
                if !lost {
                    tracing::warn!(%error, "cannot subscribe to client changes in Redis; retrying (clients are cached for {:?} meanwhile)", crate::client_cache::CLIENT_CACHE_TTL);
                }
                lost = true;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

async fn subscribe(shared: &SharedRedis, channel: &str) -> Result<redis::aio::PubSub, String> {
    let client = crate::store::redis::client(shared.config()).map_err(|e| e.to_string())?;
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
        pubsub.subscribe(channel).await.map_err(|e| e.to_string())?;
        Ok(pubsub)
    };
    tokio::time::timeout(Duration::from_secs(2), connect).await.unwrap_or_else(|_| Err("timed out".to_string()))
}

/// `truxectl` after a change on the database directly: the same announcement, on a connection
/// of its own (no runtime, bounded); the error says why Redis did not take it.
pub fn announce_change_once(config: &RedisConfig, client_id: &str) -> Result<(), String> {
    let client = crate::store::redis::client(config).map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(2);
    let mut conn = client.get_connection_with_timeout(timeout).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    change_announcement(config, client_id).query::<()>(&mut conn).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_made_while_its_announcement_is_on_its_way_stays_pending() {
        let pending = Pending::default();
        pending.add("cl_a");
        pending.add("cl_b");
        let snapshot = pending.snapshot();
        assert_eq!(snapshot.len(), 2);
        pending.add("cl_a"); // changed again before the retry's answer came back
        for (id, changes) in snapshot {
            pending.announced(&id, changes);
        }
        assert_eq!(pending.snapshot(), vec![("cl_a".to_string(), 2)], "the newer change is still owed");
        pending.announced("cl_a", 2);
        assert!(pending.is_empty());
    }

    #[test]
    fn keys_and_the_announcement_carry_the_prefix() {
        let config = RedisConfig {
            url: crate::secret::Secret::new("redis://127.0.0.1".to_string()),
            tls: false,
            tls_ca: None,
            tls_reject_unauthorized: true,
            key_prefix: "staging:".into(),
        };
        assert_eq!(client_key(&config, "cl_1"), "staging:oauth:client:cl_1");
        assert_eq!(changed_channel(&config), "staging:oauth:client-changed");
        let packed = String::from_utf8_lossy(&change_announcement(&config, "cl_1").get_packed_pipeline()).to_string();
        for part in [
            "MULTI",
            "INCR",
            "staging:oauth:client-version:cl_1",
            "DEL",
            "staging:oauth:client:cl_1",
            "PUBLISH",
            "EXEC",
        ] {
            assert!(packed.contains(part), "{part} in {packed}");
        }
    }
}
