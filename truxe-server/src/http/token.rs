//! `POST /oauth-provider/token`, and the request handling the token endpoint family shares
//! (introspection, revocation, userinfo): a bounded form body, client credentials, and one
//! blocking task for the use case with its [`Context`].

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::AppState;
use super::body::{self, BodyError};
use super::error::{oauth_error_response, storage_failure};
use super::rate_limit;
use super::request_meta::RequestMeta;
use crate::audit::AuditLog;
use crate::client_cache::ClientCache;
use crate::config::Config;
use crate::model::client::GrantType;
use crate::oauth::OAuthError;
use crate::oauth::client_auth::{self, ClientCredentials};
use crate::oauth::form::Form;
use crate::ratelimit::{Check, RouteKind};
use crate::service::token::{self, Context, PublicClients, TokenError, TokenRequest, client_credentials};
use crate::store::{self, AnyConnection, StoreError};

pub async fn token(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    match issue(&req, &state, payload).await {
        Ok((grant, response)) => {
            state.metrics.token_issued(grant);
            no_store_json(&response)
        }
        Err(Refused::OAuth(error)) => refused(&state, &error),
        Err(Refused::RateLimited(response)) => response,
    }
}

/// The error answer of an endpoint of the token family, counting failed client authentications.
pub(super) fn refused(state: &AppState, error: &OAuthError) -> HttpResponse {
    if error.code == crate::oauth::ErrorCode::InvalidClient {
        state.metrics.authentication_failed(crate::metrics::AuthFailure::Client);
    }
    oauth_error_response(error)
}

/// Why no token was issued: an OAuth error, or the client's own rate limit.
enum Refused {
    OAuth(OAuthError),
    RateLimited(HttpResponse),
}

impl From<OAuthError> for Refused {
    fn from(error: OAuthError) -> Self {
        Refused::OAuth(error)
    }
}

async fn issue(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
) -> Result<(GrantType, token::TokenResponse), Refused> {
    let form = read_form(req, payload).await?;
    let credentials = audit_refusal(req, state, client_credentials(req, &form), None, "malformed_credentials").await?;
    let request = TokenRequest::parse(&form)?;
    let grant = request.grant_type();
    let client_id = Some(credentials.client_id());
    audit_refusal(req, state, token::precheck(&credentials), client_id, "implausible_client_id").await?;
    if let Some(refusal) = client_limit(req, state, &credentials).await {
        return Err(Refused::RateLimited(refusal));
    }
    let call = Call::new(req, state)?;
    match request {
        // The hot path of machine clients: no connection is taken unless the client is not cached.
        TokenRequest::ClientCredentials { scope, resource } => {
            call.run_without_connection(move |ctx| {
                client_credentials::issue(ctx, &credentials, scope.as_deref(), resource.as_deref())
            })
            .await
        }
        request => call.run(state, move |conn, ctx| token::issue(conn, ctx, &credentials, &request)).await,
    }
    .map(|response| (grant, response))
    .map_err(Refused::OAuth)
}

/// The token endpoint's limit per client (`token-client`, the token endpoint's numbers keyed on
/// the client), so that one client cannot starve the others. Counted only for a client that
/// proved its secret: a bucket keyed on a client_id anyone may send would let anyone empty a
/// victim's bucket (public clients and failed authentications are held by the IP limits). The
/// kernel authenticates again; a cached client costs one HMAC here.
async fn client_limit(req: &HttpRequest, state: &AppState, credentials: &ClientCredentials) -> Option<HttpResponse> {
    if !state.config.rate_limit.enabled || credentials.secret().is_none() {
        return None;
    }
    let client_id = credentials.client_id().to_string();
    let clock = Instant::now();
    let client = match state.clients.get(&client_id, clock) {
        Some(client) => client,
        None => {
            let (clients, pool, id) = (state.clients.clone(), state.pool.clone(), client_id.clone());
            let loaded = tokio::task::spawn_blocking(move || {
                clients.get_or_load(&id, clock, || crate::service::clients::find(&mut *store::checkout(&pool)?, &id))
            })
            .await;
            // A failure to load is the kernel's to report, with its own mapping.
            loaded.ok()?.ok()??
        }
    };
    let secret_key = state.client_secret_key.secret();
    token::authenticate(Some(client), credentials, secret_key, store::unix_now(), PublicClients::Allowed).ok()?;
    let checks = [Check { policy: crate::ratelimit::policy::TOKEN_CLIENT, key: client_id.clone() }];
    let decision = state.limiter.check(&checks).await;
    if decision.allowed() {
        return None;
    }
    rate_limit::log_refusal(state, &decision, req, Some(&client_id)).await;
    Some(rate_limit::refusal(&state.limiter, &decision, RouteKind::OAuth))
}

