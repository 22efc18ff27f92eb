//! ID token claims (OIDC Core §2, §3.1.3.6).

use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};

use crate::keys::Algorithm;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    pub amr: Vec<String>,
    /// With a single audience azp is optional; sent anyway since some relying parties check it.
    pub azp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `at_hash`: base64url of the left half of the hash of the access token's ASCII octets, the
/// hash being the one of the ID token's `alg` (SHA-512 for Ed25519).
pub fn at_hash(access_token: &str, alg: Algorithm) -> String {
    let digest: Vec<u8> = match alg {
        Algorithm::RS256 | Algorithm::ES256 => Sha256::digest(access_token.as_bytes()).to_vec(),
        Algorithm::EdDSA => Sha512::digest(access_token.as_bytes()).to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OIDC Core Appendix A.3 (RS256): access token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
    /// at_hash "77QmUPtjPfzWtF2AnpK9RQ".
    #[test]
    fn oidc_core_example_at_hash() {
        assert_eq!(at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y", Algorithm::RS256), "77QmUPtjPfzWtF2AnpK9RQ");
    }

    #[test]
    fn eddsa_uses_sha512() {
        assert_eq!(at_hash("token", Algorithm::EdDSA).len(), 43);
        assert_eq!(at_hash("token", Algorithm::RS256).len(), 22);
    }
}
