//! CSRF protection for every page form: a token bound to the browser.
//!
//! Each form carries a token in a hidden field ([`FIELD`]):
//! - with a session cookie (signed in, or past the magic link and owing the second factor), the
//!   token is HMAC-SHA256(session key, "truxe csrf session v1" ‖ session id): bound to that
//!   browser session, so a token taken from another session (or planted with a cookie of its
//!   own from a sibling subdomain) is refused;
//! - before sign-in, it is HMAC-SHA256(session key, "truxe csrf v1" ‖ value) of a random value
//!   kept in an `HttpOnly`, `SameSite=Strict` cookie ([`COOKIE`]), which exists before sign-in,
//!   so the sign-in form is protected too (login CSRF).
//!
//! A cross-site page can neither read the cookies nor compute the MAC. With
//! `SESSION_SECURE=true` the cookie is `__Host-truxe_csrf` (Secure, Path=/, no Domain), which a
//! sibling subdomain cannot set; only that name is read then.

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

/// What a token is bound to.
enum Binding {
    Session(String),
    Cookie(String),
}

/// The token for a hidden field, and the cookie to set on the response when the browser needs
/// one (no session, and no CSRF cookie of ours yet). Pages that render a form must set it.
pub fn issue(req: &HttpRequest, state: &AppState) -> (String, Option<Cookie<'static>>) {
    if let Some(binding) = binding(req, state) {
        return (token_for(state, &binding), None);
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let value = URL_SAFE_NO_PAD.encode(bytes);
    let token = token_for(state, &Binding::Cookie(value.clone()));
    // No Domain, Path=/ and (with SESSION_SECURE) Secure: what the `__Host-` name requires.
    let cookie = Cookie::build(cookie_name(state), value)
        .http_only(true)
        .secure(state.config.session.secure)
        .same_site(SameSite::Strict)
        .path("/")
        .finish();
    (token, Some(cookie))
}

/// Whether `presented` (the form's [`FIELD`]) is this browser's token; constant time.
pub fn verify(req: &HttpRequest, state: &AppState, presented: Option<&str>) -> bool {
    let (Some(binding), Some(presented)) = (binding(req, state), presented) else {
        return false;
    };
    let expected = token_for(state, &binding);
    !expected.is_empty()
        && expected.len() == presented.len()
        && openssl::memcmp::eq(expected.as_bytes(), presented.as_bytes())
}

/// The session when the browser has one (a session cookie with a valid MAC), else the CSRF
/// cookie's value when it is well formed.
fn binding(req: &HttpRequest, state: &AppState) -> Option<Binding> {
    if let Some(id) = session::cookie_session_id(req, state) {
        return Some(Binding::Session(id));
    }
    cookie_value(req, state).map(Binding::Cookie)
}

fn cookie_value(req: &HttpRequest, state: &AppState) -> Option<String> {
    let cookie = req.cookie(cookie_name(state))?;
    let value = cookie.value();
    let well_formed =
        value.len() == VALUE_LEN && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| value.to_string())
}

fn token_for(state: &AppState, binding: &Binding) -> String {
    let (domain, value) = match binding {
        Binding::Session(id) => (SESSION_DOMAIN, id),
        Binding::Cookie(value) => (COOKIE_DOMAIN, value),
    };
    let mut message = Vec::with_capacity(domain.len() + value.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(value.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac_sha256(state.session_key.secret(), &message))
}