/// `result`, auditing it on the way when it refuses the client (`invalid_client` before the
/// kernel: unreadable or implausible credentials) as `client.authentication_failed`, coalesced.
pub(super) async fn audit_refusal<T>(
    req: &HttpRequest,
    state: &AppState,
    result: Result<T, OAuthError>,
    client_id: Option<&str>,
    reason: &str,
) -> Result<T, OAuthError> {
    if let Err(error) = &result
        && error.code == crate::oauth::ErrorCode::InvalidClient
    {
        let (source, event) = token::failed_authentication(&super::request_meta::of(req), client_id, None, reason);
        if let Err(error) = state.audit.record_coalesced_async(source, event, store::unix_now()).await {
            tracing::error!(%error, "cannot record a failed client authentication");
        }
    }
    result
}

fn authorization(req: &HttpRequest) -> Option<&str> {
    // A header that is not visible ASCII cannot be valid Basic credentials; treat it as given
    // but unreadable so that it fails as malformed rather than as absent.
    req.headers().get(header::AUTHORIZATION).map(|value| value.to_str().unwrap_or("Basic !"))
}

pub(super) fn client_credentials(req: &HttpRequest, form: &Form) -> Result<ClientCredentials, OAuthError> {
    client_auth::extract(authorization(req), form)
}

/// The body of an OAuth endpoint: `application/x-www-form-urlencoded` (RFC 6749 §3.2), at most
/// [`body::OAUTH_LIMIT`], every parameter at most once.
pub(super) async fn read_form(req: &HttpRequest, payload: web::Payload) -> Result<Form, OAuthError> {
    match body::read(req, payload, body::FORM, body::OAUTH_LIMIT).await {
        Ok(body) => Form::parse(&body),
        Err(BodyError::UnsupportedType(_)) => {
            Err(OAuthError::invalid_request("the request body must be application/x-www-form-urlencoded"))
        }
        Err(error) => Err(OAuthError::invalid_request(error.to_string())),
    }
}

/// What a use case needs, owned, so that it can move to a blocking thread.
pub(super) struct Call {
    config: Arc<Config>,
    rules: Arc<crate::service::policy::Rules>,
    keys: crate::keyring::RequestKeys,
    secret_key: crate::secret::Secret<Vec<u8>>,
    now: i64,
    clock: Instant,
    meta: RequestMeta,
    clients: Arc<ClientCache>,
    shared: Option<Arc<crate::shared::SharedRedis>>,
    audit: Arc<AuditLog>,
    pool: store::Pool,
}

impl Call {
    pub(super) fn new(req: &HttpRequest, state: &AppState) -> Result<Self, OAuthError> {
        // One `now` for the key choice and the tokens' `iat`: a key signs from its `activates_at`.
        let now = store::unix_now();
        Ok(Self {
            config: state.config.clone(),
            rules: state.rules.clone(),
            keys: state.keys.request_keys(now),
            secret_key: state.client_secret_key.clone(),
            now,
            clock: Instant::now(),
            meta: super::request_meta::of(req),
            clients: state.clients.clone(),
            shared: state.shared.clone(),
            audit: state.audit.clone(),
            pool: state.pool.clone(),
        })
    }

    fn context(&self) -> Context<'_> {
        Context {
            config: &self.config,
            rules: &self.rules,
            keys: &self.keys,
            secret_key: self.secret_key.secret(),
            now: self.now,
            clock: self.clock,
            request: &self.meta,
            clients: &self.clients,
            shared: self.shared.as_ref(),
            audit: &self.audit,
            pool: &self.pool,
        }
    }

    /// Runs the use case on a blocking thread (database work and the signature both stay off
    /// the async workers) and maps its failures to OAuth errors.
    pub(super) async fn run<T, F>(self, state: &AppState, work: F) -> Result<T, OAuthError>
    where
        T: Send + 'static,
        F: FnOnce(&mut AnyConnection, &Context<'_>) -> Result<T, TokenError> + Send + 'static,
    {
        let result = store::run(&state.pool, move |conn| Ok(work(conn, &self.context()))).await;
        Self::outcome(result)
    }

    /// Like [`Call::run`], on a blocking thread (the signature stays off the async workers) but
    /// without taking a connection first: `work` takes one from `Context::pool` if it must.
    pub(super) async fn run_without_connection<T, F>(self, work: F) -> Result<T, OAuthError>
    where
        T: Send + 'static,
        F: FnOnce(&Context<'_>) -> Result<T, TokenError> + Send + 'static,
    {
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            work(&self.context())
        })
        .await
        .map_err(|_| StoreError::Cancelled);
        Self::outcome(result)
    }

    fn outcome<T>(result: Result<Result<T, TokenError>, StoreError>) -> Result<T, OAuthError> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(TokenError::OAuth(error))) => Err(error),
            Ok(Err(TokenError::Store(error))) | Err(error) => Err(storage_failure(&error)),
            Ok(Err(TokenError::Jwt(error))) => {
                tracing::error!(%error, "signing an access token failed");
                Err(OAuthError::server_error("internal error"))
            }
        }
    }
}

/// RFC 6749 §5.1: token responses must not be cached.
pub(super) fn no_store_json(body: &impl Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}
