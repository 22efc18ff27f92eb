//! The HTTP layer: routes, shared state and middleware. Only actix code lives here.

mod admin;
mod authorize;
pub mod body;
pub mod client_ip;
mod consents;
pub mod cors;
pub mod csrf;
mod discovery;
mod end_session;
pub mod error;
pub mod health;
mod introspect;
mod jwks;
mod login;
pub mod metrics;
pub mod pages;
pub mod rate_limit;
pub mod request_id;
pub mod request_limits;
pub mod request_meta;
mod revoke;
pub mod security_headers;
pub mod session;
mod token;
mod userinfo;

use std::sync::Arc;

use actix_web::{HttpResponse, web};

use crate::config::Config;
use crate::secret::Secret;
use crate::store::{Backend, Pool, redis::RedisPool};

/// Everything a handler may need, built once at start.
pub struct AppState {
    pub config: Arc<Config>,
    /// The configuration's token policy (scopes, audiences, lifetimes), computed once.
    pub rules: Arc<crate::service::policy::Rules>,
    pub pool: Pool,
    pub backend: Backend,
    pub redis: Option<RedisPool>,
    /// Redis as shared state, behind its failure policy (`None` without `REDIS_URL`).
    pub shared: Option<Arc<crate::shared::SharedRedis>>,
    /// The signing keys shared through the database: the one that signs, the ones published.
    pub keys: Arc<crate::keyring::KeyRing>,
    pub admin_token: Secret<String>,
    /// HMAC key for client secrets at rest (table `server_secrets`), shared by every instance.
    pub client_secret_key: Secret<Vec<u8>>,
    /// Signs session cookies and CSRF tokens; derived from `SESSION_SECRET` (see `http::session`).
    pub session_key: Secret<Vec<u8>>,
    /// HMAC key for magic-link tokens at rest (table `server_secrets`).
    pub magic_link_key: Secret<Vec<u8>>,
    /// Magic-link mail: SMTP, or the log in development.
    pub mailer: Arc<crate::mail::Mailer>,
    /// Audit events written in the background (issued machine tokens).
    pub audit: Arc<crate::audit::AuditLog>,
    /// Clients recently read, for the token, introspection and revocation endpoints.
    pub clients: Arc<crate::client_cache::ClientCache>,
    /// Request rate limits (in process, or shared through Redis).
    pub limiter: Arc<crate::ratelimit::Limiter>,
    /// The last `/health/ready` answer, reused for [`health::READINESS_TTL`].
    pub readiness: health::ReadinessCache,
    /// The Prometheus registry behind `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    admin::routes(cfg);
    login::routes(cfg);
    cfg.route("/health", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready))
        // Resources (not bare routes) so that another method gets 405, not 404.
        .service(web::resource("/.well-known/openid-configuration").get(discovery::openid_configuration))
        .service(web::resource("/.well-known/oauth-authorization-server").get(discovery::oauth_authorization_server))
        .service(web::resource("/oauth-provider/jwks").get(jwks::jwks))
        .service(web::resource(authorize::AUTHORIZE_PATH).get(authorize::authorize_get).post(authorize::authorize_post))
        .service(web::resource("/oauth-provider/userinfo").get(userinfo::userinfo_get).post(userinfo::userinfo_post))
        .service(web::resource("/oauth-provider/token").post(token::token))
        .service(web::resource("/oauth-provider/introspect").post(introspect::introspect))
        .service(web::resource("/oauth-provider/revoke").post(revoke::revoke))
        .default_service(web::to(not_found));
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({ "error": "not_found" }))
}
