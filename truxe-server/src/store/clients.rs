//! The `oauth_clients` table and its redirect URIs.

use diesel::prelude::*;

use super::schema::{oauth_client_redirect_uris as uris, oauth_clients as clients};
use super::{AnyConnection, StoreError};
use crate::model::ClientId;
use crate::model::client::{AuthMethod, Client, ClientStatus, GrantType};
use crate::oauth::scope::ScopeSet;

const REDIRECT: &str = "redirect";
const POST_LOGOUT: &str = "post_logout";

#[derive(Queryable, Selectable)]
#[diesel(table_name = clients)]
struct Row {
    client_id: ClientId,
    client_name: String,
    secret_hash: Option<String>,
    previous_secret_hash: Option<String>,
    previous_secret_expires_at: Option<i64>,
    token_endpoint_auth_method: String,
    grant_types: String,
    allowed_scopes: String,
    require_pkce: bool,
    require_consent: bool,
    trusted: bool,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    tos_uri: Option<String>,
    policy_uri: Option<String>,
    allowed_audiences: String,
    introspection_audiences: String,
    access_token_ttl: Option<i64>,
    refresh_token_ttl: Option<i64>,
    authorization_code_ttl: Option<i64>,
    status: String,
    created_at: i64,
    updated_at: i64,
}

/// A whole row, written only when a client is created: its identity and secrets, and the
/// settings.
#[derive(Insertable)]
#[diesel(table_name = clients, treat_none_as_null = true)]
struct WriteRow<'a> {
    client_id: &'a str,
    secret_hash: Option<&'a str>,
    previous_secret_hash: Option<&'a str>,
    previous_secret_expires_at: Option<i64>,
    created_at: i64,
    #[diesel(embed)]
    settings: SettingsRow<'a>,
}

/// The settings of a client: every column but its id, its creation time and its secrets, so
/// that an update of the settings never undoes a concurrent secret rotation.
#[derive(Insertable, AsChangeset)]
#[diesel(table_name = clients, treat_none_as_null = true)]
struct SettingsRow<'a> {
    client_name: &'a str,
    token_endpoint_auth_method: &'a str,
    grant_types: String,
    allowed_scopes: String,
    require_pkce: bool,
    require_consent: bool,
    trusted: bool,
    client_uri: Option<&'a str>,
    logo_uri: Option<&'a str>,
    tos_uri: Option<&'a str>,
    policy_uri: Option<&'a str>,
    allowed_audiences: String,
    introspection_audiences: String,
    access_token_ttl: Option<i64>,
    refresh_token_ttl: Option<i64>,
    authorization_code_ttl: Option<i64>,
    status: &'a str,
    updated_at: i64,
}

fn corrupt(client_id: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("oauth_clients row {client_id}: invalid {what}"))
}

/// Audience lists are stored as JSON arrays of strings.
fn audiences_column(audiences: &[String]) -> String {
    serde_json::Value::from(audiences).to_string()
}

