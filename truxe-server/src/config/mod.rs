//! One typed `Config` built from the deployment guide's variables, validated all at once.
//!
//! Values come from a lookup function (`Config::from_lookup`), so tests pass a map instead of
//! touching the process environment; `Config::load` layers the environment over `--env-file`
//! over `./.env`. Every variable may also be given as `NAME_FILE`, a path whose content is the
//! value (systemd credentials, Docker and Kubernetes secrets).

mod database;
mod duration;
mod source;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use database::DatabaseUrl;
pub use duration::{BareUnit, format_duration, parse_duration};
pub use source::read_env_file;
pub use tls::{CaFile, system_ca_file};

use crate::keys::{Algorithm, KeyError, SigningKey};
use crate::oauth::scope::ScopeSet;
use crate::secret::Secret;
use source::Reader;

/// Variables that are read and checked but not yet acted on by the server. Each one that is
/// set is reported at start; a name leaves this list when its feature lands. Empty: every
/// variable of the guide is acted on or, like `BCRYPT_ROUNDS` and `DATADOG_API_KEY`, explained.
pub const NOT_ACTED_ON: &[&str] = &[];

/// Per-endpoint limits from the guide: (endpoint, requests per minute, burst).
pub const DEFAULT_RATE_LIMIT_ENDPOINTS: [(&str, u32, u32); 5] =
    [("authorize", 10, 20), ("token", 20, 40), ("userinfo", 60, 100), ("introspect", 100, 200), ("revoke", 10, 20)];

/// The scopes every installation offers; `TRUXE_SCOPES` adds API scopes to them.
pub const STANDARD_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Production secrets shorter than this are refused.
pub const MIN_SECRET_CHARS: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Development,
    Production,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub port: u16,
    pub data_dir: PathBuf,
    /// `JWT_ISSUER`, else `API_URL`, else `http://127.0.0.1:{port}`; one trailing `/` removed.
    pub issuer: String,
    pub database: DatabaseConfig,
    pub redis: Option<RedisConfig>,
    pub jwt: JwtConfig,
    pub access_token_ttl: Duration,
    /// `REFRESH_TOKEN_EXPIRY`: how long one refresh token lives from its issue.
    pub refresh_token_ttl: Duration,
    /// `REFRESH_TOKEN_MAX_AGE`: how long a family of refresh tokens lives from the authorization.
    pub refresh_token_max_age: Duration,
    pub session: SessionConfig,
    pub oauth: OAuthConfig,
    pub smtp: Option<SmtpConfig>,
    pub bcrypt_rounds: u32,
    /// `ALLOWED_ORIGINS`: the origins whose scripts may call the endpoints browsers use
    /// (`http::cors`), each in its serialized form (`https://app.example.com`); `*` only in
    /// development.
    pub allowed_origins: Vec<String>,
    pub http: HttpConfig,
    pub rate_limit: RateLimitConfig,
    /// `TRUST_PROXY`: the proxies whose `X-Forwarded-For` / `Forwarded` name the client
    /// (`http::client_ip`); empty: the socket address is the client.
    pub trust_proxy: Vec<ipnet::IpNet>,
    /// One of trace, debug, info, warn, error.
    pub log_level: String,
    /// `SENTRY_DSN`, checked to be a DSN; `None` also when it is the guide's placeholder.
    pub sentry_dsn: Option<Secret<String>>,
    /// `SENTRY_ENVIRONMENT`: the environment events are filed under (default: the mode).
    pub sentry_environment: Option<String>,
    /// `DATADOG_API_KEY`: not used by Truxe (the Datadog Agent holds the key); start-up explains
    /// what a Datadog user sets instead.
    pub datadog_api_key: Option<Secret<String>>,
    /// `METRICS_PORT`: `/metrics` on a listener of its own (and not on `PORT`).
    pub metrics_port: Option<u16>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: where traces go over OTLP/HTTP.
    pub otlp: Option<OtlpConfig>,
    pub mfa: MfaConfig,
    pub sign_in: SignInConfig,
    pub admin_token: Option<Secret<String>>,
    /// `TRUXE_SCOPES`: scopes beyond [`STANDARD_SCOPES`] that clients may be registered with.
    pub extra_scopes: Vec<String>,
    /// `TRUXE_AUDIT_RETENTION`: audit entries older than this are pruned hourly; `None` keeps
    /// every entry.
    pub audit_retention: Option<Duration>,
    /// Human-readable warnings to log at start; never hold a secret value.
    pub warnings: Vec<String>,
}

/// Traces over OTLP/HTTP (protobuf), e.g. to the Datadog Agent's OTLP receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended, as the OTLP specification says
    /// for the signal-independent variable.
    pub traces_endpoint: String,
    /// `OTEL_SERVICE_NAME` (default `truxe`).
    pub service_name: String,
}

#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    /// No `DATABASE_URL`: the SQLite file in the data directory (development only).
    pub is_embedded_default: bool,
    pub pool_min: u32,
    pub pool_max: u32,
    pub idle_timeout: Duration,
    pub connection_timeout: Duration,
    pub ssl: bool,
    pub ssl_reject_unauthorized: bool,
    /// `DATABASE_SSL_CA`: the CA that signed the server's certificate (libpq's `sslrootcert`);
    /// without it, the system trust store ([`system_ca_file`]).
    pub ssl_ca: Option<CaFile>,
}

#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Already `rediss://` when `REDIS_TLS=true`.
    pub url: Secret<String>,
    pub tls: bool,
    /// `REDIS_TLS_CA`: the CA that signed the server's certificate; without it, the system
    /// trust store.
    pub tls_ca: Option<CaFile>,
    /// `REDIS_TLS_REJECT_UNAUTHORIZED` (default `true`); `false` encrypts without checking the
    /// certificate or the host name.
    pub tls_reject_unauthorized: bool,
    /// `TRUXE_REDIS_PREFIX`: put before every key and channel name, so that several
    /// deployments (or test servers) can share one Redis. Empty by default (`oauth:client:…`).
    pub key_prefix: String,
}

impl RedisConfig {
    /// `name` with the configured prefix: `key("oauth:client:cl_1")`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.key_prefix)
    }
}

#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// PEM with real newlines, whatever form the variable used.
    pub private_key_pem: Option<Secret<String>>,
    pub public_key_pem: Option<String>,
    pub algorithm: Algorithm,
    pub audience: Option<String>,
    /// `JWT_KEY_ROTATION`: how long a generated key signs before the schedule publishes the next
    /// one; `None` (`off`, the default): keys change only by `truxectl keys rotate`.
    pub rotation: Option<Duration>,
    /// `JWT_KEY_PUBLISH_DELAY`: how long a new key is in the JWKS before it signs (whole seconds).
    pub publish_delay: Duration,
    /// `JWT_JWKS_MAX_AGE`: the JWKS's `Cache-Control: max-age` (whole seconds).
    pub jwks_max_age: Duration,
}

