//! The client admin API under `/oauth-provider/clients`, behind `Authorization: Bearer $ADMIN_TOKEN`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{HttpRequest, HttpResponse, middleware, web};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::json_error;
use super::request_meta::RequestMeta;
use crate::model::client::is_plausible_client_id;
use crate::service::clients::{
    self as service, ClientError, ClientInput, ClientPatch, Context, Rules, ValidationError,
};
use crate::store;

/// Larger bodies get a 413 before any parsing; a registration is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = super::body::ADMIN_LIMIT;

const ACTOR: &str = "admin";

/// The protection space of the admin token (`WWW-Authenticate: Bearer realm=…`).
const REALM: &str = "truxe-admin";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/oauth-provider/clients")
            // Registered first, so it runs inside the no-store wrapper: every answer, the 401s
            // included, carries the header.
            .wrap(middleware::from_fn(require_admin_token))
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
            .service(
                web::resource("")
                    .route(web::post().to(create))
                    .route(web::get().to(list))
                    .default_service(web::to(|| method_not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/{client_id}")
                    .route(web::get().to(show))
                    .route(web::patch().to(update))
                    .route(web::delete().to(delete))
                    .default_service(web::to(|| method_not_allowed("GET, PATCH, DELETE"))),
            )
            .service(
                web::resource("/{client_id}/regenerate-secret")
                    .route(web::post().to(regenerate_secret))
                    .default_service(web::to(|| method_not_allowed("POST"))),
            )
            .default_service(web::to(not_found)),
    );
}

/// Everything under the scope needs the admin token, checked before the body is read. A
/// refusal is a 401 with a Bearer challenge (RFC 9110 §15.5.2, RFC 6750 §3): without a token
/// (or with another scheme) just the realm, with a wrong one also `error="invalid_token"`, and
/// nothing more either way.
async fn require_admin_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let expected = state.as_ref().map(|state| state.admin_token.secret().clone());
    let presented = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token);
    let (challenge, error, description) = match (expected, presented) {
        (Some(expected), Some(presented)) if tokens_match(presented, &expected) => {
            return Ok(next.call(req).await?.map_into_left_body());
        }
        (_, Some(_)) => {
            if let Some(state) = &state {
                state.metrics.authentication_failed(crate::metrics::AuthFailure::AdminToken);
            }
            (
                format!(r#"Bearer realm="{REALM}", error="invalid_token""#),
                "invalid_token",
                "the admin token is not valid",
            )
        }
        (_, None) => (
            format!(r#"Bearer realm="{REALM}""#),
            "unauthorized",
            "the admin API needs the admin token: Authorization: Bearer $ADMIN_TOKEN",
        ),
    };
    let response = HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, challenge))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "error": error, "error_description": description }));
    Ok(req.into_response(response).map_into_right_body())
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Constant time whatever the lengths: the digests are compared, never the tokens.
fn tokens_match(presented: &str, expected: &str) -> bool {
    let (a, b) = (openssl::sha::sha256(presented.as_bytes()), openssl::sha::sha256(expected.as_bytes()));
    openssl::memcmp::eq(&a, &b)
}

/// What the service needs, owned, so that it can move onto a blocking thread.
struct Request {
    rules: Arc<Rules>,
    secret_key: Vec<u8>,
    now: i64,
    meta: RequestMeta,
}

impl Request {
    fn new(req: &HttpRequest, state: &AppState) -> Self {
        Request {
            rules: state.rules.clone(),
            secret_key: state.client_secret_key.secret().clone(),
            now: store::unix_now(),
            meta: super::request_meta::of(req),
        }
    }

    fn context(&self) -> Context<'_> {
        Context { rules: &self.rules, secret_key: &self.secret_key, now: self.now, actor: ACTOR, request: &self.meta }
    }
}

async fn create(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let input: ClientInput = match read_json(&req, payload).await {
        Ok(Some(input)) => input,
        Ok(None) => return invalid(&ValidationError::body("a JSON object is required as the request body")),
        Err(response) => return response,
    };
    let request = Request::new(&req, &state);
    let result = run(&state, move |conn| service::create(conn, &request.context(), input)).await;
    match result {
        Ok(created) => {
            state.clients.changed(&created.client.client_id).await;
            tracing::info!(client_id = %created.client.client_id, "client registered");
            HttpResponse::Created()
                .insert_header((header::LOCATION, format!("/oauth-provider/clients/{}", created.client.client_id)))
                .json(created.body())
        }
        Err(error) => error_response(error),
    }
}

async fn list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (after, limit) = match list_query(req.query_string()) {
        Ok(query) => query,
        Err(error) => return invalid(&error),
    };
    match run(&state, move |conn| service::list(conn, after.as_deref(), limit)).await {
        Ok(page) => HttpResponse::Ok().json(page),
        Err(error) => error_response(error),
    }
}

/// `?after=cl_…&limit=N`; an unknown or repeated parameter is an error rather than ignored.
fn list_query(query: &str) -> Result<(Option<String>, Option<i64>), ValidationError> {
    let (mut after, mut limit) = (None, None);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "after" => &mut after,
            "limit" => &mut limit,
            other => {
                return Err(ValidationError::field(other, "unknown query parameter (known: after, limit)"));
            }
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(ValidationError::field(name, "given more than once"));
        }
    }
    let limit = limit
        .map(|v| v.parse::<i64>().map_err(|_| ValidationError::field("limit", "must be a whole number from 1 to 200")))
        .transpose()?;
    Ok((after, limit))
}

