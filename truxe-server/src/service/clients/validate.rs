//! The registration rules: one [`validate`] for a new client and for a stored client with a
//! PATCH laid over it, checked against the server's configuration ([`Rules`]).

use std::time::Duration;

use super::input::{ClientInput, ClientPatch, merge};
use super::uris::{check_redirect_uri, check_web_uri};
use crate::config::format_duration;
use crate::model::client::{AuthMethod, Client, ClientStatus, GrantType};
use crate::oauth::scope::{ScopeSet, is_scope_token};
use crate::service::policy::{Audiences, Rules};

pub const MAX_NAME_CHARS: usize = 200;
/// Per list: `redirect_uris` and `post_logout_redirect_uris` each.
pub const MAX_REDIRECT_URIS: usize = 20;
pub const MAX_SCOPES: usize = 50;

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

/// Checks a registration and fills in its defaults; the result has no id, secret or
/// timestamps yet.
pub fn validate_input(input: ClientInput, rules: &Rules) -> Result<Client, ValidationError> {
    validate(input, rules, &Client::default())
}

/// Checks a stored client with `patch` applied, under the same rules as a registration, plus
/// the rules about changing a client: a public client stays public (it has no secret) and a
/// confidential one stays confidential, and a revoked client stays revoked. Returns the changed
/// client (secrets and `updated_at` as they were).
pub fn validate_patch(client: &Client, patch: ClientPatch, rules: &Rules) -> Result<Client, ValidationError> {
    let changed = validate(merge(client, patch)?, rules, client)?;
    if changed.token_endpoint_auth_method.is_confidential() != client.token_endpoint_auth_method.is_confidential() {
        return Err(ValidationError::field(
            "token_endpoint_auth_method",
            format!(
                "cannot change a {} client into a {} one; register a new client instead",
                kind(client.token_endpoint_auth_method),
                kind(changed.token_endpoint_auth_method)
            ),
        ));
    }
    if client.status == ClientStatus::Revoked && changed.status != ClientStatus::Revoked {
        return Err(ValidationError::field(
            "status",
            "a revoked client cannot be reactivated; register a new client (suspend instead to disable one for a while)",
        ));
    }
    Ok(changed)
}

fn kind(method: AuthMethod) -> &'static str {
    if method.is_confidential() { "confidential" } else { "public" }
}

fn one_of<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> String {
    all.iter().map(|v| as_str(*v)).collect::<Vec<_>>().join(", ")
}

/// `input` as the settings of `base` (a blank client for a registration, the stored one for a
/// PATCH, whose merged input then names every field). What depends on the server's
/// configuration (scopes, audiences, lifetime limits) is checked for new values only: a value
/// `base` already holds stays acceptable after the configuration changed, so that an unrelated
/// change (a suspension) is never blocked by it. The token code applies the configuration as it
/// is then (`Client::access_token_ttl` and the like).
fn validate(input: ClientInput, rules: &Rules, base: &Client) -> Result<Client, ValidationError> {
    let client_name = validate_name(input.client_name)?;

    let token_endpoint_auth_method = match input.token_endpoint_auth_method.as_deref() {
        None => AuthMethod::ClientSecretBasic,
        Some(value) => AuthMethod::parse(value).ok_or_else(|| {
            ValidationError::field(
                "token_endpoint_auth_method",
                format!("{value:?} is not one of {}", one_of(&AuthMethod::ALL, AuthMethod::as_str)),
            )
        })?,
    };
    let public = !token_endpoint_auth_method.is_confidential();

    let redirect_uris = validate_uri_list("redirect_uris", input.redirect_uris.unwrap_or_default())?;
    let post_logout_redirect_uris =
        validate_uri_list("post_logout_redirect_uris", input.post_logout_redirect_uris.unwrap_or_default())?;

    let grant_types = match input.grant_types {
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

    let require_pkce = input.require_pkce.unwrap_or(true);
    if public && !require_pkce {
        return Err(ValidationError::field(
            "require_pkce",
            "a public client (token_endpoint_auth_method none) must use PKCE",
        ));
    }

    let allowed_scopes = match input.allowed_scopes {
        Some(values) => validate_scopes(values, &rules.scopes_supported, &base.allowed_scopes)?,
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
                    rules.scopes_supported.join(", ")
                ),
            ));
        }
    };

    let allowed_audiences = validate_audiences(
        "allowed_audiences",
        input.allowed_audiences.unwrap_or_default(),
        &rules.audiences,
        &base.allowed_audiences,
    )?;
    let introspection_audiences = validate_audiences(
        "introspection_audiences",
        input.introspection_audiences.unwrap_or_default(),
        &rules.audiences,
        &base.introspection_audiences,
    )?;
    if public && !introspection_audiences.is_empty() {
        return Err(ValidationError::field(
            "introspection_audiences",
            "only a confidential client may introspect tokens as a resource server; a public client \
             (token_endpoint_auth_method none) cannot authenticate at the introspection endpoint",
        ));
    }

    let status = match input.status.as_deref() {
        None => ClientStatus::Active,
        Some(value) => ClientStatus::parse(value).ok_or_else(|| {
            ValidationError::field(
                "status",
                format!("{value:?} is not one of {}", one_of(&ClientStatus::ALL, ClientStatus::as_str)),
            )
        })?,
    };

    Ok(Client {
        client_name,
        redirect_uris,
        post_logout_redirect_uris,
        allowed_scopes,
        grant_types,
        token_endpoint_auth_method,
        require_pkce,
        require_consent: input.require_consent.unwrap_or(true),
        trusted: input.trusted.unwrap_or(false),
        client_uri: validate_web_uri("client_uri", input.client_uri.flatten())?,
        logo_uri: validate_web_uri("logo_uri", input.logo_uri.flatten())?,
        tos_uri: validate_web_uri("tos_uri", input.tos_uri.flatten())?,
        policy_uri: validate_web_uri("policy_uri", input.policy_uri.flatten())?,
        allowed_audiences,
        introspection_audiences,
        access_token_ttl: Lifetime::ACCESS.validate(input.access_token_ttl.flatten(), rules, base)?,
        refresh_token_ttl: Lifetime::REFRESH.validate(input.refresh_token_ttl.flatten(), rules, base)?,
        authorization_code_ttl: Lifetime::CODE.validate(input.authorization_code_ttl.flatten(), rules, base)?,
        status,
        ..base.clone()
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
        check_unique(field, &uris, i)?;
    }
    Ok(uris)
}

