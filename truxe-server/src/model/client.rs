//! A registered OAuth client.

pub use super::ClientId;
use crate::oauth::scope::ScopeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    /// A public client (SPA, native app): no secret, PKCE required.
    None,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 3] = [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost, AuthMethod::None];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::None => "none",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == value)
    }

    pub fn is_confidential(self) -> bool {
        self != AuthMethod::None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

impl GrantType {
    pub const ALL: [GrantType; 3] =
        [GrantType::AuthorizationCode, GrantType::RefreshToken, GrantType::ClientCredentials];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientStatus {
    #[default]
    Active,
    Suspended,
    Revoked,
}

impl ClientStatus {
    pub const ALL: [ClientStatus; 3] = [ClientStatus::Active, ClientStatus::Suspended, ClientStatus::Revoked];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientStatus::Active => "active",
            ClientStatus::Suspended => "suspended",
            ClientStatus::Revoked => "revoked",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// `Default` is a blank, unregistered client (no id, no settings), for building one. The serde
/// form is the shared client cache's (`oauth:client:{client_id}` in Redis), not an API.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Client {
    pub client_id: ClientId,
    pub client_name: String,
    pub secret_hash: Option<String>,
    pub previous_secret_hash: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub token_endpoint_auth_method: AuthMethod,
    pub grant_types: Vec<GrantType>,
    pub allowed_scopes: ScopeSet,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub require_pkce: bool,
    pub require_consent: bool,
    pub trusted: bool,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub tos_uri: Option<String>,
    pub policy_uri: Option<String>,
    /// Audiences besides the server's default that the client may ask tokens for with
    /// `resource` (RFC 8707); each was one of `JWT_AUDIENCE` when registered. See
    /// [`Client::allows_audience`].
    pub allowed_audiences: Vec<String>,
    /// Audiences for which this client is a resource server: it may introspect tokens issued for
    /// them (RFC 7662 §4). Only ever set on confidential clients. See [`Client::introspects_for`].
    pub introspection_audiences: Vec<String>,
    /// Lifetimes in seconds (each at least 1) that override the server's when shorter; `None`:
    /// the server's. Read them through [`Client::access_token_ttl`] and its siblings.
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
    pub authorization_code_ttl: Option<i64>,
    pub status: ClientStatus,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Client {
    pub fn is_active(&self) -> bool {
        self.status == ClientStatus::Active
    }

    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// Whether the client may get a token for `audience`: the server's default audience always,
    /// any other only when listed in `allowed_audiences`. The caller has already checked that
    /// the server issues tokens for `audience` at all (`Audiences::select` in service/policy.rs,
    /// whose `default_audience()` is the `default_audience` here): a registered audience that
    /// was later removed from `JWT_AUDIENCE` is refused there.
    pub fn allows_audience(&self, audience: &str, default_audience: &str) -> bool {
        audience == default_audience || self.allowed_audiences.iter().any(|a| a == audience)
    }

    /// Whether the client, as the resource server for `audience`, may introspect a token issued
    /// for it (besides tokens issued to itself, which is the introspection endpoint's own rule).
    pub fn introspects_for(&self, audience: &str) -> bool {
        self.token_endpoint_auth_method.is_confidential() && self.introspection_audiences.iter().any(|a| a == audience)
    }

    /// Access-token lifetime in seconds: the client's own when set and shorter, else `server`'s
    /// (`ACCESS_TOKEN_EXPIRY`).
    pub fn access_token_ttl(&self, server: i64) -> i64 {
        shorter(self.access_token_ttl, server)
    }

    /// Refresh-token lifetime in seconds: the client's own when set and shorter, else `server`'s
    /// (`REFRESH_TOKEN_EXPIRY`).
    pub fn refresh_token_ttl(&self, server: i64) -> i64 {
        shorter(self.refresh_token_ttl, server)
    }

    /// Authorization-code lifetime in seconds: the client's own when set and shorter, else
    /// `server`'s (`OAUTH_AUTHORIZATION_CODE_EXPIRY`).
    pub fn authorization_code_ttl(&self, server: i64) -> i64 {
        shorter(self.authorization_code_ttl, server)
    }
}

/// A registered lifetime never extends the server's, also after the server's was lowered.
fn shorter(own: Option<i64>, server: i64) -> i64 {
    own.map_or(server, |own| own.min(server))
}

#[cfg(test)]
impl Client {
    /// An active public client for unit tests; each test overrides what it is about.
    pub fn example() -> Client {
        Client {
            client_id: "cl_app".into(),
            client_name: "App".into(),
            token_endpoint_auth_method: AuthMethod::None,
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            allowed_scopes: ScopeSet::parse("openid email profile offline_access").expect("scopes"),
            redirect_uris: vec!["https://app.example/cb".into()],
            require_pkce: true,
            require_consent: true,
            ..Client::default()
        }
    }
}

pub const CLIENT_ID_PREFIX: &str = "cl_";

/// Whether a presented client_id could be one of ours (see [`ClientId::parse`]).
pub fn is_plausible_client_id(value: &str) -> bool {
    ClientId::parse(value).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip() {
        for m in AuthMethod::ALL {
            assert_eq!(AuthMethod::parse(m.as_str()), Some(m));
        }
        for g in GrantType::ALL {
            assert_eq!(GrantType::parse(g.as_str()), Some(g));
        }
        for s in ClientStatus::ALL {
            assert_eq!(ClientStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(GrantType::parse("password"), None);
    }

    #[test]
    fn lifetimes_are_the_shorter_of_client_and_server() {
        let mut client = Client::example();
        assert_eq!(
            (client.access_token_ttl(900), client.refresh_token_ttl(604_800), client.authorization_code_ttl(600)),
            (900, 604_800, 600)
        );
        client.access_token_ttl = Some(300);
        client.refresh_token_ttl = Some(86_400);
        client.authorization_code_ttl = Some(60);
        assert_eq!(
            (client.access_token_ttl(900), client.refresh_token_ttl(604_800), client.authorization_code_ttl(600)),
            (300, 86_400, 60)
        );
        // The server's limit was lowered after registration.
        assert_eq!(
            (client.access_token_ttl(120), client.refresh_token_ttl(3_600), client.authorization_code_ttl(30)),
            (120, 3_600, 30)
        );
    }

    #[test]
    fn audiences() {
        let mut client = Client::example();
        assert!(client.allows_audience("https://api.example", "https://api.example"));
        assert!(!client.allows_audience("https://reports.example", "https://api.example"));
        client.allowed_audiences = vec!["https://reports.example".into()];
        assert!(client.allows_audience("https://reports.example", "https://api.example"));
        assert!(client.allows_audience("https://api.example", "https://api.example"), "the default stays");
        assert!(!client.allows_audience("https://other.example", "https://api.example"));

        client.introspection_audiences = vec!["https://reports.example".into()];
        assert!(!client.introspects_for("https://reports.example"), "a public client never introspects");
        client.token_endpoint_auth_method = AuthMethod::ClientSecretBasic;
        assert!(client.introspects_for("https://reports.example"));
        assert!(!client.introspects_for("https://api.example"));
    }

    #[test]
    fn plausible_client_ids() {
        assert!(is_plausible_client_id("cl_abcDEF012-_"));
        for bad in ["", "cl_", "abc", "cl_a'b", "cl_a\0", "cl_a b", &format!("cl_{}", "a".repeat(65))] {
            assert!(!is_plausible_client_id(bad), "{bad:?}");
        }
    }
}
