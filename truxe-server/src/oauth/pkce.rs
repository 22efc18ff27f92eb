//! PKCE (RFC 7636), S256 only: `plain` gives no protection once the request leaks.

use base64::Engine;
use sha2::{Digest, Sha256};

/// code-verifier / code-challenge = 43*128 unreserved characters.
fn is_pkce_string(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

pub fn is_valid_challenge(challenge: &str) -> bool {
    // base64url(SHA-256) is always 43 characters.
    challenge.len() == 43 && is_pkce_string(challenge)
}

pub fn s256_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` matches the stored S256 `challenge`, compared in constant time.
pub fn verify(verifier: &str, challenge: &str) -> bool {
    if !is_pkce_string(verifier) {
        return false;
    }
    let computed = s256_challenge(verifier);
    computed.len() == challenge.len() && openssl::memcmp::eq(computed.as_bytes(), challenge.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(s256_challenge(verifier), challenge);
        assert!(verify(verifier, challenge));
        assert!(is_valid_challenge(challenge));
    }

    #[test]
    fn wrong_or_malformed_verifiers_fail() {
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(!verify("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl", challenge));
        assert!(!verify("short", &s256_challenge("short")), "verifiers under 43 characters are invalid");
        let long = "a".repeat(129);
        assert!(!verify(&long, &s256_challenge(&long)));
        let bad_chars = format!("{}+", "a".repeat(43));
        assert!(!verify(&bad_chars, &s256_challenge(&bad_chars)));
        assert!(!is_valid_challenge("plain-text-challenge"));
    }
}
