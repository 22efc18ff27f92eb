//! JWTs on OpenSSL: the jsonwebtoken `CryptoProvider` Truxe installs, and the encoding and
//! verification of its RFC 9068 access tokens.
//!
//! jsonwebtoken 12 hands every signature to a process-wide `CryptoProvider`. Its built-in ones
//! are pure Rust (RS256 about 8x slower than OpenSSL) or aws-lc (a second C crypto library next
//! to OpenSSL), so Truxe brings one on the `openssl` crate. It must be installed before the first
//! encode or decode: whichever provider is asked for first stays for the life of the process.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error as LibError, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, Jwk, ThumbprintHash};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm as JwsAlgorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey, Header};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::sign::{Signer, Verifier};
use serde::{Deserialize, Serialize};

use crate::keys::{Algorithm, SigningKey};

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
}

// ---------------------------------------------------------------------------------------------
// The CryptoProvider

/// jsonwebtoken's crypto on OpenSSL: RS256, ES256 and EdDSA (the algorithms of `JWT_ALGORITHM`).
pub static OPENSSL_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key,
        ed_pub_components_from_private_key,
        compute_digest,
    },
};

/// Installs [`OPENSSL_PROVIDER`] as jsonwebtoken's process default. Idempotent; fails when
/// another provider was installed (or picked from crate features by an earlier encode/decode),
/// so that nobody signs tokens at a fraction of the speed without noticing.
pub fn install_provider() -> Result<(), JwtError> {
    // `install_default` reports failure with our own pointer, not the installed one, so look.
    let _ = CryptoProvider::install_default(&OPENSSL_PROVIDER);
    match CryptoProvider::try_get_default() {
        Some(provider) if std::ptr::eq(provider, &OPENSSL_PROVIDER) => Ok(()),
        _ => Err(JwtError::ForeignProvider),
    }
}

/// The key types of the supported algorithms.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    Ed25519,
}

impl KeyKind {
    fn of(alg: JwsAlgorithm) -> Result<Self, LibError> {
        match alg {
            JwsAlgorithm::RS256 => Ok(KeyKind::Rsa),
            JwsAlgorithm::ES256 => Ok(KeyKind::P256),
            JwsAlgorithm::EdDSA => Ok(KeyKind::Ed25519),
            _ => Err(ErrorKind::UnsupportedAlgorithm.into()),
        }
    }

    fn family(self) -> AlgorithmFamily {
        match self {
            KeyKind::Rsa => AlgorithmFamily::Rsa,
            KeyKind::P256 => AlgorithmFamily::Ec,
            KeyKind::Ed25519 => AlgorithmFamily::Ed,
        }
    }

    fn invalid_key(self) -> LibError {
        match self {
            KeyKind::Rsa => ErrorKind::InvalidRsaKey("not a usable RSA key".to_string()).into(),
            KeyKind::P256 => ErrorKind::InvalidEcdsaKey.into(),
            KeyKind::Ed25519 => ErrorKind::InvalidEddsaKey.into(),
        }
    }
}

/// Parsed OpenSSL keys by SHA-256 of their encoding: decoding a DER private key costs more than
/// an Ed25519 signature, and jsonwebtoken asks for a new signer on every token. Keyed by a digest
/// so that the cache holds no second copy of private key bytes. Bounded; a server has one or two
/// keys (current and previous), tests a few more.
struct KeyCache<T> {
    entries: RwLock<Vec<([u8; 32], PKey<T>)>>,
}

const KEY_CACHE_CAPACITY: usize = 16;

impl<T> KeyCache<T> {
    const fn new() -> Self {
        Self { entries: RwLock::new(Vec::new()) }
    }

    fn get_or_parse(
        &self,
        id: [u8; 32],
        parse: impl FnOnce() -> Result<PKey<T>, LibError>,
    ) -> Result<PKey<T>, LibError> {
        {
            let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some((_, pkey)) = entries.iter().find(|(key, _)| *key == id) {
                return Ok(pkey.clone());
            }
        }
        let pkey = parse()?;
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !entries.iter().any(|(key, _)| *key == id) {
            if entries.len() >= KEY_CACHE_CAPACITY {
                entries.remove(0);
            }
            entries.push((id, pkey.clone()));
        }
        Ok(pkey)
    }
}

static PRIVATE_KEYS: KeyCache<Private> = KeyCache::new();
static PUBLIC_KEYS: KeyCache<Public> = KeyCache::new();

