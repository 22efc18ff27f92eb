//! The optional Redis pool (`REDIS_URL`): shared state for several instances.

use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use bb8_redis::bb8;

use crate::config::RedisConfig;

pub type RedisPool = bb8::Pool<RedisConnectionManager>;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("REDIS_URL is not a usable Redis URL: {0}")]
    Url(String),
    #[error("redis: {0}")]
    Command(String),
}

/// Builds the pool without connecting: a Redis that is down at start shows in readiness,
/// it does not keep the server from starting.
pub fn connect(config: &RedisConfig) -> Result<RedisPool, RedisError> {
    // Checked here with the same client constructor every other Redis user goes through.
    client(config)?;
    let manager =
        RedisConnectionManager::new(config.url.secret().as_str()).map_err(|e| RedisError::Url(e.to_string()))?;
    Ok(bb8::Pool::builder().max_size(16).connection_timeout(Duration::from_secs(2)).build_unchecked(manager))
}

pub async fn ping(pool: &RedisPool) -> Result<(), RedisError> {
    let mut conn = pool.get().await.map_err(|e| RedisError::Command(e.to_string()))?;
    let pong: String =
        bb8_redis::redis::cmd("PING").query_async(&mut *conn).await.map_err(|e| RedisError::Command(e.to_string()))?;
    if pong == "PONG" { Ok(()) } else { Err(RedisError::Command(format!("unexpected PING answer {pong:?}"))) }
}

/// A Redis client for connections outside the pool (pub/sub subscriptions).
pub fn client(config: &RedisConfig) -> Result<bb8_redis::redis::Client, RedisError> {
    bb8_redis::redis::Client::open(config.url.secret().as_str()).map_err(|e| RedisError::Url(e.to_string()))
}
