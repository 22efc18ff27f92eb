//! CSRF protection for every page form: a signed double-submit token.
//!
//! The browser holds a random value in an `HttpOnly`, `SameSite=Strict` cookie ([`COOKIE`]);
//! each form carries HMAC-SHA256(session key, value) in a hidden field ([`FIELD`]). A cross-site
//! page can neither read the cookie nor compute the MAC, and the cookie exists before sign-in, so
//! the sign-in form is protected too (login CSRF).

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::AppState;
use crate::oauth::client_secret::hmac_sha256;

/// The hidden form field that carries the token.
pub const FIELD: &str = "csrf_token";
/// The cookie that carries the random value.
pub const COOKIE: &str = "truxe_csrf";

/// 256 random bits, base64url without padding.
const VALUE_LEN: usize = 43;
/// Keeps these MACs apart from the session cookie's, which use the same key.
const DOMAIN: &[u8] = b"truxe csrf v1\0";

/// The token for a hidden field, and the cookie to set on the response when the browser does not
/// have one yet (or sent one that is not ours). Pages that render a form must set that cookie.
pub fn issue(req: &HttpRequest, state: &AppState) -> (String, Option<Cookie<'static>>) {
    if let Some(value) = cookie_value(req) {
        return (token_for(state, &value), None);
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let value = URL_SAFE_NO_PAD.encode(bytes);
    let token = token_for(state, &value);
    let cookie = Cookie::build(COOKIE, value)
        .http_only(true)
        .secure(state.config.session.secure)
        .same_site(SameSite::Strict)
        .path("/")
        .finish();
    (token, Some(cookie))
}

/// Whether `presented` (the form's [`FIELD`]) matches the browser's cookie; constant time.
pub fn verify(req: &HttpRequest, state: &AppState, presented: Option<&str>) -> bool {
    let (Some(value), Some(presented)) = (cookie_value(req), presented) else {
        return false;
    };
    let expected = token_for(state, &value);
    !expected.is_empty()
        && expected.len() == presented.len()
        && openssl::memcmp::eq(expected.as_bytes(), presented.as_bytes())
}

fn cookie_value(req: &HttpRequest) -> Option<String> {
    let cookie = req.cookie(COOKIE)?;
    let value = cookie.value();
    let well_formed =
        value.len() == VALUE_LEN && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| value.to_string())
}

fn token_for(state: &AppState, value: &str) -> String {
    let mut message = Vec::with_capacity(DOMAIN.len() + value.len());
    message.extend_from_slice(DOMAIN);
    message.extend_from_slice(value.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac_sha256(state.session_key.secret(), &message))
}
