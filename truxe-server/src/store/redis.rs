//! The optional Redis pool (`REDIS_URL`): shared state for several instances.
//!
//! Every Redis connection, pooled or not, comes from [`client`], which applies the TLS settings
//! (`REDIS_TLS_CA`, `REDIS_TLS_REJECT_UNAUTHORIZED`); the pool is a small `bb8` manager over that
//! client, since bb8-redis's own manager only takes a URL.

use std::time::Duration;

use bb8_redis::bb8;
use bb8_redis::redis;
use redis::aio::MultiplexedConnection;

use crate::config::RedisConfig;

pub type RedisPool = bb8::Pool<RedisManager>;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("REDIS_URL is not a usable Redis URL: {0}")]
    Url(String),
    /// Connecting failed (refused, TLS handshake, certificate); names the server.
    #[error("redis at {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("redis: {0}")]
    Command(String),
}

/// Hands out multiplexed connections of one [`client`].
#[derive(Clone, Debug)]
pub struct RedisManager {
    client: redis::Client,
    /// `host:port (TLS)` for messages; never the password.
    server: String,
}

impl RedisManager {
    fn connect_error(&self, error: &redis::RedisError) -> RedisError {
        RedisError::Connect { server: self.server.clone(), reason: describe(error) }
    }
}

/// A pooled connection that remembers whether it failed in a way that needs a new connection
/// (the socket dropped, Redis restarted), so that the pool discards it instead of a `PING` on
/// every checkout: that check would double the round trips of every rate-limit check and cache
/// read. A command Redis refuses (`NOSCRIPT`, a wrong type) leaves the connection usable.
pub struct RedisConnection {
    inner: MultiplexedConnection,
    broken: bool,
}

impl RedisConnection {
    fn note<T>(&mut self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(error) = &result {
            self.broken |= error.is_unrecoverable_error() || error.is_connection_dropped() || error.is_io_error();
        }
        result
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let result = self.inner.req_packed_command(cmd).await;
            self.note(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let result = self.inner.req_packed_commands(pipeline, offset, count).await;
            self.note(result)
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

impl bb8::ManageConnection for RedisManager {
    type Connection = RedisConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConnection, RedisError> {
        let inner = self.client.get_multiplexed_async_connection().await.map_err(|e| self.connect_error(&e))?;
        Ok(RedisConnection { inner, broken: false })
    }

    async fn is_valid(&self, conn: &mut RedisConnection) -> Result<(), RedisError> {
        let pong: String =
            redis::cmd("PING").query_async(conn).await.map_err(|e| RedisError::Command(e.to_string()))?;
        if pong == "PONG" { Ok(()) } else { Err(RedisError::Command(format!("unexpected PING answer {pong:?}"))) }
    }

    fn has_broken(&self, conn: &mut RedisConnection) -> bool {
        conn.broken
    }
}

/// Builds the pool without connecting: a Redis that is down at start shows in readiness,
/// it does not keep the server from starting.
pub fn connect(config: &RedisConfig) -> Result<RedisPool, RedisError> {
    let manager = RedisManager { client: client(config)?, server: server_name(config) };
    Ok(bb8::Pool::builder()
        .max_size(16)
        .connection_timeout(Duration::from_secs(2))
        // No PING per checkout: a connection that failed is discarded when it comes back
        // (`RedisConnection`), and idle ones are reaped after a minute.
        .test_on_check_out(false)
        .idle_timeout(Some(Duration::from_secs(60)))
        // A failed connect is not retried inside one checkout: the next checkout tries again.
        .retry_connection(false)
        .build_unchecked(manager))
}

pub async fn ping(pool: &RedisPool) -> Result<(), RedisError> {
    let mut conn = match pool.get().await {
        Ok(conn) => conn,
        Err(bb8::RunError::User(e)) => return Err(e),
        // bb8 keeps the reason a connect failed to itself: one direct attempt tells it
        // (a certificate that does not verify, a refused connection).
        Err(bb8::RunError::TimedOut) => {
            return Err(match pool.dedicated_connection().await {
                Err(e) => e,
                Ok(_) => RedisError::Command("no pooled connection free within 2 s".to_string()),
            });
        }
    };
    let pong: String =
        redis::cmd("PING").query_async(&mut *conn).await.map_err(|e| RedisError::Command(e.to_string()))?;
    if pong == "PONG" { Ok(()) } else { Err(RedisError::Command(format!("unexpected PING answer {pong:?}"))) }
}

/// THE constructor of a Redis client, for the pool and for connections outside it (pub/sub
/// subscriptions): with TLS, it trusts `REDIS_TLS_CA` when given (else the system trust store),
/// or nothing is checked with `REDIS_TLS_REJECT_UNAUTHORIZED=false`.
pub fn client(config: &RedisConfig) -> Result<redis::Client, RedisError> {
    let url = config.url.secret().as_str();
    let url_error = |e: redis::RedisError| RedisError::Url(e.to_string());
    if !config.tls {
        return redis::Client::open(url).map_err(url_error);
    }
    if !config.tls_reject_unauthorized {
        // The crate's one switch for "TLS without verification" is this URL fragment.
        let insecure = if url.contains('#') { url.to_string() } else { format!("{url}#insecure") };
        return redis::Client::open(insecure.as_str()).map_err(url_error);
    }
    match &config.tls_ca {
        Some(ca) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates { client_tls: None, root_cert: Some(ca.pem.clone()) },
        )
        .map_err(url_error),
        None => redis::Client::open(url).map_err(url_error),
    }
}

/// `host:port`, with `(TLS)` when encrypted: what messages name.
fn server_name(config: &RedisConfig) -> String {
    let (host, port) = url::Url::parse(config.url.secret())
        .ok()
        .map(|u| (u.host_str().unwrap_or("?").to_string(), u.port().unwrap_or(6379)))
        .unwrap_or_else(|| ("?".to_string(), 6379));
    if config.tls { format!("{host}:{port} (TLS)") } else { format!("{host}:{port}") }
}

/// The redis crate's message plus its cause (native-tls puts the OpenSSL reason there).
fn describe(error: &redis::RedisError) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    if message.contains("certificate verify failed") || message.contains("certificate") {
        message.push_str(
            " (a private CA: set REDIS_TLS_CA to its PEM file; a self-signed certificate: REDIS_TLS_REJECT_UNAUTHORIZED=false)",
        );
    }
    message
}
