//! Start-up: configuration in, a listening server out (or every reason it cannot start).

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, middleware, web};

use crate::config::{Config, ConfigErrors, DatabaseUrl};
use crate::datadir::{self, DataDirError};
use crate::http::{self, AppState};
use crate::shared::SharedRedis;
use crate::shared::clients as shared_clients;
use crate::store::{self, StoreError, migrations, redis::RedisError};

/// Exit status for configuration problems (sysexits EX_CONFIG); the systemd unit does not
/// restart on it, since restarting cannot fix a configuration.
pub const EXIT_CONFIG: u8 = 78;

/// How long a graceful shutdown waits for magic-link mail being sent.
pub const MAIL_SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Credentials(#[from] DataDirError),
    #[error("{0}")]
    Database(#[from] StoreError),
    #[error(
        "the database has {} pending migration(s) ({}); run `truxectl migrate` against it, then start the server again",
        .0.len(), .0.join(", ")
    )]
    PendingMigrations(Vec<String>),
    #[error("{0}")]
    Redis(#[from] RedisError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error("start-up task failed: {0}")]
    Task(String),
    #[error("{0}")]
    Jwt(#[from] crate::jwt::JwtError),
    #[error("{0}")]
    Mail(#[from] crate::mail::MailError),
    #[error("{0}")]
    Keys(#[from] crate::keyring::KeyRingError),
    #[error("{0}")]
    Metrics(#[from] crate::metrics::MetricsError),
}

impl StartupError {
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::Config(_)
            | StartupError::Credentials(_)
            | StartupError::PendingMigrations(_)
            | StartupError::Mail(_)
            | StartupError::Database(StoreError::Tls { .. }) => EXIT_CONFIG,
            StartupError::Keys(error) if error.is_configuration() => EXIT_CONFIG,
            _ => 1,
        }
    }
}

pub struct Application {
    port: u16,
    server: Server,
    /// The listener of `METRICS_PORT`, when set: its port and its handle (it runs on a task of
    /// its own from the start).
    metrics_server: Option<(u16, ServerHandle)>,
    state: web::Data<AppState>,
    /// SQLite only: tells `truxectl backup restore` that a server runs on the database.
    _instance_lock: Option<store::instances::SqliteInstanceLock>,
}

/// Binds `0.0.0.0:PORT`, naming the port in the error when it is taken.
pub fn bind(port: u16) -> Result<TcpListener, StartupError> {
    bind_named("PORT", port)
}

/// Binds `0.0.0.0:{port}` for the variable `name`.
fn bind_named(name: &str, port: u16) -> Result<TcpListener, StartupError> {
    let address = format!("0.0.0.0:{port}");
    TcpListener::bind(&address).map_err(|source| {
        let address = if source.kind() == std::io::ErrorKind::AddrInUse {
            format!("{address} ({name} {port} is already in use by another process)")
        } else {
            address
        };
        StartupError::Bind { address, source }
    })
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let listener = bind(config.port)?;
        Self::build_with_listener(config, listener).await
    }

    /// Tests pass a listener on port 0; production goes through [`Application::build`].
    pub async fn build_with_listener(config: Config, listener: TcpListener) -> Result<Self, StartupError> {
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let config = Arc::new(config);
        // Before anything could encode or decode a JWT: the first provider asked for stays.
        crate::jwt::install_provider()?;

        let credentials = {
            let config = config.clone();
            blocking(move || datadir::load_credentials(&config)).await??
        };
        if let Some(path) = &credentials.admin_token_generated {
            // Shown once, on the terminal that started the server; only the file keeps it.
            println!(
                "\nTruxe admin token (stored in {}; shown only this once):\n\n    {}\n",
                path.display(),
                credentials.admin_token.secret()
            );
        }

        let instance_lock = match &config.database.url {
            DatabaseUrl::Sqlite(path) => {
                let path = path.clone();
                Some(blocking(move || store::instances::SqliteInstanceLock::acquire(&path)).await??)
            }
            DatabaseUrl::Postgres(_) => None,
        };
        let pool = {
            let database = config.database.clone();
            tracing::info!(database = %database.url.redacted(), "connecting to the database");
            blocking(move || store::connect_instance(&database)).await??
        };
        let backend = match config.database.url {
            DatabaseUrl::Postgres(_) => store::Backend::Postgres,
            DatabaseUrl::Sqlite(_) => store::Backend::Sqlite,
        };
        let key_sources = crate::keyring::Sources {
            policy: crate::keyring::Policy::from_config(&config),
            env_key: credentials.env_key.clone(),
            sealing: crate::keyring::SealingKey::derive(&credentials.session_secret),
            data_dir_key: credentials.data_dir_key.clone(),
            may_reseal: !config.is_production() && config.session.secret.is_none(),
        };
        let sources = key_sources.clone();
        let prepared = store::run(&pool, move |conn| {
            match conn.backend() {
                // Embedded storage migrates itself: there is no operator step to forget.
                store::Backend::Sqlite => {
                    for name in migrations::apply_all(conn)? {
                        tracing::info!(migration = %name, "applied migration");
                    }
                }
                store::Backend::Postgres => {
                    let pending = migrations::pending(conn)?;
                    if !pending.is_empty() {
                        return Ok(Err(pending.iter().map(|m| format!("{}_{}", m.version, m.name)).collect()));
                    }
                }
            }
            let now = store::unix_now();
            // Entries from before the audit chain existed get their places before anything appends.
            store::audit::chain_legacy(conn)?;
            // Built here so that a key that cannot sign stops the start, not each request.
            let keys = crate::keyring::bootstrap(conn, &sources, now);
            let hmac_key =
                store::server_secrets::load_or_create(conn, store::server_secrets::CLIENT_SECRET_HMAC_KEY, now)?;
            let magic_link_key =
                store::server_secrets::load_or_create(conn, crate::service::sign_in::MAGIC_LINK_KEY, now)?;
            Ok(Ok((keys, hmac_key, magic_link_key)))
        })
        .await?;
        let (keys, client_secret_key, magic_link_key) = prepared.map_err(StartupError::PendingMigrations)?;
        let keys = Arc::new(crate::keyring::KeyRing::new(keys?, key_sources));
        if let Some(rotation) = config.jwt.rotation
            && config.jwt.private_key_pem.is_none()
        {
            tracing::info!(
                rotation = %crate::config::format_duration(rotation),
                publish_delay = %crate::config::format_duration(config.jwt.publish_delay),
                "automatic signing-key rotation is on (JWT_KEY_ROTATION)"
            );
        }
        // Inside the runtime: the SMTP pool starts its reaper task here.
        let mailer = crate::mail::Mailer::from_config(&config)?;
        tracing::info!(mail = %mailer.describe(), "magic-link mail");

        let redis = match &config.redis {
            Some(redis_config) => {
                let pool = store::redis::connect(redis_config)?;
                if let Err(error) = store::redis::ping(&pool).await {
                    tracing::warn!(%error, "Redis is not answering; /health/ready reports it until it does");
                }
                Some(pool)
            }
            None => None,
        };
        let shared = match (&redis, &config.redis) {
            (Some(pool), Some(redis_config)) => Some(SharedRedis::new(pool.clone(), redis_config.clone())),
            _ => None,
        };
        let mut clients = crate::client_cache::ClientCache::default();
        if let Some(shared) = &shared {
            clients = clients.with_shared(shared.clone());
        }
        let clients = Arc::new(clients);
        if let Some(shared) = &shared {
            tokio::spawn(shared_clients::follow_changes(shared.clone(), clients.clone()));
            tokio::spawn(shared_clients::retry_pending(shared.clone()));
        } else if backend == store::Backend::Postgres {
            warn_about_other_instances(&pool).await;
        }

        let audit = Arc::new(crate::audit::AuditLog::start(pool.clone()));
        let metrics = Arc::new(crate::metrics::Metrics::new()?);
        let state = web::Data::new(AppState {
            rules: Arc::new(crate::service::policy::Rules::from_config(&config)),
            config: config.clone(),
            pool,
            backend,
            limiter: crate::ratelimit::Limiter::start(&config, redis.clone()),
            redis,
            shared,
            keys: keys.clone(),
            admin_token: credentials.admin_token,
            client_secret_key,
            session_key: http::session::derive_key(&credentials.session_secret),
            magic_link_key,
            mailer: Arc::new(mailer),
            audit,
            clients,
            readiness: Default::default(),
            metrics: metrics.clone(),
        });
        tokio::spawn(housekeeping(
            state.pool.clone(),
            store::housekeeping::Retention {
                refresh_family_ttl: state.rules.refresh_family_ttl,
                access_token_ttl: state.rules.access_token_ttl,
            },
            config.audit_retention,
            metrics,
        ));
        tokio::spawn(crate::keyring::follow(keys.clone(), state.pool.clone()));
        let port =
            listener.local_addr().map_err(|source| StartupError::Bind { address: "listener".into(), source })?.port();
        let app_state = state.clone();
        let app_metrics = web::Data::from(state.metrics.clone());
        let limits = config.http.clone();
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let metrics_on_port = config.metrics_port.is_none();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(app_metrics.clone())
                // The last `.wrap` is outermost: request id → metrics → security headers → head
                // limits → CORS (so that a 429 reaches the script that caused it) → rate limit →
                // routes.
                .wrap(middleware::from_fn(http::rate_limit::middleware))
                .wrap(middleware::from_fn(http::cors::middleware))
                .wrap(middleware::from_fn(http::request_limits::middleware))
                .wrap(http::security_headers::middleware(&app_state.config))
                .wrap(middleware::from_fn(http::metrics::middleware))
                .wrap(middleware::from_fn(http::request_id::middleware))
                .configure(|cfg| {
                    // With METRICS_PORT, only there: the public port does not show them.
                    if metrics_on_port {
                        http::metrics::routes(cfg);
                    }
                })
                .configure(http::routes)
        })
        .workers(workers)
        // A client gets `TRUXE_CLIENT_TIMEOUT` for its request head (then 408) and again for its
        // body (`http::body`); an idle keep-alive connection is closed after 5 s.
        .client_request_timeout(limits.client_timeout)
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        .keep_alive(std::time::Duration::from_secs(5))
        .max_connections((limits.max_connections as usize).div_ceil(workers))
        // Signals are handled in `run_until_stopped`, so that SIGINT is as graceful as SIGTERM.
        .disable_signals()
        .shutdown_timeout(30)
        .listen(listener)
        .map_err(|source| StartupError::Bind { address: format!("port {port}"), source })?
        .run();

        let metrics_server = match config.metrics_port {
            Some(metrics_port) => Some(metrics_listener(bind_named("METRICS_PORT", metrics_port)?, &state)?),
            None => None,
        };

        let signing_kid =
            keys.snapshot().signer(store::unix_now()).map(|(entry, _)| entry.kid.clone()).unwrap_or_default();
        tracing::info!(port, issuer = %config.issuer, kid = %signing_kid, backend = backend.as_str(), "truxe-server listening");
        if let Some((metrics_port, _)) = &metrics_server {
            tracing::info!(port = metrics_port, "metrics on their own port (METRICS_PORT): /metrics");
        }
        Ok(Self { port, server, metrics_server, state, _instance_lock: instance_lock })
    }

    /// The port of the `METRICS_PORT` listener, when there is one.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight requests finish and
    /// writes the queued audit events.
    ///
    /// Under systemd (`Type=notify`) it reports `READY=1` once the server listens and
    /// `STOPPING=1` when the shutdown starts; without `NOTIFY_SOCKET` both are no-ops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            notify_systemd(&[sd_notify::NotifyState::Stopping]);
            handle.stop(true).await;
        });
        // The listener is bound and the database, keys and Redis were checked in `build`.
        let status = format!("listening on port {}", self.port);
        notify_systemd(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);
        self.run().await
    }

    /// Serves without signal handling (tests stop it through [`Application::handle`]); once
    /// stopped, lets background mail finish (at most [`MAIL_SHUTDOWN_WAIT`]) and writes the queued
    /// audit events (waiting at most `audit::SHUTDOWN_WAIT`).
    pub async fn run(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let Some((_, metrics)) = &self.metrics_server {
            metrics.stop(true).await;
        }
        // Sign-in links asked for just before the stop still go out.
        if tokio::time::timeout(MAIL_SHUTDOWN_WAIT, self.state.mailer.flush()).await.is_err() {
            let jobs = self.state.mailer.jobs();
            tracing::warn!(in_flight = jobs.in_flight, "stopping with magic-link mail still being sent");
        }
        self.state.audit.close(crate::audit::SHUTDOWN_WAIT).await;
        served
    }
}

