//! The server's token policy, computed once from the configuration at start ([`Rules`], kept
//! in the application state): the scopes and audiences it issues tokens for and its lifetimes.
//! Client registration is checked against it, and the token endpoint narrows it per client.

use std::time::Duration;

use crate::config::Config;
use crate::model::client::Client;
use crate::oauth::OAuthError;
use crate::oauth::scope::ScopeSet;

/// The audiences tokens may be issued for: `JWT_AUDIENCE`, a comma-separated list whose first
/// entry is the default, else the issuer itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audiences(Vec<String>);

impl Audiences {
    pub fn new(jwt_audience: Option<&str>, issuer: &str) -> Self {
        let mut list: Vec<String> = Vec::new();
        for audience in jwt_audience.unwrap_or_default().split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if !list.iter().any(|known| known == audience) {
                list.push(audience.to_string());
            }
        }
        if list.is_empty() {
            list.push(issuer.to_string());
        }
        Self(list)
    }

    pub fn from_config(config: &Config) -> Self {
        Self::new(config.jwt.audience.as_deref(), &config.issuer)
    }

    pub fn default_audience(&self) -> &str {
        // `new` never leaves the list empty.
        self.0.first().map(String::as_str).unwrap_or_default()
    }

    pub fn contains(&self, audience: &str) -> bool {
        self.0.iter().any(|a| a == audience)
    }

    /// RFC 8707: a `resource` must be an absolute URI without a fragment, and (here) one of the
    /// audiences, compared as exact strings. None picks the first.
    pub fn select(&self, resource: Option<&str>) -> Result<&str, OAuthError> {
        let Some(resource) = resource else {
            return Ok(self.default_audience());
        };
        let absolute = url::Url::parse(resource).is_ok_and(|url| url.fragment().is_none());
        if !absolute {
            return Err(OAuthError::invalid_target("resource must be an absolute URI without a fragment"));
        }
        self.0
            .iter()
            .find(|a| *a == resource)
            .map(String::as_str)
            .ok_or_else(|| OAuthError::invalid_target("resource is not an audience this client may request"))
    }

    /// The audiences `client` may request: the server's default audience, and those it registered
    /// (`allowed_audiences`) that are still ours. The default stays the default.
    pub fn for_client(&self, client: &Client) -> Audiences {
        let default = self.default_audience();
        Audiences(self.0.iter().filter(|a| client.allows_audience(a, default)).cloned().collect())
    }
}

/// The server's policy: what a registration is checked against and what the token endpoint
/// grants at most. Built once at start into `AppState.rules`; truxectl builds it from the
/// configuration it loads.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `Config::scopes_supported()`: the standard scopes plus `TRUXE_SCOPES`.
    pub scopes_supported: Vec<String>,
    /// The same as a set, for narrowing grants to what the server still supports.
    pub scopes: ScopeSet,
    /// `JWT_AUDIENCE` (else the issuer): what `allowed_audiences` and `introspection_audiences`
    /// may name.
    pub audiences: Audiences,
    /// The server's lifetimes in seconds, the most a client may register: `ACCESS_TOKEN_EXPIRY`,
    /// `REFRESH_TOKEN_EXPIRY`, `OAUTH_AUTHORIZATION_CODE_EXPIRY`.
    pub access_token_ttl: i64,
    pub refresh_token_ttl: i64,
    pub authorization_code_ttl: i64,
    /// `REFRESH_TOKEN_MAX_AGE`: how long a family of refresh tokens lives from the code exchange,
    /// however often it is rotated.
    pub refresh_family_ttl: i64,
}

impl Rules {
    pub fn from_config(config: &Config) -> Self {
        // As the token code counts them: whole seconds, at least one.
        let seconds = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1);
        Rules {
            scopes_supported: config.scopes_supported(),
            scopes: config.scope_set(),
            audiences: Audiences::from_config(config),
            access_token_ttl: seconds(config.access_token_ttl),
            refresh_token_ttl: seconds(config.refresh_token_ttl),
            authorization_code_ttl: seconds(config.oauth.authorization_code_ttl),
            refresh_family_ttl: seconds(config.refresh_token_max_age),
        }
    }
}