/// Default `JWT_KEY_PUBLISH_DELAY`.
pub const DEFAULT_KEY_PUBLISH_DELAY: Duration = Duration::from_secs(3_600);
/// Default `JWT_JWKS_MAX_AGE`: five minutes keeps a new key visible soon enough.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(300);

impl JwtConfig {
    /// How often every instance reads the signing keys from the database: 5 s, or a quarter of
    /// the publish delay when that is shorter (tests), at least 250 ms.
    pub fn key_refresh_interval(&self) -> Duration {
        key_refresh_interval(self.publish_delay)
    }
}

fn key_refresh_interval(publish_delay: Duration) -> Duration {
    (publish_delay / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub secret: Option<Secret<String>>,
    pub max_age: Duration,
    pub secure: bool,
    pub same_site: SameSite,
}

#[derive(Clone, Debug)]
pub struct OAuthConfig {
    pub authorization_code_ttl: Duration,
    pub require_pkce: bool,
    pub allow_refresh_token: bool,
    /// `TRUXE_REFRESH_REUSE_GRACE`: how long a rotated refresh token still works (a client
    /// retrying a lost response); presented later, it revokes its whole family.
    pub refresh_reuse_grace: Duration,
}

#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub secure: bool,
    /// `SMTP_TLS_IMPLICIT`: TLS from the first byte on a port other than 465.
    pub implicit_tls: bool,
    /// `SMTP_TLS_CA`: the CA that signed the server's certificate; without it, the system
    /// trust store.
    pub tls_ca: Option<CaFile>,
    /// `SMTP_TLS_REJECT_UNAUTHORIZED` (default `true`); `false` encrypts without checking the
    /// certificate or the host name.
    pub tls_reject_unauthorized: bool,
    pub user: Option<String>,
    pub password: Option<Secret<String>>,
    pub from: String,
    pub from_name: Option<String>,
}

/// Limits on what one HTTP client may hold of the server.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `TRUXE_CLIENT_TIMEOUT`: how long a client has to send its request head, and again its
    /// body; a slower client is cut off (408, or the connection closed).
    pub client_timeout: Duration,
    /// `TRUXE_MAX_CONNECTIONS`: open connections at most, over all workers; more wait in the
    /// listen backlog.
    pub max_connections: u32,
}

#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    /// `RATE_LIMIT_ENABLED`; `false` turns every limit off (requests and magic links).
    pub enabled: bool,
    pub window: Duration,
    pub max: u32,
    pub oauth_window: Duration,
    pub oauth_max: u32,
    /// (endpoint, requests per minute, burst) for every endpoint in
    /// [`DEFAULT_RATE_LIMIT_ENDPOINTS`], with `RATE_LIMIT_ENDPOINTS` applied.
    pub endpoints: Vec<(String, u32, u32)>,
    /// `TRUXE_MAGIC_LINK_LIMIT` per `TRUXE_MAGIC_LINK_WINDOW`: sign-in links per address.
    pub magic_link: MagicLinkLimit,
}

/// At most `max` sign-in links to one address per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MagicLinkLimit {
    pub max: u32,
    pub window: Duration,
}

/// Sign-in links per address (`TRUXE_MAGIC_LINK_LIMIT`) …
pub const DEFAULT_MAGIC_LINK_LIMIT: u32 = 5;
/// … per this window (`TRUXE_MAGIC_LINK_WINDOW`).
pub const DEFAULT_MAGIC_LINK_WINDOW: Duration = Duration::from_secs(15 * 60);

impl RateLimitConfig {
    /// The per-address magic-link limit, or `None` when `RATE_LIMIT_ENABLED=false`.
    pub fn magic_link_limit(&self) -> Option<MagicLinkLimit> {
        self.enabled.then_some(self.magic_link)
    }

    /// (per minute, burst) for an endpoint name such as "token".
    pub fn endpoint(&self, name: &str) -> Option<(u32, u32)> {
        self.endpoints.iter().find(|(n, _, _)| n == name).map(|(_, per_minute, burst)| (*per_minute, *burst))
    }
}

/// End-user sign-in by magic link.
#[derive(Clone, Debug)]
pub struct SignInConfig {
    /// `TRUXE_OPEN_SIGNUP`: a magic link to an unknown address creates the account.
    pub open_signup: bool,
    /// `TRUXE_MAGIC_LINK_TTL`: how long a sign-in link works.
    pub magic_link_ttl: Duration,
}

#[derive(Clone, Debug)]
pub struct MfaConfig {
    pub enabled: bool,
    pub issuer: String,
}