async fn show(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(client_id) = client_id(&req) else {
        return not_found().await;
    };
    match run(&state, move |conn| service::get(conn, &client_id)).await {
        Ok(client) => HttpResponse::Ok().json(client),
        Err(error) => error_response(error),
    }
}

async fn update(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let Some(client_id) = client_id(&req) else {
        return not_found().await;
    };
    let patch: ClientPatch = match read_json(&req, payload).await {
        Ok(Some(patch)) => patch,
        Ok(None) => return invalid(&ValidationError::body("a JSON object is required as the request body")),
        Err(response) => return response,
    };
    let request = Request::new(&req, &state);
    let changed_id = client_id.clone();
    let result = run(&state, move |conn| service::update(conn, &request.context(), &client_id, patch)).await;
    // Also on failure: the change may have been committed before the error.
    state.clients.changed(&changed_id).await;
    match result {
        Ok(client) => HttpResponse::Ok().json(client),
        Err(error) => error_response(error),
    }
}

async fn delete(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(client_id) = client_id(&req) else {
        return not_found().await;
    };
    let request = Request::new(&req, &state);
    let logged_id = client_id.clone();
    let result = run(&state, move |conn| service::delete(conn, &request.context(), &client_id)).await;
    state.clients.changed(&logged_id).await;
    match result {
        Ok(()) => {
            tracing::info!(client_id = %logged_id, "client deleted");
            HttpResponse::NoContent().finish()
        }
        Err(error) => error_response(error),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RegenerateBody {
    /// How long the replaced secret keeps working (0 to 30 days; default 0).
    #[serde(default)]
    grace_seconds: Option<u64>,
}

async fn regenerate_secret(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let Some(client_id) = client_id(&req) else {
        return not_found().await;
    };
    let body: RegenerateBody = match read_json(&req, payload).await {
        Ok(body) => body.unwrap_or_default(),
        Err(response) => return response,
    };
    let grace = Duration::from_secs(body.grace_seconds.unwrap_or(0));
    let request = Request::new(&req, &state);
    let changed_id = client_id.clone();
    let result = run(&state, move |conn| service::regenerate_secret(conn, &request.context(), &client_id, grace)).await;
    state.clients.changed(&changed_id).await;
    match result {
        Ok(rotated) => {
            tracing::info!(client_id = %rotated.client.client_id, grace_seconds = grace.as_secs(), "client secret rotated");
            HttpResponse::Ok().json(rotated.body())
        }
        Err(error) => error_response(error),
    }
}

/// The `{client_id}` path segment, when it could name a client at all; anything else (NUL
/// bytes, quotes, kilobytes of text) is a plain 404 without a database query.
fn client_id(req: &HttpRequest) -> Option<String> {
    let id = req.match_info().get("client_id")?;
    is_plausible_client_id(id).then(|| id.to_string())
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`]; `Ok(None)` for an empty one.
async fn read_json<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Option<T>, HttpResponse> {
    check_content_type(req).map_err(|e| invalid(&e))?;
    let body = match super::body::read_any(req, payload, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(super::body::BodyError::TooLarge { .. }) => return Err(too_large()),
        Err(error) => return Err(invalid(&ValidationError::body(error.to_string()))),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    service::parse_json(&body).map(Some).map_err(|e| invalid(&e))
}

/// JSON, or no type at all. `application/x-www-form-urlencoded` is let through too because
/// it is what `curl -d` sends when `-H 'Content-Type: application/json'` is forgotten (as in
/// the deployment guide's own PATCH example); the body must still be JSON.
fn check_content_type(req: &HttpRequest) -> Result<(), ValidationError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let json = essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json || essence == "application/x-www-form-urlencoded" {
        Ok(())
    } else {
        Err(ValidationError::body(format!(
            "unsupported Content-Type {:?}: send application/json",
            String::from_utf8_lossy(value.as_bytes())
        )))
    }
}

async fn run<T, F>(state: &AppState, work: F) -> Result<T, ClientError>
where
    T: Send + 'static,
    F: FnOnce(&mut store::AnyConnection) -> Result<T, ClientError> + Send + 'static,
{
    store::run(&state.pool, move |conn| Ok(work(conn))).await?
}

fn error_response(error: ClientError) -> HttpResponse {
    match error {
        ClientError::Invalid(error) => invalid(&error),
        ClientError::NotFound => not_found_response(),
        ClientError::Store(error) => super::error::storage_failure_json(&error),
    }
}

fn invalid(error: &ValidationError) -> HttpResponse {
    let mut body = json!({ "error": "invalid_request", "error_description": error.to_string() });
    if let Some(field) = &error.field {
        body["field"] = json!(field);
    }
    HttpResponse::BadRequest().json(body)
}

fn too_large() -> HttpResponse {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request",
        &format!("the request body is larger than {} KiB", MAX_BODY_BYTES / 1024),
    )
}

fn not_found_response() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "not_found" }))
}

async fn not_found() -> HttpResponse {
    not_found_response()
}

async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = HttpResponse::MethodNotAllowed().json(json!({ "error": "method_not_allowed" }));
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert!(tokens_match("adm_x", "adm_x"));
        assert!(!tokens_match("adm_x", "adm_y"));
        assert!(!tokens_match("", "adm_x"));
    }

    #[test]
    fn list_queries() {
        assert_eq!(list_query(""), Ok((None, None)));
        assert_eq!(list_query("after=cl_a&limit=10"), Ok((Some("cl_a".into()), Some(10))));
        for (query, field) in [("limit=x", "limit"), ("limit=1&limit=2", "limit"), ("page=2", "page")] {
            assert_eq!(list_query(query).err().and_then(|e| e.field).as_deref(), Some(field), "{query}");
        }
    }
}
