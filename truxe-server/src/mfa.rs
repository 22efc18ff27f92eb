//! TOTP second factor (RFC 6238) and recovery codes: pure functions that take `now`.
//!
//! Codes are HMAC-SHA1, 6 digits, 30-second steps, accepted one step either side (the defaults
//! every authenticator app shares). A code is accepted once: `verify` refuses the step of the
//! last accepted code and any earlier one (RFC 6238 §5.2). Five wrong codes in a row lock the
//! second factor for fifteen minutes (each guess is reserved before it is checked, see
//! `service::mfa`, so parallel guesses cannot overrun the limit).
//!
//! At rest, the TOTP secret is encrypted with AES-256-GCM under a server key (server secret
//! [`ENCRYPTION_KEY_NAME`]) and bound to its user id, so a dump or log of the `users` table
//! alone does not reveal it, nor can a ciphertext be copied onto another account. The key lives
//! in the same database (`server_secrets`), so this does not protect against a full database
//! compromise; recovery codes are stored as HMAC-SHA256 under [`HMAC_KEY_NAME`], like client
//! secrets.

use base64::Engine;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use totp_rs::{Algorithm, Builder, Totp};

use crate::oauth::client_secret::hmac_sha256;
use crate::secret::Secret;

pub const DIGITS: usize = 6;
pub const STEP_SECS: i64 = 30;
/// Steps accepted either side of the current one, for clock drift and typing time.
pub const SKEW_STEPS: i64 = 1;
/// 160 bits, the size RFC 4226 §4 recommends.
pub const SECRET_BYTES: usize = 20;

/// Consecutive wrong codes that lock the second factor …
pub const MAX_FAILED_ATTEMPTS: i32 = 5;
/// … for this long.
pub const LOCKOUT_SECS: i64 = 15 * 60;

pub const RECOVERY_CODE_COUNT: usize = 10;
/// Lowercase letters and digits without the look-alikes 0/o, 1/l/i: 31 symbols, so a
/// 12-character code carries 59 bits.
pub const RECOVERY_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
const RECOVERY_GROUPS: usize = 3;
const RECOVERY_GROUP_LEN: usize = 4;

/// `server_secrets` name of the key recovery codes are hashed under.
pub const HMAC_KEY_NAME: &str = "mfa_hmac_key";
/// `server_secrets` name of the key TOTP secrets are encrypted under.
pub const ENCRYPTION_KEY_NAME: &str = "mfa_secret_key";

const CIPHERTEXT_PREFIX: &str = "v1.";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MfaError {
    #[error("the code is not valid")]
    InvalidCode,
    #[error("this code was already used; wait for the next one")]
    CodeReused,
    #[error("TOTP: {0}")]
    Totp(String),
    #[error("the stored TOTP secret cannot be decrypted (wrong key or damaged value)")]
    Decrypt,
    #[error("cannot encrypt the TOTP secret: {0}")]
    Encrypt(String),
    #[error("cannot draw the QR code: {0}")]
    Qr(String),
}

/// A fresh random TOTP secret.
pub fn new_secret() -> Secret<Vec<u8>> {
    Secret::new(totp_rs::Secret::generate().as_bytes().to_vec())
}

fn totp(secret: &[u8], issuer: Option<&str>, account: Option<&str>) -> Result<Totp, MfaError> {
    let mut builder = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_step_duration(STEP_SECS as u64)
        .with_skew(SKEW_STEPS as u16)
        .with_secret(secret);
    if let Some(account) = account {
        builder = builder.with_account_name(label_part(account));
    }
    if let Some(issuer) = issuer {
        builder = builder.with_issuer(Some(label_part(issuer)));
    }
    builder.build().map_err(|e| MfaError::Totp(e.to_string()))
}

/// The otpauth label forbids ':' in the issuer and the account name.
fn label_part(value: &str) -> String {
    value.replace(':', " ").trim().to_string()
}

/// The secret as authenticator apps expect it for manual entry (RFC 4648 base32, no padding).
pub fn secret_base32(secret: &[u8]) -> Secret<String> {
    Secret::new(totp_rs::Secret::from(secret).to_base32())
}

/// The `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=ISSUER` URI that the QR code carries.
pub fn provisioning_uri(secret: &[u8], issuer: &str, account: &str) -> Result<Secret<String>, MfaError> {
    let issuer = Some(issuer).filter(|i| !label_part(i).is_empty());
    totp(secret, issuer, Some(account))?.to_url().map(Secret::new).map_err(|e| MfaError::Totp(e.to_string()))
}

