//! Redis as the state several instances share (`REDIS_URL`), behind one failure policy.
//!
//! PostgreSQL stays the system of record: everything kept here is either a cache that the
//! database can rebuild (clients) or a shortcut that is only ever trusted in the safe direction
//! (a revoked-token mark can make a token inactive, never active). Every call is bounded by
//! [`CALL_TIMEOUT`]; after a failure Redis is skipped for a second ([`breaker`]), so that an outage
//! adds no latency per request, and it is used again by itself once it answers.
//!
//! The README's "Several instances and Redis" table is the policy per use.

pub mod breaker;
pub mod clients;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bb8_redis::redis::{self, FromRedisValue};

use self::breaker::{Breaker, Report};
use crate::config::RedisConfig;
use crate::store::redis::RedisPool;

/// The longest any Redis call may take on a request's path.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// The pool, the configuration (its key prefix) and the breaker every Redis use goes through.
pub struct SharedRedis {
    pool: RedisPool,
    config: RedisConfig,
    breaker: Breaker,
    /// The runtime Redis calls run on, so that blocking code (the services, on tokio's blocking
    /// threads) can make a bounded call without an async context of its own.
    runtime: tokio::runtime::Handle,
    /// Client changes whose announcement Redis did not take yet (see [`clients`]).
    pub(crate) pending_changes: clients::Pending,
    /// Whether [`clients::follow_changes`] holds a live subscription right now.
    subscribed: AtomicBool,
}

impl std::fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRedis").field("prefix", &self.config.key_prefix).finish_non_exhaustive()
    }
}

impl SharedRedis {
    /// Must be called inside the tokio runtime that will run the calls.
    pub fn new(pool: RedisPool, config: RedisConfig) -> Arc<Self> {
        Arc::new(Self {
            pool,
            config,
            breaker: Breaker::new(Instant::now()),
            runtime: tokio::runtime::Handle::current(),
            pending_changes: clients::Pending::default(),
            subscribed: AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// `name` with the configured prefix.
    pub fn key(&self, name: &str) -> String {
        self.config.key(name)
    }

    /// Failed Redis calls since start (for a metrics exporter).
    pub fn errors(&self) -> u64 {
        self.breaker.errors()
    }

    /// Whether the last call failed (and no call succeeded since).
    pub fn is_failing(&self) -> bool {
        self.breaker.is_failing()
    }

    /// Whether this instance is following client changes through Redis right now.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    pub(crate) fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Release);
    }

    /// Client changes not announced yet because Redis did not take them.
    pub fn pending_client_changes(&self) -> usize {
        self.pending_changes.len()
    }

    /// Runs `pipe` unless the breaker says Redis is being skipped; `None` when skipped or failed.
    pub async fn query<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Option<T> {
        if !self.breaker.allows(Instant::now()) {
            return None;
        }
        self.query_unguarded(pipe).await.ok()
    }

    /// Runs `pipe` whatever the breaker says (background work, where latency does not matter),
    /// and tells the breaker how it went.
    pub async fn query_unguarded<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, String> {
        let call = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            pipe.query_async::<T>(&mut *conn).await.map_err(|e| e.to_string())
        };
        let result = tokio::time::timeout(CALL_TIMEOUT, call).await.unwrap_or_else(|_| Err("timed out".to_string()));
        self.record(&result);
        result
    }

    /// [`SharedRedis::query`] from blocking code (a service on a blocking thread): waits at most
    /// [`CALL_TIMEOUT`] (plus scheduling slack) for the answer.
    pub fn query_blocking<T: FromRedisValue + Send + 'static>(self: &Arc<Self>, pipe: redis::Pipeline) -> Option<T> {
        if !self.breaker.allows(Instant::now()) {
            return None;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let this = self.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(this.query_unguarded::<T>(&pipe).await);
        });
        rx.recv_timeout(CALL_TIMEOUT + Duration::from_millis(50)).ok()?.ok()
    }

    /// Sends `pipe` without waiting for the answer (a cache fill, a revocation mark).
    pub fn send(self: &Arc<Self>, pipe: redis::Pipeline) {
        if !self.breaker.allows(Instant::now()) {
            return;
        }
        let this = self.clone();
        self.runtime.spawn(async move {
            let _ = this.query_unguarded::<redis::Value>(&pipe).await;
        });
    }

    fn record<T>(&self, result: &Result<T, String>) {
        match result {
            Ok(_) => {
                if self.breaker.succeeded() {
                    tracing::info!(errors = self.breaker.errors(), "Redis answers again; using it again");
                }
            }
            Err(error) => {
                if self.breaker.failed(Instant::now()) == Report::Warn {
                    tracing::warn!(
                        %error,
                        errors = self.breaker.errors(),
                        "Redis failed; skipping it for a second at a time (the database answers instead) until it answers again"
                    );
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Revoked access-token ids: a mark that lets introspection and userinfo answer "inactive"
    // without the database. Only a hit is trusted: Redis can lose keys, so a miss (or an error)
    // always asks the database.

    fn revoked_key(&self, jti: &str) -> String {
        revoked_key(&self.config, jti)
    }

    /// Marks `jti` revoked for the `remaining` seconds of the token's life (nothing when it has
    /// none left). Not waited for: the database row is the revocation.
    pub fn mark_revoked(self: &Arc<Self>, jti: &str, remaining: i64) {
        if remaining <= 0 {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(self.revoked_key(jti)).arg(1).arg("EX").arg(remaining).ignore();
        self.send(pipe);
    }

    /// `Some(true)` when Redis holds the mark; `None` when it does not or cannot say.
    pub fn is_marked_revoked(self: &Arc<Self>, jti: &str) -> Option<bool> {
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(self.revoked_key(jti));
        let (exists,): (bool,) = self.query_blocking(pipe)?;
        exists.then_some(true)
    }
}

/// The key of the revoked-`jti` mark (`oauth:revoked:{jti}` under the configured prefix).
pub fn revoked_key(config: &RedisConfig, jti: &str) -> String {
    config.key(&format!("oauth:revoked:{jti}"))
}

/// [`SharedRedis::mark_revoked`] for a process that has no [`SharedRedis`] (`truxectl tokens
/// revoke`): one connection, one pipeline, at most 2 s per step. `marks` are `(jti, seconds the
/// token has left)`; tokens with none left need no mark. Nothing to do is `Ok` without
/// connecting. The database row is the revocation: a mark only lets a server answer sooner.
pub fn mark_revoked_once(config: &RedisConfig, marks: &[(String, i64)]) -> Result<(), String> {
    let live: Vec<&(String, i64)> = marks.iter().filter(|(_, remaining)| *remaining > 0).collect();
    if live.is_empty() {
        return Ok(());
    }
    let client = crate::store::redis::client(config).map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(2);
    let mut conn = client.get_connection_with_timeout(timeout).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut pipe = redis::pipe();
    for (jti, remaining) in live {
        pipe.cmd("SET").arg(revoked_key(config, jti)).arg(1).arg("EX").arg(*remaining).ignore();
    }
    pipe.query::<()>(&mut conn).map_err(|e| e.to_string())
}
