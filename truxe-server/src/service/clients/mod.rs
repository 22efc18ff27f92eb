//! Client registration: the one validation path and the operations behind both the admin API
//! and `truxectl clients` (which may work on the database directly).
//!
//! - `input`: the registration JSON ([`ClientInput`], also the body of a PATCH);
//! - `validate`: the registration rules, checked against the server's [`Rules`];
//! - `uris`: what a redirect URI or a metadata URI may be;
//! - `view`: the client's JSON representation ([`ClientView`]);
//! - `secrets`: client ids, secrets and their rotation;
//! - here: the use cases (create, list, get, update, delete) and their audit trail.

mod input;
mod secrets;
#[cfg(test)]
mod tests;
mod uris;
mod validate;
mod view;

use diesel::Connection;

pub use self::input::{ClientInput, ClientPatch, parse_json};
pub use self::secrets::{MAX_SECRET_GRACE, authenticate_secret, generate_client_id, regenerate_secret};
pub use self::uris::{MAX_URI_BYTES, check_redirect_uri, check_web_uri};
pub use self::validate::{
    MAX_NAME_CHARS, MAX_REDIRECT_URIS, MAX_SCOPES, ValidationError, check_client_name, validate_input, validate_patch,
};
pub use self::view::{ClientView, Page, WithSecret, WithSecretBody};
use crate::model::client::{self as model, Client};
use crate::model::request::RequestMeta;
use crate::oauth::client_secret;
pub use crate::service::policy::Rules;
use crate::store::audit::{self, AuditAction, AuditEvent};
use crate::store::{self, AnyConnection, StoreError};

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("no client has this client_id")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for ClientError {
    fn from(error: diesel::result::Error) -> Self {
        ClientError::Store(StoreError::Query(error))
    }
}

/// Everything an operation needs besides the connection and its arguments.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The configuration registrations are checked against (scopes, audiences, lifetimes).
    pub rules: &'a Rules,
    /// The HMAC key client secrets are hashed under (`server_secrets`).
    pub secret_key: &'a [u8],
    pub now: i64,
    /// Who acts, for the audit trail: `admin` (the admin API) or `cli` (truxectl on the database).
    pub actor: &'a str,
    pub request: &'a RequestMeta,
}

/// The client a request names, or `None` when there is none — also for a `client_id` that cannot
/// be one of ours (SQL metacharacters, NUL bytes, kilobytes of text), which never reaches the
/// database.
pub fn find(conn: &mut AnyConnection, client_id: &str) -> Result<Option<Client>, StoreError> {
    if !model::is_plausible_client_id(client_id) {
        return Ok(None);
    }
    store::clients::find(conn, client_id)
}

fn find_existing(conn: &mut AnyConnection, client_id: &str) -> Result<Client, ClientError> {
    find(conn, client_id)?.ok_or(ClientError::NotFound)
}

fn event(ctx: &Context<'_>, action: AuditAction, client_id: &str, details: serde_json::Value) -> AuditEvent {
    AuditEvent::new(action, ctx.actor).subject(client_id).client(client_id).from_request(ctx.request).details(details)
}

/// Registers a client. A confidential one gets a secret, returned here once and stored only as
/// its HMAC.
pub fn create(conn: &mut AnyConnection, ctx: &Context<'_>, input: ClientInput) -> Result<WithSecret, ClientError> {
    let settings = validate_input(input, ctx.rules)?;
    let secret = settings.token_endpoint_auth_method.is_confidential().then(client_secret::generate);
    let client = Client {
        client_id: generate_client_id(),
        secret_hash: secret.as_ref().map(|s| client_secret::hash(ctx.secret_key, s.secret())),
        created_at: ctx.now,
        updated_at: ctx.now,
        ..settings
    };
    let view = ClientView::from(&client);
    conn.transaction::<_, ClientError, _>(|conn| {
        store::clients::insert(conn, &client)?;
        let details = serde_json::Value::Object(view.settings());
        audit::record(conn, &event(ctx, AuditAction::ClientCreated, &client.client_id, details), ctx.now)?;
        Ok(())
    })?;
    Ok(WithSecret { client: view, client_secret: secret })
}

/// Clients ordered by `client_id`, `limit` (1 to 200, default 50) after the `after` cursor.
pub fn list(conn: &mut AnyConnection, after: Option<&str>, limit: Option<i64>) -> Result<Page, ClientError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ValidationError::field("limit", format!("must be from 1 to {MAX_PAGE_SIZE}")).into());
    }
    if let Some(after) = after
        && !model::is_plausible_client_id(after)
    {
        return Err(ValidationError::field("after", "must be a client_id (the `next` of the previous page)").into());
    }
    // One extra row tells whether another page follows.
    let mut clients = store::clients::list(conn, after, limit + 1)?;
    let more = clients.len() as i64 > limit;
    clients.truncate(limit as usize);
    let next = if more { clients.last().map(|c| c.client_id.clone()) } else { None };
    Ok(Page { clients: clients.iter().map(ClientView::from).collect(), next })
}

pub fn get(conn: &mut AnyConnection, client_id: &str) -> Result<ClientView, ClientError> {
    Ok(ClientView::from(&find_existing(conn, client_id)?))
}

/// Applies a PATCH; the merged client must pass the registration rules.
pub fn update(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    client_id: &str,
    patch: ClientPatch,
) -> Result<ClientView, ClientError> {
    if !model::is_plausible_client_id(client_id) {
        return Err(ClientError::NotFound);
    }
    conn.transaction::<_, ClientError, _>(|conn| {
        store::clients::lock_for_update(conn, client_id)?;
        let before = find_existing(conn, client_id)?;
        let mut client = validate_patch(&before, patch, ctx.rules)?;
        let (old, new) = (ClientView::from(&before), ClientView::from(&client));
        let changed = old.changed_fields(&new);
        if changed.is_empty() {
            return Ok(old);
        }
        client.updated_at = ctx.now;
        if !store::clients::update_settings(conn, &client)? {
            return Err(ClientError::NotFound);
        }
        let mut details = serde_json::json!({ "changed": changed });
        if old.status != new.status {
            details["status"] = serde_json::json!({ "from": old.status, "to": new.status });
        }
        audit::record(conn, &event(ctx, AuditAction::ClientUpdated, client_id, details), ctx.now)?;
        Ok(ClientView::from(&client))
    })
}

/// Deletes a client; its codes, tokens and consents go with it (foreign keys cascade).
pub fn delete(conn: &mut AnyConnection, ctx: &Context<'_>, client_id: &str) -> Result<(), ClientError> {
    if !model::is_plausible_client_id(client_id) {
        return Err(ClientError::NotFound);
    }
    conn.transaction::<_, ClientError, _>(|conn| {
        store::clients::lock_for_update(conn, client_id)?;
        let client = find_existing(conn, client_id)?;
        if !store::clients::delete(conn, client_id)? {
            return Err(ClientError::NotFound);
        }
        let details = serde_json::json!({ "client_name": client.client_name });
        audit::record(conn, &event(ctx, AuditAction::ClientDeleted, client_id, details), ctx.now)?;
        Ok(())
    })
}
