//! `GET/POST /oauth-provider/authorize`: the authorization endpoint and the consent page's
//! submission. Parameters come from the query (GET) or the form body (POST); a POST carrying
//! `decision=allow|deny` is the consent form, a new authorization request re-validated in full.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;

use super::AppState;
use super::csrf;
use super::pages::{self, error_page, render_with_cookies, see_other};
use super::session::{self, safe_return_to};
use crate::model::client::Client;
use crate::oauth::authorize::{self, AuthorizationRequest, AuthorizeError, Policy};
use crate::oauth::form::Form;
use crate::oauth::scope::ScopeSet;
use crate::oauth::{ErrorCode, OAuthError};
use crate::service::authorize::{self as service, Authentication, Next};
use crate::service::clients;
use crate::store;
use crate::store::audit::{AuditAction, AuditEvent};

pub const AUTHORIZE_PATH: &str = "/oauth-provider/authorize";

/// The parameters whose repetition makes the redirect URI untrustworthy: an error page, never a
/// redirect.
const PAGE_PARAMS: [&str; 2] = ["client_id", "redirect_uri"];

pub async fn authorize_get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if req.query_string().len() > pages::MAX_FORM_BYTES {
        return error_page(StatusCode::URI_TOO_LONG, "Address too long", "The address of this page is too long.");
    }
    let params = match Params::parse(req.query_string().as_bytes()) {
        Ok(params) => params,
        Err(response) => return response,
    };
    authorize(&req, &state, params, None).await
}

pub async fn authorize_post(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let body = match pages::read_body(&req, payload).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let params = match Params::parse(&body) {
        Ok(params) => params,
        Err(response) => return response,
    };
    let decision = match params.form.get("decision") {
        None => None,
        Some("allow") => Some(Decision::Allow),
        Some("deny") => Some(Decision::Deny),
        Some(_) => return error_page(StatusCode::BAD_REQUEST, "Invalid request", "The consent form was not valid."),
    };
    if decision.is_some() && !csrf::verify(&req, &state, params.form.get(csrf::FIELD)) {
        tracing::warn!(path = %req.path(), "consent posted without a valid CSRF token");
        return pages::csrf_failure();
    }
    authorize(&req, &state, params, decision).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Allow,
    Deny,
}

/// The request's parameters with repeated ones set aside, so that a repetition can be answered
/// with a redirect when the client and redirect URI themselves are sound.
struct Params {
    form: Form,
    repeated: Vec<String>,
}

impl Params {
    // The error is the finished error page, returned straight from the handler.
    #[allow(clippy::result_large_err)]
    fn parse(raw: &[u8]) -> Result<Self, HttpResponse> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut repeated: Vec<String> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(raw) {
            if name.contains('\u{FFFD}') || value.contains('\u{FFFD}') {
                return Err(error_page(
                    StatusCode::BAD_REQUEST,
                    "Invalid request",
                    "The request could not be read (a parameter was not valid text).",
                ));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                if !repeated.iter().any(|r| *r == name) {
                    repeated.push(name.into_owned());
                }
            } else {
                pairs.push((name.into_owned(), value.into_owned()));
            }
        }
        if let Some(name) = repeated.iter().find(|name| PAGE_PARAMS.contains(&name.as_str())) {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                &format!("The {name} parameter appears more than once."),
            ));
        }
        pairs.retain(|(name, _)| !repeated.contains(name));
        let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        let form = Form::parse(encoded.as_bytes())
            .map_err(|_| error_page(StatusCode::BAD_REQUEST, "Invalid request", "The request could not be read."))?;
        Ok(Self { form, repeated })
    }
}

fn invalid_request_page(message: &str) -> HttpResponse {
    error_page(StatusCode::BAD_REQUEST, "Invalid request", message)
}

/// Who a refused authorization request came from, for its audit entry.
struct Refusal<'a> {
    client_id: Option<&'a str>,
    user_id: Option<&'a str>,
}