/// Every configuration problem found, so that an operator fixes them in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration:")?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let mut r = Reader::new(lookup);
        let mut warnings = Vec::new();

        let production = ["NODE_ENV", "TRUXE_ENV"]
            .into_iter()
            .any(|name| r.string(name).is_some_and(|v| v.eq_ignore_ascii_case("production")));
        let mode = if production { Mode::Production } else { Mode::Development };

        let port = r.port("PORT", 3001);
        let data_dir = r.string("TRUXE_DATA_DIR").map_or_else(|| PathBuf::from("./truxe-data"), PathBuf::from);
        let (issuer, issuer_source) = read_issuer(&mut r, port);
        let database = read_database(&mut r, &data_dir, &mut warnings);
        let redis = read_redis(&mut r, &mut warnings);
        let jwt = read_jwt(&mut r, &mut warnings);

        let access_token_ttl = r.duration_with_alias(
            "ACCESS_TOKEN_EXPIRY",
            "ACCESS_TOKEN_MAX_AGE",
            BareUnit::Seconds,
            Duration::from_secs(15 * 60),
        );
        let refresh_token_ttl = r.duration("REFRESH_TOKEN_EXPIRY", BareUnit::Seconds, Duration::from_secs(7 * 86_400));
        // A family's absolute lifetime; rotation never extends it. Unset: 30 days, or the
        // lifetime of one refresh token when that is longer.
        let refresh_token_max_age = r
            .duration_opt("REFRESH_TOKEN_MAX_AGE", BareUnit::Seconds)
            .unwrap_or_else(|| refresh_token_ttl.max(Duration::from_secs(30 * 86_400)));
        let session = read_session(&mut r, production);
        let oauth = OAuthConfig {
            authorization_code_ttl: r.duration(
                "OAUTH_AUTHORIZATION_CODE_EXPIRY",
                BareUnit::Seconds,
                Duration::from_secs(600),
            ),
            require_pkce: r.bool("OAUTH_REQUIRE_PKCE", true),
            allow_refresh_token: r.bool("OAUTH_ALLOW_REFRESH_TOKEN", true),
            refresh_reuse_grace: read_refresh_reuse_grace(&mut r),
        };
        let smtp = read_smtp(&mut r, production);
        let bcrypt_rounds = r.number("BCRYPT_ROUNDS", 12, 4..=31);
        let allowed_origins = read_origins(&mut r);
        let http = HttpConfig {
            client_timeout: read_client_timeout(&mut r),
            max_connections: r.number("TRUXE_MAX_CONNECTIONS", 4_096, 16..=1_000_000),
        };
        let rate_limit = read_rate_limit(&mut r, &mut warnings);
        let trust_proxy = read_trust_proxy(&mut r);
        let log_level = r.parse("LOG_LEVEL", "info".to_string(), parse_log_level);
        let sentry_dsn = read_sentry_dsn(&mut r, &mut warnings);
        let sentry_environment = r.string("SENTRY_ENVIRONMENT");
        let datadog_api_key = r.raw("DATADOG_API_KEY").map(Secret::new);
        let metrics_port = read_metrics_port(&mut r, port);
        let otlp = read_otlp(&mut r);
        let mfa = MfaConfig {
            enabled: r.bool("MFA_ENABLED", false),
            issuer: r.string("MFA_ISSUER").unwrap_or_else(|| "Truxe".to_string()),
        };
        let sign_in = read_sign_in(&mut r);
        let admin_token = r.raw("ADMIN_TOKEN").map(Secret::new);
        let extra_scopes = read_scopes(&mut r);
        let audit_retention = read_audit_retention(&mut r);

        let config = Config {
            mode,
            port,
            data_dir,
            issuer,
            database,
            redis,
            jwt,
            access_token_ttl,
            refresh_token_ttl,
            refresh_token_max_age,
            session,
            oauth,
            smtp,
            bcrypt_rounds,
            allowed_origins,
            http,
            rate_limit,
            trust_proxy,
            log_level,
            sentry_dsn,
            sentry_environment,
            datadog_api_key,
            metrics_port,
            otlp,
            mfa,
            sign_in,
            admin_token,
            extra_scopes,
            audit_retention,
            warnings: Vec::new(),
        };

        if production {
            check_production(&config, issuer_source, &mut r, &mut warnings);
        } else {
            warn_weak_development_secrets(&config, &mut warnings);
            warn_public_issuer_in_development(&config, issuer_source, &mut warnings);
        }
        for name in NOT_ACTED_ON {
            if r.is_set(name) {
                warnings.push(format!("{name} is set but not acted on by this version of Truxe"));
            }
        }
        for (name, needs, set) in [
            ("OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", config.otlp.is_some()),
            ("SENTRY_ENVIRONMENT", "SENTRY_DSN", config.sentry_dsn.is_some()),
        ] {
            if r.is_set(name) && !set && !r.failed(needs) {
                warnings.push(format!("{name} is set but {needs} is not; it is ignored"));
            }
        }
        if config.datadog_api_key.is_some() {
            warnings.push(datadog_explanation(config.otlp.is_some(), config.metrics_port.unwrap_or(config.port)));
        }
        if r.is_set("BCRYPT_ROUNDS") {
            warnings.push(
                "BCRYPT_ROUNDS has no meaning for Truxe: it stores no passwords (sign-in is by magic link), so there is nothing to hash with bcrypt".to_string(),
            );
        }

        if r.errors.is_empty() { Ok(Config { warnings, ..config }) } else { Err(ConfigErrors(r.errors)) }
    }

    /// Reads the process environment, then `env_file` (if given; it must exist), then `./.env`
    /// (if present); the first that has a variable wins. See [`layered_lookup`].
    pub fn load(env_file: Option<&Path>) -> Result<Config, ConfigErrors> {
        let lookup = layered_lookup(env_file)?;
        Config::from_lookup(&lookup)
    }

    pub fn is_production(&self) -> bool {
        self.mode == Mode::Production
    }

    /// Every scope a client may be registered with: the standard ones, then `TRUXE_SCOPES`.
    pub fn scopes_supported(&self) -> Vec<String> {
        STANDARD_SCOPES.iter().map(|s| s.to_string()).chain(self.extra_scopes.iter().cloned()).collect()
    }

    /// [`Config::scopes_supported`] as a set (every member is a valid scope token: validated at load).
    pub fn scope_set(&self) -> ScopeSet {
        ScopeSet::from_tokens(self.scopes_supported()).unwrap_or_default()
    }
}

/// The lookup behind [`Config::load`]: the process environment, then `env_file` (if given; it
/// must exist), then `./.env` (if present). Neither file is copied into the process environment.
pub fn layered_lookup(env_file: Option<&Path>) -> Result<impl Fn(&str) -> Option<String> + use<>, ConfigErrors> {
    let layers = read_layers(env_file, Path::new(".env"))?;
    Ok(move |name: &str| layered(&process_environment, &layers, name))
}

