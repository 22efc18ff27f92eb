//! Prometheus metrics: one registry per server and a typed recorder for each event, so that the
//! code where an event happens adds one call and never a metric name or a label string.
//!
//! Names follow SPEC ("Metrics") and the Prometheus conventions: the `truxe_` prefix, base units
//! (seconds), `_total` on counters. Every label has a bounded set of values: routes are the
//! route patterns (`/oauth-provider/clients/{client_id}`; [`UNMATCHED_ROUTE`] for any path no
//! route matches), never the raw path. Values that other parts already count (the database
//! pool, Redis failures) are read when `/metrics` is scraped ([`Sample`]), not counted twice.

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::model::client::GrantType;
use crate::store::housekeeping::Purged;

/// The `route` label of requests that no route matched (404s of unknown paths): one value for
/// all of them, so that scanners cannot create series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// `Content-Type` of the exposition: the Prometheus text format 0.0.4, which the Datadog Agent's
/// OpenMetrics check reads too.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets in seconds: 1 ms (a cached discovery document) to 10 s (a request that waited
/// for the database pool).
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0];

/// What failed to authenticate (`truxe_authentication_failures_total{kind}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// An `invalid_client` answer of the token, introspection or revocation endpoint.
    Client,
    /// A wrong admin token at the admin API.
    AdminToken,
    /// A wrong or reused second-factor code at sign-in.
    Mfa,
    /// An unknown, expired or used magic link.
    MagicLink,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 4] =
        [AuthFailure::Client, AuthFailure::AdminToken, AuthFailure::Mfa, AuthFailure::MagicLink];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Client => "client",
            AuthFailure::AdminToken => "admin_token",
            AuthFailure::Mfa => "mfa",
            AuthFailure::MagicLink => "magic_link",
        }
    }
}

