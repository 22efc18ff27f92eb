//! `GET /oauth-provider/jwks`: the published signing keys as a JWK Set (RFC 7517 §5): the
//! active one, a next one during a rotation, and retiring ones while tokens they signed live.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use super::AppState;

/// Resource servers cache the set for `JWT_JWKS_MAX_AGE` (see `keyring::KeySet::jwks`), which
/// the configuration keeps below `JWT_KEY_PUBLISH_DELAY`.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    let (set, max_age) = state.keys.snapshot().jwks(crate::store::unix_now());
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, format!("public, max-age={max_age}"))).json(set)
}
