//! `GET /oauth-provider/jwks`: the public signing key(s) as a JWK Set (RFC 7517 §5).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// Resource servers cache the set; five minutes keeps a key rotation visible soon enough.
pub const CACHE_CONTROL: &str = "public, max-age=300";

pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
        .json(json!({ "keys": [state.signing_key.public_jwk()] }))
}
