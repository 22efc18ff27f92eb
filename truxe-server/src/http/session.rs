//! The browser session: the signed `truxe_session` cookie and who it signs in.
//!
//! With `SESSION_SECURE=true` (the production default) the cookie is `__Host-truxe_session`:
//! browsers accept a `__Host-` cookie only with `Secure`, `Path=/` and no `Domain`, so a sibling
//! subdomain (or a plain-http response) cannot plant or overwrite it. Only that name is read
//! then; an unprefixed `truxe_session` is ignored.
//!
//! Cookie value: `ID.MAC`, where ID is 256 random bits (base64url) and MAC is
//! HMAC-SHA256(session key, ID) (base64url). The MAC lets a forged or damaged cookie be refused
//! without a database read; the session itself lives server-side (table `sessions`, keyed by
//! SHA-256 of ID), so it can be listed and revoked. The session key is
//! HMAC-SHA256("truxe session v1", SESSION_SECRET).

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::AppState;
use crate::config::SameSite as ConfigSameSite;
use crate::model::user::User;
use crate::oauth::client_secret::hmac_sha256;
use crate::secret::Secret;
use crate::service::sessions::{self as session_service, Active};
use crate::store::{self, sessions::Session};

/// The cookie's name without `SESSION_SECURE` (development over plain http).
pub const COOKIE: &str = "truxe_session";
/// The cookie's name with `SESSION_SECURE=true`.
pub const SECURE_COOKIE: &str = "__Host-truxe_session";

/// The session cookie's name under this configuration (see the module documentation).
pub fn cookie_name(state: &AppState) -> &'static str {
    if state.config.session.secure { SECURE_COOKIE } else { COOKIE }
}

/// Longest `return_to` kept; a longer one is dropped (sign-in then lands on `/`).
pub const MAX_RETURN_TO_LEN: usize = 4096;

/// The signed-in user of a request.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    /// The `sessions` row's key (hex SHA-256 of the cookie's id).
    pub session_hash: String,
    /// When the user authenticated (OIDC `auth_time`), epoch seconds.
    pub auth_time: i64,
    /// RFC 8176 values: `["email"]`, `["email", "mfa", "otp"]` or `["email", "mfa"]`.
    pub amr: Vec<String>,
}

/// The session key from `SESSION_SECRET` (or the data directory's generated secret).
pub fn derive_key(secret: &Secret<String>) -> Secret<Vec<u8>> {
    Secret::new(hmac_sha256(b"truxe session v1", secret.secret().as_bytes()))
}

/// The signed-in user of this request: signed cookie valid, server-side session not
/// revoked/expired, user active, second factor done when the user has MFA. Never errors:
/// anything wrong = None.
pub async fn current(req: &HttpRequest, state: &AppState) -> Option<SignedIn> {
    match browser_state(req, state).await {
        BrowserState::SignedIn(signed_in) => Some(signed_in),
        BrowserState::Pending(..) | BrowserState::SignedOut => None,
    }
}

/// The session of this request that still owes its second factor (for `/login/mfa`).
pub(crate) async fn pending(req: &HttpRequest, state: &AppState) -> Option<(Session, User)> {
    match browser_state(req, state).await {
        BrowserState::Pending(session, user) => Some((session, user)),
        BrowserState::SignedIn(_) | BrowserState::SignedOut => None,
    }
}

/// Where a browser stands, from one look-up.
pub(crate) enum BrowserState {
    SignedOut,
    /// Past the magic link, the second factor still owed.
    Pending(Session, User),
    SignedIn(SignedIn),
}

pub(crate) async fn browser_state(req: &HttpRequest, state: &AppState) -> BrowserState {
    let Some(active) = load(req, state).await else {
        return BrowserState::SignedOut;
    };
    if !active.user.is_active() {
        return BrowserState::SignedOut;
    }
    if active.session.mfa_pending {
        return BrowserState::Pending(active.session, active.user);
    }
    BrowserState::SignedIn(SignedIn {
        amr: active.session.amr_list(),
        auth_time: active.session.auth_time,
        session_hash: active.session.session_hash,
        user: active.user,
    })
}

async fn load(req: &HttpRequest, state: &AppState) -> Option<Active> {
    let id = cookie_session_id(req, state)?;
    let now = store::unix_now();
    match store::run(&state.pool, move |conn| session_service::find_live(conn, &id, now)).await {
        Ok(active) => active,
        Err(error) => {
            tracing::error!(%error, "cannot look up the session; treating the request as signed out");
            None
        }
    }
}

/// The session id from a cookie whose MAC is valid (whether the session is still live is not
/// looked at). CSRF tokens are bound to it.
pub(crate) fn cookie_session_id(req: &HttpRequest, state: &AppState) -> Option<String> {
    let cookie = req.cookie(cookie_name(state))?;
    let (id, mac) = cookie.value().split_once('.')?;
    if !session_service::is_plausible_session_id(id) || mac.len() != 43 {
        return None;
    }
    let expected = URL_SAFE_NO_PAD.encode(hmac_sha256(state.session_key.secret(), id.as_bytes()));
    (expected.len() == mac.len() && openssl::memcmp::eq(expected.as_bytes(), mac.as_bytes())).then(|| id.to_string())
}

