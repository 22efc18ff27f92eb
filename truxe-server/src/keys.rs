//! Token signing keys (RS256, ES256, EdDSA) on OpenSSL: loading, generating, JWKs and signatures.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::sign::{Signer, Verifier};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// The JWS algorithms Truxe signs with (`JWT_ALGORITHM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    RS256,
    ES256,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    /// Exact JOSE names only: "rs256" is not a JOSE algorithm name, and accepting it would
    /// let a typo in one place disagree with the `alg` published in the JWKS.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| KeyError::UnknownAlgorithm(s.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a supported signing algorithm (accepted: RS256, ES256, EdDSA)")]
    UnknownAlgorithm(String),
    #[error("{source_name} is not a PEM private key: {reason}")]
    NotPrivateKey { source_name: String, reason: String },
    #[error("JWT_PUBLIC_KEY is not a PEM public key: {0}")]
    NotPublicKey(String),
    #[error("RSA key is {0} bits; at least 2048 are required")]
    RsaTooSmall(u32),
    #[error("RSA keys are generated with 2048, 3072 or 4096 bits, not {0}")]
    UnsupportedRsaBits(u32),
    #[error("{source_name} is an EC key on {curve}; ES256 needs P-256 (prime256v1)")]
    WrongCurve { source_name: String, curve: String },
    #[error("JWT_ALGORITHM is {alg} but the key is {key_kind}")]
    AlgorithmMismatch { alg: Algorithm, key_kind: String },
    #[error("JWT_PUBLIC_KEY does not match JWT_PRIVATE_KEY")]
    PublicKeyMismatch,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// A private signing key with its algorithm and `kid`. The public forms (PEM, JWK) are made
/// once here so that the JWKS endpoint and the token endpoint never fail on them.
#[derive(Clone)]
pub struct SigningKey {
    pkey: PKey<Private>,
    alg: Algorithm,
    kid: String,
    bits: u32,
    private_pem: Secret<String>,
    public_pem: String,
    /// The RFC 7638 required members, in lexicographic order.
    public_members: Vec<(&'static str, String)>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads `JWT_PRIVATE_KEY` (RSA PKCS#1/PKCS#8, EC P-256 SEC1/PKCS#8, Ed25519 PKCS#8) and
    /// checks it against `alg` and, when given, against `JWT_PUBLIC_KEY` (SPKI, PKCS#1 RSA
    /// public key, or a certificate).
    pub fn from_pem(private_pem: &str, public_pem: Option<&str>, alg: Algorithm) -> Result<Self, KeyError> {
        let key = Self::from_private_pem(private_pem, alg, "JWT_PRIVATE_KEY")?;
        if let Some(public_pem) = public_pem {
            let public = parse_public_pem(public_pem)?;
            if !key.pkey.public_eq(&public) {
                return Err(KeyError::PublicKeyMismatch);
            }
        }
        Ok(key)
    }

    /// `source_name` says where the PEM came from (a variable or a path) in error messages.
    fn from_private_pem(pem: &str, alg: Algorithm, source_name: &str) -> Result<Self, KeyError> {
        let not_private = |reason: String| KeyError::NotPrivateKey { source_name: source_name.to_string(), reason };
        if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || pem.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(not_private("it is encrypted; give the key without a passphrase".to_string()));
        }
        if pem.contains("-----BEGIN PUBLIC KEY-----") && !pem.contains("PRIVATE KEY-----") {
            return Err(not_private("it holds a public key".to_string()));
        }
        if !pem.contains("-----BEGIN") {
            return Err(not_private("no -----BEGIN ... PRIVATE KEY----- line found".to_string()));
        }
        // The callback refuses passphrases so that OpenSSL never prompts on a terminal.
        let pkey = PKey::private_key_from_pem_callback(pem.as_bytes(), |_| Ok(0))
            .map_err(|e| not_private(openssl_reason(&e)))?;
        Self::from_pkey(pkey, alg, source_name)
    }

