//! The HTTP layer: routes, shared state and middleware. Only actix code lives here.

pub mod error;
mod health;
pub mod request_id;

use std::sync::Arc;

use actix_web::{HttpResponse, web};

use crate::config::Config;
use crate::keys::SigningKey;
use crate::secret::Secret;
use crate::store::{Backend, Pool, redis::RedisPool};

/// Everything a handler may need, built once at start.
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: Pool,
    pub backend: Backend,
    pub redis: Option<RedisPool>,
    pub signing_key: Arc<SigningKey>,
    pub admin_token: Secret<String>,
    /// HMAC key for client secrets at rest (table `server_secrets`), shared by every instance.
    pub client_secret_key: Secret<Vec<u8>>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready))
        .default_service(web::to(not_found));
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({ "error": "not_found" }))
}
