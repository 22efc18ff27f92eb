//! The clients on the database directly: the server's service code on one connection, checked
//! against the configuration the server would read.

use std::time::Duration;

use anyhow::{Context as _, bail};
use truxe_server::config::RedisConfig;
use truxe_server::model::request::RequestMeta;
use truxe_server::secret::Secret;
use truxe_server::service::clients::{
    self as service, ClientError, ClientInput, ClientPatch, ClientView, Context, Page, Rules, WithSecret,
};
use truxe_server::shared::clients as shared_clients;
use truxe_server::store::{self, PooledConnection, migrations, server_secrets};

use super::Clients;
use crate::{Global, db};

/// Audit actor for changes made on the database directly.
const ACTOR: &str = "cli";

pub(super) struct Database {
    conn: PooledConnection,
    target: String,
    rules: Rules,
    /// The servers' Redis (`REDIS_URL`, `REDIS_TLS`, `TRUXE_REDIS_PREFIX`), told of every change.
    redis: Option<RedisConfig>,
}

impl Database {
    pub(super) fn open(global: &Global) -> anyhow::Result<Self> {
        let config = db::server_config(global)?;
        let rules = Rules::from_config(&config);
        let database = db::for_cli(config.database, global)?;
        let target = database.url.redacted();
        let mut conn = store::connect(&database)?.get().with_context(|| format!("cannot open {target}"))?;
        let pending = migrations::pending(&mut conn).with_context(|| format!("reading {target}"))?;
        if !pending.is_empty() {
            bail!(
                "{target} has {} pending migration(s): run `truxectl migrate` first (or start the embedded \
                 server once, which migrates itself)",
                pending.len()
            );
        }
        Ok(Database { conn, target, rules, redis: config.redis })
    }

    /// After a change on the database: tells the running servers through Redis, as the admin
    /// API does, so that none keeps serving the old client. The change is made either way; a
    /// Redis that cannot be told is a warning.
    fn announce(&self, client_id: &str) {
        let Some(redis) = &self.redis else {
            return;
        };
        if let Err(error) = shared_clients::announce_change_once(redis, client_id) {
            eprintln!(
                "warning: the change to {client_id} is in the database, but Redis could not be told ({error}): \
                 servers may keep using the old client for up to {} minutes (the Redis cache entry's lifetime). \
                 Once Redis answers again, run the command again or delete the key {}",
                shared_clients::CLIENT_TTL_SECONDS / 60,
                shared_clients::client_key(redis, client_id),
            );
        }
    }

    /// Runs one service operation; `needs_key` loads (or creates) the shared HMAC key first.
    fn with<T>(
        &mut self,
        work: impl FnOnce(&mut store::AnyConnection, &Context<'_>) -> Result<T, ClientError>,
        client_id: &str,
        needs_key: bool,
    ) -> anyhow::Result<T> {
        let now = store::unix_now();
        let key = if needs_key {
            server_secrets::load_or_create(&mut self.conn, server_secrets::CLIENT_SECRET_HMAC_KEY, now)
                .with_context(|| format!("loading the client secret key from {}", self.target))?
        } else {
            Secret::new(Vec::new())
        };
        let request = RequestMeta::default();
        let ctx = Context { rules: &self.rules, secret_key: key.secret(), now, actor: ACTOR, request: &request };
        match work(&mut self.conn, &ctx) {
            Ok(value) => Ok(value),
            Err(ClientError::NotFound) => bail!("no client with client_id {client_id:?}"),
            Err(ClientError::Invalid(e)) => bail!("{e}"),
            Err(ClientError::Store(e)) => Err(anyhow::Error::new(e).context(format!("on {}", self.target))),
        }
    }
}

impl Clients for Database {
    fn scopes_supported(&mut self) -> Option<Vec<String>> {
        Some(self.rules.scopes_supported.clone())
    }

    fn create(&mut self, input: ClientInput) -> anyhow::Result<WithSecret> {
        let created = self.with(|conn, ctx| service::create(conn, ctx, input), "", true)?;
        self.announce(&created.client.client_id);
        Ok(created)
    }

    fn list(&mut self, after: Option<&str>, limit: i64) -> anyhow::Result<Page> {
        self.with(|conn, _| service::list(conn, after, Some(limit)), after.unwrap_or_default(), false)
    }

    fn get(&mut self, client_id: &str) -> anyhow::Result<ClientView> {
        self.with(|conn, _| service::get(conn, client_id), client_id, false)
    }

    fn update(&mut self, client_id: &str, patch: ClientPatch) -> anyhow::Result<ClientView> {
        let result = self.with(|conn, ctx| service::update(conn, ctx, client_id, patch), client_id, false);
        self.announce(client_id);
        result
    }

    fn delete(&mut self, client_id: &str) -> anyhow::Result<()> {
        let result = self.with(|conn, ctx| service::delete(conn, ctx, client_id), client_id, false);
        self.announce(client_id);
        result
    }

    fn rotate_secret(&mut self, client_id: &str, grace: Duration) -> anyhow::Result<WithSecret> {
        let result = self.with(|conn, ctx| service::regenerate_secret(conn, ctx, client_id, grace), client_id, true);
        self.announce(client_id);
        result
    }
}
