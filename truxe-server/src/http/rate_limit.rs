//! The rate-limit middleware: resolves the client IP (always, for logs and audit), then charges
//! the buckets the route meets (`ratelimit::Policies::for_route`) and answers `429` when one is
//! empty. Also the refusal every limited route shares, which the token endpoint's per-client
//! limit uses too.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, web};
use serde_json::json;

use super::AppState;
use super::client_ip::{self, ClientIp};
use crate::ratelimit::{Check, Decision, Limiter, RouteKind, headers};
use crate::store::audit::{AuditAction, AuditEvent};

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    // Without a socket address (not over TCP) there is nothing to trust; count it as one client.
    let peer = req.peer_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
    let ip = client_ip::resolve(peer, req.headers(), &state.config.trust_proxy);
    req.extensions_mut().insert(ClientIp(ip));

    let route = crate::ratelimit::classify(req.method().as_str(), req.path());
    let (Some(route), true) = (route, state.config.rate_limit.enabled) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let key = ip.to_string();
    let checks: Vec<Check> = state
        .limiter
        .policies()
        .for_route(route)
        .into_iter()
        .map(|policy| Check { policy, key: key.clone() })
        .collect();
    let decision = state.limiter.check(&checks).await;
    if !decision.allowed() {
        log_refusal(&state, &decision, req.request(), None).await;
        let response = refusal(&state.limiter, &decision, route.kind);
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    add_headers(response.headers_mut(), &state.limiter, &decision);
    Ok(response.map_into_left_body())
}

/// SPEC's warning line: the IP, the path and `rateLimitExceeded`; and the `rate_limit.exceeded`
/// audit entry, coalesced per IP, policies and client (a flood costs one entry a minute, with
/// the count of refusals it stands for); and `truxe_rate_limited_total{route}`. Every refusal, of the
/// middleware or of the token endpoint's per-client limit, is reported here, once.
pub async fn log_refusal(state: &AppState, decision: &Decision, req: &HttpRequest, client_id: Option<&str>) {
    let meta = super::request_meta::of(req);
    let path = req.path();
    state.metrics.rate_limited(&super::metrics::route_of(req));
    let policies = decision.refused_by(state.limiter.policies()).join(",");
    let ip = meta.ip.as_deref().unwrap_or("-");
    match client_id {
        Some(client_id) => tracing::warn!(%ip, path, client_id, policies, "rateLimitExceeded"),
        None => tracing::warn!(%ip, path, policies, "rateLimitExceeded"),
    }
    let mut event = AuditEvent::new(AuditAction::RateLimitExceeded, "anonymous")
        .from_request(&meta)
        .failed()
        .details(json!({ "path": path, "policies": policies, "retry_after": decision.retry_after_secs() }));
    if let Some(client_id) = client_id {
        event = AuditEvent { actor: format!("client:{client_id}"), ..event }.client(client_id);
    }
    let source = format!("rate_limit|{ip}|{policies}|{}", client_id.unwrap_or("-"));
    if let Err(error) = state.audit.record_coalesced_async(source, event, crate::store::unix_now()).await {
        tracing::error!(%error, "cannot record a rate-limit refusal");
    }
}

/// `429 Too Many Requests` in the form of the route: OAuth JSON (`temporarily_unavailable`, the
/// one OAuth error code that means "retry later"), an HTML page, or the admin API's JSON; with
/// `Retry-After` and the `RateLimit` fields.
pub fn refusal(limiter: &Limiter, decision: &Decision, kind: RouteKind) -> HttpResponse {
    let retry_after = decision.retry_after_secs();
    let description = format!("too many requests; retry in {retry_after} s");
    let mut response = match kind {
        RouteKind::Page => super::pages::error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            &format!("Too many requests came from your network. Please wait {retry_after} seconds and try again."),
        ),
        RouteKind::OAuth | RouteKind::Json => HttpResponse::build(StatusCode::TOO_MANY_REQUESTS)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(json!({ "error": "temporarily_unavailable", "error_description": description })),
    };
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    add_headers(headers, limiter, decision);
    response
}

/// `RateLimit-Policy` and `RateLimit` for the buckets of `decision`, after the members a
/// handler already put there (the token endpoint's per-client refusal).
pub fn add_headers(headers: &mut HeaderMap, limiter: &Limiter, decision: &Decision) {
    if decision.outcomes.is_empty() {
        return;
    }
    let fields = [
        (headers::RATELIMIT_POLICY, headers::policy_value(limiter.policies(), decision)),
        (headers::RATELIMIT, headers::limit_value(limiter.policies(), decision)),
    ];
    for (name, value) in fields {
        let name = HeaderName::from_static(name);
        let value = match headers.get(&name).and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {value}"),
            None => value,
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}
