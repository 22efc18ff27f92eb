//! `POST /login/consents`: a signed-in user withdraws the consent given to an application (the
//! list with its "Withdraw" buttons is on `/`).

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::pages::{self};
use super::session;
use crate::service::consents as consent_service;
use crate::store;

pub async fn withdraw(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let form = match pages::read_csrf_form(&req, &state, payload).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let Some(signed_in) = session::current(&req, &state).await else {
        return session::login_redirect("/", false);
    };
    let Some(client_id) = form.get("client_id").map(str::to_string) else {
        return pages::see_other("/");
    };
    let user_id = signed_in.user.user_id.clone();
    let actor = format!("user:{user_id}");
    let now = store::unix_now();
    match store::run(&state.pool, move |conn| consent_service::withdraw(conn, &user_id, &client_id, &actor, now)).await
    {
        Ok(_) => pages::see_other("/"),
        Err(error) => pages::storage_failure(&error),
    }
}
