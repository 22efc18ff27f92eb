//! End-user pages: `/login` (ask for a magic link), `/login/magic` (use it), `/login/mfa` and
//! `/login/mfa/setup` (TOTP), `/logout`, and `/` (who is signed in).

use actix_web::cookie::Cookie;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;

use super::AppState;
use super::csrf;
use super::end_session;
use super::pages::{self, error_page, error_page_with_link, render_with_cookies, see_other_with_cookies};
use super::session::{self, BrowserState, safe_return_to};
use crate::mail::human_duration;
use crate::metrics::AuthFailure;
use crate::model::request::RequestMeta;
use crate::model::user::{Email, MAX_EMAIL_LEN};
use crate::service::consents::{self as consent_service, ConsentView};
use crate::service::mfa::{self as mfa_service, Method, MfaServiceError};
use crate::service::sessions as session_service;
use crate::service::sign_in::{self, LinkParams, LinkRequest, Redeemed};
use crate::store::audit::{AuditAction, AuditEvent};
use crate::store::{self, StoreError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").get(home))
        .service(web::resource("/login").get(login_page).post(login_submit))
        .service(web::resource("/login/magic").get(magic_page).post(magic_submit))
        .service(web::resource("/login/mfa").get(mfa_page).post(mfa_submit))
        .service(web::resource("/login/mfa/setup").get(mfa_setup_page).post(mfa_setup_submit))
        .service(web::resource("/login/consents").post(super::consents::withdraw))
        .service(web::resource("/logout").get(logout_page).post(logout_submit));
}

/// How long a session may wait for its second factor.
const PENDING_MFA_SECS: i64 = 15 * 60;

/// Longest second-factor entry read (a recovery code with spaces is 20 characters).
const MAX_CODE_LEN: usize = 64;

// ---- templates -------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf_token: &'a str,
    return_to: Option<&'a str>,
    email: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "check_email.html")]
struct CheckEmailPage<'a> {
    email: &'a str,
    expires_in: &'a str,
    retry_href: &'a str,
}

#[derive(Template)]
#[template(path = "magic.html")]
struct MagicPage<'a> {
    csrf_token: &'a str,
    token: &'a str,
    /// The address the link signs into, shown so nobody continues into someone else's account.
    email: &'a str,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    email: &'a str,
    csrf_token: &'a str,
    mfa_available: bool,
    mfa_enabled: bool,
    /// The applications the user allowed (withdrawn with `POST /login/consents`).
    consents: Vec<ConsentView>,
}

#[derive(Template)]
#[template(path = "mfa.html")]
struct MfaPage<'a> {
    csrf_token: &'a str,
    return_to: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "mfa_setup.html")]
struct MfaSetupPage<'a> {
    csrf_token: &'a str,
    qr_svg: &'a str,
    secret_base32: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "mfa_enabled.html")]
struct MfaEnabledPage<'a> {
    codes: Vec<&'a str>,
}

#[derive(Template)]
#[template(path = "logout.html")]
struct LogoutPage<'a> {
    csrf_token: &'a str,
    email: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "signed_out.html")]
struct SignedOutPage;

// ---- helpers ---------------------------------------------------------------------------------

