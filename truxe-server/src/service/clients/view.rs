//! The client's JSON representation in the admin API and truxectl.

use serde::{Deserialize, Serialize};

use crate::model::client::Client;
use crate::secret::Secret;

/// What the admin API and truxectl show of a client: never a secret or a hash. Its fields but
/// the id and the timestamps ([`ClientView::settings`]) are a complete registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientView {
    pub client_id: crate::model::ClientId,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub allowed_scopes: Vec<String>,
    pub grant_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub require_pkce: bool,
    pub require_consent: bool,
    pub trusted: bool,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub tos_uri: Option<String>,
    pub policy_uri: Option<String>,
    // `default` on the fields added after the first release, so that truxectl reads the
    // answers of a server that predates them.
    #[serde(default)]
    pub allowed_audiences: Vec<String>,
    #[serde(default)]
    pub introspection_audiences: Vec<String>,
    /// Seconds; `null`: the server's lifetime.
    #[serde(default)]
    pub access_token_ttl: Option<i64>,
    #[serde(default)]
    pub refresh_token_ttl: Option<i64>,
    #[serde(default)]
    pub authorization_code_ttl: Option<i64>,
    pub status: String,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&Client> for ClientView {
    fn from(c: &Client) -> Self {
        ClientView {
            client_id: c.client_id.clone(),
            client_name: c.client_name.clone(),
            redirect_uris: c.redirect_uris.clone(),
            post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
            allowed_scopes: c.allowed_scopes.to_vec(),
            grant_types: c.grant_types.iter().map(|g| g.as_str().to_string()).collect(),
            token_endpoint_auth_method: c.token_endpoint_auth_method.as_str().to_string(),
            require_pkce: c.require_pkce,
            require_consent: c.require_consent,
            trusted: c.trusted,
            client_uri: c.client_uri.clone(),
            logo_uri: c.logo_uri.clone(),
            tos_uri: c.tos_uri.clone(),
            policy_uri: c.policy_uri.clone(),
            allowed_audiences: c.allowed_audiences.clone(),
            introspection_audiences: c.introspection_audiences.clone(),
            access_token_ttl: c.access_token_ttl,
            refresh_token_ttl: c.refresh_token_ttl,
            authorization_code_ttl: c.authorization_code_ttl,
            status: c.status.as_str().to_string(),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

impl ClientView {
    /// The fields a registration sets: the JSON object without `client_id`, `created_at` and
    /// `updated_at` (empty only if serialization failed, which it cannot for these types).
    pub fn settings(&self) -> serde_json::Map<String, serde_json::Value> {
        let Ok(serde_json::Value::Object(mut fields)) = serde_json::to_value(self) else {
            // A struct of strings, lists, numbers and flags always serializes to an object.
            return serde_json::Map::new();
        };
        for identity in ["client_id", "created_at", "updated_at"] {
            fields.remove(identity);
        }
        fields
    }

    /// The settings that differ between `self` and `other`, by name.
    pub fn changed_fields(&self, other: &ClientView) -> Vec<String> {
        let theirs = other.settings();
        self.settings()
            .into_iter()
            .filter(|(name, value)| theirs.get(name) != Some(value))
            .map(|(name, _)| name)
            .collect()
    }
}

/// A client with the secret it was just given (registration or rotation): the only time the
/// secret is ever shown.
#[derive(Debug, Clone)]
pub struct WithSecret {
    pub client: ClientView,
    /// `None` for a public client.
    pub client_secret: Option<Secret<String>>,
}

/// The JSON answer for [`WithSecret`]: the client's fields plus `client_secret`.
#[derive(Serialize)]
pub struct WithSecretBody<'a> {
    #[serde(flatten)]
    pub client: &'a ClientView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<&'a str>,
}

impl WithSecret {
    /// Reveals the secret: only for the one response that hands it over.
    pub fn body(&self) -> WithSecretBody<'_> {
        WithSecretBody { client: &self.client, client_secret: self.client_secret.as_ref().map(|s| s.secret().as_str()) }
    }
}

/// One page of [`super::list`]; `next` is the `after` cursor of the following page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub clients: Vec<ClientView>,
    pub next: Option<crate::model::ClientId>,
}