    pub fn generate(alg: Algorithm, rsa_bits: u32) -> Result<Self, KeyError> {
        let pkey = match alg {
            Algorithm::RS256 => {
                if ![2048, 3072, 4096].contains(&rsa_bits) {
                    return Err(KeyError::UnsupportedRsaBits(rsa_bits));
                }
                PKey::from_rsa(Rsa::generate(rsa_bits)?)?
            }
            Algorithm::ES256 => {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
                PKey::from_ec_key(EcKey::generate(&group)?)?
            }
            Algorithm::EdDSA => PKey::generate_ed25519()?,
        };
        Self::from_pkey(pkey, alg, "the generated key")
    }

    fn from_pkey(pkey: PKey<Private>, alg: Algorithm, source_name: &str) -> Result<Self, KeyError> {
        let mismatch = |key_kind: String| KeyError::AlgorithmMismatch { alg, key_kind };
        let (bits, public_members) = match pkey.id() {
            Id::RSA => {
                if alg != Algorithm::RS256 {
                    return Err(mismatch("RSA".to_string()));
                }
                let rsa = pkey.rsa()?;
                let bits = rsa.n().num_bits().unsigned_abs();
                if bits < 2048 {
                    return Err(KeyError::RsaTooSmall(bits));
                }
                if !rsa.check_key().unwrap_or(false) {
                    return Err(KeyError::NotPrivateKey {
                        source_name: source_name.to_string(),
                        reason: "the RSA key is inconsistent (check_key failed)".to_string(),
                    });
                }
                (bits, rsa_members(rsa.n(), rsa.e()))
            }
            Id::EC => {
                let ec = pkey.ec_key()?;
                if alg != Algorithm::ES256 {
                    return Err(mismatch("EC".to_string()));
                }
                match ec.group().curve_name() {
                    Some(Nid::X9_62_PRIME256V1) => {}
                    other => {
                        let curve =
                            other.and_then(|nid| nid.short_name().ok()).unwrap_or("an unnamed curve").to_string();
                        return Err(KeyError::WrongCurve { source_name: source_name.to_string(), curve });
                    }
                }
                (256, ec_members(&ec)?)
            }
            Id::ED25519 => {
                if alg != Algorithm::EdDSA {
                    return Err(mismatch("Ed25519".to_string()));
                }
                let x = URL_SAFE_NO_PAD.encode(pkey.raw_public_key()?);
                (256, vec![("crv", "Ed25519".to_string()), ("kty", "OKP".to_string()), ("x", x)])
            }
            other => {
                let key_kind = match other {
                    Id::RSA_PSS => "RSA-PSS (use a plain RSA key)".to_string(),
                    Id::ED448 => "Ed448".to_string(),
                    Id::DSA => "DSA".to_string(),
                    _ => format!("of an unsupported type (OpenSSL id {})", other.as_raw()),
                };
                return Err(mismatch(key_kind));
            }
        };
        let private_pem = pem_string(pkey.private_key_to_pem_pkcs8()?)?;
        let public_pem = pem_string(pkey.public_key_to_pem()?)?;
        let kid = thumbprint(&public_members);
        Ok(Self { pkey, alg, kid, bits, private_pem: Secret::new(private_pem), public_pem, public_members })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The RFC 7638 JWK thumbprint: stable for a key whatever PEM form it was loaded from.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// RSA modulus size; 256 for P-256 and Ed25519.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// PKCS#8 PEM.
    pub fn private_pem(&self) -> Secret<String> {
        self.private_pem.clone()
    }

    /// SPKI PEM.
    pub fn public_pem(&self) -> String {
        self.public_pem.clone()
    }

    /// [`SigningKey::public_pem`] without a copy.
    pub fn public_pem_str(&self) -> &str {
        &self.public_pem
    }

    /// The public JWK for the JWKS: public members only, plus `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> serde_json::Value {
        public_jwk(&self.public_members, &self.kid, self.alg)
    }

    /// Loads a private key kept by Truxe itself (PKCS#8 PEM, decrypted from the database);
    /// `source_name` names it in errors ("signing key KID").
    pub fn from_stored_pem(pem: &str, alg: Algorithm, source_name: &str) -> Result<Self, KeyError> {
        Self::from_private_pem(pem, alg, source_name)
    }