/// A non-UTF-8 value keeps its replacement characters, which then fail validation visibly
/// instead of the variable silently counting as unset.
fn process_environment(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// The first layer that has the name wins even when its value is empty (which then counts as
/// unset), as with dotenv in the Node.js service.
fn layered(
    environment: &dyn Fn(&str) -> Option<String>,
    layers: &[HashMap<String, String>],
    name: &str,
) -> Option<String> {
    environment(name).or_else(|| layers.iter().find_map(|layer| layer.get(name).cloned()))
}

fn read_layers(env_file: Option<&Path>, dot_env: &Path) -> Result<Vec<HashMap<String, String>>, ConfigErrors> {
    let mut errors = Vec::new();
    let mut layers = Vec::new();
    if let Some(path) = env_file {
        match source::read_env_file(path) {
            Ok(vars) => layers.push(vars),
            Err(e) => errors.push(format!("--env-file: {e}")),
        }
    }
    match std::fs::metadata(dot_env) {
        Ok(_) => match source::read_env_file(dot_env) {
            Ok(vars) => layers.push(vars),
            Err(e) => errors.push(format!(".env: {e}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(format!(".env: cannot read {}: {e}", dot_env.display())),
    }
    if errors.is_empty() { Ok(layers) } else { Err(ConfigErrors(errors)) }
}

/// Which variable the issuer came from, for messages; `None` when it is the default.
fn read_issuer(r: &mut Reader<'_>, port: u16) -> (String, Option<&'static str>) {
    for name in ["JWT_ISSUER", "API_URL"] {
        if let Some(value) = r.string(name) {
            let issuer = value.strip_suffix('/').unwrap_or(&value).to_string();
            if let Err(message) = validate_issuer(&issuer) {
                r.error(name, message);
            }
            return (issuer, Some(name));
        }
    }
    (format!("http://127.0.0.1:{port}"), None)
}

/// RFC 8414 §2: an issuer is an http(s) URL without query or fragment; clients compare it as an
/// exact string, so it is kept as written.
fn validate_issuer(issuer: &str) -> Result<(), String> {
    let invalid = |why: &str| format!("{issuer:?} is not a valid issuer: {why} (example: https://auth.example.com)");
    let url = url::Url::parse(issuer).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("it must start with https:// (or http:// in development)"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() || issuer.contains(['?', '#']) {
        return Err(invalid("it must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it must not contain credentials"));
    }
    Ok(())
}

fn read_database(r: &mut Reader<'_>, data_dir: &Path, warnings: &mut Vec<String>) -> DatabaseConfig {
    let embedded = || DatabaseUrl::Sqlite(data_dir.join("truxe.db"));
    let (url, is_embedded_default) = match r.raw("DATABASE_URL") {
        Some(raw) => match DatabaseUrl::parse(&raw) {
            Ok(url) => (url, false),
            Err(message) => {
                r.error("DATABASE_URL", message);
                (embedded(), false)
            }
        },
        None => (embedded(), true),
    };
    let pool_min = r.number("DATABASE_POOL_MIN", 2, 0..=1000);
    let pool_max = r.number("DATABASE_POOL_MAX", 10, 1..=1000);
    if pool_min > pool_max {
        r.error("DATABASE_POOL_MIN", format_args!("{pool_min} is larger than DATABASE_POOL_MAX ({pool_max})"));
    }
    let ssl = r.bool("DATABASE_SSL", false);
    if ssl && !url.is_postgres() {
        warnings.push("DATABASE_SSL applies to PostgreSQL only; it is ignored for SQLite".to_string());
    }
    let ssl_reject_unauthorized = r.bool("DATABASE_SSL_REJECT_UNAUTHORIZED", true);
    let ssl_ca = tls::read_ca(r, "DATABASE_SSL_CA");
    if ssl_ca.is_some() && url.is_postgres() {
        if !ssl {
            warnings.push("DATABASE_SSL_CA is set but DATABASE_SSL is not true; it is ignored".to_string());
        } else if !ssl_reject_unauthorized {
            warnings.push(
                "DATABASE_SSL_CA is ignored with DATABASE_SSL_REJECT_UNAUTHORIZED=false (the certificate is not checked)"
                    .to_string(),
            );
        }
    }
    DatabaseConfig {
        url,
        is_embedded_default,
        pool_min,
        pool_max,
        idle_timeout: r.duration("DATABASE_IDLE_TIMEOUT", BareUnit::Millis, Duration::from_millis(10_000)),
        connection_timeout: r.duration("DATABASE_CONNECTION_TIMEOUT", BareUnit::Millis, Duration::from_millis(5_000)),
        ssl,
        ssl_reject_unauthorized,
        ssl_ca,
    }
}

fn read_redis(r: &mut Reader<'_>, warnings: &mut Vec<String>) -> Option<RedisConfig> {
    let tls = r.bool("REDIS_TLS", false);
    let tls_reject_unauthorized = r.bool("REDIS_TLS_REJECT_UNAUTHORIZED", true);
    let tls_ca = tls::read_ca(r, "REDIS_TLS_CA");
    let Some(raw) = r.raw("REDIS_URL") else {
        for name in ["REDIS_TLS", "REDIS_TLS_CA", "REDIS_TLS_REJECT_UNAUTHORIZED"] {
            if r.is_set(name) {
                warnings.push(format!("{name} is set but REDIS_URL is not; it is ignored"));
            }
        }
        return None;
    };
    match database::parse_redis(&raw, tls) {
        Ok((url, tls)) => {
            if !tls {
                for name in ["REDIS_TLS_CA", "REDIS_TLS_REJECT_UNAUTHORIZED"] {
                    if r.is_set(name) {
                        warnings.push(format!(
                            "{name} is set but Redis is not reached over TLS (REDIS_TLS=true or a rediss:// URL); it is ignored"
                        ));
                    }
                }
            } else if tls_ca.is_some() && !tls_reject_unauthorized {
                warnings.push(
                    "REDIS_TLS_CA is ignored with REDIS_TLS_REJECT_UNAUTHORIZED=false (the certificate is not checked)"
                        .to_string(),
                );
            }
            let key_prefix = r.string("TRUXE_REDIS_PREFIX").unwrap_or_default();
            if key_prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
                r.error(
                    "TRUXE_REDIS_PREFIX",
                    "must not contain spaces or control characters (example: truxe-staging:)",
                );
            }
            Some(RedisConfig { url, tls, tls_ca, tls_reject_unauthorized, key_prefix })
        }
        Err(message) => {
            r.error("REDIS_URL", message);
            None
        }
    }
}

fn read_jwt(r: &mut Reader<'_>, warnings: &mut Vec<String>) -> JwtConfig {
    let private_key_pem = r.raw("JWT_PRIVATE_KEY").map(|v| Secret::new(normalize_pem(&v)));
    let public_key_pem = r.raw("JWT_PUBLIC_KEY").map(|v| normalize_pem(&v));
    let algorithm = r.parse("JWT_ALGORITHM", Algorithm::RS256, |v| v.parse().map_err(|e: KeyError| e.to_string()));
    let audience = r.string("JWT_AUDIENCE");
    for entry in audience.as_deref().unwrap_or_default().split(',').map(str::trim).filter(|a| !a.is_empty()) {
        // RFC 8707: a `resource` is an absolute URI, so any other audience can only be the default.
        if url::Url::parse(entry).is_err() {
            warnings.push(format!(
                "JWT_AUDIENCE entry {entry:?} is not an absolute URI: clients cannot request it with `resource` (RFC 8707)"
            ));
        }
    }
    match &private_key_pem {
        // Checked here so that a bad key is listed with every other problem, not found later.
        Some(private) if !r.failed("JWT_ALGORITHM") && !r.failed("JWT_PUBLIC_KEY") => {
            if let Err(e) = SigningKey::from_pem(private.secret(), public_key_pem.as_deref(), algorithm) {
                let message = e.to_string();
                if message.starts_with("JWT_") {
                    r.errors.push(message);
                } else {
                    r.error("JWT_PRIVATE_KEY", message);
                }
            }
        }
        Some(_) => {}
        None if public_key_pem.is_some() => warnings.push(
            "JWT_PUBLIC_KEY is set without JWT_PRIVATE_KEY; it is ignored (the key in the data directory is used)"
                .to_string(),
        ),
        None => {}
    }
    let (rotation, publish_delay, jwks_max_age) = read_key_rotation(r);
    if rotation.is_some() && private_key_pem.is_some() {
        warnings.push(
            "JWT_KEY_ROTATION is set but the signing key is the operator's JWT_PRIVATE_KEY: automatic rotation is off \
             (it never replaces that key); remove JWT_PRIVATE_KEY to let Truxe generate and rotate keys, or rotate \
             by hand with `truxectl keys rotate`"
                .to_string(),
        );
    }
    JwtConfig { private_key_pem, public_key_pem, algorithm, audience, rotation, publish_delay, jwks_max_age }
}

/// `JWT_KEY_ROTATION`, `JWT_KEY_PUBLISH_DELAY`, `JWT_JWKS_MAX_AGE`. The delay must outlast a
/// JWKS a resource server fetched just before the next key appeared (the max-age) plus the time
/// the instances take to read the new key (the refresh interval): else a token signed by the
/// new key meets a cached JWKS that lacks it.
fn read_key_rotation(r: &mut Reader<'_>) -> (Option<Duration>, Duration, Duration) {
    let whole_seconds = |d: Duration| Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0));
    let max_age = r.parse("JWT_JWKS_MAX_AGE", DEFAULT_JWKS_MAX_AGE, |v| {
        let d = parse_duration(v, BareUnit::Seconds)?;
        if d > Duration::from_secs(86_400) { Err(format!("{v:?} is longer than the 1d allowed")) } else { Ok(d) }
    });
    let max_age = Duration::from_secs(max_age.as_secs());
    let delay = r.parse("JWT_KEY_PUBLISH_DELAY", DEFAULT_KEY_PUBLISH_DELAY, |v| {
        let d = whole_seconds(parse_duration(v, BareUnit::Seconds)?);
        if d < Duration::from_secs(1) || d > Duration::from_secs(30 * 86_400) {
            Err(format!("{v:?} is not from 1s to 30d"))
        } else {
            Ok(d)
        }
    });
    if !r.failed("JWT_KEY_PUBLISH_DELAY") && !r.failed("JWT_JWKS_MAX_AGE") {
        let refresh = key_refresh_interval(delay);
        if delay <= max_age + refresh {
            r.error(
                "JWT_KEY_PUBLISH_DELAY",
                format_args!(
                    "{} must be longer than the JWKS max-age (JWT_JWKS_MAX_AGE, {}) plus the {} instances take to \
                     read a new key: a resource server may still hold a JWKS without the new key when it starts \
                     signing (example: 1h)",
                    format_duration(delay),
                    format_duration(max_age),
                    format_duration(refresh)
                ),
            );
        }
    }
    let rotation = r
        .parse_opt("JWT_KEY_ROTATION", |v| {
            if ["off", "false", "0"].iter().any(|off| v.trim().eq_ignore_ascii_case(off)) {
                return Ok(None);
            }
            let d = whole_seconds(
                parse_duration(v, BareUnit::Seconds)
                    .map_err(|_| format!("{v:?} is neither a duration nor \"off\" (examples: 90d, 30d, off)"))?,
            );
            Ok(Some(d))
        })
        .flatten();
    if let Some(period) = rotation
        && !r.failed("JWT_KEY_PUBLISH_DELAY")
        && period <= delay
    {
        r.error(
            "JWT_KEY_ROTATION",
            format_args!(
                "{} must be longer than JWT_KEY_PUBLISH_DELAY ({}): each key is published that long before it signs",
                format_duration(period),
                format_duration(delay)
            ),
        );
    }
    (rotation, delay, max_age)
}

/// PEM values arrive in several shapes: real newlines, literal `\n` (the guide's `.env`), or a
/// single `\` per line break, which is what the guide's `tr '\n' '\\n'` really produces (tr maps
/// one character to one character). Base64 never contains a backslash, so both map back safely;
/// the `tr` form shows itself by a backslash before something other than `n`, such as the
/// `-----END` line.
fn normalize_pem(value: &str) -> String {
    let mut pem = value.trim();
    for quote in ['"', '\''] {
        if pem.len() >= 2 && pem.starts_with(quote) && pem.ends_with(quote) {
            pem = &pem[1..pem.len() - 1];
        }
    }
    let bytes = pem.as_bytes();
    let tr_form = pem.contains("-----BEGIN")
        && bytes.iter().enumerate().any(|(i, b)| *b == b'\\' && !matches!(bytes.get(i + 1), Some(b'n' | b'r')));
    let pem = if tr_form { pem.replace('\\', "\n") } else { pem.replace("\\r\\n", "\n").replace("\\n", "\n") };
    let mut pem = pem.replace("\r\n", "\n").trim().to_string();
    pem.push('\n');
    pem
}

fn read_session(r: &mut Reader<'_>, production: bool) -> SessionConfig {
    let secret = r.raw("SESSION_SECRET").map(Secret::new);
    let max_age = r.duration("SESSION_MAX_AGE", BareUnit::Millis, Duration::from_secs(24 * 3_600));
    let secure = r.bool("SESSION_SECURE", production);
    let same_site = r.parse("SESSION_SAME_SITE", SameSite::Lax, |v| match v.to_ascii_lowercase().as_str() {
        "strict" => Ok(SameSite::Strict),
        "lax" => Ok(SameSite::Lax),
        "none" => Ok(SameSite::None),
        _ => Err(format!("{v:?} is not one of strict, lax, none")),
    });
    if same_site == SameSite::None && !secure {
        r.error(
            "SESSION_SAME_SITE",
            "none needs SESSION_SECURE=true (browsers drop SameSite=None cookies that are not Secure)",
        );
    }
    SessionConfig { secret, max_age, secure, same_site }
}

/// `TRUXE_REFRESH_REUSE_GRACE` (`0`, off: a rotated token presented again is a replay, RFC 9700
/// §4.14.2), at most five minutes.
fn read_refresh_reuse_grace(r: &mut Reader<'_>) -> Duration {
    const MAX: Duration = Duration::from_secs(300);
    r.parse_opt("TRUXE_REFRESH_REUSE_GRACE", |v| {
        let d = parse_duration(v, BareUnit::Seconds)?;
        if d > MAX { Err(format!("{v:?} is longer than the 5m allowed")) } else { Ok(d) }
    })
    .unwrap_or(Duration::ZERO)
}

/// `TRUXE_AUDIT_RETENTION`: unset, `0` or `forever` keep every audit entry; otherwise a duration
/// of at least a day (a bare number is seconds).
fn read_audit_retention(r: &mut Reader<'_>) -> Option<Duration> {
    const MIN: Duration = Duration::from_secs(86_400);
    r.parse_opt("TRUXE_AUDIT_RETENTION", |v| {
        if v.trim().eq_ignore_ascii_case("forever") {
            return Ok(None);
        }
        let d = parse_duration(v, BareUnit::Seconds)?;
        if d.is_zero() {
            Ok(None)
        } else if d < MIN {
            Err(format!("{v:?} is shorter than the 1d allowed (0 or forever keeps every entry)"))
        } else {
            Ok(Some(d))
        }
    })
    .flatten()
}

fn read_sign_in(r: &mut Reader<'_>) -> SignInConfig {
    let open_signup = r.bool("TRUXE_OPEN_SIGNUP", false);
    let magic_link_ttl = r.duration("TRUXE_MAGIC_LINK_TTL", BareUnit::Seconds, Duration::from_secs(15 * 60));
    if !r.failed("TRUXE_MAGIC_LINK_TTL")
        && (magic_link_ttl < Duration::from_secs(1) || magic_link_ttl > Duration::from_secs(86_400))
    {
        r.error("TRUXE_MAGIC_LINK_TTL", "must be between 1s and 24h (example: 15m)");
    }
    SignInConfig { open_signup, magic_link_ttl }
}

fn read_smtp(r: &mut Reader<'_>, production: bool) -> Option<SmtpConfig> {
    let host = r.string("SMTP_HOST");
    let port = r.port("SMTP_PORT", 587);
    let secure = r.bool("SMTP_SECURE", false);
    let implicit_tls = r.bool("SMTP_TLS_IMPLICIT", false);
    let tls_ca = tls::read_ca(r, "SMTP_TLS_CA");
    let tls_reject_unauthorized = r.bool("SMTP_TLS_REJECT_UNAUTHORIZED", true);
    let user = r.string("SMTP_USER");
    let password = r.raw("SMTP_PASSWORD").map(Secret::new);
    let from = r.parse_opt("EMAIL_FROM", |v| {
        if v.contains('@') { Ok(v.to_string()) } else { Err(format!("{v:?} is not an email address")) }
    });
    let from_name = r.string("EMAIL_FROM_NAME");
    let host = host?;
    let Some(from) = from else {
        // Production lists a missing EMAIL_FROM on its own; do not report it twice.
        if !production && !r.failed("EMAIL_FROM") {
            r.error("EMAIL_FROM", "required when SMTP_HOST is set (the sender address of magic-link emails)");
        }
        return None;
    };
    Some(SmtpConfig {
        host,
        port,
        secure,
        implicit_tls,
        tls_ca,
        tls_reject_unauthorized,
        user,
        password,
        from,
        from_name,
    })
}

fn read_origins(r: &mut Reader<'_>) -> Vec<String> {
    let Some(list) = r.string("ALLOWED_ORIGINS") else {
        return Vec::new();
    };
    let mut origins = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item == "*" {
            origins.push(item.to_string());
            continue;
        }
        // Browsers send Origin serialized: no trailing slash, lower-case scheme and host, no
        // default port. Stored that way, an exact comparison matches however it was written.
        let origin = item.strip_suffix('/').unwrap_or(item);
        let parsed = url::Url::parse(origin).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.path().trim_start_matches('/').is_empty()
                && u.username().is_empty()
                && u.password().is_none()
                && !origin.contains(['?', '#'])
        });
        if let Some(url) = parsed {
            origins.push(url.origin().ascii_serialization());
        } else {
            r.error("ALLOWED_ORIGINS", format_args!("{item:?} is not an origin (scheme://host[:port], no path)"));
        }
    }
    origins
}

