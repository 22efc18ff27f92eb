//! jsonwebtoken's `CryptoProvider` on OpenSSL: RS256, ES256 and EdDSA signers and verifiers,
//! with a bounded cache of parsed keys.

use std::sync::RwLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error as LibError, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm as JwsAlgorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::sign::{Signer, Verifier};

use super::JwtError;

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