fn cookies(cookie: Option<Cookie<'static>>) -> Vec<Cookie<'static>> {
    cookie.into_iter().collect()
}

/// `/login/mfa`, keeping where to go afterwards.
fn mfa_location(return_to: Option<&str>) -> String {
    match return_to {
        Some(path) => {
            let encoded: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
            format!("/login/mfa?return_to={encoded}")
        }
        None => "/login/mfa".to_string(),
    }
}

fn mfa_unavailable() -> HttpResponse {
    error_page(StatusCode::NOT_FOUND, "Not found", "Two-factor authentication is not enabled on this server.")
}

use pages::storage_failure;

/// A use case's failure that the page did not handle: its storage failure classified as every
/// storage failure is, anything else an internal error.
fn service_failure(error: &(impl std::fmt::Display + AsStoreError)) -> HttpResponse {
    match error.store_error() {
        Some(store) => storage_failure(store),
        None => {
            tracing::error!(%error, "sign-in page: unexpected failure");
            pages::error_page(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The service could not complete this request. The error was logged.",
            )
        }
    }
}

trait AsStoreError {
    fn store_error(&self) -> Option<&crate::store::StoreError>;
}

impl AsStoreError for crate::service::users::UserError {
    fn store_error(&self) -> Option<&crate::store::StoreError> {
        match self {
            crate::service::users::UserError::Store(error) => Some(error),
            _ => None,
        }
    }
}

impl AsStoreError for MfaServiceError {
    fn store_error(&self) -> Option<&crate::store::StoreError> {
        match self {
            MfaServiceError::Store(error) => Some(error),
            _ => None,
        }
    }
}

// ---- / ---------------------------------------------------------------------------------------

async fn home(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let signed_in = match session::browser_state(&req, &state).await {
        BrowserState::SignedIn(signed_in) => signed_in,
        BrowserState::Pending(..) => return pages::see_other("/login/mfa"),
        BrowserState::SignedOut => return pages::see_other("/login"),
    };
    let user_id = signed_in.user.user_id.clone();
    let consents = match store::run(&state.pool, move |conn| consent_service::list_for_user(conn, &user_id)).await {
        Ok(consents) => consents,
        Err(error) => return storage_failure(&error),
    };
    let (csrf_token, cookie) = csrf::issue(&req, &state);
    let page = HomePage {
        email: &signed_in.user.email,
        csrf_token: &csrf_token,
        mfa_available: state.config.mfa.enabled,
        mfa_enabled: signed_in.user.mfa_enabled,
        consents,
    };
    render_with_cookies(StatusCode::OK, &page, cookies(cookie))
}

// ---- /login ----------------------------------------------------------------------------------

async fn login_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let query = match pages::query_form(&req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let return_to = safe_return_to(query.get("return_to"));
    let force = query.get("prompt") == Some("login");
    if !force {
        match session::browser_state(&req, &state).await {
            BrowserState::SignedIn(_) => return pages::see_other(return_to.as_deref().unwrap_or("/")),
            BrowserState::Pending(..) => return pages::see_other(&mfa_location(return_to.as_deref())),
            BrowserState::SignedOut => {}
        }
    }
    let hint = query.get("login_hint").filter(|h| h.len() <= MAX_EMAIL_LEN).unwrap_or_default();
    login_form(&req, &state, StatusCode::OK, return_to.as_deref(), hint, None)
}

fn login_form(
    req: &HttpRequest,
    state: &AppState,
    status: StatusCode,
    return_to: Option<&str>,
    email: &str,
    error: Option<&str>,
) -> HttpResponse {
    let (csrf_token, cookie) = csrf::issue(req, state);
    render_with_cookies(status, &LoginPage { csrf_token: &csrf_token, return_to, email, error }, cookies(cookie))
}

async fn login_submit(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let form = match pages::read_csrf_form(&req, &state, payload).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let return_to = safe_return_to(form.get("return_to"));
    let typed = form.get("email").unwrap_or_default();
    let email = match Email::parse(typed) {
        Ok(email) => email,
        Err(_) => {
            // Echo what was typed only when it is short enough to be an address at all.
            let echo = if typed.len() <= MAX_EMAIL_LEN { typed } else { "" };
            return login_form(
                &req,
                &state,
                StatusCode::BAD_REQUEST,
                return_to.as_deref(),
                echo,
                Some("Enter a valid email address, such as name@example.com."),
            );
        }
    };

    // Everything that depends on whether the address has an account happens after the answer,
    // so neither the page nor its timing tells.
    // Counted by the mailer from here on, so a graceful shutdown (and a test) can wait for it.
    // The client IP the rate-limit middleware resolved (behind a trusted proxy, the one it names).
    let origin = super::request_meta::of(&req);
    let task_state = state.clone();
    let task_email = email.clone();
    let task_return_to = return_to.clone();
    state.mailer.spawn_job(async move {
        send_link(&task_state, task_email, task_return_to, origin).await;
    });

    let retry_href = match &return_to {
        Some(path) => {
            let encoded: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
            format!("/login?prompt=login&return_to={encoded}")
        }
        None => "/login?prompt=login".to_string(),
    };
    let expires_in = human_duration(state.config.sign_in.magic_link_ttl);
    pages::render(
        StatusCode::OK,
        &CheckEmailPage { email: email.as_str(), expires_in: &expires_in, retry_href: &retry_href },
    )
}

async fn send_link(state: &AppState, email: Email, return_to: Option<String>, origin: RequestMeta) {
    let ip = origin.ip.clone();
    let now = store::unix_now();
    let key = state.magic_link_key.clone();
    let open_signup = state.config.sign_in.open_signup;
    let ttl = state.config.sign_in.magic_link_ttl;
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let domain = email.domain().to_string();
    let lookup_email = email.clone();
    let limit = state.config.rate_limit.magic_link_limit();
    let outcome = store::run(&state.pool, move |conn| {
        let params = LinkParams { open_signup, ttl_secs, return_to: return_to.as_deref(), ip: ip.as_deref(), limit };
        sign_in::request_link(conn, key.secret(), &lookup_email, &params, now)
    })
    .await;
    audit_link_request(state, &origin, &domain, &outcome, now).await;
    match outcome {
        Ok(LinkRequest::Send { email, token, .. }) => {
            let link = format!("{}/login/magic?token={}", state.config.issuer, token.secret());
            if let Err(error) = state.mailer.send_magic_link(&email, &link, ttl).await {
                tracing::error!(%error, to_domain = %domain, "cannot send the magic-link email");
            }
        }
        Ok(LinkRequest::RateLimited) => {
            let limit = state.config.rate_limit.magic_link;
            tracing::warn!(
                to_domain = %domain,
                limit = limit.max,
                window = %human_duration(limit.window),
                "magic-link rate limit reached for an address; no email sent"
            );
        }
        Ok(LinkRequest::NoLink) => {
            tracing::info!(to_domain = %domain, "sign-in link asked for an address without an active account; no email sent");
        }
        Err(error) => tracing::error!(%error, "cannot create a magic link"),
    }
}

/// `user.sign_in_link_requested`, with what came of it (never the address: its domain only).
/// Refusals are coalesced per IP and outcome: anyone can ask for links to made-up addresses.
async fn audit_link_request(
    state: &AppState,
    origin: &RequestMeta,
    domain: &str,
    outcome: &Result<LinkRequest, StoreError>,
    now: i64,
) {
    let (outcome, user_id) = match outcome {
        Ok(LinkRequest::Send { user_id, .. }) => ("sent", user_id.as_deref()),
        Ok(LinkRequest::RateLimited) => ("rate_limited", None),
        Ok(LinkRequest::NoLink) => ("no_active_account", None),
        Err(_) => return,
    };
    let mut event = AuditEvent::new(AuditAction::UserSignInLinkRequested, "anonymous")
        .from_request(origin)
        .details(serde_json::json!({ "outcome": outcome, "email_domain": domain }));
    if let Some(user_id) = user_id {
        event = event.user(user_id).subject(user_id);
    }
    let recorded = if outcome == "sent" {
        state.audit.record_async(event, now).await
    } else {
        let source = format!("sign_in_link|{}|{outcome}", origin.ip.as_deref().unwrap_or("-"));
        state.audit.record_coalesced_async(source, event.failed(), now).await
    };
    if let Err(error) = recorded {
        tracing::error!(%error, "cannot record a sign-in link request");
    }
}

/// `user.sign_in_failed`: a sign-in link that could not be used, and why. Coalesced per IP and
/// reason, since anyone can post made-up links.
async fn audit_sign_in_failure(req: &HttpRequest, state: &AppState, reason: &str) {
    let origin = super::request_meta::of(req);
    let event = AuditEvent::new(AuditAction::UserSignInFailed, "anonymous")
        .from_request(&origin)
        .failed()
        .details(serde_json::json!({ "reason": reason, "method": "magic_link" }));
    let source = format!("sign_in|{}|{reason}", origin.ip.as_deref().unwrap_or("-"));
    if let Err(error) = state.audit.record_coalesced_async(source, event, store::unix_now()).await {
        tracing::error!(%error, "cannot record a failed sign-in");
    }
}

// ---- /login/magic ----------------------------------------------------------------------------

fn invalid_link() -> HttpResponse {
    error_page_with_link(
        StatusCode::BAD_REQUEST,
        "This sign-in link cannot be used",
        "The link is invalid, has expired, or was already used. Sign-in links work once and only for a short time.",
        "/login",
        "Ask for a new link",
    )
}

async fn magic_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let query = match pages::query_form(&req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let Some(token) = query.get("token").filter(|t| sign_in::is_plausible_token(t)).map(str::to_string) else {
        return invalid_link();
    };
    // Looked at, not used: mail scanners that open links must not burn them.
    let key = state.magic_link_key.clone();
    let now = store::unix_now();
    let lookup = token.clone();
    let email = match store::run(&state.pool, move |conn| sign_in::peek_link(conn, key.secret(), &lookup, now)).await {
        Ok(Some(email)) => email,
        Ok(None) => return invalid_link(),
        Err(error) => return storage_failure(&error),
    };
    let (csrf_token, cookie) = csrf::issue(&req, &state);
    let page = MagicPage { csrf_token: &csrf_token, token: &token, email: &email };
    render_with_cookies(StatusCode::OK, &page, cookies(cookie))
}

async fn magic_submit(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let form = match pages::read_csrf_form(&req, &state, payload).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let Some(token) = form.get("token").filter(|t| sign_in::is_plausible_token(t)).map(str::to_string) else {
        audit_sign_in_failure(&req, &state, "invalid_link").await;
        return invalid_link();
    };
    let key = state.magic_link_key.clone();
    let open_signup = state.config.sign_in.open_signup;
    let now = store::unix_now();
    let redeemed = match store::run(&state.pool, move |conn| {
        Ok(sign_in::redeem_link(conn, key.secret(), &token, open_signup, now))
    })
    .await
    {
        Ok(Ok(redeemed)) => redeemed,
        Ok(Err(error)) => return service_failure(&error),
        Err(error) => return storage_failure(&error),
    };
    let failure = match &redeemed {
        Redeemed::SignIn { .. } => None,
        Redeemed::InvalidLink => Some("invalid_link"),
        Redeemed::Disabled => Some("account_disabled"),
        Redeemed::NoAccount => Some("no_account"),
    };
    if let Some(reason) = failure {
        audit_sign_in_failure(&req, &state, reason).await;
    }
    let (user, return_to) = match redeemed {
        Redeemed::SignIn { user, return_to } => (user, return_to),
        Redeemed::InvalidLink => {
            state.metrics.authentication_failed(AuthFailure::MagicLink);
            return invalid_link();
        }
        Redeemed::Disabled => {
            return error_page(
                StatusCode::FORBIDDEN,
                "Account disabled",
                "This account is disabled. Contact the administrator of this service.",
            );
        }
        Redeemed::NoAccount => {
            return error_page_with_link(
                StatusCode::BAD_REQUEST,
                "No account",
                "There is no account for this address any more.",
                "/login",
                "Back to sign-in",
            );
        }
    };

    // A new session id on every sign-in: the one the browser had (if any) ends here; its
    // removal cookie is not needed, since the new cookie has the same name.
    session::end_current(&req, &state).await;
    // An enrolled user always needs the second factor: MFA_ENABLED only gates new enrolments, so
    // a configuration change can never quietly downgrade an account to email only.
    let mfa_pending = user.mfa_enabled;
    let origin = super::request_meta::of(&req);
    // A session waiting for its second factor is short-lived: the code is typed within minutes.
    let max_age =
        if mfa_pending { PENDING_MFA_SECS.min(session::max_age_secs(&state)) } else { session::max_age_secs(&state) };
    let started = store::run(&state.pool, move |conn| {
        session_service::start(conn, &user, &["email"], mfa_pending, max_age, &origin, now)
    })
    .await;
    let id = match started {
        Ok(Some(id)) => id,
        // Disabled or deleted between the link's check and now.
        Ok(None) => {
            audit_sign_in_failure(&req, &state, "account_disabled").await;
            return error_page(
                StatusCode::FORBIDDEN,
                "Account disabled",
                "This account is disabled. Contact the administrator of this service.",
            );
        }
        Err(error) => return storage_failure(&error),
    };
    let return_to = safe_return_to(return_to.as_deref());
    let location =
        if mfa_pending { mfa_location(return_to.as_deref()) } else { return_to.unwrap_or_else(|| "/".into()) };
    see_other_with_cookies(&location, vec![session::session_cookie(&state, &id)])
}

// ---- /login/mfa ------------------------------------------------------------------------------

async fn mfa_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let query = match pages::query_form(&req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let return_to = safe_return_to(query.get("return_to"));
    match session::browser_state(&req, &state).await {
        BrowserState::Pending(..) => {}
        BrowserState::SignedIn(_) => return pages::see_other(return_to.as_deref().unwrap_or("/")),
        BrowserState::SignedOut => return session::login_redirect(return_to.as_deref().unwrap_or("/"), false),
    }
    mfa_form(&req, &state, StatusCode::OK, return_to.as_deref(), None)
}

fn mfa_form(
    req: &HttpRequest,
    state: &AppState,
    status: StatusCode,
    return_to: Option<&str>,
    error: Option<&str>,
) -> HttpResponse {
    let (csrf_token, cookie) = csrf::issue(req, state);
    render_with_cookies(status, &MfaPage { csrf_token: &csrf_token, return_to, error }, cookies(cookie))
}

fn locked_message(until: i64, now: i64) -> String {
    let minutes = ((until - now).max(1) + 59) / 60;
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    format!("Too many wrong codes. For your security, try again in {minutes} {unit}.")
}

async fn mfa_submit(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let form = match pages::read_csrf_form(&req, &state, payload).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let return_to = safe_return_to(form.get("return_to"));
    let Some((pending, user)) = session::pending(&req, &state).await else {
        return session::login_redirect(return_to.as_deref().unwrap_or("/"), false);
    };
    let code = form.get("code").unwrap_or_default();
    if code.len() > MAX_CODE_LEN {
        return mfa_form(&req, &state, StatusCode::BAD_REQUEST, return_to.as_deref(), Some("That code is not valid."));
    }
    let code = code.to_string();
    let now = store::unix_now();
    let max_age = session::max_age_secs(&state);
    let origin = super::request_meta::of(&req);
    let outcome = store::run(&state.pool, move |conn| {
        let verified = mfa_service::verify(conn, &user.user_id, &code, now);
        if let Some(event) = mfa_event(&user.user_id, &verified) {
            store::audit::record(conn, &event.from_request(&origin), now)?;
        }
        let verified = match verified {
            Ok(verified) => verified,
            Err(MfaServiceError::Store(error)) => return Err(error),
            Err(error) => return Ok(Err(error)),
        };
        let amr: &[&str] = match verified.method {
            Method::Totp => &["email", "mfa", "otp"],
            Method::RecoveryCode => &["email", "mfa"],
        };
        session_service::complete_mfa(conn, &pending, &user, amr, max_age, now).map(Ok)
    })
    .await;
    match outcome {
        Ok(Ok(Some(id))) => {
            see_other_with_cookies(return_to.as_deref().unwrap_or("/"), vec![session::session_cookie(&state, &id)])
        }
        Ok(Ok(None)) => session::login_redirect(return_to.as_deref().unwrap_or("/"), false),
        Ok(Err(MfaServiceError::Locked { until })) => mfa_form(
            &req,
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            return_to.as_deref(),
            Some(&locked_message(until, now)),
        ),
        Ok(Err(MfaServiceError::InvalidCode)) => {
            state.metrics.authentication_failed(AuthFailure::Mfa);
            mfa_form(
                &req,
                &state,
                StatusCode::BAD_REQUEST,
                return_to.as_deref(),
                Some("That code is not valid. Enter the current code from your authenticator app."),
            )
        }
        Ok(Err(MfaServiceError::CodeReused)) => {
            state.metrics.authentication_failed(AuthFailure::Mfa);
            mfa_form(
                &req,
                &state,
                StatusCode::BAD_REQUEST,
                return_to.as_deref(),
                Some("That code was already used. Wait for the next one."),
            )
        }
        Ok(Err(MfaServiceError::NotEnrolled | MfaServiceError::NotFound(_))) => {
            // Reset or deleted meanwhile: start again from the magic link.
            let removal = session::end_current(&req, &state).await;
            see_other_with_cookies("/login", vec![removal])
        }
        Ok(Err(error)) => service_failure(&error),
        Err(error) => storage_failure(&error),
    }
}

/// `user.mfa_verified` or `user.mfa_failed` for the outcome of a second-factor entry (none when
/// there was nothing to check: not enrolled, or a storage failure).
fn mfa_event(user_id: &str, verified: &Result<mfa_service::Verified, MfaServiceError>) -> Option<AuditEvent> {
    let (action, details) = match verified {
        Ok(verified) => {
            let method = match verified.method {
                Method::Totp => "totp",
                Method::RecoveryCode => "recovery_code",
            };
            (AuditAction::UserMfaVerified, serde_json::json!({ "method": method }))
        }
        Err(MfaServiceError::InvalidCode) => {
            (AuditAction::UserMfaFailed, serde_json::json!({ "reason": "invalid_code" }))
        }
        Err(MfaServiceError::CodeReused) => {
            (AuditAction::UserMfaFailed, serde_json::json!({ "reason": "code_reused" }))
        }
        Err(MfaServiceError::Locked { until }) => {
            (AuditAction::UserMfaFailed, serde_json::json!({ "reason": "locked", "locked_until": until }))
        }
        Err(_) => return None,
    };
    let event = AuditEvent::by_user(action, user_id).subject(user_id).details(details);
    Some(if action == AuditAction::UserMfaFailed { event.failed() } else { event })
}

// ---- /login/mfa/setup ------------------------------------------------------------------------

async fn mfa_setup_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if !state.config.mfa.enabled {
        return mfa_unavailable();
    }
    let Some(signed_in) = session::current(&req, &state).await else {
        return session::login_redirect("/login/mfa/setup", false);
    };
    if signed_in.user.mfa_enabled {
        return pages::render(StatusCode::OK, &MfaEnabledPage { codes: Vec::new() });
    }
    setup_form(&req, &state, &signed_in.user.user_id, StatusCode::OK, None).await
}

