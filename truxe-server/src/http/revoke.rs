//! `POST /oauth-provider/revoke` (RFC 7009): a client revokes a token issued to it.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::token::{Call, audit_refusal, client_credentials, read_form, refused};
use crate::oauth::OAuthError;
use crate::service::token::{self, Revocation, revoke as service};

pub async fn revoke(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    match handle(&req, &state, payload).await {
        // RFC 7009 §2.2: 200 whether or not there was anything to revoke.
        Ok(_) => HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).finish(),
        Err(error) => refused(&state, &error),
    }
}

async fn handle(req: &HttpRequest, state: &AppState, payload: web::Payload) -> Result<Revocation, OAuthError> {
    let form = read_form(req, payload).await?;
    let credentials = audit_refusal(req, state, client_credentials(req, &form), None, "malformed_credentials").await?;
    // `token_type_hint` is only a hint (RFC 7009 §2.1): every type we issue is tried, and an
    // unknown hint does not make a token unrevocable. A refresh token revokes its whole grant.
    let token = form.require("token")?.to_string();
    let client_id = Some(credentials.client_id());
    audit_refusal(req, state, token::precheck(&credentials), client_id, "implausible_client_id").await?;
    let call = Call::new(req, state)?;
    call.run(state, move |conn, ctx| service::revoke(conn, ctx, &credentials, &token)).await
}
