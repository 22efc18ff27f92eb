//! CSRF protection for every page form: a token bound to the browser and to its session.
//!
//! The browser holds a random value in an `HttpOnly`, `SameSite=Strict` cookie ([`COOKIE`]),
//! set before sign-in so that the sign-in form is protected too (login CSRF). Each form carries
//! a token in a hidden field ([`FIELD`]):
//! - `C` = HMAC-SHA256(session key, "truxe csrf v1" ‖ value) when the browser has no session;
//! - `C.S` once it has one (signed in, or past the magic link and owing the second factor), with
//!   `S` = HMAC-SHA256(session key, "truxe csrf session v1" ‖ session id).
//!
//! A form posted with a session cookie needs both parts, `S` for that very session: a token
//! taken from another browser or session, or a cookie and token pair planted next to the
//! session from a sibling subdomain, is refused. A form posted without a session cookie (the
//! session ended in another tab) needs `C` only, as before sign-in; its handler then sends the
//! person to sign in again. A cross-site page can neither read the cookies nor compute the MACs.
//! With `SESSION_SECURE=true` the cookie is `__Host-truxe_csrf` (`Secure`, `Path=/`, no
//! `Domain`), which a sibling subdomain cannot set at all; only that name is read then.

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::AppState;
use super::session;
use crate::oauth::client_secret::hmac_sha256;

/// The hidden form field that carries the token.
pub const FIELD: &str = "csrf_token";
/// The cookie that carries the random value, without `SESSION_SECURE`.
pub const COOKIE: &str = "truxe_csrf";
/// The cookie's name with `SESSION_SECURE=true`.
pub const SECURE_COOKIE: &str = "__Host-truxe_csrf";

/// 256 random bits, base64url without padding.
const VALUE_LEN: usize = 43;
/// Keep these MACs apart from each other and from the session cookie's, which use the same key.
const COOKIE_DOMAIN: &[u8] = b"truxe csrf v1\0";
const SESSION_DOMAIN: &[u8] = b"truxe csrf session v1\0";

/// The CSRF cookie's name under this configuration.
pub fn cookie_name(state: &AppState) -> &'static str {
    if state.config.session.secure { SECURE_COOKIE } else { COOKIE }
}

/// The token for a hidden field, and the cookie to set on the response when the browser does not
/// have one yet (or sent one that is not ours). Pages that render a form must set that cookie.
pub fn issue(req: &HttpRequest, state: &AppState) -> (String, Option<Cookie<'static>>) {
    let (value, cookie) = match cookie_value(req, state) {
        Some(value) => (value, None),
        None => {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            let value = URL_SAFE_NO_PAD.encode(bytes);
            // No Domain, Path=/ and (with SESSION_SECURE) Secure: what the `__Host-` name requires.
            let cookie = Cookie::build(cookie_name(state), value.clone())
                .http_only(true)
                .secure(state.config.session.secure)
                .same_site(SameSite::Strict)
                .path("/")
                .finish();
            (value, Some(cookie))
        }
    };
    let mut token = mac(state, COOKIE_DOMAIN, &value);
    if let Some(id) = session::cookie_session_id(req, state) {
        token.push('.');
        token.push_str(&mac(state, SESSION_DOMAIN, &id));
    }
    (token, cookie)
}

/// Whether `presented` (the form's [`FIELD`]) is a token of this browser (and of its session,
/// when it has one); constant-time comparisons.
pub fn verify(req: &HttpRequest, state: &AppState, presented: Option<&str>) -> bool {
    let (Some(value), Some(presented)) = (cookie_value(req, state), presented) else {
        return false;
    };
    let (cookie_part, session_part) = match presented.split_once('.') {
        Some((cookie_part, session_part)) => (cookie_part, Some(session_part)),
        None => (presented, None),
    };
    if !equal(&mac(state, COOKIE_DOMAIN, &value), cookie_part) {
        return false;
    }
    match session::cookie_session_id(req, state) {
        Some(id) => session_part.is_some_and(|part| equal(&mac(state, SESSION_DOMAIN, &id), part)),
        // No session (any more): judged like a form before sign-in.
        None => true,
    }
}

fn equal(expected: &str, presented: &str) -> bool {
    !expected.is_empty()
        && expected.len() == presented.len()
        && openssl::memcmp::eq(expected.as_bytes(), presented.as_bytes())
}

fn cookie_value(req: &HttpRequest, state: &AppState) -> Option<String> {
    let cookie = req.cookie(cookie_name(state))?;
    let value = cookie.value();
    let well_formed =
        value.len() == VALUE_LEN && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| value.to_string())
}

fn mac(state: &AppState, domain: &[u8], value: &str) -> String {
    let mut message = Vec::with_capacity(domain.len() + value.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(value.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac_sha256(state.session_key.secret(), &message))
}
