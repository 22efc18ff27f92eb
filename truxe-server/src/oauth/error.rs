//! The one OAuth error type; its `Display` is the RFC error code.

use std::fmt;

/// Error codes of RFC 6749 §4.1.2.1/§5.2, RFC 7009, RFC 8707 and OIDC Core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    InvalidTarget,
    UnsupportedTokenType,
    AccessDenied,
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    ServerError,
    TemporarilyUnavailable,
    /// OIDC Core §3.1.2.6: a `request` object was sent; we support none.
    RequestNotSupported,
    /// OIDC Core §3.1.2.6: a `request_uri` was sent; we support none.
    RequestUriNotSupported,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::InteractionRequired => "interaction_required",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::RequestNotSupported => "request_not_supported",
            ErrorCode::RequestUriNotSupported => "request_uri_not_supported",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
}

/// `error_description` is limited to %x20-21 / %x23-5B / %x5D-7E (RFC 6749 §4.1.2.1, §5.2):
/// anything else (quotes, backslashes, control characters, non-ASCII from a request echoed in
/// a message) becomes `?`, so that no description can break a header, a URL or a JSON reader.
pub fn sanitize_description(description: &str) -> String {
    description
        .chars()
        .map(|c| match c {
            '\x20'..='\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E' => c,
            _ => '?',
        })
        .collect()
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self { code, description: sanitize_description(&description.into()) }
    }
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }
    pub fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnauthorizedClient, description)
    }
    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnsupportedGrantType, description)
    }
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidScope, description)
    }
    pub fn invalid_target(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidTarget, description)
    }
    pub fn server_error(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServerError, description)
    }
    pub fn temporarily_unavailable(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::TemporarilyUnavailable, description)
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code.as_str())
    }
}

impl std::error::Error for OAuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_keep_to_the_rfc_character_set() {
        let error = OAuthError::invalid_request("nonce \"a\\b\u{0}\n\u{1F600}\" is bad");
        assert_eq!(error.description, "nonce ?a?b???? is bad");
        assert!(error.description.bytes().all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)));
        assert_eq!(OAuthError::invalid_grant("plain text: ok (1-2)").description, "plain text: ok (1-2)");
    }
}
