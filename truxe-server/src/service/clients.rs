//! Client registration: the one validation path and the operations behind both the admin API
//! and `truxectl clients` (which may work on the database directly).

use std::time::Duration;

use base64::Engine;
use diesel::Connection;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::model::client::{self as model, AuthMethod, Client, ClientStatus, GrantType};
use crate::model::request::RequestMeta;
use crate::oauth::client_secret;
use crate::oauth::scope::{ScopeSet, is_scope_token};
use crate::secret::Secret;
use crate::store::audit::{self, AuditAction, AuditEvent};
use crate::store::{self, AnyConnection, StoreError};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_URI_BYTES: usize = 2048;
/// Per list: `redirect_uris` and `post_logout_redirect_uris` each.
pub const MAX_REDIRECT_URIS: usize = 20;
pub const MAX_SCOPES: usize = 50;
pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 200;
/// How long a replaced secret may keep working after `regenerate-secret`.
pub const MAX_SECRET_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// Scopes a client that signs users in gets when registration names none.
const DEFAULT_USER_SCOPES: [&str; 3] = ["openid", "profile", "email"];

/// A registration that breaks a rule, named down to the offending element (`redirect_uris[1]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ValidationError {
    /// `None` when the request as a whole is wrong (malformed JSON, not an object).
    pub field: Option<String>,
    pub message: String,
}

impl ValidationError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: Some(field.into()), message: message.into() }
    }

    pub fn body(message: impl Into<String>) -> Self {
        Self { field: None, message: message.into() }
    }
}

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
    /// `Config::scopes_supported()` of the server the clients belong to.
    pub scopes_supported: &'a [String],
    /// The HMAC key client secrets are hashed under (`server_secrets`).
    pub secret_key: &'a [u8],
    pub now: i64,
    /// Who acts, for the audit trail: `admin` (the admin API) or `cli` (truxectl on the database).
    pub actor: &'a str,
    pub request: &'a RequestMeta,
}

/// Registration as the deployment guide writes it, plus `grant_types` and
/// `token_endpoint_auth_method`. Every field is optional here so that a missing one gets a
/// field-level message (or its default) from [`validate`] rather than a bare serde error.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
}

/// A `PATCH`: absent fields stay as they are; the four metadata URIs may be `null` to clear
/// them. The merged result must pass the same [`validate`] as a registration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
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
    #[serde(default, deserialize_with = "non_null", skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl ClientPatch {
    pub fn is_empty(&self) -> bool {
        let Self {
            client_name,
            redirect_uris,
            post_logout_redirect_uris,
            allowed_scopes,
            grant_types,
            token_endpoint_auth_method,
            require_pkce,
            require_consent,
            trusted,
            client_uri,
            logo_uri,
            tos_uri,
            policy_uri,
            status,
        } = self;
        client_name.is_none()
            && redirect_uris.is_none()
            && post_logout_redirect_uris.is_none()
            && allowed_scopes.is_none()
            && grant_types.is_none()
            && token_endpoint_auth_method.is_none()
            && require_pkce.is_none()
            && require_consent.is_none()
            && trusted.is_none()
            && client_uri.is_none()
            && logo_uri.is_none()
            && tos_uri.is_none()
            && policy_uri.is_none()
            && status.is_none()
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

/// Parses a JSON request body into `T`, naming the field at fault when there is one (an unknown
/// field, a string where a list belongs). `T`'s fields must all be optional, as in
/// [`ClientInput`] and [`ClientPatch`].
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

/// The validated settings of a client: what registration and PATCH may set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub allowed_scopes: ScopeSet,
    pub grant_types: Vec<GrantType>,
    pub token_endpoint_auth_method: AuthMethod,
    pub require_pkce: bool,
    pub require_consent: bool,
    pub trusted: bool,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub tos_uri: Option<String>,
    pub policy_uri: Option<String>,
    pub status: ClientStatus,
}

/// A registration before validation: create input with nothing filled in, or a stored client
/// with a PATCH laid over it. `None` means "use the default", which may depend on other fields.
#[derive(Debug, Clone, Default)]
struct Draft {
    client_name: Option<String>,
    redirect_uris: Vec<String>,
    post_logout_redirect_uris: Vec<String>,
    allowed_scopes: Option<Vec<String>>,
    grant_types: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    require_pkce: Option<bool>,
    require_consent: Option<bool>,
    trusted: Option<bool>,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    tos_uri: Option<String>,
    policy_uri: Option<String>,
    status: Option<String>,
}

