//! `POST /oauth-provider/introspect` (RFC 7662): for authenticated confidential clients; who may
//! learn what is decided in `service::token::introspect`.

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::token::{Call, audit_refusal, client_credentials, no_store_json, read_form, refused};
use crate::oauth::OAuthError;
use crate::service::token::{self, Introspection, introspect as service};

pub async fn introspect(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    match handle(&req, &state, payload).await {
        Ok(introspection) => no_store_json(&introspection),
        Err(error) => refused(&state, &error),
    }
}

async fn handle(req: &HttpRequest, state: &AppState, payload: web::Payload) -> Result<Introspection, OAuthError> {
    let form = read_form(req, payload).await?;
    let credentials = audit_refusal(req, state, client_credentials(req, &form), None, "malformed_credentials").await?;
    // `token_type_hint` is optional and only a hint (RFC 7662 §2.1): every type is tried.
    let token = form.require("token")?.to_string();
    let client_id = Some(credentials.client_id());
    audit_refusal(req, state, token::precheck(&credentials), client_id, "implausible_client_id").await?;
    let call = Call::new(req, state)?;
    call.run(state, move |conn, ctx| service::introspect(conn, ctx, &credentials, &token)).await
}
