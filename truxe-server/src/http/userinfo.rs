//! `GET/POST /oauth-provider/userinfo` (OIDC Core §5.3): the bearer token from the
//! `Authorization` header, or for POST from the form body (RFC 6750 §2.1, §2.2); errors as
//! RFC 6750 §3 `WWW-Authenticate` challenges.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::body;
use super::error::oauth_error_response;
use super::token::{Call, no_store_json};
use crate::oauth::form::Form;
use crate::service::token::userinfo::{self as service, UserInfoError};

/// Why a request is refused, in RFC 6750 §3.1 terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// No token at all: a bare challenge, no error code (§3.1).
    NoToken,
    InvalidRequest(&'static str),
    InvalidToken(&'static str),
    InsufficientScope,
}

fn challenge(refusal: &Refusal) -> HttpResponse {
    let (status, value) = match refusal {
        Refusal::NoToken => (StatusCode::UNAUTHORIZED, r#"Bearer realm="truxe""#.to_string()),
        Refusal::InvalidRequest(description) => (
            StatusCode::BAD_REQUEST,
            format!(r#"Bearer realm="truxe", error="invalid_request", error_description="{description}""#),
        ),
        Refusal::InvalidToken(description) => (
            StatusCode::UNAUTHORIZED,
            format!(r#"Bearer realm="truxe", error="invalid_token", error_description="{description}""#),
        ),
        Refusal::InsufficientScope => (
            StatusCode::FORBIDDEN,
            r#"Bearer realm="truxe", error="insufficient_scope", error_description="the openid scope is required", scope="openid""#
                .to_string(),
        ),
    };
    HttpResponse::build(status)
        .insert_header((header::WWW_AUTHENTICATE, value))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .finish()
}

/// The token of an `Authorization: Bearer` header: `Some(Err)` when the header is there but is
/// not a usable bearer credential.
fn header_token(req: &HttpRequest) -> Option<Result<String, Refusal>> {
    let value = req.headers().get(header::AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err(Refusal::InvalidRequest("the Authorization header is not readable")));
    };
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        // RFC 6750 §3.1: a request without Bearer credentials gets the bare challenge.
        _ => return Some(Err(Refusal::NoToken)),
    };
    if token.is_empty() {
        return Some(Err(Refusal::InvalidRequest("the bearer token is empty")));
    }
    Some(Ok(token.to_string()))
}

fn query_has_token(req: &HttpRequest) -> bool {
    url::form_urlencoded::parse(req.query_string().as_bytes()).any(|(name, _)| name == "access_token")
}

pub async fn userinfo_get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if query_has_token(&req) {
        return challenge(&Refusal::InvalidRequest("send the access token in the Authorization header, not the URL"));
    }
    match header_token(&req) {
        None => challenge(&Refusal::NoToken),
        Some(Err(refusal)) => challenge(&refusal),
        Some(Ok(token)) => answer(&req, &state, token).await,
    }
}

pub async fn userinfo_post(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    if query_has_token(&req) {
        return challenge(&Refusal::InvalidRequest("send the access token in the Authorization header, not the URL"));
    }
    let from_header = header_token(&req);
    let from_body = if body::has_content_type(&req, body::FORM) {
        let body = match body::read_any(&req, payload, body::OAUTH_LIMIT).await {
            Ok(body) => body,
            Err(_) => return challenge(&Refusal::InvalidRequest("the request body could not be read")),
        };
        match Form::parse(&body) {
            Ok(form) => form.get("access_token").map(str::to_string),
            Err(_) => return challenge(&Refusal::InvalidRequest("the form body is malformed or repeats a parameter")),
        }
    } else {
        None
    };
    let token = match (from_header, from_body) {
        (Some(_), Some(_)) => {
            return challenge(&Refusal::InvalidRequest("send the access token one way only (RFC 6750 section 2)"));
        }
        (Some(Err(refusal)), None) => return challenge(&refusal),
        (Some(Ok(token)), None) | (None, Some(token)) => token,
        (None, None) => return challenge(&Refusal::NoToken),
    };
    answer(&req, &state, token).await
}

async fn answer(req: &HttpRequest, state: &AppState, token: String) -> HttpResponse {
    let call = match Call::new(req, state) {
        Ok(call) => call,
        Err(error) => return oauth_error_response(&error),
    };
    let result = call
        .run(state, move |conn, ctx| match service::userinfo(conn, ctx, &token) {
            Err(UserInfoError::Store(error)) => Err(error.into()),
            other => Ok(other),
        })
        .await;
    match result {
        Ok(Ok(claims)) => no_store_json(&claims),
        Ok(Err(UserInfoError::InvalidToken(description))) => challenge(&Refusal::InvalidToken(description)),
        Ok(Err(UserInfoError::InsufficientScope)) => challenge(&Refusal::InsufficientScope),
        // Storage failures come back as the OAuth error `Call` classified them into.
        Ok(Err(UserInfoError::Store(error))) => oauth_error_response(&crate::http::error::storage_failure(&error)),
        Err(error) => oauth_error_response(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc_6750() {
        let bare = challenge(&Refusal::NoToken);
        assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            bare.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()),
            Some(r#"Bearer realm="truxe""#)
        );
        let invalid = challenge(&Refusal::InvalidToken("expired"));
        assert_eq!(invalid.status(), StatusCode::UNAUTHORIZED);
        let value = invalid.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(value.contains(r#"error="invalid_token""#) && value.contains(r#"error_description="expired""#));
        assert_eq!(challenge(&Refusal::InsufficientScope).status(), StatusCode::FORBIDDEN);
        assert_eq!(challenge(&Refusal::InvalidRequest("x")).status(), StatusCode::BAD_REQUEST);
    }
}