impl From<ClientInput> for Draft {
    fn from(input: ClientInput) -> Self {
        Draft {
            client_name: input.client_name,
            redirect_uris: input.redirect_uris.unwrap_or_default(),
            post_logout_redirect_uris: input.post_logout_redirect_uris.unwrap_or_default(),
            allowed_scopes: input.allowed_scopes,
            grant_types: input.grant_types,
            token_endpoint_auth_method: input.token_endpoint_auth_method,
            require_pkce: input.require_pkce,
            require_consent: input.require_consent,
            trusted: input.trusted,
            client_uri: input.client_uri,
            logo_uri: input.logo_uri,
            tos_uri: input.tos_uri,
            policy_uri: input.policy_uri,
            status: None,
        }
    }
}

impl Draft {
    fn merged(client: &Client, patch: ClientPatch) -> Self {
        Draft {
            client_name: Some(patch.client_name.unwrap_or_else(|| client.client_name.clone())),
            redirect_uris: patch.redirect_uris.unwrap_or_else(|| client.redirect_uris.clone()),
            post_logout_redirect_uris: patch
                .post_logout_redirect_uris
                .unwrap_or_else(|| client.post_logout_redirect_uris.clone()),
            allowed_scopes: Some(patch.allowed_scopes.unwrap_or_else(|| client.allowed_scopes.to_vec())),
            grant_types: Some(
                patch
                    .grant_types
                    .unwrap_or_else(|| client.grant_types.iter().map(|g| g.as_str().to_string()).collect()),
            ),
            token_endpoint_auth_method: Some(
                patch.token_endpoint_auth_method.unwrap_or_else(|| client.token_endpoint_auth_method.as_str().into()),
            ),
            require_pkce: Some(patch.require_pkce.unwrap_or(client.require_pkce)),
            require_consent: Some(patch.require_consent.unwrap_or(client.require_consent)),
            trusted: Some(patch.trusted.unwrap_or(client.trusted)),
            client_uri: patch.client_uri.unwrap_or_else(|| client.client_uri.clone()),
            logo_uri: patch.logo_uri.unwrap_or_else(|| client.logo_uri.clone()),
            tos_uri: patch.tos_uri.unwrap_or_else(|| client.tos_uri.clone()),
            policy_uri: patch.policy_uri.unwrap_or_else(|| client.policy_uri.clone()),
            status: Some(patch.status.unwrap_or_else(|| client.status.as_str().into())),
        }
    }
}

/// Checks a registration and fills in its defaults.
pub fn validate_input(input: ClientInput, scopes_supported: &[String]) -> Result<Settings, ValidationError> {
    validate(Draft::from(input), scopes_supported)
}

/// Checks a stored client with `patch` applied, under the same rules as a registration, plus
/// the rules about changing a client: a public client stays public (it has no secret) and a
/// confidential one stays confidential, and a revoked client stays revoked.
pub fn validate_patch(
    client: &Client,
    patch: ClientPatch,
    scopes_supported: &[String],
) -> Result<Settings, ValidationError> {
    let settings = validate(Draft::merged(client, patch), scopes_supported)?;
    if settings.token_endpoint_auth_method.is_confidential() != client.token_endpoint_auth_method.is_confidential() {
        return Err(ValidationError::field(
            "token_endpoint_auth_method",
            format!(
                "cannot change a {} client into a {} one; register a new client instead",
                kind(client.token_endpoint_auth_method),
                kind(settings.token_endpoint_auth_method)
            ),
        ));
    }
    if client.status == ClientStatus::Revoked && settings.status != ClientStatus::Revoked {
        return Err(ValidationError::field(
            "status",
            "a revoked client cannot be reactivated; register a new client (suspend instead to disable one for a while)",
        ));
    }
    Ok(settings)
}

fn kind(method: AuthMethod) -> &'static str {
    if method.is_confidential() { "confidential" } else { "public" }
}

fn one_of<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> String {
    all.iter().map(|v| as_str(*v)).collect::<Vec<_>>().join(", ")
}

