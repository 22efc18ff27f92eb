//! Unit tests of the OpenSSL provider and of access-token encoding and verification.

use super::*;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use openssl::pkey::PKey;

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
        let signature =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature).expect("base64url");
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
    let id_token_like =
        jsonwebtoken::encode(&plain_jwt, &claims(now), tokens.encoding().expect("encoding key")).expect("encode");
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
        let jwk = Jwk::from_encoding_key(tokens.encoding().expect("encoding key"), tokens.alg).expect("jwk");
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
        let der = tokens.encoding().expect("encoding key").as_bytes().to_vec();
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
