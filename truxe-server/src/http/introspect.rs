//! `POST /oauth-provider/introspect` (RFC 7662): for authenticated confidential clients.

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::error::oauth_error_response;
use super::token::{Call, basic_attempted, client_credentials, no_store_json, read_form};
use crate::oauth::OAuthError;
use crate::service::tokens::{self, Introspection};

pub async fn introspect(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let basic = basic_attempted(&req);
    match handle(&req, &state, payload).await {
        Ok(introspection) => no_store_json(&introspection),
        Err(error) => oauth_error_response(&error, basic),
    }
}

async fn handle(req: &HttpRequest, state: &AppState, payload: web::Payload) -> Result<Introspection, OAuthError> {
    let form = read_form(req, payload).await?;
    let credentials = client_credentials(req, &form)?;
    // `token_type_hint` is optional and only an optimisation (RFC 7662 §2.1). Access tokens are
    // introspected; a refresh token is only ever used by its own client at the token endpoint,
    // so it is answered `{"active": false}` like any token that is not an active access token.
    let token = form.require("token")?.to_string();
    tokens::precheck(&credentials)?;
    let call = Call::new(req, state)?;
    call.run(state, move |conn, ctx| tokens::introspect(conn, ctx, &credentials, &token)).await
}