fn validate(draft: Draft, scopes_supported: &[String]) -> Result<Settings, ValidationError> {
    let client_name = validate_name(draft.client_name)?;

    let token_endpoint_auth_method = match draft.token_endpoint_auth_method.as_deref() {
        None => AuthMethod::ClientSecretBasic,
        Some(value) => AuthMethod::parse(value).ok_or_else(|| {
            ValidationError::field(
                "token_endpoint_auth_method",
                format!("{value:?} is not one of {}", one_of(&AuthMethod::ALL, AuthMethod::as_str)),
            )
        })?,
    };
    let public = !token_endpoint_auth_method.is_confidential();

    let redirect_uris = validate_uri_list("redirect_uris", draft.redirect_uris)?;
    let post_logout_redirect_uris = validate_uri_list("post_logout_redirect_uris", draft.post_logout_redirect_uris)?;

    let grant_types = match draft.grant_types {
        // A public client can only ever sign users in; a confidential one without redirect
        // URIs is a service account.
        None if public || !redirect_uris.is_empty() => vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        None => vec![GrantType::ClientCredentials],
        Some(values) => validate_grant_types(values)?,
    };
    let has = |grant| grant_types.contains(&grant);
    if public && has(GrantType::ClientCredentials) {
        return Err(ValidationError::field(
            "grant_types",
            "client_credentials needs a confidential client; a public client (token_endpoint_auth_method none) \
             has no secret to authenticate with",
        ));
    }
    if has(GrantType::RefreshToken) && !has(GrantType::AuthorizationCode) {
        return Err(ValidationError::field(
            "grant_types",
            "refresh_token is only issued together with authorization_code; add authorization_code or remove refresh_token",
        ));
    }
    if has(GrantType::AuthorizationCode) && redirect_uris.is_empty() {
        return Err(ValidationError::field(
            "redirect_uris",
            "authorization_code needs at least one redirect URI (e.g. https://app.example.com/callback)",
        ));
    }

    let require_pkce = draft.require_pkce.unwrap_or(true);
    if public && !require_pkce {
        return Err(ValidationError::field(
            "require_pkce",
            "a public client (token_endpoint_auth_method none) must use PKCE",
        ));
    }

    let allowed_scopes = match draft.allowed_scopes {
        Some(values) => validate_scopes(values, scopes_supported)?,
        None if has(GrantType::AuthorizationCode) => {
            let offline = has(GrantType::RefreshToken).then_some("offline_access");
            ScopeSet::from_tokens(DEFAULT_USER_SCOPES.into_iter().chain(offline))
                .map_err(|e| ValidationError::field("allowed_scopes", e))?
        }
        None => {
            return Err(ValidationError::field(
                "allowed_scopes",
                format!(
                    "required for a client_credentials client: list the scopes it may request (configured: {})",
                    scopes_supported.join(", ")
                ),
            ));
        }
    };

    let status = match draft.status.as_deref() {
        None => ClientStatus::Active,
        Some(value) => ClientStatus::parse(value).ok_or_else(|| {
            ValidationError::field(
                "status",
                format!("{value:?} is not one of {}", one_of(&ClientStatus::ALL, ClientStatus::as_str)),
            )
        })?,
    };

    Ok(Settings {
        client_name,
        redirect_uris,
        post_logout_redirect_uris,
        allowed_scopes,
        grant_types,
        token_endpoint_auth_method,
        require_pkce,
        require_consent: draft.require_consent.unwrap_or(true),
        trusted: draft.trusted.unwrap_or(false),
        client_uri: validate_web_uri("client_uri", draft.client_uri)?,
        logo_uri: validate_web_uri("logo_uri", draft.logo_uri)?,
        tos_uri: validate_web_uri("tos_uri", draft.tos_uri)?,
        policy_uri: validate_web_uri("policy_uri", draft.policy_uri)?,
        status,
    })
}

fn validate_name(name: Option<String>) -> Result<String, ValidationError> {
    let name =
        name.ok_or_else(|| ValidationError::field("client_name", "required: the name users see on the consent page"))?;
    check_client_name(&name).map_err(|message| ValidationError::field("client_name", message))
}

/// A client name as users will see it: surrounding spaces removed, 1 to 200 characters, no
/// control characters.
pub fn check_client_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("longer than {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters (line breaks, tabs, NUL …)".to_string());
    }
    Ok(name.to_string())
}

fn validate_uri_list(field: &str, uris: Vec<String>) -> Result<Vec<String>, ValidationError> {
    if uris.len() > MAX_REDIRECT_URIS {
        return Err(ValidationError::field(field, format!("at most {MAX_REDIRECT_URIS} URIs may be registered")));
    }
    for (i, uri) in uris.iter().enumerate() {
        check_redirect_uri(uri).map_err(|message| ValidationError::field(format!("{field}[{i}]"), message))?;
        if let Some(first) = uris[..i].iter().position(|u| u == uri) {
            return Err(ValidationError::field(format!("{field}[{i}]"), format!("duplicate of {field}[{first}]")));
        }
    }
    Ok(uris)
}

fn validate_grant_types(values: Vec<String>) -> Result<Vec<GrantType>, ValidationError> {
    if values.is_empty() {
        return Err(ValidationError::field("grant_types", "at least one grant type is required"));
    }
    let mut grants = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let field = || format!("grant_types[{i}]");
        let grant = GrantType::parse(value).ok_or_else(|| {
            ValidationError::field(
                field(),
                format!("{value:?} is not one of {}", one_of(&GrantType::ALL, GrantType::as_str)),
            )
        })?;
        if grants.contains(&grant) {
            return Err(ValidationError::field(field(), format!("{value} is listed twice")));
        }
        grants.push(grant);
    }
    Ok(grants)
}

