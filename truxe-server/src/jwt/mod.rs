//! JWTs on OpenSSL: the jsonwebtoken `CryptoProvider` Truxe installs, and the encoding and
//! verification of its RFC 9068 access tokens.
//!
//! jsonwebtoken 12 hands every signature to a process-wide `CryptoProvider`. Its built-in ones
//! are pure Rust (RS256 about 8x slower than OpenSSL) or aws-lc (a second C crypto library next
//! to OpenSSL), so Truxe brings one on the `openssl` crate. It must be installed before the first
//! encode or decode: whichever provider is asked for first stays for the life of the process.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use jsonwebtoken::errors::{Error as LibError, ErrorKind};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm as JwsAlgorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::keys::{Algorithm, PublicKey, SigningKey};
use crate::model::{ClientId, GrantId, Jti};

/// RFC 9068 §2.1: the `typ` header of a JWT access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Longer strings are not parsed at all: our tokens are well under 2 KB.
const MAX_TOKEN_LEN: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error(
        "jsonwebtoken uses another CryptoProvider than Truxe's OpenSSL one: a crate enabled jsonwebtoken's \
         rust_crypto or aws_lc_rs feature and used it before the server started"
    )]
    ForeignProvider,
    #[error("JWT: {0}")]
    Jwt(#[from] LibError),
    #[error("the signing key's public JWK is unusable: {0}")]
    Jwk(#[from] serde_json::Error),
    #[error("signing key {0} is published only: this process does not hold its private half")]
    PublishedOnly(String),
    #[error("no signing key can be used: {0}")]
    NoSigningKey(String),
}

mod provider;

pub use provider::{OPENSSL_PROVIDER, install_provider};

// ---------------------------------------------------------------------------------------------
// RFC 9068 access tokens

/// The claims of a Truxe access token (RFC 9068 §2.2). `aud` is one audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: Jti,
    pub client_id: ClientId,
    /// Space-separated; absent when no scope was granted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// When the user authenticated (RFC 9068 §2.2.1); tokens for a user only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// The grant (`oauth_grants`) the token belongs to, so that revoking a grant revokes its
    /// access tokens too; tokens for a user only. A private claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<GrantId>,
}

/// The `typ` header of an ID token (OIDC Core §5.4 of RFC 7519's recommendation).
pub const ID_TOKEN_TYP: &str = "JWT";

/// What an `id_token_hint` (OIDC RP-Initiated Logout §2) tells once verified.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IdTokenHint {
    pub iss: String,
    pub sub: String,
    /// Our ID tokens have one audience, the client.
    pub aud: String,
}

/// Why a presented token is not an active access token of ours. Introspection answers
/// `{"active": false}` for all of them alike; the reason is for debug logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a JWS, or its header or claims do not parse.
    Malformed,
    /// A JWT, but not typed `at+jwt`.
    NotAnAccessToken,
    /// Another `kid` or `alg` than our signing key's.
    OtherKey,
    BadSignature,
    WrongIssuer,
    Expired,
}

/// A signing key in jsonwebtoken's terms, built once per key: the encoding key from the
/// private PEM (absent for a key this process only publishes), the decoding key from the public
/// JWK exactly as a resource server builds it.
pub struct TokenKeys {
    kid: String,
    alg: JwsAlgorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn new(key: &SigningKey) -> Result<Self, JwtError> {
        install_provider()?;
        let pem = key.private_pem();
        let pem = pem.secret().as_bytes();
        let (alg, encoding) = match key.algorithm() {
            Algorithm::RS256 => (JwsAlgorithm::RS256, EncodingKey::from_rsa_pem(pem)?),
            Algorithm::ES256 => (JwsAlgorithm::ES256, EncodingKey::from_ec_pem(pem)?),
            Algorithm::EdDSA => (JwsAlgorithm::EdDSA, EncodingKey::from_ed_pem(pem)?),
        };
        let jwk: Jwk = serde_json::from_value(key.public_jwk())?;
        let decoding = DecodingKey::from_jwk(&jwk)?;
        Ok(Self { kid: key.kid().to_string(), alg, encoding: Some(encoding), decoding })
    }

    /// Verification only: a published key whose private half this process does not hold.
    pub fn published(key: &PublicKey) -> Result<Self, JwtError> {
        install_provider()?;
        let jwk: Jwk = serde_json::from_value(key.public_jwk())?;
        let decoding = DecodingKey::from_jwk(&jwk)?;
        Ok(Self { kid: key.kid().to_string(), alg: jws_algorithm(key.algorithm()), encoding: None, decoding })
    }

    /// Whether this process can sign with the key (it holds the private half).
    pub fn can_sign(&self) -> bool {
        self.encoding.is_some()
    }

    fn encoding(&self) -> Result<&EncodingKey, JwtError> {
        self.encoding.as_ref().ok_or_else(|| JwtError::PublishedOnly(self.kid.clone()))
    }