fn cache_id(kind: KeyKind, parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(&[kind as u8]);
    for part in parts {
        hasher.update(&(part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finish()
}

fn openssl_error(error: openssl::error::ErrorStack) -> LibError {
    ErrorKind::Provider(error.to_string()).into()
}

fn new_signer(alg: &JwsAlgorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, LibError> {
    let kind = KeyKind::of(*alg)?;
    if key.family() != kind.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let der = key.as_bytes();
    let pkey = PRIVATE_KEYS.get_or_parse(cache_id(kind, &[der]), || parse_private_der(kind, der))?;
    Ok(Box::new(OpenSslSigner { alg: *alg, kind, pkey }))
}

/// jsonwebtoken's encoding keys: PKCS#1 (or PKCS#8) DER for RSA, PKCS#8 DER for EC and Ed25519.
fn parse_private_der(kind: KeyKind, der: &[u8]) -> Result<PKey<Private>, LibError> {
    let pkey = PKey::private_key_from_der(der).map_err(|_| kind.invalid_key())?;
    check_key_kind(kind, &pkey)?;
    Ok(pkey)
}

fn check_key_kind<T: HasPublic>(kind: KeyKind, pkey: &PKey<T>) -> Result<(), LibError> {
    let matches = match kind {
        KeyKind::Rsa => pkey.id() == Id::RSA,
        KeyKind::P256 => {
            pkey.id() == Id::EC
                && pkey.ec_key().map(|ec| ec.group().curve_name() == Some(Nid::X9_62_PRIME256V1)).unwrap_or(false)
        }
        KeyKind::Ed25519 => pkey.id() == Id::ED25519,
    };
    if matches { Ok(()) } else { Err(kind.invalid_key()) }
}

fn new_verifier(alg: &JwsAlgorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, LibError> {
    let kind = KeyKind::of(*alg)?;
    if key.family() != kind.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let pkey = match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => {
            PUBLIC_KEYS.get_or_parse(cache_id(kind, &[bytes]), || parse_public_bytes(kind, bytes))?
        }
        DecodingKeyKind::RsaModulusExponent { n, e } if kind == KeyKind::Rsa => {
            PUBLIC_KEYS.get_or_parse(cache_id(kind, &[n, e]), || {
                let rsa = BigNum::from_slice(n)
                    .and_then(|n| Ok((n, BigNum::from_slice(e)?)))
                    .and_then(|(n, e)| Rsa::from_public_components(n, e))
                    .map_err(|_| kind.invalid_key())?;
                PKey::from_rsa(rsa).map_err(openssl_error)
            })?
        }
        DecodingKeyKind::RsaModulusExponent { .. } => return Err(ErrorKind::InvalidKeyFormat.into()),
    };
    Ok(Box::new(OpenSslVerifier { alg: *alg, kind, pkey }))
}

/// jsonwebtoken's decoding keys: PKCS#1 DER (or SPKI) for RSA, the uncompressed SEC1 point for
/// EC, the raw 32 bytes for Ed25519.
fn parse_public_bytes(kind: KeyKind, bytes: &[u8]) -> Result<PKey<Public>, LibError> {
    let pkey = match kind {
        KeyKind::Rsa => Rsa::public_key_from_der_pkcs1(bytes)
            .and_then(PKey::from_rsa)
            .or_else(|_| PKey::public_key_from_der(bytes))
            .map_err(|_| kind.invalid_key())?,
        KeyKind::P256 => {
            let parse = || -> Result<PKey<Public>, openssl::error::ErrorStack> {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
                let mut ctx = BigNumContext::new()?;
                let point = EcPoint::from_bytes(&group, bytes, &mut ctx)?;
                let ec = EcKey::from_public_key(&group, &point)?;
                ec.check_key()?;
                PKey::from_ec_key(ec)
            };
            parse().map_err(|_| kind.invalid_key())?
        }
        KeyKind::Ed25519 => PKey::public_key_from_raw_bytes(bytes, Id::ED25519).map_err(|_| kind.invalid_key())?,
    };
    check_key_kind(kind, &pkey)?;
    Ok(pkey)
}

struct OpenSslSigner {
    alg: JwsAlgorithm,
    kind: KeyKind,
    pkey: PKey<Private>,
}

impl signature::Signer<Vec<u8>> for OpenSslSigner {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        jws_sign(self.kind, &self.pkey, message).map_err(signature::Error::from_source)
    }
}

impl JwtSigner for OpenSslSigner {
    fn algorithm(&self) -> JwsAlgorithm {
        self.alg
    }
}

/// RFC 7518 §3: PKCS#1 v1.5 with SHA-256, raw `r||s` for ES256 (JWS does not use DER), Ed25519.
fn jws_sign(kind: KeyKind, pkey: &PKey<Private>, message: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    match kind {
        KeyKind::Rsa => Signer::new(MessageDigest::sha256(), pkey)?.sign_oneshot_to_vec(message),
        KeyKind::P256 => {
            let der = Signer::new(MessageDigest::sha256(), pkey)?.sign_oneshot_to_vec(message)?;
            let sig = EcdsaSig::from_der(&der)?;
            let mut raw = sig.r().to_vec_padded(32)?;
            raw.extend(sig.s().to_vec_padded(32)?);
            Ok(raw)
        }
        KeyKind::Ed25519 => Signer::new_without_digest(pkey)?.sign_oneshot_to_vec(message),
    }
}

struct OpenSslVerifier {
    alg: JwsAlgorithm,
    kind: KeyKind,
    pkey: PKey<Public>,
}

impl signature::Verifier<Vec<u8>> for OpenSslVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        match jws_verify(self.kind, &self.pkey, message, signature) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(signature::Error::new()),
        }
    }
}