fn validate_scopes(values: Vec<String>, scopes_supported: &[String]) -> Result<ScopeSet, ValidationError> {
    if values.is_empty() {
        return Err(ValidationError::field("allowed_scopes", "at least one scope is required"));
    }
    if values.len() > MAX_SCOPES {
        return Err(ValidationError::field("allowed_scopes", format!("at most {MAX_SCOPES} scopes are allowed")));
    }
    for (i, scope) in values.iter().enumerate() {
        let invalid = |message: String| ValidationError::field(format!("allowed_scopes[{i}]"), message);
        if !is_scope_token(scope) {
            return Err(invalid(format!("{scope:?} is not a valid scope (printable ASCII without spaces)")));
        }
        if !scopes_supported.iter().any(|s| s == scope) {
            return Err(invalid(format!(
                "{scope:?} is not a configured scope (configured: {}; TRUXE_SCOPES adds more)",
                scopes_supported.join(", ")
            )));
        }
        if values[..i].contains(scope) {
            return Err(invalid(format!("{scope} is listed twice")));
        }
    }
    ScopeSet::from_tokens(&values).map_err(|e| ValidationError::field("allowed_scopes", e))
}

fn validate_web_uri(field: &str, uri: Option<String>) -> Result<Option<String>, ValidationError> {
    match uri {
        None => Ok(None),
        Some(uri) => check_web_uri(&uri).map(|()| Some(uri)).map_err(|message| ValidationError::field(field, message)),
    }
}

/// Where a registered redirect URI may point (RFC 9700 §2.1, RFC 8252 §7): an absolute URI
/// without fragment or wildcard, over `https`, or `http` to the loopback interface, or a
/// reverse-domain private-use scheme (`com.example.app:/callback`) for native apps. The URI
/// is kept as written: the authorization endpoint compares it as an exact string.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    check_common(uri)?;
    if uri.contains('*') {
        return Err("wildcards are not allowed: register every redirect URI in full".to_string());
    }
    if uri.contains('#') {
        return Err("must not contain a fragment (#…)".to_string());
    }
    let url = parse_absolute(uri)?;
    match url.scheme() {
        "https" | "http" => check_web_url(uri, &url),
        scheme if scheme.contains('.') => Ok(()),
        scheme => Err(format!(
            "the scheme {scheme:?} is not allowed: use https, http on a loopback address, or a reverse-domain \
             private-use scheme for native apps (com.example.app:/callback)"
        )),
    }
}

/// `client_uri`, `logo_uri`, `tos_uri`, `policy_uri`: pages a browser shows, so `https` (or
/// `http` on the loopback interface, for development).
pub fn check_web_uri(uri: &str) -> Result<(), String> {
    check_common(uri)?;
    let url = parse_absolute(uri)?;
    match url.scheme() {
        "https" | "http" => check_web_url(uri, &url),
        scheme => Err(format!("the scheme {scheme:?} is not allowed: use https")),
    }
}

fn check_common(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Err("must not be empty".to_string());
    }
    if uri.len() > MAX_URI_BYTES {
        return Err(format!("longer than {MAX_URI_BYTES} bytes"));
    }
    // The URL parser would silently drop tabs and line breaks, so the stored string would
    // never match what the parser saw.
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".to_string());
    }
    Ok(())
}

fn parse_absolute(uri: &str) -> Result<url::Url, String> {
    url::Url::parse(uri).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            "must be an absolute URI (e.g. https://app.example.com/callback)".to_string()
        }
        other => format!("not a valid URI: {other}"),
    })
}

