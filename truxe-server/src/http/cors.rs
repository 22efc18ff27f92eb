//! CORS (`ALLOWED_ORIGINS`) for the endpoints a browser application calls itself: the token
//! endpoint, revocation, userinfo, discovery and the JWKS. Introspection and the admin API are
//! for servers and never answer a browser's preflight.
//!
//! The policy: an origin is allowed when it is one of `ALLOWED_ORIGINS` exactly (`*` exists only
//! in development); `Access-Control-Allow-Origin` names it, never with
//! `Access-Control-Allow-Credentials`, since none of these endpoints reads a cookie (tokens and
//! client credentials travel in the body or in `Authorization`, which a script sets itself).
//! A disallowed origin, method or request header gets no CORS header at all and the request goes
//! on unchanged (a refused preflight meets the route and gets its `405`); every response of these
//! paths carries `Vary: Origin`, so that a cache never hands one origin's answer to another.
//!
//! Not `actix-cors`: it adds `Access-Control-Expose-Headers` to the answers of disallowed origins
//! too, and a per-resource wrap would sit inside the rate limit, so that a `429` could not be read
//! by the application that caused it. This middleware wraps the rate limit instead.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, web};

use super::AppState;

/// Request headers a script may set, besides the CORS-safelisted ones (RFC: Fetch §2.2.2).
const ALLOWED_HEADERS: [&str; 2] = ["authorization", "content-type"];
const ALLOW_HEADERS_VALUE: &str = "Authorization, Content-Type";
/// Response headers a script may read: the challenge of a 401, the request id to quote in a
/// support request, and the rate-limit fields of a 429.
const EXPOSE_HEADERS: &str = "WWW-Authenticate, Retry-After, RateLimit, RateLimit-Policy, X-Request-Id";
/// How long a browser may reuse a preflight's answer (seconds).
const MAX_AGE: &str = "600";

/// The methods a browser may use on `path`, when `path` is one of the CORS endpoints.
pub fn methods(path: &str) -> Option<&'static [Method]> {
    const GET: &[Method] = &[Method::GET];
    const POST: &[Method] = &[Method::POST];
    const GET_POST: &[Method] = &[Method::GET, Method::POST];
    match path {
        "/oauth-provider/token" | "/oauth-provider/revoke" => Some(POST),
        "/oauth-provider/userinfo" => Some(GET_POST),
        "/.well-known/openid-configuration" | "/.well-known/oauth-authorization-server" | "/oauth-provider/jwks" => {
            Some(GET)
        }
        _ => None,
    }
}

/// The `Access-Control-Allow-Origin` value for a request's `Origin`, when it is allowed.
pub fn allow_origin(allowed: &[String], origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    let origin = origin?.to_str().ok()?;
    if allowed.iter().any(|a| a == origin) {
        HeaderValue::from_str(origin).ok()
    } else if allowed.iter().any(|a| a == "*") {
        Some(HeaderValue::from_static("*"))
    } else {
        None
    }
}

/// Whether a preflight asks only for what `methods` and [`ALLOWED_HEADERS`] allow.
pub fn preflight_allowed(methods: &[Method], headers: &HeaderMap) -> bool {
    let method = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).and_then(|v| Method::from_bytes(v.as_bytes()).ok());
    let Some(method) = method else {
        return false;
    };
    let requested = headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS).filter_map(|v| v.to_str().ok());
    methods.contains(&method)
        && requested
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .all(|h| ALLOWED_HEADERS.iter().any(|allowed| allowed.eq_ignore_ascii_case(h)))
}

