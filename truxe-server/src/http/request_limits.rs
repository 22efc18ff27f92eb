//! Size limits on the request head, checked before anything else reads it: the request target
//! (path and query) and the headers together. actix's parser stops at 128 KiB of head on its own;
//! these limits are far below it and are answered in the form of the route (OAuth JSON or a
//! page). Bodies are limited per endpoint where they are read (`http::body`).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};
use serde_json::json;

use crate::ratelimit::RouteKind;

/// Path and query, for every route. The authorization endpoint refuses a query over 16 KiB
/// itself, with its own page; this bound is for everything else.
pub const MAX_REQUEST_TARGET: usize = 32 * 1024;
/// Every header name and value together (nginx's default is four 8 KiB buffers).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The refusal `head` earns, if any.
pub fn check(target_len: usize, headers: &HeaderMap) -> Option<(StatusCode, String)> {
    if target_len > MAX_REQUEST_TARGET {
        return Some((StatusCode::URI_TOO_LONG, format!("the request URI is longer than {MAX_REQUEST_TARGET} bytes")));
    }
    let header_bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers are larger than {MAX_HEADER_BYTES} bytes"),
        ));
    }
    None
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    let Some((status, description)) = check(target_len, req.headers()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    tracing::warn!(path = %truncated(req.path()), %status, "refused an oversized request head");
    let kind = crate::ratelimit::classify(req.method().as_str(), req.path()).map_or(RouteKind::Json, |r| r.kind);
    let response = match kind {
        RouteKind::Page => super::pages::error_page(
            status,
            "Request too large",
            "The address or the headers your browser sent are too long.",
        ),
        RouteKind::OAuth | RouteKind::Json => {
            HttpResponse::build(status).json(json!({ "error": "invalid_request", "error_description": description }))
        }
    };
    Ok(req.into_response(response).map_into_right_body())
}

/// The start of a path, for a log line that must stay short.
fn truncated(path: &str) -> &str {
    let mut end = path.len().min(200);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    #[test]
    fn the_target_and_the_headers_are_bounded() {
        let mut headers = HeaderMap::new();
        assert_eq!(check(MAX_REQUEST_TARGET, &headers), None);
        assert_eq!(check(MAX_REQUEST_TARGET + 1, &headers).map(|r| r.0), Some(StatusCode::URI_TOO_LONG));
        headers
            .insert(HeaderName::from_static("x-a"), HeaderValue::from_str(&"a".repeat(MAX_HEADER_BYTES - 3)).unwrap());
        assert_eq!(check(10, &headers), None);
        headers.insert(HeaderName::from_static("x-b"), HeaderValue::from_static("b"));
        assert_eq!(check(10, &headers).map(|r| r.0), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }

    #[test]
    fn log_paths_are_cut_on_a_character_boundary() {
        let path = format!("/{}", "é".repeat(150));
        assert!(truncated(&path).len() <= 200);
        assert_eq!(truncated("/short"), "/short");
    }
}