async fn setup_form(
    req: &HttpRequest,
    state: &AppState,
    user_id: &str,
    status: StatusCode,
    error: Option<&str>,
) -> HttpResponse {
    let user_id = user_id.to_string();
    let issuer = state.config.mfa.issuer.clone();
    let now = store::unix_now();
    let enrolment =
        store::run(&state.pool, move |conn| Ok(mfa_service::begin_enrolment(conn, &user_id, &issuer, now))).await;
    let enrolment = match enrolment {
        Ok(Ok(enrolment)) => enrolment,
        Ok(Err(MfaServiceError::AlreadyEnrolled)) => {
            return pages::render(StatusCode::OK, &MfaEnabledPage { codes: Vec::new() });
        }
        Ok(Err(error)) => return service_failure(&error),
        Err(error) => return storage_failure(&error),
    };
    let (csrf_token, cookie) = csrf::issue(req, state);
    let page = MfaSetupPage {
        csrf_token: &csrf_token,
        qr_svg: &enrolment.qr_svg,
        secret_base32: enrolment.secret_base32.secret(),
        error,
    };
    render_with_cookies(status, &page, cookies(cookie))
}

async fn mfa_setup_submit(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    if !state.config.mfa.enabled {
        return mfa_unavailable();
    }
    let form = match pages::read_csrf_form(&req, &state, payload).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let Some(signed_in) = session::current(&req, &state).await else {
        return session::login_redirect("/login/mfa/setup", false);
    };
    let user_id = signed_in.user.user_id.clone();
    let code = form.get("code").unwrap_or_default();
    if code.len() > MAX_CODE_LEN {
        return setup_form(&req, &state, &user_id, StatusCode::BAD_REQUEST, Some("That code is not valid.")).await;
    }
    let code = code.to_string();
    let now = store::unix_now();
    let confirm_user = user_id.clone();
    let outcome =
        store::run(&state.pool, move |conn| Ok(mfa_service::confirm_enrolment(conn, &confirm_user, &code, now))).await;
    match outcome {
        Ok(Ok(codes)) => {
            let codes: Vec<&str> = codes.iter().map(|c| c.secret().as_str()).collect();
            pages::render(StatusCode::OK, &MfaEnabledPage { codes })
        }
        Ok(Err(MfaServiceError::InvalidCode | MfaServiceError::CodeReused)) => {
            let message = "That code is not valid. Enter the current code from your authenticator app.";
            setup_form(&req, &state, &user_id, StatusCode::BAD_REQUEST, Some(message)).await
        }
        Ok(Err(MfaServiceError::Locked { until })) => {
            setup_form(&req, &state, &user_id, StatusCode::TOO_MANY_REQUESTS, Some(&locked_message(until, now))).await
        }
        Ok(Err(MfaServiceError::AlreadyEnrolled)) => {
            pages::render(StatusCode::OK, &MfaEnabledPage { codes: Vec::new() })
        }
        Ok(Err(MfaServiceError::NoPendingEnrolment)) => pages::see_other("/login/mfa/setup"),
        Ok(Err(error)) => service_failure(&error),
        Err(error) => storage_failure(&error),
    }
}

// ---- /logout ---------------------------------------------------------------------------------

async fn logout_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    // An application's RP-initiated logout (`end_session_endpoint`) gets its own confirmation.
    let query = match pages::query_form(&req) {
        Ok(query) => query,
        Err(response) => return response,
    };
    match end_session::request(&state, &query).await {
        Ok(Some(end)) => return end_session::confirm(&req, &state, &end).await,
        Ok(None) => {}
        Err(response) => return response,
    }
    let signed_in = session::current(&req, &state).await;
    let (csrf_token, cookie) = csrf::issue(&req, &state);
    let page = LogoutPage { csrf_token: &csrf_token, email: signed_in.as_ref().map(|s| s.user.email.as_str()) };
    render_with_cookies(StatusCode::OK, &page, cookies(cookie))
}

async fn logout_submit(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let form = match pages::read_csrf_form(&req, &state, payload).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let end = match end_session::request(&state, &form).await {
        Ok(end) => end,
        Err(response) => return response,
    };
    let removal = session::end_current(&req, &state).await;
    if let Some(back) = end.as_ref().and_then(|end| end_session::after_sign_out(end, removal.clone())) {
        return back;
    }
    render_with_cookies(StatusCode::OK, &SignedOutPage, vec![removal])
}
