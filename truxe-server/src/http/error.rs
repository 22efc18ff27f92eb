//! The one place where errors become HTTP responses: OAuth errors (RFC 6749 §5.2) and storage
//! failures, classified once by [`StoreError::failure`] for every kind of caller.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header;
use serde_json::json;

use crate::oauth::{ErrorCode, OAuthError};
use crate::store::{Failure, StoreError};

/// How long a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: &str = "5";

/// The challenge of a 401 from the token endpoint family (RFC 6749 §5.2, RFC 9110 §11.6.1):
/// every `invalid_client` answer carries it, whichever way the client tried to authenticate.
pub const CLIENT_CHALLENGE: &str = "Basic realm=\"truxe\", charset=\"UTF-8\"";

/// RFC 6749 §5.2: JSON body, `Cache-Control: no-store`; `invalid_client` is a 401 with a
/// `WWW-Authenticate` challenge; `temporarily_unavailable` a 503 with `Retry-After`.
pub fn oauth_error_response(error: &OAuthError) -> HttpResponse {
    let status = match error.code {
        ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CACHE_CONTROL, "no-store")).insert_header((header::PRAGMA, "no-cache"));
    match error.code {
        ErrorCode::InvalidClient => {
            response.insert_header((header::WWW_AUTHENTICATE, CLIENT_CHALLENGE));
        }
        ErrorCode::TemporarilyUnavailable => {
            response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
        }
        _ => {}
    }
    response.json(json!({ "error": error.code.as_str(), "error_description": error.description }))
}

/// A storage failure seen by a protocol client: logged in full here, reported without detail.
pub fn storage_failure(error: &StoreError) -> OAuthError {
    match error.failure() {
        Failure::Unavailable => {
            tracing::warn!(%error, "storage unavailable");
            OAuthError::temporarily_unavailable("the server cannot reach its database; retry later")
        }
        Failure::Busy => {
            tracing::warn!(%error, "storage busy");
            OAuthError::temporarily_unavailable("the database is busy; retry later")
        }
        Failure::Internal => {
            tracing::error!(%error, "storage failure");
            OAuthError::server_error("internal error")
        }
    }
}

/// [`storage_failure`] for the JSON APIs that are not OAuth endpoints (admin API).
pub fn storage_failure_json(error: &StoreError) -> HttpResponse {
    oauth_error_response(&storage_failure(error))
}

/// JSON error for non-OAuth APIs (admin API, health): `{"error": code, "error_description": …}`.
pub fn json_error(status: StatusCode, code: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "error": code, "error_description": description }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(response: &HttpResponse, name: header::HeaderName) -> Option<&str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn every_invalid_client_carries_a_challenge() {
        let response = oauth_error_response(&OAuthError::invalid_client("client authentication failed"));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header_of(&response, header::WWW_AUTHENTICATE), Some(CLIENT_CHALLENGE));
        assert_eq!(header_of(&response, header::CACHE_CONTROL), Some("no-store"));
        let response = oauth_error_response(&OAuthError::invalid_grant("x"));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(header_of(&response, header::WWW_AUTHENTICATE), None);
    }

    #[test]
    fn storage_failures_are_classified_once() {
        let busy = StoreError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::Unknown,
            Box::new("database is locked".to_string()),
        ));
        assert_eq!(storage_failure(&busy).code, ErrorCode::TemporarilyUnavailable);
        let full = StoreError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::Unknown,
            Box::new("database or disk is full".to_string()),
        ));
        assert_eq!(storage_failure(&full).code, ErrorCode::TemporarilyUnavailable);
        assert_eq!(storage_failure(&StoreError::Cancelled).code, ErrorCode::TemporarilyUnavailable);
        assert_eq!(storage_failure(&StoreError::Corrupt("x".into())).code, ErrorCode::ServerError);
        let response = storage_failure_json(&busy);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header_of(&response, header::RETRY_AFTER), Some(RETRY_AFTER_SECS));
    }
}