/// `TRUXE_CLIENT_TIMEOUT`: 1 s to 5 min (default 10 s); a bare number is seconds.
fn read_client_timeout(r: &mut Reader<'_>) -> Duration {
    let timeout = r.duration("TRUXE_CLIENT_TIMEOUT", BareUnit::Seconds, Duration::from_secs(10));
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&timeout) {
        r.error("TRUXE_CLIENT_TIMEOUT", format_args!("{} is not from 1s to 5m", format_duration(timeout)));
    }
    timeout
}

/// `TRUXE_SCOPES=orders:read,orders:write`: each one an RFC 6749 §3.3 scope-token. Standard
/// scopes listed again are dropped rather than refused, since listing them is harmless.
fn read_scopes(r: &mut Reader<'_>) -> Vec<String> {
    let Some(list) = r.string("TRUXE_SCOPES") else {
        return Vec::new();
    };
    let mut scopes: Vec<String> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let valid = item.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            r.error(
                "TRUXE_SCOPES",
                format_args!(
                    "{item:?} is not a scope (printable ASCII without spaces, '\"' or '\\'; example: orders:read)"
                ),
            );
        } else if !STANDARD_SCOPES.contains(&item) && !scopes.iter().any(|s| s == item) {
            scopes.push(item.to_string());
        }
    }
    scopes
}

