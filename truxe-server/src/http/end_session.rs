//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) on `/logout`, the
//! `end_session_endpoint`: `id_token_hint`, `client_id`, `post_logout_redirect_uri` (exactly one
//! the client registered) and `state`. The plain `/logout` handlers call in here; the user always
//! confirms with a button, then is sent back to the application, or sees "Signed out".

use actix_web::cookie::Cookie;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;

use super::AppState;
use super::csrf;
use super::pages::{error_page, render_with_cookies, see_other_with_cookies};
use super::session;
use crate::model::client::Client;
use crate::oauth::authorize::{MAX_PARAM_LEN, is_printable_param};
use crate::oauth::form::Form;
use crate::service::clients;
use crate::store;

pub const END_SESSION_PATH: &str = "/logout";

/// A validated logout request from an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndSession {
    pub id_token_hint: Option<String>,
    pub client_id: Option<String>,
    pub client_name: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
}

impl EndSession {
    /// The hidden fields that carry the request through the confirmation form.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let all = [
            ("id_token_hint", &self.id_token_hint),
            ("client_id", &self.client_id),
            ("post_logout_redirect_uri", &self.post_logout_redirect_uri),
            ("state", &self.state),
        ];
        all.into_iter().filter_map(|(name, value)| value.clone().map(|v| (name, v))).collect()
    }
}

fn refused(message: &str) -> HttpResponse {
    error_page(StatusCode::BAD_REQUEST, "Cannot sign out from this application", message)
}

/// The application's logout request in `params` (the query of a GET, the form of a POST), or
/// `None` for a plain sign-out. An invalid one is an error page, never a redirect.
// The error is the finished error page, returned straight from the handler.
#[allow(clippy::result_large_err)]
pub async fn request(state: &AppState, params: &Form) -> Result<Option<EndSession>, HttpResponse> {
    let hint = params.get("id_token_hint");
    let client_id = params.get("client_id");
    let redirect_uri = params.get("post_logout_redirect_uri");
    let request_state = params.get("state");
    if hint.is_none() && client_id.is_none() && redirect_uri.is_none() && request_state.is_none() {
        return Ok(None);
    }
    if [hint, client_id, redirect_uri, request_state].iter().flatten().any(|v| v.len() > MAX_PARAM_LEN * 4) {
        return Err(refused("The sign-out request is too long."));
    }
    // Echoed back to the application (`state`) or compared: printable text, as at the
    // authorization endpoint (the hint is a JWT, checked by its verification).
    let printable = [(client_id, false), (redirect_uri, false), (request_state, true)]
        .into_iter()
        .all(|(value, vschar_only)| value.is_none_or(|v| is_printable_param(v, vschar_only)));
    if !printable {
        return Err(refused("The sign-out request holds characters that are not allowed."));
    }

    let hinted_client = match hint {
        None => None,
        Some(hint) => {
            let now = store::unix_now();
            match state.keys.request_keys(now).verify_id_token_hint(hint, &state.config.issuer, now) {
                Ok(claims) => Some(claims.aud),
                Err(reason) => {
                    tracing::info!(?reason, "logout with an id_token_hint that is not one of our ID tokens");
                    return Err(refused("The id_token_hint is not an ID token issued by this server."));
                }
            }
        }
    };
    let client_id = match (client_id, hinted_client) {
        (Some(given), Some(hinted)) if given != hinted => {
            return Err(refused("The client_id does not match the id_token_hint."));
        }
        (Some(given), _) => Some(given.to_string()),
        (None, hinted) => hinted,
    };
    let client = match &client_id {
        None => None,
        Some(id) => {
            let id = id.clone();
            match store::run(&state.pool, move |conn| clients::find(conn, &id)).await {
                Ok(Some(client)) if client.is_active() => Some(client),
                Ok(_) => return Err(refused("The application asking to sign you out is unknown or disabled.")),
                Err(error) => return Err(super::pages::storage_failure(&error)),
            }
        }
    };
    let post_logout_redirect_uri = match redirect_uri {
        None => None,
        Some(uri) => Some(registered_uri(client.as_ref(), uri)?),
    };
    Ok(Some(EndSession {
        id_token_hint: hint.map(str::to_string),
        client_name: client.as_ref().map(|c| c.client_name.clone()),
        client_id,
        post_logout_redirect_uri,
        // Only meaningful on the way back to the application.
        state: request_state.map(str::to_string),
    }))
}