/// An inline `<svg>` element (no XML prolog) drawing `data` as a QR code.
pub fn qr_svg(data: &str) -> Result<String, MfaError> {
    let code =
        QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).map_err(|e| MfaError::Qr(e.to_string()))?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .quiet_zone(true)
        .build();
    let start = image.find("<svg").ok_or_else(|| MfaError::Qr("the renderer produced no <svg>".to_string()))?;
    Ok(image[start..].replacen("<svg ", "<svg role=\"img\" aria-label=\"QR code\" ", 1))
}

/// The QR code as a `data:image/svg+xml;base64,…` URI for an `<img src>`.
pub fn qr_data_uri(data: &str) -> Result<String, MfaError> {
    let svg = qr_svg(data)?;
    Ok(format!("data:image/svg+xml;base64,{}", base64::engine::general_purpose::STANDARD.encode(svg)))
}

/// The TOTP time step that contains `now`.
pub fn step_at(now: i64) -> i64 {
    now.div_euclid(STEP_SECS)
}

/// The code an authenticator shows at `now` (for tests and diagnostics).
pub fn code_at(secret: &[u8], now: i64) -> Result<String, MfaError> {
    let time = u64::try_from(now).map_err(|_| MfaError::Totp("time before 1970".to_string()))?;
    Ok(totp(secret, None, None)?.generate(time).to_string())
}

/// Whether the input has the shape of a TOTP code (digits, spaces allowed) rather than a
/// recovery code.
pub fn looks_like_totp_code(input: &str) -> bool {
    let digits = input.chars().filter(|c| !c.is_whitespace()).count();
    digits == DIGITS && input.chars().all(|c| c.is_ascii_digit() || c.is_whitespace())
}

/// Checks `code` against the steps around `now` and returns the matched step, which the caller
/// stores as the new `last_used_step`. Spaces inside the code are ignored ("123 456").
pub fn verify(secret: &[u8], code: &str, now: i64, last_used_step: Option<i64>) -> Result<i64, MfaError> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MfaError::InvalidCode);
    }
    let totp = totp(secret, None, None)?;
    let current = step_at(now);
    let mut matched = Vec::new();
    for step in (current - SKEW_STEPS)..=(current + SKEW_STEPS) {
        let Ok(time) = u64::try_from(step * STEP_SECS) else {
            continue;
        };
        let expected = totp.generate(time).to_string();
        // Every step is computed and compared, so timing does not tell which one matched.
        if expected.len() == code.len() && openssl::memcmp::eq(expected.as_bytes(), code.as_bytes()) {
            matched.push(step);
        }
    }
    if matched.is_empty() {
        return Err(MfaError::InvalidCode);
    }
    matched.into_iter().find(|step| last_used_step.is_none_or(|last| *step > last)).ok_or(MfaError::CodeReused)
}

/// Ten fresh recovery codes, `xxxx-xxxx-xxxx` from [`RECOVERY_ALPHABET`]. Show them once; store
/// only [`hash_recovery_code`] of each.
pub fn generate_recovery_codes() -> Vec<Secret<String>> {
    (0..RECOVERY_CODE_COUNT).map(|_| generate_recovery_code()).collect()
}

fn generate_recovery_code() -> Secret<String> {
    let len = RECOVERY_GROUPS * RECOVERY_GROUP_LEN;
    let mut symbols = Vec::with_capacity(len);
    // Rejection sampling keeps every symbol equally likely: 248 = 8 × 31.
    let limit = (256 / RECOVERY_ALPHABET.len() * RECOVERY_ALPHABET.len()) as u8;
    while symbols.len() < len {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        symbols.extend(
            bytes
                .iter()
                .filter(|b| **b < limit)
                .map(|b| RECOVERY_ALPHABET[*b as usize % RECOVERY_ALPHABET.len()] as char)
                .take(len - symbols.len()),
        );
    }
    let groups: Vec<String> = symbols.chunks(RECOVERY_GROUP_LEN).map(|g| g.iter().collect()).collect();
    Secret::new(groups.join("-"))
}

/// The canonical form of a typed recovery code (case, dashes and spaces ignored); `None` when
/// it cannot be one of ours.
pub fn normalize_recovery_code(input: &str) -> Option<String> {
    if input.len() > 64 {
        return None;
    }
    let code: String =
        input.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_lowercase()).collect();
    let valid =
        code.len() == RECOVERY_GROUPS * RECOVERY_GROUP_LEN && code.bytes().all(|b| RECOVERY_ALPHABET.contains(&b));
    valid.then_some(code)
}

/// Hex HMAC-SHA256 of a recovery code (in any accepted spelling) under the server key; `None`
/// when the input cannot be a recovery code.
pub fn hash_recovery_code(key: &[u8], code: &str) -> Option<String> {
    let canonical = normalize_recovery_code(code)?;
    Some(hmac_sha256(key, canonical.as_bytes()).iter().map(|b| format!("{b:02x}")).collect())
}

