//! Server-rendered HTML pages: security headers, template rendering, error pages and the
//! bounded form reading every page shares. Templates live in `truxe-server/templates/`.

use actix_web::cookie::Cookie;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use askama::Template;

use crate::oauth::form::Form;

/// Page forms carry an email address, a code, a token and a return path: a few hundred bytes.
/// Anything beyond this is refused unread.
pub const MAX_FORM_BYTES: usize = super::body::FORM_LIMIT;

/// Every HTML response's policy: no scripts, no external assets except images over https (client
/// logos) and `data:` images, never framed. There is deliberately no `form-action`: Chromium
/// applies it to every redirect that follows a form submission, and a sign-in or consent post
/// ends in a redirect to the client's registered redirect URI, which may be any origin.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; frame-ancestors 'none'; base-uri 'none'";

/// Adds what an HTML response carries beyond the headers of every answer
/// (`http::security_headers`: framing, sniffing, referrer, HSTS): the page policy, and no caching.
pub fn security_headers(builder: &mut HttpResponseBuilder) -> &mut HttpResponseBuilder {
    builder
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
}

/// An HTML body with the security headers.
pub fn html(status: StatusCode, body: String) -> HttpResponse {
    html_with_cookies(status, body, Vec::new())
}

pub fn html_with_cookies(status: StatusCode, body: String, cookies: Vec<Cookie<'static>>) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    security_headers(&mut builder);
    for cookie in cookies {
        builder.cookie(cookie);
    }
    builder.content_type("text/html; charset=utf-8").body(body)
}

/// Renders a template; a template that fails to render is logged and becomes a plain 500 page.
pub fn render<T: Template>(status: StatusCode, template: &T) -> HttpResponse {
    render_with_cookies(status, template, Vec::new())
}

/// Like [`render`], setting `cookies` on the response (e.g. the CSRF cookie from `csrf::issue`).
pub fn render_with_cookies<T: Template>(
    status: StatusCode,
    template: &T,
    cookies: Vec<Cookie<'static>>,
) -> HttpResponse {
    match template.render() {
        Ok(body) => html_with_cookies(status, body, cookies),
        Err(error) => {
            tracing::error!(%error, "cannot render a page template");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!DOCTYPE html><title>Error</title><p>Something went wrong. Please try again.</p>".to_string(),
            )
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    link_href: Option<&'a str>,
    link_label: &'a str,
}

/// An HTML error page with the security headers.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    render(status, &ErrorPage { title, message, link_href: None, link_label: "" })
}

/// An error page with one link onwards (e.g. "Back to sign-in").
pub fn error_page_with_link(status: StatusCode, title: &str, message: &str, href: &str, label: &str) -> HttpResponse {
    render(status, &ErrorPage { title, message, link_href: Some(href), link_label: label })
}

/// The answer to a form posted without a valid CSRF token: nothing was done.
pub fn csrf_failure() -> HttpResponse {
    error_page_with_link(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The form was sent without a valid security token, so nothing was done. This happens when a page \
         was open for a long time or cookies are blocked. Go back, reload the page and try again.",
        "/login",
        "Back to sign-in",
    )
}

/// The page for an unexpected failure (database down …); the cause is logged by the caller.
pub fn unavailable() -> HttpResponse {
    let mut response = error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The service cannot complete this request right now. Please try again in a moment.",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static(super::error::RETRY_AFTER_SECS));
    response
}

/// `303 See Other` (after a form post the browser follows with a GET), never cached.
pub fn see_other(location: &str) -> HttpResponse {
    see_other_with_cookies(location, Vec::new())
}

pub fn see_other_with_cookies(location: &str, cookies: Vec<Cookie<'static>>) -> HttpResponse {
    let mut builder = HttpResponse::SeeOther();
    builder.insert_header((header::LOCATION, location)).insert_header((header::CACHE_CONTROL, "no-store"));
    for cookie in cookies {
        builder.cookie(cookie);
    }
    builder.finish()
}

/// [`read_form`] for a form that changes something: its CSRF token must match the browser's
/// cookie, else the answer is the 403 page and nothing is done.
pub async fn read_csrf_form(
    req: &HttpRequest,
    state: &super::AppState,
    payload: web::Payload,
) -> Result<Form, HttpResponse> {
    let form = read_form(req, payload).await?;
    if !super::csrf::verify(req, state, form.get(super::csrf::FIELD)) {
        tracing::warn!(path = %req.path(), "form posted without a valid CSRF token");
        return Err(csrf_failure());
    }
    Ok(form)
}

/// A page form body: `application/x-www-form-urlencoded`, at most [`MAX_FORM_BYTES`], valid UTF-8,
/// every field at most once. Anything else is answered with an error page.
pub async fn read_form(req: &HttpRequest, payload: web::Payload) -> Result<Form, HttpResponse> {
    let body = read_body(req, payload).await?;
    Form::parse(&body).map_err(|_| bad_form())
}

/// The raw body of a page form, read with [`super::body::read`]; failures are error pages.
pub async fn read_body(req: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, HttpResponse> {
    use super::body::{self, BodyError};
    body::read(req, payload, body::FORM, MAX_FORM_BYTES).await.map_err(|error| match error {
        BodyError::UnsupportedType(_) => error_page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported form",
            "This page only accepts forms sent by a browser (application/x-www-form-urlencoded).",
        ),
        BodyError::TooLarge { .. } => error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Form too large",
            "The form sent was larger than this page accepts.",
        ),
        BodyError::TimedOut { .. } => error_page(
            StatusCode::REQUEST_TIMEOUT,
            "Form not received",
            "The form took too long to arrive. Please try again.",
        ),
        BodyError::Unreadable => bad_form(),
    })
}

/// A storage failure on a page: the classification of [`crate::http::error::storage_failure`]
/// as a page (503 when worth a retry, 500 otherwise), logged once there.
pub fn storage_failure(error: &crate::store::StoreError) -> HttpResponse {
    match super::error::storage_failure(error).code {
        crate::oauth::ErrorCode::TemporarilyUnavailable => unavailable(),
        _ => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The service could not complete this request. The error was logged.",
        ),
    }
}

/// The query string read with the same rules as a form (repeated parameters are refused).
// The error is the finished error page, returned straight from the handler; boxing it would only
// add noise at every call site.
#[allow(clippy::result_large_err)]
pub fn query_form(req: &HttpRequest) -> Result<Form, HttpResponse> {
    if req.query_string().len() > MAX_FORM_BYTES {
        return Err(error_page(StatusCode::URI_TOO_LONG, "Address too long", "The address of this page is too long."));
    }
    Form::parse(req.query_string().as_bytes()).map_err(|_| bad_form())
}

fn bad_form() -> HttpResponse {
    error_page_with_link(
        StatusCode::BAD_REQUEST,
        "Invalid request",
        "The request could not be read (a field was repeated or was not valid text).",
        "/login",
        "Back to sign-in",
    )
}
