//! Private halves of generated signing keys at rest: AES-256-GCM under a key derived from
//! `SESSION_SECRET`, which every instance of one deployment shares.
//!
//! The database alone (a backup, a replica, a read-only SQL account) then does not give away a
//! key that signs tokens. The key's `kid` is the associated data, so a sealed key copied onto
//! another row does not open.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};

use crate::secret::Secret;

/// Marks the format (and the derivation label below) so that a later scheme can coexist.
const VERSION: &str = "v1.";
const DERIVATION_LABEL: &[u8] = b"truxe signing-key encryption v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Wrong key (another `SESSION_SECRET`), or the stored value was altered.
    #[error("it does not decrypt with this SESSION_SECRET")]
    WrongSecret,
    #[error("the stored value is not a sealed key ({0})")]
    Malformed(&'static str),
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// The AES-256 key: HMAC-SHA256(SESSION_SECRET, label). Never leaves this module unwrapped.
#[derive(Clone)]
pub struct SealingKey(Secret<Vec<u8>>);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey([redacted])")
    }
}

impl SealingKey {
    pub fn derive(session_secret: &Secret<String>) -> Self {
        let key = crate::oauth::client_secret::hmac_sha256(session_secret.secret().as_bytes(), DERIVATION_LABEL);
        Self(Secret::new(key))
    }

    /// A one-way fingerprint of the key (HMAC of a fixed label), recorded by every server start,
    /// so that `truxectl keys rotate` can tell it seals under the servers' `SESSION_SECRET`
    /// before it publishes a key they could not open.
    pub fn fingerprint(&self) -> String {
        let mac = crate::oauth::client_secret::hmac_sha256(self.0.secret(), b"truxe signing-key seal check v1");
        URL_SAFE_NO_PAD.encode(&mac[..mac.len().min(16)])
    }

    /// `v1.` + base64url(nonce ‖ ciphertext ‖ tag), with a fresh random nonce.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut tag = [0u8; TAG_LEN];
        let ciphertext =
            encrypt_aead(Cipher::aes_256_gcm(), self.0.secret(), Some(&nonce), kid.as_bytes(), plaintext, &mut tag)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out.extend_from_slice(&tag);
        Ok(format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    pub fn open(&self, kid: &str, sealed: &str) -> Result<Secret<Vec<u8>>, SealError> {
        let encoded = sealed.strip_prefix(VERSION).ok_or(SealError::Malformed("unknown version"))?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| SealError::Malformed("not base64url"))?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed("too short"));
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        decrypt_aead(Cipher::aes_256_gcm(), self.0.secret(), Some(nonce), kid.as_bytes(), ciphertext, tag)
            .map(Secret::new)
            .map_err(|_| SealError::WrongSecret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> SealingKey {
        SealingKey::derive(&Secret::new(secret.to_string()))
    }

    #[test]
    fn seals_and_opens() {
        let k = key("a session secret of the deployment");
        let sealed = k.seal("kid-1", b"-----BEGIN PRIVATE KEY-----").expect("seal");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("PRIVATE"));
        assert_eq!(k.open("kid-1", &sealed).expect("open").secret(), b"-----BEGIN PRIVATE KEY-----");
        // A fresh nonce every time.
        assert_ne!(sealed, k.seal("kid-1", b"-----BEGIN PRIVATE KEY-----").expect("seal"));
    }

    #[test]
    fn another_secret_another_kid_or_a_changed_byte_do_not_open() {
        let k = key("a session secret of the deployment");
        let sealed = k.seal("kid-1", b"private").expect("seal");
        assert!(matches!(key("another secret").open("kid-1", &sealed), Err(SealError::WrongSecret)));
        assert!(matches!(k.open("kid-2", &sealed), Err(SealError::WrongSecret)), "bound to its kid");
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed[3..]).expect("b64");
        bytes[NONCE_LEN] ^= 1;
        let altered = format!("v1.{}", URL_SAFE_NO_PAD.encode(bytes));
        assert!(matches!(k.open("kid-1", &altered), Err(SealError::WrongSecret)));
        for garbage in ["", "v2.AAAA", "v1.!!!", "v1.AAAA"] {
            assert!(matches!(k.open("kid-1", garbage), Err(SealError::Malformed(_))), "{garbage}");
        }
    }

    #[test]
    fn the_fingerprint_tells_keys_apart_without_showing_them() {
        let k = key("a session secret of the deployment");
        assert_eq!(k.fingerprint(), key("a session secret of the deployment").fingerprint());
        assert_ne!(k.fingerprint(), key("another secret").fingerprint());
        assert_eq!(k.fingerprint().len(), 22);
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", key("s")), "SealingKey([redacted])");
    }
}