    /// The JWS signature of `message` (RFC 7518 §3): PKCS#1 v1.5 with SHA-256, raw `r||s` for
    /// ES256 (JWS does not use DER), or Ed25519.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self.alg {
            Algorithm::RS256 => {
                let mut signer = Signer::new(MessageDigest::sha256(), &self.pkey)?;
                signer.update(message)?;
                Ok(signer.sign_to_vec()?)
            }
            Algorithm::ES256 => {
                let mut signer = Signer::new(MessageDigest::sha256(), &self.pkey)?;
                signer.update(message)?;
                let der = signer.sign_to_vec()?;
                let sig = EcdsaSig::from_der(&der)?;
                let mut raw = sig.r().to_vec_padded(32)?;
                raw.extend(sig.s().to_vec_padded(32)?);
                Ok(raw)
            }
            Algorithm::EdDSA => Ok(Signer::new_without_digest(&self.pkey)?.sign_oneshot_to_vec(message)?),
        }
    }

    /// Checks a JWS signature made by this key; any malformed input is simply `false`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.try_verify(message, signature).unwrap_or(false)
    }

    fn try_verify(&self, message: &[u8], signature: &[u8]) -> Result<bool, openssl::error::ErrorStack> {
        match self.alg {
            Algorithm::RS256 => {
                let mut verifier = Verifier::new(MessageDigest::sha256(), &self.pkey)?;
                verifier.update(message)?;
                verifier.verify(signature)
            }
            Algorithm::ES256 => {
                if signature.len() != 64 {
                    return Ok(false);
                }
                let r = BigNum::from_slice(&signature[..32])?;
                let s = BigNum::from_slice(&signature[32..])?;
                let der = EcdsaSig::from_private_components(r, s)?.to_der()?;
                let mut verifier = Verifier::new(MessageDigest::sha256(), &self.pkey)?;
                verifier.update(message)?;
                verifier.verify(&der)
            }
            Algorithm::EdDSA => Verifier::new_without_digest(&self.pkey)?.verify_oneshot(signature, message),
        }
    }
}