pub fn is_locked(locked_until: Option<i64>, now: i64) -> bool {
    locked_until.is_some_and(|until| now < until)
}

fn associated_data(user_id: &str) -> Vec<u8> {
    format!("truxe mfa secret for {user_id}").into_bytes()
}

/// `v1.` + base64url(nonce ‖ ciphertext ‖ tag), AES-256-GCM, bound to `user_id`.
pub fn encrypt_secret(key: &[u8], user_id: &str, secret: &[u8]) -> Result<String, MfaError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    let mut tag = [0u8; TAG_LEN];
    let ciphertext =
        encrypt_aead(Cipher::aes_256_gcm(), key, Some(&nonce), &associated_data(user_id), secret, &mut tag)
            .map_err(|e| MfaError::Encrypt(e.to_string()))?;
    let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len() + TAG_LEN);
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&ciphertext);
    blob.extend_from_slice(&tag);
    Ok(format!("{CIPHERTEXT_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(blob)))
}

pub fn decrypt_secret(key: &[u8], user_id: &str, stored: &str) -> Result<Secret<Vec<u8>>, MfaError> {
    let encoded = stored.strip_prefix(CIPHERTEXT_PREFIX).ok_or(MfaError::Decrypt)?;
    let blob = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| MfaError::Decrypt)?;
    if blob.len() < NONCE_LEN + TAG_LEN {
        return Err(MfaError::Decrypt);
    }
    let (nonce, rest) = blob.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    decrypt_aead(Cipher::aes_256_gcm(), key, Some(nonce), &associated_data(user_id), ciphertext, tag)
        .map(Secret::new)
        .map_err(|_| MfaError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA1 key.
    const RFC_KEY: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_vectors_truncated_to_six_digits() {
        // (T, the RFC's 8-digit TOTP); 6 digits are its last six.
        let vectors: [(i64, &str); 6] = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, eight) in vectors {
            let six = &eight[2..];
            assert_eq!(code_at(RFC_KEY, time).expect("code"), six, "T={time}");
            assert_eq!(verify(RFC_KEY, six, time, None), Ok(step_at(time)), "T={time}");
        }
        assert_eq!(code_at(RFC_KEY, 59).expect("code"), "287082");
    }

    #[test]
    fn verify_accepts_one_step_of_skew_and_nothing_more() {
        let now = 1_234_567_890;
        let step = step_at(now);
        let previous = code_at(RFC_KEY, now - STEP_SECS).expect("code");
        let next = code_at(RFC_KEY, now + STEP_SECS).expect("code");
        let too_old = code_at(RFC_KEY, now - 2 * STEP_SECS).expect("code");
        let too_new = code_at(RFC_KEY, now + 2 * STEP_SECS).expect("code");
        assert_eq!(verify(RFC_KEY, &previous, now, None), Ok(step - 1));
        assert_eq!(verify(RFC_KEY, &next, now, None), Ok(step + 1));
        assert_eq!(verify(RFC_KEY, &too_old, now, None), Err(MfaError::InvalidCode));
        assert_eq!(verify(RFC_KEY, &too_new, now, None), Err(MfaError::InvalidCode));
    }

    #[test]
    fn verify_refuses_reuse_of_the_same_or_an_earlier_step() {
        let now = 1_234_567_890;
        let step = step_at(now);
        let code = code_at(RFC_KEY, now).expect("code");
        assert_eq!(verify(RFC_KEY, &code, now, Some(step)), Err(MfaError::CodeReused));
        let previous = code_at(RFC_KEY, now - STEP_SECS).expect("code");
        assert_eq!(verify(RFC_KEY, &previous, now, Some(step)), Err(MfaError::CodeReused));
        assert_eq!(verify(RFC_KEY, &code, now, Some(step - 1)), Ok(step));
    }

    #[test]
    fn verify_normalises_and_refuses_malformed_input() {
        let now = 59;
        assert_eq!(verify(RFC_KEY, "287 082", now, None), Ok(1));
        assert_eq!(verify(RFC_KEY, " 287082\n", now, None), Ok(1));
        for bad in ["", "28708", "2870822", "28708a", "+87082", "287082 1", "２８７０８２"] {
            assert_eq!(verify(RFC_KEY, bad, now, None), Err(MfaError::InvalidCode), "{bad:?}");
        }
        assert_eq!(verify(RFC_KEY, "000000", now, None), Err(MfaError::InvalidCode));
        assert!(matches!(verify(b"short", "287082", now, None), Err(MfaError::Totp(_))));
        assert!(looks_like_totp_code("287 082"));
        assert!(!looks_like_totp_code("abcd-efgh-jkmn"));
    }

    #[test]
    fn secrets_and_provisioning_uri() {
        let secret = new_secret();
        assert_eq!(secret.secret().len(), SECRET_BYTES);
        assert_ne!(secret.secret(), new_secret().secret());
        assert_eq!(secret_base32(RFC_KEY).secret(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");

        let uri = provisioning_uri(RFC_KEY, "Acme: Sign-in", "alice@example.com").expect("uri");
        let uri = uri.secret();
        assert!(uri.starts_with("otpauth://totp/Acme%20%20Sign-in:alice%40example.com?"), "{uri}");
        assert!(uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), "{uri}");
        assert!(uri.contains("issuer=Acme%20%20Sign-in"), "{uri}");
        assert!(!uri.contains("algorithm=") && !uri.contains("digits=") && !uri.contains("period="), "{uri}");
        let no_issuer = provisioning_uri(RFC_KEY, " ", "alice@example.com").expect("uri");
        assert!(no_issuer.secret().starts_with("otpauth://totp/alice%40example.com?"), "{}", no_issuer.secret());
    }

    #[test]
    fn qr_code_is_inline_svg() {
        let svg = qr_svg("otpauth://totp/Truxe:alice%40example.com?secret=GEZDGNBVGY3TQOJQ&issuer=Truxe").expect("qr");
        assert!(svg.starts_with("<svg role=\"img\""), "{}", &svg[..40]);
        assert!(svg.ends_with("</svg>"));
        assert!(!svg.contains("<?xml"));
        let uri = qr_data_uri("x").expect("qr");
        assert!(uri.starts_with("data:image/svg+xml;base64,"));
    }

    #[test]
    fn recovery_codes() {
        let codes = generate_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
        let mut distinct: Vec<&String> = codes.iter().map(|c| c.secret()).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), RECOVERY_CODE_COUNT);
        for code in &codes {
            let code = code.secret();
            assert_eq!(code.len(), 14, "{code}");
            assert_eq!(code.matches('-').count(), 2, "{code}");
            assert!(code.bytes().filter(|b| *b != b'-').all(|b| RECOVERY_ALPHABET.contains(&b)), "{code}");
            assert!(!format!("{:?}", codes[0]).contains(code.as_str()));
        }

        let key = b"server key";
        let code = "abcd-efgh-jkmn";
        let hash = hash_recovery_code(key, code).expect("hash");
        assert_eq!(hash.len(), 64);
        assert_eq!(hash_recovery_code(key, " ABCD EFGH jkmn ").as_deref(), Some(hash.as_str()));
        assert_eq!(hash_recovery_code(key, "abcdefghjkmn").as_deref(), Some(hash.as_str()));
        assert_ne!(hash_recovery_code(b"other key", code).as_deref(), Some(hash.as_str()));
        for bad in ["", "abcd-efgh-jkm", "abcd-efgh-jkmnp", "abcd-efgh-jkm0", "abcd-efgh-jkml", "123456"] {
            assert_eq!(hash_recovery_code(key, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn locked_until_the_end_of_the_lockout() {
        let now = 1_000_000;
        assert!(is_locked(Some(now + 1), now));
        assert!(!is_locked(Some(now), now));
        assert!(!is_locked(None, now));
    }

    #[test]
    fn secrets_are_encrypted_and_bound_to_the_user() {
        let key = [7u8; 32];
        let stored = encrypt_secret(&key, "usr_a", RFC_KEY).expect("encrypt");
        assert!(stored.starts_with("v1."));
        assert!(!stored.contains("GEZDGNBV"));
        assert_ne!(stored, encrypt_secret(&key, "usr_a", RFC_KEY).expect("encrypt"), "fresh nonce each time");
        assert_eq!(decrypt_secret(&key, "usr_a", &stored).expect("decrypt").secret(), RFC_KEY);
        assert_eq!(decrypt_secret(&key, "usr_b", &stored), Err(MfaError::Decrypt));
        assert_eq!(decrypt_secret(&[8u8; 32], "usr_a", &stored), Err(MfaError::Decrypt));
        let mut tampered = stored.clone().into_bytes();
        let last = tampered.len() - 5;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(decrypt_secret(&key, "usr_a", &tampered), Err(MfaError::Decrypt));
        assert_eq!(decrypt_secret(&key, "usr_a", "GEZDGNBVGY3TQOJQ"), Err(MfaError::Decrypt));
        assert_eq!(decrypt_secret(&key, "usr_a", "v1.AAAA"), Err(MfaError::Decrypt));
        assert!(matches!(encrypt_secret(&[1u8; 5], "usr_a", RFC_KEY), Err(MfaError::Encrypt(_))));
    }
}