/// Values owned elsewhere, read at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Open connections of the database pool, and how many of them are idle.
    pub pool_connections: u32,
    pub pool_idle: u32,
    pub pool_max: u32,
    /// Checkouts waiting for a free connection.
    pub pool_waiting: usize,
    /// Failed Redis calls since start (`SharedRedis::errors`); `None` without Redis.
    pub redis_errors: Option<u64>,
    /// Rate-limit checks answered in process because Redis failed (`Limiter::fallbacks`).
    pub rate_limit_fallbacks: u64,
    /// (kid, age) of the signing keys in use.
    pub signing_keys: Vec<(String, Duration)>,
}

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The registry of one server and every metric in it.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    tokens_issued: IntCounterVec,
    auth_failures: IntCounterVec,
    rate_limited: IntCounterVec,
    purged_rows: IntCounterVec,
    db_pool: IntGaugeVec,
    db_pool_max: IntGauge,
    db_pool_waiting: IntGauge,
    redis_errors: IntCounter,
    rate_limit_fallbacks: IntCounter,
    signing_key_age: GaugeVec,
    /// One scrape at a time: the values read in [`Metrics::render`] are set, then gathered.
    scrape: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let http_requests = counter(
            "truxe_http_requests_total",
            "HTTP requests answered, by route pattern, method and status.",
            &["route", "method", "status"],
        )?;
        let tokens_issued = counter(
            "truxe_tokens_issued_total",
            "Token responses of the token endpoint, by grant type.",
            &["grant_type"],
        )?;
        let auth_failures = counter(
            "truxe_authentication_failures_total",
            "Failed authentications: client (invalid_client), admin_token, mfa (wrong code), magic_link (unusable link).",
            &["kind"],
        )?;
        let rate_limited = counter(
            "truxe_rate_limited_total",
            "Requests refused with 429 by a rate limit, by route pattern.",
            &["route"],
        )?;
        let purged_rows = counter(
            "truxe_purged_rows_total",
            "Rows removed by the hourly purge of expired records, by table.",
            &["table"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "truxe_http_request_duration_seconds",
                "Time from the request head to the response head, by route pattern, method and status.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let db_pool = IntGaugeVec::new(
            Opts::new("truxe_db_pool_connections", "Open database connections of the pool: in_use or idle."),
            &["state"],
        )?;
        registry.register(Box::new(db_pool.clone()))?;
        let gauge = |name: &str, help: &str| -> Result<IntGauge, MetricsError> {
            let metric = IntGauge::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let db_pool_max =
            gauge("truxe_db_pool_max_connections", "DATABASE_POOL_MAX: the most connections the pool opens.")?;
        let db_pool_waiting =
            gauge("truxe_db_pool_waiting", "Requests waiting for a free database connection right now.")?;
        let single = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let metric = IntCounter::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let redis_errors = single(
            "truxe_redis_errors_total",
            "Failed or timed-out Redis calls for shared state (client cache, revocation marks, client changes).",
        )?;
        let rate_limit_fallbacks = single(
            "truxe_rate_limit_fallbacks_total",
            "Rate-limit checks counted in process because Redis failed or was slow.",
        )?;
        let signing_key_age = GaugeVec::new(
            Opts::new(
                "truxe_signing_key_age_seconds",
                "Seconds since the signing key this server signs with was first recorded (signing_keys.created_at).",
            ),
            &["kid"],
        )?;
        registry.register(Box::new(signing_key_age.clone()))?;
        let build_info =
            IntGaugeVec::new(Opts::new("truxe_build_info", "Always 1; the version running."), &["version"])?;
        registry.register(Box::new(build_info.clone()))?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        // Every value of the fixed label sets exists from the start: a rate of a series that
        // appears only with its first event would miss that event.
        for grant in GrantType::ALL {
            tokens_issued.with_label_values(&[grant.as_str()]);
        }
        for kind in AuthFailure::ALL {
            auth_failures.with_label_values(&[kind.as_str()]);
        }
        for table in PURGED_TABLES {
            purged_rows.with_label_values(&[table]);
        }
        for state in ["in_use", "idle"] {
            db_pool.with_label_values(&[state]);
        }
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            tokens_issued,
            auth_failures,
            rate_limited,
            purged_rows,
            db_pool,
            db_pool_max,
            db_pool_waiting,
            redis_errors,
            rate_limit_fallbacks,
            signing_key_age,
            scrape: std::sync::Mutex::new(()),
        })
    }

    /// One answered request; `route` is the matched pattern or [`UNMATCHED_ROUTE`].
    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let status = status_label(status);
        let labels = [route, method_label(method), status.as_ref()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration.with_label_values(&labels).observe(elapsed.as_secs_f64());
    }

    /// A token response of the token endpoint.
    pub fn token_issued(&self, grant: GrantType) {
        self.tokens_issued.with_label_values(&[grant.as_str()]).inc();
    }

    pub fn authentication_failed(&self, kind: AuthFailure) {
        self.auth_failures.with_label_values(&[kind.as_str()]).inc();
    }

    /// A request refused with 429 on `route` (a route pattern).
    pub fn rate_limited(&self, route: &str) {
        self.rate_limited.with_label_values(&[route]).inc();
    }

    /// The rows one purge removed.
    pub fn purged(&self, purged: &Purged) {
        let counts =
            [purged.magic_links, purged.sessions, purged.authorization_codes, purged.access_tokens, purged.grants];
        for (table, count) in PURGED_TABLES.iter().zip(counts) {
            self.purged_rows.with_label_values(&[table]).inc_by(count as u64);
        }
    }

    /// The exposition in the Prometheus text format, with `sample` as the scraped values.
    pub fn render(&self, sample: &Sample) -> Result<String, MetricsError> {
        let _one_scrape = self.scrape.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let in_use = sample.pool_connections.saturating_sub(sample.pool_idle);
        self.db_pool.with_label_values(&["in_use"]).set(i64::from(in_use));
        self.db_pool.with_label_values(&["idle"]).set(i64::from(sample.pool_idle));
        self.db_pool_max.set(i64::from(sample.pool_max));
        self.db_pool_waiting.set(i64::try_from(sample.pool_waiting).unwrap_or(i64::MAX));
        catch_up(&self.redis_errors, sample.redis_errors.unwrap_or(0));
        catch_up(&self.rate_limit_fallbacks, sample.rate_limit_fallbacks);
        self.signing_key_age.reset();
        for (kid, age) in &sample.signing_keys {
            self.signing_key_age.with_label_values(&[kid.as_str()]).set(age.as_secs_f64());
        }
        let mut families = self.registry.gather();
        if sample.redis_errors.is_none() {
            // Without Redis there is nothing to fail: no series rather than a misleading zero.
            families.retain(|family| family.name() != "truxe_redis_errors_total");
        }
        let mut text = String::new();
        TextEncoder::new().encode_utf8(&families, &mut text)?;
        Ok(text)
    }

    /// [`TextEncoder`]'s own content type (for the test that it matches [`CONTENT_TYPE`]).
    pub fn encoder_format() -> String {
        TextEncoder::new().format_type().to_string()
    }
}

/// The tables of [`Purged`], in the order of its fields.
const PURGED_TABLES: [&str; 5] =
    ["magic_links", "sessions", "oauth_authorization_codes", "oauth_tokens", "oauth_grants"];

/// Moves a counter that mirrors a count kept elsewhere up to that count (it never goes down).
fn catch_up(counter: &IntCounter, total: u64) {
    let delta = total.saturating_sub(counter.get());
    if delta > 0 {
        counter.inc_by(delta);
    }
}