fn check_web_url(uri: &str, url: &url::Url) -> Result<(), String> {
    let scheme = url.scheme();
    // The parser lower-cases the scheme and repairs `https:/host`; exact matching needs the
    // canonical form as written.
    if !uri.starts_with(&format!("{scheme}://")) {
        return Err(format!("must start with {scheme}:// (lower case)"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials (user:password@)".to_string());
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => return Err("must name a host".to_string()),
    };
    if scheme == "http" && !loopback {
        return Err("http is allowed only on the loopback interface (127.0.0.1, [::1], localhost); use https".into());
    }
    Ok(())
}

/// What the admin API and truxectl show of a client: never a secret or a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientView {
    pub client_id: String,
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
            status: c.status.as_str().to_string(),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
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

/// One page of [`list`]; `next` is the `after` cursor of the following page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub clients: Vec<ClientView>,
    pub next: Option<String>,
}

/// Whether `presented` is the client's secret: the current one, or the one it replaced while
/// that one's grace period lasts. Says nothing about the client's status or auth method.
pub fn authenticate_secret(client: &Client, key: &[u8], presented: &str, now: i64) -> bool {
    let current = client.secret_hash.as_deref().is_some_and(|hash| client_secret::verify(key, presented, hash));
    let previous = match (&client.previous_secret_hash, client.previous_secret_expires_at) {
        (Some(hash), Some(until)) if now < until => client_secret::verify(key, presented, hash),
        _ => false,
    };
    current || previous
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

fn random_token(prefix: &str, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// `cl_` and 128 random bits.
pub fn generate_client_id() -> String {
    random_token(model::CLIENT_ID_PREFIX, 16)
}

fn event(ctx: &Context<'_>, action: AuditAction, client_id: &str, details: serde_json::Value) -> AuditEvent {
    AuditEvent::new(action, ctx.actor).subject(client_id).client(client_id).from_request(ctx.request).details(details)
}

fn apply(client: &mut Client, settings: Settings) {
    let Settings {
        client_name,
        redirect_uris,
        post_logout_redirect_uris,
        allowed_scopes,
        grant_types,
        token_endpoint_auth_method,
        require_pkce,
        require_consent,
        trusted,
        client_uri,
        logo_uri,
        tos_uri,
        policy_uri,
        status,
    } = settings;
    client.client_name = client_name;
    client.redirect_uris = redirect_uris;
    client.post_logout_redirect_uris = post_logout_redirect_uris;
    client.allowed_scopes = allowed_scopes;
    client.grant_types = grant_types;
    client.token_endpoint_auth_method = token_endpoint_auth_method;
    client.require_pkce = require_pkce;
    client.require_consent = require_consent;
    client.trusted = trusted;
    client.client_uri = client_uri;
    client.logo_uri = logo_uri;
    client.tos_uri = tos_uri;
    client.policy_uri = policy_uri;
    client.status = status;
}

/// Registers a client. A confidential one gets a secret, returned here once and stored only as
/// its HMAC.
pub fn create(conn: &mut AnyConnection, ctx: &Context<'_>, input: ClientInput) -> Result<WithSecret, ClientError> {
    let settings = validate_input(input, ctx.scopes_supported)?;
    let secret = settings.token_endpoint_auth_method.is_confidential().then(client_secret::generate);
    let mut client = Client {
        client_id: generate_client_id(),
        client_name: String::new(),
        secret_hash: secret.as_ref().map(|s| client_secret::hash(ctx.secret_key, s.secret())),
        previous_secret_hash: None,
        previous_secret_expires_at: None,
        token_endpoint_auth_method: settings.token_endpoint_auth_method,
        grant_types: Vec::new(),
        allowed_scopes: ScopeSet::default(),
        redirect_uris: Vec::new(),
        post_logout_redirect_uris: Vec::new(),
        require_pkce: true,
        require_consent: true,
        trusted: false,
        client_uri: None,
        logo_uri: None,
        tos_uri: None,
        policy_uri: None,
        status: ClientStatus::Active,
        created_at: ctx.now,
        updated_at: ctx.now,
    };
    apply(&mut client, settings);
    let view = ClientView::from(&client);
    conn.transaction::<_, ClientError, _>(|conn| {
        store::clients::insert(conn, &client)?;
        let details = serde_json::json!({
            "client_name": view.client_name,
            "token_endpoint_auth_method": view.token_endpoint_auth_method,
            "grant_types": view.grant_types,
            "allowed_scopes": view.allowed_scopes,
            "redirect_uris": view.redirect_uris,
        });
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
        let settings = validate_patch(&before, patch, ctx.scopes_supported)?;
        let mut client = before.clone();
        apply(&mut client, settings);
        let (old, new) = (ClientView::from(&before), ClientView::from(&client));
        let changed = changed_fields(&old, &new);
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

fn changed_fields(old: &ClientView, new: &ClientView) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("client_name", old.client_name != new.client_name);
    check("redirect_uris", old.redirect_uris != new.redirect_uris);
    check("post_logout_redirect_uris", old.post_logout_redirect_uris != new.post_logout_redirect_uris);
    check("allowed_scopes", old.allowed_scopes != new.allowed_scopes);
    check("grant_types", old.grant_types != new.grant_types);
    check("token_endpoint_auth_method", old.token_endpoint_auth_method != new.token_endpoint_auth_method);
    check("require_pkce", old.require_pkce != new.require_pkce);
    check("require_consent", old.require_consent != new.require_consent);
    check("trusted", old.trusted != new.trusted);
    check("client_uri", old.client_uri != new.client_uri);
    check("logo_uri", old.logo_uri != new.logo_uri);
    check("tos_uri", old.tos_uri != new.tos_uri);
    check("policy_uri", old.policy_uri != new.policy_uri);
    check("status", old.status != new.status);
    changed
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

/// Gives a confidential client a new secret. With a `grace` above zero the old secret keeps
/// working until then (only the latest replaced secret: rotating again ends an earlier grace).
pub fn regenerate_secret(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    client_id: &str,
    grace: Duration,
) -> Result<WithSecret, ClientError> {
    if !model::is_plausible_client_id(client_id) {
        return Err(ClientError::NotFound);
    }
    if grace > MAX_SECRET_GRACE {
        return Err(ValidationError::field(
            "grace_seconds",
            format!("at most {} seconds (30 days)", MAX_SECRET_GRACE.as_secs()),
        )
        .into());
    }
    let grace_seconds = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    conn.transaction::<_, ClientError, _>(|conn| {
        store::clients::lock_for_update(conn, client_id)?;
        let mut client = find_existing(conn, client_id)?;
        if !client.token_endpoint_auth_method.is_confidential() {
            return Err(ValidationError::field(
                "token_endpoint_auth_method",
                "this is a public client (none): it has no secret to regenerate",
            )
            .into());
        }
        let secret = client_secret::generate();
        let old = client.secret_hash.replace(client_secret::hash(ctx.secret_key, secret.secret()));
        let until = ctx.now.saturating_add(grace_seconds);
        (client.previous_secret_hash, client.previous_secret_expires_at) = match old {
            Some(old) if grace_seconds > 0 => (Some(old), Some(until)),
            _ => (None, None),
        };
        client.updated_at = ctx.now;
        if !store::clients::update_secret(conn, &client)? {
            return Err(ClientError::NotFound);
        }
        let mut details = serde_json::json!({ "grace_seconds": grace_seconds });
        if client.previous_secret_expires_at.is_some() {
            details["previous_secret_valid_until"] = serde_json::json!(until);
        }
        audit::record(conn, &event(ctx, AuditAction::ClientSecretRotated, client_id, details), ctx.now)?;
        Ok(WithSecret { client: ClientView::from(&client), client_secret: Some(secret) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supported() -> Vec<String> {
        ["openid", "profile", "email", "offline_access", "orders:read"].map(String::from).to_vec()
    }

    fn input(json: serde_json::Value) -> ClientInput {
        match serde_json::from_value(json) {
            Ok(input) => input,
            Err(e) => panic!("test input does not parse: {e}"),
        }
    }

    fn valid(json: serde_json::Value) -> Settings {
        match validate_input(input(json.clone()), &supported()) {
            Ok(settings) => settings,
            Err(e) => panic!("{json} should be valid: {e}"),
        }
    }

    fn invalid(json: serde_json::Value) -> ValidationError {
        match validate_input(input(json.clone()), &supported()) {
            Ok(settings) => panic!("{json} should be refused, got {settings:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn redirect_uri_rules() {
        let accepted = [
            "https://app.example.com/callback",
            "https://app.example.com:8443/cb?tenant=1",
            "http://127.0.0.1/callback",
            "http://127.0.0.1:53682/callback",
            "http://[::1]:8080/cb",
            "http://localhost:3000/auth/callback",
            "com.example.app:/oauth2redirect",
            "com.example.app://callback",
        ];
        for uri in accepted {
            assert_eq!(check_redirect_uri(uri), Ok(()), "{uri}");
        }
        let refused = [
            ("", "empty"),
            ("/callback", "absolute"),
            ("app.example.com/callback", "absolute"),
            ("https://app.example.com/cb#frag", "fragment"),
            ("https://app.example.com/cb#", "fragment"),
            ("http://app.example.com/callback", "loopback"),
            ("http://127.0.0.2/callback", "loopback"),
            ("http://localhost.evil.com/cb", "loopback"),
            ("http://127.0.0.1.nip.io/cb", "loopback"),
            ("https://*.example.com/callback", "wildcard"),
            ("https://app.example.com/*", "wildcard"),
            ("javascript:alert(1)", "scheme"),
            ("data:text/html,hi", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("myapp:/callback", "scheme"),
            ("https://user:pw@app.example.com/cb", "credentials"),
            ("https://app.example.com/c b", "spaces"),
            ("https://app.example.com/\ncb", "control"),
            ("HTTPS://app.example.com/cb", "lower case"),
            ("https:/app.example.com/cb", "https://"),
        ];
        for (uri, why) in refused {
            let message = check_redirect_uri(uri).err().unwrap_or_else(|| panic!("{uri:?} should be refused"));
            assert!(message.contains(why), "{uri:?}: {message}");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(MAX_URI_BYTES));
        assert!(check_redirect_uri(&long).is_err_and(|m| m.contains("2048")));
    }

    #[test]
    fn defaults_for_a_web_app_and_a_service() {
        let web = valid(serde_json::json!({
            "client_name": "  Production App ",
            "redirect_uris": ["https://app.example.com/auth/callback"],
        }));
        assert_eq!(web.client_name, "Production App");
        assert_eq!(web.grant_types, [GrantType::AuthorizationCode, GrantType::RefreshToken]);
        assert_eq!(web.token_endpoint_auth_method, AuthMethod::ClientSecretBasic);
        assert_eq!(web.allowed_scopes.to_string(), "email offline_access openid profile");
        assert!(web.require_pkce && web.require_consent && !web.trusted);
        assert_eq!(web.status, ClientStatus::Active);

        let service = valid(serde_json::json!({ "client_name": "Billing", "allowed_scopes": ["orders:read"] }));
        assert_eq!(service.grant_types, [GrantType::ClientCredentials]);
        let e = invalid(serde_json::json!({ "client_name": "Billing" }));
        assert_eq!(e.field.as_deref(), Some("allowed_scopes"));
        assert!(e.message.contains("orders:read"), "{e}");
    }

    #[test]
    fn the_guides_example_registers() {
        let s = valid(serde_json::json!({
            "client_name": "Production App",
            "redirect_uris": ["https://app.yourdomain.com/auth/callback", "https://yourdomain.com/auth/callback"],
            "allowed_scopes": ["openid", "email", "profile"],
            "require_pkce": true,
            "require_consent": false,
            "trusted": true,
            "client_uri": "https://yourdomain.com",
            "logo_uri": "https://yourdomain.com/logo.png",
            "tos_uri": "https://yourdomain.com/terms",
            "policy_uri": "https://yourdomain.com/privacy"
        }));
        assert!(s.trusted && !s.require_consent);
        assert_eq!(s.logo_uri.as_deref(), Some("https://yourdomain.com/logo.png"));
    }

    #[test]
    fn public_clients() {
        let public = valid(serde_json::json!({
            "client_name": "SPA", "token_endpoint_auth_method": "none", "redirect_uris": ["https://spa.example.com/cb"]
        }));
        assert!(public.require_pkce);
        assert_eq!(public.grant_types, [GrantType::AuthorizationCode, GrantType::RefreshToken]);

        let cases = [
            (
                serde_json::json!({"token_endpoint_auth_method": "none", "redirect_uris": ["https://a.example/cb"],
                "require_pkce": false}),
                "require_pkce",
            ),
            (
                serde_json::json!({"token_endpoint_auth_method": "none", "grant_types": ["client_credentials"],
                "allowed_scopes": ["openid"]}),
                "grant_types",
            ),
            (serde_json::json!({"token_endpoint_auth_method": "none"}), "redirect_uris"),
        ];
        for (mut json, field) in cases {
            json["client_name"] = "x".into();
            assert_eq!(invalid(json.clone()).field.as_deref(), Some(field), "{json}");
        }
    }

    #[test]
    fn field_level_errors() {
        let cases = [
            (serde_json::json!({}), "client_name"),
            (serde_json::json!({"client_name": "   "}), "client_name"),
            (serde_json::json!({"client_name": "a".repeat(201)}), "client_name"),
            (serde_json::json!({"client_name": "bad\u{0}name"}), "client_name"),
            (
                serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb", "/cb"]}),
                "redirect_uris[1]",
            ),
            (
                serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb", "https://a.example/cb"]}),
                "redirect_uris[1]",
            ),
            (
                serde_json::json!({"client_name": "x", "redirect_uris": (0..21).map(|i| format!("https://a.example/{i}")).collect::<Vec<_>>()}),
                "redirect_uris",
            ),
            (
                serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "post_logout_redirect_uris": ["http://a.example/"]}),
                "post_logout_redirect_uris[0]",
            ),
            (
                serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "allowed_scopes": ["openid", "admin"]}),
                "allowed_scopes[1]",
            ),
            (
                serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "allowed_scopes": []}),
                "allowed_scopes",
            ),
            (
                serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "allowed_scopes": ["open id"]}),
                "allowed_scopes[0]",
            ),
            (
                serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "allowed_scopes": vec!["openid"; 51]}),
                "allowed_scopes",
            ),
            (serde_json::json!({"client_name": "x", "grant_types": ["password"]}), "grant_types[0]"),
            (serde_json::json!({"client_name": "x", "grant_types": []}), "grant_types"),
            (
                serde_json::json!({"client_name": "x", "grant_types": ["client_credentials", "client_credentials"]}),
                "grant_types[1]",
            ),
            (
                serde_json::json!({"client_name": "x", "grant_types": ["refresh_token", "client_credentials"], "allowed_scopes": ["openid"]}),
                "grant_types",
            ),
            (serde_json::json!({"client_name": "x", "grant_types": ["authorization_code"]}), "redirect_uris"),
            (
                serde_json::json!({"client_name": "x", "token_endpoint_auth_method": "private_key_jwt"}),
                "token_endpoint_auth_method",
            ),
            (
                serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "logo_uri": "http://cdn.example/l.png"}),
                "logo_uri",
            ),
            (
                serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "tos_uri": "terms.html"}),
                "tos_uri",
            ),
        ];
        for (json, field) in cases {
            let e = invalid(json.clone());
            assert_eq!(e.field.as_deref(), Some(field), "{json}: {e}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn json_bodies_name_the_field_at_fault() {
        let e = parse_json::<ClientInput>(br#"{"client_name": "x", "colour": "red"}"#).err();
        assert_eq!(e.as_ref().and_then(|e| e.field.as_deref()), Some("colour"), "{e:?}");
        let e = parse_json::<ClientInput>(br#"{"client_name": "x", "redirect_uris": "https://a.example/cb"}"#).err();
        assert_eq!(e.as_ref().and_then(|e| e.field.as_deref()), Some("redirect_uris"), "{e:?}");
        let e = parse_json::<ClientInput>(br#"{"client_name": null}"#).err();
        assert_eq!(e.as_ref().and_then(|e| e.field.as_deref()), Some("client_name"), "{e:?}");
        for body in [&b"{"[..], b"", b"   ", b"[1]", b"\"text\"", b"{\"a\":1}}", b"client_name=x"] {
            let e = parse_json::<ClientInput>(body).err();
            assert!(e.is_some(), "{:?}", String::from_utf8_lossy(body));
        }
        let patch = parse_json::<ClientPatch>(br#"{"logo_uri": null, "trusted": true}"#).ok();
        assert_eq!(patch.as_ref().map(|p| p.logo_uri.clone()), Some(Some(None)));
        assert!(parse_json::<ClientPatch>(br#"{"trusted": null}"#).is_err());
    }

    fn stored(json: serde_json::Value) -> Client {
        let settings = valid(json);
        let mut client = Client {
            client_id: "cl_test".into(),
            client_name: String::new(),
            secret_hash: Some("hash".into()),
            previous_secret_hash: None,
            previous_secret_expires_at: None,
            token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
            grant_types: Vec::new(),
            allowed_scopes: ScopeSet::default(),
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            require_pkce: true,
            require_consent: true,
            trusted: false,
            client_uri: None,
            logo_uri: None,
            tos_uri: None,
            policy_uri: None,
            status: ClientStatus::Active,
            created_at: 1,
            updated_at: 1,
        };
        apply(&mut client, settings);
        client
    }

    fn patch(json: serde_json::Value) -> ClientPatch {
        match serde_json::from_value(json) {
            Ok(p) => p,
            Err(e) => panic!("patch does not parse: {e}"),
        }
    }

    #[test]
    fn patches_are_checked_on_the_merged_result() {
        let client = stored(serde_json::json!({
            "client_name": "Web", "redirect_uris": ["https://a.example/cb"], "logo_uri": "https://a.example/logo.png"
        }));
        let s = validate_patch(
            &client,
            patch(serde_json::json!({"client_name": "Renamed", "logo_uri": null})),
            &supported(),
        );
        let s = s.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.client_name.as_str(), s.logo_uri), ("Renamed", None));
        assert_eq!(s.redirect_uris, ["https://a.example/cb"]);

        let refused = [
            (serde_json::json!({"redirect_uris": []}), "redirect_uris"),
            (serde_json::json!({"grant_types": ["refresh_token"]}), "grant_types"),
            (serde_json::json!({"token_endpoint_auth_method": "none"}), "token_endpoint_auth_method"),
            (serde_json::json!({"status": "paused"}), "status"),
        ];
        for (json, field) in refused {
            let e = validate_patch(&client, patch(json.clone()), &supported()).err();
            assert_eq!(e.and_then(|e| e.field), Some(field.to_string()), "{json}");
        }
        assert!(
            validate_patch(
                &client,
                patch(serde_json::json!({"token_endpoint_auth_method": "client_secret_post"})),
                &supported()
            )
            .is_ok()
        );

        let mut revoked = client.clone();
        revoked.status = ClientStatus::Revoked;
        let e = validate_patch(&revoked, patch(serde_json::json!({"status": "active"})), &supported()).err();
        assert_eq!(e.and_then(|e| e.field).as_deref(), Some("status"));
    }

    #[test]
    fn secrets_authenticate_with_grace() {
        let key = b"k";
        let (old, new) = ("cs_old", "cs_new");
        let mut client = stored(serde_json::json!({"client_name": "x", "allowed_scopes": ["orders:read"]}));
        client.secret_hash = Some(client_secret::hash(key, new));
        assert!(authenticate_secret(&client, key, new, 100));
        assert!(!authenticate_secret(&client, key, old, 100));
        assert!(!authenticate_secret(&client, key, "", 100));

        client.previous_secret_hash = Some(client_secret::hash(key, old));
        client.previous_secret_expires_at = Some(200);
        assert!(authenticate_secret(&client, key, old, 199));
        assert!(!authenticate_secret(&client, key, old, 200), "the grace ends at its instant");
        assert!(authenticate_secret(&client, key, new, 500));
        assert!(!authenticate_secret(&client, b"other key", new, 100));

        client.secret_hash = None;
        client.previous_secret_hash = None;
        assert!(!authenticate_secret(&client, key, new, 100), "a public client has no secret");
    }

    #[test]
    fn client_ids_are_plausible_and_unique() {
        let (a, b) = (generate_client_id(), generate_client_id());
        assert!(model::is_plausible_client_id(&a), "{a}");
        assert_eq!(a.len(), 3 + 22);
        assert_ne!(a, b);
    }
}