impl JwtVerifier for OpenSslVerifier {
    fn algorithm(&self) -> JwsAlgorithm {
        self.alg
    }
}

fn jws_verify(
    kind: KeyKind,
    pkey: &PKey<Public>,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, openssl::error::ErrorStack> {
    match kind {
        KeyKind::Rsa => Verifier::new(MessageDigest::sha256(), pkey)?.verify_oneshot(signature, message),
        KeyKind::P256 => {
            if signature.len() != 64 {
                return Ok(false);
            }
            let r = BigNum::from_slice(&signature[..32])?;
            let s = BigNum::from_slice(&signature[32..])?;
            let der = EcdsaSig::from_private_components(r, s)?.to_der()?;
            Verifier::new(MessageDigest::sha256(), pkey)?.verify_oneshot(&der, message)
        }
        KeyKind::Ed25519 => Verifier::new_without_digest(pkey)?.verify_oneshot(signature, message),
    }
}

// jsonwebtoken's JWK helpers (`Jwk::from_encoding_key`, thumbprints). The server builds its JWKS
// from `SigningKey::public_jwk`, but a provider that panics on these would be a trap.

fn rsa_pub_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), LibError> {
    let pkey = parse_private_der(KeyKind::Rsa, der)?;
    let rsa = pkey.rsa().map_err(openssl_error)?;
    Ok((rsa.n().to_vec(), rsa.e().to_vec()))
}

fn rsa_pub_components_from_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), LibError> {
    let pkey = parse_public_bytes(KeyKind::Rsa, der)?;
    let rsa = pkey.rsa().map_err(openssl_error)?;
    Ok((rsa.n().to_vec(), rsa.e().to_vec()))
}

fn ec_pub_components_from_private_key(
    der: &[u8],
    alg: JwsAlgorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), LibError> {
    if alg != JwsAlgorithm::ES256 {
        return Err(ErrorKind::UnsupportedAlgorithm.into());
    }
    let pkey = parse_private_der(KeyKind::P256, der)?;
    let ec = pkey.ec_key().map_err(openssl_error)?;
    let coordinates = || -> Result<(Vec<u8>, Vec<u8>), openssl::error::ErrorStack> {
        let mut ctx = BigNumContext::new()?;
        let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
        ec.public_key().affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)?;
        Ok((x.to_vec_padded(32)?, y.to_vec_padded(32)?))
    };
    let (x, y) = coordinates().map_err(openssl_error)?;
    Ok((EllipticCurve::P256, x, y))
}

fn ed_pub_components_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>, LibError> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(ErrorKind::UnsupportedAlgorithm.into());
    }
    parse_private_der(KeyKind::Ed25519, der)?.raw_public_key().map_err(openssl_error)
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, LibError> {
    Ok(match hash {
        ThumbprintHash::SHA256 => openssl::sha::sha256(data).to_vec(),
        ThumbprintHash::SHA384 => openssl::sha::sha384(data).to_vec(),
        ThumbprintHash::SHA512 => openssl::sha::sha512(data).to_vec(),
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    })
}

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
    pub jti: String,
    pub client_id: String,
    /// Space-separated; absent when no scope was granted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// When the user authenticated (RFC 9068 §2.2.1); tokens for a user only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// The grant (`oauth_grants`) the token belongs to, so that revoking a grant revokes its
    /// access tokens too; tokens for a user only. A private claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
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