/// The public half of a signing key as the JWKS publishes it: a key recorded in the database
/// (`signing_keys.public_pem`) whose private half this process may not hold.
#[derive(Clone, Debug)]
pub struct PublicKey {
    alg: Algorithm,
    kid: String,
    public_members: Vec<(&'static str, String)>,
}

impl PublicKey {
    /// Parses an SPKI PEM as written by [`SigningKey::public_pem`] and checks it against `alg`.
    pub fn from_pem(pem: &str, alg: Algorithm) -> Result<Self, KeyError> {
        let pkey = parse_public_pem(pem)?;
        let mismatch = |key_kind: &str| KeyError::AlgorithmMismatch { alg, key_kind: key_kind.to_string() };
        let public_members = match (pkey.id(), alg) {
            (Id::RSA, Algorithm::RS256) => {
                let rsa = pkey.rsa()?;
                rsa_members(rsa.n(), rsa.e())
            }
            (Id::EC, Algorithm::ES256) => ec_members(&pkey.ec_key()?)?,
            (Id::ED25519, Algorithm::EdDSA) => {
                let x = URL_SAFE_NO_PAD.encode(pkey.raw_public_key()?);
                vec![("crv", "Ed25519".to_string()), ("kty", "OKP".to_string()), ("x", x)]
            }
            (Id::RSA, _) => return Err(mismatch("RSA")),
            (Id::EC, _) => return Err(mismatch("EC")),
            (Id::ED25519, _) => return Err(mismatch("Ed25519")),
            _ => return Err(mismatch("of an unsupported type")),
        };
        let kid = thumbprint(&public_members);
        Ok(Self { alg, kid, public_members })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The RFC 7638 thumbprint, as [`SigningKey::kid`] computes it for the same key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK for the JWKS, as [`SigningKey::public_jwk`] writes it.
    pub fn public_jwk(&self) -> serde_json::Value {
        public_jwk(&self.public_members, &self.kid, self.alg)
    }
}

fn public_jwk(members: &[(&'static str, String)], kid: &str, alg: Algorithm) -> serde_json::Value {
    let mut jwk = serde_json::Map::new();
    for (name, value) in members {
        jwk.insert((*name).to_string(), serde_json::Value::String(value.clone()));
    }
    jwk.insert("kid".into(), kid.into());
    jwk.insert("alg".into(), alg.as_str().into());
    jwk.insert("use".into(), "sig".into());
    serde_json::Value::Object(jwk)
}

fn parse_public_pem(pem: &str) -> Result<PKey<Public>, KeyError> {
    let not_public = |e: &openssl::error::ErrorStack| KeyError::NotPublicKey(openssl_reason(e));
    if pem.contains("-----BEGIN RSA PUBLIC KEY-----") {
        let rsa = Rsa::public_key_from_pem_pkcs1(pem.as_bytes()).map_err(|e| not_public(&e))?;
        return Ok(PKey::from_rsa(rsa)?);
    }
    if pem.contains("-----BEGIN CERTIFICATE-----") {
        let cert = openssl::x509::X509::from_pem(pem.as_bytes()).map_err(|e| not_public(&e))?;
        return cert.public_key().map_err(|e| not_public(&e));
    }
    if pem.contains("PRIVATE KEY-----") {
        return Err(KeyError::NotPublicKey("it holds a private key".to_string()));
    }
    PKey::public_key_from_pem(pem.as_bytes()).map_err(|e| not_public(&e))
}

fn rsa_members(n: &openssl::bn::BigNumRef, e: &openssl::bn::BigNumRef) -> Vec<(&'static str, String)> {
    vec![
        ("e", URL_SAFE_NO_PAD.encode(e.to_vec())),
        ("kty", "RSA".to_string()),
        ("n", URL_SAFE_NO_PAD.encode(n.to_vec())),
    ]
}

fn ec_members<T: openssl::pkey::HasPublic>(ec: &EcKey<T>) -> Result<Vec<(&'static str, String)>, KeyError> {
    let mut ctx = BigNumContext::new()?;
    let mut x = BigNum::new()?;
    let mut y = BigNum::new()?;
    ec.public_key().affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)?;
    // RFC 7518 §6.2.1.2: coordinates are the full field size, leading zeros kept.
    Ok(vec![
        ("crv", "P-256".to_string()),
        ("kty", "EC".to_string()),
        ("x", URL_SAFE_NO_PAD.encode(x.to_vec_padded(32)?)),
        ("y", URL_SAFE_NO_PAD.encode(y.to_vec_padded(32)?)),
    ])
}

/// RFC 7638: SHA-256 over the required members as JSON with no whitespace, keys sorted. The
/// values are base64url or fixed names, so no JSON escaping is ever needed.
fn thumbprint(members: &[(&'static str, String)]) -> String {
    let mut sorted: Vec<_> = members.iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    let body: Vec<String> = sorted.iter().map(|(name, value)| format!("\"{name}\":\"{value}\"")).collect();
    let canonical = format!("{{{}}}", body.join(","));
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn pem_string(bytes: Vec<u8>) -> Result<String, KeyError> {
    String::from_utf8(bytes).map_err(|_| KeyError::NotPrivateKey {
        source_name: "the key".to_string(),
        reason: "OpenSSL wrote a PEM that is not UTF-8".to_string(),
    })
}

/// OpenSSL's error stack reads like `error:1E08010C:DECODER routines::unsupported`; the last
/// reason is the useful part.
fn openssl_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors().iter().rev().find_map(|err| err.reason()).map(str::to_string).unwrap_or_else(|| e.to_string())
}

/// The embedded default: loads the key at `path`, or generates one for `alg` (RSA-2048 for
/// RS256) and writes it there. Returns `(key, generated)`. When several instances start at
/// once, the first write wins and the others load what it wrote.
pub fn load_or_generate(path: &Path, alg: Algorithm) -> Result<(SigningKey, bool), KeyError> {
    let io = |source: std::io::Error| KeyError::Io { path: path.to_path_buf(), source };
    match std::fs::read_to_string(path) {
        Ok(pem) => return load_existing(path, &pem, alg).map(|key| (key, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| KeyError::Io { path: dir.to_path_buf(), source })?;
    }
    let key = SigningKey::generate(alg, 2048)?;
    match write_private_file(path, key.private_pem().secret().as_bytes(), false) {
        Ok(()) => Ok((key, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let pem = std::fs::read_to_string(path).map_err(io)?;
            load_existing(path, &pem, alg).map(|key| (key, false))
        }
        Err(e) => Err(io(e)),
    }
}

fn load_existing(path: &Path, pem: &str, alg: Algorithm) -> Result<SigningKey, KeyError> {
    warn_if_readable_by_others(path);
    SigningKey::from_private_pem(pem, alg, &path.display().to_string()).map_err(|e| match e {
        // Name the file: the operator did not set JWT_ALGORITHM for this key, the data dir holds it.
        KeyError::AlgorithmMismatch { alg, key_kind } => KeyError::AlgorithmMismatch {
            alg,
            key_kind: format!("{key_kind} (in {}; remove it or set JWT_ALGORITHM to match)", path.display()),
        },
        other => other,
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the signing key file is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Writes a file with mode 0600 atomically (temp file in the same directory, then rename);
/// refuses to replace an existing file unless `overwrite`.
pub fn write_private_file(path: &Path, contents: &[u8], overwrite: bool) -> std::io::Result<()> {
    write_file_atomic(path, contents, 0o600, overwrite)
}

/// Like [`write_private_file`] with an explicit mode (0644 for public keys). Without
/// `overwrite` the final step is a hard link, which fails atomically when `path` exists, so
/// two writers racing cannot both win.
pub fn write_file_atomic(path: &Path, contents: &[u8], mode: u32, overwrite: bool) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut suffix = [0u8; 8];
    rand::fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let temp = dir.join(format!(".{}.{suffix}.tmp", name.to_string_lossy()));

    let result = write_temp(&temp, contents, mode)
        .and_then(|()| if overwrite { std::fs::rename(&temp, path) } else { std::fs::hard_link(&temp, path) });
    // After a rename the temp name is gone; after a link (or a failure) it must be removed.
    let _ = std::fs::remove_file(&temp);
    result?;
    sync_dir(dir);
    Ok(())
}

fn write_temp(temp: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode & 0o600);
    }
    let mut file = options.open(temp)?;
    file.write_all(contents)?;
    #[cfg(unix)]
    {
        // Set after writing so the umask cannot change the final mode, and so a public file
        // only becomes readable by others once it is complete.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.sync_all()
}

/// Makes the rename durable; best effort, since not every filesystem allows opening a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn rsa_key() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::generate(Algorithm::RS256, 2048).expect("rsa"))
    }

    fn ec_key() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::generate(Algorithm::ES256, 0).expect("ec"))
    }

    fn ed_key() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::generate(Algorithm::EdDSA, 0).expect("ed25519"))
    }

    fn all_keys() -> [&'static SigningKey; 3] {
        [rsa_key(), ec_key(), ed_key()]
    }

    #[test]
    fn algorithm_names_are_exact() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>().expect("parses"), alg);
            assert_eq!(alg.to_string(), alg.as_str());
        }
        let err = "rs256".parse::<Algorithm>().expect_err("case matters").to_string();
        assert!(err.contains("RS256, ES256, EdDSA"), "{err}");
        assert!("HS256".parse::<Algorithm>().is_err());
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        let n = URL_SAFE_NO_PAD
            .decode(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            )
            .expect("base64url");
        let rsa = Rsa::from_public_components(BigNum::from_slice(&n).expect("n"), BigNum::from_u32(65537).expect("e"))
            .expect("rsa");
        let members = rsa_members(rsa.n(), rsa.e());
        assert_eq!(thumbprint(&members), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn kid_is_stable_across_a_reload_from_pem() {
        for key in all_keys() {
            let reloaded = SigningKey::from_pem(key.private_pem().secret(), Some(&key.public_pem()), key.algorithm())
                .expect("reload");
            assert_eq!(reloaded.kid(), key.kid());
            assert_eq!(reloaded.public_jwk(), key.public_jwk());
            assert_eq!(key.kid().len(), 43);
        }
    }

    #[test]
    fn rsa_pkcs1_and_pkcs8_both_load() {
        let key = rsa_key();
        let pkcs1 = String::from_utf8(key.pkey.rsa().expect("rsa").private_key_to_pem().expect("pem")).expect("utf8");
        assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"));
        let pkcs1_public =
            String::from_utf8(key.pkey.rsa().expect("rsa").public_key_to_pem_pkcs1().expect("pem")).expect("utf8");
        let from_pkcs1 = SigningKey::from_pem(&pkcs1, Some(&pkcs1_public), Algorithm::RS256).expect("pkcs1");
        assert_eq!(from_pkcs1.kid(), key.kid());
        assert!(key.private_pem().secret().contains("BEGIN PRIVATE KEY"));
        assert_eq!(from_pkcs1.bits(), 2048);
    }

    #[test]
    fn ec_sec1_loads() {
        let key = ec_key();
        let sec1 = String::from_utf8(key.pkey.ec_key().expect("ec").private_key_to_pem().expect("pem")).expect("utf8");
        assert!(sec1.contains("BEGIN EC PRIVATE KEY"));
        assert_eq!(SigningKey::from_pem(&sec1, None, Algorithm::ES256).expect("sec1").kid(), key.kid());
    }

    #[test]
    fn small_rsa_keys_are_refused() {
        let small = PKey::from_rsa(Rsa::generate(1024).expect("rsa")).expect("pkey");
        let pem = String::from_utf8(small.private_key_to_pem_pkcs8().expect("pem")).expect("utf8");
        let err = SigningKey::from_pem(&pem, None, Algorithm::RS256).expect_err("1024 bits");
        assert_eq!(err.to_string(), "RSA key is 1024 bits; at least 2048 are required");
        assert!(matches!(SigningKey::generate(Algorithm::RS256, 1024), Err(KeyError::UnsupportedRsaBits(1024))));
    }

    #[test]
    fn garbage_is_refused() {
        for garbage in [
            "",
            "not a key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        ] {
            let err = SigningKey::from_pem(garbage, None, Algorithm::RS256).expect_err(garbage).to_string();
            assert!(err.starts_with("JWT_PRIVATE_KEY is not a PEM private key: "), "{err}");
        }
        let err = SigningKey::from_pem(&rsa_key().public_pem(), None, Algorithm::RS256).expect_err("public");
        assert!(err.to_string().contains("public key"), "{err}");
        let err = SigningKey::from_pem(rsa_key().private_pem().secret(), Some("garbage"), Algorithm::RS256)
            .expect_err("bad public");
        assert!(err.to_string().starts_with("JWT_PUBLIC_KEY is not a PEM public key"), "{err}");
    }

    #[test]
    fn mismatched_public_key_is_refused() {
        let other = SigningKey::generate(Algorithm::EdDSA, 0).expect("ed25519");
        for (key, public) in [(rsa_key(), ec_key().public_pem()), (ed_key(), other.public_pem())] {
            let err =
                SigningKey::from_pem(key.private_pem().secret(), Some(&public), key.algorithm()).expect_err("mismatch");
            assert_eq!(err.to_string(), "JWT_PUBLIC_KEY does not match JWT_PRIVATE_KEY");
        }
    }

    #[test]
    fn algorithm_and_key_type_must_agree() {
        let err = SigningKey::from_pem(rsa_key().private_pem().secret(), None, Algorithm::ES256).expect_err("mismatch");
        assert_eq!(err.to_string(), "JWT_ALGORITHM is ES256 but the key is RSA");
        let err = SigningKey::from_pem(ec_key().private_pem().secret(), None, Algorithm::EdDSA).expect_err("mismatch");
        assert_eq!(err.to_string(), "JWT_ALGORITHM is EdDSA but the key is EC");
        let err = SigningKey::from_pem(ed_key().private_pem().secret(), None, Algorithm::RS256).expect_err("mismatch");
        assert_eq!(err.to_string(), "JWT_ALGORITHM is RS256 but the key is Ed25519");
    }

    #[test]
    fn es256_needs_p256() {
        let group = EcGroup::from_curve_name(Nid::SECP384R1).expect("group");
        let pkey = PKey::from_ec_key(EcKey::generate(&group).expect("ec")).expect("pkey");
        let pem = String::from_utf8(pkey.private_key_to_pem_pkcs8().expect("pem")).expect("utf8");
        let err = SigningKey::from_pem(&pem, None, Algorithm::ES256).expect_err("P-384");
        assert!(err.to_string().contains("secp384r1"), "{err}");
    }

    #[test]
    fn sign_and_verify_round_trip() {
        for key in all_keys() {
            let message = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0";
            let signature = key.sign(message).expect("sign");
            assert!(key.verify(message, &signature), "{:?}", key.algorithm());
            assert!(!key.verify(b"tampered", &signature), "{:?}", key.algorithm());
            let mut flipped = signature.clone();
            flipped[0] ^= 1;
            assert!(!key.verify(message, &flipped), "{:?}", key.algorithm());
            assert!(!key.verify(message, &[]), "{:?}", key.algorithm());
        }
        assert_eq!(rsa_key().sign(b"m").expect("sign").len(), 256);
        assert_eq!(ed_key().sign(b"m").expect("sign").len(), 64);
    }

    #[test]
    fn es256_signatures_are_raw_64_bytes() {
        for i in 0..20u8 {
            let signature = ec_key().sign(&[i]).expect("sign");
            assert_eq!(signature.len(), 64);
            assert!(ec_key().verify(&[i], &signature));
        }
    }

    #[test]
    fn public_jwk_has_only_public_members() {
        let jwk = rsa_key().public_jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], rsa_key().kid());
        assert!(jwk.get("d").is_none() && jwk.get("p").is_none());
        let jwk = ec_key().public_jwk();
        assert_eq!((jwk["kty"].as_str(), jwk["crv"].as_str()), (Some("EC"), Some("P-256")));
        assert_eq!(jwk["x"].as_str().map(str::len), Some(43));
        assert_eq!(jwk["y"].as_str().map(str::len), Some(43));
        let jwk = ed_key().public_jwk();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["alg"].as_str()),
            (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
        );
        assert!(jwk.get("y").is_none() && jwk.get("d").is_none());
    }

    #[test]
    fn a_public_key_from_its_pem_has_the_same_kid_and_jwk() {
        for key in all_keys() {
            let public = PublicKey::from_pem(&key.public_pem(), key.algorithm()).expect("public pem");
            assert_eq!(public.kid(), key.kid());
            assert_eq!(public.public_jwk(), key.public_jwk());
        }
        let err = PublicKey::from_pem(&rsa_key().public_pem(), Algorithm::EdDSA).expect_err("mismatch");
        assert_eq!(err.to_string(), "JWT_ALGORITHM is EdDSA but the key is RSA");
        assert!(PublicKey::from_pem("garbage", Algorithm::RS256).is_err());
        assert!(PublicKey::from_pem(rsa_key().private_pem().secret(), Algorithm::RS256).is_err());
    }

    #[test]
    fn debug_hides_key_material() {
        let shown = format!("{:?}", rsa_key());
        assert!(shown.contains(rsa_key().kid()));
        assert!(!shown.contains("PRIVATE"));
        assert!(shown.len() < 200, "{shown}");
    }

    #[cfg(unix)]
    #[test]
    fn load_or_generate_writes_once_then_reuses() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys").join("signing-key.pem");
        let (first, generated) = load_or_generate(&path, Algorithm::EdDSA).expect("generate");
        assert!(generated);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (second, generated) = load_or_generate(&path, Algorithm::EdDSA).expect("load");
        assert!(!generated);
        assert_eq!(first.kid(), second.kid());
        let err = load_or_generate(&path, Algorithm::RS256).expect_err("alg mismatch").to_string();
        assert!(err.contains("Ed25519") && err.contains("signing-key.pem"), "{err}");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("read_dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn write_private_file_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        write_private_file(&path, b"one", false).expect("first write");
        let err = write_private_file(&path, b"two", false).expect_err("exists");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
        write_private_file(&path, b"three", true).expect("overwrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"three");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        write_file_atomic(&dir.path().join("public"), b"pub", 0o644, false).expect("public");
        let mode = std::fs::metadata(dir.path().join("public")).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 2);
    }

    #[test]
    fn a_load_error_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signing-key.pem");
        std::fs::write(&path, "garbage").expect("write");
        let err = load_or_generate(&path, Algorithm::RS256).expect_err("garbage").to_string();
        assert!(err.contains("signing-key.pem"), "{err}");
    }
}