    /// The keys for `key`, built on first use and kept for the process (by `kid`, the RFC 7638
    /// thumbprint, so one entry per key pair), so that issuing a token costs one signature and
    /// no PEM parsing.
    pub fn shared(key: &SigningKey) -> Result<Arc<Self>, JwtError> {
        static BY_KID: OnceLock<RwLock<HashMap<String, Arc<TokenKeys>>>> = OnceLock::new();
        let map = BY_KID.get_or_init(Default::default);
        if let Some(keys) = map.read().unwrap_or_else(|p| p.into_inner()).get(key.kid()) {
            return Ok(keys.clone());
        }
        let keys = Arc::new(Self::new(key)?);
        let mut map = map.write().unwrap_or_else(|p| p.into_inner());
        Ok(map.entry(key.kid().to_string()).or_insert(keys).clone())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> JwsAlgorithm {
        self.alg
    }

    /// A signed `at+jwt` under our `kid`.
    pub fn encode(&self, claims: &AccessTokenClaims) -> Result<String, JwtError> {
        install_provider()?;
        let mut header = Header::new(self.alg);
        header.typ = Some(ACCESS_TOKEN_TYP.to_string());
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, self.encoding()?)?)
    }

    /// A signed ID token (typed `JWT`) under our `kid`.
    pub fn encode_id_token(&self, claims: &impl Serialize) -> Result<String, JwtError> {
        install_provider()?;
        let mut header = Header::new(self.alg);
        header.typ = Some(ID_TOKEN_TYP.to_string());
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, self.encoding()?)?)
    }

    /// Decodes a token signed by this key: `typ` as `expect_typ` requires, our `kid` and `alg`,
    /// a valid signature, our issuer. Time checks are the callers' (jsonwebtoken would read the
    /// clock itself and allow 60 s of leeway); audience checks do not apply to our own tokens.
    fn decode_ours<T: serde::de::DeserializeOwned + HasIssuer>(
        &self,
        token: &str,
        issuer: &str,
        expect_typ: impl Fn(Option<&str>) -> Result<(), Rejection>,
    ) -> Result<T, Rejection> {
        if token.len() > MAX_TOKEN_LEN || install_provider().is_err() {
            return Err(Rejection::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        expect_typ(header.typ.as_deref())?;
        if header.kid.as_deref() != Some(self.kid.as_str()) || header.alg != self.alg {
            return Err(Rejection::OtherKey);
        }
        let mut validation = jsonwebtoken::Validation::new(self.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<T>(token, &self.decoding, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => Rejection::BadSignature,
                ErrorKind::InvalidAlgorithm => Rejection::OtherKey,
                _ => Rejection::Malformed,
            })?
            .claims;
        if claims.issuer() != issuer {
            return Err(Rejection::WrongIssuer);
        }
        Ok(claims)
    }

    /// Checks that `token` is an ID token we issued (not an access token). Expiry is
    /// deliberately not checked: an `id_token_hint` is usually expired by the time the user
    /// signs out.
    pub fn verify_id_token_hint(&self, token: &str, issuer: &str) -> Result<IdTokenHint, Rejection> {
        // An access token is no ID token, even though both are ours.
        self.decode_ours(
            token,
            issuer,
            |typ| {
                if typ == Some(ACCESS_TOKEN_TYP) { Err(Rejection::Malformed) } else { Ok(()) }
            },
        )
    }

    /// Checks that `token` is an access token we issued that is live at `now`: typed
    /// `at+jwt`, our `kid` and `alg`, a valid signature, our issuer, `exp` after `now`.
    /// Revocation is the caller's business (it needs the database).
    pub fn verify(&self, token: &str, issuer: &str, now: i64) -> Result<AccessTokenClaims, Rejection> {
        let claims: AccessTokenClaims = self.decode_ours(token, issuer, |typ| {
            if typ == Some(ACCESS_TOKEN_TYP) { Ok(()) } else { Err(Rejection::NotAnAccessToken) }
        })?;
        if claims.exp <= now {
            return Err(Rejection::Expired);
        }
        Ok(claims)
    }
}

/// Our algorithm in jsonwebtoken's terms.
pub fn jws_algorithm(alg: Algorithm) -> JwsAlgorithm {
    match alg {
        Algorithm::RS256 => JwsAlgorithm::RS256,
        Algorithm::ES256 => JwsAlgorithm::ES256,
        Algorithm::EdDSA => JwsAlgorithm::EdDSA,
    }
}

/// The `kid` in a token's header, without checking anything else (to pick the key that will).
pub fn header_kid(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    jsonwebtoken::decode_header(token).ok()?.kid
}

/// The issuer of a decoded token, for [`TokenKeys::decode_ours`].
trait HasIssuer {
    fn issuer(&self) -> &str;
}

impl HasIssuer for AccessTokenClaims {
    fn issuer(&self) -> &str {
        &self.iss
    }
}

impl HasIssuer for IdTokenHint {
    fn issuer(&self) -> &str {
        &self.iss
    }
}

#[cfg(test)]
mod tests;
