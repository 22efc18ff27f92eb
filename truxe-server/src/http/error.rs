//! The one place where errors become HTTP responses.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::json;

use crate::oauth::{ErrorCode, OAuthError};
use crate::store::StoreError;

/// RFC 6749 §5.2: JSON body, `Cache-Control: no-store`; `invalid_client` is a 401 with a
/// `WWW-Authenticate` challenge when the client tried HTTP Basic.
pub fn oauth_error_response(error: &OAuthError, basic_auth_used: bool) -> HttpResponse {
    let status = match error.code {
        ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = HttpResponse::build(status);
    response.insert_header(("Cache-Control", "no-store")).insert_header(("Pragma", "no-cache"));
    if error.code == ErrorCode::InvalidClient && basic_auth_used {
        response.insert_header(("WWW-Authenticate", "Basic realm=\"truxe\", charset=\"UTF-8\""));
    }
    response.json(json!({ "error": error.code.as_str(), "error_description": error.description }))
}

/// A storage failure seen by a protocol client: logged in full here, reported without detail.
pub fn storage_failure(error: &StoreError) -> OAuthError {
    tracing::error!(%error, "storage failure");
    match error {
        StoreError::Pool(_) | StoreError::Unreachable { .. } => {
            OAuthError::temporarily_unavailable("the server cannot reach its database; retry later")
        }
        e if e.is_busy() => OAuthError::temporarily_unavailable("the database is busy; retry later"),
        _ => OAuthError::server_error("internal error"),
    }
}

/// JSON error for non-OAuth APIs (admin API, health): `{"error": code, "error_description": …}`.
pub fn json_error(status: StatusCode, code: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({ "error": code, "error_description": description }))
}