/// Several instances on one PostgreSQL need Redis (SPEC): without it each keeps its own rate
/// limits and client cache. Counts the other instances' connections, named by
/// [`store::instances::APPLICATION_NAME_PREFIX`], and warns when there are any.
async fn warn_about_other_instances(pool: &store::Pool) {
    match store::run(pool, store::instances::others).await {
        Ok(0) => {}
        Ok(others) => tracing::warn!(
            others,
            "other truxe-server instances use this database but REDIS_URL is not set: rate limits are counted per \
             instance and client changes reach the others only after the client cache's {:?}; set REDIS_URL on every instance",
            crate::client_cache::CLIENT_CACHE_TTL
        ),
        Err(error) => tracing::debug!(%error, "could not count the other instances on the database"),
    }
}

/// `/metrics` alone on `listener` (`METRICS_PORT`): one worker, no other route, no rate limit;
/// started here, stopped by [`Application::run`] after the main server.
fn metrics_listener(listener: TcpListener, state: &web::Data<AppState>) -> Result<(u16, ServerHandle), StartupError> {
    let port = listener
        .local_addr()
        .map_err(|source| StartupError::Bind { address: "METRICS_PORT listener".into(), source })?
        .port();
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(http::security_headers::middleware(&app_state.config))
            .configure(http::metrics::routes)
            .default_service(web::to(|| async {
                actix_web::HttpResponse::NotFound().json(serde_json::json!({ "error": "not_found" }))
            }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)
    .map_err(|source| StartupError::Bind { address: format!("METRICS_PORT {port}"), source })?
    .run();
    let handle = server.handle();
    tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "the METRICS_PORT listener stopped");
        }
    });
    Ok((port, handle))
}