#[allow(clippy::result_large_err)]
fn registered_uri(client: Option<&Client>, uri: &str) -> Result<String, HttpResponse> {
    let Some(client) = client else {
        return Err(refused("A post_logout_redirect_uri needs the client_id or an id_token_hint."));
    };
    if client.post_logout_redirect_uris.iter().any(|registered| registered == uri) {
        Ok(uri.to_string())
    } else {
        Err(refused("The post_logout_redirect_uri is not registered for this application."))
    }
}

#[derive(Template)]
#[template(path = "end_session.html")]
struct ConfirmPage<'a> {
    csrf_token: &'a str,
    email: Option<&'a str>,
    client_name: Option<&'a str>,
    fields: Vec<(&'static str, String)>,
}

/// The "Sign out" confirmation for an application's request.
pub async fn confirm(req: &HttpRequest, state: &AppState, end: &EndSession) -> HttpResponse {
    let signed_in = session::current(req, state).await;
    let (csrf_token, cookie) = csrf::issue(req, state);
    let page = ConfirmPage {
        csrf_token: &csrf_token,
        email: signed_in.as_ref().map(|s| s.user.email.as_str()),
        client_name: end.client_name.as_deref(),
        fields: end.fields(),
    };
    render_with_cookies(StatusCode::OK, &page, cookie.into_iter().collect())
}

/// After the session ended: back to the application with `state`, when it named where.
pub fn after_sign_out(end: &EndSession, removal: Cookie<'static>) -> Option<HttpResponse> {
    let uri = end.post_logout_redirect_uri.as_deref()?;
    let location = match (url::Url::parse(uri), &end.state) {
        (Ok(mut url), Some(state)) => {
            url.query_pairs_mut().append_pair("state", state);
            url.to_string()
        }
        _ => uri.to_string(),
    };
    tracing::info!(client_id = ?end.client_id, "signed out at the application's request");
    Some(see_other_with_cookies(&location, vec![removal]))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::oauth::scope::ScopeSet;

    fn client() -> Client {
        Client {
            grant_types: vec![],
            allowed_scopes: ScopeSet::default(),
            redirect_uris: vec![],
            post_logout_redirect_uris: vec!["https://app.example/bye".into()],
            ..Client::example()
        }
    }

    #[test]
    fn only_registered_uris() {
        let c = client();
        assert_eq!(
            registered_uri(Some(&c), "https://app.example/bye").ok().as_deref(),
            Some("https://app.example/bye")
        );
        for bad in ["https://app.example/bye/", "https://APP.example/bye", "https://evil.example/"] {
            assert!(registered_uri(Some(&c), bad).is_err(), "{bad}");
        }
        assert!(registered_uri(None, "https://app.example/bye").is_err());
    }

    #[test]
    fn back_to_the_application_with_state() {
        let end = EndSession {
            id_token_hint: None,
            client_id: Some("cl_app".into()),
            client_name: None,
            post_logout_redirect_uri: Some("https://app.example/bye?x=1".into()),
            state: Some("s 1".into()),
        };
        let response = after_sign_out(&end, Cookie::new("truxe_session", "")).expect("a redirect");
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers().get("location").and_then(|v| v.to_str().ok()),
            Some("https://app.example/bye?x=1&state=s+1")
        );
        let without = EndSession { post_logout_redirect_uri: None, ..end };
        assert!(after_sign_out(&without, Cookie::new("truxe_session", "")).is_none());
    }
}