impl Row {
    fn into_client(
        self,
        redirect_uris: Vec<String>,
        post_logout_redirect_uris: Vec<String>,
    ) -> Result<Client, StoreError> {
        let id = self.client_id.clone();
        let audiences =
            |text: &str, what: &str| serde_json::from_str::<Vec<String>>(text).map_err(|_| corrupt(&id, what));
        let ttl = |value: Option<i64>, what: &str| match value {
            Some(seconds) if seconds < 1 => Err(corrupt(&id, what)),
            other => Ok(other),
        };
        Ok(Client {
            token_endpoint_auth_method: AuthMethod::parse(&self.token_endpoint_auth_method)
                .ok_or_else(|| corrupt(&id, "token_endpoint_auth_method"))?,
            grant_types: self
                .grant_types
                .split_whitespace()
                .map(|g| GrantType::parse(g).ok_or_else(|| corrupt(&id, "grant_types")))
                .collect::<Result<_, _>>()?,
            allowed_scopes: ScopeSet::parse(&self.allowed_scopes).map_err(|_| corrupt(&id, "allowed_scopes"))?,
            allowed_audiences: audiences(&self.allowed_audiences, "allowed_audiences")?,
            introspection_audiences: audiences(&self.introspection_audiences, "introspection_audiences")?,
            access_token_ttl: ttl(self.access_token_ttl, "access_token_ttl")?,
            refresh_token_ttl: ttl(self.refresh_token_ttl, "refresh_token_ttl")?,
            authorization_code_ttl: ttl(self.authorization_code_ttl, "authorization_code_ttl")?,
            status: ClientStatus::parse(&self.status).ok_or_else(|| corrupt(&id, "status"))?,
            client_id: self.client_id,
            client_name: self.client_name,
            secret_hash: self.secret_hash,
            previous_secret_hash: self.previous_secret_hash,
            previous_secret_expires_at: self.previous_secret_expires_at,
            redirect_uris,
            post_logout_redirect_uris,
            require_pkce: self.require_pkce,
            require_consent: self.require_consent,
            trusted: self.trusted,
            client_uri: self.client_uri,
            logo_uri: self.logo_uri,
            tos_uri: self.tos_uri,
            policy_uri: self.policy_uri,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn write_row(c: &Client) -> WriteRow<'_> {
    WriteRow {
        client_id: &c.client_id,
        secret_hash: c.secret_hash.as_deref(),
        previous_secret_hash: c.previous_secret_hash.as_deref(),
        previous_secret_expires_at: c.previous_secret_expires_at,
        created_at: c.created_at,
        settings: settings_row(c),
    }
}

fn settings_row(c: &Client) -> SettingsRow<'_> {
    SettingsRow {
        client_name: &c.client_name,
        token_endpoint_auth_method: c.token_endpoint_auth_method.as_str(),
        grant_types: c.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(" "),
        allowed_scopes: c.allowed_scopes.to_string(),
        require_pkce: c.require_pkce,
        require_consent: c.require_consent,
        trusted: c.trusted,
        client_uri: c.client_uri.as_deref(),
        logo_uri: c.logo_uri.as_deref(),
        tos_uri: c.tos_uri.as_deref(),
        policy_uri: c.policy_uri.as_deref(),
        allowed_audiences: audiences_column(&c.allowed_audiences),
        introspection_audiences: audiences_column(&c.introspection_audiences),
        access_token_ttl: c.access_token_ttl,
        refresh_token_ttl: c.refresh_token_ttl,
        authorization_code_ttl: c.authorization_code_ttl,
        status: c.status.as_str(),
        updated_at: c.updated_at,
    }
}

fn load_uris(conn: &mut AnyConnection, ids: &[ClientId]) -> Result<Vec<(ClientId, String, String)>, StoreError> {
    Ok(uris::table
        .filter(uris::client_id.eq_any(ids))
        .select((uris::client_id, uris::purpose, uris::uri))
        .order((uris::client_id, uris::purpose, uris::uri))
        .load(conn)?)
}

fn attach(conn: &mut AnyConnection, rows: Vec<Row>) -> Result<Vec<Client>, StoreError> {
    let ids: Vec<ClientId> = rows.iter().map(|r| r.client_id.clone()).collect();
    let all_uris = load_uris(conn, &ids)?;
    rows.into_iter()
        .map(|row| {
            let pick = |purpose: &str| {
                all_uris
                    .iter()
                    .filter(|(id, p, _)| id == &row.client_id && p == purpose)
                    .map(|(_, _, uri)| uri.clone())
                    .collect::<Vec<_>>()
            };
            let (redirect, post_logout) = (pick(REDIRECT), pick(POST_LOGOUT));
            row.into_client(redirect, post_logout)
        })
        .collect()
}

pub fn find(conn: &mut AnyConnection, client_id: &str) -> Result<Option<Client>, StoreError> {
    let row: Option<Row> =
        clients::table.filter(clients::client_id.eq(client_id)).select(Row::as_select()).first(conn).optional()?;
    let Some(row) = row else {
        return Ok(None);
    };
    // `eq` rather than `attach`'s `eq_any`: a fixed statement that SQLite can keep prepared.
    let all: Vec<(String, String)> = uris::table
        .filter(uris::client_id.eq(client_id))
        .select((uris::purpose, uris::uri))
        .order((uris::purpose, uris::uri))
        .load(conn)?;
    let pick = |purpose: &str| all.iter().filter(|(p, _)| p == purpose).map(|(_, u)| u.clone()).collect::<Vec<_>>();
    let (redirect, post_logout) = (pick(REDIRECT), pick(POST_LOGOUT));
    row.into_client(redirect, post_logout).map(Some)
}

/// Clients ordered by id, after the `after` cursor.
pub fn list(conn: &mut AnyConnection, after: Option<&str>, limit: i64) -> Result<Vec<Client>, StoreError> {
    let mut query = clients::table.select(Row::as_select()).order(clients::client_id).limit(limit).into_boxed();
    if let Some(after) = after {
        query = query.filter(clients::client_id.gt(after.to_string()));
    }
    let rows = query.load(conn)?;
    attach(conn, rows)
}

fn insert_uris(conn: &mut AnyConnection, client: &Client) -> Result<(), StoreError> {
    let all = client
        .redirect_uris
        .iter()
        .map(|u| (REDIRECT, u))
        .chain(client.post_logout_redirect_uris.iter().map(|u| (POST_LOGOUT, u)));
    // One statement per URI: MultiConnection has no batch insert, and a client has few URIs.
    for (purpose, uri) in all {
        diesel::insert_into(uris::table)
            .values((uris::client_id.eq(&client.client_id), uris::purpose.eq(purpose), uris::uri.eq(uri)))
            .execute(conn)?;
    }
    Ok(())
}

/// Inserts a client with its URIs; call inside a transaction with the audit record.
pub fn insert(conn: &mut AnyConnection, client: &Client) -> Result<(), StoreError> {
    diesel::insert_into(clients::table).values(write_row(client)).execute(conn)?;
    insert_uris(conn, client)
}

/// Replaces a client's settings and URIs, never its secret columns (those only
/// [`update_secret`] writes); `false` when it does not exist.
pub fn update_settings(conn: &mut AnyConnection, client: &Client) -> Result<bool, StoreError> {
    let changed = diesel::update(clients::table.filter(clients::client_id.eq(&client.client_id)))
        .set(settings_row(client))
        .execute(conn)?;
    if changed == 0 {
        return Ok(false);
    }
    diesel::delete(uris::table.filter(uris::client_id.eq(&client.client_id))).execute(conn)?;
    insert_uris(conn, client)?;
    Ok(true)
}

/// Writes a client's secret columns (and `updated_at`) only; `false` when it does not exist.
pub fn update_secret(conn: &mut AnyConnection, client: &Client) -> Result<bool, StoreError> {
    let changed = diesel::update(clients::table.filter(clients::client_id.eq(&client.client_id)))
        .set((
            clients::secret_hash.eq(client.secret_hash.as_deref()),
            clients::previous_secret_hash.eq(client.previous_secret_hash.as_deref()),
            clients::previous_secret_expires_at.eq(client.previous_secret_expires_at),
            clients::updated_at.eq(client.updated_at),
        ))
        .execute(conn)?;
    Ok(changed > 0)
}

pub fn delete(conn: &mut AnyConnection, client_id: &str) -> Result<bool, StoreError> {
    diesel::delete(uris::table.filter(uris::client_id.eq(client_id))).execute(conn)?;
    Ok(diesel::delete(clients::table.filter(clients::client_id.eq(client_id))).execute(conn)? > 0)
}

/// Takes the client's row for writing before anything is read: a row lock on PostgreSQL (so
/// concurrent changes to one client queue up), the write lock on SQLite (where a transaction
/// that reads first fails at once, instead of waiting, when another connection writes).
pub fn lock_for_update(conn: &mut AnyConnection, client_id: &str) -> Result<(), StoreError> {
    diesel::update(clients::table.filter(clients::client_id.eq(client_id)))
        .set(clients::updated_at.eq(clients::updated_at))
        .execute(conn)?;
    Ok(())
}