/// Records the refusal of an authorization request as `authorization.failed`: coalesced per IP,
/// client and error, since anyone can send the endpoint garbage, and an application's silent
/// `prompt=none` checks fail this way routinely.
async fn audit_refusal(req: &HttpRequest, state: &AppState, who: Refusal<'_>, error: &OAuthError, redirected: bool) {
    let meta = super::request_meta::of(req);
    let mut event = AuditEvent::new(
        AuditAction::AuthorizationFailed,
        who.user_id.map_or("anonymous".into(), |u| format!("user:{u}")),
    )
    .from_request(&meta)
    .failed()
    .details(serde_json::json!({
        "error": error.code.as_str(),
        "error_description": error.description,
        "redirected": redirected,
    }));
    if let Some(client_id) = who.client_id {
        event = event.client(client_id).subject(client_id);
    }
    if let Some(user_id) = who.user_id {
        event = event.user(user_id);
    }
    let source = format!(
        "authorize|{}|{}|{}",
        meta.ip.as_deref().unwrap_or("-"),
        who.client_id.unwrap_or("-"),
        error.code.as_str()
    );
    if let Err(error) = state.audit.record_coalesced_async(source, event, store::unix_now()).await {
        tracing::error!(%error, "cannot record a refused authorization request");
    }
}

/// The client's redirect URI with an error (RFC 6749 §4.1.2.1, RFC 9207 `iss`).
fn error_redirect(
    state: &AppState,
    redirect_uri: &str,
    error: &OAuthError,
    request_state: Option<&str>,
) -> HttpResponse {
    tracing::info!(error = %error.code.as_str(), description = %error.description, "authorization request refused");
    see_other(&authorize::error_redirect(redirect_uri, error, request_state, &state.config.issuer))
}

async fn authorize(req: &HttpRequest, state: &AppState, params: Params, decision: Option<Decision>) -> HttpResponse {
    let client_id = authorize::client_id(&params.form).unwrap_or_default().to_string();
    let client = match store::run(&state.pool, move |conn| clients::find(conn, &client_id)).await {
        Ok(client) => client,
        Err(error) => return pages::storage_failure(&error),
    };
    let policy =
        Policy { require_pkce: state.config.oauth.require_pkce, scopes_supported: &state.rules.scopes_supported };
    let validated = authorize::validate(&params.form, client.as_ref(), &policy);
    let known_id = client.as_ref().map(|c| c.client_id.to_string());
    let known = Refusal { client_id: known_id.as_deref(), user_id: None };
    let request = match validated {
        Err(AuthorizeError::Page(message)) => {
            audit_refusal(req, state, known, &OAuthError::invalid_request(message.clone()), false).await;
            return invalid_request_page(&message);
        }
        Err(AuthorizeError::Redirect { redirect_uri, error, state: request_state }) => {
            let error = match params.repeated.first() {
                Some(name) => OAuthError::invalid_request(format!("parameter {name} is repeated")),
                None => error,
            };
            audit_refusal(req, state, known, &error, true).await;
            return error_redirect(state, &redirect_uri, &error, request_state.as_deref());
        }
        Ok(request) => request,
    };
    let Some(client) = client else {
        let message = "Unknown application (client_id).";
        audit_refusal(req, state, known, &OAuthError::invalid_request(message), false).await;
        return invalid_request_page(message);
    };
    if let Some(name) = params.repeated.first() {
        let error = OAuthError::invalid_request(format!("parameter {name} is repeated"));
        audit_refusal(req, state, known, &error, true).await;
        return error_redirect(state, &request.redirect_uri, &error, request.state.as_deref());
    }

    let now = store::unix_now();
    let current = session::current(req, state).await;
    let signed_in = current.as_ref().map(|s| Authentication {
        user_id: s.user.user_id.clone(),
        auth_time: s.auth_time,
        amr: s.amr.clone(),
    });
    let scope = service::effective_scope(&request.scope, &client, state.config.oauth.allow_refresh_token);
    let stored = match &signed_in {
        Some(auth) => {
            let (user_id, client_id) = (auth.user_id.clone(), client.client_id.clone());
            match store::run(&state.pool, move |conn| service::stored_consent(conn, &user_id, &client_id)).await {
                Ok(stored) => stored,
                Err(error) => return pages::storage_failure(&error),
            }
        }
        None => None,
    };

    if let Some(decision) = decision {
        // The consent form: the user saw the page while signed in; if the session ended since,
        // sign in again and come back to the request.
        let Some(auth) = signed_in else {
            return sign_in_redirect(req, state, &request, false).await;
        };
        return match decision {
            Decision::Deny => {
                tracing::info!(client_id = %client.client_id, user_id = %auth.user_id, "the user denied access");
                let event = AuditEvent::by_user(AuditAction::AuthorizationDenied, &auth.user_id)
                    .client(&client.client_id)
                    .subject(&client.client_id)
                    .from_request(&super::request_meta::of(req))
                    .failed()
                    .details(serde_json::json!({ "scope": scope.to_string() }));
                if let Err(error) = state.audit.record_async(event, now).await {
                    tracing::error!(%error, "cannot record a denied authorization");
                }
                let error = OAuthError::new(ErrorCode::AccessDenied, "the user denied access");
                error_redirect(state, &request.redirect_uri, &error, request.state.as_deref())
            }
            Decision::Allow => allow(req, state, &request, &client, &auth, &scope).await,
        };
    }

    match service::decide(&request, &client, signed_in.as_ref(), stored.as_ref(), &scope, now) {
        Next::SignIn { force } => sign_in_redirect(req, state, &request, force).await,
        Next::Fail(error) => {
            let who = Refusal {
                client_id: Some(&client.client_id),
                user_id: signed_in.as_ref().map(|auth| auth.user_id.as_str()),
            };
            audit_refusal(req, state, who, &error, true).await;
            error_redirect(state, &request.redirect_uri, &error, request.state.as_deref())
        }
        Next::AskConsent => match current {
            Some(current) => consent_page(req, state, &request, &client, &scope, &current.user.email),
            None => sign_in_redirect(req, state, &request, false).await,
        },
        Next::Issue => match signed_in {
            Some(auth) => issue(req, state, &request, &client, &auth, &scope).await,
            None => sign_in_redirect(req, state, &request, false).await,
        },
    }
}

