//! The one bounded body reader: every endpoint that takes a body reads it here, with its own
//! limit and content type, and maps [`BodyError`] to its own kind of answer (OAuth JSON, an
//! error page, the admin API's JSON).

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web::{Bytes, Data, Payload};

/// OAuth requests (token, introspection, revocation, userinfo) are a few hundred bytes.
pub const OAUTH_LIMIT: usize = 16 * 1024;
/// Page forms: a handful of short fields.
pub const FORM_LIMIT: usize = 16 * 1024;
/// Admin API JSON: a client registration with many redirect URIs.
pub const ADMIN_LIMIT: usize = 64 * 1024;

pub const FORM: &str = "application/x-www-form-urlencoded";
pub const JSON: &str = "application/json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The `Content-Type` is not the one expected (its value, for the message).
    UnsupportedType(String),
    /// Declared or found larger than the limit.
    TooLarge { limit: usize },
    /// The connection failed while the body was being read.
    Unreadable,
    /// The body did not arrive within `TRUXE_CLIENT_TIMEOUT` (a client trickling it in).
    TimedOut { after: Duration },
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::UnsupportedType(found) => write!(f, "unsupported Content-Type {found:?}"),
            BodyError::TooLarge { limit } => write!(f, "the request body is larger than {limit} bytes"),
            BodyError::Unreadable => f.write_str("the request body could not be read"),
            BodyError::TimedOut { after } => {
                write!(f, "the request body did not arrive within {}", crate::config::format_duration(*after))
            }
        }
    }
}

/// Whether the request's `Content-Type` essence is `expected` (parameters such as `charset` are
/// allowed; the comparison ignores case).
pub fn has_content_type(req: &HttpRequest, expected: &str) -> bool {
    content_type(req).split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(expected)
}

fn content_type(req: &HttpRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// Reads the body when its type is `expected`, refusing it unread when `Content-Length` already
/// says it is over `limit`, and stopping at `limit` bytes otherwise.
pub async fn read(req: &HttpRequest, payload: Payload, expected: &str, limit: usize) -> Result<Bytes, BodyError> {
    if !has_content_type(req, expected) {
        return Err(BodyError::UnsupportedType(content_type(req)));
    }
    read_any(req, payload, limit).await
}

/// [`read`] without a content-type check.
pub async fn read_any(req: &HttpRequest, payload: Payload, limit: usize) -> Result<Bytes, BodyError> {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let deadline = deadline(req);
    match tokio::time::timeout(deadline, payload.to_bytes_limited(limit)).await {
        Err(_) => {
            tracing::info!(path = req.path(), "a request body did not arrive in time; answered without it");
            Err(BodyError::TimedOut { after: deadline })
        }
        Ok(Ok(Ok(body))) => Ok(body),
        Ok(Ok(Err(_))) => Err(BodyError::Unreadable),
        Ok(Err(_)) => Err(BodyError::TooLarge { limit }),
    }
}

/// `TRUXE_CLIENT_TIMEOUT` of the serving application (its default outside one).
fn deadline(req: &HttpRequest) -> Duration {
    req.app_data::<Data<super::AppState>>().map_or(Duration::from_secs(10), |state| state.config.http.client_timeout)
}
