//! The registration JSON, as a registration (`POST`) and as a change (`PATCH`): one shape,
//! every field optional, so that a missing one gets its default or a field-level message from
//! the validation rather than a bare serde error.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

use super::validate::ValidationError;
use super::view::ClientView;
use crate::model::client::Client;

/// Registration as the deployment guide writes it, plus `grant_types`,
/// `token_endpoint_auth_method`, `post_logout_redirect_uris`, the audiences, the per-client
/// lifetimes and `status`.
///
/// As a `PATCH` ([`ClientPatch`]) absent fields stay as they are, and the four metadata URIs and
/// the three lifetimes may be `null` to clear them (lists are cleared with `[]`); in a
/// registration `null` there is the same as absent. `null` anywhere else is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientInput {
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub redirect_uris: Option<Vec<String>>,
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub post_logout_redirect_uris: Option<Vec<String>>,
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub allowed_scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub grant_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub require_pkce: Option<bool>,
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub require_consent: Option<bool>,
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub trusted: Option<bool>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<Option<String>>,
    /// RFC 8707 `resource` values the client may ask tokens for, besides the default audience.
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub allowed_audiences: Option<Vec<String>>,
    /// Audiences whose tokens this (confidential) client may introspect.
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub introspection_audiences: Option<Vec<String>>,
    /// Seconds, at most the server's `ACCESS_TOKEN_EXPIRY`.
    #[serde(default, deserialize_with = "nullable_seconds", skip_serializing_if = "Option::is_none")]
    pub access_token_ttl: Option<Option<i64>>,
    /// Seconds, at most the server's `REFRESH_TOKEN_EXPIRY`.
    #[serde(default, deserialize_with = "nullable_seconds", skip_serializing_if = "Option::is_none")]
    pub refresh_token_ttl: Option<Option<i64>>,
    /// Seconds, at most the server's `OAUTH_AUTHORIZATION_CODE_EXPIRY`.
    #[serde(default, deserialize_with = "nullable_seconds", skip_serializing_if = "Option::is_none")]
    pub authorization_code_ttl: Option<Option<i64>>,
    /// `active` (default), `suspended` or `revoked` (final).
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A `PATCH` body: the registration's shape, applied over the stored client (see [`merge`]).
pub type ClientPatch = ClientInput;

impl ClientInput {
    /// Names no field at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `null` is refused where it has no meaning (a name, a list, a flag) instead of silently
/// counting as "absent".
fn non_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// Present-and-null (clear it) versus absent (leave it), for PATCH.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// [`nullable`] for a lifetime, with a message that says what is expected rather than serde's
/// "expected i64" (for `1.5`, `"900"`, `1e3`, or a number beyond 64 bits).
fn nullable_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<i64>>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None => Ok(Some(None)),
        Some(serde_json::Value::Number(n)) if n.as_i64().is_some() => Ok(Some(n.as_i64())),
        Some(other) => Err(D::Error::custom(format!(
            "{other} is not a lifetime: give whole seconds as a JSON integer (e.g. 900), or null for the server's"
        ))),
    }
}

/// Parses a JSON request body into `T`, naming the field at fault when there is one (an unknown
/// field, a string where a list belongs). `T`'s fields must all be optional, as in
/// [`ClientInput`].
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ValidationError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ValidationError::body("a JSON object is required as the request body"));
    }
    let error = match serde_json::from_slice::<T>(body) {
        Ok(parsed) => return Ok(parsed),
        Err(error) => error,
    };
    if error.is_syntax() || error.is_eof() || error.is_io() {
        return Err(ValidationError::body(format!("malformed JSON: {error}")));
    }
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Err(ValidationError::body("the request body must be a JSON object"));
    };
    // Every field is optional, so an object holding only the culprit fails and one holding any
    // other single field passes.
    for (key, value) in object {
        let single = serde_json::Value::Object(serde_json::Map::from_iter([(key.clone(), value)]));
        if let Err(field_error) = serde_json::from_value::<T>(single) {
            return Err(ValidationError::field(key, field_error.to_string()));
        }
    }
    Err(ValidationError::body(error.to_string()))
}

/// `patch` over `client` as a JSON merge patch (RFC 7396) of the client's JSON representation:
/// the registration every field of which is named, to be validated as a whole. A field the
/// patch names replaces the stored one, `null` clears it.
pub(super) fn merge(client: &Client, patch: ClientPatch) -> Result<ClientInput, ValidationError> {
    let mut merged = ClientView::from(client).settings();
    if merged.is_empty() {
        return Err(ValidationError::body("the stored client could not be read as a registration"));
    }
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(patch) else {
        return Err(ValidationError::body("the change is not a JSON object"));
    };
    merged.extend(fields);
    serde_json::from_value(serde_json::Value::Object(merged))
        .map_err(|e| ValidationError::body(format!("the stored client cannot be changed: {e}")))
}