/// The user allowed: record the consent, then issue the code.
async fn allow(
    req: &HttpRequest,
    state: &AppState,
    request: &AuthorizationRequest,
    client: &Client,
    auth: &Authentication,
    scope: &ScopeSet,
) -> HttpResponse {
    let (user_id, client_id, consented, origin_) =
        (auth.user_id.clone(), request.client_id.clone(), scope.clone(), super::request_meta::of(req));
    let now = store::unix_now();
    let granted = store::run(&state.pool, move |conn| {
        service::grant_consent(conn, &user_id, &client_id, &consented, &origin_, now)
    })
    .await;
    if let Err(error) = granted {
        return pages::storage_failure(&error);
    }
    issue(req, state, request, client, auth, scope).await
}

async fn issue(
    req: &HttpRequest,
    state: &AppState,
    request: &AuthorizationRequest,
    client: &Client,
    auth: &Authentication,
    scope: &ScopeSet,
) -> HttpResponse {
    // OAUTH_AUTHORIZATION_CODE_EXPIRY, or the client's shorter authorization_code_ttl.
    let ttl = client.authorization_code_ttl(state.rules.authorization_code_ttl);
    let (task_request, task_auth, task_scope, task_origin) =
        (request.clone(), auth.clone(), scope.clone(), super::request_meta::of(req));
    let now = store::unix_now();
    let code = store::run(&state.pool, move |conn| {
        service::issue_code(conn, &task_request, &task_auth, &task_scope, ttl, &task_origin, now)
    })
    .await;
    let code = match code {
        Ok(Some(code)) => code,
        // Disabled or deleted while the request was being answered.
        Ok(None) => {
            return error_page(
                StatusCode::FORBIDDEN,
                "Account disabled",
                "This account is disabled. Contact the administrator of this service.",
            );
        }
        Err(error) => return pages::storage_failure(&error),
    };
    tracing::info!(client_id = %request.client_id, user_id = %auth.user_id, scope = %scope, "authorization code issued");
    let mut params = vec![("code", code.secret().as_str())];
    if let Some(request_state) = &request.state {
        params.push(("state", request_state));
    }
    see_other(&authorize::redirect_with(&request.redirect_uri, &params, &state.config.issuer))
}

/// This request as a local URL: where sign-in returns to.
fn resume_path(request: &AuthorizationRequest) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(service::canonical_params(request).iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    format!("{AUTHORIZE_PATH}?{query}")
}