/// The signing key in jsonwebtoken's terms, built once per key: the encoding key from the
/// private PEM, the decoding key from the public JWK exactly as a resource server builds it.
pub struct TokenKeys {
    kid: String,
    alg: JwsAlgorithm,
    encoding: EncodingKey,
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
        Ok(Self { kid: key.kid().to_string(), alg, encoding, decoding })
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
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    /// A signed ID token (typed `JWT`) under our `kid`.
    pub fn encode_id_token(&self, claims: &impl Serialize) -> Result<String, JwtError> {
        install_provider()?;
        let mut header = Header::new(self.alg);
        header.typ = Some(ID_TOKEN_TYP.to_string());
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
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
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;

    fn keys() -> &'static [SigningKey; 3] {
        static KEYS: OnceLock<[SigningKey; 3]> = OnceLock::new();
        KEYS.get_or_init(|| {
            [
                SigningKey::generate(Algorithm::RS256, 2048).expect("rsa"),
                SigningKey::generate(Algorithm::ES256, 0).expect("ec"),
                SigningKey::generate(Algorithm::EdDSA, 0).expect("ed25519"),
            ]
        })
    }

    fn claims(now: i64) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://auth.example.com".into(),
            sub: "cl_service".into(),
            aud: "https://api.example.com".into(),
            exp: now + 900,
            iat: now,
            jti: "0f0e0d0c".into(),
            client_id: "cl_service".into(),
            scope: "orders:read orders:write".into(),
            auth_time: None,
            gid: None,
        }
    }

    #[test]
    fn our_provider_is_the_one_in_use() {
        install_provider().expect("installed");
        install_provider().expect("idempotent");
    }

    #[test]
    fn encode_then_verify_with_every_algorithm() {
        let now = 1_800_000_000;
        for key in keys() {
            let tokens = TokenKeys::new(key).expect("keys");
            let token = tokens.encode(&claims(now)).expect("encode");
            let header = jsonwebtoken::decode_header(&token).expect("header");
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(header.kid.as_deref(), Some(key.kid()));
            assert_eq!(format!("{:?}", header.alg), key.algorithm().as_str());
            assert_eq!(tokens.verify(&token, "https://auth.example.com", now), Ok(claims(now)));

            // The signature is a plain JWS signature that our SigningKey accepts too.
            let (message, signature) = token.rsplit_once('.').expect("three parts");
            let signature = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
                .expect("base64url");
            assert!(key.verify(message.as_bytes(), &signature), "{:?}", key.algorithm());
        }
    }

    #[test]
    fn verification_refuses_what_is_not_a_live_token_of_ours() {
        let now = 1_800_000_000;
        let [rsa, ec, _] = keys();
        let tokens = TokenKeys::new(rsa).expect("keys");
        let token = tokens.encode(&claims(now)).expect("encode");
        let issuer = "https://auth.example.com";

        assert_eq!(tokens.verify(&token, issuer, now + 900), Err(Rejection::Expired));
        assert_eq!(tokens.verify(&token, issuer, now + 899).map(|c| c.exp), Ok(now + 900));
        assert_eq!(tokens.verify(&token, "https://other.example.com", now), Err(Rejection::WrongIssuer));

        // Same kid and alg, but signed by someone else's key.
        let other = SigningKey::generate(Algorithm::RS256, 2048).expect("rsa");
        let mut forged = TokenKeys::new(&other).expect("keys");
        forged.kid = rsa.kid().to_string();
        let forged = forged.encode(&claims(now)).expect("encode");
        assert_eq!(tokens.verify(&forged, issuer, now), Err(Rejection::BadSignature));

        let ec_token = TokenKeys::new(ec).expect("keys").encode(&claims(now)).expect("encode");
        assert_eq!(tokens.verify(&ec_token, issuer, now), Err(Rejection::OtherKey));

        let (head, rest) = token.split_once('.').expect("parts");
        let mut tampered_claims = claims(now);
        tampered_claims.scope = "admin".into();
        let body = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&tampered_claims).expect("json"),
        );
        let signature = rest.rsplit_once('.').expect("parts").1;
        assert_eq!(tokens.verify(&format!("{head}.{body}.{signature}"), issuer, now), Err(Rejection::BadSignature));

        let mut plain_jwt = Header::new(JwsAlgorithm::RS256);
        plain_jwt.kid = Some(rsa.kid().to_string());
        let id_token_like = jsonwebtoken::encode(&plain_jwt, &claims(now), &tokens.encoding).expect("encode");
        assert_eq!(tokens.verify(&id_token_like, issuer, now), Err(Rejection::NotAnAccessToken));

        let unsigned = format!(
            "{}.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                format!(r#"{{"typ":"at+jwt","alg":"none","kid":"{}"}}"#, rsa.kid())
            ),
            token.split('.').nth(1).expect("claims")
        );
        for garbage in ["", "abc", "a.b.c", "....", &unsigned, &"A".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(tokens.verify(garbage, issuer, now), Err(Rejection::Malformed), "{garbage:.40}");
        }
    }

    #[test]
    fn id_token_hints_verify_without_expiry() {
        let [rsa, ec, _] = keys();
        let tokens = TokenKeys::new(rsa).expect("keys");
        let issuer = "https://auth.example.com";
        let id_claims = serde_json::json!({ "iss": issuer, "sub": "usr_1", "aud": "cl_app", "exp": 1, "iat": 0 });
        let id_token = tokens.encode_id_token(&id_claims).expect("encode");
        let header = jsonwebtoken::decode_header(&id_token).expect("header");
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let hint = tokens.verify_id_token_hint(&id_token, issuer).expect("an expired hint is fine");
        assert_eq!((hint.sub.as_str(), hint.aud.as_str()), ("usr_1", "cl_app"));
        assert_eq!(tokens.verify_id_token_hint(&id_token, "https://other"), Err(Rejection::WrongIssuer));

        let access_token = tokens.encode(&claims(0)).expect("encode");
        assert_eq!(tokens.verify_id_token_hint(&access_token, issuer), Err(Rejection::Malformed));
        let other_key = TokenKeys::new(ec).expect("keys").encode_id_token(&id_claims).expect("encode");
        assert_eq!(tokens.verify_id_token_hint(&other_key, issuer), Err(Rejection::OtherKey));
        assert_eq!(tokens.verify_id_token_hint("a.b.c", issuer), Err(Rejection::Malformed));
    }

    #[test]
    fn jwk_helpers_agree_with_the_signing_key() {
        install_provider().expect("installed");
        for key in keys() {
            let tokens = TokenKeys::new(key).expect("keys");
            let jwk = Jwk::from_encoding_key(&tokens.encoding, tokens.alg).expect("jwk");
            let ours = key.public_jwk();
            let theirs = serde_json::to_value(&jwk).expect("json");
            for member in ["kty", "crv", "n", "e", "x", "y"] {
                assert_eq!(theirs.get(member), ours.get(member), "{member} of {:?}", key.algorithm());
            }
            assert_eq!(jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint"), key.kid());
        }
    }

    #[test]
    fn shared_keys_are_built_once() {
        let key = &keys()[2];
        let a = TokenKeys::shared(key).expect("keys");
        let b = TokenKeys::shared(key).expect("keys");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.kid(), key.kid());
    }

    /// The numbers behind the provider design (run in release):
    /// `cargo test --release -p truxe-server --lib jwt::tests::signing_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn signing_cost() {
        fn per_op(label: &str, iterations: u32, mut op: impl FnMut()) {
            let started = std::time::Instant::now();
            for _ in 0..iterations {
                op();
            }
            println!("{label:<60} {:>8.1} µs", started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations));
        }
        for key in keys() {
            let alg = key.algorithm();
            let n = if alg == Algorithm::RS256 { 2000 } else { 20000 };
            let tokens = TokenKeys::shared(key).expect("keys");
            let message = tokens.encode(&claims(0)).expect("encode").rsplit_once('.').expect("jws").0.to_string();
            println!("--- {alg}");
            per_op("SigningKey::sign (OpenSSL, no JWT)", n, || drop(key.sign(message.as_bytes())));
            per_op("TokenKeys::encode (provider, cached PKey)", n, || drop(tokens.encode(&claims(0))));
            let der = tokens.encoding.as_bytes().to_vec();
            per_op("PKey::private_key_from_der (an uncached provider pays this)", n, || {
                drop(PKey::private_key_from_der(&der))
            });
            per_op("TokenKeys::new (PEM to jsonwebtoken keys)", n / 10, || drop(TokenKeys::new(key)));
            per_op("TokenKeys::shared (lookup by kid)", n, || drop(TokenKeys::shared(key)));
            let token = tokens.encode(&claims(0)).expect("encode");
            per_op("TokenKeys::verify", n, || drop(tokens.verify(&token, "https://auth.example.com", 1)));
        }
    }

    #[test]
    fn unsupported_algorithms_fail_cleanly() {
        install_provider().expect("installed");
        let key = EncodingKey::from_secret(b"secret").expect("hmac key");
        let err = jsonwebtoken::encode(&Header::new(JwsAlgorithm::HS256), &claims(0), &key).expect_err("no HMAC");
        assert!(matches!(err.kind(), ErrorKind::UnsupportedAlgorithm), "{err:?}");
    }
}