fn read_rate_limit(r: &mut Reader<'_>, warnings: &mut Vec<String>) -> RateLimitConfig {
    let fifteen_minutes = Duration::from_secs(15 * 60);
    let mut endpoints: Vec<(String, u32, u32)> = DEFAULT_RATE_LIMIT_ENDPOINTS
        .iter()
        .map(|(name, per_minute, burst)| (name.to_string(), *per_minute, *burst))
        .collect();
    if let Some(overrides) = r.string("RATE_LIMIT_ENDPOINTS") {
        let mut seen = Vec::new();
        for item in overrides.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match parse_endpoint_limit(item) {
                Ok((name, per_minute, burst)) => {
                    if seen.contains(&name) {
                        r.error("RATE_LIMIT_ENDPOINTS", format_args!("{name:?} is listed twice"));
                        continue;
                    }
                    seen.push(name.clone());
                    match endpoints.iter_mut().find(|(n, _, _)| *n == name) {
                        Some(slot) => *slot = (name, per_minute, burst),
                        None => {
                            let known: Vec<&str> = DEFAULT_RATE_LIMIT_ENDPOINTS.iter().map(|(n, _, _)| *n).collect();
                            r.error(
                                "RATE_LIMIT_ENDPOINTS",
                                format_args!("unknown endpoint {name:?} (known: {})", known.join(", ")),
                            );
                        }
                    }
                }
                Err(message) => r.error("RATE_LIMIT_ENDPOINTS", message),
            }
        }
    }
    let enabled = r.bool("RATE_LIMIT_ENABLED", true);
    let magic_link = read_magic_link_limit(r);
    if !enabled && !r.failed("RATE_LIMIT_ENABLED") {
        for name in ["TRUXE_MAGIC_LINK_LIMIT", "TRUXE_MAGIC_LINK_WINDOW"] {
            if r.is_set(name) {
                warnings.push(format!("{name} is set but RATE_LIMIT_ENABLED=false turns the magic-link limit off"));
            }
        }
        for name in [
            "RATE_LIMIT_WINDOW",
            "RATE_LIMIT_MAX",
            "OAUTH_RATE_LIMIT_WINDOW",
            "OAUTH_RATE_LIMIT_MAX",
            "RATE_LIMIT_ENDPOINTS",
        ] {
            if r.is_set(name) {
                warnings.push(format!("{name} is set but RATE_LIMIT_ENABLED=false turns request rate limits off"));
            }
        }
    }
    RateLimitConfig {
        enabled,
        window: r.duration("RATE_LIMIT_WINDOW", BareUnit::Millis, fifteen_minutes),
        max: r.number("RATE_LIMIT_MAX", 100, 1..=1_000_000),
        oauth_window: r.duration("OAUTH_RATE_LIMIT_WINDOW", BareUnit::Millis, fifteen_minutes),
        oauth_max: r.number("OAUTH_RATE_LIMIT_MAX", 50, 1..=1_000_000),
        endpoints,
        magic_link,
    }
}

