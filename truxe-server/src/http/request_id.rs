//! Gives every request an id (kept from a well-formed `X-Request-Id`, else new), puts it on the
//! tracing span of everything the request logs, and returns it in the response.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

/// The target of the per-request log line ("request", "request failed"): error reporting
/// (`telemetry`) keeps it out of Sentry, where the failure's own error event already is.
pub const ACCESS_LOG_TARGET: &str = module_path!();

#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// An incoming id is reused only when it cannot smuggle anything into logs.
fn acceptable(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    // The route pattern names the span for OpenTelemetry (`telemetry`), which takes the name
    // when the span starts; `http::metrics` counts under the same pattern and marks 5xx.
    let route = super::metrics::RoutePattern::of(req.request());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
        http.route = %route.0,
        otel.name = %format_args!("{} {}", req.method(), route.0),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
    );
    req.extensions_mut().insert(route);
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let _entered = span.enter();
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            if status >= 500 {
                tracing::error!(status, elapsed_ms, "request failed");
            } else {
                tracing::info!(status, elapsed_ms, "request");
            }
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(HeaderName::from_static(HEADER), value);
            }
            Ok(response)
        }
        Err(error) => {
            tracing::error!(%error, elapsed_ms, "request error");
            Err(error)
        }
    }
}