/// 303 to `/login?return_to=<local path+query, url-encoded>`; `force` adds `&prompt=login`
/// (shows the form even if signed in). A `return_to` that is not a local path becomes `/`.
pub fn login_redirect(return_to: &str, force: bool) -> HttpResponse {
    let return_to = safe_return_to(Some(return_to)).unwrap_or_else(|| "/".to_string());
    let encoded: String = url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
    let mut location = format!("/login?return_to={encoded}");
    if force {
        location.push_str("&prompt=login");
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// Revokes the current session server-side; returns the removal cookie to add to the response.
pub async fn end_current(req: &HttpRequest, state: &AppState) -> Cookie<'static> {
    if let Some(id) = cookie_session_id(req, state) {
        let now = store::unix_now();
        if let Err(error) = store::run(&state.pool, move |conn| session_service::end(conn, &id, now)).await {
            tracing::error!(%error, "cannot revoke the session");
        }
    }
    removal_cookie(state)
}

/// A cookie that makes the browser forget the session.
pub fn removal_cookie(state: &AppState) -> Cookie<'static> {
    let mut cookie = base_cookie(state, String::new());
    cookie.make_removal();
    cookie
}

/// The session cookie for a new session `id`.
pub(crate) fn session_cookie(state: &AppState, id: &Secret<String>) -> Cookie<'static> {
    let mac = URL_SAFE_NO_PAD.encode(hmac_sha256(state.session_key.secret(), id.secret().as_bytes()));
    let mut cookie = base_cookie(state, format!("{}.{mac}", id.secret()));
    let max_age = i64::try_from(state.config.session.max_age.as_secs()).unwrap_or(i64::MAX);
    cookie.set_max_age(CookieDuration::seconds(max_age));
    cookie
}

fn base_cookie(state: &AppState, value: String) -> Cookie<'static> {
    let same_site = match state.config.session.same_site {
        ConfigSameSite::Strict => SameSite::Strict,
        ConfigSameSite::Lax => SameSite::Lax,
        ConfigSameSite::None => SameSite::None,
    };
    // No Domain, Path=/ and (with SESSION_SECURE) Secure: what the `__Host-` name requires.
    Cookie::build(cookie_name(state), value)
        .http_only(true)
        .secure(state.config.session.secure)
        .same_site(same_site)
        .path("/")
        .finish()
}

/// `SESSION_MAX_AGE` in seconds, for the `expires_at` of new sessions.
pub(crate) fn max_age_secs(state: &AppState) -> i64 {
    i64::try_from(state.config.session.max_age.as_secs()).unwrap_or(i64::MAX).max(1)
}

/// A `return_to` worth following: a local path (`/…`, never `//host` or `/\host`, which
/// browsers treat as another origin), printable ASCII, at most [`MAX_RETURN_TO_LEN`] bytes.
/// Anything else is dropped, so sign-in can never be turned into an open redirect.
pub fn safe_return_to(value: Option<&str>) -> Option<String> {
    let value = value?;
    let local = value.starts_with('/')
        && !value.starts_with("//")
        && !value.starts_with("/\\")
        && value.len() <= MAX_RETURN_TO_LEN
        && value.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'\\');
    local.then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        for good in ["/", "/oauth-provider/authorize?client_id=cl_x&scope=openid%20email", "/login/mfa/setup"] {
            assert_eq!(safe_return_to(Some(good)).as_deref(), Some(good), "{good}");
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "/a\\b",
            "evil",
            "",
            "/a b",
            "/a\nb",
            "javascript:alert(1)",
            "/\u{e9}",
        ] {
            assert_eq!(safe_return_to(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(safe_return_to(Some(&format!("/{}", "a".repeat(MAX_RETURN_TO_LEN)))), None);
        assert_eq!(safe_return_to(None), None);
    }

    #[test]
    fn login_redirect_encodes_the_return_path() {
        let response = login_redirect("/oauth-provider/authorize?client_id=a&state=b%20c", false);
        assert_eq!(response.status(), actix_web::http::StatusCode::SEE_OTHER);
        let location = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(location, "/login?return_to=%2Foauth-provider%2Fauthorize%3Fclient_id%3Da%26state%3Db%2520c");
        let forced = login_redirect("https://evil.example/", true);
        let location = forced.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(location, "/login?return_to=%2F&prompt=login");
    }

    #[test]
    fn the_key_depends_on_the_secret() {
        let a = derive_key(&Secret::new("one".to_string()));
        let b = derive_key(&Secret::new("two".to_string()));
        assert_eq!(a.secret().len(), 32);
        assert_ne!(a.secret(), b.secret());
    }
}