/// `303` to `/login` (with `prompt=login` when a session exists but is not enough), returning
/// to this request afterwards; `login_hint` pre-fills the address.
async fn sign_in_redirect(
    req: &HttpRequest,
    state: &AppState,
    request: &AuthorizationRequest,
    force: bool,
) -> HttpResponse {
    let Some(return_to) = safe_return_to(Some(&resume_path(request))) else {
        let error = OAuthError::invalid_request("the request is too long to resume after sign-in");
        audit_refusal(req, state, Refusal { client_id: Some(&request.client_id), user_id: None }, &error, true).await;
        return error_redirect(state, &request.redirect_uri, &error, request.state.as_deref());
    };
    let mut location = url::form_urlencoded::Serializer::new(String::new());
    location.append_pair("return_to", &return_to);
    if force {
        location.append_pair("prompt", "login");
    }
    if let Some(hint) = &request.login_hint {
        location.append_pair("login_hint", hint);
    }
    see_other(&format!("/login?{}", location.finish()))
}

/// A scope as the consent page words it.
pub struct ScopeLine {
    pub name: String,
    pub description: String,
    /// Whether the technical name adds anything (API scopes).
    pub show_name: bool,
}

pub fn describe(scope: &str) -> ScopeLine {
    let known = match scope {
        "openid" => Some("Sign you in with your account"),
        "email" => Some("See your email address"),
        "profile" => Some("See your name"),
        "offline_access" => Some("Stay signed in: keep access when you are not using it, until you withdraw it"),
        _ => None,
    };
    ScopeLine {
        name: scope.to_string(),
        description: known.map_or_else(|| format!("Access {scope}"), str::to_string),
        show_name: known.is_none(),
    }
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    client_name: &'a str,
    logo_uri: Option<&'a str>,
    client_uri: Option<&'a str>,
    policy_uri: Option<&'a str>,
    tos_uri: Option<&'a str>,
    email: &'a str,
    scopes: Vec<ScopeLine>,
    fields: Vec<(&'static str, String)>,
    csrf_token: &'a str,
    switch_href: String,
}

/// Only absolute `https` links (and `http` ones for links, never for images) reach the page.
fn web_link(uri: Option<&str>, https_only: bool) -> Option<&str> {
    let uri = uri?;
    let url = url::Url::parse(uri).ok()?;
    let allowed = url.scheme() == "https" || (!https_only && url.scheme() == "http");
    allowed.then_some(uri)
}

fn consent_page(
    req: &HttpRequest,
    state: &AppState,
    request: &AuthorizationRequest,
    client: &Client,
    scope: &ScopeSet,
    email: &str,
) -> HttpResponse {
    let (csrf_token, cookie) = csrf::issue(req, state);
    let mut switch = url::form_urlencoded::Serializer::new(String::new());
    switch.append_pair("prompt", "login");
    if let Some(return_to) = safe_return_to(Some(&resume_path(request))) {
        switch.append_pair("return_to", &return_to);
    }
    let page = ConsentPage {
        client_name: &client.client_name,
        logo_uri: web_link(client.logo_uri.as_deref(), true),
        client_uri: web_link(client.client_uri.as_deref(), false),
        policy_uri: web_link(client.policy_uri.as_deref(), false),
        tos_uri: web_link(client.tos_uri.as_deref(), false),
        email,
        scopes: scope.iter().map(describe).collect(),
        fields: service::canonical_params(request),
        csrf_token: &csrf_token,
        switch_href: format!("/login?{}", switch.finish()),
    };
    render_with_cookies(StatusCode::OK, &page, cookie.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_set_aside() {
        let params = Params::parse(b"client_id=cl_a&state=1&state=2&scope=openid").expect("parsed");
        assert_eq!(params.repeated, vec!["state".to_string()]);
        assert_eq!(params.form.get("state"), None);
        assert_eq!(params.form.get("scope"), Some("openid"));
        for raw in [&b"client_id=a&client_id=b"[..], b"redirect_uri=a&redirect_uri=a", b"scope=%FF"] {
            let page = Params::parse(raw).err().expect("an error page");
            assert_eq!(page.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn scopes_are_described() {
        assert!(!describe("email").show_name);
        let api = describe("orders:read");
        assert!(api.show_name && api.description.contains("orders:read"));
    }

    #[test]
    fn only_web_links() {
        assert_eq!(web_link(Some("https://a.example/logo.png"), true), Some("https://a.example/logo.png"));
        assert_eq!(web_link(Some("http://a.example/logo.png"), true), None);
        assert_eq!(web_link(Some("http://a.example/tos"), false), Some("http://a.example/tos"));
        assert_eq!(web_link(Some("javascript:alert(1)"), false), None);
        assert_eq!(web_link(None, false), None);
    }
}
