//! `GET /metrics` and the middleware that counts every request (`crate::metrics` holds the
//! registry). `/metrics` is on `PORT`, or, with `METRICS_PORT`, only on a listener of its own.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, web};

use super::AppState;
use crate::metrics::{CONTENT_TYPE, Metrics, Sample, UNMATCHED_ROUTE};
use crate::store;

pub const PATH: &str = "/metrics";

/// The `/metrics` route, for the application on `PORT` or the one on `METRICS_PORT`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(PATH).get(metrics));
}

/// The route pattern of `req` (`/oauth-provider/clients/{client_id}`), never its path.
pub fn route_of(req: &HttpRequest) -> String {
    req.extensions().get::<RoutePattern>().map_or_else(|| RoutePattern::of(req).0, |route| route.0.clone())
}

/// The route pattern of a request, found once (by the request-id middleware, before routing)
/// and kept in the request's extensions.
#[derive(Clone, Debug)]
pub struct RoutePattern(pub String);

impl RoutePattern {
    pub fn of(req: &HttpRequest) -> RoutePattern {
        RoutePattern(req.match_pattern().unwrap_or_else(|| UNMATCHED_ROUTE.to_string()))
    }
}

/// Counts the request and its latency under its route pattern, and marks the request's span as
/// failed on a 5xx. Runs inside the request-id middleware, so that the span is the request's.
/// The registry is the application's `web::Data<Metrics>` (the same as `AppState::metrics`).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let Some(metrics) = req.app_data::<web::Data<Metrics>>().cloned() else {
        return next.call(req).await;
    };
    let route = route_of(req.request());
    let method = req.method().clone();
    let result = next.call(req).await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    metrics.request(&route, method.as_str(), status.as_u16(), started.elapsed());
    if status.is_server_error() {
        tracing::Span::current().record("otel.status_code", "error");
    }
    result
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let sample = sample(&state).await;
    match state.metrics.render(&sample) {
        Ok(text) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, CONTENT_TYPE))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(text),
        Err(error) => {
            tracing::error!(%error, "cannot render the metrics");
            super::error::json_error(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the metrics cannot be rendered",
            )
        }
    }
}

/// The values other parts keep, read now; the signing key's age comes from the key ring in
/// memory (no database query per scrape).
async fn sample(state: &AppState) -> Sample {
    let pool = state.pool.state();
    let now = store::unix_now();
    let signing_keys = state
        .keys
        .snapshot()
        .signer(now)
        .map(|(entry, _)| {
            let age = u64::try_from(now.saturating_sub(entry.created_at)).unwrap_or(0);
            vec![(entry.kid.clone(), Duration::from_secs(age))]
        })
        .unwrap_or_default();
    Sample {
        pool_connections: pool.connections,
        pool_idle: pool.idle_connections,
        pool_max: state.pool.max_size(),
        pool_waiting: store::waiting_for_connection(),
        redis_errors: state.shared.as_ref().map(|shared| shared.errors()),
        rate_limit_fallbacks: state.limiter.fallbacks(),
        signing_keys,
    }
}