/// Hourly: [`store::housekeeping::purge`] (magic links, authorization codes and revoked access
/// tokens a day after they expired, sessions 30 days after they ended, grants with their refresh
/// tokens a day after their family ended), and the audit log's retention
/// (`TRUXE_AUDIT_RETENTION`, [`store::audit::prune`]).
async fn housekeeping(
    pool: store::Pool,
    retention: store::housekeeping::Retention,
    audit_retention: Option<std::time::Duration>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(3_600));
    loop {
        interval.tick().await;
        let now = store::unix_now();
        if let Some(keep) = audit_retention {
            let cutoff = now.saturating_sub(i64::try_from(keep.as_secs()).unwrap_or(i64::MAX));
            match store::run(&pool, move |conn| store::audit::prune(conn, cutoff, now)).await {
                Ok(pruned) if pruned.deleted == 0 => {}
                Ok(pruned) => tracing::info!(
                    deleted = pruned.deleted,
                    kept_from_seq = pruned.kept_from_seq,
                    "removed audit entries older than TRUXE_AUDIT_RETENTION"
                ),
                Err(error) => tracing::warn!(%error, "pruning the audit log failed; retrying in an hour"),
            }
        }
        match store::run(&pool, move |conn| store::housekeeping::purge(conn, now, &retention)).await {
            Ok(purged) if purged.is_empty() => {}
            Ok(purged) => {
                metrics.purged(&purged);
                tracing::info!(
                    links = purged.magic_links,
                    sessions = purged.sessions,
                    codes = purged.authorization_codes,
                    access_tokens = purged.access_tokens,
                    grants = purged.grants,
                    "removed expired magic links, sessions, authorization codes, revoked access tokens and ended grants"
                )
            }
            Err(error) => tracing::warn!(%error, "housekeeping failed; retrying in an hour"),
        }
    }
}

/// Tells the service manager about a state change. A failure is logged, not fatal: the server
/// works either way, and systemd reports a unit that never became ready on its own.
fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, StartupError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| StartupError::Task(e.to_string()))
}