/// `TRUST_PROXY=10.0.0.0/8,127.0.0.1`: CIDRs, or single addresses (a /32 or /128).
fn read_trust_proxy(r: &mut Reader<'_>) -> Vec<ipnet::IpNet> {
    let Some(list) = r.string("TRUST_PROXY") else {
        return Vec::new();
    };
    let mut proxies = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match parse_proxy(item) {
            Some(net) => proxies.push(net),
            None => r.error(
                "TRUST_PROXY",
                format_args!("{item:?} is not an IP address or CIDR (example: 10.0.0.0/8,127.0.0.1,::1)"),
            ),
        }
    }
    proxies
}

/// One `TRUST_PROXY` entry; the network's host bits are dropped (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_proxy(item: &str) -> Option<ipnet::IpNet> {
    item.parse::<ipnet::IpNet>()
        .map(|net| net.trunc())
        .ok()
        .or_else(|| item.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// `TRUXE_MAGIC_LINK_LIMIT` (1 to 1000 links) per `TRUXE_MAGIC_LINK_WINDOW` (`1s` to `24h`; a bare
/// number is seconds, like `TRUXE_MAGIC_LINK_TTL`).
fn read_magic_link_limit(r: &mut Reader<'_>) -> MagicLinkLimit {
    let max = r.number("TRUXE_MAGIC_LINK_LIMIT", DEFAULT_MAGIC_LINK_LIMIT, 1..=1000);
    let window = r.duration("TRUXE_MAGIC_LINK_WINDOW", BareUnit::Seconds, DEFAULT_MAGIC_LINK_WINDOW);
    if !r.failed("TRUXE_MAGIC_LINK_WINDOW") && (window < Duration::from_secs(1) || window > Duration::from_secs(86_400))
    {
        r.error("TRUXE_MAGIC_LINK_WINDOW", "must be between 1s and 24h (example: 15m)");
    }
    MagicLinkLimit { max, window }
}

/// `token=20:40`: requests per minute, then burst.
fn parse_endpoint_limit(item: &str) -> Result<(String, u32, u32), String> {
    let invalid = || format!("{item:?} is not NAME=PER_MINUTE:BURST (example: token=20:40)");
    let (name, limits) = item.split_once('=').ok_or_else(invalid)?;
    let (per_minute, burst) = limits.split_once(':').ok_or_else(invalid)?;
    let number = |s: &str| s.trim().parse::<u32>().ok().filter(|n| *n > 0);
    match (number(per_minute), number(burst)) {
        (Some(per_minute), Some(burst)) => Ok((name.trim().to_ascii_lowercase(), per_minute, burst)),
        _ => Err(format!(
            "{item:?}: the limits must be whole numbers above zero (to turn limiting off use RATE_LIMIT_ENABLED=false)"
        )),
    }
}

/// `SENTRY_DSN`: a DSN (`https://PUBLIC_KEY@HOST/PROJECT_ID`), checked here because the sentry
/// client panics on an invalid one. The deployment guide's placeholder (`https://your-sentry-dsn`)
/// is not an error, so that the guide's file starts unchanged; it is reported, and nothing is sent.
fn read_sentry_dsn(r: &mut Reader<'_>, warnings: &mut Vec<String>) -> Option<Secret<String>> {
    let value = r.raw("SENTRY_DSN")?;
    let value = value.trim();
    match value.parse::<sentry::types::Dsn>() {
        Ok(_) => Some(Secret::new(value.to_string())),
        Err(_) if is_placeholder_dsn(value) => {
            warnings.push(
                "SENTRY_DSN is the deployment guide's placeholder, not a DSN: no errors are sent to Sentry. Set it to \
                 your project's DSN (https://PUBLIC_KEY@o0.ingest.sentry.io/PROJECT_ID, under Project Settings → \
                 Client Keys) or remove it"
                    .to_string(),
            );
            None
        }
        Err(error) => {
            // The value holds the project's key: never quoted.
            r.error(
                "SENTRY_DSN",
                format_args!("not a Sentry DSN ({error}); expected https://PUBLIC_KEY@HOST/PROJECT_ID"),
            );
            None
        }
    }
}

/// A DSN-shaped placeholder from an example file: `https://your-sentry-dsn`, `<dsn>`, `changeme`.
fn is_placeholder_dsn(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    lower.contains("your-") || lower.contains("your_") || lower.contains(['<', '>']) || lower.contains("changeme")
}

/// `METRICS_PORT`: a port other than `PORT`.
fn read_metrics_port(r: &mut Reader<'_>, port: u16) -> Option<u16> {
    let metrics_port = r.parse_opt("METRICS_PORT", source::parse_port)?;
    if metrics_port == port {
        r.error(
            "METRICS_PORT",
            format_args!(
                "{metrics_port} is also PORT; choose another port, or unset METRICS_PORT to serve /metrics on PORT"
            ),
        );
        return None;
    }
    Some(metrics_port)
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT` (an http(s) base URL such as `http://localhost:4318`) and
/// `OTEL_SERVICE_NAME`.
fn read_otlp(r: &mut Reader<'_>) -> Option<OtlpConfig> {
    let service_name = r.string("OTEL_SERVICE_NAME").unwrap_or_else(|| "truxe".to_string());
    let endpoint = r.parse_opt("OTEL_EXPORTER_OTLP_ENDPOINT", |value| {
        let url = url::Url::parse(value).map_err(|e| format!("{value:?} is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(format!(
                "{value:?} is not an http(s) URL (example: http://localhost:4318, the OTLP/HTTP port of a collector \
                 or the Datadog Agent)"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{value:?} must not have a query or fragment"));
        }
        Ok(value.trim_end_matches('/').to_string())
    })?;
    Some(OtlpConfig { traces_endpoint: format!("{endpoint}/v1/traces"), service_name })
}

/// What `DATADOG_API_KEY` means for Truxe: nothing by itself, since the Datadog Agent holds
/// the key and collects from Truxe; says what a Datadog user sets instead.
fn datadog_explanation(traces: bool, metrics_port: u16) -> String {
    let traces = if traces {
        "traces go over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT (the Agent's OTLP receiver)"
    } else {
        "for traces, set OTEL_EXPORTER_OTLP_ENDPOINT to the Agent's OTLP receiver (http://AGENT:4318)"
    };
    format!(
        "DATADOG_API_KEY is not used by Truxe: the Datadog Agent holds the key and collects from Truxe. \
         Point the Agent's OpenMetrics check at http://THIS_HOST:{metrics_port}/metrics; {traces}"
    )
}

fn parse_log_level(value: &str) -> Result<String, String> {
    match value.to_ascii_lowercase().as_str() {
        level @ ("trace" | "debug" | "info" | "warn" | "error") => Ok(level.to_string()),
        // The Node.js service (pino) had a level above error.
        "fatal" => Ok("error".to_string()),
        _ => Err(format!("{value:?} is not a log level (trace, debug, info, warn, error)")),
    }
}

/// Why a production secret is refused, if it is; never quotes the value.
/// Why a production secret is not good enough (too short, a placeholder), if it is not.
pub fn secret_problem(value: &str) -> Option<String> {
    let length = value.chars().count();
    if length < MIN_SECRET_CHARS {
        return Some(format!("too short ({length} characters; at least {MIN_SECRET_CHARS} are required)"));
    }
    let lower = value.to_lowercase();
    let placeholder = value.contains(['<', '>'])
        || ["changeme", "change-me", "secret", "password", "example"].iter().any(|word| lower.contains(word));
    if placeholder {
        return Some("looks like a placeholder from an example file".to_string());
    }
    let mut distinct: Vec<char> = value.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 10 {
        return Some(format!("too predictable (only {} distinct characters)", distinct.len()));
    }
    None
}

const GENERATE_SECRET_HINT: &str = "generate one with `truxectl secrets generate`";

/// The development shortcuts refused in production, all listed at once.
fn check_production(config: &Config, issuer_source: Option<&str>, r: &mut Reader<'_>, warnings: &mut Vec<String>) {
    if config.jwt.private_key_pem.is_none()
        && config.jwt.rotation.is_none()
        && !r.failed("JWT_PRIVATE_KEY")
        && !r.failed("JWT_KEY_ROTATION")
    {
        r.error(
            "JWT_PRIVATE_KEY",
            "required in production (the key generated in the data directory is a development shortcut); \
             create one with `truxectl keys generate`, or set JWT_KEY_ROTATION (e.g. 90d) to have Truxe generate \
             and rotate keys in the database",
        );
    }
    if !config.session.secure && !r.failed("SESSION_SECURE") {
        r.error("SESSION_SECURE", "must be true in production: session cookies travel only over https");
    }
    if config.database.is_embedded_default && !r.failed("DATABASE_URL") {
        r.error(
            "DATABASE_URL",
            "required in production (the embedded SQLite database is a development shortcut); \
             example: postgres://truxe:PASSWORD@db-host:5432/truxe",
        );
    }
    for (name, value) in [("SESSION_SECRET", &config.session.secret), ("ADMIN_TOKEN", &config.admin_token)] {
        if r.failed(name) {
            continue;
        }
        match value {
            None => r.error(
                name,
                format_args!("required in production ({MIN_SECRET_CHARS}+ random characters); {GENERATE_SECRET_HINT}"),
            ),
            Some(secret) => {
                if let Some(problem) = secret_problem(secret.secret()) {
                    r.error(name, format_args!("{problem}; {GENERATE_SECRET_HINT}"));
                }
            }
        }
    }
    if r.string("SMTP_HOST").is_none() && !r.failed("SMTP_HOST") {
        r.error("SMTP_HOST", "required in production (without it magic-link emails only go to the log)");
    }
    if r.string("EMAIL_FROM").is_none() && !r.failed("EMAIL_FROM") {
        r.error("EMAIL_FROM", "required in production (the sender address of magic-link emails)");
    }
    match issuer_source {
        None => r.error(
            "JWT_ISSUER",
            "required in production (or API_URL): the public https URL of this server, e.g. https://auth.example.com",
        ),
        Some(name) if !r.failed(name) && !config.issuer.starts_with("https://") => {
            r.error(name, format_args!("{:?} must be an https URL in production", config.issuer));
        }
        Some(_) => {}
    }
    if config.allowed_origins.iter().any(|o| o == "*") {
        r.error("ALLOWED_ORIGINS", "\"*\" is not allowed in production; list each origin (https://app.example.com)");
    }
    if !config.rate_limit.enabled {
        warnings.push(
            "RATE_LIMIT_ENABLED=false in production: no request is rate limited, not even sign-in links per address \
             (meant for development and load tests only)"
                .to_string(),
        );
    }
}

/// An https issuer is a public deployment: development mode there is almost always a forgotten
/// `TRUXE_ENV=production`, and it quietly allows every shortcut production refuses.
fn warn_public_issuer_in_development(config: &Config, issuer_source: Option<&str>, warnings: &mut Vec<String>) {
    let Some(name) = issuer_source else {
        return;
    };
    if config.issuer.starts_with("https://") {
        warnings.push(format!(
            "NOT RUNNING IN PRODUCTION MODE although {name} is {:?}: development shortcuts are allowed \
             (generated keys and secrets, the embedded SQLite database, magic links in the log, cookies without \
             Secure unless SESSION_SECURE=true). Set TRUXE_ENV=production (or NODE_ENV=production) on a public server",
            config.issuer
        ));
    }
}

/// Development accepts weak secrets, but says so before they reach production.
fn warn_weak_development_secrets(config: &Config, warnings: &mut Vec<String>) {
    for (name, value) in [("SESSION_SECRET", &config.session.secret), ("ADMIN_TOKEN", &config.admin_token)] {
        if let Some(problem) = value.as_ref().and_then(|s| secret_problem(s.secret())) {
            warnings.push(format!("{name} is {problem}; production mode would refuse it"));
        }
    }
}