/// Adds `names` to the response's `Vary`, keeping what a handler put there.
fn vary(headers: &mut HeaderMap, names: &str) {
    let value = match headers.get(header::VARY).and_then(|v| v.to_str().ok()) {
        Some(earlier) if !earlier.is_empty() => format!("{earlier}, {names}"),
        _ => names.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::VARY, value);
    }
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let Some(methods) = methods(req.path()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let allowed = req.app_data::<web::Data<AppState>>().map(|state| state.config.allowed_origins.clone());
    let origin = allow_origin(allowed.as_deref().unwrap_or_default(), req.headers().get(header::ORIGIN));
    let is_preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);

    if is_preflight {
        if let Some(origin) = origin.filter(|_| preflight_allowed(methods, req.headers())) {
            let allow_methods = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            let mut response = HttpResponse::build(StatusCode::NO_CONTENT)
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, allow_methods))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS_VALUE))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE))
                .finish();
            vary(response.headers_mut(), "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
            return Ok(req.into_response(response).map_into_right_body());
        }
        let mut response = next.call(req).await?;
        vary(response.headers_mut(), "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
        return Ok(response.map_into_left_body());
    }

    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
    }
    vary(headers, "Origin");
    Ok(response.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins() -> Vec<String> {
        vec!["https://app.example.com".into(), "http://localhost:5173".into()]
    }

    fn preflight(method: &str, headers: Option<&str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_str(method).unwrap());
        if let Some(headers) = headers {
            map.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, HeaderValue::from_str(headers).unwrap());
        }
        map
    }

    #[test]
    fn only_exact_origins_are_allowed() {
        let allowed = origins();
        let check = |o: &str| allow_origin(&allowed, Some(&HeaderValue::from_str(o).unwrap()));
        assert_eq!(check("https://app.example.com"), Some(HeaderValue::from_static("https://app.example.com")));
        assert_eq!(check("http://localhost:5173"), Some(HeaderValue::from_static("http://localhost:5173")));
        for other in [
            "https://app.example.com.evil.test",
            "https://evil-app.example.com",
            "http://app.example.com",
            "https://app.example.com:8443",
            "http://localhost:5174",
            "null",
            "",
        ] {
            assert_eq!(check(other), None, "{other}");
        }
        assert_eq!(allow_origin(&allowed, None), None);
    }

    #[test]
    fn a_wildcard_answers_star_and_only_in_that_form() {
        let allowed = vec!["*".to_string()];
        let value = allow_origin(&allowed, Some(&HeaderValue::from_static("https://any.example")));
        assert_eq!(value, Some(HeaderValue::from_static("*")));
    }

    #[test]
    fn preflights_ask_for_the_route_methods_and_the_two_headers() {
        let post = methods("/oauth-provider/token").unwrap();
        assert!(preflight_allowed(post, &preflight("POST", None)));
        assert!(preflight_allowed(post, &preflight("POST", Some("Authorization, content-type"))));
        assert!(!preflight_allowed(post, &preflight("DELETE", None)));
        assert!(!preflight_allowed(post, &preflight("GET", None)));
        assert!(!preflight_allowed(post, &preflight("POST", Some("authorization, x-custom"))));
        assert!(!preflight_allowed(post, &HeaderMap::new()));
        let userinfo = methods("/oauth-provider/userinfo").unwrap();
        assert!(preflight_allowed(userinfo, &preflight("GET", Some("authorization"))));
    }

    #[test]
    fn only_the_browser_endpoints_take_part() {
        for path in [
            "/oauth-provider/token",
            "/oauth-provider/revoke",
            "/oauth-provider/userinfo",
            "/oauth-provider/jwks",
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ] {
            assert!(methods(path).is_some(), "{path}");
        }
        for path in
            ["/oauth-provider/introspect", "/oauth-provider/clients", "/oauth-provider/authorize", "/login", "/health"]
        {
            assert!(methods(path).is_none(), "{path}");
        }
    }

    #[test]
    fn vary_keeps_what_was_there() {
        let mut headers = HeaderMap::new();
        vary(&mut headers, "Origin");
        assert_eq!(headers.get(header::VARY).unwrap(), "Origin");
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        vary(&mut headers, "Origin");
        assert_eq!(headers.get(header::VARY).unwrap(), "Accept-Encoding, Origin");
    }
}