/// `values[i]` must not repeat an earlier element.
fn check_unique(field: &str, values: &[String], i: usize) -> Result<(), ValidationError> {
    match values[..i].iter().position(|v| *v == values[i]) {
        Some(first) => Err(ValidationError::field(
            format!("{field}[{i}]"),
            format!("{} is listed twice (also {field}[{first}])", values[i]),
        )),
        None => Ok(()),
    }
}

fn validate_grant_types(values: Vec<String>) -> Result<Vec<GrantType>, ValidationError> {
    if values.is_empty() {
        return Err(ValidationError::field("grant_types", "at least one grant type is required"));
    }
    for (i, value) in values.iter().enumerate() {
        if GrantType::parse(value).is_none() {
            return Err(ValidationError::field(
                format!("grant_types[{i}]"),
                format!("{value:?} is not one of {}", one_of(&GrantType::ALL, GrantType::as_str)),
            ));
        }
        check_unique("grant_types", &values, i)?;
    }
    Ok(values.iter().filter_map(|v| GrantType::parse(v)).collect())
}

fn validate_scopes(
    values: Vec<String>,
    scopes_supported: &[String],
    stored: &ScopeSet,
) -> Result<ScopeSet, ValidationError> {
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
        if !scopes_supported.iter().any(|s| s == scope) && !stored.contains(scope) {
            return Err(invalid(format!(
                "{scope:?} is not a configured scope (configured: {}; TRUXE_SCOPES adds more)",
                scopes_supported.join(", ")
            )));
        }
        check_unique("allowed_scopes", &values, i)?;
    }
    ScopeSet::from_tokens(&values).map_err(|e| ValidationError::field("allowed_scopes", e))
}

/// Each one of the server's audiences (or already registered), once.
fn validate_audiences(
    field: &str,
    values: Vec<String>,
    audiences: &Audiences,
    stored: &[String],
) -> Result<Vec<String>, ValidationError> {
    for (i, audience) in values.iter().enumerate() {
        if !audiences.contains(audience) && !stored.contains(audience) {
            return Err(ValidationError::field(
                format!("{field}[{i}]"),
                format!(
                    "{audience:?} is not an audience this server issues tokens for (JWT_AUDIENCE; the default is {:?})",
                    audiences.default_audience()
                ),
            ));
        }
        check_unique(field, &values, i)?;
    }
    Ok(values)
}

fn validate_web_uri(field: &str, uri: Option<String>) -> Result<Option<String>, ValidationError> {
    match uri {
        None => Ok(None),
        Some(uri) => check_web_uri(&uri).map(|()| Some(uri)).map_err(|message| ValidationError::field(field, message)),
    }
}

/// One of the per-client lifetimes and the server setting that bounds it.
struct Lifetime {
    field: &'static str,
    variable: &'static str,
    server: fn(&Rules) -> i64,
    stored: fn(&Client) -> Option<i64>,
}

impl Lifetime {
    const ACCESS: Lifetime = Lifetime {
        field: "access_token_ttl",
        variable: "ACCESS_TOKEN_EXPIRY",
        server: |r| r.access_token_ttl,
        stored: |c| c.access_token_ttl,
    };
    const REFRESH: Lifetime = Lifetime {
        field: "refresh_token_ttl",
        variable: "REFRESH_TOKEN_EXPIRY",
        server: |r| r.refresh_token_ttl,
        stored: |c| c.refresh_token_ttl,
    };
    const CODE: Lifetime = Lifetime {
        field: "authorization_code_ttl",
        variable: "OAUTH_AUTHORIZATION_CODE_EXPIRY",
        server: |r| r.authorization_code_ttl,
        stored: |c| c.authorization_code_ttl,
    };

    /// Whole seconds from 1 to the server's; `None` (absent or `null`) leaves the server's.
    fn validate(&self, value: Option<i64>, rules: &Rules, base: &Client) -> Result<Option<i64>, ValidationError> {
        let Some(seconds) = value else {
            return Ok(None);
        };
        let server = (self.server)(rules);
        let limit = format!(
            "{server} seconds, the server's {} ({})",
            self.variable,
            format_duration(Duration::from_secs(server.unsigned_abs()))
        );
        if seconds < 1 {
            return Err(ValidationError::field(
                self.field,
                format!(
                    "{seconds} is not a lifetime: give whole seconds from 1 up to {limit}, or null for the server's"
                ),
            ));
        }
        if seconds > server && value != (self.stored)(base) {
            return Err(ValidationError::field(self.field, format!("{seconds} is too long: at most {limit}")));
        }
        Ok(Some(seconds))
    }
}
