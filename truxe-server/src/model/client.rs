//! A registered OAuth client.

use crate::oauth::scope::ScopeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStatus {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
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
}

#[cfg(test)]
impl Client {
    /// An active public client for unit tests; each test overrides what it is about.
    pub fn example() -> Client {
        Client {
            client_id: "cl_app".into(),
            client_name: "App".into(),
            secret_hash: None,
            previous_secret_hash: None,
            previous_secret_expires_at: None,
            token_endpoint_auth_method: AuthMethod::None,
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            allowed_scopes: ScopeSet::parse("openid email profile offline_access").expect("scopes"),
            redirect_uris: vec!["https://app.example/cb".into()],
            post_logout_redirect_uris: vec![],
            require_pkce: true,
            require_consent: true,
            trusted: false,
            client_uri: None,
            logo_uri: None,
            tos_uri: None,
            policy_uri: None,
            status: ClientStatus::Active,
            created_at: 0,
            updated_at: 0,
        }
    }
}

pub const CLIENT_ID_PREFIX: &str = "cl_";

/// Whether a presented client_id could be one of ours; anything else (NUL bytes, SQL
/// metacharacters, kilobytes of text) is refused before it reaches the database.
pub fn is_plausible_client_id(value: &str) -> bool {
    value.len() <= CLIENT_ID_PREFIX.len() + 64
        && value.strip_prefix(CLIENT_ID_PREFIX).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
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
    fn plausible_client_ids() {
        assert!(is_plausible_client_id("cl_abcDEF012-_"));
        for bad in ["", "cl_", "abc", "cl_a'b", "cl_a\0", "cl_a b", &format!("cl_{}", "a".repeat(65))] {
            assert!(!is_plausible_client_id(bad), "{bad:?}");
        }
    }
}