/// The methods HTTP defines; anything else is one value, `other`.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    match status {
        200 => "200".into(),
        201 => "201".into(),
        204 => "204".into(),
        302 => "302".into(),
        303 => "303".into(),
        400 => "400".into(),
        401 => "401".into(),
        404 => "404".into(),
        429 => "429".into(),
        other => other.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new().expect("metrics")
    }

    /// The value of the sample line `series` (name and labels exactly as exposed).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn events_move_their_series_and_fixed_labels_start_at_zero() {
        let m = metrics();
        let text = m.render(&Sample::default()).expect("render");
        assert_eq!(value(&text, r#"truxe_tokens_issued_total{grant_type="client_credentials"}"#), Some(0.0));
        assert_eq!(value(&text, r#"truxe_authentication_failures_total{kind="client"}"#), Some(0.0));
        assert!(text.contains(&format!(r#"truxe_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION"))));
        assert!(!text.contains("truxe_redis_errors_total"), "no Redis, no series:\n{text}");

        m.token_issued(GrantType::ClientCredentials);
        m.token_issued(GrantType::ClientCredentials);
        m.authentication_failed(AuthFailure::Client);
        m.rate_limited("/oauth-provider/token");
        m.request("/oauth-provider/token", "POST", 200, Duration::from_millis(3));
        m.request("/oauth-provider/token", "BREW", 418, Duration::from_millis(30));
        m.purged(&Purged { magic_links: 2, sessions: 0, authorization_codes: 5, access_tokens: 0, grants: 0 });
        let text = m.render(&Sample::default()).expect("render");
        assert_eq!(value(&text, r#"truxe_tokens_issued_total{grant_type="client_credentials"}"#), Some(2.0));
        assert_eq!(value(&text, r#"truxe_authentication_failures_total{kind="client"}"#), Some(1.0));
        assert_eq!(value(&text, r#"truxe_rate_limited_total{route="/oauth-provider/token"}"#), Some(1.0));
        assert_eq!(
            value(&text, r#"truxe_http_requests_total{method="POST",route="/oauth-provider/token",status="200"}"#),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"truxe_http_requests_total{method="other",route="/oauth-provider/token",status="418"}"#),
            Some(1.0)
        );
        let bucket = r#"truxe_http_request_duration_seconds_bucket{method="POST",route="/oauth-provider/token",status="200",le="0.005"}"#;
        assert_eq!(value(&text, bucket), Some(1.0));
        assert!(text.contains("# TYPE truxe_http_request_duration_seconds histogram"), "{text}");
        assert_eq!(value(&text, r#"truxe_purged_rows_total{table="oauth_authorization_codes"}"#), Some(5.0));
        assert_eq!(value(&text, r#"truxe_purged_rows_total{table="magic_links"}"#), Some(2.0));
    }

    #[test]
    fn scraped_values_are_set_and_mirrored_counters_only_rise() {
        let m = metrics();
        let sample = Sample {
            pool_connections: 5,
            pool_idle: 2,
            pool_max: 10,
            pool_waiting: 1,
            redis_errors: Some(7),
            rate_limit_fallbacks: 3,
            signing_keys: vec![("k1".into(), Duration::from_secs(86_400))],
        };
        let text = m.render(&sample).expect("render");
        assert_eq!(value(&text, r#"truxe_db_pool_connections{state="in_use"}"#), Some(3.0));
        assert_eq!(value(&text, r#"truxe_db_pool_connections{state="idle"}"#), Some(2.0));
        assert_eq!(value(&text, "truxe_db_pool_max_connections"), Some(10.0));
        assert_eq!(value(&text, "truxe_db_pool_waiting"), Some(1.0));
        assert_eq!(value(&text, "truxe_redis_errors_total"), Some(7.0));
        assert_eq!(value(&text, "truxe_rate_limit_fallbacks_total"), Some(3.0));
        assert_eq!(value(&text, r#"truxe_signing_key_age_seconds{kid="k1"}"#), Some(86_400.0));
        let later = Sample { redis_errors: Some(9), signing_keys: vec![("k2".into(), Duration::ZERO)], ..sample };
        let text = m.render(&later).expect("render");
        assert_eq!(value(&text, "truxe_redis_errors_total"), Some(9.0));
        assert_eq!(value(&text, r#"truxe_signing_key_age_seconds{kid="k1"}"#), None, "a key no longer used goes");
        assert!(text.contains("# TYPE truxe_redis_errors_total counter"), "{text}");
    }

    #[test]
    fn the_content_type_is_the_encoders() {
        assert!(CONTENT_TYPE.starts_with(&Metrics::encoder_format()));
    }
}
